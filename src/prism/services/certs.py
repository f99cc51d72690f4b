"""The certificate use case: replace a listener's TLS certificate without a reload, and
say what every TLS listener serves and when it expires.

A certificate belongs to an *owner*: an app with its own ``bind`` and ``tls``,
or a shared listener with ``tls`` (naming an app on a shared listener means
its listener). The bundle is checked (:func:`prism.core.pem.check_pem`) before
anything else happens; the data plane writes it to the file, swaps it in at
runtime and reads it back; the audit log records who replaced which file with
which certificate (subject, serial, dates; never the key).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from prism.core.model import Spec
from prism.core.pem import CertInfo, check_pem
from prism.core.tls import Tls, cert_file_allowed
from prism.dataplane.base import DataPlane
from prism.errors import InvalidInput, NotFound, PrismError
from prism.store.desired import load_state
from prism.types import AuditDraft, Store

__all__ = ["WARN_DAYS", "CertService", "tls_owner"]

log = logging.getLogger(__name__)

#: status warns about a certificate this many days before it expires
WARN_DAYS = 30


def tls_owner(spec: Spec, name: str) -> tuple[str, str, str | None, Tls]:
    """``(kind, owner, app, tls)`` of ``name``: an app with its own TLS bind, an app on a
    TLS listener (its listener), or a TLS listener. NotFound / InvalidInput otherwise."""
    app = next((a for a in spec.apps if a.name == name), None)
    listener_name = name
    if app is not None:
        if app.bind is not None:
            if app.tls is None:
                raise InvalidInput(
                    f"app {name!r} does not terminate TLS",
                    hint="declare tls: {certs: [...]} on it in prism.yaml first",
                )
            return "app", app.name, app.name, app.tls
        assert app.listener is not None
        listener_name = app.listener
    listener = next((x for x in spec.listeners if x.name == listener_name), None)
    if listener is None:
        raise NotFound(
            f"no app or listener named {name[:64]!r}", hint="`prism certs` lists the TLS ones"
        )
    if listener.tls is None:
        raise InvalidInput(
            f"listener {listener.name!r} does not terminate TLS",
            hint="declare tls: {certs: [...]} on it in prism.yaml first",
        )
    return "listener", listener.name, app.name if app else None, listener.tls


def _names(loaded: dict[str, Any]) -> set[str]:
    text = str(loaded.get("names") or "")
    return {part.strip().removeprefix("DNS:") for part in text.split(",") if part.strip()}


class CertService:
    """``prism cert set`` and ``prism certs``."""

    def __init__(self, store: Store, plane: DataPlane, *, warn_days: int = WARN_DAYS) -> None:
        self.store = store
        self.plane = plane
        self.warn_days = warn_days

    async def set(
        self,
        name: str,
        pem: str,
        *,
        file: str | None,
        actor: str,
        reason: str | None,
    ) -> dict[str, Any]:
        """Check ``pem`` and serve it from one of the owner's certificate files."""
        spec = (await load_state(self.store)).spec
        kind, owner, app, tls = tls_owner(spec, name)
        cert = check_pem(pem, now=datetime.now(UTC))
        path = await self._target(owner, tls, cert, file)
        started = time.perf_counter()
        done = await self.plane.set_certificate(path, cert)
        await self.store.record(
            AuditDraft(
                actor=actor,
                action="cert.set",
                app=app,
                detail={kind: owner, "path": path, **cert.summary()},
                reason=reason,
            )
        )
        return {
            kind: owner,
            **done,
            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
        }

    async def _target(self, owner: str, tls: Tls, cert: CertInfo, file: str | None) -> str:
        """The file the new certificate replaces: ``file`` if given (it must be one of
        the owner's), else the only file, else the loaded one whose names it shares."""
        if file is not None:
            if not cert_file_allowed(tls, file):
                raise InvalidInput(
                    f"{file[:200]!r} is not a certificate file of {owner!r}",
                    hint="name one of its tls.certs, or a file inside one of its directories",
                    detail={"certs": list(tls.certs)},
                )
            return file
        if len(tls.certs) == 1 and tls.files:
            return tls.files[0]
        wanted = set(cert.names)
        loaded = await self.plane.certificates(tls, warn_days=self.warn_days)
        matches = [row["path"] for row in loaded if _names(row) & wanted]
        if len(matches) == 1:
            return str(matches[0])
        raise InvalidInput(
            f"{owner!r} has several certificates and {len(matches)} of them share a name "
            f"with this one ({', '.join(cert.names) or 'no names'})",
            hint="name the file to replace (--file PATH)",
            detail={"certs": list(tls.certs), "matches": matches},
        )

    async def list(self) -> list[dict[str, Any]]:
        """Every TLS listener and app with what it serves, and expiry warnings."""
        spec = (await load_state(self.store)).spec
        owners: list[tuple[str, str, str, Tls]] = [
            ("listener", x.name, x.bind, x.tls) for x in spec.listeners if x.tls is not None
        ] + [
            ("app", a.name, a.bind, a.tls)
            for a in spec.apps
            if a.bind is not None and a.tls is not None
        ]
        rows = []
        for kind, owner, bind, tls in sorted(owners, key=lambda o: (o[1], o[0])):
            rows.append(
                {
                    "kind": kind,
                    "name": owner,
                    "bind": bind,
                    "certs": list(tls.certs),
                    "alpn": tls.alpn,
                    "redirect_from": tls.redirect_from,
                    "serving": await self.plane.certificates(tls, warn_days=self.warn_days),
                }
            )
        return rows

    async def expiries(self) -> tuple[tuple[str, str, float], ...]:
        """(owner, file, notAfter as a Unix time) of every certificate HAProxy serves;
        none when HAProxy cannot be read (metrics must not fail for it)."""
        try:
            rows = await self.list()
        except PrismError as exc:
            log.warning("metrics: cannot read the served certificates: %s", exc)
            return ()
        out = []
        for row in rows:
            for served in row["serving"]:
                try:
                    at = datetime.fromisoformat(str(served["not_after"])).timestamp()
                except ValueError:
                    continue
                out.append((str(row["name"]), str(served["path"]), at))
        return tuple(out)
