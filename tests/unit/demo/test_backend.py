"""The demo backend: its pure request handling, and real processes on free ports."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from prism.demo.backend import BackendApp, Fault
from prism.testing.processes import Backend, start_backend

# --- a minimal blocking HTTP/1.1 reader, so the tests see exactly what was sent ---


class Reply:
    """One parsed response."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> dict[str, object]:
        doc = json.loads(self.body)
        assert isinstance(doc, dict)
        return doc


class Stream:
    """A socket plus the bytes read past the last response (pipelined answers)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self) -> bytes:
        chunk = self.sock.recv(65536)
        assert chunk, f"connection closed with {self.buf!r} unread"
        return chunk

    def reply(self, *, head_only: bool = False) -> Reply:
        """Read exactly one Content-Length framed response."""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self._fill()
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = 0 if head_only else int(headers["content-length"])
        while len(rest) < length:
            rest += self._fill()
        self.buf = rest[length:]
        return Reply(int(lines[0].split(" ")[1]), headers, rest[:length])

    def closed_by_peer(self) -> bool:
        """True when nothing more is buffered and the server closed its end."""
        if self.buf:
            return False
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True


@contextmanager
def connect(backend: Backend) -> Iterator[Stream]:
    """A fresh connection to the backend, closed on exit."""
    with socket.create_connection((backend.host, backend.port), timeout=5) as sock:
        yield Stream(sock)


def request(backend: Backend, method: str, path: str, body: bytes = b"", extra: str = "") -> Reply:
    """Send one request on a fresh connection and read the reply."""
    raw = (
        f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body
    with connect(backend) as stream:
        stream.sock.sendall(raw)
        reply = stream.reply(head_only=method == "HEAD")
        assert stream.buf == b"", "extra bytes after the response"
        return reply


@pytest.fixture(scope="module")
def backend() -> Iterator[Backend]:
    """One blue backend shared by the read-only tests; stopped by PID at the end."""
    b = start_backend("blue", "v1", name="s7")
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def fresh() -> Iterator[Backend]:
    """A backend of its own for tests that flip its fault or health switch."""
    b = start_backend("green", "v2")
    try:
        yield b
    finally:
        b.stop()


# --- pure handler ---


def test_handler_answers_identity_json() -> None:
    """A GET on any path answers 200 with color, version, server and path."""
    app = BackendApp("blue", "v1", "s1")
    raw, delay = app.handle("GET", "/a/b?q=1", b"", b"")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert json.loads(body) == {"color": "blue", "version": "v1", "server": "s1", "path": "/a/b"}
    assert delay == 0.0


@pytest.mark.parametrize(
    ("doc", "why"),
    [
        (b"[]", "JSON object"),
        (b"{", "not JSON"),
        (b'{"status": 99}', "status"),
        (b'{"delay_ms": -1}', "delay_ms"),
        (b'{"ratio": 2}', "ratio"),
        (b'{"nope": 1}', "unknown"),
        (b'{"reset": 1}', "reset must be true or false"),
    ],
)
def test_fault_rejects_bad_documents(doc: bytes, why: str) -> None:
    """A malformed or out-of-range fault document is refused, not half-applied."""
    with pytest.raises(ValueError, match=why):
        Fault.from_json(doc)


def test_fault_defaults_to_always_500() -> None:
    """An empty fault document means 500 on every request, without delay."""
    assert Fault.from_json(b"{}") == Fault(status=500, delay_ms=0, ratio=1.0)


def test_fault_ratio_zero_never_applies() -> None:
    """ratio 0 leaves every request healthy."""
    app = BackendApp("blue", "v1", "s1")
    app.fault = Fault(status=500, delay_ms=0, ratio=0.0)
    statuses = {app.handle("GET", "/", b"", b"")[0][9:12] for _ in range(200)}
    assert statuses == {b"200"}


# --- real processes ---


def test_get_returns_identity_and_headers(backend: Backend) -> None:
    """GET answers 200 JSON with the X-Backend-* headers and a correct Content-Length."""
    reply = request(backend, "GET", "/shop/cart?x=1")
    assert reply.status == 200
    assert reply.headers["x-backend-color"] == "blue"
    assert reply.headers["x-backend-version"] == "v1"
    assert reply.headers["content-type"] == "application/json"
    assert int(reply.headers["content-length"]) == len(reply.body)
    assert reply.json() == {"color": "blue", "version": "v1", "server": "s7", "path": "/shop/cart"}


def test_head_has_headers_but_no_body(backend: Backend) -> None:
    """HEAD answers GET's headers (including its Content-Length) with no body."""
    get = request(backend, "GET", "/x")
    head = request(backend, "HEAD", "/x")
    assert head.status == 200
    assert head.body == b""
    assert head.headers["content-length"] == get.headers["content-length"]


def test_healthz_says_ok(backend: Backend) -> None:
    """/healthz answers 200 "ok"."""
    reply = request(backend, "GET", "/healthz")
    assert (reply.status, reply.body) == (200, b"ok\n")


