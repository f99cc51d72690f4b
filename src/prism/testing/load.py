"""A bounded HTTP/1.1 load generator that records which color served each request.

Integration tests drive traffic through HAProxy while Prism changes routing, then
assert on the samples: no failures during a cutover, the right share per color,
only the new color after a switch::

    report = await run_load("127.0.0.1", port, duration=3.0, concurrency=16)
    assert report.failures == []
    assert set(report.between(t_switch + 0.5, report.finished).by_color) == {"green"}

Every request started yields exactly one :class:`Sample`; a refused connection,
reset, timeout or garbled answer is a sample with ``status == 0`` and the error
text, never a missing sample. A run always stops by itself: after ``total``
requests, after ``duration`` seconds, and in any case after ``max_seconds``
(plus at most one ``timeout`` for requests still in flight).

It speaks raw asyncio streams rather than httpx, which is several times slower
per request and would measure itself instead of HAProxy.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import math
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, TypedDict, Unpack

__all__ = [
    "LoadOptions",
    "LoadReport",
    "Sample",
    "colors_by_key",
    "run_load",
    "run_load_in_thread",
]

_MAX_HEAD = 64 * 1024
_MAX_CONCURRENCY = 2000  # each connection costs file descriptors on both ends
_ERROR_PAUSE = 0.001  # after a failure, so a dead port does not spin one core flat out


class Sample(NamedTuple):
    """One request: monotonic start/end, HTTP status (0 when none), color, error text."""

    start: float
    end: float
    status: int
    color: str | None
    error: str | None


@dataclass(slots=True)
class LoadReport:
    """Every sample of one run, with the usual summaries.

    ``started``/``finished`` are ``time.monotonic()`` readings bracketing the run;
    ``stale_retries`` counts requests resent once because a reused keep-alive
    connection was found closed before any byte of the answer arrived.
    """

    samples: list[Sample] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0
    stale_retries: int = 0

    @property
    def total(self) -> int:
        """Number of requests made."""
        return len(self.samples)

    @property
    def ok(self) -> int:
        """Number of 2xx answers."""
        return sum(1 for s in self.samples if 200 <= s.status < 300)

    @property
    def failures(self) -> list[Sample]:
        """Samples that are errors (status 0) or non-2xx answers."""
        return [s for s in self.samples if not 200 <= s.status < 300]

    @property
    def by_color(self) -> dict[str, int]:
        """Requests per color, over every sample that named one (any status)."""
        return dict(Counter(s.color for s in self.samples if s.color is not None))

    @property
    def by_status(self) -> dict[int, int]:
        """Requests per HTTP status (0 for transport errors)."""
        return dict(Counter(s.status for s in self.samples))

    @property
    def elapsed(self) -> float:
        """Seconds from the start of the run to its end."""
        return max(self.finished - self.started, 0.0)

    @property
    def rps(self) -> float:
        """Requests completed per second over the whole run."""
        return self.total / self.elapsed if self.elapsed > 0 else 0.0

    def between(self, t0: float, t1: float) -> LoadReport:
        """The samples that started in [t0, t1), as a report of their own."""
        picked = [s for s in self.samples if t0 <= s.start < t1]
        return LoadReport(picked, started=t0, finished=t1)

    def summary(self) -> str:
        """One line for logs and assertion messages."""
        errors = Counter(s.error for s in self.samples if s.error)
        return (
            f"{self.total} requests in {self.elapsed:.2f}s ({self.rps:.0f}/s), ok={self.ok}, "
            f"colors={self.by_color}, statuses={self.by_status}, "
            f"errors={dict(errors.most_common(3))}, stale_retries={self.stale_retries}"
        )


class _Stale(Exception):
    """A reused connection was closed before it answered: safe to resend once."""


class _Answer(NamedTuple):
    status: int
    color: str | None
    close: bool


async def _read_answer(reader: asyncio.StreamReader, reused: bool) -> _Answer:
    """Read one response and return its status, color and whether to close."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if reused and not exc.partial:
            raise _Stale from exc
        raise
    except ConnectionError as exc:
        # A reset before the head arrived on a reused connection is the same
        # race as a clean close: the server dropped an idle connection.
        if reused:
            raise _Stale from exc
        raise
    lines = head[:-4].split(b"\r\n")
    status_line = lines[0].split(b" ", 2)
    if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/1."):
        raise ValueError(f"malformed status line {lines[0][:80]!r}")
    status = int(status_line[1])
    close = status_line[0] == b"HTTP/1.0"
    length = -1
    chunked = False
    prism_color = backend_color = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"x-prism-color":
            prism_color = value.strip().decode("latin-1")
        elif name == b"x-backend-color":
            backend_color = value.strip().decode("latin-1")
        elif name == b"connection":
            tokens = value.lower()
            close = b"close" in tokens or (close and b"keep-alive" not in tokens)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
    if status < 200 or status in (204, 304):
        body = b""
    elif chunked:
        body = await _read_chunked(reader)
    elif length >= 0:
        body = await reader.readexactly(length)
    else:
        body = await reader.read()  # delimited by the server closing
        close = True
    color = prism_color or backend_color
    if color is None and body[:1] == b"{":
        color = _color_from_json(body)
    return _Answer(status, color, close)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0], 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass  # trailers
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


