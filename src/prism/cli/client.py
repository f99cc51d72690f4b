"""The CLI's view of a Prism server: where it is, its token, and its API.

The client speaks HTTP/1.1 over a plain socket (TLS-wrapped for ``https``),
one connection per request: the CLI makes one or two calls and exits, so the
standard library's few modules start in a few milliseconds where an HTTP
library and an event loop cost a tenth of a second.

Problem responses are turned back into the :class:`PrismError` subclass their
``type`` URI names, so a CLI command exits with the same code the server's
error carries. HTTPS certificates are verified: against ``--cacert`` /
``$PRISM_CACERT`` when given, else the system's trust store.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import urlsplit

from prism import errors
from prism.errors import InvalidInput, PrismError, Unavailable
from prism.node.files import read_text
from prism.node.paths import default_state_dir

if TYPE_CHECKING:
    import ssl

__all__ = ["ApiClient", "Exchange", "ReplyError", "Target", "locate", "read_reply"]

DEFAULT_URL = "http://127.0.0.1:7070"

#: Sends one request's bytes and returns the stream its reply is read from.
Exchange = Callable[[bytes], BinaryIO]

# Every error class of the tree, by the type URI the API's problem answers carry.
_BY_TYPE: dict[str, type[PrismError]] = {cls.type_uri: cls for cls in errors.error_classes()}

#: longest status or header line accepted, and most header lines
_LINE_LIMIT = 64 * 1024
_HEADER_LIMIT = 100


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
    import ssl  # only https needs it, and it costs start-up time

    if cacert is None:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cafile=str(cacert))
    except (OSError, ssl.SSLError) as exc:
        raise InvalidInput(
            f"cannot use {cacert} as a CA certificate: {exc}",
            hint="--cacert / PRISM_CACERT takes a PEM file of CA certificates",
        ) from exc


class ReplyError(Exception):
    """The server's answer is not HTTP/1.1 this client can read."""


class ApiClient:
    """Client of ``/api/v1``: :meth:`request` sends JSON and returns the JSON answer."""

    def __init__(
        self, target: Target, *, timeout: float = 120.0, exchange: Exchange | None = None
    ) -> None:
        parts = urlsplit(target.url)
        try:
            port = parts.port
        except ValueError:
            port = None
            parts = parts._replace(netloc="")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidInput(
                f"invalid Prism URL {target.url[:200]!r}",
                hint="--url / PRISM_URL takes http://HOST:PORT or https://HOST:PORT",
            )
        self.target = target
        self._timeout = timeout
        self._host = parts.hostname
        self._port = port or (443 if parts.scheme == "https" else 80)
        self._authority = parts.netloc.rpartition("@")[2]
        self._base = parts.path.rstrip("/") + "/api/v1"
        self._tls = _verify(target.cacert) if parts.scheme == "https" else None
        self._exchange = exchange or self._over_socket
        self._headers = {"X-Prism-Actor": _actor(), "Accept": "application/json"}
        if target.token:
            self._headers["Authorization"] = f"Bearer {target.token}"

    def request(self, method: str, path: str, body: Any = None) -> Any:
        # default=str: a YAML date or the like goes as text, for the server to judge
        payload = b"" if body is None else json.dumps(body, default=str).encode()
        head = [f"{method} {self._base}{path} HTTP/1.1", f"Host: {self._authority}"]
        head += [f"{name}: {value}" for name, value in self._headers.items()]
        if body is not None:
            head.append("Content-Type: application/json")
        head += [f"Content-Length: {len(payload)}", "Connection: close", "", ""]
        request = "\r\n".join(head).encode("latin-1") + payload
        try:
            with self._exchange(request) as stream:
                status, data = read_reply(stream)
        except (OSError, ReplyError) as exc:
            raise self._unreachable(exc) from exc
        if not 200 <= status < 300:
            raise _error_from(status, data)
        if not data.strip():
            return None
        try:
            return json.loads(data)
        except ValueError:
            raise Unavailable(
                f"Prism at {self.target.url} answered {status} with a body that is not JSON",
                hint="is --url / PRISM_URL pointing at Prism's API?",
            ) from None

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def _over_socket(self, request: bytes) -> BinaryIO:
        sock = socket.create_connection((self._host, self._port), timeout=self._timeout)
        try:
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_hostname=self._host)
            sock.sendall(request)
            return sock.makefile("rb")
        finally:
            # The file keeps the connection open until it is closed itself.
            sock.close()

    def _unreachable(self, exc: BaseException) -> Unavailable:
        verify_message = getattr(exc, "verify_message", None)
        if self._tls is not None and verify_message is not None:
            return Unavailable(
                f"cannot reach Prism at {self.target.url}: its TLS certificate is not"
                f" trusted ({verify_message})",
                hint="pass the CA that signed it with --cacert FILE or PRISM_CACERT",
            )
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return Unavailable(
            f"cannot reach Prism at {self.target.url}: {reason or type(exc).__name__}",
            hint="start `prism serve` or `prism demo`, or point --url / PRISM_URL at it",
        )


