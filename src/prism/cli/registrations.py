"""``prism register``, ``prism deregister`` and ``prism registrations``: servers that join
their color by themselves, for as long as they keep renewing."""

from __future__ import annotations

import time
from typing import Any

import click

from prism.cli.common import Ctx, handles_errors, json_option, pass_ctx, path
from prism.cli.output import echo_json
from prism.errors import GateFailed, HAProxyError, InvalidInput, PrismError, Unavailable

__all__ = ["deregister", "parse_ttl_ms", "register", "registrations"]

_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
#: errors a registrar rides out (the server is not ready yet, Prism is restarting)
_TRANSIENT = (GateFailed, HAProxyError, Unavailable)


def parse_ttl_ms(text: str) -> int:
    """``10s``, ``500ms``, ``2m`` or a number of seconds, as milliseconds."""
    for unit in ("ms", "s", "m", "h"):
        number = text.removesuffix(unit)
        if number != text and number.isdigit() and number.isascii():
            return int(number) * _UNITS[unit]
    if text.isdigit() and text.isascii():
        return int(text) * 1000
    raise InvalidInput(f"invalid --ttl {text[:32]!r}", hint="e.g. 10s, 500ms, 2m")


def _url(app: str, color: str, name: str) -> str:
    return f"/apps/{path(app)}/colors/{path(color)}/registrations/{path(name)}"


def _name_for(address: str) -> str:
    host, _, port = address.rpartition(":")
    return f"{host.lower()}_{port}"


@click.command()
@click.argument("app")
@click.argument("color")
@click.argument("address")
@click.option("--name", help="server name (default: HOST_PORT)")
@click.option("--ttl", default="10s", show_default=True, help="lease; renewed every third of it")
@click.option("--once", is_flag=True, help="register for one TTL and exit (health scripts, cron)")
@json_option
@pass_ctx
@handles_errors
def register(
    ctx: Ctx,
    app: str,
    color: str,
    address: str,
    name: str | None,
    ttl: str,
    once: bool,
    as_json: bool,
) -> None:
    """Register HOST:PORT into COLOR of APP and keep it registered until Ctrl-C (which
    deregisters it). It takes traffic only once its health checks pass."""
    ttl_ms = parse_ttl_ms(ttl)
    name = name or _name_for(address)
    body = {"address": address, "ttl": ttl_ms}
    if once:
        answer = ctx.call("PUT", _url(app, color, name), body)
        if as_json:
            echo_json(answer)
        else:
            click.echo(f"{app}/{color}: {name} {address} registered for {ttl_ms / 1000:g} s")
        return
    _keep_registered(ctx, app, color, name, body, ttl_ms / 1000, as_json)


def _keep_registered(
    ctx: Ctx, app: str, color: str, name: str, body: dict[str, Any], ttl: float, as_json: bool
) -> None:
    joined = False
    try:
        api = ctx.client()
        while True:
            began = time.monotonic()
            try:
                answer = api.request("PUT", _url(app, color, name), body)
            except _TRANSIENT as exc:
                click.echo(f"not registered yet: {exc.message}; retrying", err=True)
            else:
                if not joined:
                    joined = True
                    if as_json:
                        echo_json(answer)
                    else:
                        click.echo(
                            f"{app}/{color}: {name} {body['address']} registered "
                            f"(ttl {ttl:g} s); Ctrl-C deregisters it"
                        )
            time.sleep(max(0.0, ttl / 3 - (time.monotonic() - began)))
    finally:
        if joined:
            _leave(ctx, app, color, name)


def _leave(ctx: Ctx, app: str, color: str, name: str) -> None:
    try:
        ctx.call("DELETE", _url(app, color, name))
    except PrismError as exc:
        click.echo(f"could not deregister {name}: {exc.message}", err=True)
    else:
        click.echo(f"{app}/{color}: {name} deregistered", err=True)


@click.command()
@click.argument("app")
@click.argument("color")
@click.argument("name")
@json_option
@pass_ctx
@handles_errors
def deregister(ctx: Ctx, app: str, color: str, name: str, as_json: bool) -> None:
    """Deregister server NAME of COLOR now: it is drained and removed."""
    answer = ctx.call("DELETE", _url(app, color, name))
    echo_json(answer) if as_json else click.echo(f"{app}/{color}: {name} deregistered")


@click.command()
@click.argument("app")
@json_option
@pass_ctx
@handles_errors
def registrations(ctx: Ctx, app: str, as_json: bool) -> None:
    """List the servers registered into APP's colors and the time left on each."""
    answer = ctx.call("GET", f"/apps/{path(app)}/registrations")
    if as_json:
        echo_json(answer)
    elif not answer:
        click.echo(f"{app}: no registrations")
    else:
        for r in answer:
            left = "expired" if r["ttl_left"] is None else f"{r['ttl_left']:.1f} s left"
            click.echo(
                f"{r['color']:<12} {r['server']:<24} {r['address']:<22} {left:<14} "
                f"by {r['registered_by']}"
            )
