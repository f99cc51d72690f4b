"""``prism nodes``: the HAProxy nodes of a fleet (or the one local node), and forgetting one."""

from __future__ import annotations

import time
from typing import Any

import click

from prism.cli.common import Ctx, handles_errors, json_option, pass_ctx, path
from prism.cli.output import echo_json

__all__ = ["format_nodes", "nodes"]


def format_nodes(rows: list[dict[str, Any]]) -> str:
    """One line per node: state, address, revision and lag, heartbeat age, HAProxy, error."""
    if not rows:
        return "no nodes yet (start `prism agent` on each HAProxy node)"
    lines = [
        f"{'NODE':<16} {'STATE':<8} {'ADDRESS':<16} {'APPLIED':>8} {'LAG':>5}  HEARTBEAT  HAPROXY"
    ]
    now = time.time()
    for row in rows:
        if row.get("state") == "lost":
            lines.append(f"{row['name']:<16} {'lost':<8} (no report: its lease expired)")
            continue
        haproxy = row.get("haproxy") or {}
        running = "running" if haproxy.get("running") else "NOT running"
        age = f"{now - float(row.get('heartbeat') or now):.1f}s ago"
        line = (
            f"{row['name']:<16} {row.get('state', ''):<8} {row.get('address', ''):<16} "
            f"{row.get('applied_revision', 0):>8} {row.get('lag', 0):>5}  {age:<9}  "
            f"{haproxy.get('version', '')} {running}"
        )
        if row.get("drift"):
            line += "  DRIFT"
        if row.get("last_error"):
            line += f"\n{'':<16} last error: {row['last_error']}"
        lines.append(line)
    return "\n".join(lines)


@click.group(invoke_without_command=True)
@json_option
@click.pass_context
def nodes(click_ctx: click.Context, as_json: bool) -> None:
    """List the HAProxy nodes: who is there, what each runs."""
    if click_ctx.invoked_subcommand is not None:
        return
    ctx: Ctx = click_ctx.find_object(Ctx)  # type: ignore[assignment]
    _list(ctx, as_json)


@handles_errors
def _list(ctx: Ctx, as_json: bool) -> None:
    answer = ctx.call("GET", "/nodes")
    echo_json(answer) if as_json else click.echo(format_nodes(answer))


@nodes.command("forget")
@click.argument("name")
@json_option
@pass_ctx
@handles_errors
def forget(ctx: Ctx, name: str, as_json: bool) -> None:
    """Forget lost node NAME: releases stop waiting for it."""
    answer = ctx.call("DELETE", f"/nodes/{path(name)}")
    echo_json(answer) if as_json else click.echo(f"forgot node {name}")
