"""Seed 003's load-balancing patterns through a real `prism serve`, HAProxy and demo backends:
slow-server weights, circuit breaking, health-weighted DNS, retries and warm-up.

One `prism serve` and three demo backends serve the whole module (each test applies
its own spec, and every backend's switches are reset before each test); records of
the audit log are read from the test's own start on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from prism.haproxy.parsers import parse_show_stat
from prism.node.paths import StatePaths
from prism.testing.load import run_load_in_thread
from prism.testing.processes import Backend, BackendSpec, backends, free_port
from prism.testing.wait import wait_for
from tests.conftest import Server, haproxy_admin, run_server, wait_for_traffic, wait_until_up

pytestmark = pytest.mark.haproxy

CHECK = {"path": "/healthz", "inter_ms": "200ms", "rise": 2, "fall": 2}


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real `prism serve` with its HAProxy for the module."""
    with run_server(tmp_path_factory.mktemp("lb") / "state") as running:
        yield running


@pytest.fixture(scope="module")
def backends_of_module() -> Iterator[list[Backend]]:
    specs = [BackendSpec("blue", "v1", name=f"s{n}") for n in (1, 2, 3)]
    with backends(specs) as running:
        yield running


@pytest.fixture
def trio(backends_of_module: list[Backend]) -> list[Backend]:
    """Three demo backends, s1, s2, s3, with no fault and healthy checks."""
    for backend in backends_of_module:
        fault(backend)
        assert httpx.post(f"{backend.url}/_health", json={"ok": True}).status_code == 200
    return backends_of_module


@pytest.fixture
def server(shared: Server) -> Server:
    """The module's server."""
    return shared


@pytest.fixture
def since(shared: Server) -> int:
    """The newest audit record before the test: `history` reads only later ones."""
    records = shared.api("GET", "/history?limit=1").json()
    return int(records[0]["id"]) if records else 0


def blue_spec(port: int, servers: list[Backend], **app: Any) -> dict[str, Any]:
    """App shop with one color, blue, of the given backends (named s1, s2, ...)."""
    return {
        "apps": [
            {
                "name": "shop",
                "bind": f"127.0.0.1:{port}",
                "stable": "blue",
                "check": CHECK,
                "drain_timeout_ms": "3s",
                "colors": [
                    {
                        "name": "blue",
                        "version": "v1",
                        "servers": [
                            {"name": b.name, "host": b.host, "port": b.port} for b in servers
                        ],
                    }
                ],
                **app,
            }
        ]
    }


def apply(server: Server, spec: dict[str, Any]) -> dict[str, Any]:
    reply = server.api("PUT", "/config", {"spec": spec})
    assert reply.status_code == 200, reply.text
    answer: dict[str, Any] = reply.json()
    return answer


def servers_of(server: Server, color: str = "blue") -> dict[str, dict[str, Any]]:
    """The status entries of one color's servers, by name."""
    status = server.api("GET", "/apps/shop").json()
    found = next(c for c in status["colors"] if c["name"] == color)
    return {s["name"]: s for s in found["servers"]}


def fault(backend: Backend, **switch: Any) -> None:
    """Set (or with no arguments clear) a demo backend's fault switch."""
    method = "POST" if switch else "DELETE"
    assert httpx.request(method, f"{backend.url}/_fault", json=switch or None).status_code == 200


def history(server: Server, since: int, action: str) -> list[dict[str, Any]]:
    """The records of ``action`` after ``since``, oldest first."""
    records: list[dict[str, Any]] = server.api("GET", "/apps/shop/history?limit=500").json()
    return [r for r in reversed(records) if r["action"] == action and r["id"] > since]


def stat_rows(server: Server, backend: str) -> dict[str, Any]:
    rows = parse_show_stat(haproxy_admin(server, f"show stat {backend} -1 -1"))
    return {r.server: r for r in rows if r.type == 2}


SLOW = {
    "enabled": True,
    "window_ms": "1s",
    "recover_after_ms": "1s",
    "min_requests": 10,
    "step": 45,
    "floor": 10,
}


