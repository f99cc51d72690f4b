"""A fleet of three HAProxy nodes kept in step: every change on every node, all or nothing."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from prism.testing.fleet import LocalFleet
from prism.testing.load import run_load_in_thread
from prism.testing.processes import Backend, BackendSpec, backends, free_port
from prism.testing.wait import wait_for
from tests.integration.fleet.conftest import wait_fleet_up

pytestmark = [pytest.mark.haproxy, pytest.mark.etcd]


def colors_seen(
    fleet: LocalFleet, index: int, port: int, n: int = 60, **headers: str
) -> Counter[str]:
    seen: Counter[str] = Counter()
    with httpx.Client(timeout=5) as client:
        for _ in range(n):
            seen[client.get(fleet.node_url(index, port), headers=headers).json()["color"]] += 1
    return seen


def test_every_change_reaches_every_node(fleet: LocalFleet, shop_port: int) -> None:
    """Release, shift, pin and server add through one API act on all three listeners."""
    released = fleet.api("POST", "/apps/shop/release", {"to": "green"})
    assert released.status_code == 200, released.text
    assert released.json()["phase"] == "completed"
    for index in range(3):
        assert set(colors_seen(fleet, index, shop_port, 20)) == {"green"}
    shifted = fleet.api("PUT", "/apps/shop/weights", {"weights": {"green": 50, "red": 50}})
    assert shifted.status_code == 200, shifted.text
    assert sorted(shifted.json()["operations"]) == ["lb-1 applied", "lb-2 applied", "lb-3 applied"]
    for index in range(3):
        seen = colors_seen(fleet, index, shop_port, 200)
        assert set(seen) == {"green", "red"}, seen
        assert 60 <= seen["red"] <= 140, seen
    pinned = fleet.api("PUT", "/apps/shop/pins/acme", {"color": "blue"})
    assert pinned.status_code == 200, pinned.text
    for index in range(3):
        assert set(colors_seen(fleet, index, shop_port, 10, **{"X-Tenant": "acme"})) == {"blue"}
    status = fleet.api("GET", "/apps/shop").json()
    server = status["colors"][0]["servers"][0]
    assert sorted(server["nodes"]) == ["lb-1", "lb-2", "lb-3"]
    nodes = fleet.api("GET", "/nodes").json()
    revision = status["desired_revision"]
    assert [(n["name"], n["state"], n["applied_revision"] >= revision) for n in nodes] == [
        ("lb-1", "live", True),
        ("lb-2", "live", True),
        ("lb-3", "live", True),
    ]
    assert fleet.api("DELETE", "/apps/shop/pins/acme").status_code == 200
    back = fleet.api("PUT", "/apps/shop/weights", {"weights": {"blue": 100}})
    assert back.status_code == 200, back.text


def test_server_add_reaches_every_node(
    fleet: LocalFleet, shop_port: int, color_servers: dict[str, Backend]
) -> None:
    """A server added through the API joins its color on every node, UP on each."""
    added = fleet.api(
        "POST", "/apps/shop/colors/red/servers", {"address": color_servers["red"].address}
    )
    assert added.status_code == 200, added.text
    status = fleet.api("GET", "/apps/shop").json()
    red = next(c for c in status["colors"] if c["name"] == "red")
    assert [s["name"] for s in red["servers"]] == ["s1", "s2"]
    assert {n: r["status"] for n, r in red["servers"][1]["nodes"].items()} == {
        "lb-1": "UP",
        "lb-2": "UP",
        "lb-3": "UP",
    }
    removed = fleet.api("DELETE", "/apps/shop/colors/red/servers/s2")
    assert removed.status_code == 200, removed.text


def test_cutovers_and_weight_moves_under_load_lose_nothing(
    fleet: LocalFleet, shop_port: int
) -> None:
    """Load on all three listeners through 10 cutovers and 20 weight moves: 0 failed requests."""
    loads = [
        run_load_in_thread(fleet.agents[i].address, shop_port, duration=12.0, concurrency=4)
        for i in range(3)
    ]
    time.sleep(0.5)  # let every load generator open its connections first
    for n in range(10):
        to = "green" if n % 2 == 0 else "blue"
        reply = fleet.api("POST", "/apps/shop/release", {"to": to, "smoke": False})
        assert reply.status_code == 200, reply.text
    for n in range(20):
        green = 5 * (n + 1) % 100
        reply = fleet.api(
            "PUT", "/apps/shop/weights", {"weights": {"blue": 100 - green, "green": green}}
        )
        assert reply.status_code == 200, reply.text
    reports = [load.result(timeout=60) for load in loads]
    for index, report in enumerate(reports):
        assert report.total > 300, (index, report.summary())
        assert report.failures == [], (index, report.summary(), report.failures[:5])
    fleet.api("PUT", "/apps/shop/weights", {"weights": {"blue": 100}})


def _workers(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [int(pid) for pid in children]


@contextlib.contextmanager
def frozen_haproxy(fleet: LocalFleet, index: int) -> Iterator[None]:
    """SIGSTOP one node's HAProxy workers: its listener and Runtime API stop answering."""
    master = fleet.haproxy_pid(index)
    assert master is not None
    workers = _workers(master)
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in workers:
            os.kill(pid, signal.SIGCONT)


