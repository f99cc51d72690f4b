"""Human-readable renderings of API answers (``--json`` prints the answers as they are)."""

from __future__ import annotations

import json
import time
from typing import Any

import click

__all__ = [
    "TERMINAL_PHASES",
    "echo_json",
    "format_history",
    "format_progress",
    "format_release",
    "format_status",
]

TERMINAL_PHASES = frozenset({"completed", "rolled_back", "refused", "failed"})


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def _registered(server: dict[str, Any]) -> str:
    """`` [registered, 7.5 s left]`` for a server that registered itself."""
    if server.get("source") != "registration":
        return ""
    left = server.get("ttl_left")
    return " [registered, " + ("expired" if left is None else f"{left:g} s left") + "]"


def _health(server: dict[str, Any]) -> str:
    """A server's status; in a fleet, on how many nodes it is UP and what the others see."""
    nodes: dict[str, dict[str, Any]] = server.get("nodes") or {}
    if not nodes:
        return str(server["status"])
    up = sorted(n for n, r in nodes.items() if r["status"] == "UP")
    others = [f"{r['status']} on {n}" for n, r in sorted(nodes.items()) if r["status"] != "UP"]
    text = f"UP on {len(up)}/{len(nodes)} nodes"
    return text + (f" ({', '.join(others)})" if others else "")


def _balance(server: dict[str, Any]) -> str:
    """`` weight 40% — slow: 730 ms vs 95 ms median``, a tripped breaker, a warm-up."""
    nodes: dict[str, dict[str, Any]] = server.get("nodes") or {}
    text = ""
    weights = {n: r.get("weight", 100) for n, r in sorted(nodes.items())}
    if nodes and len(set(weights.values())) > 1:
        text += " weight " + ", ".join(f"{w}% on {n}" for n, w in weights.items() if w != 100)
    elif server.get("weight", 100) != 100:
        text += f" weight {server['weight']}%"
    if server.get("slow"):
        text += f" — {server['slow']}"
    if server.get("circuit"):
        text += f" — circuit tripped: {server['circuit']}"
    if server.get("warming") is not None:
        text += f" — warming up, {server['warming']}%"
    if server.get("trips"):
        text += f" ({server['trips']} circuit trips)"
    return text


def format_status(apps: list[dict[str, Any]]) -> str:
    if not apps:
        return "no apps yet: describe them in prism.yaml and run `prism apply -f prism.yaml`"
    blocks = []
    for app in apps:
        where = f"bind {app['bind']}" if app["bind"] else f"{app['listener']} host {app['host']}"
        weights = " ".join(f"{c}={w}" for c, w in sorted(app["weights"].items()))
        previous = app.get("previous")
        sticky = app["stickiness"]
        lines = [
            f"{app['name']}  ({where})  weights: {weights}"
            + (
                "  previous: " + " ".join(f"{c}={w}" for c, w in sorted(previous.items()))
                if previous
                else ""
            )
            + f"  stable: {app['stable']}"
            + f"  revision {app['desired_revision']} (applied {app['applied_revision']})",
            "  buckets: "
            + (
                "random per request"
                if sticky["source"] == "none"
                else f"sticky by {sticky['source']} {sticky['name']}"
            ),
        ]
        lines.append(
            f"  {'':1} {'COLOR':<12} {'VERSION':<16} {'WEIGHT':>6}  {'BUCKETS':<16} SERVERS"
        )
        for color in app["colors"]:
            mark = "*" if color["active"] else " "
            servers = ", ".join(
                f"{s['name']} {s['address']} {_health(s)}"
                + _balance(s)
                + (f" ({s['in_use']} in use)" if s["in_use"] else "")
                + _registered(s)
                for s in color["servers"]
            )
            buckets = ",".join(color.get("buckets", [])) or "-"
            lines.append(
                f"  {mark} {color['name']:<12} {color['version']:<16} {color['weight']:>5}%  "
                f"{buckets:<16} " + (servers or "(no servers)")
            )
        for color in app["colors"]:
            if color.get("requests"):
                lines.append(f"  request log, {color['name']}: {_logged(color['requests'])}")
        for p in app.get("pins", []):
            lines.append(f"  pin  {p['rule']}: {p['source']} {p['key']} -> {p['color']}")
        tls = app.get("tls")
        for seen in (tls or {}).get("serving") or []:
            warning = f"  WARNING: {seen['warning']}" if seen.get("warning") else ""
            lines.append(
                f"  tls  {seen['path']} {seen.get('subject', '')} serial {seen.get('serial', '')}"
                f" until {seen.get('not_after', '?')}{warning}"
            )
        release = app.get("release")
        if release:
            lines.append("  last " + format_release(release, brief=True))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def format_release(record: dict[str, Any], *, brief: bool = False) -> str:
    head = (
        f"{record['kind']}: {record['from_color']} -> {record['to_color']}  "
        f"[{record['phase']}]  by {record['actor']} at {_when(record['started_at'])}"
    )
    if record.get("reason"):
        head += f"  ({record['reason']})"
    if brief:
        last = record["steps"][-1]["message"] if record["steps"] else ""
        return head + (f"\n    {last}" if last else "")
    lines = [head]
    for step in record["steps"]:
        mark = "ok " if step["ok"] else "FAIL"
        lines.append(f"  {mark} {step['name']:<7} {step['message']}")
    return "\n".join(lines)