def test_slow_server_loses_weight_and_gets_it_back(
    server: Server, trio: list[Backend], since: int
) -> None:
    """Under load, a server turning 300 ms slower loses weight in steps within the window
    (100 → 55 → 10), keeps it across a reload, and regains it after healing; the other two
    keep 100% throughout, no request fails, and each move is in status and history."""
    port = free_port()
    apply(server, blue_spec(port, trio, slow_servers=SLOW))
    wait_until_up(server, "shop", ["blue"])
    load = run_load_in_thread(
        "127.0.0.1", port, duration=8, concurrency=16, keepalive=True, max_seconds=60
    )
    wait_for_traffic(server, "shop.blue", at_least=200)
    slow = trio[1]
    fault(slow, status=None, delay_ms=300)
    turned = time.monotonic()
    wait_for(
        lambda: servers_of(server)["s2"],
        until=lambda s: s["weight"] < 100,
        timeout=5,
        interval=0.1,
        what="s2's weight to start dropping",
    )
    dropped = time.monotonic() - turned
    lowered = wait_for(
        lambda: servers_of(server)["s2"],
        until=lambda s: s["weight"] == 10,
        timeout=6,
        interval=0.1,
        what="s2 at its floor",
    )
    assert lowered["slow"].startswith("slow: ")
    shown = server.cli("status", "shop")
    assert shown.returncode == 0, shown.stderr
    assert "s2 " in shown.stdout
    assert "UP weight 10% — slow: " in shown.stdout
    assert "ms median" in shown.stdout
    # a reload (a changed retries setting) keeps the weight: HAProxy's server-state file
    apply(server, blue_spec(port, trio, slow_servers=SLOW, retries=2))
    saved = (StatePaths(server.state_dir).server_state).read_text()
    assert any(
        line.split()[3] == "s2" and line.split()[7] == "10" for line in saved.splitlines()[2:]
    ), saved
    assert stat_rows(server, "shop.blue")["s2"].raw["uweight"] == "10"
    report = load.result(timeout=60)
    assert report.failures == [], report.summary()
    fault(slow)
    healing = run_load_in_thread(
        "127.0.0.1", port, duration=5, concurrency=16, keepalive=True, max_seconds=60
    )
    wait_for(
        lambda: servers_of(server)["s2"],
        until=lambda s: s["weight"] == 100,
        timeout=10,
        interval=0.1,
        what="s2 back at 100%",
    )
    others = servers_of(server)
    report = healing.result(timeout=60)
    assert report.failures == [], report.summary()
    assert (others["s1"]["weight"], others["s3"]["weight"]) == (100, 100)
    moves = history(server, since, "server.weight")
    assert {m["detail"]["server"] for m in moves} == {"s2"}
    assert [m["detail"]["to"] for m in moves] == [55, 10, 55, 100]
    assert all(m["reason"].startswith("slow: ") for m in moves[:2])
    assert all(m["reason"].startswith("fast again: ") for m in moves[2:])
    assert dropped < 1 + 2.5, dropped  # one window, one tick, and slack for a loaded machine


def test_error_limit_marks_a_failing_server_down(
    server: Server, trio: list[Backend], since: int
) -> None:
    """A server answering 500 under load trips its breaker after 5 errors: HAProxy marks it
    DOWN, a `circuit.tripped` record says why, status counts its trips; only its 500s fail."""
    port = free_port()
    breaker = {"error_limit": 5, "on_error": "mark-down"}
    check = {**CHECK, "inter_ms": "500ms", "rise": 3}
    apply(server, blue_spec(port, trio, circuit=breaker, check=check))
    wait_until_up(server, "shop", ["blue"])
    load = run_load_in_thread(
        "127.0.0.1", port, duration=5, concurrency=10, keepalive=True, max_seconds=60
    )
    wait_for_traffic(server, "shop.blue", at_least=100)
    fault(trio[2], status=500)
    down = wait_for(
        lambda: stat_rows(server, "shop.blue")["s3"],
        until=lambda row: row.status == "DOWN" and "HANA" in row.check_status,
        timeout=5,
        interval=0.02,
        what="HAProxy to mark s3 down for its errors",
    )
    assert "consecutive errors" in down.raw["last_chk"]
    record = wait_for(
        lambda: history(server, since, "circuit.tripped"),
        timeout=5,
        what="a circuit.tripped record",
    )[0]
    assert record["detail"]["server"] == "s3"
    assert record["detail"]["status"].startswith("DOWN")
    assert "consecutive errors" in record["reason"]
    shown = servers_of(server)["s3"]
    assert shown["trips"] >= 1
    report = load.result(timeout=60)
    fault(trio[2])
    trips = int(stat_rows(server, "shop.blue")["s3"].raw["hanafail"])
    assert {s.status for s in report.failures} == {500}, report.summary()
    # each trip lets at most error_limit 500s through (plus those already in flight)
    assert len(report.failures) <= (trips + 1) * (5 + 10), (len(report.failures), trips)
    assert report.ok > 10 * len(report.failures)