def test_one_node_unable_to_stage_changes_no_node(fleet: LocalFleet, shop_port: int) -> None:
    """lb-2 cannot stage a pin: the change fails naming lb-2, and no node ever applies it."""
    with frozen_haproxy(fleet, 1):
        reply = fleet.api("PUT", "/apps/shop/pins/acme", {"color": "red"})
    assert reply.status_code == 502, reply.text
    problem = reply.json()
    assert "lb-2" in problem["detail"], problem
    assert list(problem["nodes"]) == ["lb-2"], problem
    for index in range(3):
        seen = colors_seen(fleet, index, shop_port, 20, **{"X-Tenant": "acme"})
        assert set(seen) == {"blue"}, (index, seen)
    assert fleet.api("GET", "/apps/shop/pins").json() == []
    history = fleet.api("GET", "/apps/shop/history?limit=5").json()
    assert [h["action"] for h in history[:2]] == ["pin.reverted", "pin"]


def test_a_node_that_cannot_read_its_servers_refuses_a_shift(
    fleet: LocalFleet, shop_port: int
) -> None:
    """A gate judges every live node: lb-2 sends no readings, so the shift is refused."""
    with frozen_haproxy(fleet, 1):
        reply = fleet.api("PUT", "/apps/shop/weights", {"weights": {"blue": 50, "red": 50}})
    assert reply.status_code == 502, reply.text
    assert list(reply.json()["nodes"]) == ["lb-2"]
    assert fleet.api("GET", "/apps/shop").json()["weights"] == {"blue": 100}
    for index in range(3):
        assert set(colors_seen(fleet, index, shop_port, 20)) == {"blue"}, index


def test_registrations_reach_every_node_and_expire_on_every_node(
    fleet: LocalFleet, shop_port: int, color_servers: dict[str, Backend]
) -> None:
    """A server registering with the fleet joins red on all three nodes (UP on each); when
    it stops renewing, etcd ends its lease and every node drains and removes it."""
    body = {"address": color_servers["red"].address, "ttl": 2000}
    reply = fleet.api("PUT", "/apps/shop/colors/red/registrations/r9", body)
    assert reply.status_code == 200, reply.text
    red = next(c for c in fleet.api("GET", "/apps/shop").json()["colors"] if c["name"] == "red")
    joined = next(s for s in red["servers"] if s["name"] == "r9")
    assert joined["source"] == "registration"
    assert {n: r["status"] for n, r in joined["nodes"].items()} == {
        "lb-1": "UP",
        "lb-2": "UP",
        "lb-3": "UP",
    }
    wait_for(
        lambda: [
            s["name"]
            for c in fleet.api("GET", "/apps/shop").json()["colors"]
            if c["name"] == "red"
            for s in c["servers"]
        ],
        until=lambda names: names == ["s1"],
        timeout=10,
        what="r9 to expire",
    )

    def configs() -> list[bool]:
        return ["server r9 " in (n.state_dir / "haproxy.cfg").read_text() for n in fleet.agents]

    wait_for(configs, until=lambda found: not any(found), timeout=10, what="r9 gone on every node")
    history = fleet.api("GET", "/apps/shop/history?limit=20").json()
    assert "registration.expired" in [h["action"] for h in history]


