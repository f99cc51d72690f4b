"""A real fleet for the fleet tests: etcd, agents with their own HAProxy, a control plane."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from prism.testing.fleet import LocalFleet
from prism.testing.processes import Backend, BackendSpec, backends, free_port


@pytest.fixture(scope="module")
def color_servers() -> Iterator[dict[str, Backend]]:
    """Demo backends blue v1, green v2, red v3, on 127.0.0.1."""
    specs = [BackendSpec("blue", "v1"), BackendSpec("green", "v2"), BackendSpec("red", "v3")]
    with backends(specs) as running:
        yield {b.color: b for b in running}


def fleet_spec(port: int, servers: dict[str, Backend], **app: Any) -> dict[str, Any]:
    """One app on every node's own address (bind 0.0.0.0 + --listen-address)."""
    base: dict[str, Any] = {
        "name": "shop",
        "bind": f"0.0.0.0:{port}",
        "stable": "blue",
        "check": {"path": "/healthz", "inter_ms": "200ms", "rise": 2, "fall": 2},
        "drain_timeout_ms": "3s",
        "pins": [{"name": "tenant", "source": "header", "key": "X-Tenant"}],
        "colors": [
            {
                "name": color,
                "version": b.version,
                "servers": [{"name": "s1", "host": "127.0.0.1", "port": b.port}],
            }
            for color, b in servers.items()
        ],
    }
    base.update(app)
    return {"apps": [base]}


def wait_fleet_up(
    fleet: LocalFleet, colors: list[str], timeout: float = 20, *, app: str = "shop"
) -> None:
    """Poll until every server of ``colors`` of ``app`` is exactly UP on every live node."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fleet.api("GET", f"/apps/{app}").json()
        statuses = [
            node["status"]
            for color in last["colors"]
            if color["name"] in colors
            for server in color["servers"]
            for node in server.get("nodes", {}).values()
        ]
        expected = len(colors) * sum(1 for _ in fleet.agents)
        if len(statuses) == expected and all(s == "UP" for s in statuses):
            return
        time.sleep(0.1)
    raise AssertionError(f"not UP on every node in time: {last}")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFleet]:
    """etcd + three agents on 127.0.0.2-4 + one control plane, shared by a module."""
    base: Path = tmp_path_factory.mktemp("fleet")
    with LocalFleet(base, nodes=3) as running:
        yield running


@pytest.fixture(scope="module")
def shop_port(fleet: LocalFleet, color_servers: dict[str, Backend]) -> int:
    """The shop app applied to the fleet, every color UP on every node."""
    port = free_port()
    reply = fleet.api("PUT", "/config", {"spec": fleet_spec(port, color_servers)})
    assert reply.status_code == 200, reply.text
    wait_fleet_up(fleet, list(color_servers))
    return port
