"""The gates of a traffic change: the smoke request goes out while servers are read."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from prism.clock import SystemClock
from prism.core.model import App, Spec, parse_model
from prism.core.readings import ServerReading, SmokeReply
from prism.core.state import DesiredState
from prism.dataplane.change import Changes
from prism.release.traffic import Traffic
from prism.testing.dataplane import FakeDataPlane
from prism.testing.memory_store import memory_store

SPEC = {
    "apps": [
        {
            "name": "shop",
            "bind": "127.0.0.1:8080",
            "stable": "blue",
            "smoke": {"path": "/healthz"},
            "colors": [
                {"name": "blue", "servers": ["127.0.0.1:9000"]},
                {"name": "green", "servers": ["127.0.0.1:9001"]},
            ],
        }
    ]
}


class Plane(FakeDataPlane):
    """Servers are read only once the smoke request was sent: run one after the other,
    the gates would never finish."""

    def __init__(self) -> None:
        super().__init__()
        self.smoke_sent = asyncio.Event()
        self.smoke_done = asyncio.Event()
        self.smoke_cancelled = False

    async def servers(self, backends: Sequence[str]) -> list[ServerReading]:
        await self.smoke_sent.wait()
        return await super().servers(backends)

    async def smoke(self, spec: Spec, app: App, color: str) -> list[SmokeReply]:
        self.smoke_sent.set()
        try:
            await self.smoke_done.wait()
        except asyncio.CancelledError:
            self.smoke_cancelled = True
            raise
        return await super().smoke(spec, app, color)


async def gated(plane: Plane) -> tuple[list[ServerReading], list[str]]:
    store = await memory_store()
    try:
        traffic = Traffic(store, Changes(store, plane), plane, SystemClock())
        spec = parse_model(Spec, SPEC)
        state = parse_model(DesiredState, {"spec": SPEC, "routing": {}, "revision": 1})
        async with asyncio.timeout(5):
            servers, results = await traffic.read_and_gate(
                state, spec.app("shop"), ["green"], True, ["shop.blue", "shop.green"]
            )
        return servers, [f"{r.name} {r.passed}" for r in results]
    finally:
        await store.close()


async def test_smoke_and_health_run_at_once_and_are_judged_in_order() -> None:
    plane = Plane()
    plane.set_servers("shop.blue", "s1")
    plane.set_servers("shop.green", "s1")
    plane.smoke_replies["shop.green"] = SmokeReply(500, "broken")
    plane.smoke_done.set()
    servers, results = await gated(plane)
    assert sorted(s.backend for s in servers) == ["shop.blue", "shop.green"]
    assert results == ["health True", "smoke False"]


async def test_a_health_refusal_stops_the_smoke_request_unjudged() -> None:
    plane = Plane()
    plane.set_servers("shop.blue", "s1")
    plane.set_servers("shop.green", "s1", status="DOWN", check_status="L4CON")
    _, results = await gated(plane)  # smoke_done never set: the smoke would hang
    assert results == ["health False"]
    assert plane.smoke_cancelled
