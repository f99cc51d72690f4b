"""11. Fault detection: how soon a canary that turns 5xx is off traffic, and what it costs.

One ``prism serve`` with app ``shop`` (blue stable, green the canary), under a
closed-loop keep-alive load (``prism.testing.load``). A release gives green
its share and pauses; after a warm-up green's fault switch makes it answer
500. Measured from the fault:

* **detection**: until the release's ``rollback`` log entry (the tick that
  judged the fault), and until ``rolled_back`` (traffic moved back);
* **requests lost**: 5xx answers the clients counted (every one of them came
  from green), against ``share x rate x tick``, the traffic one tick sends the
  canary.

Each share runs with the sliding window (10 s) at 100 ms and 1 s ticks (the
default), and with the former default as the same-run baseline: a 5 s tick
judging the whole step so far (``window_ms`` 500 s, longer than the step).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import httpx

from bench.common import (
    BenchContext,
    PrismServer,
    Section,
    free_port,
    ratio,
    run_prism,
    table,
    temp_dir,
)
from prism.testing.load import run_load_in_thread
from prism.testing.processes import Backend, BackendSpec, backends

NAME = "detection"
TITLE = "11. Fault detection"
CONCURRENCY = 10
BASELINE = "5 s tick, step-long window (former default)"


@dataclass(frozen=True)
class Setting:
    label: str
    analysis: dict[str, Any]
    tick_s: float


SETTINGS = (
    Setting("100 ms tick, 10 s sliding window", {"tick_ms": 100, "window_ms": "10s"}, 0.1),
    Setting("1 s tick, 10 s sliding window (default)", {}, 1.0),
    Setting(BASELINE, {"tick_ms": "5s", "window_ms": "500s"}, 5.0),
)
#: smoke size: two short ticks, numbers meaningless
QUICK = (
    SETTINGS[0],
    Setting(
        "500 ms tick, step-long window (smoke baseline)", {"tick_ms": 500, "window_ms": "50s"}, 0.5
    ),
)


@dataclass
class Run:
    detected_s: float
    rolled_back_s: float
    lost: int
    rate: float
    share_seen: float


def spec(port: int, blue: Backend, green: Backend) -> dict[str, Any]:
    return {
        "apps": [
            {
                "name": "shop",
                "bind": f"127.0.0.1:{port}",
                "stable": "blue",
                "check": {"path": "/healthz", "inter_ms": "200ms", "rise": 2, "fall": 2},
                "colors": [
                    {"name": b.color, "servers": [{"name": "s1", "host": b.host, "port": b.port}]}
                    for b in (blue, green)
                ],
            }
        ]
    }


def record(prism: PrismServer) -> dict[str, Any]:
    found: dict[str, Any] = next(
        r for r in prism.api("GET", "/apps/shop/releases") if r["to_color"] == "green"
    )
    return found


def until(prism: PrismServer, phases: set[str], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        found = record(prism)
        if found["phase"] in phases:
            return found
        if time.monotonic() > deadline:
            raise RuntimeError(f"release stayed {found['phase']}: {found['steps'][-3:]}")
        time.sleep(0.02)


def one_run(
    prism: PrismServer, port: int, green: Backend, share: int, setting: Setting, warm: float
) -> Run:
    plan = {
        "to": "green",
        "smoke": False,
        "steps": [{"weight": share}, {"pause": "10m"}, {"weight": 100}],
        "analysis": setting.analysis,
    }
    span = warm + 2 * setting.tick_s + 2
    load = run_load_in_thread(
        "127.0.0.1",
        port,
        duration=span,
        concurrency=CONCURRENCY,
        keepalive=True,
        max_seconds=span + 30,
    )
    prism.api("POST", "/apps/shop/releases", {"plan": plan})
    deadline = time.monotonic() + 15
    while prism.api("GET", "/apps/shop")["weights"].get("green") != share:
        if time.monotonic() > deadline:
            raise RuntimeError("the canary never got its share")
        time.sleep(0.02)
    shared_at = time.monotonic()
    time.sleep(warm)  # healthy traffic first: the windows hold good readings too
    fault_at = time.monotonic()
    wall = time.time() - time.monotonic()  # the record's wall-clock times, on our clock
    httpx.post(f"{green.url}/_fault", json={"status": 500})
    done = until(prism, {"rolled_back", "failed"}, timeout=setting.tick_s * 3 + 15)
    report = load.result(timeout=span + 60)
    httpx.delete(f"{green.url}/_fault")
    steps = {e["name"]: e["at"] - wall for e in done["steps"]}
    before = report.between(shared_at, fault_at)
    # the fault counts from the first 5xx a client got (the switch's own call may queue)
    seen = min((s.end for s in report.samples if s.status >= 500), default=fault_at)
    return Run(
        detected_s=steps["rollback"] - seen,
        rolled_back_s=steps["rolled_back"] - seen,
        lost=sum(1 for s in report.samples if s.status >= 500),
        rate=report.total / report.elapsed if report.elapsed else 0.0,
        share_seen=before.by_color.get("green", 0) / before.total if before.total else 0.0,
    )


def run(ctx: BenchContext) -> Section:
    shares = ctx.size((10, 25), (10,))
    rounds = ctx.size(3, 1)
    warm = ctx.size(3.0, 0.5)
    settings = ctx.size(SETTINGS, QUICK)
    results: dict[tuple[int, str], list[Run]] = {}
    pair = [BackendSpec("blue", "v1"), BackendSpec("green", "v2")]
    with backends(pair) as (blue, green), temp_dir(ctx.tmp, "detect-") as work:
        state = work / "state"
        state.mkdir()
        port = free_port()
        with run_prism(ctx, state) as prism:
            prism.api("PUT", "/config", {"spec": spec(port, blue, green)})
            prism.wait_up("shop")
            for index in range(rounds):
                # the fault lands at a different point of the slowest tick each round
                phase = settings[-1].tick_s * (index + 0.5) / rounds
                for share in shares:
                    for setting in settings:
                        results.setdefault((share, setting.label), []).append(
                            one_run(prism, port, green, share, setting, warm + phase)
                        )
                ctx.log(f"  detection: round {index + 1}/{rounds} done")

    def med(values: list[float]) -> float:
        return statistics.median(values) if values else float("nan")

    rows = []
    for share in shares:
        base = results[(share, settings[-1].label)]
        for setting in settings:
            runs = results[(share, setting.label)]
            lost = med([float(r.lost) for r in runs])
            rate = med([r.rate for r in runs])
            seen = med([r.share_seen for r in runs])
            rows.append(
                [
                    f"{share}%",
                    setting.label,
                    f"{med([r.detected_s for r in runs]):.2f} s",
                    f"{med([r.rolled_back_s for r in runs]):.2f} s",
                    f"{rate:.0f}",
                    f"{lost:.0f}",
                    f"{seen * rate * setting.tick_s:.0f}",
                    ratio(lost, med([float(r.lost) for r in base])),
                ]
            )
    body = (
        f"{CONCURRENCY} keep-alive clients; the canary turns 100% 5xx {warm:g} s plus a "
        f"different fraction of {settings[-1].tick_s:g} s each round after it got its share "
        f"(so the fault lands anywhere in a tick); times run from the first 5xx a client saw. "
        f"Median of {rounds} round(s) per row. *share x rate x tick* uses the share the "
        "clients saw and the run's request rate.\n\n"
        + table(
            [
                "share",
                "analysis",
                "fault → rollback decided",
                "fault → rolled back",
                "requests/s",
                "requests lost",
                "share x rate x tick",
                "lost vs baseline",
            ],
            rows,
        )
        + "\n**Ratio**: *lost vs baseline* is each row's lost requests against the former "
        "default's in the same run, at the same share. The sliding window fails the canary "
        "once its errors pass `max_5xx_ratio` of the window's requests: at 100% 5xx, after "
        "at most about `max_5xx_ratio x window_ms` (0.5 s at the defaults, once the window "
        "is full) rounded up to the next tick. So a 1 s tick is off traffic within about a "
        "tick of the fault, and a 100 ms tick within that 0.5 s (a shorter `window_ms` "
        "shortens it); the former step-long window waits for the tick and dilutes the "
        "fault in the whole step's requests.\n"
    )
    return Section(NAME, TITLE, body)
