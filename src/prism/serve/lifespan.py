"""The composition root of a control plane: one lifespan owns every resource.

:meth:`Prism.open` builds the pieces in order and releases them in reverse,
whatever happens: the store, the data plane, the change path, the release
engine with its webhook sender, and the use-case services the API calls.

* **Embedded** (the default): the store is one SQLite file and the data plane
  is this node's supervised HAProxy (:class:`~prism.dataplane.local.LocalDataPlane`).
  HAProxy is started (or adopted), converged on desired state, and kept so by
  a reconciler that repairs drift; the node's balancer (slow-server weights,
  circuit trips) runs beside it and audits into the store; the engine drives
  every release.
* **Fleet** (``--store etcd://...``): the store is etcd and the data plane is
  every node's agent (:class:`~prism.dataplane.fleet.FleetDataPlane`). Any
  number of control planes serve the API; the one holding the leader lease
  (:class:`~prism.serve.leader.Leadership`) drives the releases.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from prism.clock import SystemClock
from prism.core.state import DesiredState
from prism.dataplane.base import DataPlane
from prism.dataplane.change import Changes
from prism.dataplane.fleet import FleetDataPlane
from prism.dataplane.local import LocalDataPlane
from prism.errors import PrismError
from prism.haproxy.binary import find_haproxy
from prism.node.paths import StatePaths
from prism.node.settings import node_settings
from prism.release.engine import ReleaseEngine
from prism.release.traffic import Traffic
from prism.release.webhooks import WebhookSender
from prism.serve.leader import Leadership
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
from prism.store.desired import load_state
from prism.store.url import StoreOptions, open_store
from prism.types import Store

__all__ = ["Prism", "ServiceOptions"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceOptions:
    state_dir: Path
    haproxy: str | None = None
    admin_port: int | None = None
    stop_haproxy_on_exit: bool = False
    reconcile_interval: float = 5.0
    store: StoreOptions = field(default_factory=StoreOptions)
    #: how long a fleet change may take to be applied on every node
    converge_timeout: float = 15.0
    #: seconds between samples of HAProxy's counters (the dashboard's charts)
    sample_interval: float = 5.0
    #: log one request in this many to Prism (0: no request log; None: as last time, else 1)
    request_log_sample: int | None = None


@dataclass(frozen=True)
class Prism:
    """A running control plane: where it keeps its files, its store, data plane and services."""

    paths: StatePaths
    store: Store
    plane: DataPlane
    services: Services

    async def state(self) -> DesiredState:
        return await load_state(self.store)

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, options: ServiceOptions) -> AsyncIterator[Prism]:
        """Open the store and the data plane, converge, serve; release everything on exit."""
        paths = StatePaths.at(options.state_dir)
        paths.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        paths.check_socket_paths()
        binary = find_haproxy(options.haproxy)
        store = await open_store(options.store, paths.database)
        try:
            if options.store.fleet:
                plane: DataPlane = FleetDataPlane(
                    store, binary, paths.staging, converge_timeout=options.converge_timeout
                )
            else:
                settings = node_settings(
                    paths, options.admin_port, request_log_sample=options.request_log_sample
                )
                plane = LocalDataPlane.for_node(paths, settings, binary)
            async with _running(options, store, plane) as services:
                yield cls(paths, store, plane, services)
        finally:
            await store.close()


@contextlib.asynccontextmanager
async def _running(
    options: ServiceOptions, store: Store, plane: DataPlane
) -> AsyncIterator[Services]:
    clock = SystemClock()
    changes = Changes(store, plane)
    traffic = Traffic(store, changes, plane, clock)
    webhooks = WebhookSender(clock)
    fleet = plane if isinstance(plane, FleetDataPlane) else None
    engine = ReleaseEngine(store, traffic, plane, clock, webhooks, drive=fleet is None)
    registrations = RegistrationService(store, changes, clock)
    background: list[asyncio.Task[None]] = []
    leadership: Leadership | None = None
    if fleet is not None:
        expiries: list[asyncio.Task[None]] = []

        async def lead() -> None:
            assert fleet is not None
            engine.drive = True
            fleet.leading = True
            await engine.resume_all()
            # agents remove expired servers themselves; the leader only audits expiries
            expiries.append(asyncio.create_task(registrations.follow_expiries(converge=False)))

        async def follow() -> None:
            assert fleet is not None
            fleet.leading = False
            for task in expiries:
                task.cancel()
            expiries.clear()
            await engine.close()
            engine.drive = False

        name = f"{socket.gethostname()}-{os.getpid()}"
        leadership = Leadership(store, name, on_lead=lead, on_follow=follow)

    def role() -> str:
        return "leader" if leadership is None or leadership.leading else "follower"

    status = StatusService(
        store,
        plane,
        role=role,
        counters=fleet.reported_counters if fleet is not None else None,
    )
    local = plane if isinstance(plane, LocalDataPlane) else None
    telemetry = TelemetryService(
        store,
        plane,
        clock,
        drift_repairs=lambda: local.applier.drift_repairs if local is not None else 0,
        counters=fleet.reported_counters if fleet is not None else None,
        servers=fleet.reported_servers if fleet is not None else None,
    )
    services = Services(
        spec=SpecService(store, changes),
        routing=RoutingService(traffic),
        pins=PinService(store, changes),
        servers=ServerService(store, changes),
        releases=ReleaseService(engine, status),
        status=status,
        registrations=registrations,
        dns=DnsService(store, plane),
        certs=CertService(store, plane),
        tokens=TokenService(store, clock),
        telemetry=telemetry,
    )
    try:
        if isinstance(plane, LocalDataPlane):
            await plane.start(await load_state(store))
            await changes.converge()
            await engine.resume_all()
            background.append(
                asyncio.create_task(_reconcile_forever(store, plane, options.reconcile_interval))
            )
            background.append(asyncio.create_task(registrations.follow_expiries(converge=True)))
            balancer = plane.balancer
            balancer.audit = store.record
            applier = plane.applier
            background.append(asyncio.create_task(balancer.run(lambda: applier.applied_state)))
        elif isinstance(plane, FleetDataPlane) and leadership is not None:
            await plane.start()
            background.append(asyncio.create_task(leadership.run()))
        background.append(asyncio.create_task(telemetry.run(options.sample_interval)))
        yield services
    finally:
        for task in background:
            task.cancel()
        for task in background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await engine.close()
        await webhooks.close()
        if isinstance(plane, LocalDataPlane):
            try:
                if options.stop_haproxy_on_exit:
                    await plane.supervisor.stop()
                else:
                    await plane.supervisor.detach()
            finally:
                await plane.close_sockets()
        elif isinstance(plane, FleetDataPlane):
            await plane.close()


async def _reconcile_forever(store: Store, plane: LocalDataPlane, interval: float) -> None:
    """Converge periodically: catches drift and anything a crash left half-done."""
    while True:
        await asyncio.sleep(interval)
        try:
            await plane.reconcile(await load_state(store))
        except PrismError as exc:
            log.warning("reconcile failed: %s", exc)
