"""``prism release``: blue/green and progressive releases, and steering them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from prism import names
from prism.cli.common import (
    Ctx,
    handles_errors,
    json_option,
    load_yaml_file,
    naming_file,
    pass_ctx,
    path,
)
from prism.cli.output import (
    TERMINAL_PHASES,
    echo_json,
    format_history,
    format_progress,
    format_release,
)
from prism.errors import InvalidInput

__all__ = ["plan_from_flags", "release"]


class _ReleaseGroup(click.Group):
    """``prism release APP --to COLOR`` is short for ``prism release start APP --to COLOR``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["start", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_ReleaseGroup)
def release() -> None:
    """Releases: blue/green (`prism release APP --to COLOR`) and progressive plans."""


@release.command("start")
@click.argument("app")
@click.option("--to", "to", help="the color to release")
@click.option("--steps", help="target weights, e.g. 5,25,50,100 (default: 100 at once)")
@click.option("--interval", help="pause between steps, analysed, e.g. 30s (default 30s)")
@click.option("--manual", is_flag=True, help="wait for `promote` between steps")
@click.option(
    "-f", "--file", "file", type=click.Path(path_type=Path, dir_okay=False), help="plan YAML"
)
@click.option("--webhook", "webhooks", multiple=True, help="URL to POST release events to")
@click.option("--confirm", "confirm_url", help="URL that must answer 2xx before each step")
@click.option("--reason", help="why (kept in the audit log)")
@click.option("--no-smoke", is_flag=True, help="skip the app's smoke check")
@click.option("--drain-timeout", help="how long to wait for emptied colors to drain, e.g. 30s")
@click.option("--wait/--no-wait", default=None, help="wait until it ends (default: for blue/green)")
@json_option
@pass_ctx
@handles_errors
def release_start(
    ctx: Ctx,
    app: str,
    to: str | None,
    steps: str | None,
    interval: str | None,
    manual: bool,
    file: Path | None,
    webhooks: tuple[str, ...],
    confirm_url: str | None,
    reason: str | None,
    no_smoke: bool,
    drain_timeout: str | None,
    wait: bool | None,
    as_json: bool,
) -> None:
    """Release a color of APP: at once, in steps (--steps 5,25,50,100), or by a plan file."""
    if file is not None:
        data = load_yaml_file(file)
        if not isinstance(data, dict):
            raise InvalidInput(f"{file} must hold a plan mapping (to:, steps:, ...)")
        if to is not None:
            data["to"] = to
    else:
        if to is None:
            raise InvalidInput("say which color to release: --to COLOR (or -f plan.yaml)")
        data = plan_from_flags(to, steps, interval, manual=manual)
    if webhooks:
        data["webhooks"] = [{"url": url} for url in webhooks]
    if confirm_url:
        data["confirm"] = {"url": confirm_url}
    if no_smoke:
        data["smoke"] = False
    if drain_timeout is not None:
        data["drain_timeout_ms"] = drain_timeout
    if wait is None:
        wait = file is None and steps is None
    # The server validates the plan (the model is the API's; importing it here would
    # cost this command a third of a second): its refusal names the field.
    body = {"plan": data, "reason": reason, "wait": wait}
    with naming_file(file):
        answer = ctx.call("POST", f"/apps/{path(app)}/releases", body)
    echo_json(answer) if as_json else click.echo(format_release(answer))


def plan_from_flags(
    to: str, steps: str | None, interval: str | None, *, manual: bool = False
) -> dict[str, Any]:
    """``--steps 5,25,50,100 --interval 30s`` as plan data: weight, pause, weight, ... .

    With ``manual`` every pause waits for promote instead of a timer. The server
    checks the weights and the interval; only what cannot be sent is refused here.
    """
    if steps is None:
        weights = [100]
    else:
        try:
            weights = [int(part) for part in steps.split(",")]
        except ValueError:
            raise InvalidInput(
                "--steps is a comma-separated list of weights, e.g. 5,25,50,100"
            ) from None
    pause = "manual" if manual else (interval or "30s")
    plan_steps: list[dict[str, Any]] = []
    for index, weight in enumerate(weights):
        plan_steps.append({"weight": weight})
        if index < len(weights) - 1:
            plan_steps.append({"pause": pause})
    return {"to": names.check(names.NAME, to, "color"), "steps": plan_steps}


@release.command("status")
@click.argument("app")
@click.option("-w", "--watch", is_flag=True, help="refresh every second until it ends")
@json_option
@pass_ctx
@handles_errors
def release_status(ctx: Ctx, app: str, watch: bool, as_json: bool) -> None:
    """Phase, step, weights, gate readings and time left of APP's releases."""
    import time as _time

    while True:
        answer = ctx.call("GET", f"/apps/{path(app)}/releases")
        if as_json:
            echo_json(answer)
            return
        text = "\n\n".join(format_progress(r) for r in answer) or f"{app}: no releases yet"
        if not watch:
            click.echo(text)
            return
        click.clear()
        click.echo(text)
        if not any(r["phase"] not in TERMINAL_PHASES for r in answer):
            return
        _time.sleep(1)


def _steer(ctx: Ctx, app: str, action: str, body: dict[str, Any], as_json: bool) -> None:
    answer = ctx.call("POST", f"/apps/{path(app)}/releases/{action}", body)
    echo_json(answer) if as_json else click.echo(format_progress(answer))


color_option = click.option("--color", help="which release, when several are active")


@release.command("promote")
@click.argument("app")
@color_option
@click.option("--full", is_flag=True, help="go straight to the final weight")
@json_option
@pass_ctx
@handles_errors
def release_promote(ctx: Ctx, app: str, color: str | None, full: bool, as_json: bool) -> None:
    """Skip the current pause (or hold) of APP's release."""
    _steer(ctx, app, "promote", {"color": color, "full": full}, as_json)


@release.command("pause")
@click.argument("app")
@color_option
@json_option
@pass_ctx
@handles_errors
def release_pause(ctx: Ctx, app: str, color: str | None, as_json: bool) -> None:
    """Pause APP's release where it is (its timers stop)."""
    _steer(ctx, app, "pause", {"color": color}, as_json)


@release.command("resume")
@click.argument("app")
@color_option
@json_option
@pass_ctx
@handles_errors
def release_resume(ctx: Ctx, app: str, color: str | None, as_json: bool) -> None:
    """Resume a paused release of APP."""
    _steer(ctx, app, "resume", {"color": color}, as_json)


@release.command("abort")
@click.argument("app")
@color_option
@click.option("--reason", help="why (kept in the audit log)")
@json_option
@pass_ctx
@handles_errors
def release_abort(ctx: Ctx, app: str, color: str | None, reason: str | None, as_json: bool) -> None:
    """Abort APP's release: its color returns to its share before the release."""
    _steer(ctx, app, "abort", {"color": color, "reason": reason}, as_json)


@release.command("history")
@click.argument("app")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@json_option
@pass_ctx
@handles_errors
def release_history(ctx: Ctx, app: str, limit: int, as_json: bool) -> None:
    """Release events of APP (started, steps, rollbacks, completions), newest first."""
    answer = ctx.call("GET", f"/apps/{path(app)}/releases/history?limit={limit}")
    echo_json(answer) if as_json else click.echo(format_history(answer))
