"""``prism demo``: HAProxy, three demo backends and Prism, on free local ports.

``prism demo --fleet N`` runs a fleet instead: etcd, N agents with their own
HAProxy on 127.0.0.2 ... and a control plane. Everything started here is
stopped on the way out (Ctrl-C), by PID. The banner appears once every color's
servers are exactly UP, so a first command is never refused for ``UP 1/2``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any

import click

from prism.core.model import Spec, parse_model
from prism.errors import NotFound, PrismError
from prism.node.files import remove, write_atomic
from prism.node.paths import default_state_dir
from prism.serve.http import ServeOptions, serve_forever
from prism.serve.lifespan import Prism, ServiceOptions
from prism.services.status import StatusService
from prism.services.tokens import TokenService
from prism.testing.processes import Backend, free_port, start_backend

__all__ = ["demo_spec", "run_demo"]

COLORS = (("blue", "v1.0.0"), ("green", "v2.0.0"), ("red", "v3.0.0-rc1"))


def demo_spec(listen_port: int, backends: list[Backend], *, host: str = "127.0.0.1") -> Spec:
    """One app, ``shop``, with a blue, green and red color of one server each, listening
    on ``host`` (``0.0.0.0`` in a fleet: every node's own listen address)."""
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
                    "bind": f"{host}:{listen_port}",
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


async def run_demo(
    state_dir: Path | None, haproxy: str | None, *, fleet: int | None = None
) -> None:
    """Run the demo until Ctrl-C."""
    home = state_dir or default_state_dir()
    if fleet is not None:
        await _run_fleet(home, fleet)
        return
    demo_dir = home / "demo"
    listen_port, api_port, admin_port = free_port(), free_port(), free_port()
    backends: list[Backend] = []
    try:
        for color, version in COLORS:
            backends.append(start_backend(color, version))
        spec = demo_spec(listen_port, backends)

        async def ready(prism: Prism, url: str) -> None:
            await prism.services.spec.apply(spec, actor="demo", reason="prism demo")
            await _all_up(prism.services.status)
            tokens = await _demo_tokens(prism.services.tokens)
            _banner(url, listen_port, admin_port, backends, home, tokens)

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


DEMO_TOKENS = (("demo-viewer", "viewer"), ("demo-operator", "operator"))


async def _demo_tokens(tokens: TokenService) -> dict[str, str]:
    """A fresh viewer and operator token to try the dashboard with (old ones revoked)."""
    made: dict[str, str] = {}
    for name, role in DEMO_TOKENS:
        with contextlib.suppress(NotFound):
            await tokens.revoke(name, actor="demo")
        made[role] = (await tokens.create(name, role, actor="demo"))["secret"]
    return made


def _token_lines(url: str, tokens: dict[str, str]) -> list[str]:
    return [
        f"  dashboard    {url}/   log in with a token:",
        f"    viewer     {tokens['viewer']}",
        f"    operator   {tokens['operator']}",
    ]


def _banner(
    api: str,
    listen_port: int,
    admin_port: int,
    backends: list[Backend],
    home: Path,
    tokens: dict[str, str],
) -> None:
    app_url = f"http://127.0.0.1:{listen_port}/"
    red = next(b.url for b in backends if b.color == "red")
    lines = [
        "",
        "Prism demo is running.",
        f"  app 'shop'   {app_url}   (blue v1.0.0 serves now)",
        f"  Prism API    {api}/api/v1   (OpenAPI: {api}/api/v1/docs)",
        *_token_lines(api, tokens),
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


async def _all_up(status: StatusService) -> None:
    """Wait (bounded: 30 s) until every server of every color is exactly UP everywhere."""
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        apps = await status.status()
        servers = [s for app in apps for c in app["colors"] for s in c["servers"]]
        if servers and all(s["status"] == "UP" for s in servers):
            return
        await asyncio.sleep(0.2)
    click.echo("prism demo: not every server is UP yet; `prism status` shows which", err=True)


async def _run_fleet(home: Path, nodes: int) -> None:
    """etcd, ``nodes`` agents and one control plane, until Ctrl-C."""
    from prism.testing.fleet import LocalFleet

    base = home / "demo-fleet"
    listen_port = free_port()
    backends: list[Backend] = []
    fleet = LocalFleet(base, nodes=nodes, heartbeat=1.0, lease_ttl=3.0)
    try:
        for color, version in COLORS:
            backends.append(start_backend(color, version))
        await asyncio.to_thread(fleet.start)
        plane = fleet.control[0]
        spec = demo_spec(listen_port, backends, host="0.0.0.0")
        body = {"spec": spec.model_dump(mode="json"), "reason": "prism demo --fleet"}
        reply = await asyncio.to_thread(fleet.api, "PUT", "/config", body)
        if reply.status_code != 200:
            raise PrismError(f"the demo spec was refused: {reply.text[:500]}")
        await asyncio.to_thread(_fleet_up, fleet)
        tokens = await asyncio.to_thread(_fleet_tokens, fleet)
        info = {"url": plane.url, "state_dir": str(plane.state_dir), "pid": plane.process.pid}
        write_atomic(home / "server.json", json.dumps(info) + "\n", mode=0o600)
        _fleet_banner(fleet, listen_port, backends, home, tokens)
        await asyncio.Event().wait()  # until Ctrl-C cancels the demo
    finally:
        await asyncio.to_thread(fleet.close)
        for backend in backends:
            with contextlib.suppress(Exception):
                backend.stop()
        remove(home / "server.json")
        click.echo("prism demo: stopped the control plane, the agents, HAProxy, etcd and backends")


def _fleet_up(fleet: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        apps = fleet.api("GET", "/apps").json()
        servers = [s for app in apps for c in app["colors"] for s in c["servers"]]
        if servers and all(s["status"] == "UP" for s in servers):
            return
        time.sleep(0.2)
    click.echo("prism demo: not every server is UP on every node yet", err=True)


def _fleet_tokens(fleet: Any) -> dict[str, str]:
    made: dict[str, str] = {}
    for name, role in DEMO_TOKENS:
        fleet.api("DELETE", f"/tokens/{name}")
        reply = fleet.api("POST", "/tokens", {"name": name, "role": role})
        if reply.status_code != 200:
            raise PrismError(f"the demo tokens were refused: {reply.text[:500]}")
        made[role] = reply.json()["secret"]
    return made


def _fleet_banner(
    fleet: Any, listen_port: int, backends: list[Backend], home: Path, tokens: dict[str, str]
) -> None:
    plane = fleet.control[0]
    lines = [
        "",
        f"Prism fleet demo is running: {len(fleet.agents)} HAProxy nodes kept in step by etcd.",
        f"  control plane  {plane.url}/api/v1   (store {fleet.store_url})",
        *_token_lines(plane.url, tokens),
        *(f"  node {node.name:<6}   http://{node.address}:{listen_port}/" for node in fleet.agents),
        "  backends       " + ", ".join(f"{b.color} 127.0.0.1:{b.port}" for b in backends),
        "",
        "Try, from a second terminal:",
        "  prism nodes                                 # who is there, what each runs",
        "  prism status                                # health of every server, per node",
        "  prism release shop --to green               # every node switches in lockstep",
        "  prism shift shop blue=70 green=20 red=10",
        f"  for n in {' '.join(n.address for n in fleet.agents)}; do "
        f"curl -s http://$n:{listen_port}/; echo; done",
        "",
        f"(state: {fleet.base}; Ctrl-C stops everything)",
    ]
    click.echo("\n".join(lines))
