"""Servers that register themselves, through a real `prism serve`, HAProxy and backends:
gated joins, expiry, churn under load, hostile input, the CLI's keepalive and restarts."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from prism.testing.load import run_load_in_thread
from prism.testing.processes import Backend, BackendSpec, backends, free_port
from prism.testing.wait import wait_for
from tests.conftest import Server, run_server, shop_spec, wait_for_traffic, wait_until_up

pytestmark = pytest.mark.haproxy


def setup_shop(server: Server, servers: dict[str, Backend]) -> int:
    port = free_port()
    reply = server.api("PUT", "/config", {"spec": shop_spec(port, servers)})
    assert reply.status_code == 200, reply.text
    wait_until_up(server, "shop", list(servers))
    return port


def register(server: Server, name: str, backend: Backend, ttl_ms: int = 20_000) -> httpx.Response:
    body = {"address": backend.address, "ttl": ttl_ms}
    return server.api("PUT", f"/apps/shop/colors/blue/registrations/{name}", body)


def blue_servers(server: Server) -> list[dict[str, Any]]:
    status = server.api("GET", "/apps/shop").json()
    servers: list[dict[str, Any]] = next(c for c in status["colors"] if c["name"] == "blue")[
        "servers"
    ]
    return servers


def served_by(port: int, n: int) -> Counter[str]:
    with httpx.Client(timeout=5) as client:
        return Counter(client.get(f"http://127.0.0.1:{port}/").json()["server"] for _ in range(n))


@pytest.fixture
def extra_blue() -> Iterator[list[Backend]]:
    """Ten more blue backends, r1..r10, to register."""
    with backends([BackendSpec("blue", "v1", name=f"r{i}") for i in range(1, 11)]) as running:
        yield running


def test_a_registration_joins_gated_and_leaves_when_it_expires(
    server: Server, color_backends: dict[str, Backend], extra_blue: list[Backend]
) -> None:
    """Registered, the server takes traffic only once UP and shows its TTL; left to expire, it
    is drained and removed within its TTL and one sweep, and the audit log says when."""
    port = setup_shop(server, color_backends)
    # 6 s: the gated join, the status read and 20 requests must fit before the renewal,
    # on a loaded machine too (3 s did not, once).
    reply = register(server, "r1", extra_blue[0], ttl_ms=6000)
    assert reply.status_code == 200, reply.text
    assert reply.json()["renewed"] is False
    row = next(s for s in blue_servers(server) if s["name"] == "r1")
    assert (row["source"], row["status"], row["check"]) == ("registration", "UP", "L7OK")
    assert 0 < row["ttl_left"] <= 6
    assert set(served_by(port, 20)) == {"s1", "r1"}
    renewed = register(server, "r1", extra_blue[0], ttl_ms=6000)
    assert renewed.json()["renewed"] is True
    wait_for(
        lambda: [s["name"] for s in blue_servers(server)],
        until=lambda names: names == ["s1"],
        timeout=6 + 2,
        what="r1 to expire and be removed",
    )
    assert set(served_by(port, 20)) == {"s1"}
    history = server.api("GET", "/apps/shop/history?limit=10").json()
    expired = next(h for h in history if h["action"] == "registration.expired")
    assert expired["detail"]["server"] == "r1"
    assert expired["detail"]["registered_by"] == "api"


def test_a_registered_server_that_fails_its_checks_never_gets_a_request(
    server: Server, color_backends: dict[str, Backend], extra_blue: list[Backend]
) -> None:
    """Its checks fail: the registration is refused, nothing is kept, it served nothing."""
    port = setup_shop(server, color_backends)
    sick = extra_blue[0]
    assert httpx.post(f"{sick.url}/_health", json={"ok": False}).status_code == 200
    load = run_load_in_thread("127.0.0.1", port, duration=4.0, concurrency=4)
    wait_for_traffic(server, "shop.blue")
    reply = register(server, "r1", sick)
    report = load.result(timeout=30)
    assert reply.status_code == 409, reply.text
    assert "failed its health checks" in reply.json()["detail"]
    assert [s["name"] for s in blue_servers(server)] == ["s1"]
    assert server.api("GET", "/apps/shop/registrations").json() == []
    assert report.failures == []
    assert httpx.get(f"{sick.url}/_stats").json() == {"served": 0}


def test_ten_servers_join_and_ten_leave_under_load_without_a_failed_request(
    server: Server, color_backends: dict[str, Backend], extra_blue: list[Backend]
) -> None:
    """Ten registrations join, serve, and leave (five deregistered, five expired) under load."""
    port = setup_shop(server, color_backends)
    load = run_load_in_thread("127.0.0.1", port, duration=20.0, concurrency=8)
    wait_for_traffic(server, "shop.blue")
    for index, backend in enumerate(extra_blue, start=1):
        ttl = 30_000 if index <= 5 else 8_000
        reply = register(server, f"r{index}", backend, ttl_ms=ttl)
        assert reply.status_code == 200, reply.text
    # Ten joined (on a busy machine the first 8 s ones may already be leaving).
    assert len(blue_servers(server)) >= 6
    wait_for(
        lambda: served_by(port, 60),
        until=lambda seen: len(seen) >= 8,
        timeout=10,
        what="most registered servers to take traffic",
    )
    for index in range(1, 6):
        reply = server.api("DELETE", f"/apps/shop/colors/blue/registrations/r{index}")
        assert reply.status_code == 200, reply.text
    wait_for(
        lambda: [s["name"] for s in blue_servers(server)],
        until=lambda names: names == ["s1"],
        timeout=10,
        what="the expiring registrations to leave",
    )
    report = load.result(timeout=60)
    assert report.total > 500, report.summary()
    assert report.failures == [], (report.summary(), report.failures[:5])
    actions = Counter(h["action"] for h in server.api("GET", "/history?limit=100").json())
    assert (actions["register"], actions["deregister"], actions["registration.expired"]) == (
        10,
        5,
        5,
    )


HOSTILE = [
    ("/apps/shop/colors/blue/registrations/r1", {"address": "127.0.0.1:0"}, "HOST:PORT"),
    ("/apps/shop/colors/blue/registrations/r1", {"address": "evil;host:80"}, "HOST:PORT"),
    ("/apps/shop/colors/blue/registrations/r1", {"address": "a b:80"}, "HOST:PORT"),
    ("/apps/shop/colors/blue/registrations/r1", {"address": "x"}, "HOST:PORT"),
    ("/apps/shop/colors/blue/registrations/r1", {"address": "127.0.0.1:9", "ttl": 10}, "ttl"),
    (
        "/apps/shop/colors/blue/registrations/r1",
        {"address": "127.0.0.1:9", "ttl": "2d"},
        "duration",
    ),
    ("/apps/shop/colors/blue/registrations/X%3Bshow", {"address": "127.0.0.1:9"}, "path.name"),
    ("/apps/shop/colors/blue/registrations/s1", {"address": "127.0.0.1:9"}, "declares"),
    ("/apps/shop/colors/purple/registrations/r1", {"address": "127.0.0.1:9"}, "no color"),
    ("/apps/nope/colors/blue/registrations/r1", {"address": "127.0.0.1:9"}, "no app"),
]


def test_hostile_registrations_are_refused_and_change_nothing(
    server: Server, color_backends: dict[str, Backend]
) -> None:
    """Bad names, addresses, TTLs, colors and apps: a clear problem each, nothing changed."""
    setup_shop(server, color_backends)
    before = server.api("GET", "/health").json()["desired_revision"]
    for path, body, match in HOSTILE:
        reply = server.api("PUT", path, body)
        assert 400 <= reply.status_code < 500, (path, body, reply.text)
        assert match in reply.text, (path, body, reply.text)
    assert server.api("GET", "/health").json()["desired_revision"] == before
    assert [s["name"] for s in blue_servers(server)] == ["s1"]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_cli_register_keeps_it_alive_and_ctrl_c_deregisters(
    server: Server, color_backends: dict[str, Backend], extra_blue: list[Backend]
) -> None:
    """`prism register` renews past its TTL; SIGINT deregisters; --once registers one TTL."""
    setup_shop(server, color_backends)
    env = {
        **os.environ,
        "PRISM_URL": server.url,
        "PRISM_TOKEN": server.token,
        "PRISM_STATE_DIR": str(server.state_dir),
    }
    args = [sys.executable, "-m", "prism", "register", "shop", "blue"]
    child = subprocess.Popen(
        [*args, extra_blue[0].address, "--name", "r1", "--ttl", "2s"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A test run started in the background of a script inherits SIGINT ignored,
        # and so would the CLI: give it the default disposition a terminal has.
        preexec_fn=_default_sigint,
    )
    try:
        wait_for(
            lambda: [s["name"] for s in blue_servers(server)],
            until=lambda names: "r1" in names,
            timeout=15,
            what="the CLI's registration to join",
        )
        # Past two TTLs it is still there: the CLI renews it.
        joined = wait_for(
            lambda: server.api("GET", "/apps/shop/history?limit=20").json(),
            until=lambda h: any(e["action"] == "register" for e in h),
            timeout=5,
            what="the register audit",
        )
        assert joined
        with contextlib.suppress(AssertionError):
            wait_for(
                lambda: [s["name"] for s in blue_servers(server)],
                until=lambda names: "r1" not in names,
                timeout=4.5,
                what="r1 to leave (it must not)",
            )
            raise AssertionError("r1 left while its registrar was renewing it")
        child.send_signal(signal.SIGINT)
        _, errors = child.communicate(timeout=15)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate(timeout=5)
    assert "deregistered" in errors
    assert [s["name"] for s in blue_servers(server)] == ["s1"]
    actions = [h["action"] for h in server.api("GET", "/apps/shop/history?limit=20").json()]
    assert "deregister" in actions
    assert "registration.expired" not in actions
    once = subprocess.run(
        [*args, extra_blue[1].address, "--name", "r2", "--ttl", "30s", "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert once.returncode == 0, once.stderr
    assert "r2" in [s["name"] for s in blue_servers(server)]


def test_registrations_survive_a_prism_restart_and_a_reload(
    state_dir: Path, color_backends: dict[str, Backend], extra_blue: list[Backend]
) -> None:
    """The registered server is in the rendered config: a restart of Prism and a reload
    keep it serving, and its lease still counts down."""
    with run_server(state_dir) as first:
        port = setup_shop(first, color_backends)
        assert register(first, "r1", extra_blue[0], ttl_ms=60_000).status_code == 200
    assert "server r1 " in (state_dir / "haproxy.cfg").read_text()
    with run_server(state_dir) as second:
        row = next(s for s in blue_servers(second) if s["name"] == "r1")
        assert row["status"] == "UP"
        assert 0 < row["ttl_left"] <= 60
        # a reload (a new color) keeps it too
        spec = shop_spec(port, color_backends)
        spec["apps"][0]["retries"] = 2
        assert second.api("PUT", "/config", {"spec": spec}).status_code == 200
        assert set(served_by(port, 30)) == {"s1", "r1"}
