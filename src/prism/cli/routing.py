"""Routing commands: ``shift``, ``pin``, ``unpin``, ``pins`` and ``server add|remove``."""

from __future__ import annotations

import click

from prism.cli.common import Ctx, handles_errors, json_option, pass_ctx, path
from prism.cli.output import echo_json
from prism.errors import InvalidInput

__all__ = ["fmt_weights", "parse_weights", "pin", "pins", "server", "shift", "unpin"]


def parse_weights(items: tuple[str, ...]) -> dict[str, int]:
    """``blue=70 green=20 red=10`` -> {"blue": 70, ...}; the server checks names and sum."""
    weights: dict[str, int] = {}
    for item in items:
        color, sep, number = item.partition("=")
        if not sep or not number.strip().isdigit() or not number.isascii():
            raise InvalidInput(
                f"expected COLOR=WEIGHT, got {item[:64]!r}", hint="e.g. blue=70 green=20 red=10"
            )
        if color in weights:
            raise InvalidInput(f"color {color[:64]!r} given twice")
        weights[color] = int(number)
    if not weights:
        raise InvalidInput("no weights given", hint="e.g. prism shift shop blue=70 green=30")
    return weights


@click.command()
@click.argument("app")
@click.argument("weights", nargs=-1, required=True)
@click.option("--reason", help="why (kept in the audit log)")
@click.option("--no-smoke", is_flag=True, help="skip the app's smoke check")
@json_option
@pass_ctx
@handles_errors
def shift(
    ctx: Ctx, app: str, weights: tuple[str, ...], reason: str | None, no_smoke: bool, as_json: bool
) -> None:
    """Split APP's traffic over colors: prism shift shop blue=70 green=20 red=10."""
    body = {"weights": parse_weights(weights), "reason": reason, "smoke": not no_smoke}
    answer = ctx.call("PUT", f"/apps/{path(app)}/weights", body)
    if as_json:
        echo_json(answer)
    elif not answer["changed"]:
        click.echo(f"{app}: weights already {fmt_weights(answer['weights'])}")
    else:
        click.echo(
            f"{app}: {fmt_weights(answer['previous'])} -> {fmt_weights(answer['weights'])}"
            f"  ({answer['moved_buckets']} of 100 buckets moved, {answer['ms']} ms)"
        )


def fmt_weights(weights: dict[str, int]) -> str:
    return " ".join(f"{c}={w}" for c, w in sorted(weights.items()))


@click.command()
@click.argument("app")
@click.argument("key")
@click.option("--to", "to", required=True, help="the color to pin KEY to")
@click.option("--rule", help="pin rule (default: the app's first)")
@click.option("--reason", help="why (kept in the audit log)")
@json_option
@pass_ctx
@handles_errors
def pin(
    ctx: Ctx, app: str, key: str, to: str, rule: str | None, reason: str | None, as_json: bool
) -> None:
    """Pin KEY (a tenant, user or network) of APP to a color; pins win over weights."""
    body = {"color": to, "rule": rule, "reason": reason}
    answer = ctx.call("PUT", f"/apps/{path(app)}/pins/{path(key)}", body)
    if as_json:
        echo_json(answer)
    else:
        state = "pinned" if answer["changed"] else "already pinned"
        click.echo(f"{app}: {answer['key']} {state} to {answer['color']} (rule {answer['rule']})")


@click.command()
@click.argument("app")
@click.argument("key")
@click.option("--rule", help="pin rule (default: the app's first)")
@json_option
@pass_ctx
@handles_errors
def unpin(ctx: Ctx, app: str, key: str, rule: str | None, as_json: bool) -> None:
    """Remove KEY's pin; it returns to weighted routing."""
    query = f"?rule={path(rule)}" if rule else ""
    answer = ctx.call("DELETE", f"/apps/{path(app)}/pins/{path(key)}{query}")
    if as_json:
        echo_json(answer)
    else:
        click.echo(f"{app}: {answer['key']} unpinned (rule {answer['rule']})")


@click.command()
@click.argument("app")
@json_option
@pass_ctx
@handles_errors
def pins(ctx: Ctx, app: str, as_json: bool) -> None:
    """List APP's pins."""
    answer = ctx.call("GET", f"/apps/{path(app)}/pins")
    if as_json:
        echo_json(answer)
    elif not answer:
        click.echo(f"{app}: no pins")
    else:
        for p in answer:
            click.echo(f"{p['rule']:<12} {p['source']:<8} {p['key']:<40} -> {p['color']}")


@click.group()
def server() -> None:
    """Add and remove servers at runtime (no reload)."""


@server.command("add")
@click.argument("app")
@click.argument("color")
@click.argument("address")
@click.option("--name", help="server name (default: the next free sN)")
@click.option("--reason", help="why (kept in the audit log)")
@json_option
@pass_ctx
@handles_errors
def server_add(
    ctx: Ctx,
    app: str,
    color: str,
    address: str,
    name: str | None,
    reason: str | None,
    as_json: bool,
) -> None:
    """Add HOST:PORT to COLOR of APP; it takes traffic only after passing its checks."""
    body = {"address": address, "name": name, "reason": reason}
    answer = ctx.call("POST", f"/apps/{path(app)}/colors/{path(color)}/servers", body)
    if as_json:
        echo_json(answer)
    else:
        click.echo(f"{app}/{color}: added {answer['server']} {address} ({answer['mode']})")


@server.command("remove")
@click.argument("app")
@click.argument("color")
@click.argument("name")
@json_option
@pass_ctx
@handles_errors
def server_remove(ctx: Ctx, app: str, color: str, name: str, as_json: bool) -> None:
    """Drain server NAME of COLOR until idle, then remove it."""
    url = f"/apps/{path(app)}/colors/{path(color)}/servers/{path(name)}"
    answer = ctx.call("DELETE", url)
    if as_json:
        echo_json(answer)
    else:
        click.echo(f"{app}/{color}: removed {answer['server']} ({answer['mode']})")
