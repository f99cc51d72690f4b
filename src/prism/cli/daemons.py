"""The commands that run a daemon in this process: ``serve``, ``agent`` and ``demo``.

Every other command reaches Prism over HTTP; these start it. They import the
server lazily, so the other commands never pay for it at start-up.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from prism.cli.common import Ctx, handles_errors, pass_ctx, run

__all__ = ["agent", "demo", "serve"]

F = TypeVar("F", bound=Callable[..., Any])

_FILE = click.Path(path_type=Path, dir_okay=False, exists=True)


def store_options(fn: F) -> F:
    """``--store`` and etcd's TLS files and credentials."""
    for option in reversed(
        [
            click.option(
                "--store",
                "store_url",
                envvar="PRISM_STORE",
                help="etcd://HOST:PORT[,HOST:PORT...]/PREFIX for a fleet "
                "(default: the SQLite file in the state directory) [env PRISM_STORE]",
            ),
            click.option("--etcd-cacert", type=_FILE, help="CA certificate of etcd's TLS"),
            click.option("--etcd-cert", type=_FILE, help="client certificate for etcd"),
            click.option("--etcd-key", type=_FILE, help="client key for etcd"),
            click.option("--etcd-user", envvar="PRISM_ETCD_USER", help="etcd user name"),
            click.option(
                "--etcd-password", envvar="PRISM_ETCD_PASSWORD", help="etcd password [env]"
            ),
        ]
    ):
        fn = option(fn)
    return fn


def haproxy_options(fn: F) -> F:
    """The options of a process that supervises this machine's HAProxy."""
    for option in reversed(
        [
            click.option(
                "--admin-port", type=click.IntRange(1, 65535), help="HAProxy stats/metrics port"
            ),
            click.option(
                "--haproxy", "haproxy_path", envvar="PRISM_HAPROXY", help="haproxy binary"
            ),
            click.option("--stop-haproxy", is_flag=True, help="stop HAProxy when Prism exits"),
            click.option(
                "--request-log-sample",
                type=click.IntRange(0, 1000),
                help="HAProxy logs one request in N to Prism for response-time quantiles and "
                "exact counts (1: every request, 0: off) [default: as last time, else 1]",
            ),
            click.option(
                "--reconcile-interval",
                default=5.0,
                show_default=True,
                type=click.FloatRange(0.1, 3600),
                help="seconds between checks that HAProxy still holds its state",
            ),
        ]
    ):
        fn = option(fn)
    return fn