def test_slow_server_weights_and_dns_weights_are_per_node(
    fleet: LocalFleet, shop_port: int
) -> None:
    """Each node judges its own traffic: a slow server loses weight only on the node that
    carries load (audited with that node's name), and DNS weights are per node, one Route
    53 record each, following the servers each node sees."""
    specs = [BackendSpec("blue", "v1", name=f"s{n}") for n in (1, 2, 3)]
    original = fleet.api("GET", "/config").json()["spec"]
    port = free_port()
    app = {
        "name": "edge",
        "bind": f"0.0.0.0:{port}",
        "stable": "blue",
        "check": {"path": "/healthz", "inter_ms": "200ms", "rise": 2, "fall": 2},
        "slow_servers": {
            "enabled": True,
            "window_ms": "1s",
            "recover_after_ms": "1s",
            "min_requests": 10,
            "step": 45,
        },
        "dns": {"name": "edge.example.com", "ttl_ms": "20s"},
    }
    with backends(specs) as trio:
        servers = [{"name": b.name, "host": b.host, "port": b.port} for b in trio]
        app["colors"] = [{"name": "blue", "servers": servers}]
        spec = {**original, "apps": [*original["apps"], app]}
        try:
            reply = fleet.api("PUT", "/config", {"spec": spec})
            assert reply.status_code == 200, reply.text

            def servers() -> dict[str, Any]:
                status = fleet.api("GET", "/apps/edge").json()
                return {s["name"]: s for s in status["colors"][0]["servers"]}

            wait_for(
                servers,
                until=lambda s: all(
                    n["status"] == "UP" for e in s.values() for n in e["nodes"].values()
                ),
                timeout=15,
                what="edge UP on every node",
            )
            load = run_load_in_thread(
                fleet.agents[0].address, port, duration=5, concurrency=12, max_seconds=30
            )
            time.sleep(1.0)  # not a wait: one window of ordinary traffic first
            httpx.post(f"{trio[1].url}/_fault", json={"status": None, "delay_ms": 300})
            lowered = wait_for(
                lambda: servers()["s2"],
                until=lambda s: s["nodes"]["lb-1"]["weight"] < 100,
                timeout=8,
                interval=0.2,
                what="s2 lowered on lb-1",
            )
            assert lowered["nodes"]["lb-1"]["slow"].startswith("slow: ")
            assert (lowered["nodes"]["lb-2"]["weight"], lowered["nodes"]["lb-3"]["weight"]) == (
                100,
                100,
            )
            report = load.result(timeout=60)
            assert report.failures == [], report.summary()
            moves = [
                h
                for h in fleet.api("GET", "/apps/edge/history?limit=50").json()
                if h["action"] == "server.weight"
            ]
            assert moves
            assert {(m["detail"]["server"], m["detail"]["node"]) for m in moves} == {("s2", "lb-1")}
            httpx.delete(f"{trio[1].url}/_fault")
            httpx.post(f"{trio[0].url}/_health", json={"ok": False})
            weights = wait_for(
                lambda: fleet.api("GET", "/dns-weights?app=edge").json(),
                until=lambda rows: [r["weight"] for r in rows] == [66, 66, 66],
                timeout=10,
                what="edge at 66 on every node",
            )
            assert [r["node"] for r in weights] == ["lb-1", "lb-2", "lb-3"]
            batch = fleet.api("GET", "/dns-weights?app=edge&format=route53").json()
            records = [c["ResourceRecordSet"] for c in batch["Changes"]]
            assert [(r["SetIdentifier"], r["Weight"]) for r in records] == [
                ("lb-1", 66),
                ("lb-2", 66),
                ("lb-3", 66),
            ]
            assert [r["ResourceRecords"][0]["Value"] for r in records] == [
                a.address for a in fleet.agents
            ]
            httpx.post(f"{trio[0].url}/_health", json={"ok": True})
            wait_for(
                lambda: fleet.api("GET", "/dns-weights?app=edge").json(),
                until=lambda rows: [r["weight"] for r in rows] == [100, 100, 100],
                timeout=10,
                what="edge back at 100 on every node",
            )
        finally:
            fleet.api("PUT", "/config", {"spec": original})


