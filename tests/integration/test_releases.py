"""Progressive releases through a real `prism serve`, HAProxy and backends: canaries under
load, analysis-driven rollback, crash-safe resume, concurrent releases, manual gates, webhooks."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from prism.testing.load import run_load_in_thread
from prism.testing.processes import Backend, free_port
from prism.testing.wait import wait_for
from tests.conftest import Server, run_server, shop_spec, wait_for_traffic, wait_until_up

pytestmark = pytest.mark.haproxy

FAST = {"tick_ms": 200, "min_requests": 20}


def setup_app(server: Server, servers: dict[str, Backend]) -> int:
    port = free_port()
    reply = server.api("PUT", "/config", {"spec": shop_spec(port, servers)})
    assert reply.status_code == 200, reply.text
    wait_until_up(server, "shop", list(servers))
    return port


def start(server: Server, plan: dict[str, Any]) -> dict[str, Any]:
    plan = {"analysis": FAST, "smoke": False, **plan}
    reply = server.api("POST", "/apps/shop/releases", {"plan": plan})
    assert reply.status_code == 200, reply.text
    answer: dict[str, Any] = reply.json()
    return answer


def release_of(server: Server, color: str) -> dict[str, Any]:
    records = server.api("GET", "/apps/shop/releases").json()
    return next(r for r in records if r["to_color"] == color)


def wait_phase(server: Server, color: str, phases: set[str], timeout: float = 30) -> dict[str, Any]:
    return wait_for(
        lambda: release_of(server, color),
        until=lambda record: record["phase"] in phases,
        timeout=timeout,
        what=f"the release to {color} to reach {sorted(phases)}",
    )


def weights(server: Server) -> dict[str, int]:
    answer: dict[str, int] = server.api("GET", "/apps/shop").json()["weights"]
    return answer


def wait_share(server: Server, color: str, share: int, timeout: float = 10) -> None:
    """Wait (bounded) until ``color`` holds exactly ``share`` of the app's weights."""
    wait_for(
        lambda: weights(server),
        until=lambda w: w.get(color) == share,
        timeout=timeout,
        what=f"{color} at {share}%",
    )


def canary(steps: list[int], pause: str = "1s") -> list[dict[str, Any]]:
    plan: list[dict[str, Any]] = []
    for index, weight in enumerate(steps):
        plan.append({"weight": weight})
        if index < len(steps) - 1:
            plan.append({"pause": pause})
    return plan


def test_healthy_canary_completes_under_load(
    server: Server, color_backends: dict[str, Backend]
) -> None:
    """5 → 25 → 50 → 100 with analysed pauses completes under load with 0 failed requests."""
    port = setup_app(server, color_backends)
    future = run_load_in_thread(
        "127.0.0.1", port, duration=12, concurrency=30, keepalive=True, max_seconds=60
    )
    wait_for_traffic(server, "shop.blue")
    start(server, {"to": "green", "steps": canary([5, 25, 50, 100])})
    record = wait_phase(server, "green", {"completed", "rolled_back", "failed"}, timeout=40)
    report = future.result(timeout=90)
    assert record["phase"] == "completed", record["steps"]
    assert weights(server) == {"green": 100}
    assert report.failures == [], report.summary()
    assert {"blue", "green"} <= set(report.by_color)
    shares = [e["message"] for e in record["steps"] if e["name"] == "weight"]
    assert [m.split("%")[0].split(" at ")[1] for m in shares] == ["5", "25", "50", "100"]
    passed = [e for e in record["steps"] if e["name"] == "pause"]
    assert all("analysis passed" in e["message"] for e in passed)


def test_target_turning_5xx_rolls_back_at_next_tick(
    server: Server, color_backends: dict[str, Backend]
) -> None:
    """The target answering 500 mid-canary is rolled back at the next analysis tick; the
    failed requests stay below rate x weight x (tick + slack)."""
    port = setup_app(server, color_backends)
    future = run_load_in_thread(
        "127.0.0.1", port, duration=8, concurrency=20, keepalive=True, max_seconds=60
    )
    wait_for_traffic(server, "shop.blue")
    start(server, {"to": "green", "steps": canary([5, 25, 50, 100], pause="30s")})
    wait_share(server, "green", 5)
    green = color_backends["green"].url
    fault_at = time.monotonic()
    assert httpx.post(f"{green}/_fault", json={"status": 500}).status_code == 200
    record = wait_phase(server, "green", {"rolled_back", "failed"}, timeout=15)
    rolled_at = time.monotonic()
    report = future.result(timeout=90)
    assert record["phase"] == "rolled_back"
    assert weights(server) == {"blue": 100}
    reason = next(e for e in record["steps"] if e["name"] == "rollback")
    assert "analysis failed" in reason["message"]
    assert "5xx ratio" in reason["message"]
    failed = [s for s in report.samples if s.status >= 500]
    assert failed, "the fault should have shown"
    rate = report.total / report.elapsed
    bound = rate * 0.05 * (0.2 + 2.0)  # weight 5% for one tick plus generous slack
    assert len(failed) <= max(bound, 10), (len(failed), bound, rolled_at - fault_at)
    after = report.between(rolled_at + 0.5, report.finished)
    assert "green" not in after.by_color