def test_keepalive_serves_many_requests_on_one_connection(backend: Backend) -> None:
    """HTTP/1.1 keeps the connection open, including for pipelined requests."""
    with connect(backend) as conn:
        for i in range(5):
            conn.sock.sendall(f"GET /{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert conn.reply().json()["path"] == f"/{i}"
        conn.sock.sendall(b"GET /p1 HTTP/1.1\r\nHost: x\r\n\r\nGET /p2 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.reply().json()["path"] == "/p1"
        assert conn.reply().json()["path"] == "/p2"


def test_connection_close_is_honoured(backend: Backend) -> None:
    """`Connection: close` gets one answer marked close, then the server closes."""
    with connect(backend) as conn:
        conn.sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = conn.reply()
        assert reply.status == 200
        assert reply.headers["connection"] == "close"
        assert conn.closed_by_peer()


def test_http10_closes_unless_keepalive_asked(backend: Backend) -> None:
    """HTTP/1.0 closes by default and stays open with `Connection: keep-alive`."""
    with connect(backend) as conn:
        conn.sock.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert conn.reply().headers["connection"] == "keep-alive"
        conn.sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert conn.reply().status == 200
        assert conn.closed_by_peer()


@pytest.mark.parametrize(
    "garbage",
    [
        b"garbage\r\n\r\n",
        b"GET / HTTP/2.0\r\n\r\n",
        b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: " + b"a" * 20000,
    ],
)
def test_garbage_gets_400_and_close(backend: Backend, garbage: bytes) -> None:
    """A malformed request is answered 400 and the connection is closed."""
    with connect(backend) as conn:
        conn.sock.sendall(garbage)
        reply = conn.reply()
        assert reply.status == 400
        assert reply.headers["connection"] == "close"
        assert conn.closed_by_peer()


def test_other_methods_get_405(backend: Backend) -> None:
    """Only GET and HEAD are served on ordinary paths."""
    assert request(backend, "POST", "/", b"{}").status == 405


def test_fault_switch_sets_shows_and_clears(fresh: Backend) -> None:
    """POST /_fault makes requests fail (healthz excepted); DELETE restores them."""
    set_reply = request(fresh, "POST", "/_fault", b'{"status": 503}')
    assert set_reply.json() == {
        "fault": {"status": 503, "delay_ms": 0, "ratio": 1.0, "reset": False}
    }
    assert request(fresh, "GET", "/_fault").json()["fault"] == {
        "status": 503,
        "delay_ms": 0,
        "ratio": 1.0,
        "reset": False,
    }
    failed = request(fresh, "GET", "/x")
    assert failed.status == 503
    assert failed.headers["x-backend-color"] == "green"
    assert request(fresh, "GET", "/healthz").status == 200
    assert request(fresh, "DELETE", "/_fault").json() == {"fault": None}
    assert request(fresh, "GET", "/x").status == 200


def test_fault_rejects_bad_body_over_http(fresh: Backend) -> None:
    """A bad fault document is answered 400 and changes nothing."""
    assert request(fresh, "POST", "/_fault", b'{"ratio": 7}').status == 400
    assert request(fresh, "GET", "/_fault").json() == {"fault": None}


def test_fault_delay_holds_the_answer(fresh: Backend) -> None:
    """A delay-only fault answers 200, but not before delay_ms."""
    request(fresh, "POST", "/_fault", b'{"status": null, "delay_ms": 300}')
    with connect(fresh) as conn:
        conn.sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        conn.sock.settimeout(0.1)
        with pytest.raises(TimeoutError, match="timed out"):
            conn.sock.recv(1)
        conn.sock.settimeout(5)
        assert conn.reply().status == 200


def test_reset_fault_resets_the_connection_unanswered(fresh: Backend) -> None:
    """A reset fault answers nothing: the connection is reset; healthz still answers."""
    request(fresh, "POST", "/_fault", b'{"reset": true}')
    with connect(fresh) as conn:
        conn.sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        with pytest.raises(ConnectionResetError, match="reset"):
            conn.sock.recv(1)
    assert request(fresh, "GET", "/healthz").status == 200
    assert request(fresh, "DELETE", "/_fault").json() == {"fault": None}
    assert request(fresh, "GET", "/x").status == 200


def test_health_switch_fails_healthz_only(fresh: Backend) -> None:
    """POST /_health {"ok": false} turns /healthz to 503 while traffic still gets 200."""
    assert request(fresh, "POST", "/_health", b'{"ok": false}').json() == {"ok": False}
    assert request(fresh, "GET", "/healthz").status == 503
    assert request(fresh, "GET", "/").status == 200
    request(fresh, "POST", "/_health", b'{"ok": true}')
    assert request(fresh, "GET", "/healthz").status == 200


def test_sigterm_exits_cleanly(fresh: Backend) -> None:
    """SIGTERM ends the backend with exit status 0, even with a keep-alive client."""
    with connect(fresh) as conn:
        conn.sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        conn.reply()
        assert fresh.stop() == 0
        assert conn.closed_by_peer()


def test_stats_count_ordinary_requests_only(fresh: Backend) -> None:
    """/_stats counts the requests a client would send, not health checks or switches."""
    request(fresh, "GET", "/")
    request(fresh, "GET", "/anything")
    request(fresh, "GET", "/healthz")
    request(fresh, "POST", "/_health", b'{"ok": true}')
    assert request(fresh, "GET", "/_stats").json() == {"served": 2}
