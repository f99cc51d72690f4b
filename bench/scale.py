"""5. Scale: render, ``haproxy -c`` and reload at 10, 100 and 1,000 apps; weight moves.

Every app has 3 colors x 10 servers and its own listener, so 1,000 apps are
1,000 frontends, 3,000 backends and 30,000 servers (if HAProxy cannot get the
file descriptors that many health checks need, 3 x 5 servers). All servers
point at one in-memory HAProxy responder; the first app checks every second
(its colors must pass a check before a weight move may grow them), the others
every 30 s so that 30,000 health checks do not eat the machine.

At each size:

* ``render()`` and spec validation, timed in this process (Prism's pure core);
* ``haproxy -c`` on the rendered files;
* Prism, end to end: ``PUT /config`` that grows the spec to this size, then
  ``PUT /config`` changing one app's backend setting (a reload at this size);
* the floor for a config change, on Prism's own HAProxy: ``haproxy -c`` + one
  master ``reload`` — what any tool has to do, and nothing else;
* weight moves of one app through the API, against the floor for a weight
  move: one map transaction (``prepare``/``add``/``commit``) on the same map.
"""

from __future__ import annotations

import copy
import re
import time
from pathlib import Path
from typing import Any

from bench.common import (
    ApiError,
    BenchContext,
    PrismServer,
    Section,
    admin_command,
    free_port,
    haproxy_check,
    master_command,
    median,
    pct,
    ratio,
    rss_kib,
    run_haproxy,
    run_prism,
    static_backend_config,
    table,
    temp_dir,
    wait_old_workers_gone,
)

NAME = "scale"
TITLE = "5. Scale: 10, 100 and 1,000 apps"
COLORS = ("blue", "green", "red")
SERVERS = 10
WEIGHT_CYCLE = (
    {"blue": 90, "green": 10},
    {"blue": 80, "green": 10, "red": 10},
    {"blue": 70, "green": 20, "red": 10},
    {"blue": 100},
)


def free_ports(count: int) -> list[int]:
    """``count`` ports that are free now, below the ephemeral range.

    Not from the OS's ephemeral range (what ``free_port`` returns): thousands
    of health checks take their source ports from there, and one of them would
    sooner or later sit on a port picked for a listener.
    """
    import random
    import socket

    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    start = random.randrange(10_000, max(10_001, low - count * 3))
    ports: list[int] = []
    for port in range(start, low):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == count:
            return ports
    raise RuntimeError(f"not {count} free ports between {start} and {low}")


def fleet_spec(
    ports: list[int], server_port: int, fast: int = 1, servers: int = SERVERS
) -> dict[str, Any]:
    """One app per port in ``ports``, each on its own listener, 3 colors x 10 servers;
    the first ``fast`` apps check every second, the others every 30 s.

    Own listeners, as separate services would have (a shared listener picks the
    app by Host; its rules grow with its apps, which is not what is measured here).
    """
    return {
        "apps": [
            {
                "name": f"app{i:04d}",
                "bind": f"127.0.0.1:{port}",
                "stable": "blue",
                "check": {
                    "path": "/healthz",
                    "inter_ms": "1s" if i < fast else "30s",
                    "rise": 1,
                    "fall": 3,
                },
                "colors": [
                    {
                        "name": color,
                        "version": f"v{k + 1}",
                        "servers": [
                            {"name": f"s{j:02d}", "host": "127.0.0.1", "port": server_port}
                            for j in range(servers)
                        ],
                    }
                    for k, color in enumerate(COLORS)
                ],
            }
            for i, port in enumerate(ports)
        ],
    }


def render_in_process(spec: dict[str, Any], root: Path) -> tuple[float, float, Path]:
    """Validate and render ``spec`` here; (validate ms, render ms, config path)."""
    from prism.core.model import Spec, parse_model
    from prism.core.state import DesiredState
    from prism.haproxy.render import RenderSettings, render
    from prism.node.paths import StatePaths

    began = time.perf_counter()
    model = parse_model(Spec, spec, source="bench")
    state = DesiredState(spec=model, revision=1)
    validated = time.perf_counter()
    paths = StatePaths.at(root)
    files = render(
        state, paths, RenderSettings(admin_port=free_port(), maxconn=10_000, smoke_key="b" * 16)
    )
    rendered = time.perf_counter()
    paths.maps.mkdir(parents=True, exist_ok=True)
    for name, text in files.maps.items():
        (paths.maps / name).write_text(text)
    for name, text in files.files.items():
        (paths.root / name).parent.mkdir(parents=True, exist_ok=True)
        (paths.root / name).write_text(text)
    paths.config.write_text(files.config)
    return (validated - began) * 1000, (rendered - validated) * 1000, paths.config