def test_canary_whose_server_trips_is_rolled_back(server: Server, trio: list[Backend]) -> None:
    """A canary's only server failing trips its breaker; the release rolls back, saying so,
    before any 5xx analysis would (its thresholds are off here)."""
    port = free_port()
    spec = {
        "apps": [
            {
                "name": "shop",
                "bind": f"127.0.0.1:{port}",
                "stable": "blue",
                "check": {**CHECK, "inter_ms": "300ms", "rise": 3},
                "circuit": {"error_limit": 3},
                "colors": [
                    {"name": "blue", "servers": [trio[0].address]},
                    {"name": "green", "servers": [trio[1].address]},
                ],
            }
        ]
    }
    apply(server, spec)
    wait_until_up(server, "shop", ["blue", "green"])
    load = run_load_in_thread(
        "127.0.0.1", port, duration=5, concurrency=10, keepalive=True, max_seconds=60
    )
    lenient = {
        "tick_ms": 200,
        "min_requests": 1_000_000,
        "max_5xx_ratio": 1.0,
        "max_5xx_ratio_vs_stable": None,
    }
    plan = {
        "to": "green",
        "steps": [{"weight": 25}, {"pause": "30s"}, {"weight": 100}],
        "analysis": lenient,
        "smoke": False,
    }
    reply = server.api("POST", "/apps/shop/releases", {"plan": plan})
    assert reply.status_code == 200, reply.text
    wait_for(
        lambda: server.api("GET", "/apps/shop").json()["weights"],
        until=lambda w: w.get("green") == 25,
        timeout=10,
        what="green at 25%",
    )
    fault(trio[1], status=500)
    record = wait_for(
        lambda: next(
            r for r in server.api("GET", "/apps/shop/releases").json() if r["to_color"] == "green"
        ),
        until=lambda r: r["phase"] in ("rolled_back", "failed"),
        timeout=10,
        what="the canary to roll back",
    )
    load.result(timeout=60)
    assert record["phase"] == "rolled_back"
    why = next(e for e in record["steps"] if e["name"] == "rollback")["message"]
    assert "target unhealthy" in why
    assert "circuit breaker" in why  # tripped, or back from a trip but still DOWN
    assert server.api("GET", "/apps/shop").json()["weights"] == {"blue": 100}


def dns_weight(server: Server) -> int:
    (row,) = server.api("GET", "/dns-weights?app=shop").json()
    weight: int = row["weight"]
    return weight


def test_dns_weight_follows_servers_down_and_up(server: Server, trio: list[Backend]) -> None:
    """The app's DNS weight is 100, 66 with one of three servers failing its checks, 33
    with two, and 100 again once they heal, in JSON and as a Route 53 change batch."""
    port = free_port()
    apply(server, blue_spec(port, trio, dns={"name": "shop.example.com", "ttl_ms": "30s"}))
    wait_until_up(server, "shop", ["blue"])
    assert dns_weight(server) == 100
    for backend, weight in ((trio[0], 66), (trio[1], 33)):
        assert httpx.post(f"{backend.url}/_health", json={"ok": False}).status_code == 200
        wait_for(lambda: dns_weight(server), until=lambda w, x=weight: w == x, timeout=5)
    out = server.cli("dns-weights", "--format", "route53")
    assert out.returncode == 0, out.stderr
    (change,) = json.loads(out.stdout)["Changes"]
    assert change["Action"] == "UPSERT"
    assert change["ResourceRecordSet"] == {
        "Name": "shop.example.com",
        "Type": "A",
        "SetIdentifier": "local",
        "Weight": 33,
        "TTL": 30,
        "ResourceRecords": [{"Value": "127.0.0.1"}],
    }
    for backend in trio[:2]:
        assert httpx.post(f"{backend.url}/_health", json={"ok": True}).status_code == 200
    wait_for(lambda: dns_weight(server), until=lambda w: w == 100, timeout=5)
    out = server.cli("dns-weights", "shop", "--format", "json")
    assert out.returncode == 0, out.stderr
    (row,) = json.loads(out.stdout)
    assert (row["weight"], row["healthy"], row["servers"], row["node"]) == (100, 3, 3, "local")
    table = server.cli("dns-weights")
    assert "shop.example.com (ttl 30s)" in table.stdout


