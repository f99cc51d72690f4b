"""3. Routing overhead: Prism's rendered config vs a minimal hand-written one.

Both run on the same HAProxy binary at the same time and proxy to the same
backend: a third HAProxy that answers every request from memory, so neither
proxy waits on a slow backend and the difference is the routing itself.

* **Prism**: ``prism serve`` with app ``shop`` on three colors (weights
  50/30/20), a header pin rule with a pinned key, sticky buckets from a cookie,
  and its usual fallback and maintenance rules. Each request carries the
  cookie and an unpinned tenant header: a pin lookup that misses, a hash, a
  bucket lookup, the fallback checks.
* **minimal**: ``frontend`` + ``default_backend`` with one server.

Prism runs with its request log off (``--request-log-sample 0``): like the
minimal config it logs nothing, so the comparison is the routing rules; what
the request log costs is section 13.

``wrk`` runs alternate between the two (order swapped every round). Besides
throughput and latency, each run records the CPU time the proxy's worker spent
per request (``/proc/<pid>/stat``): on a machine shared with other work,
throughput also measures how much CPU the scheduler happened to give each
proxy, while CPU per request measures what the rules cost.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from bench.common import (
    BenchContext,
    Section,
    WrkResult,
    free_port,
    haproxy_globals,
    median,
    ratio,
    run_haproxy,
    run_prism,
    run_wrk,
    static_backend_config,
    table,
    temp_dir,
    wait_servers_up,
)
from bench.manual_bluegreen import admin_command

NAME = "overhead"
TITLE = "3. Routing overhead"
HEADERS = {"Cookie": "uid=user-42", "X-Tenant": "tenant-7"}
CONNECTIONS = 50
_TICK = os.sysconf("SC_CLK_TCK")


def worker_pid(admin: Path) -> int:
    """The PID of the HAProxy worker answering on ``admin``."""
    info = admin_command(admin, "show info")
    return int(next(line.split(":")[1] for line in info.splitlines() if line.startswith("Pid:")))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def run(ctx: BenchContext) -> Section:
    # Many short rounds rather than a few long ones: on a shared machine the
    # load drifts within minutes, and only the two runs of one round (seconds
    # apart) see the same load, so more pairs make the median ratio steadier.
    rounds = ctx.size(15, 1)
    seconds = ctx.size(3, 1)
    with temp_dir(ctx.tmp, "ovh-") as work:
        static_root, minimal_root, state = work / "static", work / "minimal", work / "state"
        for d in (static_root, minimal_root, state):
            d.mkdir()
        # Routing alone: the request log is a feature of its own, measured in its
        # own section (13), and the minimal config logs nothing either.
        (state / "settings.json").write_text('{"request_log_sample": 0}\n')
        static_port, minimal_port, prism_port = free_port(), free_port(), free_port()
        minimal = haproxy_globals(minimal_root) + (
            "frontend app\n"
            f"    bind 127.0.0.1:{minimal_port}\n"
            "    default_backend app\n"
            "backend app\n"
            "    balance roundrobin\n"
            "    option httpchk\n"
            "    http-check send meth GET uri /healthz\n"
            f"    server s1 127.0.0.1:{static_port} check inter 1s rise 2 fall 3\n"
        )
        spec = {
            "apps": [
                {
                    "name": "shop",
                    "bind": f"127.0.0.1:{prism_port}",
                    "stable": "blue",
                    "check": {"path": "/healthz", "inter_ms": "1s", "rise": 2, "fall": 3},
                    "stickiness": {"source": "cookie", "name": "uid"},
                    "pins": [{"name": "tenant", "source": "header", "key": "X-Tenant"}],
                    "colors": [
                        {"name": c, "servers": [f"127.0.0.1:{static_port}"]}
                        for c in ("blue", "green", "red")
                    ],
                }
            ]
        }
        with (
            run_haproxy(ctx, static_root, static_backend_config(static_root, static_port)),
            run_haproxy(ctx, minimal_root, minimal) as hand,
            run_prism(ctx, state) as prism,
        ):
            prism.api("PUT", "/config", {"spec": spec, "reason": "bench"})
            prism.wait_up("shop")
            wait_servers_up(hand, ["app"])
            prism.api(
                "PUT", "/apps/shop/weights", {"weights": {"blue": 50, "green": 30, "red": 20}}
            )
            prism.api("PUT", "/apps/shop/pins/acme", {"color": "red"})
            config = (state / "haproxy.cfg").read_text()
            frontend = config.split("frontend app_shop", 1)[1].split("\nbackend", 1)[0]
            # Never publish the smoke secret or the temp paths.
            secret = re.search(r"x-prism-smoke-key\) -m str (\S+)", frontend)
            if secret:
                frontend = frontend.replace(secret.group(1), "<smoke-key>")
            frontend = frontend.replace(str(state), "<state-dir>")
            urls = {
                "prism": f"http://127.0.0.1:{prism_port}/",
                "minimal": f"http://127.0.0.1:{minimal_port}/",
            }
            for url in urls.values():  # warm-up, not recorded
                run_wrk(url, seconds=1, connections=CONNECTIONS, headers=HEADERS)
            results: dict[str, list[WrkResult]] = {"prism": [], "minimal": []}
            cpu_us: dict[str, list[float]] = {"prism": [], "minimal": []}
            pids = {"prism": worker_pid(prism.admin), "minimal": worker_pid(hand.admin)}
            load_before = os.getloadavg()[0]
            for i in range(rounds):
                order = ["prism", "minimal"] if i % 2 == 0 else ["minimal", "prism"]
                for name in order:
                    before = cpu_seconds(pids[name])
                    result = run_wrk(
                        urls[name], seconds=seconds, connections=CONNECTIONS, headers=HEADERS
                    )
                    used = cpu_seconds(pids[name]) - before
                    results[name].append(result)
                    cpu_us[name].append(used / max(result.requests, 1) * 1e6)
                ctx.log(f"  overhead: round {i + 1}/{rounds}")
            load = (load_before, os.getloadavg()[0])
    return Section(NAME, TITLE, _report(rounds, seconds, results, cpu_us, frontend, load))


def _report(
    rounds: int,
    seconds: int,
    results: dict[str, list[WrkResult]],
    cpu_us: dict[str, list[float]],
    frontend: str,
    load: tuple[float, float],
) -> str:
    def summary(runs: list[WrkResult]) -> tuple[float, float, float, int]:
        return (
            median([r.rps for r in runs]),
            median([r.p50_ms for r in runs]),
            median([r.p99_ms for r in runs]),
            sum(r.non_2xx + r.errors for r in runs),
        )

    prism, minimal = summary(results["prism"]), summary(results["minimal"])
    pairs = list(zip(results["prism"], results["minimal"], strict=True))

    def paired(field: str) -> float:
        # Each round runs both configs back to back: the ratio within a round
        # cancels whatever else the machine was doing then.
        return median([getattr(p, field) / getattr(m, field) for p, m in pairs])

    cpu_pairs = list(zip(cpu_us["prism"], cpu_us["minimal"], strict=True))
    cpu_ratio = median([p / m for p, m in cpu_pairs if m > 0])
    per_run: list[list[object]] = [
        [i + 1, p.rps, m.rps, ratio(p.rps, m.rps), ratio(p.p50_ms, m.p50_ms), pc, mc, ratio(pc, mc)]
        for i, ((p, m), (pc, mc)) in enumerate(zip(pairs, cpu_pairs, strict=True))
    ]
    rows: list[list[object]] = [
        ["**Prism-rendered** (pins + sticky buckets + fallback)", *prism],
        ["minimal hand-written (`default_backend`)", *minimal],
        [
            "ratio Prism / minimal (median of the per-round ratios)",
            f"{paired('rps'):.3g}x",
            f"{paired('p50_ms'):.3g}x",
            f"{paired('p99_ms'):.3g}x",
            "",
        ],
    ]
    cpu_rows: list[list[object]] = [
        ["**Prism-rendered**", median(cpu_us["prism"])],
        ["minimal hand-written", median(cpu_us["minimal"])],
        ["ratio Prism / minimal (median of the per-round ratios)", f"{cpu_ratio:.3g}x"],
    ]
    rules = "\n".join(line for line in frontend.splitlines() if line.strip())
    headline = (
        f"**Ratio**: Prism-rendered / minimal config, median of {rounds} interleaved rounds: "
        f"throughput {paired('rps'):.3g}x, p50 latency {paired('p50_ms'):.3g}x, "
        f"p99 latency {paired('p99_ms'):.3g}x; CPU per request {cpu_ratio:.3g}x.\n\n"
    )
    return (
        headline
        + f"`wrk -t2 -c{CONNECTIONS} -d{seconds}s --latency` with headers "
        + ", ".join(f"`{k}: {v}`" for k, v in HEADERS.items())
        + f", {rounds} interleaved rounds per config (medians of the rounds), both proxies on the "
        "same HAProxy binary, proxying to the same in-memory HAProxy responder. Load average "
        f"(1 min) before / after the rounds: {load[0]:.2f} / {load[1]:.2f}.\n\n"
        + table(["config", "req/s", "p50 ms", "p99 ms", "non-2xx + errors"], rows)
        + "\nCPU time of the proxy's worker per request, in microseconds (user + system, "
        "all threads; medians of the rounds):\n\n"
        + table(["config", "CPU µs / request"], cpu_rows)
        + "\nPer round:\n\n"
        + table(
            [
                "round",
                "Prism req/s",
                "minimal req/s",
                "req/s ratio",
                "p50 ratio",
                "Prism CPU µs/req",
                "minimal CPU µs/req",
                "CPU ratio",
            ],
            per_run,
        )
        + "\nThe frontend Prism rendered for this app (every request runs these rules):\n\n"
        + f"```haproxy\nfrontend app_shop\n{rules}\n```\n"
    )
