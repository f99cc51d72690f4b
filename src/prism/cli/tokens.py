"""``prism token``: named API tokens with roles (create, list, revoke); admin only."""

from __future__ import annotations

import time
from typing import Any

import click

from prism.cli.common import Ctx, handles_errors, json_option, pass_ctx, path
from prism.cli.output import echo_json

__all__ = ["format_tokens", "token"]

ROLES = ("viewer", "operator", "admin")


def format_tokens(rows: list[dict[str, Any]]) -> str:
    """One line per token: name, role, when and by whom it was made."""
    if not rows:
        return "no named tokens (the state directory's token is admin)"
    lines = [f"{'NAME':<20} {'ROLE':<9} {'CREATED':<20} BY"]
    for row in rows:
        made = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(row["created"])))
        lines.append(f"{row['name']:<20} {row['role']:<9} {made:<20} {row['created_by']}")
    return "\n".join(lines)


@click.group()
def token() -> None:
    """Named API tokens with roles: viewer (read), operator (steer), admin (everything)."""


@token.command("create")
@click.option("--name", required=True, help="the token's name: the actor the audit log shows")
@click.option("--role", required=True, type=click.Choice(ROLES), help="what it may do")
@json_option
@pass_ctx
@handles_errors
def create(ctx: Ctx, name: str, role: str, as_json: bool) -> None:
    """Make a token and print its secret, once: only its hash is kept."""
    answer = ctx.call("POST", "/tokens", {"name": name, "role": role})
    if as_json:
        echo_json(answer)
        return
    click.echo(answer["secret"])
    click.echo(
        f"token {name!r} ({role}): the secret above is shown only now; keep it somewhere safe",
        err=True,
    )


@token.command("list")
@json_option
@pass_ctx
@handles_errors
def list_tokens(ctx: Ctx, as_json: bool) -> None:
    """List the named tokens (never their secrets)."""
    answer = ctx.call("GET", "/tokens")
    echo_json(answer) if as_json else click.echo(format_tokens(answer))


@token.command("revoke")
@click.argument("name")
@json_option
@pass_ctx
@handles_errors
def revoke(ctx: Ctx, name: str, as_json: bool) -> None:
    """Revoke token NAME: it is refused from its next request on."""
    answer = ctx.call("DELETE", f"/tokens/{path(name)}")
    echo_json(answer) if as_json else click.echo(f"revoked token {name} ({answer['role']})")
