"""The request log against a real `prism serve`, HAProxy and demo backends: the log-fed
per-color counts equal a client's own count of the same requests, its quantiles are within
the bucket error of the client's times, and a canary whose p99 is over its ceiling is rolled
back by the p99 gate alone."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from prism.core.requestlog import MAX_RELATIVE_ERROR
from prism.testing.load import run_load_in_thread
from prism.testing.processes import Backend, free_port
from prism.testing.wait import wait_for
from tests.conftest import Server, run_server, shop_spec, wait_for_traffic, wait_until_up
from tests.integration.test_releases import release_of, setup_app, wait_phase, weights

pytestmark = pytest.mark.haproxy

REQUESTS = 300
#: what a client's time of one request adds to HAProxy's %Ta on a shared 2-core box:
#: the client's own parsing and the loopback hops
CLIENT_OVERHEAD_MS = 15.0


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One `prism serve` for this module's tests (each applies its own spec)."""
    with run_server(tmp_path_factory.mktemp("reqlog") / "state") as running:
        yield running


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def logged(server: Server, color: str, app: str = "counted") -> dict[str, Any] | None:
    status = server.api("GET", f"/apps/{app}").json()
    found: dict[str, Any] | None = next(c for c in status["colors"] if c["name"] == color)[
        "requests"
    ]
    return found


def test_log_fed_histograms_match_a_client_side_count(
    shared: Server, color_backends: dict[str, Backend]
) -> None:
    """300 requests to blue, ~10% of them a slow 500: the log's count of blue's requests
    and of its 5xx equal the client's exactly, green logs none, and p50/p95/p99 are within
    the bucket error (plus the client's own overhead) of the client-measured times."""
    server = shared
    # an app of its own: its backends' logs start at zero whatever ran before
    port = free_port()
    spec = shop_spec(port, color_backends, name="counted")
    assert server.api("PUT", "/config", {"spec": spec}).status_code == 200
    wait_until_up(server, "counted", list(color_backends))
    blue = color_backends["blue"].url
    fault = {"status": 500, "delay_ms": 50, "ratio": 0.1}
    assert httpx.post(f"{blue}/_fault", json=fault).status_code == 200
    statuses: dict[int, int] = {}
    times: list[float] = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        for n in range(REQUESTS):
            began = time.perf_counter()
            reply = client.get(f"/item/{n}")
            times.append((time.perf_counter() - began) * 1000)
            assert reply.headers["X-Prism-Color"] == "blue"
            statuses[reply.status_code] = statuses.get(reply.status_code, 0) + 1
    errors = sum(count for status, count in statuses.items() if status >= 500)
    assert 0 < errors < REQUESTS, statuses  # the fault showed, and not on every request

    found = wait_for(
        lambda: logged(server, "blue") or {},
        until=lambda log: log.get("requests", 0) >= REQUESTS,
        timeout=10,
        what=f"{REQUESTS} logged requests of blue",
    )
    assert found["requests"] == REQUESTS
    assert found["errors_5xx"] == errors
    assert found["every"] == 1
    green = logged(server, "green")
    assert green is not None
    assert green["requests"] == 0
    for name, q in (("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99)):
        client = nearest_rank(times, q)
        value = found[name]
        # HAProxy's time ends before the client's does: never above it (bar the bucket
        # error), and below it by at most the client's own overhead
        assert value <= client * (1 + MAX_RELATIVE_ERROR) + 0.5, (name, value, client)
        assert value >= client * (1 - MAX_RELATIVE_ERROR) - CLIENT_OVERHEAD_MS, (
            name,
            value,
            client,
        )
    assert found["p99_ms"] >= 50 * (1 - MAX_RELATIVE_ERROR)  # the slow 500s are the tail


def test_a_canary_whose_p99_exceeds_its_ceiling_is_rolled_back(
    shared: Server, color_backends: dict[str, Backend]
) -> None:
    """Green answers every request 200, after 150 ms: counters see no error and the mean
    rules are off, so only max_p99_response_ms (100 ms) can fail the step, and does; the
    readings carry both colors' logged p50/p95/p99 and counts."""
    server = shared
    port = setup_app(server, color_backends)
    green = color_backends["green"].url
    assert httpx.post(f"{green}/_fault", json={"status": None, "delay_ms": 150}).status_code == 200
    future = run_load_in_thread(
        "127.0.0.1", port, duration=3, concurrency=8, keepalive=True, max_seconds=60
    )
    wait_for_traffic(server, "shop.blue")
    analysis = {
        "tick_ms": 200,
        "min_requests": 20,
        "max_mean_response_ms": None,
        "max_response_vs_stable": None,
        "max_p99_response_ms": 100,
    }
    plan = {
        "to": "green",
        "smoke": False,
        "analysis": analysis,
        "steps": [{"weight": 50}, {"pause": "30s"}, {"weight": 100}],
    }
    reply = server.api("POST", "/apps/shop/releases", {"plan": plan})
    assert reply.status_code == 200, reply.text
    record = wait_phase(server, "green", {"rolled_back", "failed", "completed"}, timeout=20)
    future.result(timeout=90)
    assert record["phase"] == "rolled_back", record["steps"]
    assert weights(server) == {"blue": 100}
    reason = next(e for e in record["steps"] if e["name"] == "rollback")
    assert "p99 response" in reason["message"]
    assert "> 100 ms" in reason["message"]
    assert "5xx" not in reason["message"]
    readings = reason["readings"]
    assert readings["checks"]["p99_response"] == "fail"
    assert readings["source"] == "log"
    assert readings["log"]["p99_ms"] >= 150 * (1 - MAX_RELATIVE_ERROR)
    assert readings["log"]["requests"] >= 20
    assert readings["baseline_log"]["p99_ms"] < 100
    again = release_of(server, "green")
    assert again["phase"] == "rolled_back"