def check_ms(ctx: BenchContext, config: Path) -> float:
    began = time.perf_counter()
    haproxy_check(ctx, config)
    return (time.perf_counter() - began) * 1000


def map_transaction(prism: PrismServer, app: str) -> float:
    """The floor for a weight move: rewrite the app's weights map in one transaction."""
    path = prism.state_dir / "maps" / f"{app}.weights.map"
    entries = [line.split() for line in path.read_text().splitlines() if line.strip()]
    began = time.perf_counter()
    reply = admin_command(prism.admin, f"prepare map {path}")
    version = reply.split("version", 1)[1].split()[0].strip(":")
    payload = "\n".join(f"{k} {v}" for k, v in entries)
    admin_command(prism.admin, f"add map @{version} {path} <<\n{payload}\n")
    admin_command(prism.admin, f"commit map @{version} {path}")
    return (time.perf_counter() - began) * 1000


# prism serve runs with this soft open-files limit (see the report's notes).
NOFILE = 4096


def run(ctx: BenchContext) -> Section:
    # (apps, servers per color); 1,000 x 3 x 10 is tried, and if HAProxy cannot get
    # the file descriptors its 30,000 health checks need, 1,000 x 3 x 5 is run instead.
    plan = [(10, SERVERS)] if ctx.quick else [(10, SERVERS), (100, SERVERS), (1000, SERVERS)]
    moves = ctx.size(20, 4)
    repeats = ctx.size(3, 1)
    rows: dict[tuple[int, int], dict[str, Any]] = {}
    with temp_dir(ctx.tmp, "scale-") as work:
        static_root, state = work / "static", work / "state"
        static_root.mkdir()
        state.mkdir()
        static_port = free_port()
        largest = max(n for n, _ in plan)
        ports = [p for p in free_ports(largest + 1) if p != static_port][:largest]
        with (
            run_haproxy(ctx, static_root, static_backend_config(static_root, static_port)),
            run_prism(ctx, state, nofile=NOFILE) as prism,
        ):
            while plan:
                size, per_color = plan.pop(0)
                ctx.log(f"  scale: {size} apps x 3 colors x {per_color} servers")
                row = _measure(
                    ctx,
                    prism,
                    work,
                    fleet_spec(ports[:size], static_port, servers=per_color),
                    moves,
                    repeats,
                )
                rows[(size, per_color)] = row
                if "refused" in row and per_color == SERVERS:
                    plan.insert(0, (size, SERVERS // 2))
    return Section(NAME, TITLE, _report(moves, repeats, rows))


def _measure(
    ctx: BenchContext,
    prism: PrismServer,
    work: Path,
    spec: dict[str, Any],
    moves: int,
    repeats: int,
) -> dict[str, Any]:
    size = len(spec["apps"])
    row: dict[str, Any] = {}
    with temp_dir(work, "r-") as scratch:
        timings = [render_in_process(spec, scratch) for _ in range(repeats)]
        row["validate"] = median([t[0] for t in timings])
        row["render"] = median([t[1] for t in timings])
        row["check"] = median([check_ms(ctx, timings[0][2]) for _ in range(repeats)])
    began = time.perf_counter()
    try:
        prism.api("PUT", "/config", {"spec": spec, "reason": f"bench {size} apps"})
    except ApiError as exc:
        # Prism refuses what HAProxy's file-descriptor limit cannot hold (422, before
        # HAProxy is touched); older builds let HAProxy refuse the reload.
        match = re.search(
            r"this configuration needs [\d,]+ file descriptors.*?but the limit is [\d,]+"
            r"|Cannot raise FD limit to \d+, limit is \d+",
            exc.text,
        )
        if match is None:
            raise
        row["refused"] = match.group(0)
        row["grow"] = (time.perf_counter() - began) * 1000
        return row
    row["grow"] = (time.perf_counter() - began) * 1000
    reloads = []
    for r in range(repeats):
        changed = copy.deepcopy(spec)
        changed["apps"][0]["retries"] = 4 + r
        began = time.perf_counter()
        answer = prism.api("PUT", "/config", {"spec": changed, "reason": "bench"})
        reloads.append((time.perf_counter() - began) * 1000)
        if answer.get("mode") != "reload":
            raise RuntimeError(f"expected a reload, got {answer}")
    row["reload"] = median(reloads)
    floors = []
    for _ in range(repeats):
        began = time.perf_counter()
        check_ms(ctx, prism.state_dir / "haproxy.cfg")
        reply = master_command(prism.master, "reload")
        if not reply.startswith("Success=1"):
            raise RuntimeError(f"reload refused: {reply[:300]}")
        floors.append((time.perf_counter() - began) * 1000)
    row["floor_reload"] = median(floors)
    prism.wait_up("app0000", timeout=120)
    row["settle"] = wait_old_workers_gone(prism.master)
    times, txn = [], []
    for m in range(moves):
        weights = WEIGHT_CYCLE[m % len(WEIGHT_CYCLE)]
        began = time.perf_counter()
        prism.api("PUT", "/apps/app0000/weights", {"weights": weights})
        times.append((time.perf_counter() - began) * 1000)
        txn.append(map_transaction(prism, "app0000"))
    row["move_p50"], row["move_p99"] = pct(times, 50), pct(times, 99)
    row["txn_p50"] = pct(txn, 50)
    row["rss"] = rss_kib(prism.process.pid) / 1024
    return row


def _label(key: tuple[int, int]) -> str:
    apps, per_color = key
    return f"{apps:,} apps x 3 x {per_color} ({apps * 3 * per_color:,} servers)"


def _report(moves: int, repeats: int, rows: dict[tuple[int, int], dict[str, Any]]) -> str:
    import resource

    from prism.haproxy.render import derive_maxconn

    default, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    config_rows = [
        [
            _label(key),
            r["validate"],
            r["render"],
            r["check"],
            r["grow"],
            r.get("reload", "refused"),
            r.get("floor_reload", "-"),
            ratio(r["reload"], r["floor_reload"]) if "reload" in r else "-",
        ]
        for key, r in rows.items()
    ]
    measured = {k: r for k, r in rows.items() if "move_p50" in r}
    first = next(iter(measured.values()), {"move_p50": float("nan")})
    move_rows = [
        [
            _label(key),
            r["settle"],
            r["move_p50"],
            r["move_p99"],
            r["txn_p50"],
            ratio(r["move_p50"], r["txn_p50"]),
            ratio(r["move_p50"], first["move_p50"]),
            r["rss"],
        ]
        for key, r in measured.items()
    ]
    refusals = "".join(
        f"\n- **{_label(key)}**: Prism's `PUT /config` was refused (in "
        f'{r["grow"] / 1000:.1f} s, before HAProxy was touched): "{r["refused"]}". Every '
        "server holds a file descriptor in HAProxy, on top of 2 per connection; this machine's "
        f"hard limit is {hard:,} and cannot be raised here, so the size below it was run "
        "instead.\n"
        for key, r in rows.items()
        if "refused" in r
    )
    biggest_key, biggest = list(measured.items())[-1] if measured else ((0, 0), {})
    headline = (
        f"**Ratio**: at {_label(biggest_key)}, a Prism reload takes "
        f"{ratio(biggest['reload'], biggest['floor_reload'])} the floor (check + reload by "
        f"hand) and a Prism weight move {ratio(biggest['move_p50'], biggest['txn_p50'])} "
        f"the floor (one map transaction), {ratio(biggest['move_p50'], first['move_p50'])} "
        "its own latency at the smallest size.\n\n"
        if measured
        else "**Ratio**: nothing could be measured.\n\n"
    )
    return (
        headline
        + f"Times in ms, medians of {repeats}. *Validate* and *render* run in the benchmark's "
        "own process; *`haproxy -c`* is one check of the rendered files; *Prism: grow* is "
        "`PUT /config` from the previous size to this one; *Prism: reload* is `PUT /config` "
        "changing one app's `retries` (validate, render, check, persist, reload, verify); "
        "the floor is `haproxy -c` + a master `reload` sent by hand to the same HAProxy. "
        f"`prism serve` runs with `ulimit -Sn {NOFILE}`: Prism derives HAProxy's `maxconn` "
        f"from it ({derive_maxconn(NOFILE):,}). With this machine's default "
        f"({default:,}), Prism sets `maxconn {derive_maxconn(default):,}`, which leaves "
        f"room for only ~{max(0, default - 2 * derive_maxconn(default) - 64):,} "
        "servers and listeners: Prism refuses any bigger config, because HAProxy could not "
        "get the file descriptors (the 100-app one has 3,000 servers).\n\n"
        + table(
            [
                "size",
                "validate",
                "render",
                "`haproxy -c`",
                "Prism: grow",
                "Prism: reload",
                "floor: check + reload",
                "Prism / floor",
            ],
            config_rows,
        )
        + refusals
        + f"\nWeight moves of one app (`PUT /apps/app0000/weights`, {moves} per size, "
        "p50/p99 ms) against the floor: one `prepare map`/`add map`/`commit map` "
        "transaction on the same map, sent by hand. Moves start once the HAProxy workers "
        "the reloads above replaced have exited (*settle*, s: at 15,000 servers they "
        "take seconds, and their CPU would be measured too). RSS of `prism serve` in MiB.\n\n"
        + table(
            [
                "size",
                "settle s",
                "Prism p50",
                "Prism p99",
                "floor p50",
                "Prism / floor",
                "Prism p50 / smallest size",
                "prism serve RSS MiB",
            ],
            move_rows,
        )
    )
