"""6. Control-plane throughput: sustained weight moves per second; memory of ``prism serve``.

The fleet of :mod:`bench.scale` (3 colors x 10 servers per app — 3 x 5 at
1,000 apps, the most this machine's file-descriptor limit allows — each app on
its own listener) at 10 and at 1,000 apps, ``prism serve`` with ``ulimit -Sn``
as in the scale section. Clients move weights through the API for a
fixed time, each on its own app (Prism refuses a second concurrent change of
one app, by design): one client, then several at once. Every answer is
counted; a move only counts if Prism answered 200.

Baseline, in the same run and on the same HAProxy: how many map transactions
(``prepare``/``add``/``commit``, what a weight move sends) one client gets
through by hand in the same time. Memory: ``VmRSS`` and ``VmHWM`` (peak) of
``prism serve``, next to HAProxy's own (master + workers).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx

from bench.common import (
    BenchContext,
    PrismServer,
    Section,
    children_of,
    free_port,
    ratio,
    rss_kib,
    run_haproxy,
    run_prism,
    static_backend_config,
    table,
    temp_dir,
)
from bench.scale import NOFILE, SERVERS, WEIGHT_CYCLE, fleet_spec, free_ports, map_transaction

NAME = "throughput"
TITLE = "6. Control-plane throughput and memory"
CLIENTS = 8


@dataclass
class MoveRun:
    ok: int
    statuses: Counter[int]
    seconds: float
    errors: Counter[str]


def moves(prism: PrismServer, apps: list[str], seconds: float) -> MoveRun:
    """Each app moved by its own client, back to back, for ``seconds``."""

    async def main() -> MoveRun:
        statuses: Counter[int] = Counter()
        errors: Counter[str] = Counter()
        headers = {"Authorization": f"Bearer {prism.token}"}
        async with httpx.AsyncClient(
            base_url=prism.url, headers=headers, timeout=120, trust_env=False
        ) as client:
            began = time.monotonic()
            deadline = began + seconds

            async def worker(app: str) -> None:
                step = 0
                while time.monotonic() < deadline:
                    weights = WEIGHT_CYCLE[step % len(WEIGHT_CYCLE)]
                    reply = await client.put(
                        f"/api/v1/apps/{app}/weights", json={"weights": weights}
                    )
                    statuses[reply.status_code] += 1
                    if reply.status_code == 200:
                        step += 1
                    else:
                        detail = str(reply.json().get("detail", reply.text))
                        detail = detail.replace(str(prism.state_dir), "<state-dir>")
                        errors[f"{reply.status_code}: {re.sub(r'[0-9]+', 'N', detail)[:300]}"] += 1

            await asyncio.gather(*(worker(a) for a in apps))
            return MoveRun(statuses[200], statuses, time.monotonic() - began, errors)

    return asyncio.run(main())


def memory(prism: PrismServer) -> dict[str, float]:
    from pathlib import Path

    def hwm(pid: int) -> int:
        try:
            text = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return 0
        line = next((x for x in text.splitlines() if x.startswith("VmHWM:")), "VmHWM: 0 kB")
        return int(line.split()[1])

    master = prism.haproxy_pid or 0
    haproxy = [master, *children_of(master)] if master else []
    return {
        "rss": rss_kib(prism.process.pid) / 1024,
        "hwm": hwm(prism.process.pid) / 1024,
        "haproxy": sum(rss_kib(p) for p in haproxy) / 1024,
    }


def run(ctx: BenchContext) -> Section:
    sizes = [10] if ctx.quick else [10, 1000]
    seconds = ctx.size(10, 1.5)
    rows: dict[int, dict[str, Any]] = {}
    with temp_dir(ctx.tmp, "tput-") as work:
        static_root, state = work / "static", work / "state"
        static_root.mkdir()
        state.mkdir()
        static_port = free_port()
        ports = [p for p in free_ports(max(sizes) + 1) if p != static_port][: max(sizes)]
        with (
            run_haproxy(ctx, static_root, static_backend_config(static_root, static_port)),
            run_prism(ctx, state, nofile=NOFILE) as prism,
        ):
            idle = memory(prism)
            for size in sizes:
                ctx.log(f"  throughput: {size} apps")
                # 3 x 10 servers per app, but 3 x 5 at 1,000 apps: 30,000 health checks need
                # more file descriptors than this machine allows (see the scale section).
                per_color = SERVERS if size <= 100 else SERVERS // 2
                spec = fleet_spec(ports[:size], static_port, fast=CLIENTS, servers=per_color)
                prism.api("PUT", "/config", {"spec": spec, "reason": f"bench {size} apps"})
                apps = [f"app{i:04d}" for i in range(CLIENTS)]
                for app in apps:
                    prism.wait_up(app, timeout=120)
                row: dict[str, Any] = {}
                row["one"] = moves(prism, apps[:1], seconds)
                row["many"] = moves(prism, apps, seconds)
                count, began = 0, time.monotonic()
                while time.monotonic() - began < seconds:
                    map_transaction(prism, "app0000")
                    count += 1
                row["floor"] = count / (time.monotonic() - began)
                row["memory"] = memory(prism)
                row["servers"] = size * 3 * per_color
                rows[size] = row
    return Section(NAME, TITLE, _report(seconds, idle, rows))


def _report(seconds: float, idle: dict[str, float], rows: dict[int, dict[str, Any]]) -> str:
    out = []
    for size, row in rows.items():
        for label, key in (("1 client", "one"), (f"{CLIENTS} clients, 1 app each", "many")):
            run_: MoveRun = row[key]
            statuses, rate = run_.statuses, run_.ok / run_.seconds
            others = ", ".join(f"{c}: {n}" for c, n in sorted(statuses.items()) if c != 200)
            out.append(
                [
                    f"{size:,} apps",
                    label,
                    rate,
                    row["floor"],
                    ratio(rate, row["floor"]),
                    others or "none",
                ]
            )
    errors = [
        f"- {size:,} apps, {key}: `{text}` ({n}x)"
        for size, row in rows.items()
        for key in ("one", "many")
        for text, n in row[key].errors.most_common(5)
    ]
    mem = [["no apps (after start)", idle["rss"], idle["hwm"], idle["haproxy"], ""]]
    mem += [
        [
            f"{size:,} apps ({row['servers']:,} servers)",
            row["memory"]["rss"],
            row["memory"]["hwm"],
            row["memory"]["haproxy"],
            ratio(row["memory"]["rss"], row["memory"]["haproxy"]),
        ]
        for size, row in rows.items()
    ]
    last_size, last = list(rows.items())[-1]
    ok, elapsed = last["many"].ok, last["many"].seconds
    headline = (
        f"**Ratio**: at {last_size:,} apps Prism sustains {ok / elapsed:.3g} weight moves/s = "
        f"{ratio(ok / elapsed, last['floor'])} the hand-sent map transaction rate; "
        f"`prism serve` holds {last['memory']['rss']:.0f} MiB = "
        f"{ratio(last['memory']['rss'], last['memory']['haproxy'])} HAProxy's own memory.\n\n"
    )
    return (
        headline + f"Weight moves through `PUT /apps/APP/weights` for {seconds:g} s per row, each "
        "client alternating its own app between weight vectors (every move changes the map "
        "and grows a color, so the health gate runs); floor = map transactions per second "
        "sent by hand by one client to the same HAProxy in the same time.\n\n"
        + table(
            [
                "size",
                "clients",
                "Prism moves/s",
                "floor: map transactions/s",
                "Prism / floor",
                "other answers",
            ],
            out,
        )
        + ("\nWhat Prism answered instead of 200:\n\n" + "\n".join(errors) + "\n" if errors else "")
        + "\nMemory in MiB: `prism serve` resident (`VmRSS`) and peak (`VmHWM`), and "
        "HAProxy's master + workers resident, for comparison.\n\n"
        + table(
            ["state", "prism serve RSS", "prism serve peak", "HAProxy RSS", "Prism / HAProxy"],
            mem,
        )
    )