def _plan_steps(plan: dict[str, Any]) -> list[str]:
    out = []
    for step in plan["steps"]:
        if "weight" in step:
            out.append(f"{step['weight']}%")
        elif "pause" in step:
            pause = step["pause"]
            out.append("pause(manual)" if pause == "manual" else f"pause({pause / 1000:g}s)")
        else:
            out.append("analysis")
    return out


def _logged(log: dict[str, Any]) -> str:
    """A window's request log: counts, then p50/p95/p99 (or "-" without requests)."""

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:g} ms"

    sampled = f" (1 in {log['every']} logged)" if log.get("every", 1) > 1 else ""
    return (
        f"{log['requests']} requests, {log['errors_5xx']} 5xx{sampled}; "
        f"p50 {ms(log['p50_ms'])}, p95 {ms(log['p95_ms'])}, p99 {ms(log['p99_ms'])}"
    )


def format_progress(record: dict[str, Any]) -> str:
    """A release as `prism release status` shows it: phase, step, readings, time left."""
    plan = record["plan"]
    steps = _plan_steps(plan)
    position = min(record["step"], len(steps))
    marked = [f"[{s}]" if i == position else s for i, s in enumerate(steps)]
    lines = [
        f"{record['app']}: release of {record['to_color']} (from {record['from_color']})  "
        f"[{record['phase']}]  by {record['actor']} at {_when(record['started_at'])}",
        "  plan: " + " -> ".join(marked) + ("  (done)" if position >= len(steps) else ""),
    ]
    last_weights = next(
        (e["readings"]["weights"] for e in reversed(record["steps"]) if e["name"] == "weight"),
        record["initial_weights"],
    )
    lines.append(
        "  weights: "
        + " ".join(f"{c}={w}" for c, w in sorted(last_weights.items()))
        + "  (before: "
        + " ".join(f"{c}={w}" for c, w in sorted(record["initial_weights"].items()))
        + ")"
    )
    if record["phase"] in ("running", "holding") and position < len(steps):
        step = plan["steps"][position]
        if "pause" in step and step["pause"] != "manual":
            left = record["step_started_at"] + step["pause"] / 1000 - time.time()
            lines.append(f"  time left in this pause: {max(0.0, left):.1f}s")
    analysis = record["analysis"]
    lines.append(
        f"  gates: every {record['to_color']} server exactly UP; analysis: >= "
        f"{analysis['min_requests']} requests, 5xx <= {analysis['max_5xx_ratio']:.1%}"
        + (
            f" and <= {analysis['max_5xx_ratio_vs_stable']:g}x stable"
            if analysis["max_5xx_ratio_vs_stable"]
            else ""
        )
        + (
            f", mean response <= {analysis['max_mean_response_ms']} ms"
            if analysis["max_mean_response_ms"]
            else ""
        )
        + (
            f" and <= {analysis['max_response_vs_stable']:g}x stable"
            if analysis["max_response_vs_stable"]
            else ""
        )
        + "".join(
            f", {q} <= {analysis[f'max_{q}_response_ms']} ms"
            for q in ("p50", "p95", "p99")
            if analysis.get(f"max_{q}_response_ms")
        )
        + (
            f", p99 <= {analysis['max_p99_vs_stable']:g}x stable"
            if analysis.get("max_p99_vs_stable")
            else ""
        )
    )
    if record.get("verdict"):
        lines.append(
            f"  last analysis: {record['verdict']['outcome']}: {record['verdict']['message']}"
        )
        readings = record["verdict"].get("readings") or {}
        for color, key in ((record["to_color"], "log"), (record["from_color"], "baseline_log")):
            if readings.get(key):
                lines.append(f"  request log, {color}: {_logged(readings[key])}")
        judged = readings.get("judge")
        if judged:
            score = "n/a" if judged["score"] is None else f"{judged['score']:.0f}"
            parts = [
                f"{name} {m['outcome']}" + (f" (p={m['p']:.2g})" if m.get("p") is not None else "")
                for name, m in judged["metrics"].items()
            ]
            lines.append(f"  judge score: {score} ({', '.join(parts)})")
    budget = record.get("budget")
    if budget and record["phase"] in ("running", "waiting", "holding", "paused"):
        lines.append(
            f"  readings this step: {budget['failures']} failed, "
            f"{budget['inconclusive']} inconclusive, {budget['errors']} missing in a row"
            + (f"; holding ({record['held']})" if record.get("held") else "")
        )
    for entry in record["steps"][-6:]:
        mark = "ok " if entry["ok"] else "!! "
        lines.append(f"  {mark} {_when(entry['at'])} {entry['name']:<9} {entry['message']}")
    return "\n".join(lines)


