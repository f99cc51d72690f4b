"""A node's own settings, kept in its state directory across restarts.

The admin port and the smoke key stay the same from one start to the next, so
the rendered configuration does not change (and need no reload) just because
Prism restarted; so do the request log's UDP port and sampling (``every``: one
request logged in that many; 0 turns the request log off). ``maxconn``
follows the open-files limit Prism runs under.
"""

from __future__ import annotations

import json
import resource
import secrets
import socket
from typing import Any

from prism.haproxy.render import RenderSettings, derive_maxconn
from prism.node.files import read_text, write_atomic
from prism.node.paths import StatePaths
from prism.node.requestlog import free_udp_port

__all__ = ["ensure_token", "free_port", "node_settings"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def node_settings(
    paths: StatePaths,
    admin_port: int | None,
    *,
    listen_address: str | None = None,
    request_log_sample: int | None = None,
) -> RenderSettings:
    """Settings kept across restarts (admin port, smoke key) so the config stays stable.

    ``listen_address`` is where this node's wildcard binds listen (a fleet node's
    ``--listen-address``); the admin listener stays on 127.0.0.1. ``request_log_sample``
    replaces the stored sampling (None keeps it; a first start logs every request).
    """
    stored: dict[str, Any] = json.loads(read_text(paths.root / "settings.json") or "{}")
    if admin_port is not None:
        stored["admin_port"] = admin_port
    stored.setdefault("admin_port", free_port())
    stored.setdefault("smoke_key", secrets.token_hex(16))
    if request_log_sample is not None:
        stored["request_log_sample"] = request_log_sample
    stored.setdefault("request_log_sample", 1)
    stored.setdefault("request_log_port", free_udp_port())
    write_atomic(paths.root / "settings.json", json.dumps(stored, indent=2) + "\n", mode=0o600)
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return RenderSettings(
        admin_port=int(stored["admin_port"]),
        maxconn=derive_maxconn(soft),
        smoke_key=str(stored["smoke_key"]),
        listen_address=listen_address,
        request_log_port=int(stored["request_log_port"]) if stored["request_log_sample"] else None,
        request_log_sample=max(1, int(stored["request_log_sample"])),
    )


def ensure_token(paths: StatePaths) -> str:
    """The API bearer token, created on first start, readable only by its owner."""
    existing = read_text(paths.token)
    if existing and existing.strip():
        return existing.strip()
    token = secrets.token_urlsafe(32)
    write_atomic(paths.token, token + "\n", mode=0o600)
    return token