def test_target_killed_mid_canary_rolls_back(
    server: Server, color_backends: dict[str, Backend]
) -> None:
    """Killing the target's servers mid-canary: traffic leaves them and the release rolls back."""
    port = setup_app(server, color_backends)
    start(server, {"to": "green", "steps": canary([25, 100], pause="30s")})
    wait_share(server, "green", 25)
    color_backends["green"].kill9()
    record = wait_phase(server, "green", {"rolled_back", "failed"}, timeout=15)
    assert record["phase"] == "rolled_back"
    reason = next(e for e in record["steps"] if e["name"] == "rollback")
    assert "target unhealthy" in reason["message"]
    assert weights(server) == {"blue": 100}
    answers = {httpx.get(f"http://127.0.0.1:{port}/").json()["color"] for _ in range(30)}
    assert answers == {"blue"}


def test_manual_gate_waits_for_promote_and_abort_rolls_back(
    server: Server, color_backends: dict[str, Backend]
) -> None:
    """A manual pause waits until promote; abort returns the target to its old share."""
    setup_app(server, color_backends)
    cli = server.cli(
        "release",
        "start",
        "shop",
        "--to",
        "green",
        "--steps",
        "10,50,100",
        "--manual",
        "--no-smoke",
    )
    assert cli.returncode == 0, cli.stderr
    record = wait_phase(server, "green", {"waiting"})
    assert weights(server) == {"blue": 90, "green": 10}
    time.sleep(1.0)  # not a wait: nothing may happen; a manual gate does not open by itself
    assert release_of(server, "green")["phase"] == "waiting"
    promoted = server.cli("release", "promote", "shop")
    assert promoted.returncode == 0, promoted.stderr
    record = wait_phase(server, "green", {"waiting"})
    assert record["step"] == 3
    assert weights(server) == {"blue": 50, "green": 50}
    status = server.cli("release", "status", "shop")
    assert "waiting" in status.stdout
    assert "[pause(manual)]" in status.stdout
    aborted = server.cli("release", "abort", "shop", "--reason", "not today")
    assert aborted.returncode == 0, aborted.stderr
    record = wait_phase(server, "green", {"rolled_back"})
    assert weights(server) == {"blue": 100}
    assert any("aborted by" in e["message"] for e in record["steps"])
    history = json.loads(server.cli("release", "history", "shop", "--json").stdout)
    assert history[0]["action"] == "release.rolled_back"


def test_two_releases_of_one_app_do_not_interfere(
    server: Server, color_backends: dict[str, Backend]
) -> None:
    """Rainbow: green → 20% and red → 30% at once; each moves only its own share."""
    port = setup_app(server, color_backends)
    future = run_load_in_thread(
        "127.0.0.1", port, duration=8, concurrency=10, keepalive=True, max_seconds=60
    )
    start(server, {"to": "green", "steps": canary([5, 10, 20], pause="1s")})
    # Red stays active (a final manual pause) for as long as green moves.
    red_steps = [*canary([10, 30], pause="1s"), {"pause": "manual"}]
    start(server, {"to": "red", "steps": red_steps})
    green = wait_phase(server, "green", {"completed", "rolled_back", "failed"}, timeout=30)
    assert green["phase"] == "completed", green["steps"]
    wait_phase(server, "red", {"waiting"})
    assert server.cli("release", "promote", "shop", "--color", "red").returncode == 0
    red = wait_phase(server, "red", {"completed", "rolled_back", "failed"}, timeout=30)
    assert red["phase"] == "completed", red["steps"]
    assert weights(server) == {"blue": 50, "green": 20, "red": 30}
    for entry in server.api("GET", "/apps/shop/history?limit=100").json():
        if entry["action"] != "release.step":
            continue
        other = "red" if entry["detail"]["color"] == "green" else "green"
        before, after = entry["detail"]["from_weights"], entry["detail"]["to_weights"]
        assert before.get(other, 0) == after.get(other, 0), entry
    assert future.result(timeout=60).failures == []