def _color_from_json(body: bytes) -> str | None:
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    color = doc.get("color") if isinstance(doc, dict) else None
    return color if isinstance(color, str) else None


def _build_request(
    host: str, port: int, path: str, headers: Mapping[str, str] | None, keepalive: bool
) -> bytes:
    if not path.startswith("/") or any(c in path for c in " \r\n"):
        raise ValueError(f"path must start with / and contain no spaces or newlines: {path!r}")
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}"]
    for name, value in (headers or {}).items():
        if any(c in name + value for c in "\r\n") or ":" in name:
            raise ValueError(f"header {name!r} would split the request")
        lines.append(f"{name}: {value}")
    if not keepalive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def run_load(
    host: str,
    port: int,
    *,
    total: int | None = None,
    duration: float | None = None,
    concurrency: int = 8,
    keepalive: bool = True,
    path: str = "/",
    headers: Mapping[str, str] | None = None,
    timeout: float = 5.0,  # noqa: ASYNC109 - bounds each request, not the whole run
    retry_stale: bool = True,
    max_seconds: float = 300.0,
) -> LoadReport:
    """Send GET requests from ``concurrency`` workers until a bound is reached.

    ``total`` caps the number of requests, ``duration`` the seconds spent
    starting them; at least one is required and ``max_seconds`` caps both.
    ``keepalive`` reuses one connection per worker; otherwise each request gets
    its own connection and ``Connection: close``. ``timeout`` bounds one whole
    request (connect, send, read). With ``retry_stale``, a request that finds its
    reused connection already closed (before any answer byte) is resent once on a
    fresh one, as browsers do; a second failure is recorded.
    """
    if total is None and duration is None:
        raise ValueError("run_load needs total or duration, or it would never stop")
    if total is not None and total < 0:
        raise ValueError("total must be >= 0")
    if duration is not None and not (duration >= 0 and math.isfinite(duration)):
        raise ValueError("duration must be a finite number >= 0")
    if not 1 <= concurrency <= _MAX_CONCURRENCY:
        raise ValueError(f"concurrency must be 1..{_MAX_CONCURRENCY}")
    if not timeout > 0:
        raise ValueError("timeout must be > 0")
    request = _build_request(host, port, path, headers, keepalive)
    report = LoadReport(started=time.monotonic())
    deadline = report.started + min(duration if duration is not None else math.inf, max_seconds)
    budget = total if total is not None else -1  # -1: unlimited by count
    samples = report.samples
    clock = time.monotonic

    async def worker() -> None:
        nonlocal budget
        link = _Link(host, port)
        try:
            while budget != 0 and clock() < deadline:
                if budget > 0:
                    budget -= 1
                start = clock()
                try:
                    async with asyncio.timeout(timeout):
                        try:
                            answer = await link.exchange(request)
                        except _Stale:
                            await link.close()
                            if not retry_stale:
                                raise
                            report.stale_retries += 1
                            answer = await link.exchange(request)
                except (OSError, EOFError, ValueError, asyncio.LimitOverrunError, _Stale) as exc:
                    cause = exc.__cause__ if isinstance(exc, _Stale) and exc.__cause__ else exc
                    samples.append(Sample(start, clock(), 0, None, _describe(cause)))
                    await link.close()
                    await asyncio.sleep(_ERROR_PAUSE)
                    continue
                samples.append(Sample(start, clock(), answer.status, answer.color, None))
                if answer.close or not keepalive:
                    await link.close()
        finally:
            await link.close()

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        report.finished = clock()
    return report


