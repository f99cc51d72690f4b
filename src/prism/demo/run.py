"""``prism demo``: HAProxy, three demo backends and Prism, on free local ports.

Everything started here is stopped on the way out (Ctrl-C), by PID.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import click

from prism.core.model import Spec, parse_model
from prism.node.files import remove
from prism.serve.http import ServeOptions, serve_forever
from prism.serve.lifespan import Prism, ServiceOptions, default_state_dir
from prism.testing.processes import Backend, free_port, start_backend

__all__ = ["demo_spec", "run_demo"]

COLORS = (("blue", "v1.0.0"), ("green", "v2.0.0"), ("red", "v3.0.0-rc1"))


def demo_spec(listen_port: int, backends: list[Backend]) -> Spec:
    """One app, ``shop``, with a blue, green and red color of one server each."""
    colors = [
        {
            "name": color,
            "version": version,
            "servers": [{"name": "s1", "host": "127.0.0.1", "port": backend.port}],
        }
        for (color, version), backend in zip(COLORS, backends, strict=True)
    ]
    return parse_model(
        Spec,
        {
            "apps": [
                {
                    "name": "shop",
                    "bind": f"127.0.0.1:{listen_port}",
                    "stable": "blue",
                    "check": {"path": "/healthz", "inter_ms": "500ms", "rise": 2, "fall": 2},
                    "smoke": {"path": "/", "expect_status": 200},
                    "stickiness": {"source": "cookie", "name": "prism_uid", "set_cookie": True},
                    "pins": [{"name": "tenant", "source": "header", "key": "X-Tenant"}],
                    "drain_timeout_ms": "10s",
                    "colors": colors,
                }
            ]
        },
        source="demo spec",
    )


async def run_demo(state_dir: Path | None, haproxy: str | None) -> None:
    """Run the demo until Ctrl-C."""
    home = state_dir or default_state_dir()
    demo_dir = home / "demo"
    listen_port, api_port, admin_port = free_port(), free_port(), free_port()
    backends: list[Backend] = []
    try:
        for color, version in COLORS:
            backends.append(start_backend(color, version))
        spec = demo_spec(listen_port, backends)

        async def ready(prism: Prism, url: str) -> None:
            await prism.apply_spec(spec, actor="demo", reason="prism demo")
            _banner(url, listen_port, admin_port, backends, home)

        options = ServeOptions(
            service=ServiceOptions(
                state_dir=demo_dir,
                haproxy=haproxy,
                admin_port=admin_port,
                stop_haproxy_on_exit=True,
                reconcile_interval=2.0,
            ),
            port=api_port,
            announce_dir=home,
        )
        await serve_forever(options, on_ready=ready)
    finally:
        for backend in backends:
            with contextlib.suppress(Exception):
                backend.stop()
        remove(home / "server.json")
        click.echo("prism demo: stopped HAProxy, the backends and the API")


def _banner(
    api: str, listen_port: int, admin_port: int, backends: list[Backend], home: Path
) -> None:
    app_url = f"http://127.0.0.1:{listen_port}/"
    red = next(b.url for b in backends if b.color == "red")
    lines = [
        "",
        "Prism demo is running.",
        f"  app 'shop'   {app_url}   (blue v1.0.0 serves now)",
        f"  Prism API    {api}/api/v1   (OpenAPI: {api}/api/v1/docs)",
        f"  HAProxy      http://127.0.0.1:{admin_port}/stats  and  /metrics",
        "  backends     " + ", ".join(f"{b.color} 127.0.0.1:{b.port}" for b in backends),
        "",
        "Try, from a second terminal:",
        f"  while true; do curl -s {app_url}; echo; sleep 0.5; done",
        "  prism status",
        "  prism release shop --to green          # blue/green cutover, gated on health",
        "  prism rollback shop",
        "  prism shift shop blue=70 green=20 red=10   # rainbow: three versions live",
        "  prism pin shop acme --to red            # then: curl -H 'X-Tenant: acme' ...",
        "  prism release start shop --to red --steps 10,50,100 --interval 20s",
        "  prism release status shop -w            # live: phase, step, analysis readings",
        f"  curl -X POST {red}/_fault -d '{{\"status\": 500}}'   # red fails: automatic rollback",
        f"  curl -X DELETE {red}/_fault                   # heal red again",
        "  prism history shop",
        "",
        f"(state: {home / 'demo'}; Ctrl-C stops everything)",
    ]
    click.echo("\n".join(lines))
