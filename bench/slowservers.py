"""8. Slow-server weights: how soon a slow server loses weight, and what that saves.

One ``prism serve`` with app ``shop``: one color of three demo backends, fast
health checks, under a closed-loop load (``prism.testing.load``, keep-alive).
Some seconds in, one backend starts answering 300 ms late (its fault switch:
``delay_ms``). Measured from that moment, over the same span:

* **time to the first drop**: until HAProxy's ``uweight`` of that server goes
  below 100, read on the admin socket every 20 ms;
* **requests served slowly**: requests that took 250 ms or more.

Each round runs twice on the same HAProxy, backends and load, with
``slow_servers`` on and then off (the baseline: HAProxy's plain
``balance roundrobin`` keeps sending the slow server its third); weights are
put back to 100 between runs. The ratio is slow requests with the feature
against without it.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Any

import httpx

from bench.common import (
    BenchContext,
    PrismServer,
    Section,
    admin_command,
    free_port,
    ratio,
    run_prism,
    table,
    temp_dir,
)
from prism.haproxy.parsers import parse_show_stat
from prism.testing.load import LoadReport, run_load_in_thread
from prism.testing.processes import Backend, BackendSpec, backends

NAME = "slowservers"
TITLE = "8. Slow-server weights"
DELAY_MS = 300
SLOW_S = 0.25
CONCURRENCY = 16
NAN = float("nan")


def spec(port: int, servers: list[Backend], *, enabled: bool, window: str) -> dict[str, Any]:
    return {
        "apps": [
            {
                "name": "shop",
                "bind": f"127.0.0.1:{port}",
                "stable": "blue",
                "check": {"path": "/healthz", "inter_ms": "200ms", "rise": 2, "fall": 2},
                "slow_servers": {
                    "enabled": enabled,
                    "window_ms": window,
                    "recover_after_ms": window,
                    "min_requests": 20,
                    "step": 30,
                    "floor": 10,
                },
                "colors": [
                    {
                        "name": "blue",
                        "servers": [
                            {"name": b.name, "host": b.host, "port": b.port} for b in servers
                        ],
                    }
                ],
            }
        ]
    }


def uweight(prism: PrismServer, server: str) -> int:
    rows = parse_show_stat(admin_command(prism.admin, "show stat shop.blue -1 -1"))
    return next(int(r.raw["uweight"]) for r in rows if r.server == server)


@dataclass
class Run:
    """One loaded run: its samples from the fault on, and when the weight moved."""

    window: LoadReport
    fault_at: float
    first_drop: float
    floor: float
    failed: int

    def slow(self, seconds: float) -> int:
        """Requests started in the first ``seconds`` after the fault that took >= 250 ms."""
        return sum(
            1
            for s in self.window.samples
            if s.start < self.fault_at + seconds and s.end - s.start >= SLOW_S
        )


def one_run(prism: PrismServer, port: int, slow: Backend, *, warm: float, span: float) -> Run:
    """Load, turn ``slow`` slow, watch its weight; keep [fault, fault + span)."""
    load = run_load_in_thread(
        "127.0.0.1",
        port,
        duration=warm + span,
        concurrency=CONCURRENCY,
        keepalive=True,
        max_seconds=warm + span + 30,
    )
    time.sleep(warm)  # ordinary traffic first, so the judge has a baseline
    httpx.post(f"{slow.url}/_fault", json={"status": None, "delay_ms": DELAY_MS})
    fault_at = time.monotonic()
    first_drop = floor = NAN
    while time.monotonic() < fault_at + span:
        weight = uweight(prism, slow.name)
        now = time.monotonic() - fault_at
        if weight < 100 and math.isnan(first_drop):
            first_drop = now
        if weight <= 10:
            floor = now
            break
        time.sleep(0.02)
    report: LoadReport = load.result(timeout=warm + span + 60)
    httpx.delete(f"{slow.url}/_fault")
    window = report.between(fault_at, fault_at + span)
    return Run(window, fault_at, first_drop, floor, len(report.failures))


def restore(prism: PrismServer, port: int, trio: list[Backend], window: str) -> None:
    """Feature off: Prism puts every weight back to 100; wait until HAProxy holds it."""
    prism.api("PUT", "/config", {"spec": spec(port, trio, enabled=False, window=window)})
    deadline = time.monotonic() + 30
    while any(uweight(prism, b.name) != 100 for b in trio):
        if time.monotonic() > deadline:
            raise RuntimeError("weights did not come back to 100")
        time.sleep(0.05)


def run(ctx: BenchContext) -> Section:
    rounds = ctx.size(3, 1)
    warm = ctx.size(4.0, 1.5)
    span = ctx.size(15.0, 3.0)
    window = ctx.size("2s", "1s")
    specs = [BackendSpec("blue", "v1", name=f"s{n}") for n in (1, 2, 3)]
    results: dict[bool, list[Run]] = {True: [], False: []}
    with backends(specs) as trio, temp_dir(ctx.tmp, "slow-") as work:
        state = work / "state"
        state.mkdir()
        port = free_port()
        with run_prism(ctx, state) as prism:
            for index in range(rounds):
                for enabled in (True, False):
                    prism.api(
                        "PUT",
                        "/config",
                        {"spec": spec(port, trio, enabled=enabled, window=window)},
                    )
                    prism.wait_up("shop")
                    results[enabled].append(one_run(prism, port, trio[1], warm=warm, span=span))
                    restore(prism, port, trio, window)
                ctx.log(f"  slowservers: round {index + 1}/{rounds} done")
    with_, without = results[True], results[False]

    def med(values: list[float]) -> float:
        known = [v for v in values if not math.isnan(v)]
        return statistics.median(known) if known else NAN

    def seconds(value: float) -> str:
        return "never" if math.isnan(value) else f"{value:.2f} s"

    drop = med([r.first_drop for r in with_])
    rows = []
    for label, runs in (
        (f"Prism `slow_servers` (window {window}, step 30, floor 10%)", with_),
        ("baseline: feature off (`balance roundrobin`, equal weights)", without),
    ):
        until_drop = med([float(r.slow(drop)) for r in runs]) if not math.isnan(drop) else NAN
        slow = med([float(r.slow(span)) for r in runs])
        total = med([float(r.window.total) for r in runs])
        rows.append(
            [
                label,
                seconds(med([r.first_drop for r in runs])),
                seconds(med([r.floor for r in runs])),
                f"{until_drop:.0f}",
                f"{slow:.0f} ({100 * slow / total:.1f}%)" if total else "-",
                f"{total:.0f}",
                f"{sum(r.failed for r in runs)}",
            ]
        )

    def share(runs: list[Run]) -> float:
        return med([r.slow(span) / r.window.total for r in runs if r.window.total])

    body = (
        f"Three servers of one color, {CONCURRENCY} keep-alive clients; one server turns "
        f"{DELAY_MS} ms slow {warm:g} s into the run. Figures over the {span:g} s after that "
        f"(median of {rounds} round(s)); a request is *slow* at {SLOW_S * 1000:.0f} ms or more. "
        "*Slow until the first drop* counts, in both runs, the slow requests of the time "
        "Prism took to start lowering the weight.\n\n"
        + table(
            [
                "run",
                "first weight drop",
                "weight at floor",
                "slow until the first drop",
                f"slow in {span:g} s",
                "requests",
                "failed",
            ],
            rows,
        )
        + "\n\nThe same clients completed "
        + ratio(
            med([float(r.window.total) for r in with_]),
            med([float(r.window.total) for r in without]),
        )
        + " the requests with the feature: a slow server at 10% holds few of them."
        + f"\n\n**Ratio**: {ratio(share(with_), share(without))} the share of requests "
        "served slowly with slow-server weights against the same run without them. The "
        "first drop comes within about one window of the server turning slow: as soon as "
        "the mean of the last window's responses (at least `min_requests` of them) is "
        "above 3x the other servers' median; then one step per window down to the floor.\n"
    )
    return Section(NAME, TITLE, body)
