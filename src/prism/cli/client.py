"""The CLI's view of a Prism server: where it is, its token, and its API.

Problem responses are turned back into the :class:`PrismError` subclass their
``type`` URI names, so a CLI command exits with the same code the server's
error carries. HTTPS certificates are verified: against ``--cacert`` /
``$PRISM_CACERT`` when given, else the system's trust store.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prism import errors
from prism.errors import InvalidInput, PrismError, Unavailable
from prism.node.files import read_text
from prism.node.paths import default_state_dir

if TYPE_CHECKING:
    import ssl

    import httpx

__all__ = ["ApiClient", "Target", "locate"]

DEFAULT_URL = "http://127.0.0.1:7070"

# Every error class of the tree, by the type URI the API's problem answers carry.
_BY_TYPE: dict[str, type[PrismError]] = {cls.type_uri: cls for cls in errors.error_classes()}


@dataclass(frozen=True)
class Target:
    url: str
    token: str | None
    #: the CA certificate(s) that sign the server's TLS certificate (None: the system's)
    cacert: Path | None = None


def locate(
    url: str | None, token: str | None, state_dir: Path | None, cacert: Path | None = None
) -> Target:
    """Find the server: --url, $PRISM_URL, the state dir's server.json, then the default.

    The token comes from --token, $PRISM_TOKEN, or the serving state dir's token file.
    """
    root = state_dir or default_state_dir()
    info: dict[str, Any] = {}
    text = read_text(root / "server.json")
    if text:
        try:
            info = json.loads(text)
        except ValueError:
            info = {}
    resolved_url = url or os.environ.get("PRISM_URL") or info.get("url") or DEFAULT_URL
    resolved_token = token or os.environ.get("PRISM_TOKEN")
    if resolved_token is None:
        token_dir = Path(info["state_dir"]) if "state_dir" in info else root
        try:
            resolved_token = (read_text(token_dir / "token") or "").strip() or None
        except PermissionError:
            resolved_token = None
    return Target(str(resolved_url).rstrip("/"), resolved_token, cacert)


def _verify(cacert: Path | None) -> ssl.SSLContext:
    """Certificates are always verified: against ``cacert`` when given."""
    import ssl  # only https needs it; see ApiClient on start-up time

    if cacert is None:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cafile=str(cacert))
    except (OSError, ssl.SSLError) as exc:
        raise InvalidInput(
            f"cannot use {cacert} as a CA certificate: {exc}",
            hint="--cacert / PRISM_CACERT takes a PEM file of CA certificates",
        ) from exc


def _untrusted(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    import ssl  # loaded by httpx already, whenever a request has failed

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class ApiClient:
    """Async client of ``/api/v1``."""

    def __init__(self, target: Target, *, timeout: float = 120.0) -> None:
        # Imported here, not at the top: httpx (and what it pulls in) is most of
        # the CLI's start-up time, and `prism --help` or a refused argument never
        # needs it.
        import httpx

        self._httpx = httpx
        self.target = target
        headers = {"X-Prism-Actor": _actor()}
        if target.token:
            headers["Authorization"] = f"Bearer {target.token}"
        self._client = httpx.AsyncClient(
            base_url=f"{target.url}/api/v1",
            headers=headers,
            timeout=timeout,
            trust_env=False,
            # Plain http has no certificate to verify, so it needs no trust store
            # (verify=True would load the CA bundle: tens of ms of start-up time).
            verify=_verify(target.cacert) if target.url.startswith("https:") else False,
        )

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._client.aclose()

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        try:
            reply = await self._client.request(method, path, json=body)
        except self._httpx.HTTPError as exc:
            untrusted = _untrusted(exc)
            if untrusted is not None:
                raise Unavailable(
                    f"cannot reach Prism at {self.target.url}: its TLS certificate is not"
                    f" trusted ({untrusted.verify_message})",
                    hint="pass the CA that signed it with --cacert FILE or PRISM_CACERT",
                ) from exc
            raise Unavailable(
                f"cannot reach Prism at {self.target.url}: {type(exc).__name__}",
                hint="start `prism serve` or `prism demo`, or point --url / PRISM_URL at it",
            ) from exc
        if reply.is_success:
            return reply.json()
        raise _error_from(reply)

    async def get(self, path: str) -> Any:
        return await self.request("GET", path)


def _error_from(reply: httpx.Response) -> PrismError:
    try:
        body = reply.json()
    except ValueError:
        body = {"detail": reply.text[:500]}
    if not isinstance(body, dict):
        body = {"detail": str(body)[:500]}
    cls = _BY_TYPE.get(str(body.get("type")), PrismError)
    extra = {
        k: v for k, v in body.items() if k not in ("type", "title", "status", "detail", "hint")
    }
    hint = body.get("hint")
    return cls.restore(
        str(body.get("detail") or f"HTTP {reply.status_code}"),
        hint=hint if isinstance(hint, str) else None,
        detail=extra,
    )


def _actor() -> str:
    user = os.environ.get("USER") or os.environ.get("LOGNAME") or "cli"
    safe = "".join(c for c in user if c.isascii() and (c.isalnum() or c in "._@-"))[:64]
    return safe or "cli"