@pytest.mark.parametrize("when", ["manual_pause", "analysed_pause"])
def test_kill_9_of_prism_resumes_release(
    state_dir: Path, color_backends: dict[str, Backend], when: str
) -> None:
    """Kill -9 of Prism during a manual pause or an analysed pause: after a restart the
    release resumes with its remaining time (not restarted) and ends correctly."""
    pause = "manual" if when == "manual_pause" else "4s"
    with run_server(state_dir) as first:
        port = setup_app(first, color_backends)
        future = run_load_in_thread(
            "127.0.0.1", port, duration=14, concurrency=10, keepalive=True, max_seconds=60
        )
        start(first, {"to": "green", "steps": [{"weight": 20}, {"pause": pause}, {"weight": 100}]})
        record = wait_phase(first, "green", {"waiting", "running"})
        wait_share(first, "green", 20)
        stepped = next(
            e["at"] for e in release_of(first, "green")["steps"] if e["name"] == "weight"
        )
        time.sleep(1.5)  # not a wait: 1.5 s of the pause pass before the kill, to be kept
        first.process.kill9()
        killed_at = time.time()
        with run_server(state_dir) as second:
            ready_at = time.time()
            assert second.haproxy_pid == first.haproxy_pid, "HAProxy kept serving and was adopted"
            if pause == "manual":
                record = wait_phase(second, "green", {"waiting"})
                assert weights(second) == {"blue": 80, "green": 20}
                assert second.cli("release", "promote", "shop").returncode == 0
            record = wait_phase(second, "green", {"completed", "rolled_back", "failed"}, timeout=30)
            assert record["phase"] == "completed", record["steps"]
            assert weights(second) == {"green": 100}
            if pause != "manual":
                final = [e["at"] for e in record["steps"] if e["name"] == "weight"][-1]
                # The 4 s timer ran from the first step, across the restart, not anew:
                # once Prism is back only what was left of it runs (a timer started
                # anew would end 4 s after the restart at the earliest).
                left = max(0.0, 4.0 - (ready_at - stepped))
                assert final - ready_at < left + 1.5 < 4.0, (
                    final - ready_at,
                    ready_at - stepped,
                    killed_at - stepped,
                )
            report = future.result(timeout=90)
    assert report.failures == [], report.summary()


class Receiver:
    """A local webhook receiver: records event bodies; the confirm path answers `confirm_status`."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.confirms = 0
        self.confirm_status = 503
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status = 200
                if self.path == "/confirm":
                    receiver.confirms += 1
                    status = receiver.confirm_status
                else:
                    receiver.events.append(body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    try:
        yield running
    finally:
        running.close()


def test_webhooks_get_every_event_in_order_and_confirm_holds(
    server: Server, color_backends: dict[str, Backend], receiver: Receiver
) -> None:
    """Every event reaches the receiver in order; a failing confirm hook holds the release."""
    port = setup_app(server, color_backends)
    future = run_load_in_thread(
        "127.0.0.1", port, duration=8, concurrency=5, keepalive=True, max_seconds=60
    )
    start(
        server,
        {
            "to": "green",
            "steps": canary([10, 100], pause="1s"),
            "webhooks": [{"url": f"{receiver.url}/events"}],
            "confirm": {"url": f"{receiver.url}/confirm", "timeout_ms": 1000},
        },
    )
    wait_phase(server, "green", {"holding"})
    time.sleep(1.0)  # not a wait: a second of refused confirms (one a tick) must not move it
    assert release_of(server, "green")["phase"] == "holding"
    assert weights(server) == {"blue": 100}
    assert receiver.confirms >= 2
    receiver.confirm_status = 200
    record = wait_phase(server, "green", {"completed", "rolled_back", "failed"}, timeout=30)
    assert record["phase"] == "completed"
    wait_for(
        lambda: [e["event"] for e in receiver.events],
        until=lambda kinds: kinds[-1:] == ["completed"],
        timeout=5,
        what="the completed event at the receiver",
    )
    kinds = [e["event"] for e in receiver.events]
    assert kinds == ["started", "step.advanced", "step.advanced", "completed"], kinds
    assert [e["seq"] for e in receiver.events] == sorted(e["seq"] for e in receiver.events)
    assert all(e["app"] == "shop" and e["color"] == "green" for e in receiver.events)
    assert future.result(timeout=60).failures == []
