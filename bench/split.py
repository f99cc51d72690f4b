"""4. Split accuracy and stickiness: declared vs observed shares, users kept through a shift.

Prism (``prism serve``) runs two apps over the same three demo backends:
``sticky`` takes its bucket from an ``X-User`` header (xxh32 mod 100),
``random`` uses ``rand(100)``. The baseline is the hand-written HAProxy way to
split by weight, on the same binary and backends: one backend whose three
servers (one per color) carry the weights — ``balance hdr(X-User)`` with
``hash-type consistent`` for sticky users, ``balance roundrobin`` otherwise —
with weights changed at runtime by ``set weight``.

1. **Accuracy**: weights blue 50 / green 30 / red 20, then one request per
   distinct user (or per request, for random) and the share each color got.
2. **Stickiness**: the same users through a monotone shift from blue 100 to
   green 100 in steps of 10; every user sends one request per step. A user
   on green must stay on green (green only grows); a user should change color
   at most once, and never come back.
"""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

from bench.common import (
    BenchContext,
    Section,
    fetch_colors,
    free_port,
    haproxy_globals,
    ratio,
    run_haproxy,
    run_prism,
    table,
    temp_dir,
    wait_servers_up,
)
from prism.testing.processes import Backend, BackendSpec, backends

NAME = "split"
TITLE = "4. Split accuracy and stickiness"
COLORS = ("blue", "green", "red")
DECLARED = {"blue": 50, "green": 30, "red": 20}


def manual_config(root: Path, ports: tuple[int, int], by_color: dict[str, Backend]) -> str:
    def servers(weights: dict[str, int]) -> str:
        return "".join(
            f"    server {c} {b.address} weight {weights.get(c, 0)} check inter 200ms\n"
            for c, b in by_color.items()
        )

    common = "    option httpchk\n    http-check send meth GET uri /healthz\n"
    return haproxy_globals(root) + (
        f"frontend hashed\n    bind 127.0.0.1:{ports[0]}\n    default_backend hashed\n"
        f"frontend rr\n    bind 127.0.0.1:{ports[1]}\n    default_backend rr\n"
        "backend hashed\n    balance hdr(X-User)\n    hash-type consistent\n"
        + common
        + servers(DECLARED)
        + "backend rr\n    balance roundrobin\n"
        + common
        + servers(DECLARED)
    )


def run(ctx: BenchContext) -> Section:
    requests = ctx.size(10_000, 1_000)
    users = ctx.size(1_000, 100)
    steps = list(range(0, 101, 10)) if not ctx.quick else [0, 50, 100]
    specs = [BackendSpec(c, f"v{i + 1}") for i, c in enumerate(COLORS)]
    with backends(specs) as running, temp_dir(ctx.tmp, "split-") as work:
        by_color = {b.color: b for b in running}
        state, root = work / "state", work / "m"
        state.mkdir()
        root.mkdir()
        sticky_port, random_port = free_port(), free_port()
        manual_ports = (free_port(), free_port())

        def app(name: str, port: int, stickiness: dict[str, str]) -> dict[str, object]:
            return {
                "name": name,
                "bind": f"127.0.0.1:{port}",
                "stable": "blue",
                "check": {"path": "/healthz", "inter_ms": "200ms", "rise": 2, "fall": 2},
                "stickiness": stickiness,
                "colors": [{"name": c, "servers": [b.address]} for c, b in by_color.items()],
            }

        spec = {
            "apps": [
                app("sticky", sticky_port, {"source": "header", "name": "X-User"}),
                app("random", random_port, {"source": "none"}),
            ]
        }
        config = manual_config(root, manual_ports, by_color)
        with run_prism(ctx, state) as prism, run_haproxy(ctx, root, config) as manual:
            prism.api("PUT", "/config", {"spec": spec, "reason": "bench"})
            for name in ("sticky", "random"):
                prism.wait_up(name)
                prism.api("PUT", f"/apps/{name}/weights", {"weights": DECLARED})
            wait_servers_up(manual, ["hashed", "rr"])
            people = [{"X-User": f"user-{i:06d}"} for i in range(requests)]
            anonymous: list[dict[str, str]] = [{} for _ in range(requests)]
            shares = {
                "Prism, sticky (X-User hash -> bucket)": _shares(fetch_colors(sticky_port, people)),
                "manual, `balance hdr(X-User)` + `hash-type consistent`": _shares(
                    fetch_colors(manual_ports[0], people)
                ),
                "Prism, random (`rand(100)`)": _shares(fetch_colors(random_port, anonymous)),
                "manual, weighted `balance roundrobin`": _shares(
                    fetch_colors(manual_ports[1], anonymous)
                ),
            }
            ctx.log("  split: accuracy done")

            shift_users = people[:users]
            prism_paths: list[list[str | None]] = []
            manual_paths: list[list[str | None]] = []
            for green in steps:
                weights = {"blue": 100 - green, "green": green}
                prism.api(
                    "PUT", "/apps/sticky/weights", {"weights": {k: v for k, v in weights.items()}}
                )
                for color in COLORS:
                    manual.cmd(f"set weight hashed/{color} {weights.get(color, 0)}")
                prism_paths.append(fetch_colors(sticky_port, shift_users))
                manual_paths.append(fetch_colors(manual_ports[0], shift_users))
            ctx.log("  split: shift done")
    return Section(
        NAME,
        TITLE,
        _report(
            requests, users, steps, shares, _stickiness(prism_paths), _stickiness(manual_paths)
        ),
    )


