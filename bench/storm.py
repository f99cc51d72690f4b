"""2. Zero loss under load: ``hey`` through the listener during a release storm.

The storm is one fixed, shuffled list of operations: cutovers and rollbacks,
weight moves across three colors, reloads, and server adds and removes. It
runs twice, each time under its own ``hey`` run at the same concurrency:

* **Prism**: every operation through the API (release, rollback, weights,
  ``PUT /config`` changing a backend setting to force a reload, server add and
  remove without reload);
* **naive**, on a hand-written HAProxy with the same binary, backends and
  bucket routing (``rand(100)`` → ``map_int`` → backend): weights and cutovers
  as ``clear map`` + ``add map`` per range, a server add or remove as a config
  rewrite + reload, a reload as a plain master ``reload``. Its operations are
  paced to take as long as Prism's storm did, so both runs see as much traffic.

Every non-2xx answer and every transport error hey reports is listed.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from bench.common import (
    ApiError,
    BenchContext,
    HAProxy,
    HeyResult,
    Section,
    csv_rows,
    free_port,
    haproxy_globals,
    median,
    run_haproxy,
    run_prism,
    start_hey,
    table,
    temp_dir,
    wait_servers_up,
)
from prism.testing.processes import Backend, BackendSpec, backends

NAME = "storm"
TITLE = "2. Zero loss under load (release storm)"
COLORS = ("blue", "green", "red")


@dataclass
class Storm:
    ops: list[tuple[str, int]]
    weights: list[dict[str, int]]

    def count(self, kind: str) -> int:
        return sum(1 for op, _ in self.ops if op == kind)


@dataclass
class StormRun:
    hey: HeyResult
    seconds: float
    op_ms: dict[str, list[float]] = field(default_factory=dict)
    retries: int = 0
    reloads: int = 0
    # 5xx answers HAProxy counted during each map-edit operation (and its pause after).
    five_xx_by_op: dict[str, int] = field(default_factory=dict)


def make_storm(cutovers: int, moves: int, reloads: int, servers: int, seed: int = 1) -> Storm:
    rng = random.Random(seed)
    ops = [("cutover", i) for i in range(cutovers)] + [("weights", i) for i in range(moves)]
    ops += [("reload", i) for i in range(reloads)] + [("server", i) for i in range(2 * servers)]
    rng.shuffle(ops)
    weights = []
    for _ in range(moves):
        cuts = sorted(rng.sample(range(0, 101, 5), 2))
        weights.append(dict(zip(COLORS, (cuts[0], cuts[1] - cuts[0], 100 - cuts[1]), strict=True)))
    return Storm(ops, weights)


def ranges(weights: dict[str, int]) -> list[tuple[str, str]]:
    """Contiguous bucket ranges, as a hand-written tool would lay them out."""
    out, low = [], 0
    for color in COLORS:
        share = weights.get(color, 0)
        if share:
            out.append((f"{low}:{low + share - 1}", color))
            low += share
    return out


def run(ctx: BenchContext) -> Section:
    if ctx.quick:
        storm = make_storm(cutovers=2, moves=3, reloads=1, servers=1)
        concurrency = 20
    else:
        storm = make_storm(cutovers=20, moves=50, reloads=5, servers=5)
        concurrency = 100
    specs = [BackendSpec(c, f"v{i + 1}") for i, c in enumerate(COLORS)]
    with backends(specs) as running, temp_dir(ctx.tmp, "storm-") as work:
        by_color = {b.color: b for b in running}
        prism_run = _prism_storm(ctx, work, storm, by_color, concurrency)
        naive_run = _naive_storm(ctx, work, storm, by_color, concurrency, prism_run.seconds)
    return Section(NAME, TITLE, _report(storm, concurrency, prism_run, naive_run))


def _timed(result: StormRun, kind: str, act: Callable[[], Any]) -> None:
    began = time.perf_counter()
    act()
    result.op_ms.setdefault(kind, []).append((time.perf_counter() - began) * 1000)


def _prism_storm(
    ctx: BenchContext, work: Path, storm: Storm, by_color: dict[str, Backend], concurrency: int
) -> StormRun:
    state = work / "state"
    state.mkdir()
    port = free_port()
    spec = {
        "apps": [
            {
                "name": "shop",
                "bind": f"127.0.0.1:{port}",
                "stable": "blue",
                "check": {"path": "/healthz", "inter_ms": "200ms", "rise": 2, "fall": 2},
                "drain_timeout_ms": "5s",
                "retries": 3,
                "colors": [
                    {"name": c, "version": b.version, "servers": [b.address]}
                    for c, b in by_color.items()
                ],
            }
        ]
    }
    with run_prism(ctx, state) as prism:
        prism.api("PUT", "/config", {"spec": spec, "reason": "bench"})
        prism.wait_up("shop")
        run_ = StormRun(hey=HeyResult(0, 0, {}, {}, ""), seconds=0)
        retries = [0]

        def call(method: str, path: str, body: Any = None) -> Any:
            # A gate may refuse right after a reload, until the new worker has run a
            # health check: that is Prism being careful, so wait and retry.
            for _ in range(100):
                try:
                    return prism.api(method, path, body)
                except ApiError as exc:
                    if exc.status != 409:
                        raise
                    retries[0] += 1
                    time.sleep(0.1)
            raise RuntimeError(f"{method} {path} kept being refused")

        cut_targets = ["green", "red", "blue"]
        servers_added: list[tuple[str, str]] = []
        url = f"http://127.0.0.1:{port}/"
        with start_hey(url, concurrency=concurrency, max_seconds=600) as stop:
            time.sleep(1.0)
            began = time.monotonic()
            for kind, index in storm.ops:
                if kind == "cutover" and index % 2 == 0:
                    to = cut_targets[(index // 2) % 3]
                    active = prism.api("GET", "/apps/shop")["weights"]
                    if active == {to: 100}:
                        to = cut_targets[(index // 2 + 1) % 3]
                    _timed(
                        run_,
                        "release",
                        partial(call, "POST", "/apps/shop/release", {"to": to}),
                    )
                elif kind == "cutover":
                    _timed(run_, "rollback", partial(call, "POST", "/apps/shop/rollback", {}))
                elif kind == "weights":
                    weights = storm.weights[index]
                    _timed(
                        run_,
                        "weights",
                        partial(call, "PUT", "/apps/shop/weights", {"weights": weights}),
                    )
                elif kind == "reload":
                    current = prism.api("GET", "/config")["spec"]
                    current["apps"][0]["retries"] = 4 if current["apps"][0]["retries"] == 3 else 3
                    _timed(run_, "reload", partial(call, "PUT", "/config", {"spec": current}))
                    run_.reloads += 1
                elif index % 2 == 0:
                    color = COLORS[(index // 2) % 3]
                    name = f"x{index // 2}"
                    body = {"address": by_color[color].address, "name": name}
                    path = f"/apps/shop/colors/{color}/servers"
                    _timed(run_, "server add", partial(call, "POST", path, body))
                    servers_added.append((color, name))
                else:
                    color, name = servers_added.pop(0)
                    path = f"/apps/shop/colors/{color}/servers/{name}"
                    _timed(run_, "server remove", partial(call, "DELETE", path))
            run_.seconds = time.monotonic() - began
            time.sleep(1.0)
            run_.hey = stop()
        run_.retries = retries[0]
        ctx.log(f"  storm: Prism done in {run_.seconds:.1f} s, {run_.hey.total} requests")
        return run_


def naive_config(root: Path, port: int, servers: dict[str, list[tuple[str, int]]]) -> str:
    lines = [
        haproxy_globals(root),
        "frontend app",
        f"    bind 127.0.0.1:{port}",
        "    http-request set-var(txn.bucket) rand(100)",
        f"    use_backend %[var(txn.bucket),map_int({root}/weights.map)]",
    ]
    for color in COLORS:
        lines += [
            f"backend {color}",
            "    balance roundrobin",
            "    option httpchk",
            "    http-check send meth GET uri /healthz",
            "    retries 3",
        ]
        lines += [
            f"    server {name} 127.0.0.1:{sport} check inter 200ms rise 2 fall 2"
            for name, sport in servers[color]
        ]
    return "\n".join(lines) + "\n"


def _naive_storm(
    ctx: BenchContext,
    work: Path,
    storm: Storm,
    by_color: dict[str, Backend],
    concurrency: int,
    pace_seconds: float,
) -> StormRun:
    root = work / "naive"
    root.mkdir()
    port = free_port()
    servers = {c: [("s1", b.port)] for c, b in by_color.items()}
    map_path = root / "weights.map"
    map_path.write_text("0:99 blue\n")
    with run_haproxy(ctx, root, naive_config(root, port, servers)) as haproxy:
        wait_servers_up(haproxy, list(COLORS))
        run_ = StormRun(hey=HeyResult(0, 0, {}, {}, ""), seconds=0)
        history: list[dict[str, int]] = [{"blue": 100}]
        cut_targets = ["green", "red", "blue"]
        added: list[tuple[str, str]] = []
        gap = pace_seconds / max(len(storm.ops), 1)

        def set_weights(weights: dict[str, int]) -> None:
            entries = ranges(weights)
            map_path.write_text("".join(f"{k} {v}\n" for k, v in entries))
            haproxy.cmd(f"clear map {map_path}")
            for key, value in entries:
                haproxy.cmd(f"add map {map_path} {key} {value}")
            history.append(weights)

        def rewrite_and_reload() -> None:
            haproxy.config.write_text(naive_config(root, port, servers))
            haproxy.reload()
            run_.reloads += 1

        url = f"http://127.0.0.1:{port}/"
        with start_hey(url, concurrency=concurrency, max_seconds=600) as stop:
            time.sleep(1.0)
            began = time.monotonic()
            for number, (kind, index) in enumerate(storm.ops):
                before = _frontend_5xx(haproxy)
                if kind == "cutover" and index % 2 == 0:
                    to = cut_targets[(index // 2) % 3]
                    if history[-1] == {to: 100}:
                        to = cut_targets[(index // 2 + 1) % 3]
                    _timed(run_, "release", partial(set_weights, {to: 100}))
                elif kind == "cutover":
                    back = history[-2] if len(history) > 1 else {"blue": 100}
                    _timed(run_, "rollback", partial(set_weights, back))
                elif kind == "weights":
                    _timed(run_, "weights", partial(set_weights, storm.weights[index]))
                elif kind == "reload":
                    _timed(run_, "reload", haproxy.reload)
                    run_.reloads += 1
                elif index % 2 == 0:
                    color = COLORS[(index // 2) % 3]
                    name = f"x{index // 2}"
                    servers[color].append((name, by_color[color].port))
                    added.append((color, name))
                    _timed(run_, "server add", rewrite_and_reload)
                else:
                    color, name = added.pop(0)
                    servers[color] = [s for s in servers[color] if s[0] != name]
                    _timed(run_, "server remove", rewrite_and_reload)
                # Pace the naive storm over as much time as Prism's took.
                wait = began + gap * (number + 1) - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                if kind in ("cutover", "weights"):  # a reload restarts the counters
                    label = "cutovers/rollbacks" if kind == "cutover" else "weight moves"
                    failed = _frontend_5xx(haproxy) - before
                    run_.five_xx_by_op[label] = run_.five_xx_by_op.get(label, 0) + failed
            run_.seconds = time.monotonic() - began
            time.sleep(1.0)
            run_.hey = stop()
        ctx.log(f"  storm: naive done in {run_.seconds:.1f} s, {run_.hey.total} requests")
        return run_


def _frontend_5xx(haproxy: HAProxy) -> int:
    """5xx answers the listener's frontend has given (HAProxy's own 503s included)."""
    for row in csv_rows(haproxy.cmd("show stat")):
        if row.get("pxname") == "app" and row.get("svname") == "FRONTEND":
            return int(row.get("hrsp_5xx") or 0)
    return 0


def _failures(hey: HeyResult) -> str:
    lines = [f"- HTTP {code}: {n:,}" for code, n in sorted(hey.statuses.items()) if code >= 300]
    lines += [f"- error `{text[:160]}`: {n:,}" for text, n in sorted(hey.errors.items())]
    return "\n".join(lines) if lines else "- none"


def _report(storm: Storm, concurrency: int, prism: StormRun, naive: StormRun) -> str:
    def row(label: str, r: StormRun) -> list[object]:
        ok = sum(n for code, n in r.hey.statuses.items() if 200 <= code < 300)
        rate = r.hey.non_2xx / r.hey.total * 1e6 if r.hey.total else float("nan")
        return [label, r.hey.total, ok, r.hey.non_2xx, rate, r.seconds, r.reloads, r.hey.rps]

    ops = ", ".join(
        f"{n} {k}"
        for k, n in (
            ("cutovers/rollbacks", storm.count("cutover")),
            ("weight moves across 3 colors", storm.count("weights")),
            ("reloads", storm.count("reload")),
            ("server adds and removes", storm.count("server")),
        )
    )
    kinds = sorted(set(prism.op_ms) | set(naive.op_ms))
    op_rows = [
        [
            k,
            len(prism.op_ms.get(k, [])),
            _med(prism.op_ms.get(k, [])),
            _med(naive.op_ms.get(k, [])),
        ]
        for k in kinds
    ]
    if prism.hey.non_2xx:
        verdict = (
            f"naive/Prism failed requests: {naive.hey.non_2xx}/{prism.hey.non_2xx} = "
            f"{naive.hey.non_2xx / prism.hey.non_2xx:.3g}x"
        )
    else:
        verdict = (
            f"Prism lost 0 of {prism.hey.total:,} requests; the naive storm failed "
            f"{naive.hey.non_2xx:,} of {naive.hey.total:,} (ratio naive/Prism: infinite)"
        )
    headline = (
        f"**Ratio**: failed requests, naive / Prism = {naive.hey.non_2xx:,} / "
        f"{prism.hey.non_2xx:,}"
        + (
            f" = {naive.hey.non_2xx / prism.hey.non_2xx:.3g}x"
            if prism.hey.non_2xx
            else " (Prism lost none)"
        )
        + f", out of {naive.hey.total:,} and {prism.hey.total:,} requests.\n\n"
    )
    return (
        headline
        + f"Storm: {len(storm.ops)} operations ({ops}), in one fixed shuffled order, run one "
        f"after the other while `hey -c {concurrency}` (keep-alive) sends GETs through the "
        f"listener. Prism's gate refused {prism.retries} operation attempts (a color whose "
        "servers had not yet passed a check in a freshly reloaded worker); the storm waited "
        "0.1 s and retried them.\n\n"
        + table(
            [
                "run",
                "requests",
                "2xx",
                "non-2xx + errors",
                "per million",
                "storm s",
                "reloads",
                "req/s",
            ],
            [row("**Prism**", prism), row("naive (clear+add, reload per change)", naive)],
        )
        + f"\n**{verdict}.**\n\n"
        + "Every non-2xx answer and error, Prism:\n\n"
        + _failures(prism.hey)
        + "\n\nNaive:\n\n"
        + _failures(naive.hey)
        + "\n\nWhere the naive failures came from (HAProxy's 5xx counter, read before and "
        "after each map edit; a reload restarts the counter, so the rest is put on the "
        "reloads and config rewrites): "
        + ", ".join(
            [f"{label}: {n:,}" for label, n in sorted(naive.five_xx_by_op.items())]
            + [
                "reloads, server adds and removes (the rest): "
                f"{max(0, naive.hey.non_2xx - sum(naive.five_xx_by_op.values())):,}"
            ]
        )
        + "."
        + "\n\nOperation time, median ms (Prism's include its gates, read-back and drain):\n\n"
        + table(["operation", "count", "Prism", "naive"], op_rows)
    )


def _med(values: list[float]) -> float:
    return median(values)
