"""A tiny, fast HTTP/1.1 backend that answers with its color and version.

Run it as ``python -m prism.demo.backend --port 8001 --color blue --version v1``.
It prints ``ready <port>`` on stdout once it listens (``--port 0`` picks a free
port and reports it), and exits cleanly on SIGTERM or SIGINT.

Routes (any other path behaves like ``/``):

    GET|HEAD /anything   200 {"color", "version", "server", "path"} as JSON
    GET|HEAD /healthz    200 "ok", or 503 "unhealthy" after POST /_health {"ok": false}
    GET|POST|DELETE /_fault   show / set / clear a fault: {"status", "delay_ms", "ratio", "reset"}
    GET|POST /_health    show / set the health switch: {"ok": true|false}
    GET|HEAD /_stats     {"served": N}: ordinary requests answered so far

Every response carries ``X-Backend-Color``, ``X-Backend-Version`` and
``X-Backend-Server``. A fault applies to a request with probability ``ratio``;
such a request waits ``delay_ms`` and then answers ``status`` (or the normal 200
when ``status`` is null), or with ``reset`` gets no answer at all: its
connection is reset (a TCP RST). Faults never touch ``/healthz`` or the
control routes.

The server is an ``asyncio.Protocol`` that answers from ``data_received`` without
creating a task per request: this keeps one process at well over 10,000
keep-alive requests a second, so a few of them can outrun HAProxy on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import re
import signal
import socket
import struct
import sys
from dataclasses import asdict, dataclass
from http import HTTPStatus
from typing import Any

__all__ = ["BackendApp", "Fault", "main", "serve"]

log = logging.getLogger("prism.demo.backend")

MAX_HEAD = 16 * 1024  # bytes of request line + headers before we call it malformed
MAX_BODY = 64 * 1024  # control bodies are tiny; anything bigger is abuse
_CACHE_LIMIT = 4096  # distinct cached responses; a path-scanning client must not grow memory
_LABEL = re.compile(r"[A-Za-z0-9._:+-]{1,64}")
# Control routes and the methods each accepts; faults never apply to them.
_CONTROL = {
    "/healthz": ("GET", "HEAD"),
    "/_fault": ("GET", "HEAD", "POST", "DELETE"),
    "/_health": ("GET", "HEAD", "POST"),
    "/_stats": ("GET", "HEAD"),
}


@dataclass(frozen=True, slots=True)
class Fault:
    """A fault applied to ordinary requests: answer ``status`` after ``delay_ms``.

    ``ratio`` is the probability that one request is affected at all.
    ``status`` None means "delay only, then answer normally"; ``reset`` means
    "answer nothing and reset the connection" (after the delay).
    """

    status: int | None = 500
    delay_ms: int = 0
    ratio: float = 1.0
    reset: bool = False

    @classmethod
    def from_json(cls, raw: bytes) -> Fault:
        """Parse and validate a fault document; raise ValueError when it is wrong."""
        try:
            doc = json.loads(raw or b"{}")
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"body is not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise ValueError("body must be a JSON object")
        unknown = set(doc) - {"status", "delay_ms", "ratio", "reset"}
        if unknown:
            raise ValueError(f"unknown fields: {sorted(unknown)}")
        status = doc.get("status", 500)
        delay = doc.get("delay_ms", 0)
        ratio = doc.get("ratio", 1.0)
        reset = doc.get("reset", False)
        if status is not None and (
            isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599
        ):
            raise ValueError("status must be null or an integer 200..599")
        if isinstance(delay, bool) or not isinstance(delay, int) or not 0 <= delay <= 600_000:
            raise ValueError("delay_ms must be an integer 0..600000")
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 <= ratio <= 1:
            raise ValueError("ratio must be a number 0..1")
        if not isinstance(reset, bool):
            raise ValueError("reset must be true or false")
        return cls(status=status, delay_ms=delay, ratio=float(ratio), reset=reset)


#: the "response" of a request whose connection is to be reset instead of answered
RESET = b""
_JSON = b"application/json"
_TEXT = b"text/plain; charset=utf-8"
_CLOSE = b"Connection: close\r\n"
_KEEP = b"Connection: keep-alive\r\n"


class BackendApp:
    """The state of one backend process and its request handler (no I/O here)."""

    def __init__(self, color: str, version: str, name: str) -> None:
        self.color = color
        self.version = version
        self.name = name
        self.fault: Fault | None = None
        self.healthy = True
        self.requests = 0
        #: ordinary requests (not control routes) answered
        self.served = 0
        self._extra = (
            f"X-Backend-Color: {color}\r\nX-Backend-Version: {version}\r\n"
            f"X-Backend-Server: {name}\r\n"
        ).encode()
        # Whole encoded responses keyed by (path, HEAD?, Connection line): the hot
        # path then costs one dict lookup instead of a json.dumps per request.
        self._cache: dict[tuple[str, bool, bytes], bytes] = {}

    def _encode(
        self, status: int, body: bytes | dict[str, Any], conn: bytes, head: bool = False
    ) -> bytes:
        """Encode one whole response: a dict goes out as JSON, bytes as plain text."""
        content_type = _TEXT
        if isinstance(body, dict):
            content_type, body = _JSON, json.dumps(body, separators=(",", ":")).encode()
        try:
            reason = HTTPStatus(status).phrase.encode()
        except ValueError:
            reason = b"Unknown"
        return b"".join(
            (
                b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\n" % (status, reason, content_type),
                b"Content-Length: %d\r\n" % len(body),
                self._extra,
                conn,
                b"\r\n",
                b"" if head else body,
            )
        )

    def _identity(self, path: str) -> dict[str, Any]:
        return {"color": self.color, "version": self.version, "server": self.name, "path": path}

    def bad_request(self, why: str) -> bytes:
        """The 400 answer sent before closing a connection that spoke garbage."""
        return self._encode(400, f"bad request: {why}\n".encode(), _CLOSE)

    def handle(self, method: str, target: str, body: bytes, conn: bytes) -> tuple[bytes, float]:
        """Answer one request: return the encoded response (:data:`RESET`: reset the
        connection instead) and a delay in seconds."""
        self.requests += 1
        path = target.split("?", 1)[0]
        head = method == "HEAD"
        if path in _CONTROL:
            return self._control(method, path, body, conn), 0.0
        if method != "GET" and not head:
            return self._encode(405, b"method not allowed\n", conn), 0.0
        self.served += 1
        fault = self.fault
        if fault is not None and (fault.ratio >= 1.0 or random.random() < fault.ratio):
            delay = fault.delay_ms / 1000.0
            if fault.reset:
                return RESET, delay
            if fault.status is not None:
                doc = self._identity(path) | {"fault": True}
                return self._encode(fault.status, doc, conn, head), delay
            return self._ordinary(path, head, conn), delay
        return self._ordinary(path, head, conn), 0.0

    def _ordinary(self, path: str, head: bool, conn: bytes) -> bytes:
        key = (path, head, conn)
        cached = self._cache.get(key)
        if cached is None:
            cached = self._encode(200, self._identity(path), conn, head)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = cached
        return cached

    def _control(self, method: str, path: str, body: bytes, conn: bytes) -> bytes:
        head = method == "HEAD"
        if method not in _CONTROL[path]:
            return self._encode(405, b"method not allowed\n", conn)
        if path == "/_stats":
            return self._encode(200, {"served": self.served}, conn, head)
        if path == "/healthz":
            if self.healthy:
                return self._encode(200, b"ok\n", conn, head)
            return self._encode(503, b"unhealthy\n", conn, head)
        if method == "POST":
            try:
                if path == "/_fault":
                    self.fault = Fault.from_json(body)
                else:
                    self.healthy = _parse_health(body)
            except ValueError as exc:
                return self._encode(400, {"error": str(exc)}, conn)
            log.info("switches: fault=%s healthy=%s", self.fault, self.healthy)
        elif method == "DELETE":
            self.fault = None
            log.info("fault cleared")
        if path == "/_fault":
            return self._encode(
                200, {"fault": asdict(self.fault) if self.fault else None}, conn, head
            )
        return self._encode(200, {"ok": self.healthy}, conn, head)


def _parse_health(raw: bytes) -> bool:
    try:
        doc = json.loads(raw or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError):
        doc = None
    if not isinstance(doc, dict) or not isinstance(doc.get("ok"), bool):
        raise ValueError('body must be {"ok": true|false}')
    ok: bool = doc["ok"]
    return ok


class _Connection(asyncio.Protocol):
    """One client connection: parse pipelined requests, answer them in order."""

    def __init__(self, app: BackendApp, connections: set[_Connection]) -> None:
        self._app = app
        self._connections = connections
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None
        self._delayed: asyncio.TimerHandle | None = None  # a fault delay holds the line
        self._closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.discard(self)
        self._closing = True
        if self._delayed is not None:
            self._delayed.cancel()
            self._delayed = None
        self._transport = None

    # Backpressure: a client that pipelines without reading must not grow our
    # write buffer without bound, so stop reading until it catches up.
    def pause_writing(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None and not self._closing:
            self._transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if self._delayed is None:
            self._drain()

    def close(self) -> None:
        """Close after whatever has been written (used at shutdown)."""
        self._closing = True
        if self._transport is not None:
            self._transport.close()

    def _reset(self) -> None:
        """Drop the connection with a TCP RST (SO_LINGER 0), as a crashing server would."""
        self._closing = True
        if self._transport is None:
            return
        sock = self._transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._transport.abort()

    def _reject(self, why: str) -> None:
        assert self._transport is not None
        self._transport.write(self._app.bad_request(why))
        self.close()

    def _drain(self) -> None:
        buf = self._buf
        while not self._closing and self._transport is not None:
            # RFC 9112 2.2: ignore empty lines before a request line.
            while buf[:2] == b"\r\n":
                del buf[:2]
            end = buf.find(b"\r\n\r\n", 0, MAX_HEAD + 4)
            if end < 0:
                if len(buf) > MAX_HEAD:
                    self._reject("header block too large")
                return
            parsed = self._parse_head(bytes(buf[:end]))
            if isinstance(parsed, str):
                self._reject(parsed)
                return
            method, target, length, keep = parsed
            start = end + 4
            if len(buf) < start + length:
                return  # wait for the rest of the body
            body = bytes(buf[start : start + length])
            del buf[: start + length]
            conn = b"" if keep is None else (_KEEP if keep else _CLOSE)
            response, delay = self._app.handle(method, target, body, conn)
            close = keep is False
            if response is RESET and delay <= 0:
                self._reset()
                return
            if delay > 0:
                loop = asyncio.get_running_loop()
                self._delayed = loop.call_later(delay, self._send_delayed, response, close)
                return
            self._transport.write(response)
            if close:
                self.close()
                return

    def _send_delayed(self, response: bytes, close: bool) -> None:
        self._delayed = None
        if self._transport is None:
            return
        if response is RESET:
            self._reset()
            return
        self._transport.write(response)
        if close:
            self.close()
        elif self._buf:
            self._drain()

    @staticmethod
    def _parse_head(head: bytes) -> tuple[str, str, int, bool | None] | str:
        """Return (method, target, body length, keep) or the reason it is malformed.

        ``keep`` is None for the HTTP/1.1 default (no Connection header needed in
        the answer), True for an HTTP/1.0 keep-alive, False to close after it.
        """
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            return "malformed request line"
        method_b, target_b, version = parts
        if not method_b.isalpha() or not method_b.isupper() or len(method_b) > 16:
            return "malformed method"
        if not target_b.startswith(b"/"):
            return "malformed target"
        if version not in (b"HTTP/1.1", b"HTTP/1.0"):
            return "unsupported HTTP version"
        http10 = version == b"HTTP/1.0"
        length = -1
        close = http10
        for line in lines[1:]:
            colon = line.find(b":")
            if colon <= 0 or line[colon - 1 : colon] in (b" ", b"\t"):
                return "malformed header line"
            name = line[:colon].lower()
            if name == b"content-length":
                value = line[colon + 1 :].strip()
                if not value.isdigit() or (length >= 0 and int(value) != length):
                    return "bad Content-Length"
                length = int(value)
            elif name == b"connection":
                tokens = {t.strip() for t in line[colon + 1 :].lower().split(b",")}
                if b"close" in tokens:
                    close = True
                elif b"keep-alive" in tokens and http10:
                    close = False
            elif name == b"transfer-encoding":
                return "Transfer-Encoding is not supported"
        if length > MAX_BODY:
            return "body too large"
        if not target_b.isascii():
            return "non-ASCII target"
        keep = False if close else (True if http10 else None)
        return method_b.decode(), target_b.decode(), max(length, 0), keep


async def serve(
    host: str,
    port: int,
    app: BackendApp,
    *,
    stop: asyncio.Event | None = None,
    ready: asyncio.Future[int] | None = None,
) -> None:
    """Serve ``app`` on host:port until ``stop`` is set (or SIGTERM/SIGINT when None).

    Prints ``ready <port>`` to stdout once listening when ``ready`` is None;
    otherwise resolves ``ready`` with the bound port (for in-process use).
    """
    loop = asyncio.get_running_loop()
    connections: set[_Connection] = set()
    server = await loop.create_server(
        lambda: _Connection(app, connections), host, port, backlog=1024, reuse_address=True
    )
    bound = server.sockets[0].getsockname()[1]
    if stop is None:
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    if ready is None:
        sys.stdout.write(f"ready {bound}\n")
        sys.stdout.flush()
    else:
        ready.set_result(bound)
    log.info("%s %s (%s) listening on %s:%d", app.color, app.version, app.name, host, bound)
    try:
        await stop.wait()
    finally:
        server.close()
        # Answers are written synchronously, so only idle keep-alive connections
        # and delayed faults remain: close them so wait_closed() can return.
        for conn in list(connections):
            conn.close()
        await server.wait_closed()
        # Let connection_lost callbacks run so no transport outlives the loop.
        for _ in range(3):
            await asyncio.sleep(0)
    log.info("stopped after %d requests", app.requests)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="python -m prism.demo.backend", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="0 picks a free port")
    parser.add_argument("--color", required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--name", default="s1")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    for label in (args.color, args.version, args.name):
        # These land in response headers verbatim: refuse anything that could
        # split a header line.
        if not _LABEL.fullmatch(label):
            parser.error(f"{label!r} must match {_LABEL.pattern}")
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(message)s"
    )
    app = BackendApp(args.color, args.version, args.name)
    try:
        asyncio.run(serve(args.host, args.port, app))
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", args.host, args.port, exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
