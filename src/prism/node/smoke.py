"""One plain GET through a node's own listener: the smoke request's transport.

A smoke request sits between the health gate and the switch of a cutover, so
it must cost what a request costs, not what a client library costs to build:
an ``httpx`` client made per request took about 3 ms here against 0.7 ms for
the same request on a bare connection. This is the bare connection: asyncio
streams, HTTP/1.1 framed by ``h11`` (chunked or sized replies alike),
``Connection: close``, one request per connection, so nothing pooled outlives
a reload of HAProxy.

It checks routing through the listener, not the listener's certificate (the
certificate read-back and ``prism status`` do that): TLS is not verified.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Mapping

import h11

__all__ = ["SmokeError", "get"]

#: replies longer than this are cut here (a smoke check compares a short body)
MAX_BODY = 1024 * 1024

_tls: ssl.SSLContext | None = None


class SmokeError(Exception):
    """The request got no complete reply (refused, reset, timed out, not HTTP)."""


def _context() -> ssl.SSLContext:
    global _tls
    if _tls is None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # see the module docstring
        _tls = context
    return _tls


async def get(
    host: str,
    port: int,
    path: str,
    headers: Mapping[str, str],
    *,
    tls: bool,
    timeout: float,  # noqa: ASYNC109 - the smoke timeout, which the error names
) -> tuple[int, str]:
    """``GET path`` on host:port; the reply's status and body (decoded, cut at MAX_BODY).

    ``headers`` may name ``Host``; otherwise it is host:port. Raises SmokeError.
    """
    fields = {"Host": f"{host}:{port}", **headers, "Connection": "close"}
    try:
        async with asyncio.timeout(timeout):
            return await _exchange(host, port, path, fields, tls)
    except TimeoutError as exc:
        raise SmokeError(f"no reply within {timeout:g}s") from exc
    except (OSError, h11.ProtocolError) as exc:
        raise SmokeError(str(exc) or type(exc).__name__) from exc


async def _exchange(
    host: str, port: int, path: str, fields: Mapping[str, str], tls: bool
) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection(host, port, ssl=_context() if tls else None)
    try:
        conn = h11.Connection(h11.CLIENT)
        request = h11.Request(method="GET", target=path, headers=list(fields.items()))
        writer.write(conn.send(request) + conn.send(h11.EndOfMessage()))
        await writer.drain()
        status: int | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data[: MAX_BODY - len(body)]
            elif isinstance(event, h11.EndOfMessage) and status is not None:
                return status, body.decode("utf-8", errors="replace")
            elif isinstance(event, h11.ConnectionClosed):
                raise SmokeError("the connection closed before the reply ended")
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
