"""The CLI's client: the request it writes, the answers it reads, and problem
answers turned into the error class their type names."""

from __future__ import annotations

import io
import json
import ssl
from pathlib import Path
from typing import BinaryIO

import pytest

from prism import errors
from prism.cli.client import ApiClient, ReplyError, Target, read_reply


class Wire:
    """An exchange that records the request and answers with fixed bytes."""

    def __init__(self, reply: bytes = b"", fail: OSError | None = None) -> None:
        self.reply, self.fail = reply, fail
        self.sent: list[bytes] = []

    def __call__(self, request: bytes) -> BinaryIO:
        self.sent.append(request)
        if self.fail is not None:
            raise self.fail
        return io.BytesIO(self.reply)


def _reply(status: int, body: object, reason: str = "Whatever") -> bytes:
    data = json.dumps(body).encode()
    head = f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
    return head.encode() + f"Content-Length: {len(data)}\r\n\r\n".encode() + data


def _client(wire: Wire, url: str = "http://prism.test:7070", token: str | None = "t") -> ApiClient:
    return ApiClient(Target(url, token), exchange=wire)


def test_the_request_carries_the_path_token_actor_and_json_body() -> None:
    """One HTTP/1.1 request, closed after its answer, with the body as JSON."""
    wire = Wire(_reply(200, {"ok": True}))
    answer = _client(wire).request("PUT", "/apps/shop/weights", {"weights": {"blue": 100}})
    assert answer == {"ok": True}
    head, _, body = wire.sent[0].partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "PUT /api/v1/apps/shop/weights HTTP/1.1"
    assert {"Host: prism.test:7070", "Authorization: Bearer t", "Connection: close"} <= set(lines)
    assert "Content-Type: application/json" in lines
    assert f"Content-Length: {len(body)}" in lines
    assert json.loads(body) == {"weights": {"blue": 100}}
    assert any(line.startswith("X-Prism-Actor: ") for line in lines)


def test_a_get_has_no_body_and_no_token_when_there_is_none() -> None:
    wire = Wire(_reply(200, []))
    assert _client(wire, url="http://127.0.0.1:9/base/", token=None).get("/apps") == []
    head, _, body = wire.sent[0].partition(b"\r\n\r\n")
    assert head.startswith(b"GET /base/api/v1/apps HTTP/1.1\r\n")
    assert b"Authorization" not in head
    assert b"Content-Length: 0" in head
    assert body == b""


@pytest.mark.parametrize(
    ("raw", "status", "body"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", 200, b"{}"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n[1]extra", 200, b"[1]"),
        (
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\n[1,\r\n2;ext=1\r\n2]\r\n0\r\nX-Trailer: y\r\n\r\n",
            201,
            b"[1,2]",
        ),
        (b"HTTP/1.0 204 No Content\r\n\r\n", 204, b""),
        (b"HTTP/1.1 500 Oops\r\nServer: x\r\n\r\nto the end", 500, b"to the end"),
    ],
    ids=["length", "length-stops", "chunked", "empty", "to-eof"],
)
def test_replies_are_read_by_length_chunks_or_to_the_end(
    raw: bytes, status: int, body: bytes
) -> None:
    assert read_reply(io.BytesIO(raw)) == (status, body)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "closed before an answer"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1.1 answer"),
        (b"HTTP/1.1 2x0 OK\r\n\r\n", "not an HTTP/1.1 answer"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "invalid Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "ended after 5 of 10"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "invalid chunk size"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 101 + b"\r\n", "too many header lines"),
        (b"HTTP/1.1 200 " + b"K" * 70_000 + b"\r\n", "line too long"),
    ],
)
def test_a_reply_that_is_not_http_is_refused(raw: bytes, message: str) -> None:
    with pytest.raises(ReplyError, match=message):
        read_reply(io.BytesIO(raw))


def test_an_unreadable_reply_or_a_socket_error_is_unavailable() -> None:
    """Either way the command exits with Unavailable's code and says where it looked."""
    with pytest.raises(errors.Unavailable, match=r"cannot reach Prism at http://prism\.test:7070"):
        _client(Wire(b"garbage\r\n\r\n")).get("/x")
    refused = ConnectionRefusedError(111, "Connection refused")
    with pytest.raises(errors.Unavailable, match="Connection refused") as raised:
        _client(Wire(fail=refused)).get("/x")
    assert "prism serve" in str(raised.value.hint)


def test_a_success_that_is_not_json_is_unavailable() -> None:
    wire = Wire(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n<html>")
    with pytest.raises(errors.Unavailable, match="not JSON"):
        _client(wire).get("/x")


@pytest.mark.parametrize("url", ["ftp://prism.test", "prism.test:7070", "http://:80", "http://h:x"])
def test_a_url_that_is_not_http_is_invalid_input(url: str) -> None:
    with pytest.raises(errors.InvalidInput, match="invalid Prism URL"):
        ApiClient(Target(url, None))


@pytest.mark.parametrize("cls", errors.error_classes(), ids=lambda c: c.__name__)
def test_a_problem_becomes_the_class_its_type_names(cls: type[errors.PrismError]) -> None:
    """By type, not title: a retitled answer still maps, and keeps its detail and hint."""
    body = {
        "type": cls.type_uri,
        "title": "whatever the server calls it",
        "status": cls.status,
        "detail": "it broke",
        "hint": "fix it",
        "limit": 5,
    }
    with pytest.raises(cls, match="it broke") as raised:
        _client(Wire(_reply(cls.status, body))).get("/x")
    assert type(raised.value) is cls
    assert raised.value.exit_code == cls.exit_code
    assert (raised.value.hint, raised.value.detail["limit"]) == ("fix it", 5)


def test_an_unknown_type_or_a_non_problem_is_a_plain_prism_error() -> None:
    """Anything that is not one of Prism's types exits 1 with what the server said."""
    unknown = {"type": "about:blank", "title": "Gate failed", "detail": "odd"}
    with pytest.raises(errors.PrismError, match="odd") as raised:
        _client(Wire(_reply(409, unknown))).get("/x")
    assert type(raised.value) is errors.PrismError
    html = b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 24\r\n\r\n<html>bad gateway</html>"
    with pytest.raises(errors.PrismError, match="bad gateway"):
        _client(Wire(html)).get("/x")


def test_an_untrusted_certificate_is_unavailable_with_a_hint() -> None:
    """A TLS verification failure says the certificate is not trusted and how to fix it."""
    cause = ssl.SSLCertVerificationError(1, "certificate verify failed")
    cause.verify_message = "unable to get local issuer certificate"
    with pytest.raises(errors.Unavailable, match="TLS certificate is not trusted") as raised:
        _client(Wire(fail=cause), url="https://prism.test").get("/x")
    assert "local issuer" in str(raised.value)
    assert "--cacert" in str(raised.value.hint)


def test_a_cacert_that_is_not_a_certificate_is_invalid_input(tmp_path: Path) -> None:
    """--cacert pointing at garbage is refused before any request."""
    bad = tmp_path / "ca.pem"
    bad.write_text("nope")
    with pytest.raises(errors.InvalidInput, match=r"cannot use .* as a CA certificate"):
        ApiClient(Target("https://prism.test", "t", bad))
