"""Checks a node makes before a spec is stored: could its HAProxy run it at all?

Both failures would otherwise surface only at reload, after ``haproxy -c`` has
passed: HAProxy refuses to start with more servers and listeners than its
file-descriptor limit holds, and a bind on a port another process holds fails.
"""

from __future__ import annotations

import errno
import resource
import socket

from prism.core.model import Spec, split_bind
from prism.errors import InvalidInput
from prism.haproxy.render import fd_demand

__all__ = ["binds", "check_fd_budget", "check_ports_free", "fd_limit"]


def fd_limit() -> int | None:
    """The hard open-files limit HAProxy may raise itself to; None when unlimited."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if hard == resource.RLIM_INFINITY else int(hard)


def check_fd_budget(spec: Spec, maxconn: int, limit: int | None, *, node: str = "") -> None:
    """Refuse a spec needing more file descriptors than ``limit`` (the hard limit)."""
    need = fd_demand(spec, maxconn)
    if limit is not None and need > limit:
        where = f" on node {node}" if node else ""
        raise InvalidInput(
            f"this configuration needs {need:,} file descriptors in HAProxy{where} "
            f"(2 x maxconn {maxconn:,} + one per server and listener), "
            f"but the limit is {limit:,}",
            hint="raise the open-files limit (ulimit -n) Prism starts with, "
            "or declare fewer servers; nothing was changed",
            detail={"needed": need, "limit": limit, "maxconn": maxconn},
        )


def binds(spec: Spec) -> list[str]:
    """Every ``host:port`` the spec listens on (a TLS listener's redirect port too)."""
    owners = [(x.bind, x.tls) for x in spec.listeners] + [(a.bind, a.tls) for a in spec.apps]
    out: list[str] = []
    for bind, tls in owners:
        if bind is None:
            continue
        out.append(bind)
        if tls is not None and tls.redirect_from is not None:
            out.append(f"{bind.rsplit(':', 1)[0]}:{tls.redirect_from}")
    return out


def check_ports_free(old: Spec, new: Spec, admin_port: int) -> None:
    """A new bind on a port some other process holds would only fail at reload: refuse now."""
    held = {split_bind(b)[1] for b in binds(old)} | {admin_port}
    for bind in binds(new):
        host, port = split_bind(bind)
        if port in held and port != admin_port:
            continue
        host = "0.0.0.0" if host == "*" else host
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except socket.gaierror as exc:
                raise InvalidInput(
                    f"cannot listen on {bind[:80]}: {host!r} does not resolve ({exc.strerror})",
                    hint="bind an address or a name of this machine; nothing was changed",
                ) from exc
            except OSError as exc:
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    raise InvalidInput(
                        f"cannot listen on {bind}: {exc.strerror}",
                        hint="pick a free port; nothing was changed",
                    ) from exc
                if exc.errno == errno.EADDRNOTAVAIL:
                    raise InvalidInput(
                        f"cannot listen on {bind}: no such local address",
                        hint="bind an address of this machine; nothing was changed",
                    ) from exc
                raise
