"""Rainbow routing through a real `prism serve`, real HAProxy and real backends:
split accuracy, stickiness, atomic weight changes, pins, fallback, dynamic servers."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from prism.testing.load import colors_by_key, run_load_in_thread
from prism.testing.processes import Backend, BackendSpec, backends, free_port
from prism.testing.wait import wait_for
from tests.conftest import Server, run_server, shop_spec, wait_for_traffic, wait_until_up

pytestmark = pytest.mark.haproxy

STICKY = {"source": "cookie", "name": "uid"}


@pytest.fixture
def four_backends() -> Iterator[dict[str, Backend]]:
    """blue v1, green v2, red v3, gold v4: one demo backend each."""
    specs = [
        BackendSpec("blue", "v1"),
        BackendSpec("green", "v2"),
        BackendSpec("red", "v3"),
        BackendSpec("gold", "v4"),
    ]
    with backends(specs) as running:
        yield {b.color: b for b in running}


def setup_app(
    server: Server, servers: dict[str, Backend], **app: Any
) -> tuple[int, dict[str, Any]]:
    port = free_port()
    spec = shop_spec(port, servers, **app)
    reply = server.api("PUT", "/config", {"spec": spec})
    assert reply.status_code == 200, reply.text
    wait_until_up(server, "shop", list(servers))
    return port, spec


def shift(server: Server, **weights: int) -> dict[str, Any]:
    reply = server.api("PUT", "/apps/shop/weights", {"weights": weights})
    assert reply.status_code == 200, reply.text
    answer: dict[str, Any] = reply.json()
    return answer


def colors_for_users(port: int, users: list[str], cookie: str = "uid") -> dict[str, str]:
    """One request per user (each with its own cookie); the color that answered each."""
    return asyncio.run(colors_by_key("127.0.0.1", port, "Cookie", users, template=f"{cookie}={{}}"))


def assert_split(
    counts: Counter[str] | dict[str, int], weights: dict[str, int], total: int
) -> None:
    """Every color's observed share is within ±1.5 percentage points of its weight."""
    for color in set(weights) | set(counts):
        observed = 100 * counts.get(color, 0) / total
        assert abs(observed - weights.get(color, 0)) <= 1.5, (color, observed, weights, counts)


VECTORS = [
    {"blue": 70, "green": 20, "red": 10},
    {"blue": 25, "green": 25, "red": 25, "gold": 25},
    {"blue": 10, "green": 45, "red": 5, "gold": 40},
]


@pytest.mark.slow
def test_split_accuracy_random_buckets(server: Server, four_backends: dict[str, Backend]) -> None:
    """Random buckets: for three weight vectors, 20,000 requests land within ±1.5 points."""
    port, _ = setup_app(server, four_backends)
    for weights in VECTORS:
        shift(server, **weights)
        report = run_load_in_thread(
            "127.0.0.1", port, total=20_000, concurrency=20, keepalive=True
        ).result(timeout=120)
        assert report.failures == []
        assert_split(Counter(report.by_color), weights, report.total)


@pytest.mark.slow
def test_split_accuracy_sticky_buckets(server: Server, four_backends: dict[str, Backend]) -> None:
    """Cookie-sticky buckets: 10,000 distinct users per vector land within ±1.5 points."""
    port, _ = setup_app(server, four_backends, stickiness=STICKY)
    users = [f"user-{i}" for i in range(10_000)]
    for weights in VECTORS:
        shift(server, **weights)
        seen = colors_for_users(port, users)
        assert_split(Counter(seen.values()), weights, len(users))


def test_users_only_move_when_their_color_shrinks(
    server: Server, color_backends: dict[str, Backend]
) -> None:
    """1,000 users through green 5 → 10 → 25 → 50 → 100: nobody leaves green, red's users
    stay put until red shrinks, and only colors that lost share lose users."""
    port, _ = setup_app(server, color_backends, stickiness=STICKY)
    users = [f"u{i}" for i in range(1000)]
    stages = [
        {"blue": 85, "red": 10, "green": 5},
        {"blue": 80, "red": 10, "green": 10},
        {"blue": 65, "red": 10, "green": 25},
        {"blue": 40, "red": 10, "green": 50},
        {"green": 100},
    ]
    history: list[dict[str, str]] = []
    previous: dict[str, int] | None = None
    for weights in stages:
        shift(server, **weights)
        now = colors_for_users(port, users)
        if history:
            assert previous is not None
            for user in users:
                before, after = history[-1][user], now[user]
                if before == "green":
                    assert after == "green", f"{user} left green"
                if before != after:
                    assert weights.get(before, 0) < previous.get(before, 0), (
                        f"{user} moved off {before}, which did not lose share"
                    )
        history.append(now)
        previous = weights
    assert set(history[-1].values()) == {"green"}
    # Everyone saw each color's declared share, give or take hashing noise.
    assert abs(Counter(history[0].values())["green"] - 50) <= 25