def read_reply(stream: BinaryIO) -> tuple[int, bytes]:
    """Read one HTTP/1.1 response: its status and its body (length, chunked, or to EOF)."""
    status_line = _line(stream)
    version, _, rest = status_line.partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or not (code.isdigit() and code.isascii()):
        raise ReplyError(f"not an HTTP/1.1 answer: {status_line[:80]!r}")
    headers: dict[str, str] = {}
    for _ in range(_HEADER_LIMIT):
        line = _line(stream)
        if not line:
            break
        name, colon, value = line.partition(":")
        if not colon:
            raise ReplyError(f"malformed header line {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    else:
        raise ReplyError("too many header lines")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return int(code), _chunks(stream)
    length = headers.get("content-length")
    if length is None:
        return int(code), stream.read()
    if not (length.isdigit() and length.isascii()):
        raise ReplyError(f"invalid Content-Length {length[:40]!r}")
    return int(code), _exactly(stream, int(length))


def _line(stream: BinaryIO) -> str:
    raw = stream.readline(_LINE_LIMIT + 1)
    if len(raw) > _LINE_LIMIT:
        raise ReplyError("header line too long")
    if not raw:
        raise ReplyError("the connection closed before an answer")
    return raw.decode("latin-1").rstrip("\r\n")


def _exactly(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise ReplyError(f"the answer ended after {len(data)} of {size} bytes")
    return data


def _chunks(stream: BinaryIO) -> bytes:
    parts: list[bytes] = []
    while True:
        size_text = _line(stream).partition(";")[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise ReplyError(f"invalid chunk size {size_text[:40]!r}") from None
        if size == 0:
            while _line(stream):  # trailers, up to the empty line
                pass
            return b"".join(parts)
        parts.append(_exactly(stream, size))
        _line(stream)  # the CRLF after the chunk


def _error_from(status: int, data: bytes) -> PrismError:
    text = data.decode("utf-8", "replace")
    try:
        body = json.loads(text)
    except ValueError:
        body = {"detail": text[:500]}
    if not isinstance(body, dict):
        body = {"detail": str(body)[:500]}
    cls = _BY_TYPE.get(str(body.get("type")), PrismError)
    extra = {
        k: v for k, v in body.items() if k not in ("type", "title", "status", "detail", "hint")
    }
    hint = body.get("hint")
    return cls.restore(
        str(body.get("detail") or f"HTTP {status}"),
        hint=hint if isinstance(hint, str) else None,
        detail=extra,
    )


def _actor() -> str:
    user = os.environ.get("USER") or os.environ.get("LOGNAME") or "cli"
    safe = "".join(c for c in user if c.isascii() and (c.isalnum() or c in "._@-"))[:64]
    return safe or "cli"