def _shares(colors: list[str | None]) -> dict[str, float]:
    counts = Counter(colors)
    total = len(colors)
    out = {c: counts.get(c, 0) / total * 100 for c in COLORS}
    out["failed"] = counts.get(None, 0) / total * 100
    return out


def _stickiness(paths: list[list[str | None]]) -> dict[str, float]:
    """Per user, the colors seen at each step of a blue -> green shift."""
    users = len(paths[0])
    per_user = [[step[u] for step in paths] for u in range(users)]
    moves = sum(1 for p in per_user for a, b in itertools.pairwise(p) if a != b)
    # Users on green must stay there: green never loses share in this shift.
    on_green = [(a, b) for p in per_user for a, b in itertools.pairwise(p) if a == "green"]
    kept = sum(1 for a, b in on_green if b == a)
    monotone = sum(1 for p in per_user if _changes(p) <= 1 and p[-1] == "green")
    came_back = sum(1 for p in per_user if _returned(p))
    # At least this many moves: everyone goes from blue to green once.
    ideal = sum(1 for p in per_user if p[0] != p[-1])
    return {
        "users": users,
        "moves": moves,
        "ideal": ideal,
        "kept": kept / len(on_green) * 100 if on_green else float("nan"),
        "monotone": monotone / users * 100,
        "came_back": came_back,
    }


def _changes(path: list[str | None]) -> int:
    return sum(1 for a, b in itertools.pairwise(path) if a != b)


def _returned(path: list[str | None]) -> bool:
    left: set[str | None] = set()
    for a, b in itertools.pairwise(path):
        if a != b:
            left.add(a)
            if b in left:
                return True
    return False


def _report(
    requests: int,
    users: int,
    steps: list[int],
    shares: dict[str, dict[str, float]],
    prism: dict[str, float],
    manual: dict[str, float],
) -> str:
    def error(observed: dict[str, float]) -> float:
        return max(abs(observed[c] - DECLARED.get(c, 0)) for c in COLORS) + observed["failed"]

    rows: list[list[object]] = [["declared", *(float(DECLARED[c]) for c in COLORS), "", ""]]
    rows += [[name, *(s[c] for c in COLORS), error(s), s["failed"]] for name, s in shares.items()]
    names = list(shares)
    sticky_ratio = ratio(error(shares[names[0]]), error(shares[names[1]]))
    stick_rows = [
        [
            label,
            r["moves"],
            r["ideal"],
            ratio(r["moves"], r["ideal"]),
            r["came_back"],
            r["kept"],
            r["monotone"],
        ]
        for label, r in (
            ("**Prism** (sticky buckets)", prism),
            ("manual (consistent hash)", manual),
        )
    ]
    headline = (
        f"**Ratio**: sticky split error, Prism / consistent hash = {sticky_ratio}; color "
        f"changes per necessary change through the shift: Prism "
        f"{ratio(prism['moves'], prism['ideal'])}, consistent hash "
        f"{ratio(manual['moves'], manual['ideal'])}.\n\n"
    )
    return (
        headline
        + f"**Accuracy**: {requests:,} requests, each from a distinct user where stickiness "
        "applies, weights blue 50 / green 30 / red 20. Shares in % of requests; error = "
        "largest gap between a declared and an observed share, in percentage points.\n\n"
        + table(["", "blue %", "green %", "red %", "max error (pp)", "failed %"], rows)
        + f"\nSticky split error, Prism / consistent hash: {sticky_ratio}. (Weighted "
        "roundrobin is exact by construction, but cannot keep a user on a version; "
        "`rand(100)` is as accurate as a fair coin allows.)\n\n"
        f"**Stickiness**: {users:,} users, shift blue -> green in steps "
        f"({'/'.join(str(s) for s in steps)} % green), one request per user per step.\n\n"
        + table(
            [
                "",
                "color changes",
                "minimum needed",
                "changes / minimum",
                "users who came back to a color they left",
                "green users kept green, %",
                "users that moved once, blue -> green, %",
            ],
            stick_rows,
        )
        + "\nRatio, changes / minimum: Prism "
        + ratio(prism["moves"], prism["ideal"])
        + " vs manual "
        + ratio(manual["moves"], manual["ideal"])
        + ".\n"
    )
