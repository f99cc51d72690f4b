"""``prism``: the command line. Commands that call the API are synchronous, over the
standard library's sockets (:mod:`prism.cli.client`), so a command starts in about a
tenth of a second; the daemons (serve, agent, demo) run their async code through
``asyncio.run``. Every error leaves through :func:`prism.cli.common.handles_errors`,
the one place that maps :class:`PrismError` to a message and an exit code.
"""

from __future__ import annotations

from pathlib import Path

import click

from prism import __version__
from prism.cli.certs import cert, certs
from prism.cli.common import (
    Ctx,
    handles_errors,
    json_option,
    load_yaml_file,
    naming_file,
    pass_ctx,
    path,
)
from prism.cli.daemons import agent, demo, serve
from prism.cli.dns import dns_weights
from prism.cli.nodes import nodes
from prism.cli.output import (
    echo_json,
    format_history,
    format_status,
)
from prism.cli.registrations import deregister, register, registrations
from prism.cli.releases import release
from prism.cli.routing import fmt_weights, pin, pins, server, shift, unpin
from prism.cli.tokens import token

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="prism")
@click.option("--url", envvar="PRISM_URL", help="Prism server URL [env PRISM_URL]")
@click.option("--token", envvar="PRISM_TOKEN", help="API bearer token [env PRISM_TOKEN]")
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False),
    envvar="PRISM_STATE_DIR",
    help="state directory [env PRISM_STATE_DIR; default ~/.local/state/prism]",
)
@click.option(
    "--cacert",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="PRISM_CACERT",
    help="CA certificate to verify an https:// server with [env PRISM_CACERT]",
)
@click.pass_context
def cli(
    ctx: click.Context,
    url: str | None,
    token: str | None,
    state_dir: Path | None,
    cacert: Path | None,
) -> None:
    """Prism: safe releases on HAProxy — blue/green, canaries, rainbow deployments."""
    ctx.obj = Ctx(url, token, state_dir, cacert)


@cli.command()
@json_option
@click.argument("app", required=False)
@pass_ctx
@handles_errors
def status(ctx: Ctx, app: str | None, as_json: bool) -> None:
    """Show apps: active color, colors, servers' exact health, last release."""
    answer = ctx.call("GET", f"/apps/{app}" if app else "/apps")
    apps = [answer] if app else answer
    echo_json(answer) if as_json else click.echo(format_status(apps))


@cli.command()
@json_option
@pass_ctx
@handles_errors
def health(ctx: Ctx, as_json: bool) -> None:
    """Show whether HAProxy runs and desired state is applied."""
    answer = ctx.call("GET", "/health")
    if as_json:
        echo_json(answer)
        return
    h = answer["haproxy"]
    revisions = (
        f"revision {answer['desired_revision']} desired, {answer['applied_revision']} applied"
    )
    if h.get("mode") == "fleet":
        head = (
            f"{answer['status']}: fleet of {len(h['live'])} live node(s)"
            + (f", lost: {', '.join(h['lost'])}" if h["lost"] else "")
            + f"; this control plane is the {answer.get('role', 'leader')}; {revisions}"
            + " (lowest of the nodes)"
        )
    else:
        head = (
            f"{answer['status']}: HAProxy {h['version']} "
            + (
                f"running (pid {h['pid']}, {h['restarts']} restarts)"
                if h["running"]
                else "NOT running"
            )
            + f"; {revisions}\nstats: {h['admin_url']}  metrics: {h['metrics_url']}"
        )
    click.echo(head + (f"\nlast error: {answer['last_error']}" if answer["last_error"] else ""))


@cli.command()
@click.option(
    "-f", "--file", "file", required=True, type=click.Path(path_type=Path, dir_okay=False)
)
@click.option("--reason", help="why (kept in the audit log)")
@json_option
@pass_ctx
@handles_errors
def apply(ctx: Ctx, file: Path, reason: str | None, as_json: bool) -> None:
    """Make the desired state what FILE (prism.yaml) declares."""
    # The server validates the spec (importing the model here would cost this command
    # a third of a second); its refusal names the field, and here the file.
    data = load_yaml_file(file)
    body = {"spec": data if data is not None else {}, "reason": reason}
    with naming_file(file):
        answer = ctx.call("PUT", "/config", body)
    if as_json:
        echo_json(answer)
        return
    changes = answer["changes"]
    if answer["mode"] == "none":
        click.echo(f"no changes (revision {answer['revision']})")
        return
    summary = "; ".join(f"{k}: {', '.join(v)}" for k, v in changes.items() if v)
    click.echo(f"applied revision {answer['revision']} by {answer['mode']}: {summary}")


@cli.command()
@click.option("--format", "fmt", type=click.Choice(["yaml", "json"]), default="yaml")
@pass_ctx
@handles_errors
def config(ctx: Ctx, fmt: str) -> None:
    """Print the desired spec, in the form `prism apply -f` takes."""
    answer = ctx.call("GET", "/config")
    if fmt == "json":
        echo_json(answer["spec"])
    else:
        import yaml

        click.echo(yaml.safe_dump(answer["spec"], sort_keys=False), nl=False)


@cli.command()
@click.argument("app")
@click.option("--reason", help="why (kept in the audit log)")
@click.option("--no-smoke", is_flag=True, help="skip the app's smoke check")
@json_option
@pass_ctx
@handles_errors
def rollback(ctx: Ctx, app: str, reason: str | None, no_smoke: bool, as_json: bool) -> None:
    """Return APP to the weights before its last change, through the same gates."""
    body = {"reason": reason, "smoke": not no_smoke}
    answer = ctx.call("POST", f"/apps/{path(app)}/rollback", body)
    if as_json:
        echo_json(answer)
    else:
        click.echo(
            f"{app}: {fmt_weights(answer['previous'])} -> {fmt_weights(answer['weights'])}"
            f" in {answer['ms']} ms; {answer['drain']}"
        )


@cli.command()
@click.argument("app", required=False)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@json_option
@pass_ctx
@handles_errors
def history(ctx: Ctx, app: str | None, limit: int, as_json: bool) -> None:
    """Show the audit log (who, when, what, why), newest first."""
    url = f"/apps/{path(app)}/history" if app else "/history"
    answer = ctx.call("GET", f"{url}?limit={limit}")
    echo_json(answer) if as_json else click.echo(format_history(answer))


for command in (
    release,
    shift,
    pin,
    unpin,
    pins,
    server,
    register,
    deregister,
    registrations,
    nodes,
    dns_weights,
    cert,
    certs,
    token,
    serve,
    agent,
    demo,
):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="prism")


if __name__ == "__main__":  # pragma: no cover
    main()
