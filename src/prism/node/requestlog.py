"""The request-log receiver: HAProxy's per-request lines into per-backend histograms.

HAProxy sends one datagram per logged request to 127.0.0.1:<port> (see
:mod:`prism.haproxy.requestlog` for the line and the config); this endpoint
parses each with the pure parser and counts it in a
:class:`~prism.core.requestlog.Recorder`, which the data plane's counter
readings then carry. Memory is bounded by the recorder (a fixed number of
buckets per backend, a bounded number of backends), not by the rate.

The socket's receive buffer is raised (to :data:`RECEIVE_BUFFER`, as far as
the kernel allows): HAProxy drops a line it cannot send at once, so the buffer
is what absorbs a burst while the event loop is busy elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from prism.core.requestlog import Recorder
from prism.errors import HAProxyError
from prism.haproxy.requestlog import parse_line

__all__ = ["RECEIVE_BUFFER", "RequestLogReceiver", "free_udp_port"]

log = logging.getLogger(__name__)

#: the receive buffer asked for (Linux caps it at net.core.rmem_max)
RECEIVE_BUFFER = 4 * 1024 * 1024


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port nothing is bound to right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...] | str) -> None:
        parsed = parse_line(data)
        if parsed is None:
            self.recorder.malformed += 1
            return
        self.recorder.add(*parsed)

    def error_received(self, exc: Exception) -> None:
        log.debug("request log receiver: %s", exc)


class RequestLogReceiver:
    """One UDP endpoint on loopback feeding :attr:`recorder`; :meth:`start`, :meth:`close`."""

    def __init__(self, port: int, every: int = 1) -> None:
        self.port = port
        self.recorder = Recorder(every)
        self._transport: asyncio.DatagramTransport | None = None

    @property
    def running(self) -> bool:
        return self._transport is not None

    async def start(self) -> None:
        """Bind 127.0.0.1:port; :class:`~prism.errors.HAProxyError` when it cannot."""
        if self._transport is not None:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            sock.bind(("127.0.0.1", self.port))
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise HAProxyError(
                f"cannot receive HAProxy's request log on 127.0.0.1:{self.port} (UDP): {exc}",
                hint="another process holds the port; free it, or start with "
                "--request-log-sample 0 to run without the request log",
            ) from exc
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self.recorder), sock=sock
        )
        self._transport = transport

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
