"""Human-readable renderings of API answers (``--json`` prints the answers as they are)."""

from __future__ import annotations

import json
import time
from typing import Any

import click

__all__ = ["echo_json", "format_history", "format_release", "format_status"]


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


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
                f"{s['name']} {s['address']} {s['status']}"
                + (f" ({s['in_use']} in use)" if s["in_use"] else "")
                for s in color["servers"]
            )
            buckets = ",".join(color.get("buckets", [])) or "-"
            lines.append(
                f"  {mark} {color['name']:<12} {color['version']:<16} {color['weight']:>5}%  "
                f"{buckets:<16} " + (servers or "(no servers)")
            )
        for p in app.get("pins", []):
            lines.append(f"  pin  {p['rule']}: {p['source']} {p['key']} -> {p['color']}")
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
        step = detail.get("step", {}).get("message", "")
        lines.append(
            f"{_when(r['at'])}  rev {r['revision']:<5} {r['actor']:<10} {r['action']:<22} "
            f"{r['app'] or '-':<12} {what}"
            + (f"  {step}" if step else "")
            + (f"  reason: {r['reason']}" if r["reason"] else "")
        )
    return "\n".join(lines)