def format_history(records: list[dict[str, Any]]) -> str:
    if not records:
        return "no history yet"
    lines = []
    for r in records:
        detail = r["detail"]
        what = ""
        if "to_weights" in detail and "from_weights" in detail:
            what = (
                " ".join(f"{c}={w}" for c, w in sorted(detail["from_weights"].items()))
                + " -> "
                + " ".join(f"{c}={w}" for c, w in sorted(detail["to_weights"].items()))
            )
        elif "server" in detail and "to" in detail:
            what = f"{detail.get('color', '')}/{detail['server']} weight {detail['from']}% -> "
            what += f"{detail['to']}%"
        elif "server" in detail and "trips" in detail:
            what = f"{detail.get('color', '')}/{detail['server']} {detail['trips']} trip(s)"
        elif "from" in detail and "to" in detail:
            what = f"{detail['from']} -> {detail['to']}"
        elif "key" in detail and "rule" in detail:
            what = f"{detail['rule']}: {detail['key']} -> {detail.get('color', '-')}"
        elif "server" in detail:
            what = f"{detail.get('color', '')}/{detail['server']} {detail.get('address', '')}"
        elif any(detail.get(k) for k in ("added", "removed", "changed")):
            what = " ".join(
                f"{k}: {', '.join(detail[k])}" for k in ("added", "removed", "changed") if detail[k]
            )
        if detail.get("node") and what:
            what += f" on {detail['node']}"
        step = detail.get("step")
        step = step.get("message", "") if isinstance(step, dict) else ""
        lines.append(
            f"{_when(r['at'])}  rev {r['revision']:<5} {r['actor']:<10} {r['action']:<22} "
            f"{r['app'] or '-':<12} {what}"
            + (f"  {step}" if step else "")
            + (f"  reason: {r['reason']}" if r["reason"] else "")
        )
    return "\n".join(lines)
