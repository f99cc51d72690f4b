"""The smoke request's bare GET: framing, headers, and every way it can get no reply."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from prism.node import smoke

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _serve(handler: Handler) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def _head(reader: asyncio.StreamReader) -> str:
    return (await reader.readuntil(b"\r\n\r\n")).decode()


async def _get(port: int, **headers: str) -> tuple[int, str]:
    return await smoke.get("127.0.0.1", port, "/healthz", headers, tls=False, timeout=5)


async def test_a_sized_reply_gives_its_status_and_body_and_the_request_its_headers() -> None:
    """Content-Length framing; the request carries the routing headers, Host and close."""
    seen: list[str] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await _head(reader))
        writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\ndown")
        await writer.drain()
        writer.close()

    async for port in _serve(handler):
        assert await _get(port, **{"X-Prism-Color": "green", "Host": "shop.test"}) == (503, "down")
    head = seen[0].lower()
    assert head.startswith("get /healthz http/1.1\r\n")
    assert "x-prism-color: green\r\n" in head
    assert "host: shop.test\r\n" in head
    assert "connection: close\r\n" in head


async def test_a_chunked_reply_is_read_to_its_end() -> None:
    """Chunked framing (what HAProxy passes on from a streaming backend) is reassembled."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _head(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nok \r\n5\r\ngreen\r\n0\r\n\r\n"
        )
        await writer.drain()
        writer.close()

    async for port in _serve(handler):
        assert await _get(port) == (200, "ok green")


async def test_a_reply_cut_short_is_an_error() -> None:
    """A connection closed before the body ends is no reply, not a short body."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        await writer.drain()
        writer.close()

    async for port in _serve(handler):
        with pytest.raises(smoke.SmokeError, match=r"closed|incomplete|peer"):
            await _get(port)


async def test_no_reply_in_time_is_an_error_naming_the_timeout() -> None:
    """A listener that accepts and never answers fails after the smoke timeout."""
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        writer.close()

    async for port in _serve(handler):
        with pytest.raises(smoke.SmokeError, match=r"no reply within 0\.05s"):
            await smoke.get("127.0.0.1", port, "/", {}, tls=False, timeout=0.05)
        release.set()


async def test_a_refused_connection_is_an_error() -> None:
    """Nothing listening: the error says so (from the OS), nothing hangs."""
    async for port in _serve(lambda r, w: asyncio.sleep(0)):
        closed = port
    with pytest.raises(smoke.SmokeError, match=r"[Cc]onnect"):
        await _get(closed)


async def test_garbage_is_an_error() -> None:
    """A listener that does not speak HTTP gives an error, not a status."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _head(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        await writer.drain()
        writer.close()

    async for port in _serve(handler):
        with pytest.raises(smoke.SmokeError, match=r"."):
            await _get(port)
