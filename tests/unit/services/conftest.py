"""A control plane with no I/O: the in-memory store, a fake data plane and a fake clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from prism.core.model import Spec, parse_model
from prism.dataplane.change import Changes
from prism.release.traffic import Traffic
from prism.services.pins import PinService
from prism.services.routing import RoutingService
from prism.services.servers import ServerService
from prism.services.spec import SpecService
from prism.services.status import StatusService
from prism.store.sqlite import SqliteStore
from prism.testing.clock import FakeClock
from prism.testing.dataplane import FakeDataPlane
from prism.testing.memory_store import memory_store


def shop(**app: Any) -> Spec:
    """One app, shop, with blue, green and red colors of one server each, and a pin rule."""
    base: dict[str, Any] = {
        "name": "shop",
        "bind": "127.0.0.1:8080",
        "stable": "blue",
        "pins": [{"name": "tenant", "source": "header", "key": "X-Tenant"}],
        "colors": [
            {"name": c, "servers": [f"127.0.0.1:{9001 + i}"]}
            for i, c in enumerate(("blue", "green", "red"))
        ],
    }
    base.update(app)
    return parse_model(Spec, {"apps": [base]})


@dataclass
class Rig:
    store: SqliteStore
    plane: FakeDataPlane
    clock: FakeClock
    changes: Changes
    traffic: Traffic
    spec: SpecService
    routing: RoutingService
    pins: PinService
    servers: ServerService
    status: StatusService

    async def weights(self, app: str = "shop") -> dict[str, int]:
        state = await self.spec.state()
        return state.routing_for(state.spec.app(app)).weights

    async def actions(self) -> list[str]:
        """Audit actions, oldest first."""
        return [r.action for r in reversed(await self.store.audit(limit=1000))]


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    clock = FakeClock()
    store = await memory_store(clock=clock)
    plane = FakeDataPlane()
    for color in ("blue", "green", "red"):
        plane.set_servers(f"shop.{color}", "s1")
    changes = Changes(store, plane)
    traffic = Traffic(store, changes, plane, clock, poll_interval=0.5)
    the_rig = Rig(
        store,
        plane,
        clock,
        changes,
        traffic,
        SpecService(store, changes),
        RoutingService(traffic),
        PinService(store, changes),
        ServerService(store, changes),
        StatusService(store, plane),
    )
    await the_rig.spec.apply(shop(), actor="test", reason=None)
    yield the_rig
    await store.close()