def test_retry_on_hides_a_server_that_resets_connections(
    server: Server, trio: list[Backend]
) -> None:
    """A server resetting every request (its checks still pass) fails requests under HAProxy's
    default retries; with retry-on all-retryable-errors and redispatch, none fails."""
    port = free_port()
    apply(server, blue_spec(port, trio))
    wait_until_up(server, "shop", ["blue"])
    fault(trio[1], reset=True)
    without = run_load_in_thread(
        "127.0.0.1", port, total=600, concurrency=8, keepalive=True, max_seconds=30
    ).result(timeout=60)
    assert len(without.failures) > 10, without.summary()
    apply(server, blue_spec(port, trio, retry_on=["all-retryable-errors"], redispatch=True))
    wait_until_up(server, "shop", ["blue"])
    hidden = run_load_in_thread(
        "127.0.0.1", port, total=600, concurrency=8, keepalive=True, max_seconds=30
    ).result(timeout=60)
    assert hidden.failures == [], hidden.summary()
    assert stat_rows(server, "shop.blue")["s2"].raw["status"] == "UP"


def test_server_added_under_load_ramps_up_over_slowstart(
    server: Server, trio: list[Backend]
) -> None:
    """A server added at runtime with slowstart 5 s starts with a small share of requests
    and grows to its full third, second by second; status shows it warming up."""
    port = free_port()
    apply(server, blue_spec(port, trio[:2], slowstart_ms="5s"))
    wait_until_up(server, "shop", ["blue"])
    # Long enough to outlast the seven one-second samples on a busy machine too.
    load = run_load_in_thread(
        "127.0.0.1", port, duration=14, concurrency=16, keepalive=True, max_seconds=60
    )
    wait_for_traffic(server, "shop.blue", at_least=200)
    added = server.api(
        "POST", "/apps/shop/colors/blue/servers", {"address": trio[2].address, "name": "s3"}
    )
    assert added.status_code == 200, added.text
    warming = servers_of(server)["s3"]
    shares: list[float] = []
    before = stat_rows(server, "shop.blue")
    for _ in range(7):
        time.sleep(1.0)  # not a wait: the measurement is requests per second
        now = stat_rows(server, "shop.blue")
        served = {name: now[name].req_tot - before.get(name, now[name]).req_tot for name in now}
        shares.append(served["s3"] / max(1, sum(served.values())))
        before = now
    report = load.result(timeout=60)
    assert report.failures == [], report.summary()
    assert warming.get("warming") is not None, warming
    assert shares[0] < 0.6 * shares[-1], shares
    assert shares[0] < shares[3] < shares[-1] + 0.05, shares
    assert 0.25 <= shares[-1] <= 0.42, shares


def test_hostile_settings_are_rejected_and_change_nothing(
    server: Server, trio: list[Backend], tmp_path: Path
) -> None:
    """Settings HAProxy 2.8 would refuse or that could inject config are refused with the
    field named, through the API and `prism apply`, and the spec stays as it was."""
    port = free_port()
    apply(server, blue_spec(port, trio))
    before = server.api("GET", "/config").json()
    for setting, field in [
        ({"retry_on": ["429"]}, "retry_on.0"),
        ({"retry_on": ["503\n    server evil 10.0.0.1:80"]}, "retry_on.0"),
        ({"retry_on": ["none", "503"]}, "retry_on 'none' must stand alone"),
        ({"http_reuse": "safe; reload"}, "http_reuse"),
        ({"slowstart_ms": "-5s"}, "slowstart_ms"),
        ({"circuit": {"on_error": "mark-down on-marked-down shutdown-sessions"}}, "on_error"),
        ({"circuit": {"error_limit": 10**9}}, "circuit.error_limit"),
        ({"slow_servers": {"enabled": True, "floor": 0}}, "slow_servers.floor"),
        ({"slow_servers": {"enabled": "yes"}}, "slow_servers.enabled"),
        ({"dns": {"name": "shop.example.com.\nx"}}, "dns.name"),
    ]:
        reply = server.api("PUT", "/config", {"spec": blue_spec(port, trio, **setting)})
        assert reply.status_code in (400, 422), (setting, reply.text)
        assert field in reply.text, (setting, reply.text)
    hostile = tmp_path / "prism.yaml"
    hostile.write_text(yaml.safe_dump(blue_spec(port, trio, retry_on=[505])))
    refused = server.cli("apply", "-f", str(hostile))
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "unknown retry-on condition" in refused.stderr
    assert server.api("GET", "/config").json() == before
    assert "retry-on" not in (StatePaths(server.state_dir).config).read_text()