def test_prism_sets_a_sticky_cookie(server: Server, color_backends: dict[str, Backend]) -> None:
    """With set_cookie, a browser without the cookie gets one and then keeps its color."""
    port, _ = setup_app(server, color_backends, stickiness={**STICKY, "set_cookie": True})
    shift(server, blue=50, green=50)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as browser:
        first = browser.get("/")
        assert "uid=" in first.headers.get("set-cookie", "")
        color = first.json()["color"]
        for _ in range(20):
            reply = browser.get("/")
            assert reply.json()["color"] == color
            assert "set-cookie" not in reply.headers


def test_fifty_weight_changes_under_load_fail_nothing(
    server: Server, color_backends: dict[str, Backend]
) -> None:
    """50 weight changes paced at 5/s across 3 colors under load: 0 failed requests."""
    port, _ = setup_app(server, color_backends)
    future = run_load_in_thread(
        "127.0.0.1", port, duration=14, concurrency=50, keepalive=True, max_seconds=60
    )
    wait_for_traffic(server, "shop.blue")
    vectors = [
        {"blue": 60, "green": 30, "red": 10},
        {"blue": 20, "green": 50, "red": 30},
        {"blue": 34, "green": 33, "red": 33},
        {"blue": 5, "green": 5, "red": 90},
        {"blue": 100},
    ]
    start = time.monotonic()
    for i in range(50):
        delay = start + i * 0.2 - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # not a wait: it paces the changes at 5/s
        answer = shift(server, **vectors[i % len(vectors)])
        assert answer["changed"]
    report = future.result(timeout=90)
    assert report.finished > time.monotonic() - 30
    assert report.failures == [], report.summary()
    assert set(report.by_color) == {"blue", "green", "red"}


def test_pins_win_over_weights_and_survive_reload_and_restart(
    state_dir: Path, color_backends: dict[str, Backend]
) -> None:
    """A pinned tenant always lands on its color; unpinning returns it to weights;
    pins survive a reload and a restart of Prism and HAProxy."""
    pins = [
        {"name": "tenant", "source": "header", "key": "X-Tenant"},
        {"name": "office", "source": "address"},
    ]
    with run_server(state_dir) as server:
        port, spec = setup_app(server, color_backends, pins=pins)
        assert server.cli("pin", "shop", "acme", "--to", "red").returncode == 0
        shift(server, blue=100)

        def color(tenant: str | None = None) -> str:
            headers = {"X-Tenant": tenant} if tenant else {}
            reply = httpx.get(f"http://127.0.0.1:{port}/", headers=headers)
            return str(reply.json()["color"])

        assert {color("acme") for _ in range(20)} == {"red"}
        assert {color("globex") for _ in range(20)} == {"blue"}
        listed = json.loads(server.cli("pins", "shop", "--json").stdout)
        assert listed == [{"rule": "tenant", "source": "header", "key": "acme", "color": "red"}]

        # An address pin for the client's own address wins for untagged requests.
        reply = server.api("PUT", "/apps/shop/pins/127.0.0.1", {"color": "green", "rule": "office"})
        assert reply.status_code == 200, reply.text
        assert {color() for _ in range(10)} == {"green"}
        assert color("acme") == "red"  # the first rule that matches decides
        assert server.cli("unpin", "shop", "127.0.0.1", "--rule", "office").returncode == 0
        assert {color() for _ in range(10)} == {"blue"}

        spec["apps"][0]["retries"] = 1
        assert server.api("PUT", "/config", {"spec": spec}).json()["mode"] == "reload"
        assert color("acme") == "red"

    with run_server(state_dir) as server:  # Prism and HAProxy both started afresh
        wait_until_up(server, "shop", ["blue", "red"])
        assert {color("acme") for _ in range(10)} == {"red"}
        assert server.cli("unpin", "shop", "acme").returncode == 0
        assert {color("acme") for _ in range(10)} == {"blue"}
        history = [h["action"] for h in server.api("GET", "/apps/shop/history").json()]
        assert history[0] == "unpin"
        assert "pin" in history


def wait_status(server: Server, color: str, want: str, timeout: float = 10) -> None:
    def statuses() -> list[str]:
        status = server.api("GET", "/apps/shop").json()
        found = next(c for c in status["colors"] if c["name"] == color)
        return [s["status"] for s in found["servers"]]

    wait_for(
        statuses,
        until=lambda found: all(s.startswith(want) for s in found),
        timeout=timeout,
        what=f"{color}'s servers {want}",
    )


