"""DNS SRV discovery against a real DNS server (dnsmasq) and a real HAProxy: servers appear
and leave with their records, without a reload and without a failed request."""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from prism.testing.dns import DnsServer, start_dnsmasq
from prism.testing.load import run_load_in_thread
from prism.testing.processes import Backend, BackendSpec, backends, free_port
from prism.testing.wait import wait_for
from tests.conftest import Server, haproxy_admin, shop_spec, wait_for_traffic, wait_until_up

pytestmark = pytest.mark.haproxy

GREEN = "_http._tcp.green.shop.service.consul"


@pytest.fixture
def green_pool() -> Iterator[list[Backend]]:
    """Three green backends the SRV record can name."""
    with backends([BackendSpec("green", "v2", name=f"g{i}") for i in range(1, 4)]) as running:
        yield running


@pytest.fixture
def dns(tmp_path: Path, green_pool: list[Backend]) -> Iterator[DnsServer]:
    with start_dnsmasq(tmp_path / "dns", {GREEN: [("127.0.0.1", green_pool[0].port)]}) as server:
        yield server


def records(*pool: Backend) -> dict[str, list[tuple[str, int]]]:
    return {GREEN: [("127.0.0.1", b.port) for b in pool]}


def green_servers(server: Server) -> list[dict[str, Any]]:
    status = server.api("GET", "/apps/shop").json()
    found: list[dict[str, Any]] = next(c for c in status["colors"] if c["name"] == "green")[
        "servers"
    ]
    return found


def wait_green(server: Server, count: int, timeout: float = 15) -> list[dict[str, Any]]:
    return wait_for(
        lambda: green_servers(server),
        until=lambda rows: len(rows) == count and all(r["status"] == "UP" for r in rows),
        timeout=timeout,
        what=f"{count} discovered green servers UP",
    )


def setup(server: Server, color_backends: dict[str, Backend], dns: DnsServer, **extra: Any) -> int:
    port = free_port()
    spec = shop_spec(port, {"blue": color_backends["blue"], "green": color_backends["green"]})
    green = spec["apps"][0]["colors"][1]
    green["servers"] = []
    green["discovery"] = {"srv": GREEN, "resolvers": [dns.address], "slots": 5, **extra}
    reply = server.api("PUT", "/config", {"spec": spec})
    assert reply.status_code == 200, reply.text
    wait_until_up(server, "shop", ["blue"])
    return port


def reloads(server: Server) -> int:
    """How many times the HAProxy master has reloaded (from its master CLI)."""
    import socket

    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(server.state_dir / "master.sock"))
        sock.sendall(b"show proc\n")
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    master = next(line for line in reply.decode().splitlines() if " master " in line)
    return int(master.split()[2])


def test_servers_follow_their_records_without_a_reload_or_a_failed_request(
    server: Server, color_backends: dict[str, Backend], dns: DnsServer, green_pool: list[Backend]
) -> None:
    """One target, then three, then one again: HAProxy follows the record by itself, the
    status lists only filled slots, and traffic on green never fails."""
    port = setup(server, color_backends, dns)
    first = wait_green(server, 1)
    assert first[0]["source"] == "dns"
    assert first[0]["address"] == green_pool[0].address
    shifted = server.api("PUT", "/apps/shop/weights", {"weights": {"green": 100}})
    assert shifted.status_code == 200, shifted.text
    before = reloads(server)
    load = run_load_in_thread("127.0.0.1", port, duration=12.0, concurrency=6)
    wait_for_traffic(server, "shop.green")
    dns.serve(records(*green_pool))
    rows = wait_green(server, 3)
    assert sorted(r["address"] for r in rows) == sorted(b.address for b in green_pool)
    seen = wait_for(
        lambda: Counter(
            httpx.get(f"http://127.0.0.1:{port}/", timeout=5).json()["server"] for _ in range(30)
        ),
        until=lambda c: len(c) == 3,
        timeout=10,
        what="traffic on all three discovered servers",
    )
    assert set(seen) == {"g1", "g2", "g3"}
    dns.serve(records(green_pool[2]))
    rows = wait_green(server, 1)
    assert rows[0]["address"] == green_pool[2].address
    report = load.result(timeout=60)
    assert report.total > 300, report.summary()
    assert report.failures == [], (report.summary(), report.failures[:5])
    assert reloads(server) == before
    assert "server-template srv 5 " + GREEN in (server.state_dir / "haproxy.cfg").read_text()


def test_a_release_to_an_empty_record_waits_until_its_servers_are_up(
    server: Server, color_backends: dict[str, Backend], dns: DnsServer, green_pool: list[Backend]
) -> None:
    """A record that resolves to nothing is not ready: the release is refused and nothing
    moves; once the record names a server that is UP, the release goes through."""
    dns.serve(records())
    setup(server, color_backends, dns)
    assert green_servers(server) == []
    refused = server.api("POST", "/apps/shop/release", {"to": "green", "smoke": False})
    assert refused.status_code == 409, refused.text
    assert "has no servers" in refused.json()["detail"]
    assert server.api("GET", "/apps/shop").json()["weights"] == {"blue": 100}
    dns.serve(records(green_pool[1]))
    wait_green(server, 1)
    done = server.api("POST", "/apps/shop/release", {"to": "green", "smoke": False})
    assert done.status_code == 200, done.text
    assert done.json()["phase"] == "completed"


def test_a_reload_keeps_the_discovered_servers(
    server: Server, color_backends: dict[str, Backend], dns: DnsServer, green_pool: list[Backend]
) -> None:
    """A change that needs a reload does not empty a discovered color: slots start again on
    their last address while the record is asked anew."""
    port = setup(server, color_backends, dns)
    dns.serve(records(*green_pool[:2]))
    wait_green(server, 2)
    assert server.api("PUT", "/apps/shop/weights", {"weights": {"green": 100}}).status_code == 200
    load = run_load_in_thread("127.0.0.1", port, duration=6.0, concurrency=6)
    wait_for_traffic(server, "shop.green")
    spec = server.api("GET", "/config").json()["spec"]
    spec["apps"][0]["retries"] = 2
    applied = server.api("PUT", "/config", {"spec": spec})
    assert applied.status_code == 200, applied.text
    assert applied.json()["mode"] == "reload"
    rows = haproxy_admin(server, "show servers state shop.green")
    assert sum(1 for line in rows.splitlines() if " srv" in line and "127.0.0.1" in line) == 2
    report = load.result(timeout=60)
    assert report.failures == [], (report.summary(), report.failures[:5])


def test_hostile_discovery_is_refused_and_changes_nothing(
    server: Server, color_backends: dict[str, Backend], dns: DnsServer
) -> None:
    """Record names that could break out of the config, bad resolvers, too many slots."""
    setup(server, color_backends, dns)
    before = server.api("GET", "/config").json()
    for bad in (
        {"srv": "_http._tcp.x\n    server evil 1.2.3.4:80", "resolvers": [dns.address]},
        {"srv": GREEN, "resolvers": ["127.0.0.1:53 # x"]},
        {"srv": GREEN, "resolvers": [dns.address], "slots": 10_000},
    ):
        spec = copy.deepcopy(before["spec"])
        spec["apps"][0]["colors"][1]["discovery"] = bad
        reply = server.api("PUT", "/config", {"spec": spec})
        assert reply.status_code == 422, reply.text
    assert server.api("GET", "/config").json() == before