def _store(kwargs: dict[str, Any]) -> Any:
    from prism.store.url import StoreOptions

    return StoreOptions(
        url=kwargs.pop("store_url"),
        cacert=kwargs.pop("etcd_cacert"),
        cert=kwargs.pop("etcd_cert"),
        key=kwargs.pop("etcd_key"),
        username=kwargs.pop("etcd_user"),
        password=kwargs.pop("etcd_password"),
    )


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="API address")
@click.option("--port", default=7070, show_default=True, type=click.IntRange(1, 65535))
@click.option("--tls-cert", type=_FILE, help="serve the API over HTTPS with this PEM certificate")
@click.option("--tls-key", type=_FILE, help="the PEM private key of --tls-cert")
@click.option(
    "--insecure-bind",
    is_flag=True,
    help="allow plain HTTP on a non-loopback --host (something else must encrypt it)",
)
@click.option(
    "--rate-limit",
    "rate",
    default="20/s",
    show_default=True,
    help="changes per token: N/s, N/m or N/h, or 'off'",
)
@click.option(
    "--rate-burst",
    type=click.IntRange(1, 100_000),
    help="changes a token may make at once on top of the rate [default: 2 s worth]",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one object per line (time, level, logger, message, request id, ...)",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
@haproxy_options
@click.option(
    "--converge-timeout",
    default=15.0,
    show_default=True,
    type=click.FloatRange(0.5, 600),
    help="fleet: seconds every node gets to apply a change before it is reverted",
)
@click.option(
    "--sample-interval",
    default=5.0,
    show_default=True,
    type=click.FloatRange(0.2, 300),
    help="seconds between samples of HAProxy's counters (the dashboard's charts)",
)
@store_options
@pass_ctx
@handles_errors
def serve(ctx: Ctx, /, **kwargs: Any) -> None:
    """Run the API and the release engine, with the local HAProxy or a fleet's store.

    Embedded (default): HAProxy keeps serving when Prism exits (unless
    --stop-haproxy); the next `prism serve` on the same state directory adopts
    it. With --store etcd://...: a control plane of a fleet whose nodes run
    `prism agent`; several may share the store, the leader drives releases.

    The API binds to a non-loopback --host only with TLS (--tls-cert and
    --tls-key) or --insecure-bind.
    """
    from prism.errors import InvalidInput
    from prism.node.paths import default_state_dir
    from prism.serve.http import ServeOptions, parse_rate, serve_forever
    from prism.serve.lifespan import ServiceOptions
    from prism.serve.logs import configure_logging

    try:
        rate = parse_rate(kwargs["rate"], kwargs["rate_burst"])
    except ValueError as exc:
        raise InvalidInput(f"--rate-limit: {exc}") from None
    configure_logging(kwargs["log_format"], kwargs["log_level"])
    store = _store(kwargs)
    options = ServiceOptions(
        state_dir=ctx.state_dir or default_state_dir(),
        haproxy=kwargs["haproxy_path"],
        admin_port=kwargs["admin_port"],
        stop_haproxy_on_exit=kwargs["stop_haproxy"],
        request_log_sample=kwargs["request_log_sample"],
        reconcile_interval=kwargs["reconcile_interval"],
        converge_timeout=kwargs["converge_timeout"],
        sample_interval=kwargs["sample_interval"],
        store=store,
    )
    serving = ServeOptions(
        service=options,
        host=kwargs["host"],
        port=kwargs["port"],
        tls_cert=kwargs["tls_cert"],
        tls_key=kwargs["tls_key"],
        insecure_bind=kwargs["insecure_bind"],
        rate=rate,
    )
    run(serve_forever(serving))


@click.command()
@click.option("--node", required=True, help="this node's name, e.g. lb-1")
@click.option(
    "--listen-address",
    help="the address a spec bind of *:PORT or 0.0.0.0:PORT takes on this node",
)
@haproxy_options
@click.option(
    "--heartbeat",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0.05, 60),
    help="seconds between reports",
)
@click.option(
    "--lease-ttl",
    default=3.0,
    show_default=True,
    type=click.FloatRange(0.5, 600),
    help="seconds without a refresh before the fleet sees this node as lost",
)
@store_options
@pass_ctx
@handles_errors
def agent(ctx: Ctx, /, **kwargs: Any) -> None:
    """Keep this node's HAProxy in step with a fleet's desired state (needs --store etcd://).

    HAProxy starts from what is on disk first and keeps serving while etcd or
    every control plane is down; the agent catches up when they return.
    """
    from prism.agent.run import NodeOptions, run_agent
    from prism.node.paths import default_state_dir

    store = _store(kwargs)
    options = NodeOptions(
        store=store,
        node=kwargs["node"],
        state_dir=ctx.state_dir or default_state_dir(),
        listen_address=kwargs["listen_address"],
        haproxy=kwargs["haproxy_path"],
        admin_port=kwargs["admin_port"],
        stop_haproxy_on_exit=kwargs["stop_haproxy"],
        request_log_sample=kwargs["request_log_sample"],
        heartbeat=kwargs["heartbeat"],
        lease_ttl=kwargs["lease_ttl"],
        reconcile_interval=kwargs["reconcile_interval"],
    )
    run(run_agent(options))


@click.command()
@click.option("--haproxy", "haproxy_path", envvar="PRISM_HAPROXY", help="haproxy binary")
@click.option(
    "--fleet",
    type=click.IntRange(1, 20),
    help="run a local fleet instead: etcd, N agents on 127.0.0.2... and a control plane",
)
@pass_ctx
@handles_errors
def demo(ctx: Ctx, haproxy_path: str | None, fleet: int | None) -> None:
    """Start HAProxy, three demo backends (blue, green, red) and Prism; Ctrl-C stops all."""
    from prism.demo.run import run_demo

    run(run_demo(ctx.state_dir, haproxy_path, fleet=fleet))