def test_fallback_to_stable_then_maintenance_page(
    server: Server, color_backends: dict[str, Backend]
) -> None:
    """A color with no usable server falls back to stable; with nothing up, the maintenance page."""
    page = {"status": 503, "content_type": "text/plain", "body": "back soon: maintenance\n"}
    port, _ = setup_app(server, color_backends, maintenance=page)
    shift(server, green=100)
    url = f"http://127.0.0.1:{port}/"
    assert httpx.get(url).json()["color"] == "green"
    color_backends["green"].stop()
    wait_status(server, "green", "DOWN")
    assert {httpx.get(url).json()["color"] for _ in range(10)} == {"blue"}
    color_backends["blue"].stop()
    wait_status(server, "blue", "DOWN")
    assert {httpx.get(url).json()["color"] for _ in range(10)} == {"red"}
    color_backends["red"].stop()
    wait_status(server, "red", "DOWN")
    reply = httpx.get(url)
    assert reply.status_code == 503
    assert reply.text == "back soon: maintenance\n"


def test_server_add_and_remove_under_load(
    server: Server, color_backends: dict[str, Backend]
) -> None:
    """Adding and removing servers at runtime under load fails no request and needs no reload;
    a server that fails its checks is refused and never receives traffic."""
    port, _ = setup_app(server, color_backends)
    pid_before = server.haproxy_pid
    with backends([BackendSpec("blue", "v1", "s2"), BackendSpec("blue", "v1", "dead")]) as extra:
        new, dead = extra
        dead_port = dead.port
        dead.stop()
        future = run_load_in_thread(
            "127.0.0.1", port, total=40_000, concurrency=30, keepalive=True, max_seconds=120
        )
        wait_for_traffic(server, "shop.blue")
        added = server.cli("server", "add", "shop", "blue", f"127.0.0.1:{new.port}", "--name", "s2")
        assert added.returncode == 0, added.stderr
        refused = server.cli(
            "server", "add", "shop", "blue", f"127.0.0.1:{dead_port}", "--name", "s3"
        )
        assert refused.returncode == 5, refused.stderr
        assert "failed its health checks" in refused.stderr
        removed = server.cli("server", "remove", "shop", "blue", "s1")
        assert removed.returncode == 0, removed.stderr
        served = httpx.get(f"http://127.0.0.1:{port}/").json()  # s1 is gone already
        report = future.result(timeout=150)
    assert report.failures == [], report.summary()
    assert served["server"] == "s2"
    status = server.api("GET", "/apps/shop").json()
    blue = next(c for c in status["colors"] if c["name"] == "blue")
    assert [s["name"] for s in blue["servers"]] == ["s2"]
    assert server.haproxy_pid == pid_before
    config = (server.state_dir / "haproxy.cfg").read_text()
    assert f"127.0.0.1:{new.port}" in config
    assert f"127.0.0.1:{dead_port}" not in config


HOSTILE = [
    "acme\nshow map",
    "acme;x",
    "acme<<",
    "ac me",
    "ac\\me",
    "ac\x00me",
    "acmé",
    "a" * 10_000,
]


@pytest.mark.parametrize("value", HOSTILE, ids=lambda v: repr(v)[:16])
def test_hostile_values_in_routing_fields_change_nothing(
    server: Server, color_backends: dict[str, Backend], value: str
) -> None:
    """Hostile weights, pin keys, pin colors, rules and server fields: 4xx, nothing changed."""
    from urllib.parse import quote

    setup_app(server, color_backends, pins=[{"name": "tenant", "source": "header", "key": "X-T"}])
    maps = sorted((server.state_dir / "maps").glob("*.map"))
    before = [p.read_text() for p in maps], (server.state_dir / "haproxy.cfg").read_text()
    key = quote(value, safe="")
    replies = [
        server.api("PUT", "/apps/shop/weights", {"weights": {value: 100}}),
        server.api("PUT", "/apps/shop/weights", {"weights": {"blue": value}}),
        server.api("PUT", "/apps/shop/weights", {"weights": {"blue": 60, "green": 30}}),
        server.api("PUT", "/apps/shop/pins/acme", {"color": value}),
        server.api("PUT", "/apps/shop/pins/acme", {"color": "red", "rule": value}),
        server.api("POST", "/apps/shop/colors/blue/servers", {"address": value}),
        server.api(
            "POST", "/apps/shop/colors/blue/servers", {"address": "127.0.0.1:1", "name": value}
        ),
    ]
    if len(value) < 1000:
        replies.append(server.api("PUT", f"/apps/shop/pins/{key}", {"color": "red"}))
        replies.append(server.api("DELETE", f"/apps/shop/colors/blue/servers/{key}"))
    for reply in replies:
        assert 400 <= reply.status_code < 500, reply.text
        assert reply.json()["detail"]
    assert ([p.read_text() for p in maps], (server.state_dir / "haproxy.cfg").read_text()) == before
    cli = server.cli("shift", "shop", "blue=50", "green=x") if "\x00" not in value else None
    if cli is not None:
        assert cli.returncode == 2
