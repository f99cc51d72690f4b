"""1. Cutover latency: from the call to the first response served by the new color.

Two listeners run side by side for the whole benchmark, each with a probe
process (:mod:`bench.probe`) sending back-to-back requests and timestamping
every change of the answering color:

* Prism's listener (``prism serve``, app ``shop``, blue and green);
* a hand-written HAProxy (same binary, same two backend processes) routing
  with ``use_backend %[str(SIMPLE_SERVICE),map(hosts.map)]``, the setup of the
  manual recipe in :mod:`bench.manual_bluegreen`.

Each round flips the color once with every method, in turn: a raw ``set map``
(the floor), the manual flow in-process and as a script, Prism's API and
Prism's CLI. Latency = probe's first new-color response - time just before the
call. The raw cost of one runtime command is measured alone first.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench import manual_bluegreen
from bench.common import (
    BenchContext,
    Section,
    free_port,
    haproxy_globals,
    pct,
    prism_command,
    ratio,
    run_haproxy,
    run_prism,
    table,
    temp_dir,
    wait_servers_up,
)
from bench.manual_bluegreen import admin_command
from bench.probe import ProbeLog, run_probe
from prism.testing.processes import BackendSpec, backends

NAME = "cutover"
TITLE = "1. Cutover latency"
KEY = "SIMPLE_SERVICE"


def manual_config(root: Path, port: int, servers: dict[str, int]) -> str:
    backends = "".join(
        f"backend {color}\n"
        "    balance roundrobin\n"
        "    option httpchk\n"
        "    http-check send meth GET uri /healthz\n"
        f"    server s1 127.0.0.1:{sport} check inter 200ms rise 2 fall 2\n"
        for color, sport in servers.items()
    )
    return (
        haproxy_globals(root)
        + "frontend igw\n"
        + f"    bind 127.0.0.1:{port}\n"
        + f"    use_backend %[str({KEY}),map({root}/hosts.map)]\n"
        + "    default_backend blue\n"
        + backends
    )


def run(ctx: BenchContext) -> Section:
    rounds = ctx.size(100, 3)
    interval = 0.1 if ctx.quick else 1.0  # the recipe's poll interval (1 s in seed 001)
    specs = [BackendSpec("blue", "v1"), BackendSpec("green", "v2")]
    with backends(specs) as (blue, green), temp_dir(ctx.tmp, "cut-") as work:
        state = work / "state"
        state.mkdir()
        manual_root = work / "m"
        manual_root.mkdir()
        (manual_root / "hosts.map").write_text(f"{KEY} blue\n")
        manual_port, prism_port = free_port(), free_port()
        config = manual_config(manual_root, manual_port, {"blue": blue.port, "green": green.port})
        with run_prism(ctx, state) as prism, run_haproxy(ctx, manual_root, config) as manual:
            spec = {
                "apps": [
                    {
                        "name": "shop",
                        "bind": f"127.0.0.1:{prism_port}",
                        "stable": "blue",
                        "check": {"path": "/healthz", "inter_ms": "200ms", "rise": 2, "fall": 2},
                        "drain_timeout_ms": "5s",
                        # every gate on: the smoke request runs before each switch
                        "smoke": {"path": "/healthz"},
                        "colors": [
                            {"name": b.color, "version": b.version, "servers": [b.address]}
                            for b in (blue, green)
                        ],
                    }
                ]
            }
            prism.api("PUT", "/config", {"spec": spec, "reason": "bench"})
            prism.wait_up("shop")
            wait_servers_up(manual, ["blue", "green"])
            map_path = str(manual_root / "hosts.map")

            # The physical floor, alone: one runtime command on a fresh connection.
            command_ms = []
            for _ in range(ctx.size(1000, 50)):
                began = time.perf_counter()
                admin_command(manual.admin, f"set map {map_path} {KEY} blue")
                command_ms.append((time.perf_counter() - began) * 1000)

            current = {"manual": "blue", "prism": "blue"}
            calls: dict[str, list[tuple[float, float, str]]] = {}

            def flip(method: str, side: str, act: Callable[[str, str], None]) -> None:
                target = "green" if current[side] == "blue" else "blue"
                began = time.monotonic()
                act(target, current[side])
                ended = time.monotonic()
                calls.setdefault(method, []).append((began, ended, target))
                current[side] = target
                time.sleep(0.05)  # settle: nothing of the old color is in flight

            def floor(to: str, old: str) -> None:
                manual_bluegreen.forward_to(manual.admin, map_path, KEY, to)

            def manual_inproc(to: str, old: str) -> None:
                manual_bluegreen.release(manual.admin, map_path, KEY, to, old, interval=interval)

            def manual_script(to: str, old: str) -> None:
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "bench.manual_bluegreen",
                        "--socket",
                        str(manual.admin),
                        "--map",
                        map_path,
                        "--key",
                        KEY,
                        "--to",
                        to,
                        "--from",
                        old,
                        "--interval",
                        str(interval),
                    ],
                    check=True,
                    timeout=120,
                    cwd=Path(__file__).resolve().parent.parent,
                )

            def api(to: str, old: str) -> None:
                prism.api("POST", "/apps/shop/release", {"to": to, "reason": "bench"})

            def cli(to: str, old: str) -> None:
                subprocess.run(
                    [*prism_command(), "release", "shop", "--to", to, "--reason", "bench"],
                    env=prism.cli_env(),
                    check=True,
                    timeout=120,
                    capture_output=True,
                )

            with (
                run_probe(prism_port, work) as prism_probe,
                run_probe(manual_port, work) as manual_probe,
            ):
                for i in range(rounds):
                    flip("floor", "manual", floor)
                    flip("manual", "manual", manual_inproc)
                    flip("script", "manual", manual_script)
                    flip("api", "prism", api)
                    flip("cli", "prism", cli)
                    if (i + 1) % 10 == 0:
                        ctx.log(f"  cutover: {i + 1}/{rounds} rounds")

    probes = {"floor": manual_probe, "manual": manual_probe, "script": manual_probe}
    probes |= {"api": prism_probe, "cli": prism_probe}
    latency = {m: _latencies(calls[m], probes[m]) for m in calls}
    returned = {m: [(e - b) * 1000 for b, e, _ in calls[m]] for m in calls}
    return Section(NAME, TITLE, _report(rounds, interval, command_ms, latency, returned, probes))


def _latencies(calls: list[tuple[float, float, str]], probe: ProbeLog) -> list[float]:
    out = []
    for began, _, target in calls:
        seen = probe.first(target, began)
        if seen is not None:
            out.append((seen - began) * 1000)
    return out


def _report(
    rounds: int,
    interval: float,
    command_ms: list[float],
    latency: dict[str, list[float]],
    returned: dict[str, list[float]],
    probes: dict[str, ProbeLog],
) -> str:
    labels = {
        "floor": "raw `set map` (floor: one command, no checks)",
        "manual": "manual flow (seed 001), in-process",
        "script": "manual flow (seed 001), as a script (`python -m bench.manual_bluegreen`)",
        "api": "**Prism API** `POST /apps/shop/release`",
        "cli": "**Prism CLI** `prism release shop --to COLOR`",
    }
    rows: list[list[object]] = [
        [
            "one runtime command (`set map` round trip, idle)",
            len(command_ms),
            pct(command_ms, 50),
            pct(command_ms, 99),
            "-",
        ]
    ]
    for method, label in labels.items():
        values = latency.get(method, [])
        missed = rounds - len(values)
        rows.append(
            [
                label + (f" ({missed} not seen)" if missed else ""),
                len(values),
                pct(values, 50),
                pct(values, 99),
                pct(returned.get(method, []), 50),
            ]
        )
    api, cli = latency.get("api", []), latency.get("cli", [])
    floor, manual, script = (
        latency.get("floor", []),
        latency.get("manual", []),
        latency.get("script", []),
    )
    cmd50 = pct(command_ms, 50)
    ratios = [
        [
            "Prism API",
            ratio(pct(api, 50), pct(manual, 50)),
            ratio(pct(api, 99), pct(manual, 99)),
            ratio(pct(api, 50), pct(floor, 50)),
            ratio(pct(api, 50), cmd50),
        ],
        [
            "Prism CLI",
            ratio(pct(cli, 50), pct(script, 50)),
            ratio(pct(cli, 99), pct(script, 99)),
            ratio(pct(cli, 50), pct(floor, 50)),
            ratio(pct(cli, 50), cmd50),
        ],
    ]
    resolution = ", ".join(
        f"{name} {p.rate:,.0f} responses/s ({1000 / p.rate:.2f} ms apart), {p.errors} errors"
        for name, p in (("Prism listener", probes["api"]), ("manual listener", probes["floor"]))
        if p.rate
    )
    headline = (
        f"**Ratio**: Prism API p50 = {ratio(pct(api, 50), pct(manual, 50))} the manual flow "
        f"and {ratio(pct(api, 50), pct(floor, 50))} the raw `set map` floor "
        f"({ratio(pct(api, 50), cmd50)} one runtime command); Prism CLI p50 = "
        f"{ratio(pct(cli, 50), pct(script, 50))} the manual script.\n\n"
    )
    return (
        headline
        + f"{rounds} rounds; each round flips blue↔green once with every method, in the order "
        "below, against two listeners served by the same HAProxy binary and the same two "
        "demo backends: Prism's, and a hand-written HAProxy config routing with "
        "`use_backend %[str(SIMPLE_SERVICE),map(hosts.map)]` as in seed 001. Latency is from "
        "just before the call to the first response from the new color seen by a probe "
        "process hammering that listener (probe rate: "
        f"{resolution}). The manual flow polls every {interval:g} s "
        "(seed 001 sleeps 1 s) — the servers are already UP, so its first poll passes and "
        "the sleep only delays its return, not its cutover. Prism's call runs the health "
        "gate and a smoke request through its listener to the new color, saves the release "
        "and the new routing (fsync'd), writes the map file, sends the map change (then "
        "fsyncs the file) and reads it back; it returns after the drain of the old color.\n\n"
        + table(
            ["method", "n", "p50 ms", "p99 ms", "call returns after, p50 ms"],
            rows,
        )
        + "\nPrism as a ratio (lower is better; 1x = as fast as the baseline):\n\n"
        + table(
            [
                "",
                "p50 vs manual",
                "p99 vs manual",
                "p50 vs floor (raw set map)",
                "p50 vs one runtime command",
            ],
            ratios,
        )
        + "\nThe API is compared with the in-process manual flow, the CLI with the manual "
        "script: both pairs pay the same process and connection costs.\n"
    )
