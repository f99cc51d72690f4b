"""Blue/green through a real `prism serve`, real HAProxy and real backends, under load."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

import httpx
import pytest

from prism.testing.load import LoadReport, Sample, run_load_in_thread
from prism.testing.processes import Backend, free_port
from prism.testing.wait import wait_for
from tests.conftest import Server, shop_spec, wait_for_traffic, wait_until_up

pytestmark = pytest.mark.haproxy


@dataclass(frozen=True)
class Switch:
    """A cutover window: traffic may show either color between start and end."""

    start: float
    end: float
    before: str
    after: str


def allowed_colors(at: float, initial: str, switches: list[Switch]) -> set[str]:
    active = {initial}
    for sw in switches:
        if at >= sw.end:
            active = {sw.after}
        elif at >= sw.start:
            return {sw.before, sw.after}
        else:
            break
    return active


def wrong_answers(report: LoadReport, initial: str, switches: list[Switch]) -> list[Sample]:
    """Samples that failed, or came from a color that was not active while they ran."""
    bad = []
    for sample in report.samples:
        ok_colors = allowed_colors(sample.start, initial, switches) | allowed_colors(
            sample.end, initial, switches
        )
        if sample.status != 200 or sample.color not in ok_colors:
            bad.append(sample)
    return bad


def get_color(port: int) -> str:
    reply = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
    assert reply.status_code == 200
    return str(reply.json()["color"])


@pytest.mark.slow
@pytest.mark.parametrize("keepalive", [True, False], ids=["keepalive", "close"])
def test_zero_downtime_cutovers_and_reloads_under_load(
    server: Server, color_backends: dict[str, Backend], keepalive: bool
) -> None:
    """20 cutovers/rollbacks and 3 reloads under ≥20,000 requests at 50 concurrent:
    every response is a 200 from the color active at the time.

    With a connection per request the load generator sends a few hundred requests a
    second here, so 20,000 of them outlast the storm; reused connections go about ten
    times faster and need 60,000 to."""
    port = free_port()
    spec = shop_spec(port, color_backends)
    assert server.api("PUT", "/config", {"spec": spec}).status_code == 200
    wait_until_up(server, "shop", ["blue", "green", "red"])

    total = 60_000 if keepalive else 20_000
    future = run_load_in_thread(
        "127.0.0.1", port, total=total, concurrency=50, keepalive=keepalive, max_seconds=240
    )
    switches: list[Switch] = []
    reloads = 0
    color = "blue"
    wait_for_traffic(server, "shop.blue")
    for i in range(20):
        target = "green" if color == "blue" else "blue"
        start = time.monotonic()
        if i % 2 == 0:
            reply = server.api("POST", "/apps/shop/release", {"to": target})
        else:
            reply = server.api("POST", "/apps/shop/rollback", {})
        end = time.monotonic()
        assert reply.status_code == 200, reply.text
        if i % 2 == 0:
            assert reply.json()["phase"] == "completed", reply.text
        switches.append(Switch(start, end, color, target))
        color = target
        if i in (4, 10, 16):
            # A config change that needs a reload: the red color's check settings.
            spec["apps"][0]["retries"] = 3 - reloads % 2 - 1
            reply = server.api("PUT", "/config", {"spec": spec})
            assert reply.status_code == 200, reply.text
            assert reply.json()["mode"] == "reload", reply.text
            reloads += 1
        time.sleep(0.1)  # not a wait: it spreads the storm over the load
    report = future.result(timeout=300)

    assert reloads == 3
    assert len(switches) == 20
    assert report.started < switches[0].start, "the storm began before the load"
    assert switches[-1].end < report.finished, "the load ended before the storm did"
    assert report.total >= 20_000
    bad = wrong_answers(report, "blue", switches)
    assert bad == [], f"{len(bad)} bad of {report.total}: {bad[:5]}"
    assert set(report.by_color) == {"blue", "green"}


def test_release_to_down_color_is_refused_without_errors(
    server: Server, color_backends: dict[str, Backend]
) -> None:
    """A target whose servers are down: release refused with a clear message, 0 failed requests."""
    port = free_port()
    spec = shop_spec(port, color_backends)
    assert server.api("PUT", "/config", {"spec": spec}).status_code == 200
    wait_until_up(server, "shop", ["blue", "green"])
    color_backends["green"].stop()
    wait_for_status(server, "green", lambda s: s.startswith("DOWN"))

    future = run_load_in_thread("127.0.0.1", port, total=3000, concurrency=20, keepalive=True)
    reply = server.api("POST", "/apps/shop/release", {"to": "green"})
    assert reply.status_code == 409
    problem = reply.json()
    assert reply.headers["content-type"].startswith("application/problem+json")
    assert "green" in problem["detail"]
    assert "not ready" in problem["detail"]
    assert "DOWN" in problem["detail"]
    cli = server.cli("release", "shop", "--to", "green")
    assert cli.returncode == 5
    assert "not ready" in cli.stderr
    report = future.result(timeout=120)
    assert report.failures == []
    assert report.by_color == {"blue": report.total}
    assert get_color(port) == "blue"
    history = server.api("GET", "/apps/shop/history").json()
    assert history[0]["action"] == "release.refused"


def test_release_waits_for_rise_count(server: Server, color_backends: dict[str, Backend]) -> None:
    """A color coming back (DOWN 1/3, DOWN 2/3) is refused until exactly UP, then accepted."""
    port = free_port()
    spec = shop_spec(port, color_backends)
    spec["apps"][0]["check"] = {"path": "/healthz", "inter_ms": "1s", "rise": 3, "fall": 1}
    assert server.api("PUT", "/config", {"spec": spec}).status_code == 200
    wait_until_up(server, "shop", ["blue", "green"])
    green = color_backends["green"].url
    assert httpx.post(f"{green}/_health", json={"ok": False}).status_code == 200
    seen = wait_for_status(server, "green", lambda s: s == "DOWN")
    assert seen == "DOWN"
    assert httpx.post(f"{green}/_health", json={"ok": True}).status_code == 200
    rising = wait_for_status(server, "green", lambda s: s.startswith("DOWN ") and "/" in s)
    reply = server.api("POST", "/apps/shop/release", {"to": "green"})
    assert reply.status_code == 409, f"released while {rising}: {reply.text}"
    assert f"s1 is {rising}" in reply.json()["detail"] or "s1 is DOWN" in reply.json()["detail"]
    wait_until_up(server, "shop", ["green"])
    reply = server.api("POST", "/apps/shop/release", {"to": "green"})
    assert reply.status_code == 200, reply.text
    assert get_color(port) == "green"


def wait_for_status(server: Server, color: str, want: object, timeout: float = 10) -> str:
    """Poll the app's status until the color's server status satisfies ``want``."""
    assert callable(want)
    seen: list[str] = []

    def status() -> str:
        reply = server.api("GET", "/apps/shop").json()
        value = next(c for c in reply["colors"] if c["name"] == color)["servers"][0]["status"]
        seen.append(value)
        return str(value)

    try:
        return wait_for(
            status, until=want, timeout=timeout, interval=0.02, what=f"{color}'s s1 status"
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}; saw {sorted(set(seen))}") from None


def test_new_color_survives_reload_and_haproxy_kill(
    server: Server, color_backends: dict[str, Backend]
) -> None:
    """After a cutover, a reload and a kill -9 of the HAProxy master keep the new color."""
    port = free_port()
    spec = shop_spec(port, color_backends)
    assert server.api("PUT", "/config", {"spec": spec}).status_code == 200
    wait_until_up(server, "shop", ["blue", "green"])
    assert server.api("POST", "/apps/shop/release", {"to": "green"}).status_code == 200
    assert get_color(port) == "green"

    spec["apps"][0]["retries"] = 1
    reply = server.api("PUT", "/config", {"spec": spec})
    assert reply.json()["mode"] == "reload"
    assert get_color(port) == "green"

    old = server.haproxy_pid
    assert old is not None
    os.kill(old, signal.SIGKILL)
    health = wait_for(
        lambda: server.api("GET", "/health").json(),
        until=lambda h: h["haproxy"]["running"] and h["haproxy"]["pid"] not in (None, old),
        timeout=20,
        interval=0.1,
        what="a new HAProxy master",
    )
    assert health["haproxy"]["restarts"] >= 1
    wait_until_up(server, "shop", ["green"])
    assert get_color(port) == "green"
    assert server.api("GET", "/apps/shop").json()["active"] == "green"


def test_prism_restart_adopts_haproxy_and_keeps_routing(
    state_dir: object, color_backends: dict[str, Backend]
) -> None:
    """Prism exiting (without --stop-haproxy) leaves HAProxy serving; the next start adopts it."""
    from pathlib import Path

    from tests.conftest import run_server

    assert isinstance(state_dir, Path)
    port = free_port()
    haproxy_pid = None
    try:
        with run_server(state_dir) as first:
            spec = shop_spec(port, color_backends)
            assert first.api("PUT", "/config", {"spec": spec}).status_code == 200
            wait_until_up(first, "shop", ["blue", "green"])
            assert first.api("POST", "/apps/shop/release", {"to": "green"}).status_code == 200
        # --stop-haproxy was given: the fixture stopped HAProxy; start again from disk.
        with run_server(state_dir) as second:
            haproxy_pid = second.haproxy_pid
            wait_until_up(second, "shop", ["green"])
            assert get_color(port) == "green"
            assert second.api("GET", "/apps/shop").json()["previous"] == {"blue": 100}
    finally:
        if haproxy_pid is not None:
            with __import__("contextlib").suppress(ProcessLookupError):
                os.kill(haproxy_pid, signal.SIGKILL)


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except OSError:
        return False


def test_sigterm_stops_prism_with_its_haproxy_and_its_announcement(state_dir: object) -> None:
    """SIGTERM (what a service manager sends) runs Prism's own shutdown: with
    --stop-haproxy its HAProxy stops, server.json goes, and the exit status is 0."""
    from pathlib import Path

    from tests.conftest import run_server

    assert isinstance(state_dir, Path)
    with run_server(state_dir) as server:
        haproxy = server.haproxy_pid
        assert haproxy is not None
        assert _running(haproxy)
        assert (state_dir / "server.json").exists()
        assert server.process.stop(timeout=15) == 0  # SIGTERM, then a wait
        wait_for(
            lambda: _running(haproxy),
            until=lambda running: not running,
            timeout=10,
            what="HAProxy to stop with Prism",
        )
        assert not (state_dir / "server.json").exists()


def test_a_map_edited_behind_prisms_back_is_restored(
    state_dir: object, color_backends: dict[str, Backend]
) -> None:
    """The periodic reconcile reads every map back and repairs one edited by hand."""
    import socket
    from pathlib import Path

    from prism.node.paths import StatePaths
    from tests.conftest import run_server

    assert isinstance(state_dir, Path)
    port = free_port()
    paths = StatePaths(state_dir)
    with run_server(state_dir, "--reconcile-interval", "0.2") as server:
        assert server.api("PUT", "/config", {"spec": shop_spec(port, color_backends)}).is_success
        wait_until_up(server, "shop", ["blue", "green"])
        assert server.api("POST", "/apps/shop/release", {"to": "green"}).is_success
        assert get_color(port) == "green"
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(paths.admin_socket))
            sock.sendall(f"set map {paths.weights_map('shop')} 0:99 shop.blue\n".encode())
            assert sock.recv(1024).strip() == b""  # HAProxy took the edit
        wait_for(
            lambda: get_color(port),
            until=lambda color: color == "green",
            timeout=10,
            what="the edited map to be restored",
        )
        assert [get_color(port) for _ in range(20)] == ["green"] * 20
        assert server.api("GET", "/apps/shop").json()["weights"] == {"green": 100}
