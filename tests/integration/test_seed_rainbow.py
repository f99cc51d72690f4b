"""The rainbow deployment of the payments seed, end to end: three colors filled only by
servers that register themselves, a color scaled up and down under load, a canary shift
on top — with no spec edit and no reload after the first apply, and no failed request."""

from __future__ import annotations

from collections import Counter

import httpx
import pytest

from prism.testing.load import run_load_in_thread
from prism.testing.processes import BackendSpec, backends, free_port
from prism.testing.wait import wait_for
from tests.conftest import Server, wait_for_traffic
from tests.integration.test_discovery import reloads

pytestmark = pytest.mark.haproxy


def test_colors_filled_by_registration_scale_under_load_with_a_canary_on_top(
    server: Server,
) -> None:
    """Registrations fill blue, green and red; red scales up, blue down, green takes a
    canary share; every request is answered and HAProxy never reloads."""
    pool = [BackendSpec("blue", "v1", name=f"b{i}") for i in range(1, 4)]
    pool += [BackendSpec("green", "v2", name=f"g{i}") for i in range(1, 3)]
    pool += [BackendSpec("red", "v3", name=f"r{i}") for i in range(1, 4)]
    with backends(pool) as running:
        by_name = {b.name: b for b in running}
        port = free_port()
        spec = {
            "apps": [
                {
                    "name": "shop",
                    "bind": f"127.0.0.1:{port}",
                    "stable": "blue",
                    "check": {"path": "/healthz", "inter_ms": "500ms", "rise": 2, "fall": 3},
                    "drain_timeout_ms": "5s",
                    "colors": [
                        {"name": c, "version": v}
                        for c, v in (("blue", "v1"), ("green", "v2"), ("red", "v3"))
                    ],
                }
            ]
        }
        assert server.api("PUT", "/config", {"spec": spec}).status_code == 200

        def register(color: str, name: str) -> None:
            body = {"address": by_name[name].address, "ttl": 300_000}
            reply = server.api("PUT", f"/apps/shop/colors/{color}/registrations/{name}", body)
            assert reply.status_code == 200, reply.text

        for color, name in (("blue", "b1"), ("blue", "b2"), ("green", "g1"), ("red", "r1")):
            register(color, name)
        before = reloads(server)
        load = run_load_in_thread("127.0.0.1", port, duration=14.0, concurrency=8)
        wait_for_traffic(server, "shop.blue")
        for name in ("r2", "r3"):  # red scales up
            register("red", name)
        shifted = server.api(
            "PUT", "/apps/shop/weights", {"weights": {"blue": 70, "green": 10, "red": 20}}
        )
        assert shifted.status_code == 200, shifted.text
        register("blue", "b3")
        reply = server.api("DELETE", "/apps/shop/colors/blue/registrations/b1")  # blue shrinks
        assert reply.status_code == 200, reply.text
        register("green", "g2")

        def who() -> str:
            reply = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
            assert reply.status_code == 200, (reply.status_code, reply.text[:200])
            return str(reply.json()["server"])

        served = wait_for(
            lambda: Counter(who() for _ in range(200)),
            until=lambda c: {"b2", "b3", "g1", "g2", "r1", "r2", "r3"} <= set(c),
            timeout=15,
            what="every registered server to take its share",
        )
        assert "b1" not in served
        report = load.result(timeout=60)
        assert report.total > 500, report.summary()
        assert report.failures == [], (report.summary(), report.failures[:5])
        assert set(report.by_color) == {"blue", "green", "red"}
        assert reloads(server) == before
        assert (
            server.api("GET", "/config").json()["spec"]
            == server.api("GET", "/config").json()["spec"]
        )
        declared = server.api("GET", "/config").json()["spec"]["apps"][0]["colors"]
        assert all(c["servers"] == [] for c in declared)
