"""Release judgment against a real `prism serve`, HAProxy and demo backends: a canary that
turns 5xx is off traffic within a tick at default settings, with a client-side loss inside
share x rate x (tick + slack); a canary that gets no traffic goes inconclusive and holds; a
rollback after stable lost a server keeps stable within its capacity."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from prism.testing.load import run_load_in_thread
from prism.testing.processes import Backend, BackendSpec, backends, free_port
from prism.testing.wait import wait_for
from tests.conftest import Server, shop_spec, wait_for_traffic, wait_until_up
from tests.integration.test_releases import (
    release_of,
    setup_app,
    wait_phase,
    wait_share,
    weights,
)

pytestmark = pytest.mark.haproxy

#: Time the rollback itself may take after the tick that sees the fault (a map change,
#: its read-back and a saved record: milliseconds), with room for a shared 2-core box.
SLACK_S = 1.0


def start(server: Server, plan: dict[str, Any]) -> dict[str, Any]:
    reply = server.api("POST", "/apps/shop/releases", {"plan": {"smoke": False, **plan}})
    assert reply.status_code == 200, reply.text
    answer: dict[str, Any] = reply.json()
    return answer


def test_a_10pct_canary_turning_5xx_is_off_traffic_within_a_tick(
    server: Server, color_backends: dict[str, Backend]
) -> None:
    """Default analysis (1 s tick, 10 s window): a 10% canary answering 500 is rolled back by
    the next tick; the requests that failed stay below share x rate x (tick + slack)."""
    port = setup_app(server, color_backends)
    future = run_load_in_thread(
        "127.0.0.1", port, duration=7, concurrency=10, keepalive=True, max_seconds=60
    )
    wait_for_traffic(server, "shop.blue")
    start(server, {"to": "green", "steps": [{"weight": 10}, {"pause": "60s"}, {"weight": 100}]})
    wait_share(server, "green", 10)
    shared_at = time.monotonic()
    # a couple of healthy ticks first, so the sliding window holds good traffic too
    wait_for(
        lambda: release_of(server, "green").get("verdict") or {},
        until=lambda verdict: verdict.get("outcome") == "pass",
        timeout=10,
        what="a passing reading of the canary",
    )
    fault_at = time.monotonic()
    green = color_backends["green"].url
    assert httpx.post(f"{green}/_fault", json={"status": 500}).status_code == 200
    record = wait_phase(server, "green", {"rolled_back", "failed"}, timeout=15)
    rolled_at = time.monotonic()
    report = future.result(timeout=90)
    assert record["phase"] == "rolled_back", record["steps"]
    assert weights(server) == {"blue": 100}
    reason = next(e for e in record["steps"] if e["name"] == "rollback")
    assert "5xx ratio" in reason["message"]
    assert reason["readings"]["window"] == "sliding"

    before = report.between(shared_at, fault_at)
    share = before.by_color.get("green", 0) / max(before.total, 1)  # the share seen, ~10%
    rate = report.total / report.elapsed
    tick_s = record["analysis"]["tick_ms"] / 1000
    assert tick_s == 1.0  # the default
    bound = share * rate * (tick_s + SLACK_S)
    failed = [s for s in report.samples if s.status >= 500]
    assert failed, "the fault should have shown"
    assert len(failed) <= bound, (len(failed), bound, share, rate, rolled_at - fault_at)
    after = report.between(rolled_at + 0.2, report.finished)
    assert "green" not in after.by_color


def test_a_canary_without_traffic_goes_inconclusive_and_holds(
    server: Server, color_backends: dict[str, Backend]
) -> None:
    """No request reaches the canary: after max_wait its reading is inconclusive and the
    release holds, audited, with traffic where it was; it neither promotes nor waits on."""
    setup_app(server, color_backends)
    analysis = {"tick_ms": 200, "max_wait_ms": 1500}
    steps = [{"weight": 10}, {"pause": "1s"}, {"weight": 100}]
    start(server, {"to": "green", "steps": steps, "analysis": analysis})
    record = wait_phase(server, "green", {"holding", "completed", "rolled_back"}, timeout=15)
    assert record["phase"] == "holding", record["steps"]
    assert record["held"] == "inconclusive"
    held = [e for e in record["steps"] if e["name"] == "held"][-1]
    assert "inconclusive" in held["message"], held
    # Analysis goes on while held (a canary that starts failing is still rolled back),
    # so the live verdict is the next tick's: still no data.
    assert record["verdict"]["outcome"] in ("wait", "inconclusive"), record["verdict"]
    assert "waiting for data: 0/20 requests" in record["verdict"]["message"]
    assert record["step"] == 1  # still at the pause: its 1 s is long over
    assert weights(server) == {"blue": 90, "green": 10}
    history = server.api("GET", "/apps/shop/history?limit=5").json()
    assert history[0]["action"] == "release.held"
    assert "inconclusive" in history[0]["detail"]["step"]["message"]
    status = server.cli("release", "status", "shop")
    assert "holding" in status.stdout
    assert "inconclusive" in status.stdout
    aborted = server.api("POST", "/apps/shop/releases/abort", {"reason": "no traffic to judge"})
    assert aborted.status_code == 200, aborted.text
    wait_phase(server, "green", {"rolled_back"})
    assert weights(server) == {"blue": 100}


@pytest.fixture
def two_blue() -> Iterator[list[Backend]]:
    """Blue on two demo backends (s1, s2), green on one."""
    specs = [
        BackendSpec("blue", "v1", "s1"),
        BackendSpec("blue", "v1", "s2"),
        BackendSpec("green", "v2", "s1"),
    ]
    with backends(specs) as running:
        yield running


def test_a_rollback_after_stable_lost_a_server_keeps_stable_within_its_capacity(
    server: Server, two_blue: list[Backend]
) -> None:
    """Blue carried 100% on 2 servers when the release began; one dies mid-canary: the abort
    gives blue 50%, not 100%, keeps the rest on green, and says why."""
    port = free_port()
    spec = shop_spec(port, {"blue": two_blue[0], "green": two_blue[2]})
    blue = spec["apps"][0]["colors"][0]
    blue["servers"].append({"name": "s2", "host": "127.0.0.1", "port": two_blue[1].port})
    reply = server.api("PUT", "/config", {"spec": spec})
    assert reply.status_code == 200, reply.text
    wait_until_up(server, "shop", ["blue", "green"])
    steps = [{"weight": 10}, {"pause": "60s"}, {"weight": 100}]
    start(server, {"to": "green", "steps": steps, "analysis": {"tick_ms": 200}})
    wait_share(server, "green", 10)
    assert release_of(server, "green")["initial_up"] == {"blue": 2, "green": 1}
    two_blue[1].kill9()
    wait_for(
        lambda: server.api("GET", "/apps/shop").json()["colors"],
        until=lambda colors: any(
            s["name"] == "s2" and s["status"].startswith("DOWN")
            for c in colors
            if c["name"] == "blue"
            for s in c["servers"]
        ),
        timeout=10,
        what="blue s2 DOWN",
    )
    aborted = server.api("POST", "/apps/shop/releases/abort", {"reason": "stop"})
    assert aborted.status_code == 200, aborted.text
    record = wait_phase(server, "green", {"rolled_back", "failed"})
    assert record["phase"] == "rolled_back", record["steps"]
    assert weights(server) == {"blue": 50, "green": 50}
    done = record["steps"][-1]["message"]
    assert "blue has 1 of the 2 ready server(s)" in done
    assert "it gets 50% instead of 100%, 50% stays on green" in done
    answers = {httpx.get(f"http://127.0.0.1:{port}/").json()["color"] for _ in range(40)}
    assert answers == {"blue", "green"}
