"""HAProxy's request log as Prism asks for it: the config lines and the line parser. Pure.

Every HTTP request HAProxy finishes becomes one datagram to Prism's receiver
on loopback (UDP, a port kept in the node's settings), in ``format raw`` (the
message alone, no syslog header) with Prism's own ``log-format``::

    prism <key> <backend> <status> <Ta>

``<key>`` is the node's line key (:func:`line_key`, derived from its smoke
key, so it lives where the smoke key does: the 0600 settings and config
files): any local process can send datagrams to a loopback port, and a line
without the key is dropped as malformed, so no other process can feed the
gates' counts and times. ``%b`` is the backend that answered (the frontend's name when the frontend
answered itself: a 404, a redirect, the maintenance page), ``%ST`` the status
(-1 when the client left before one), ``%Ta`` the request's active time in
ms. ``sample 1:N`` logs one request in N when the rate is too high to log
every one. A line that does not read exactly so is *malformed*: counted and
dropped, never guessed at.

UDP rather than a unix datagram socket: Linux queues at most
``net.unix.max_dgram_qlen`` (10 here) datagrams on a unix socket, and HAProxy
drops a log line it cannot send at once; a UDP socket's receive buffer holds
thousands. Only loopback is ever used.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

from prism.errors import InvalidInput

__all__ = ["LOG_LENGTH", "MAX_SAMPLE", "line_key", "log_format", "log_lines", "parse_line"]

#: the longest line HAProxy sends (a backend name is at most ~70 characters)
LOG_LENGTH: Final = 256
#: the coarsest sampling: one request in this many
MAX_SAMPLE: Final = 1000
_KEY = re.compile(r"[0-9a-f]{24}", re.ASCII)
_FIELDS = re.compile(rb"([A-Za-z0-9._:-]{1,128}) (-?[0-9]{1,9}) (-?[0-9]{1,9})\n?", re.ASCII)


def line_key(smoke_key: str) -> str:
    """The key every request-log line of a node starts with (24 hex digits)."""
    return hashlib.sha256(b"prism request log\0" + smoke_key.encode()).hexdigest()[:24]


def log_format(key: str) -> str:
    """The log-format Prism renders for ``key``; :func:`parse_line` reads exactly this."""
    if not isinstance(key, str) or _KEY.fullmatch(key) is None:
        raise InvalidInput("invalid request log key", hint="see line_key()")
    return f"prism {key} %b %ST %Ta"


def log_lines(port: int, every: int, key: str) -> tuple[list[str], list[str]]:
    """The ``global`` and ``defaults`` lines sending every ``every``-th request's line,
    starting with ``key``, to 127.0.0.1:``port``."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InvalidInput(f"invalid request log port {port!r}", hint="use 1..65535")
    if isinstance(every, bool) or not isinstance(every, int) or not 1 <= every <= MAX_SAMPLE:
        raise InvalidInput(
            f"invalid request log sampling {every!r}", hint=f"log one request in 1..{MAX_SAMPLE}"
        )
    sample = f" sample 1:{every}" if every > 1 else ""
    target = f"    log 127.0.0.1:{port} len {LOG_LENGTH} format raw{sample} local0 info"
    defaults = ["    log global", f'    log-format "{log_format(key)}"']
    return [target], defaults


def parse_line(data: bytes, prefix: bytes) -> tuple[str, int, int] | None:
    """``(backend, status, ms)`` from one datagram, or None when it is not Prism's line.

    ``prefix`` is ``b"prism <key> "`` for the node's key (see :func:`line_key`)."""
    if not data.startswith(prefix):
        return None
    match = _FIELDS.fullmatch(data, len(prefix))
    if match is None:
        return None
    backend, status, ms = match.groups()
    return backend.decode("ascii"), int(status), max(0, int(ms))