class _Link:
    """One worker's connection, held here so it is closed whatever interrupts it."""

    __slots__ = ("host", "port", "reader", "writer")

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def exchange(self, request: bytes) -> _Answer:
        """Send ``request`` (opening a connection if needed) and read the answer."""
        reused = self.reader is not None
        if self.reader is None or self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(request)
        return await _read_answer(self.reader, reused)

    async def close(self) -> None:
        writer, self.reader, self.writer = self.writer, None, None
        if writer is None:
            return
        writer.close()
        # A peer that already reset the connection makes wait_closed() raise;
        # our socket is closed either way.
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def colors_by_key(
    host: str,
    port: int,
    header: str,
    values: list[str],
    *,
    template: str = "{}",
    concurrency: int = 20,
    timeout: float = 10.0,  # noqa: ASYNC109 - bounds each request, not the whole run
) -> dict[str, str]:
    """One request per value, carrying ``header: template.format(value)``; the color that
    answered each value. Raises if any request fails or answers without a color.

    For sticky-split tests: 10,000 users with their own cookie take seconds this
    way, where an HTTP client library takes minutes.
    """
    if not 1 <= concurrency <= _MAX_CONCURRENCY:
        raise ValueError(f"concurrency must be 1..{_MAX_CONCURRENCY}")
    out: dict[str, str] = {}
    queue = list(values)

    async def worker() -> None:
        link = _Link(host, port)
        try:
            while queue:
                value = queue.pop()
                request = _build_request(
                    host, port, "/", {header: template.format(value)}, keepalive=True
                )
                async with asyncio.timeout(timeout):
                    try:
                        answer = await link.exchange(request)
                    except _Stale:
                        await link.close()
                        answer = await link.exchange(request)
                if answer.status != 200 or answer.color is None:
                    raise AssertionError(f"{header} {value!r}: HTTP {answer.status}, no color")
                out[value] = answer.color
                if answer.close:
                    await link.close()
        finally:
            await link.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return out


class LoadOptions(TypedDict, total=False):
    """The keyword arguments of :func:`run_load`, for :func:`run_load_in_thread`."""

    total: int | None
    duration: float | None
    concurrency: int
    keepalive: bool
    path: str
    headers: Mapping[str, str] | None
    timeout: float
    retry_stale: bool
    max_seconds: float


def run_load_in_thread(
    host: str, port: int, **options: Unpack[LoadOptions]
) -> concurrent.futures.Future[LoadReport]:
    """Run :func:`run_load` in a new thread with its own event loop.

    Tests use it to keep traffic flowing while their own loop drives Prism;
    ``await asyncio.wrap_future(fut)`` or ``fut.result()`` collects the report.
    Keyword arguments are those of :func:`run_load`.
    """
    fut: concurrent.futures.Future[LoadReport] = concurrent.futures.Future()

    def target() -> None:
        if not fut.set_running_or_notify_cancel():
            return
        try:
            report = asyncio.run(run_load(host, port, **options))
        except BaseException as exc:  # the caller sees it through the future
            fut.set_exception(exc)
        else:
            fut.set_result(report)

    threading.Thread(target=target, name=f"prism-load-{host}:{port}", daemon=True).start()
    return fut


def main(argv: list[str] | None = None) -> int:
    """``python -m prism.testing.load HOST PORT`` prints a run's summary as JSON."""
    parser = argparse.ArgumentParser(prog="python -m prism.testing.load")
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--total", type=int)
    parser.add_argument("--duration", type=float)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--no-keepalive", dest="keepalive", action="store_false")
    parser.add_argument("--path", default="/")
    args = parser.parse_args(argv)
    report = asyncio.run(
        run_load(
            args.host,
            args.port,
            total=args.total,
            duration=args.duration if args.duration is not None or args.total else 5.0,
            concurrency=args.concurrency,
            keepalive=args.keepalive,
            path=args.path,
        )
    )
    summary = {
        "total": report.total,
        "ok": report.ok,
        "failures": len(report.failures),
        "rps": round(report.rps),
        "by_color": report.by_color,
        "by_status": report.by_status,
        "stale_retries": report.stale_retries,
    }
    print(json.dumps(summary))
    return 0 if not report.failures else 1


if __name__ == "__main__":
    raise SystemExit(main())