def test_a_canary_slow_on_every_node_is_rolled_back_by_the_fleets_p99(
    fleet: LocalFleet, shop_port: int, color_servers: dict[str, Backend]
) -> None:
    """Green answers 200 after 150 ms: only ``max_p99_response_ms`` can fail the step. The
    agents' request logs, summed over the nodes that carry the load, give the p99 and the
    exact counts the rollback names."""
    original = fleet.api("GET", "/config").json()["spec"]
    port = free_port()
    app = {
        "name": "tail",
        "bind": f"0.0.0.0:{port}",
        "stable": "blue",
        "check": {"path": "/healthz", "inter_ms": "200ms", "rise": 2, "fall": 2},
        "colors": [
            {"name": color, "servers": [{"name": "s1", "host": "127.0.0.1", "port": b.port}]}
            for color, b in color_servers.items()
            if color in ("blue", "green")
        ],
    }
    green = color_servers["green"].url
    try:
        reply = fleet.api(
            "PUT", "/config", {"spec": {**original, "apps": [*original["apps"], app]}}
        )
        assert reply.status_code == 200, reply.text
        wait_fleet_up(fleet, ["blue", "green"], timeout=15, app="tail")
        assert httpx.post(f"{green}/_fault", json={"status": None, "delay_ms": 150}).is_success
        loads = [
            run_load_in_thread(
                fleet.agents[i].address, port, duration=4, concurrency=6, max_seconds=60
            )
            for i in (0, 1)
        ]
        plan = {
            "to": "green",
            "smoke": False,
            "analysis": {
                "tick_ms": 250,
                "min_requests": 20,
                "max_mean_response_ms": None,
                "max_response_vs_stable": None,
                "max_p99_response_ms": 100,
            },
            "steps": [{"weight": 50}, {"pause": "30s"}, {"weight": 100}],
        }
        reply = fleet.api("POST", "/apps/tail/releases", {"plan": plan})
        assert reply.status_code == 200, reply.text
        record = wait_for(
            lambda: next(
                r
                for r in fleet.api("GET", "/apps/tail/releases").json()
                if r["to_color"] == "green"
            ),
            until=lambda r: r["phase"] in {"rolled_back", "failed", "completed"},
            timeout=30,
            what="the tail release to end",
        )
        reports = [load.result(timeout=90) for load in loads]
        assert record["phase"] == "rolled_back", record["steps"]
        reason = next(e for e in record["steps"] if e["name"] == "rollback")
        assert "p99 response" in reason["message"]
        assert "5xx" not in reason["message"]
        readings = reason["readings"]
        assert readings["source"] == "log"
        assert readings["checks"]["p99_response"] == "fail"
        assert readings["log"]["p99_ms"] >= 140
        assert readings["log"]["requests"] >= 20
        assert readings["baseline_log"]["p99_ms"] < 100
        for report in reports:
            assert report.failures == [], report.summary()
        for index in range(len(fleet.agents)):
            assert colors_seen(fleet, index, port, n=20) == Counter({"blue": 20})
    finally:
        httpx.delete(f"{green}/_fault")
        fleet.api("PUT", "/config", {"spec": original})


def test_metrics_and_named_tokens_in_a_fleet(fleet: LocalFleet, shop_port: int) -> None:
    """/metrics names every node's applied revision and servers; a named token lives in etcd."""
    from prometheus_client.parser import text_string_to_metric_families

    made = fleet.api("POST", "/tokens", {"name": "fleet-ci", "role": "viewer"})
    assert made.status_code == 200, made.text
    plane = fleet.control[0]
    secret = made.json()["secret"]
    who = httpx.get(
        f"{plane.url}/api/v1/whoami", headers={"Authorization": f"Bearer {secret}"}, timeout=10
    )
    assert who.json() == {"name": "fleet-ci", "role": "viewer"}
    nodes = {a.name for a in fleet.agents}

    def scraped() -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
        text = httpx.get(f"{plane.url}/metrics", timeout=10).text
        found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = tuple(sorted(sample.labels.items()))
                found.setdefault(sample.name, {})[labels] = sample.value
        return found

    samples = wait_for(
        scraped,
        until=lambda s: {dict(k)["node"] for k in s.get("prism_server_up", {})} == nodes,
        timeout=15,
        what="every node's servers in /metrics",
    )
    desired = samples["prism_desired_revision"][()]
    applied = {dict(k)["node"]: v for k, v in samples["prism_applied_revision"].items()}
    assert set(applied) == nodes
    assert all(v == desired for v in applied.values())
    up = samples["prism_server_up"]
    assert all(v == 1 for k, v in up.items() if dict(k)["app"] == "shop")
    assert fleet.api("DELETE", "/tokens/fleet-ci").status_code == 200
