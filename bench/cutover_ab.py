"""Cutover latency of two versions of Prism, run by run, with each run's floor.

``python -m bench.cutover_ab --code old=/path/to/old/src --code new=src
[--rounds 50] [--runs 2] [--smoke] [--spans]``

Each run starts the demo backends, a hand-written HAProxy (the raw ``set map``
floor of section 1) and ``prism serve`` running the named source tree
(``PYTHONPATH``), with a probe hammering each listener; then it flips blue↔green
``--rounds`` times with a raw ``set map`` and with ``POST /apps/shop/release``.
Runs alternate between the versions (old, new, old, new, ...) so that they share
the machine's load. With ``--spans`` Prism runs under :mod:`bench.spans` and the
run prints the median milliseconds of each phase of a release call.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench import manual_bluegreen, spans
from bench.common import (
    BenchContext,
    free_port,
    haproxy_binary,
    pct,
    run_haproxy,
    run_prism,
    temp_dir,
    wait_servers_up,
)
from bench.cutover import KEY, manual_config
from bench.probe import run_probe
from prism.testing.processes import BackendSpec, backends

ROOT = Path(__file__).resolve().parent.parent


def one_run(
    ctx: BenchContext,
    label: str,
    src: Path,
    rounds: int,
    *,
    smoke: bool,
    with_spans: bool,
    interval_ms: float = 0.0,
) -> dict[str, object]:
    specs = [BackendSpec("blue", "v1"), BackendSpec("green", "v2")]
    with backends(specs) as (blue, green), temp_dir(ctx.tmp, "ab-") as work:
        state = work / "state"
        state.mkdir()
        manual_root = work / "m"
        manual_root.mkdir()
        (manual_root / "hosts.map").write_text(f"{KEY} blue\n")
        manual_port, prism_port = free_port(), free_port()
        config = manual_config(manual_root, manual_port, {"blue": blue.port, "green": green.port})
        span_file = work / "spans.tsv"
        command = [sys.executable, "-m", "bench.spans", str(span_file)] if with_spans else None
        if command is None:
            command = [sys.executable, "-m", "prism"]
        env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{ROOT}"}
        with (
            run_prism(ctx, state, prism=command, env=env) as prism,
            run_haproxy(ctx, manual_root, config) as manual,
        ):
            app: dict[str, object] = {
                "name": "shop",
                "bind": f"127.0.0.1:{prism_port}",
                "stable": "blue",
                "check": {"path": "/healthz", "inter_ms": "200ms", "rise": 2, "fall": 2},
                "drain_timeout_ms": "5s",
                "colors": [
                    {"name": b.color, "version": b.version, "servers": [b.address]}
                    for b in (blue, green)
                ],
            }
            if smoke:
                app["smoke"] = {"path": "/healthz"}
            prism.api("PUT", "/config", {"spec": {"apps": [app]}, "reason": "bench"})
            prism.wait_up("shop")
            wait_servers_up(manual, ["blue", "green"])
            map_path = str(manual_root / "hosts.map")
            current = {"manual": "blue", "prism": "blue"}
            calls: dict[str, list[tuple[float, float, str]]] = {"floor": [], "api": []}
            with (
                run_probe(prism_port, work, interval_ms=interval_ms) as prism_probe,
                run_probe(manual_port, work, interval_ms=interval_ms) as manual_probe,
            ):
                for _ in range(rounds):
                    for method, side in (("floor", "manual"), ("api", "prism")):
                        target = "green" if current[side] == "blue" else "blue"
                        began = time.monotonic()
                        if method == "floor":
                            manual_bluegreen.forward_to(manual.admin, map_path, KEY, target)
                        else:
                            prism.api(
                                "POST",
                                "/apps/shop/release",
                                {"to": target, "reason": "bench", "smoke": smoke},
                            )
                        calls[method].append((began, time.monotonic(), target))
                        current[side] = target
                        time.sleep(0.05)
        latency = {}
        for method, probe in (("floor", manual_probe), ("api", prism_probe)):
            seen = [probe.first(t, b) for b, _, t in calls[method]]
            latency[method] = [
                (s - b) * 1000 for s, (b, _, _) in zip(seen, calls[method], strict=True) if s
            ]
        result: dict[str, object] = {
            "label": label,
            "load": os.getloadavg()[0],
            "api p50": pct(latency["api"], 50),
            "api p99": pct(latency["api"], 99),
            "api n": len(latency["api"]),
            "floor p50": pct(latency["floor"], 50),
            "floor p99": pct(latency["floor"], 99),
            "returns p50": pct([(e - b) * 1000 for b, e, _ in calls["api"]], 50),
            "probe rate": round(prism_probe.rate),
        }
        if with_spans and span_file.exists():
            kept = Path(tempfile.gettempdir()) / f"cutover-spans-{label}.tsv"
            kept.write_text(span_file.read_text())
            result["spans"] = str(kept)
            per_call = spans.breakdown(span_file)
            # perf_counter_ns and time.monotonic are both CLOCK_MONOTONIC here: the
            # client's call, the server's spans and the probe share one time line.
            starts = spans.call_starts(span_file)
            if len(starts) == len(calls["api"]):
                for row, start, (began, _, target) in zip(
                    per_call, starts, calls["api"], strict=True
                ):
                    row["client -> handler"] = start / 1e6 - began * 1000
                    first = prism_probe.first(target, began)
                    if first is not None and "switch at" in row:
                        row["switch -> first new-color response"] = (
                            first * 1000 - start / 1e6 - row["switch at"]
                        )
            names = sorted({k for row in per_call for k in row})
            result["phases"] = {
                name: statistics.median(row.get(name, 0.0) for row in per_call) for name in names
            }
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--code", action="append", required=True, metavar="LABEL=SRC")
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--runs", type=int, default=1, help="runs of each version")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--spans", action="store_true")
    parser.add_argument(
        "--probe-interval-ms", type=float, default=0.0, help="0: each probe back to back"
    )
    args = parser.parse_args()
    codes = [(c.split("=", 1)[0], Path(c.split("=", 1)[1]).resolve()) for c in args.code]
    path, version = haproxy_binary()
    root = Path(tempfile.mkdtemp(prefix="ab-", dir="/tmp"))
    ctx = BenchContext(quick=False, haproxy=path, haproxy_version=version, tmp=root)
    for _ in range(args.runs):
        for label, src in codes:
            before = os.getloadavg()[0]
            result = one_run(
                ctx,
                label,
                src,
                args.rounds,
                smoke=args.smoke,
                with_spans=args.spans,
                interval_ms=args.probe_interval_ms,
            )
            phases = result.pop("phases", None)
            print(f"load before {before:.2f}", result, flush=True)
            if isinstance(phases, dict):
                for name, ms in phases.items():
                    print(f"    {name:40s} {ms:9.3f}", flush=True)


if __name__ == "__main__":
    main()
