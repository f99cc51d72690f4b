"""``prism``: the command line. Every command is a thin sync edge over async code
(``asyncio.run``); every error leaves through :func:`_fail`, the one place that
maps :class:`PrismError` to a message and an exit code.
"""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn, ParamSpec, TypeVar

import click
import yaml

from prism import __version__
from prism.cli.client import ApiClient, locate
from prism.cli.output import (
    TERMINAL_PHASES,
    echo_json,
    format_history,
    format_progress,
    format_release,
    format_status,
)
from prism.errors import InvalidInput, PrismError
from prism.model import Spec, parse_model

__all__ = ["main"]

P = ParamSpec("P")
T = TypeVar("T")


def _fail(error: PrismError) -> NoReturn:
    click.echo(f"error: {error.message}", err=True)
    if error.hint:
        click.echo(f"  hint: {error.hint}", err=True)
    for problem in (
        error.detail.get("errors", [])[1:] if len(error.detail.get("errors", [])) > 1 else []
    ):
        click.echo(f"  - {problem}", err=True)
    sys.exit(error.exit_code)


def handles_errors(fn: Callable[P, T]) -> Callable[P, T]:
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except PrismError as exc:
            _fail(exc)

    return wrapper


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


class Ctx:
    def __init__(self, url: str | None, token: str | None, state_dir: Path | None) -> None:
        self.url, self.token, self.state_dir = url, token, state_dir

    def client(self) -> ApiClient:
        return ApiClient(locate(self.url, self.token, self.state_dir))

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        async with self.client() as api:
            return await api.request(method, path, body)


pass_ctx = click.make_pass_decorator(Ctx)
json_option = click.option("--json", "as_json", is_flag=True, help="print the API's JSON answer")


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
@click.pass_context
def cli(ctx: click.Context, url: str | None, token: str | None, state_dir: Path | None) -> None:
    """Prism: safe releases on HAProxy — blue/green, canaries, rainbow deployments."""
    ctx.obj = Ctx(url, token, state_dir)


@cli.command()
@json_option
@click.argument("app", required=False)
@pass_ctx
@handles_errors
def status(ctx: Ctx, app: str | None, as_json: bool) -> None:
    """Show apps: active color, colors, servers' exact health, last release."""
    answer = run(ctx.call("GET", f"/apps/{app}" if app else "/apps"))
    apps = [answer] if app else answer
    echo_json(answer) if as_json else click.echo(format_status(apps))


@cli.command()
@json_option
@pass_ctx
@handles_errors
def health(ctx: Ctx, as_json: bool) -> None:
    """Show whether HAProxy runs and desired state is applied."""
    answer = run(ctx.call("GET", "/health"))
    if as_json:
        echo_json(answer)
        return
    h = answer["haproxy"]
    click.echo(
        f"{answer['status']}: HAProxy {h['version']} "
        + (f"running (pid {h['pid']}, {h['restarts']} restarts)" if h["running"] else "NOT running")
        + f"; revision {answer['desired_revision']} desired, {answer['applied_revision']} applied"
        + f"\nstats: {h['admin_url']}  metrics: {h['metrics_url']}"
        + (f"\nlast error: {answer['last_error']}" if answer["last_error"] else "")
    )


def load_yaml_file(path: Path) -> Any:
    """Read a YAML file with clear errors (size, encoding, syntax)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from exc
    if len(raw) > 10_000_000:
        raise InvalidInput(f"{path} is larger than 10 MB")
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path} is not valid YAML: {str(exc)[:300]}") from None
    return data


def load_spec_file(path: Path) -> Spec:
    """Read and validate a prism.yaml; the API validates again, identically."""
    data = load_yaml_file(path)
    return parse_model(Spec, data if data is not None else {}, source=str(path))


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
    spec = load_spec_file(file)
    body = {"spec": spec.model_dump(mode="json"), "reason": reason}
    answer = run(ctx.call("PUT", "/config", body))
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
    answer = run(ctx.call("GET", "/config"))
    if fmt == "json":
        echo_json(answer["spec"])
    else:
        click.echo(yaml.safe_dump(answer["spec"], sort_keys=False), nl=False)


class _ReleaseGroup(click.Group):
    """``prism release APP --to COLOR`` is short for ``prism release start APP --to COLOR``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["start", *args]
        return super().parse_args(ctx, args)


@cli.group(cls=_ReleaseGroup)
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
    from prism.rollout import ReleasePlan, plan_from_flags

    if file is not None:
        data = load_yaml_file(file)
        if not isinstance(data, dict):
            raise InvalidInput(f"{file} must hold a plan mapping (to:, steps:, ...)")
        if to is not None:
            data["to"] = to
    else:
        if to is None:
            raise InvalidInput("say which color to release: --to COLOR (or -f plan.yaml)")
        try:
            data = plan_from_flags(to, steps, interval, manual=manual)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
    if webhooks:
        data["webhooks"] = [{"url": url} for url in webhooks]
    if confirm_url:
        data["confirm"] = {"url": confirm_url}
    if no_smoke:
        data["smoke"] = False
    if drain_timeout is not None:
        data["drain_timeout_ms"] = drain_timeout
    plan = parse_model(ReleasePlan, data, source=str(file) if file else "release plan")
    if wait is None:
        wait = file is None and steps is None
    body = {"plan": plan.model_dump(mode="json"), "reason": reason, "wait": wait}
    answer = run(ctx.call("POST", f"/apps/{_path(app)}/releases", body))
    echo_json(answer) if as_json else click.echo(format_release(answer))


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
        answer = run(ctx.call("GET", f"/apps/{_path(app)}/releases"))
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
    answer = run(ctx.call("POST", f"/apps/{_path(app)}/releases/{action}", body))
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
    answer = run(ctx.call("GET", f"/apps/{_path(app)}/releases/history?limit={limit}"))
    echo_json(answer) if as_json else click.echo(format_history(answer))


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
    answer = run(ctx.call("POST", f"/apps/{_path(app)}/rollback", body))
    if as_json:
        echo_json(answer)
    else:
        click.echo(
            f"{app}: {_fmt_weights(answer['previous'])} -> {_fmt_weights(answer['weights'])}"
            f" in {answer['ms']} ms; {answer['drain']}"
        )


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


