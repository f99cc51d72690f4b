"""A fleet under faults: agents killed, etcd down, a member lost, the leader killed, compaction.

Each test runs its own fleet (etcd, three agents with their own HAProxy on
127.0.0.2-4, control planes), stopped by PID at the end whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from prism.testing.etcd import EtcdCluster, EtcdServer, compact
from prism.testing.fleet import LocalFleet
from prism.testing.load import LoadReport, run_load_in_thread
from prism.testing.processes import Backend, free_port
from prism.testing.wait import wait_for
from tests.integration.fleet.conftest import fleet_spec, wait_fleet_up

pytestmark = [pytest.mark.haproxy, pytest.mark.etcd]

FAST = {"tick_ms": 200, "min_requests": 20}


@contextlib.contextmanager
def running_fleet(
    tmp_path: Path, servers: dict[str, Backend], **options: Any
) -> Iterator[tuple[LocalFleet, int]]:
    port = free_port()
    # A short base: HAProxy's stats socket path must stay under 97 characters, and a
    # test's own tmp_path (deeper still under a parallel worker) can be longer.
    with (
        tempfile.TemporaryDirectory(prefix="prism-fleet-") as base,
        LocalFleet(Path(base), **options) as fleet,
    ):
        reply = fleet.api("PUT", "/config", {"spec": fleet_spec(port, servers)})
        assert reply.status_code == 200, reply.text
        wait_fleet_up(fleet, list(servers))
        yield fleet, port


def loads(fleet: LocalFleet, port: int, seconds: float) -> list[Any]:
    return [
        run_load_in_thread(node.address, port, duration=seconds, concurrency=3)
        for node in fleet.agents
    ]


def no_failures(futures: list[Any]) -> list[LoadReport]:
    reports: list[LoadReport] = [f.result(timeout=120) for f in futures]
    for index, report in enumerate(reports):
        assert report.total > 100, (index, report.summary())
        assert report.failures == [], (index, report.summary(), report.failures[:5])
    return reports


def release_of(fleet: LocalFleet, color: str, *, plane: int = 0) -> dict[str, Any]:
    records = fleet.api("GET", "/apps/shop/releases", plane=plane).json()
    return next(r for r in records if r["to_color"] == color)


def wait_phase(fleet: LocalFleet, color: str, phases: set[str], timeout: float = 30) -> Any:
    return wait_for(
        lambda: release_of(fleet, color),
        until=lambda r: r["phase"] in phases,
        timeout=timeout,
        what=f"the release of {color} to reach {sorted(phases)}",
    )


def start_canary(fleet: LocalFleet, steps: list[dict[str, Any]]) -> None:
    plan = {"to": "green", "steps": steps, "analysis": FAST, "smoke": False}
    reply = fleet.api("POST", "/apps/shop/releases", {"plan": plan})
    assert reply.status_code == 200, reply.text


def served(fleet: LocalFleet, index: int, port: int) -> str:
    import httpx

    return str(httpx.get(fleet.node_url(index, port), timeout=5).json()["color"])


def test_agent_killed_mid_release_holds_it_then_resyncs(
    tmp_path: Path, color_servers: dict[str, Backend]
) -> None:
    """kill -9 lb-2's agent mid-release: it is lost, the release holds, no listener drops a
    request (lb-2's HAProxy keeps serving); restarted, it resyncs and the release completes."""
    with running_fleet(tmp_path, color_servers) as (fleet, port):
        traffic = loads(fleet, port, 14.0)
        start_canary(fleet, [{"weight": 50}, {"pause": "2s"}, {"weight": 100}])
        wait_for(
            lambda: release_of(fleet, "green")["step"],
            until=lambda s: s >= 1,
            timeout=15,
            what="the first step",
        )
        fleet.kill_agent(1)
        held = wait_phase(fleet, "green", {"holding"}, timeout=15)
        assert "lb-2" in held["steps"][-1]["message"]
        nodes = {n["name"]: n["state"] for n in fleet.api("GET", "/nodes").json()}
        assert nodes == {"lb-1": "live", "lb-2": "lost", "lb-3": "live"}
        fleet.start_agent(1)
        done = wait_phase(fleet, "green", {"completed"}, timeout=30)
        assert done["phase"] == "completed"
        revision = fleet.api("GET", "/apps/shop").json()["desired_revision"]
        rows = fleet.wait_live(3)
        assert all(r["applied_revision"] >= revision for r in rows), rows
        assert {served(fleet, i, port) for i in range(3)} == {"green"}
        membership = [
            (h["action"], h["detail"]["node"])
            for h in fleet.api("GET", "/history?limit=200").json()
            if h["action"] in ("node.lost", "node.returned")
        ]
        assert membership[::-1] == [("node.lost", "lb-2"), ("node.returned", "lb-2")]
        no_failures(traffic)


def test_forgetting_a_lost_node_lets_the_release_go_on(
    tmp_path: Path, color_servers: dict[str, Backend]
) -> None:
    """A node that never returns holds a release until a person forgets it."""
    with running_fleet(tmp_path, color_servers) as (fleet, port):
        fleet.stop_agent(2)
        # requests for the analysis to judge (a pause never passes on silence)
        traffic = [
            run_load_in_thread(node.address, port, duration=12.0, concurrency=2)
            for node in fleet.agents[:2]
        ]
        start_canary(fleet, [{"weight": 50}, {"pause": "1s"}, {"weight": 100}])
        wait_phase(fleet, "green", {"holding"}, timeout=15)
        forgotten = fleet.api("DELETE", "/nodes/lb-3")
        assert forgotten.status_code == 200, forgotten.text
        wait_phase(fleet, "green", {"completed"}, timeout=30)
        assert {served(fleet, i, port) for i in range(2)} == {"green"}
        names = [n["name"] for n in fleet.api("GET", "/nodes").json()]
        assert names == ["lb-1", "lb-2"]
        assert fleet.api("DELETE", "/nodes/lb-1").status_code == 409
        no_failures(traffic)


def test_etcd_down_keeps_every_listener_serving(
    tmp_path: Path, color_servers: dict[str, Backend]
) -> None:
    """etcd stopped for 10 s under load: no listener fails a request, changes are refused
    with a clear 503; once it is back every node converges on the latest revision."""
    with running_fleet(tmp_path, color_servers) as (fleet, port):
        assert isinstance(fleet.etcd, EtcdServer)
        traffic = loads(fleet, port, 16.0)
        time.sleep(1.0)  # load before the outage, not a wait
        fleet.etcd.stop()
        down_at = time.monotonic()
        refused = fleet.api("PUT", "/apps/shop/weights", {"weights": {"blue": 50, "green": 50}})
        assert refused.status_code == 503, refused.text
        assert "etcd" in refused.json()["detail"]
        while time.monotonic() - down_at < 10.0:
            time.sleep(0.5)  # the outage itself lasts 10 s, not a wait
        fleet.etcd.restart()
        shifted = wait_for(
            lambda: fleet.api("PUT", "/apps/shop/weights", {"weights": {"blue": 50, "green": 50}}),
            until=lambda r: r.status_code == 200,
            timeout=30,
            what="a shift to be accepted after etcd returned",
        )
        revision = (
            shifted.json().get("revision")
            or fleet.api("GET", "/apps/shop").json()["desired_revision"]
        )
        rows = wait_for(
            lambda: fleet.api("GET", "/nodes").json(),
            until=lambda rs: (
                len(rs) == 3 and all(r.get("applied_revision", 0) >= revision for r in rs)
            ),
            timeout=30,
            what="every node on the latest revision",
        )
        assert [r["state"] for r in rows] == ["live", "live", "live"]
        no_failures(traffic)


def test_a_release_completes_with_an_etcd_member_killed(
    tmp_path: Path, color_servers: dict[str, Backend]
) -> None:
    """A 3-member etcd cluster loses one member mid-release; the release completes."""
    with running_fleet(tmp_path, color_servers, etcd_members=3) as (fleet, port):
        traffic = loads(fleet, port, 12.0)
        start_canary(fleet, [{"weight": 30}, {"pause": "2s"}, {"weight": 100}])
        wait_for(
            lambda: release_of(fleet, "green")["step"],
            until=lambda s: s >= 1,
            timeout=15,
            what="the first step",
        )
        cluster = fleet.etcd
        assert isinstance(cluster, EtcdCluster)
        cluster.members[0].kill9()
        done = wait_phase(fleet, "green", {"completed"}, timeout=40)
        assert done["phase"] == "completed"
        assert {served(fleet, i, port) for i in range(3)} == {"green"}
        no_failures(traffic)


def test_the_other_control_plane_completes_a_release_when_the_leader_dies(
    tmp_path: Path, color_servers: dict[str, Backend]
) -> None:
    """Two control planes; the leader is killed -9 during a pause; the other finishes the
    release with the pause's remaining time, not a fresh one."""
    with running_fleet(tmp_path, color_servers, planes=2) as (fleet, port):
        roles = [fleet.api("GET", "/health", plane=i).json()["role"] for i in range(2)]
        assert sorted(roles) == ["follower", "leader"]
        leader = roles.index("leader")
        other = 1 - leader
        traffic = loads(fleet, port, 16.0)
        start_canary(fleet, [{"weight": 40}, {"pause": "6s"}, {"weight": 100}])
        paused_at = time.monotonic()
        wait_for(
            lambda: release_of(fleet, "green", plane=other)["step"],
            until=lambda s: s >= 1,
            timeout=15,
            what="the first step",
        )
        fleet.control[leader].process.kill9()
        wait_for(
            lambda: fleet.api("GET", "/health", plane=other).json()["role"],
            until=lambda r: r == "leader",
            timeout=15,
            what="the other control plane to lead",
        )
        done = wait_for(
            lambda: release_of(fleet, "green", plane=other),
            until=lambda r: r["phase"] == "completed",
            timeout=30,
            what="the release to complete",
        )
        took = time.monotonic() - paused_at
        assert 5.0 <= took <= 14.0, took  # the 6 s pause, plus a takeover within the lease
        assert done["phase"] == "completed"
        assert {served(fleet, i, port) for i in range(3)} == {"green"}
        no_failures(traffic)


def test_an_agent_offline_across_a_compaction_resyncs_fully(
    tmp_path: Path, color_servers: dict[str, Backend]
) -> None:
    """lb-2's agent is frozen while changes land and etcd compacts past its revision; when it
    runs again its watch cannot resume, so it resyncs and serves the latest routing."""
    with running_fleet(tmp_path, color_servers) as (fleet, port):
        agent = fleet.agents[1].process
        assert agent is not None
        assert isinstance(fleet.etcd, EtcdServer)
        os.kill(agent.pid, signal.SIGSTOP)
        try:
            fleet.wait_live(2)
            wait_for(
                lambda: {n["name"]: n["state"] for n in fleet.api("GET", "/nodes").json()},
                until=lambda s: s.get("lb-2") == "lost",
                timeout=15,
                what="lb-2 to be lost",
            )
            for green in (10, 20, 30):
                weights = {"blue": 100 - green, "green": green}
                reply = fleet.api("PUT", "/apps/shop/weights", {"weights": weights})
                assert reply.status_code == 200, reply.text
            moved = fleet.api("PUT", "/apps/shop/weights", {"weights": {"red": 100}})
            assert moved.status_code == 200, moved.text
            asyncio.run(compact(fleet.etcd))
        finally:
            os.kill(agent.pid, signal.SIGCONT)
        revision = fleet.api("GET", "/apps/shop").json()["desired_revision"]
        wait_for(
            lambda: {n["name"]: n for n in fleet.api("GET", "/nodes").json()}["lb-2"],
            until=lambda n: n["state"] == "live" and n["applied_revision"] >= revision,
            timeout=30,
            what="lb-2 to resync to the latest revision",
        )
        assert served(fleet, 1, port) == "red"
