"""A traffic probe that timestamps every change of the color serving a listener.

``python -m bench.probe PORT OUT [--conns 2] [--max-seconds 900]`` keeps
``--conns`` keep-alive connections busy with back-to-back GETs to
127.0.0.1:PORT and writes, to OUT, one line per change of the answering
color (``T <monotonic end time> <color>``), then a summary line
(``S <requests> <errors> <first start> <last end>``) when it stops on SIGTERM
or after ``--max-seconds``. ``time.monotonic()`` is CLOCK_MONOTONIC, shared by
every process on the machine, so the benchmark can compare these times with
its own. It runs in its own process so that its work never delays the
control-plane call being timed.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import _exchange, request_bytes
from prism.testing.processes import ManagedProcess


async def probe(
    port: int,
    conns: int,
    max_seconds: float,
    *,
    host: str = "127.0.0.1",
    interval: float = 0.0,
) -> tuple[list[str], int, int, float]:
    """Busy ``conns`` connections to host:port; the color-change lines, requests, errors
    and start time (the ``S`` line is the caller's, written when it stops).

    With ``interval`` (seconds), each connection starts a request at most once per
    interval, the connections staggered evenly: ``conns / interval`` requests a
    second, a resolution of ``interval / conns``, and CPU left for the machine."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    lines: list[str] = []
    last: list[str | None] = [None]
    counts = [0, 0]
    started = time.monotonic()
    deadline = started + max_seconds
    request = request_bytes(port)

    async def worker(offset: float) -> None:
        due = time.monotonic() + offset
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError:
                counts[1] += 1
                await asyncio.sleep(0.001)
                continue
            try:
                while not stop.is_set() and time.monotonic() < deadline:
                    if interval:
                        now = time.monotonic()
                        due = max(due + interval, now)
                        await asyncio.sleep(due - now)
                    async with asyncio.timeout(5):
                        status, color = await _exchange(reader, writer, request)
                    end = time.monotonic()
                    counts[0] += 1
                    if status != 200:
                        counts[1] += 1
                        color = f"status-{status}"
                    if color != last[0]:
                        if last[0] is None:
                            print("ready", flush=True)
                        last[0] = color
                        lines.append(f"T {end:.6f} {color}")
            except (OSError, EOFError, ValueError, asyncio.IncompleteReadError, TimeoutError):
                counts[1] += 1
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

    tasks = [asyncio.create_task(worker(i * interval / conns)) for i in range(conns)]
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait([stopper, *tasks], timeout=max_seconds + 5, return_when="FIRST_COMPLETED")
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    stopper.cancel()
    return lines, counts[0], counts[1], started


@dataclass
class ProbeLog:
    """What a probe saw: color changes in time order, and how busy it was."""

    times: list[float] = field(default_factory=list)
    colors: list[str] = field(default_factory=list)
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        """Responses per second: 1/rate is the probe's time resolution."""
        return self.requests / self.seconds if self.seconds else 0.0

    def first(self, color: str, after: float) -> float | None:
        """When ``color`` first answered at or after ``after`` (a change to it)."""
        i = bisect.bisect_left(self.times, after)
        for j in range(i, len(self.times)):
            if self.colors[j] == color:
                return self.times[j]
        return None


@contextlib.contextmanager
def run_probe(
    port: int, workdir: Path, conns: int = 2, interval_ms: float = 0.0
) -> Iterator[ProbeLog]:
    """Run a probe against 127.0.0.1:port; the yielded log fills in when the block ends.

    ``interval_ms``: each connection's least time between requests (0: back to back)."""
    out = workdir / f"probe-{port}.txt"
    command = [sys.executable, "-m", "bench.probe", str(port), str(out), "--conns", str(conns)]
    process = ManagedProcess(
        [*command, "--interval-ms", str(interval_ms)],
        name="probe",
        pipe_stdout=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    log = ProbeLog()
    try:
        line = _read_line(process, 15)
        if line != "ready":
            raise RuntimeError(f"probe did not start: {line!r} {process.stderr_text()}")
        yield log
    finally:
        process.stop(timeout=10)
        process.close()
    for raw in out.read_text().splitlines():
        parts = raw.split()
        if parts and parts[0] == "T":
            log.times.append(float(parts[1]))
            log.colors.append(parts[2])
        elif parts and parts[0] == "S":
            log.requests, log.errors = int(parts[1]), int(parts[2])
            log.seconds = float(parts[4]) - float(parts[3])


def _read_line(process: ManagedProcess, timeout: float) -> str:
    import selectors

    with selectors.DefaultSelector() as sel:
        sel.register(process.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            return ""
    return process.stdout.readline().decode(errors="replace").strip()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.probe")
    parser.add_argument("port", type=int)
    parser.add_argument("out")
    parser.add_argument("--conns", type=int, default=2)
    parser.add_argument("--max-seconds", type=float, default=900)
    parser.add_argument("--interval-ms", type=float, default=0.0)
    args = parser.parse_args()
    lines, total, errors, started = asyncio.run(
        probe(args.port, args.conns, args.max_seconds, interval=args.interval_ms / 1000)
    )
    with open(args.out, "w") as out:
        out.write("\n".join(lines) + "\n")
        out.write(f"S {total} {errors} {started:.6f} {time.monotonic():.6f}\n")


if __name__ == "__main__":
    main()
