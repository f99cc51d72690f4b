"""The request-log receiver: HAProxy's per-request lines into per-backend histograms.

HAProxy sends one datagram per logged request to 127.0.0.1:<port> (see
:mod:`prism.haproxy.requestlog` for the line and the config); this endpoint
parses each with the pure parser (a line without the node's key is counted
as malformed and dropped) and counts it in a
:class:`~prism.core.requestlog.Recorder`, which the data plane's counter
readings then carry. Memory is bounded by the recorder (a fixed number of
buckets per backend, a bounded number of backends), not by the rate.

The socket's receive buffer is raised (to :data:`RECEIVE_BUFFER`, as far as
the kernel allows): HAProxy drops a line it cannot send at once, so the buffer
is what absorbs a burst while the event loop is busy elsewhere. After each
wake-up the receiver leaves the socket alone for :data:`PAUSE` (20 ms), so a
busy HAProxy's lines are read hundreds at a time rather than one per wake-up;
a reading is therefore at most ~20 ms behind HAProxy's counters.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from prism.core.requestlog import Recorder
from prism.errors import HAProxyError
from prism.haproxy.requestlog import parse_line

__all__ = ["PAUSE", "RECEIVE_BUFFER", "RequestLogReceiver", "free_udp_port"]

log = logging.getLogger(__name__)

#: the receive buffer asked for (Linux caps it at net.core.rmem_max)
RECEIVE_BUFFER = 4 * 1024 * 1024


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port nothing is bound to right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


#: datagrams read per wake-up at most, so a flood cannot hold the event loop long
_BATCH = 4096
#: after a wake-up the socket is left alone this long (s), so lines are read in batches
PAUSE = 0.02


def _drain(sock: socket.socket, recorder: Recorder, prefix: bytes) -> bool:
    """Read the datagrams waiting (up to a batch) and count them; whether none is left.

    One read per wake-up, as an asyncio datagram transport does it, spent most of
    its time in the event loop's own bookkeeping; draining the socket in one go
    costs a few microseconds a line.
    """
    recv, add = sock.recv, recorder.add
    for _ in range(_BATCH):
        try:
            data = recv(4096)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError as exc:
            log.debug("request log receiver: %s", exc)
            return True
        parsed = parse_line(data, prefix)
        if parsed is None:
            recorder.malformed += 1
        else:
            add(*parsed)
    return False


class RequestLogReceiver:
    """One UDP socket on loopback, read by the event loop, feeding :attr:`recorder`."""

    def __init__(self, port: int, key: str, every: int = 1) -> None:
        self.port = port
        self.recorder = Recorder(every)
        self._prefix = f"prism {key} ".encode("ascii")
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._later: asyncio.TimerHandle | None = None

    @property
    def running(self) -> bool:
        return self._sock is not None

    async def start(self) -> None:
        """Bind 127.0.0.1:port; :class:`~prism.errors.HAProxyError` when it cannot."""
        if self._sock is not None:
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
        self._loop = asyncio.get_running_loop()
        self._sock = sock
        self._watch()

    def _watch(self) -> None:
        if self._sock is not None and self._loop is not None:
            self._loop.add_reader(self._sock.fileno(), self._readable)

    def _readable(self) -> None:
        # Read what is there, then look away for PAUSE: under load a wake-up finds
        # hundreds of lines, not one (the receive buffer holds them meanwhile). A
        # full batch means more wait: come back at the loop's next turn instead.
        sock, loop = self._sock, self._loop
        assert sock is not None
        assert loop is not None
        if _drain(sock, self.recorder, self._prefix):
            loop.remove_reader(sock.fileno())
            self._later = loop.call_later(PAUSE, self._watch)

    def close(self) -> None:
        if self._later is not None:
            self._later.cancel()
            self._later = None
        if self._sock is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