@cli.command()
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
    answer = run(ctx.call("PUT", f"/apps/{_path(app)}/weights", body))
    if as_json:
        echo_json(answer)
    elif not answer["changed"]:
        click.echo(f"{app}: weights already {_fmt_weights(answer['weights'])}")
    else:
        click.echo(
            f"{app}: {_fmt_weights(answer['previous'])} -> {_fmt_weights(answer['weights'])}"
            f"  ({answer['moved_buckets']} of 100 buckets moved, {answer['ms']} ms)"
        )


def _fmt_weights(weights: dict[str, int]) -> str:
    return " ".join(f"{c}={w}" for c, w in sorted(weights.items()))


@cli.command()
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
    answer = run(ctx.call("PUT", f"/apps/{_path(app)}/pins/{_path(key)}", body))
    if as_json:
        echo_json(answer)
    else:
        state = "pinned" if answer["changed"] else "already pinned"
        click.echo(f"{app}: {answer['key']} {state} to {answer['color']} (rule {answer['rule']})")


@cli.command()
@click.argument("app")
@click.argument("key")
@click.option("--rule", help="pin rule (default: the app's first)")
@json_option
@pass_ctx
@handles_errors
def unpin(ctx: Ctx, app: str, key: str, rule: str | None, as_json: bool) -> None:
    """Remove KEY's pin; it returns to weighted routing."""
    query = f"?rule={_path(rule)}" if rule else ""
    answer = run(ctx.call("DELETE", f"/apps/{_path(app)}/pins/{_path(key)}{query}"))
    if as_json:
        echo_json(answer)
    else:
        click.echo(f"{app}: {answer['key']} unpinned (rule {answer['rule']})")


@cli.command()
@click.argument("app")
@json_option
@pass_ctx
@handles_errors
def pins(ctx: Ctx, app: str, as_json: bool) -> None:
    """List APP's pins."""
    answer = run(ctx.call("GET", f"/apps/{_path(app)}/pins"))
    if as_json:
        echo_json(answer)
    elif not answer:
        click.echo(f"{app}: no pins")
    else:
        for p in answer:
            click.echo(f"{p['rule']:<12} {p['source']:<8} {p['key']:<40} -> {p['color']}")


@cli.group()
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
    answer = run(ctx.call("POST", f"/apps/{_path(app)}/colors/{_path(color)}/servers", body))
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
    path = f"/apps/{_path(app)}/colors/{_path(color)}/servers/{_path(name)}"
    answer = run(ctx.call("DELETE", path))
    if as_json:
        echo_json(answer)
    else:
        click.echo(f"{app}/{color}: removed {answer['server']} ({answer['mode']})")


@cli.command()
@click.argument("app", required=False)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@json_option
@pass_ctx
@handles_errors
def history(ctx: Ctx, app: str | None, limit: int, as_json: bool) -> None:
    """Show the audit log (who, when, what, why), newest first."""
    path = f"/apps/{_path(app)}/history" if app else "/history"
    answer = run(ctx.call("GET", f"{path}?limit={limit}"))
    echo_json(answer) if as_json else click.echo(format_history(answer))


def _path(name: str) -> str:
    """An app name as a URL path segment; the server validates it strictly."""
    from urllib.parse import quote

    return quote(name, safe="")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="API address")
@click.option("--port", default=7070, show_default=True, type=click.IntRange(1, 65535))
@click.option("--admin-port", type=click.IntRange(1, 65535), help="HAProxy stats/metrics port")
@click.option("--haproxy", "haproxy_path", envvar="PRISM_HAPROXY", help="haproxy binary")
@click.option("--stop-haproxy", is_flag=True, help="stop HAProxy when Prism exits")
@pass_ctx
@handles_errors
def serve(
    ctx: Ctx,
    host: str,
    port: int,
    admin_port: int | None,
    haproxy_path: str | None,
    stop_haproxy: bool,
) -> None:
    """Run the API, the release engine and the local HAProxy.

    HAProxy keeps serving when Prism exits (unless --stop-haproxy); the next
    `prism serve` on the same state directory adopts it.
    """
    from prism.server import ServeOptions, serve_forever
    from prism.service import ServiceOptions, default_state_dir

    state_dir = ctx.state_dir or default_state_dir()
    options = ServiceOptions(
        state_dir=state_dir,
        haproxy=haproxy_path,
        admin_port=admin_port,
        stop_haproxy_on_exit=stop_haproxy,
    )
    run(serve_forever(ServeOptions(service=options, host=host, port=port)))


@cli.command()
@click.option("--haproxy", "haproxy_path", envvar="PRISM_HAPROXY", help="haproxy binary")
@pass_ctx
@handles_errors
def demo(ctx: Ctx, haproxy_path: str | None) -> None:
    """Start HAProxy, three demo backends (blue, green, red) and Prism; Ctrl-C stops all."""
    from prism.demo.run import run_demo

    run(run_demo(ctx.state_dir, haproxy_path))


def main() -> None:
    cli(prog_name="prism")


if __name__ == "__main__":  # pragma: no cover
    main()
