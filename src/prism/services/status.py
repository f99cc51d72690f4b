"""The status use case: what each app looks like now, the node's health, the audit log."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from prism.core.buckets import layout_ranges
from prism.core.model import SLOT_PREFIX, App, backend_name
from prism.core.readings import Counters, ServerReading
from prism.core.state import DesiredState
from prism.dataplane.base import DataPlane
from prism.errors import InvalidInput, PrismError
from prism.release.recorder import stored_releases
from prism.services.certs import WARN_DAYS
from prism.services.pins import pin_list
from prism.store.desired import load_state
from prism.types import AuditDraft, Store

__all__ = ["StatusService", "server_status"]


def server_status(readings: list[ServerReading]) -> dict[str, Any]:
    """One server's health from the readings of every node that has it.

    On one node: its exact status, last check, connections in use, weight
    (percent), and why it is not whole if it is not: ``slow`` (the reason Prism
    lowered its weight), ``circuit`` (why its breaker tripped), ``warming`` (its
    slowstart ramp's share so far); ``trips`` counts its breaker's actions. In a
    fleet, ``status`` is the exact status when every node agrees (``UP`` only
    if it is ``UP`` everywhere), else how many nodes see it ``UP`` (``UP 2/3``),
    ``weight`` is the lowest of the nodes', and ``nodes`` holds each node's own
    reading.
    """
    if not readings:
        return {"status": "UNKNOWN", "check": "", "in_use": 0}
    statuses = {r.status for r in readings}
    if len(statuses) == 1:
        status = readings[0].status
    else:
        up = sum(1 for r in readings if r.status == "UP")
        status = f"UP {up}/{len(readings)}" if up else sorted(statuses)[0]
    checks = {r.check_status for r in readings}
    found: dict[str, Any] = {
        "status": status,
        "check": readings[0].check_status if len(checks) == 1 else ",".join(sorted(checks)),
        "in_use": sum(r.in_use for r in readings),
        "weight": min(r.user_weight for r in readings),
        "trips": sum(r.trips for r in readings),
    }
    for key, values in (
        ("slow", [r.slow for r in readings]),
        ("circuit", [r.circuit for r in readings]),
        ("warming", [r.warming for r in readings]),
    ):
        value = next((v for v in values if v), None)
        if value is not None:
            found[key] = value
    if any(r.node for r in readings):
        found["nodes"] = {r.node: _node_reading(r) for r in readings}
    return found


def _node_reading(reading: ServerReading) -> dict[str, Any]:
    found: dict[str, Any] = {
        "status": reading.status,
        "check": reading.check_status,
        "in_use": reading.in_use,
        "weight": reading.user_weight,
    }
    for key in ("slow", "circuit", "warming"):
        if getattr(reading, key):
            found[key] = getattr(reading, key)
    return found


def _logged(counters: Counters | None) -> dict[str, Any] | None:
    if counters is None or counters.log is None:
        return None
    return counters.log.summary()


class StatusService:
    """``prism status``, ``prism health`` and ``prism history``."""

    def __init__(
        self,
        store: Store,
        plane: DataPlane,
        *,
        role: Callable[[], str] = lambda: "leader",
        counters: Callable[[Sequence[str]], Awaitable[dict[str, Counters]]] | None = None,
    ) -> None:
        self.store = store
        self.plane = plane
        #: "leader" when this control plane drives releases, else "follower"
        self.role = role
        #: how one app's counters are read (a fleet: from the nodes' last reports, no poll)
        self.counters = counters or plane.counters

    async def health(self) -> dict[str, Any]:
        state = await load_state(self.store)
        info = await self.plane.info()
        return {
            "status": "ok" if info.healthy else "degraded",
            "haproxy": dict(info.detail),
            "desired_revision": state.revision,
            "applied_revision": info.applied_revision,
            "last_error": info.last_error,
            "role": self.role(),
            "lost_nodes": list(info.lost),
        }

    async def nodes(self) -> list[dict[str, Any]]:
        """Every HAProxy node with its applied revision and how far it lags behind."""
        revision = (await load_state(self.store)).revision
        rows = await self.plane.nodes()
        for row in rows:
            if "applied_revision" in row:
                row["lag"] = max(0, revision - int(row["applied_revision"]))
        return rows

    async def forget(self, node: str, *, actor: str) -> dict[str, Any]:
        """Stop waiting for a lost node; audited."""
        await self.plane.forget(node)
        await self.store.record(
            AuditDraft(actor=actor, action="node.forget", detail={"node": node})
        )
        return {"forgotten": node}

    async def status(self, app_name: str | None = None) -> list[dict[str, Any]]:
        """Per app: weights, buckets, servers with their exact health, pins, latest release;
        for one app, each color's request log too (counts and p50/p95/p99 since Prism
        started, None without one)."""
        state = await load_state(self.store)
        apps = [state.spec.app(app_name)] if app_name else list(state.spec.apps)
        # one app: only its backends, not a row per server of the whole configuration
        backends = [backend_name(a.name, c.name) for a in apps for c in a.colors]
        try:
            readings = await self.plane.servers(backends if app_name else [])
        except PrismError:
            readings = []  # status still answers: every server shows UNKNOWN
        counters: dict[str, Counters] = {}
        if app_name:
            try:
                counters = await self.counters(backends)
            except PrismError:
                counters = {}
        info = await self.plane.info()
        by_server: dict[tuple[str, str], list[ServerReading]] = {}
        for reading in readings:
            by_server.setdefault((reading.backend, reading.server), []).append(reading)
        return [
            await self._app_status(state, app, by_server, info.applied_revision, counters)
            for app in apps
        ]

    async def _app_status(
        self,
        state: DesiredState,
        app: App,
        readings: dict[tuple[str, str], list[ServerReading]],
        applied: int,
        counters: dict[str, Counters],
    ) -> dict[str, Any]:
        routing = state.routing_for(app)
        ranges = layout_ranges(routing.layout)
        colors = []
        for color in app.colors:
            backend = backend_name(app.name, color.name)
            servers = [
                {
                    "name": s.name,
                    "address": s.address,
                    "source": "spec",
                    **server_status(readings.get((backend, s.name), [])),
                }
                for s in color.servers
            ]
            for name, reg in sorted(state.registered(app.name, color.name).items()):
                lease = await self.store.lease(reg.lease, reg.ttl_ms / 1000)
                try:
                    left = await lease.remaining()
                except PrismError:
                    left = None
                servers.append(
                    {
                        "name": name,
                        "address": reg.address,
                        "source": "registration",
                        "ttl_left": None if left is None else round(left, 1),
                        "registered_by": reg.by,
                        **server_status(readings.get((backend, name), [])),
                    }
                )
            for slot in range(1, color.slots + 1):
                seen = [
                    r for r in readings.get((backend, f"{SLOT_PREFIX}{slot}"), []) if not r.absent
                ]
                if seen:  # an empty slot is no server at all
                    servers.append(
                        {
                            "name": f"{SLOT_PREFIX}{slot}",
                            "address": seen[0].address,
                            "source": "dns",
                            **server_status(seen),
                        }
                    )
            colors.append(
                {
                    "name": color.name,
                    "version": color.version,
                    "active": color.name == routing.active,
                    "weight": routing.weights.get(color.name, 0),
                    "buckets": [f"{lo}-{hi}" for lo, hi, c in ranges if c == color.name],
                    "discovery": color.discovery.model_dump() if color.discovery else None,
                    "servers": servers,
                    "requests": _logged(counters.get(backend)),
                }
            )
        releases = await stored_releases(self.store, app.name)
        release = releases[0] if releases else None
        tls = app.tls
        if app.listener is not None:
            tls = next((x.tls for x in state.spec.listeners if x.name == app.listener), None)
        serving: list[dict[str, Any]] | None = None
        if tls is not None:
            try:
                serving = await self.plane.certificates(tls, warn_days=WARN_DAYS)
            except PrismError:
                serving = []  # status still answers without HAProxy's view
        return {
            "name": app.name,
            "bind": app.bind,
            "listener": app.listener,
            "host": app.host,
            "stable": app.stable,
            "active": routing.active,
            "weights": routing.weights,
            "previous": routing.previous,
            "stickiness": app.stickiness.model_dump(mode="json"),
            "tls": None if tls is None else {"certs": list(tls.certs), "serving": serving},
            "colors": colors,
            "pins": pin_list(state, app),
            "release": release.model_dump(mode="json") if release else None,
            "desired_revision": state.revision,
            "applied_revision": applied,
        }

    async def history(self, app_name: str | None, limit: int) -> list[dict[str, Any]]:
        if app_name is not None:
            (await load_state(self.store)).spec.app(app_name)
        if not 1 <= limit <= 10_000:
            raise InvalidInput("limit must be between 1 and 10000")
        records = await self.store.audit(app=app_name, limit=limit)
        return [
            {
                "id": r.id,
                "revision": r.revision,
                "at": r.at,
                "actor": r.actor,
                "action": r.action,
                "app": r.app,
                "detail": r.detail,
                "reason": r.reason,
                "request_id": r.request_id,
            }
            for r in records
        ]
