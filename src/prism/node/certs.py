"""A node's TLS certificates: checked on disk, replaced at runtime, read back.

:func:`rotate` replaces one certificate file without a reload: the checked
bundle is written to the file first (so a reload or restart serves it too),
then sent as a ``set ssl cert`` transaction and committed, then read back with
``show ssl cert`` and compared by serial and fingerprint. If HAProxy refuses
it, the old file is put back and the old certificate keeps serving.

:func:`check_files` (before a spec is stored) and :func:`loaded` (for status)
read certificate files and HAProxy's view of them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prism.core.pem import CertInfo, check_pem, normalize_serial
from prism.core.tls import Tls, cert_file_allowed
from prism.errors import Drift, InvalidInput, RuntimeAPIError
from prism.haproxy.parsers import LoadedCert
from prism.haproxy.runtime import RuntimeClient
from prism.node.files import read_text, write_atomic

__all__ = ["check_files", "expiry", "loaded", "rotate"]

#: a certificate file holds a private key: only its owner may read it
_MODE = 0o600
_HAPROXY_TIME = "%b %d %H:%M:%S %Y GMT"


def _now() -> datetime:
    return datetime.now(UTC)


def check_files(tls_sections: Iterable[Tls]) -> None:
    """Every declared certificate file exists and holds a valid bundle, and every
    directory holds at least one file; InvalidInput names the first that does not."""
    for tls in tls_sections:
        for item in tls.certs:
            path = Path(item)
            if item.endswith("/"):
                if not path.is_dir() or not any(p.is_file() for p in path.iterdir()):
                    raise InvalidInput(
                        f"certificate directory {item} does not exist or holds no file",
                        hint="put the PEM files there first; nothing was changed",
                    )
                continue
            try:
                text = path.read_text(encoding="ascii")
            except (OSError, UnicodeDecodeError) as exc:
                raise InvalidInput(
                    f"cannot read certificate {item}: {getattr(exc, 'strerror', None) or exc}",
                    hint="put the PEM file (certificate, chain, key) there first; "
                    "nothing was changed",
                ) from None
            try:
                check_pem(text, now=_now())
            except InvalidInput as exc:
                raise InvalidInput(f"certificate {item}: {exc.message}", hint=exc.hint) from None


async def rotate(runtime: RuntimeClient, path: str, cert: CertInfo) -> dict[str, Any]:
    """Write ``cert`` to ``path``, swap it in at runtime, read it back (module docstring)."""
    if path not in await runtime.show_ssl_certs():
        raise InvalidInput(
            f"HAProxy has not loaded a certificate from {path}",
            hint="name a file of the listener's tls.certs (or one inside its directory) "
            "that HAProxy has loaded; a new file needs a spec change",
        )
    file = Path(path)
    old = read_text(file)
    started = time.perf_counter()
    write_atomic(file, cert.text, mode=_MODE)
    written = time.perf_counter()
    try:
        await runtime.replace_ssl_cert(path, cert.text)
    except RuntimeAPIError:
        if old is not None:
            write_atomic(file, old, mode=_MODE)
        raise
    committed = time.perf_counter()
    seen = await runtime.show_ssl_cert(path)
    if normalize_serial(seen.serial) != cert.serial or seen.sha1.upper() != cert.sha1:
        raise Drift(
            f"HAProxy serves serial {seen.serial} from {path} after the commit, not {cert.serial}",
            hint="the file holds the new certificate; a reload would serve it",
            detail={"path": path, "serving": seen.serial, "wanted": cert.serial},
        )
    return {
        "path": path,
        "mode": "runtime",
        "write_ms": round((written - started) * 1000, 3),
        "commit_ms": round((committed - written) * 1000, 3),
        "total_ms": round((time.perf_counter() - started) * 1000, 3),
        **cert.summary(),
    }


def expiry(seen: LoadedCert, *, now: datetime, warn_days: int) -> dict[str, Any]:
    """A loaded certificate's dates as status shows them, with a warning ahead of expiry."""
    try:
        not_after = datetime.strptime(seen.not_after, _HAPROXY_TIME).replace(tzinfo=UTC)
    except ValueError:
        return {"not_after": seen.not_after, "days_left": None, "warning": None}
    days = (not_after - now).total_seconds() / 86_400
    warning = None
    if days <= 0:
        warning = "expired"
    elif days <= warn_days:
        warning = f"expires in {days:.1f} days"
    return {"not_after": not_after.isoformat(), "days_left": round(days, 2), "warning": warning}


async def loaded(
    runtime: RuntimeClient, tls: Tls, *, warn_days: int, now: datetime | None = None
) -> list[dict[str, Any]]:
    """What HAProxy serves for ``tls``: each loaded file of it, with serial and expiry."""
    moment = now or _now()
    files = await runtime.show_ssl_certs()
    wanted = [f for f in files if cert_file_allowed(tls, f)]
    out = []
    for path in wanted:
        seen = await runtime.show_ssl_cert(path)
        out.append(
            {
                "path": path,
                "subject": seen.subject,
                "names": seen.names,
                "serial": seen.serial,
                **expiry(seen, now=moment, warn_days=warn_days),
            }
        )
    return out
