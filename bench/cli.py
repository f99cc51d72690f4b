"""14. CLI start-up: how long a command takes from exec to exit.

One ``prism serve`` with app ``shop`` (blue and green, one demo backend each).
Each round runs every command below once, in the same order, as a new
process, and times it from ``exec`` to exit. The same-run baselines are the
floors a command cannot go under: ``python -c pass`` (the interpreter alone)
and ``curl`` asking the same endpoint as ``prism status`` (one process making
one HTTP call). ``python -c 'import asyncio, httpx'`` shows what an event loop
and an HTTP library would add to every command.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from typing import Any

from bench.common import (
    BenchContext,
    Section,
    free_port,
    median,
    pct,
    prism_command,
    ratio,
    run_prism,
    table,
    temp_dir,
)
from prism.testing.processes import BackendSpec, backends

NAME = "cli"
TITLE = "14. CLI start-up"


def spec(port: int, servers: list[Any]) -> dict[str, Any]:
    return {
        "apps": [
            {
                "name": "shop",
                "bind": f"127.0.0.1:{port}",
                "stable": "blue",
                "colors": [
                    {"name": b.color, "servers": [{"name": "s1", "host": b.host, "port": b.port}]}
                    for b in servers
                ],
            }
        ]
    }


def _timed(command: list[str], env: dict[str, str]) -> float:
    began = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, check=False)
    elapsed = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"{command} exited {done.returncode}: {done.stderr[-500:]!r}")
    return elapsed * 1000


def run(ctx: BenchContext) -> Section:
    rounds = ctx.size(40, 3)
    cli = prism_command()
    pair = [BackendSpec("blue", "v1"), BackendSpec("green", "v2")]
    with backends(pair) as servers, temp_dir(ctx.tmp, "cli-") as work:
        state = work / "state"
        state.mkdir()
        with run_prism(ctx, state) as prism:
            prism.api("PUT", "/config", {"spec": spec(free_port(), list(servers))})
            prism.wait_up("shop")
            env = prism.cli_env()
            commands: dict[str, list[str]] = {
                "`python -c pass` (interpreter floor)": [sys.executable, "-c", "pass"],
                "`python -c 'import asyncio, httpx'`": [
                    sys.executable,
                    "-c",
                    "import asyncio, httpx",
                ],
                "`prism --help`": [*cli, "--help"],
                "`prism status`": [*cli, "status"],
                "`prism status shop`": [*cli, "status", "shop"],
                "`prism history shop --limit 5`": [*cli, "history", "shop", "--limit", "5"],
            }
            curl = shutil.which("curl")
            if curl is not None:
                commands["`curl` GET /api/v1/apps (one HTTP call)"] = [
                    curl,
                    "-sf",
                    "-o",
                    "/dev/null",
                    "-H",
                    f"Authorization: Bearer {prism.token}",
                    f"{prism.url}/api/v1/apps",
                ]
            times: dict[str, list[float]] = {label: [] for label in commands}
            for _ in range(2):  # warm the page cache: every figure below is a warm start
                for command in commands.values():
                    _timed(command, env)
            for index in range(rounds):
                for label, command in commands.items():
                    times[label].append(_timed(command, env))
                if index % 10 == 9:
                    ctx.log(f"  cli: round {index + 1}/{rounds}")
    floor = median(times["`python -c pass` (interpreter floor)"])
    status = median(times["`prism status`"])
    rows = [
        [
            label,
            len(values),
            f"{median(values):.0f}",
            f"{pct(values, 99):.0f}",
            ratio(median(values), floor),
        ]
        for label, values in times.items()
    ]
    curl_line = ""
    curl_label = "`curl` GET /api/v1/apps (one HTTP call)"
    if curl_label in times:
        curl_line = f" and {ratio(status, median(times[curl_label]))} one `curl` call"
    body = f"""\
**Ratio**: `prism status` p50 = {ratio(status, floor)} the bare interpreter{curl_line}.

{__doc__.split(chr(10), 2)[2].strip()}

Each command ran {rounds} times (after two warm-up rounds), interleaved.

{table(["command", "n", "p50 ms", "p99 ms", "p50 vs interpreter"], rows)}
"""
    return Section(NAME, TITLE, body)
