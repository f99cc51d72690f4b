"""13. Request log: what consuming HAProxy's per-request log costs Prism and HAProxy.

Three ``prism serve`` processes run side by side with the same app (``shop``,
one color on the same demo backends): one receives HAProxy's request log for
every request (``--request-log-sample 1``, the default), one a 1:10 sample, and
the same-run baseline receives none (``--request-log-sample 0``). Each takes
the same ``wrk`` load in turn, alternating rounds, and each round measures:

* the requests served (wrk) and the lines Prism counted (its health
  endpoint's ``haproxy.request_log.lines``) and HAProxy's ``DroppedLogs``
  (``show info``): whether the receiver keeps up;
* Prism's own CPU time over the round (``/proc/<pid>/stat`` utime + stime),
  as CPU seconds per 100k requests served, and per 100k lines logged net of
  the baseline's;
* throughput with the log against without it, same backends, same run.
"""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    BenchContext,
    PrismServer,
    Section,
    free_port,
    run_prism,
    run_wrk,
    table,
    temp_dir,
)
from prism.testing.processes import Backend, BackendSpec, backends

NAME = "requestlog"
TITLE = "13. Request log"
CONNECTIONS = 32
SETTINGS = (("every request", 1), ("1:10 sample", 10), ("no request log (baseline)", 0))
QUICK = (SETTINGS[0], SETTINGS[2])


@dataclass
class Tally:
    served: list[int] = field(default_factory=list)
    rps: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)


def spec(port: int, servers: list[Backend]) -> dict[str, Any]:
    return {
        "apps": [
            {
                "name": "shop",
                "bind": f"127.0.0.1:{port}",
                "stable": "blue",
                "check": {"path": "/healthz", "inter_ms": "300ms", "rise": 1, "fall": 2},
                "colors": [
                    {
                        "name": "blue",
                        "servers": [
                            {"name": f"s{n}", "host": b.host, "port": b.port}
                            for n, b in enumerate(servers, start=1)
                        ],
                    }
                ],
            }
        ]
    }


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def dropped_logs(prism: PrismServer) -> int:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(prism.admin))
        sock.sendall(b"show info\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    for line in b"".join(chunks).decode().splitlines():
        if line.startswith("DroppedLogs:"):
            return int(line.split(":", 1)[1])
    return 0


def lines_logged(prism: PrismServer) -> int:
    detail = prism.api("GET", "/health")["haproxy"].get("request_log") or {}
    return int(detail.get("lines", 0))


def settled_lines(prism: PrismServer, timeout: float = 3.0) -> int:
    """The lines counted once the last ones in the socket buffer are in (two equal reads)."""
    deadline = time.monotonic() + timeout
    last = lines_logged(prism)
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = lines_logged(prism)
        if now == last:
            return now
        last = now
    return last


@contextlib.contextmanager
def prism_with(ctx: BenchContext, work: Path, every: int) -> Iterator[PrismServer]:
    state = work / f"state-{every}"
    state.mkdir()
    # the setting is kept in the state dir; write it before the first start
    (state / "settings.json").write_text(f'{{"request_log_sample": {every}}}\n')
    with run_prism(ctx, state) as prism:
        yield prism


def run(ctx: BenchContext) -> Section:
    settings = ctx.size(SETTINGS, QUICK)
    rounds = ctx.size(6, 1)
    seconds = ctx.size(4.0, 1.0)
    tallies = {label: Tally() for label, _ in settings}
    pool = [BackendSpec("blue", "v1", "s1"), BackendSpec("blue", "v1", "s2")]
    with (
        backends(pool) as servers,
        temp_dir(ctx.tmp, "reqlog-") as work,
        contextlib.ExitStack() as stack,
    ):
        running: dict[str, tuple[PrismServer, int]] = {}
        for label, every in settings:
            prism = stack.enter_context(prism_with(ctx, work, every))
            port = free_port()
            prism.api("PUT", "/config", {"spec": spec(port, servers)})
            prism.wait_up("shop")
            running[label] = (prism, port)
        for index in range(rounds):
            # each round starts with a different setting: no setting always runs first
            turn = index % len(settings)
            for label, _ in (*settings[turn:], *settings[:turn]):
                prism, port = running[label]
                tally = tallies[label]
                lines, dropped = lines_logged(prism), dropped_logs(prism)
                cpu = cpu_seconds(prism.process.pid)
                done = run_wrk(
                    f"http://127.0.0.1:{port}/", seconds=seconds, connections=CONNECTIONS
                )
                tally.cpu_s.append(cpu_seconds(prism.process.pid) - cpu)
                tally.served.append(done.requests)
                tally.rps.append(done.rps)
                tally.dropped.append(dropped_logs(prism) - dropped)
                tally.lines.append(settled_lines(prism) - lines)
            ctx.log(f"  requestlog: round {index + 1}/{rounds} done")
    return Section(NAME, TITLE, report(tallies, settings, rounds, seconds))


def report(tallies: dict[str, Tally], settings: Any, rounds: int, seconds: float) -> str:
    base = tallies[settings[-1][0]]
    base_cpu = sum(base.cpu_s) / max(sum(base.served), 1) * 100_000
    rows = []
    for label, every in settings:
        t = tallies[label]
        served, lines = sum(t.served), sum(t.lines)
        cpu = sum(t.cpu_s) / max(served, 1) * 100_000
        per_line = f"{(cpu - base_cpu) * served / max(lines, 1):.2f} s" if every else "-"
        rows.append(
            [
                label,
                f"{statistics.median(t.rps):.0f}",
                " / ".join(f"{r:.0f}" for r in t.rps),
                f"{statistics.median(r / b for r, b in zip(t.rps, base.rps, strict=True)):.3f}x",
                f"{served:,}",
                f"{lines:,}",
                f"{sum(t.dropped):,}",
                f"{cpu:.2f} s",
                per_line,
            ]
        )
    return (
        f"`wrk` with {CONNECTIONS} keep-alive connections, {seconds:g} s per round, "
        f"{rounds} round(s) per setting, the settings back to back in each round (each round "
        "starting with the next one); one app on two demo backends; each "
        "setting has its own `prism serve` and HAProxy, all running at once.\n\n"
        + table(
            [
                "request log",
                "requests/s (median)",
                "each round",
                "vs no log (median of rounds)",
                "requests served",
                "lines Prism counted",
                "HAProxy DroppedLogs",
                "Prism CPU per 100k requests",
                "Prism CPU per 100k lines, net of baseline",
            ],
            rows,
        )
        + "\n**Ratio**: *vs no log* is the throughput with the request log against the "
        "same-run baseline without it, paired by round (each round runs the settings back to "
        "back) and the median of those per-round ratios taken, since the load other processes "
        "put on this shared machine moves throughput by far more from round to round. "
        "Prism's CPU per 100k requests is its whole process "
        "(API, release engine, reconciler, telemetry sampling as well as the receiver); the "
        "last column subtracts the baseline's and divides by the lines counted: the cost of "
        "parsing and counting one line. A line HAProxy could not send (its socket buffer "
        "full) shows in DroppedLogs, and as fewer lines than requests.\n"
    )
