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

``wrk`` runs alternate between the two (order swapped every round).
"""

from __future__ import annotations

import re

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

NAME = "overhead"
TITLE = "3. Routing overhead"
HEADERS = {"Cookie": "uid=user-42", "X-Tenant": "tenant-7"}
CONNECTIONS = 50


def run(ctx: BenchContext) -> Section:
    rounds = ctx.size(7, 1)
    seconds = ctx.size(5, 1)
    with temp_dir(ctx.tmp, "ovh-") as work:
        static_root, minimal_root, state = work / "static", work / "minimal", work / "state"
        for d in (static_root, minimal_root, state):
            d.mkdir()
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
            for i in range(rounds):
                order = ["prism", "minimal"] if i % 2 == 0 else ["minimal", "prism"]
                for name in order:
                    results[name].append(
                        run_wrk(
                            urls[name], seconds=seconds, connections=CONNECTIONS, headers=HEADERS
                        )
                    )
                ctx.log(f"  overhead: round {i + 1}/{rounds}")
    return Section(NAME, TITLE, _report(rounds, seconds, results, frontend))


def _report(rounds: int, seconds: int, results: dict[str, list[WrkResult]], frontend: str) -> str:
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
    per_run: list[list[object]] = [
        [i + 1, p.rps, m.rps, ratio(p.rps, m.rps), ratio(p.p50_ms, m.p50_ms)]
        for i, (p, m) in enumerate(pairs)
    ]
    rules = "\n".join(line for line in frontend.splitlines() if line.strip())
    headline = (
        f"**Ratio**: Prism-rendered / minimal config, median of {rounds} interleaved rounds: "
        f"throughput {paired('rps'):.3g}x, p50 latency {paired('p50_ms'):.3g}x, "
        f"p99 latency {paired('p99_ms'):.3g}x.\n\n"
    )
    return (
        headline
        + f"`wrk -t2 -c{CONNECTIONS} -d{seconds}s --latency` with headers "
        + ", ".join(f"`{k}: {v}`" for k, v in HEADERS.items())
        + f", {rounds} interleaved rounds per config (medians of the rounds), both proxies on the "
        "same HAProxy binary, proxying to the same in-memory HAProxy responder.\n\n"
        + table(["config", "req/s", "p50 ms", "p99 ms", "non-2xx + errors"], rows)
        + "\nPer round:\n\n"
        + table(["round", "Prism req/s", "minimal req/s", "req/s ratio", "p50 ratio"], per_run)
        + "\nThe frontend Prism rendered for this app (every request runs these rules):\n\n"
        + f"```haproxy\nfrontend app_shop\n{rules}\n```\n"
    )
