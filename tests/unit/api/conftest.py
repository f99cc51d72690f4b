"""The real API app over real services, an in-memory store and a fake data plane."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from prism.api import create_app
from prism.api.guard import ApiLimits
from prism.api.ratelimit import RateLimit
from prism.dataplane.change import Changes
from prism.release.engine import ReleaseEngine
from prism.release.traffic import Traffic
from prism.release.webhooks import WebhookSender
from prism.services import (
    CertService,
    DnsService,
    PinService,
    RegistrationService,
    ReleaseService,
    RoutingService,
    ServerService,
    Services,
    SpecService,
    StatusService,
    TelemetryService,
    TokenService,
)
from prism.store.sqlite import SqliteStore
from prism.testing.clock import FakeClock
from prism.testing.dataplane import FakeDataPlane
from prism.testing.memory_store import memory_store
from tests.unit.services.conftest import shop

TOKEN = "test-token-0123456789abcdef"


@dataclass
class Api:
    client: httpx.AsyncClient
    store: SqliteStore
    plane: FakeDataPlane
    app: FastAPI

    async def change(self, method: str, path: str, body: Any = None, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {TOKEN}", **kw.pop("headers", {})}
        return await self.client.request(method, path, json=body, headers=headers, **kw)


MakeApi = Callable[..., Any]


@pytest.fixture
async def make_api() -> AsyncIterator[Callable[..., Any]]:
    """``await make_api(limits=..., rate=...)``: an :class:`Api` with the shop app applied."""
    opened: list[tuple[httpx.AsyncClient, SqliteStore, WebhookSender]] = []

    async def make(*, limits: ApiLimits | None = None, rate: RateLimit | None = None) -> Api:
        store = await memory_store()
        plane = FakeDataPlane()
        for color in ("blue", "green", "red"):
            plane.set_servers(f"shop.{color}", "s1")
        clock = FakeClock()
        changes = Changes(store, plane)
        traffic = Traffic(store, changes, plane, clock, poll_interval=0.5)
        webhooks = WebhookSender(clock)
        status = StatusService(store, plane)
        engine = ReleaseEngine(store, traffic, plane, clock, webhooks, drive=False)
        services = Services(
            spec=SpecService(store, changes),
            routing=RoutingService(traffic),
            pins=PinService(store, changes),
            servers=ServerService(store, changes),
            releases=ReleaseService(engine, status),
            status=status,
            registrations=RegistrationService(store, changes, clock),
            dns=DnsService(store, plane),
            certs=CertService(store, plane),
            tokens=TokenService(store, clock),
            telemetry=TelemetryService(store, plane, clock),
        )
        await services.spec.apply(shop(), actor="test", reason=None)
        app = create_app(services, TOKEN, limits=limits, rate=rate)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://prism.test/api/v1"
        )
        opened.append((client, store, webhooks))
        return Api(client, store, plane, app)

    yield make
    for client, store, webhooks in opened:
        await client.aclose()
        await webhooks.close()
        await store.close()


@pytest.fixture
async def api(make_api: Callable[..., Any]) -> Api:
    made: Api = await make_api()
    return made
