"""Blue/green releases and rollbacks of one app, on one node.

The driver walks the phase table of :mod:`prism.phases`, saving each phase in
the store before acting on it. The new routing is persisted before HAProxy
is touched; the applier writes the map to disk, flips it with ``set map`` and
reads it back. A gate that refuses leaves routing untouched; a switch that
fails is reverted to the color that was serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict

from prism.apply import Applier
from prism.desired import load_state
from prism.errors import Conflict, GateFailed, InvalidInput, PrismError
from prism.gates import GateResult, health_gate, in_use, smoke_gate
from prism.haproxy.runtime import RuntimeClient
from prism.model import App, DesiredState, Routing, Spec, backend_name, split_hostport
from prism.phases import TERMINAL, Phase, advance
from prism.state import dump, release_key, routing_key
from prism.types import AuditDraft, Clock, Compare, Put, Store

__all__ = ["ReleaseRecord", "Releases", "Step", "SystemClock"]


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class Step(BaseModel):
    """One thing a release did, with what it saw."""

    model_config = ConfigDict(frozen=True)

    name: str
    ok: bool
    message: str
    at: float
    readings: dict[str, Any] = {}


class ReleaseRecord(BaseModel):
    """The latest release of an app, as saved in the store."""

    model_config = ConfigDict(frozen=True)

    app: str
    kind: Literal["release", "rollback"]
    from_color: str
    to_color: str
    phase: Phase
    actor: str
    reason: str | None = None
    started_at: float
    updated_at: float
    steps: tuple[Step, ...] = ()

    def moved(self, phase: Phase, at: float, step: Step | None = None) -> ReleaseRecord:
        steps = self.steps + ((step,) if step else ())
        return self.model_copy(
            update={"phase": advance(self.phase, phase), "updated_at": at, "steps": steps}
        )


@dataclass(frozen=True)
class _Saved:
    record: ReleaseRecord
    revision: int


class Releases:
    """Runs blue/green releases and rollbacks against the local HAProxy."""

    def __init__(
        self,
        store: Store,
        applier: Applier,
        runtime: RuntimeClient,
        clock: Clock,
        *,
        smoke_key: str,
        poll_interval: float = 0.1,
    ) -> None:
        self.store = store
        self.applier = applier
        self.runtime = runtime
        self.clock = clock
        self.smoke_key = smoke_key
        self.poll_interval = poll_interval
        self._locks: dict[str, asyncio.Lock] = {}

    async def latest(self, app: str) -> ReleaseRecord | None:
        entry = await self.store.get(release_key(app))
        return ReleaseRecord.model_validate_json(entry.value) if entry else None

    async def rollback(
        self, app_name: str, *, actor: str, reason: str | None = None, smoke: bool = True
    ) -> ReleaseRecord:
        """Return the app to the color it served before its last release, through the same gates."""
        state = await load_state(self.store)
        app = state.spec.app(app_name)
        previous = state.routing_for(app).previous
        if previous is None:
            raise Conflict(
                f"app {app.name!r} has no previous color to roll back to",
                hint=f"release it to a named color instead: prism release {app.name} --to COLOR",
            )
        return await self.release(
            app_name, previous, actor=actor, reason=reason, smoke=smoke, kind="rollback"
        )

    async def release(
        self,
        app_name: str,
        to: str,
        *,
        actor: str,
        reason: str | None = None,
        smoke: bool = True,
        drain_timeout_ms: int | None = None,
        kind: Literal["release", "rollback"] = "release",
    ) -> ReleaseRecord:
        """Move all of ``app_name``'s traffic to color ``to``; see the module docstring."""
        lock = self._locks.setdefault(app_name, asyncio.Lock())
        if lock.locked():
            raise Conflict(f"a release of {app_name!r} is already running", hint="wait for it")
        async with lock:
            return await self._release(app_name, to, actor, reason, smoke, drain_timeout_ms, kind)

    async def _release(
        self,
        app_name: str,
        to: str,
        actor: str,
        reason: str | None,
        smoke: bool,
        drain_timeout_ms: int | None,
        kind: Literal["release", "rollback"],
    ) -> ReleaseRecord:
        state = await load_state(self.store)
        app = state.spec.app(app_name)
        app.color(to)
        routing = state.routing_for(app)
        if routing.active == to:
            raise Conflict(f"color {to!r} of {app.name!r} is already active", hint="nothing to do")
        if drain_timeout_ms is not None and not 0 <= drain_timeout_ms <= 3_600_000:
            raise InvalidInput("drain timeout must be between 0 and 3600000 ms")
        previous = await self.store.get(release_key(app.name))
        if previous is not None:
            last = ReleaseRecord.model_validate_json(previous.value)
            if last.phase not in TERMINAL:
                raise Conflict(
                    f"a {last.kind} of {app.name!r} is in phase {last.phase.value!r}",
                    hint="wait until it ends",
                )
        now = self.clock.now()
        record = ReleaseRecord(
            app=app.name,
            kind=kind,
            from_color=routing.active,
            to_color=to,
            phase=Phase.PENDING,
            actor=actor,
            reason=reason,
            started_at=now,
            updated_at=now,
        )
        saved = await self._save(
            record.moved(Phase.GATING, now), previous.mod_revision if previous else 0
        )

        for gate in await self._gates(state, app, to, smoke):
            step = Step(
                name=gate.name,
                ok=gate.passed,
                message=gate.message,
                at=self.clock.now(),
                readings=gate.readings,
            )
            if not gate.passed:
                refused = saved.record.moved(Phase.REFUSED, step.at, step)
                await self._save(refused, saved.revision, audit=self._audit(refused, "refused"))
                raise GateFailed(
                    f"{kind} of {app.name!r} to {to!r} refused: {gate.message}",
                    hint="nothing was changed; traffic stays on " + repr(routing.active),
                    detail={"gate": gate.name, "readings": gate.readings},
                )
            saved = await self._save(_with_step(saved.record, step), saved.revision)

        switching = saved.record.moved(Phase.SWITCHING, self.clock.now())
        saved = await self._switch(app, routing, switching, saved.revision)
        drained = await self._drain(app, routing.active, drain_timeout_ms)
        phase = Phase.COMPLETED if drained.passed else Phase.DRAIN_TIMEOUT
        step = Step(
            name="drain",
            ok=drained.passed,
            message=drained.message,
            at=self.clock.now(),
            readings=drained.readings,
        )
        final = saved.record.moved(phase, step.at, step)
        await self._save(final, saved.revision, audit=self._audit(final, "completed"))
        return final

    async def _gates(self, state: DesiredState, app: App, to: str, smoke: bool) -> list[GateResult]:
        """Run the gates in order, stopping at the first refusal."""
        results = [health_gate(await self.runtime.show_stat(), backend_name(app.name, to), to)]
        if results[0].passed and smoke and app.smoke is not None:
            results.append(await self._smoke(state.spec, app, to))
        return results

    async def _smoke(self, spec: Spec, app: App, color: str) -> GateResult:
        assert app.smoke is not None
        bind = app.bind or next(x.bind for x in spec.listeners if x.name == app.listener)
        host, port = split_hostport(bind)
        if host in ("0.0.0.0", "*"):
            host = "127.0.0.1"
        headers = {"X-Prism-Color": color, "X-Prism-Smoke-Key": self.smoke_key}
        if app.host:
            headers["Host"] = app.host
        timeout = app.smoke.timeout_ms / 1000
        try:
            async with httpx.AsyncClient(timeout=timeout, trust_env=False) as client:
                reply = await client.get(f"http://{host}:{port}{app.smoke.path}", headers=headers)
        except httpx.HTTPError as exc:
            return smoke_gate(
                None,
                "",
                expect_status=app.smoke.expect_status,
                expect_body=app.smoke.expect_body,
                error=str(exc) or type(exc).__name__,
            )
        return smoke_gate(
            reply.status_code,
            reply.text,
            expect_status=app.smoke.expect_status,
            expect_body=app.smoke.expect_body,
        )

    async def _switch(
        self, app: App, routing: Routing, record: ReleaseRecord, revision: int
    ) -> _Saved:
        """Persist the new routing, then apply it; revert if HAProxy did not take it."""
        route_entry = await self.store.get(routing_key(app.name))
        new_route = Routing(active=record.to_color, previous=routing.active)
        started = self.clock.monotonic()
        rev = await self.store.commit(
            [Put(routing_key(app.name), dump(new_route)), Put(release_key(app.name), dump(record))],
            expect=[
                Compare(routing_key(app.name), route_entry.mod_revision if route_entry else 0),
                Compare(release_key(app.name), revision),
            ],
            audit=self._audit(record, "switch"),
        )
        try:
            report = await self.applier.apply(await load_state(self.store))
        except PrismError as exc:
            back = [Put(routing_key(app.name), dump(routing))]
            failed = record.moved(
                Phase.FAILED,
                self.clock.now(),
                Step(name="switch", ok=False, message=str(exc), at=self.clock.now()),
            )
            await self.store.commit(
                [*back, Put(release_key(app.name), dump(failed))],
                audit=self._audit(failed, "failed"),
            )
            # The reconciler retries a failed revert; the caller needs the original error.
            with contextlib.suppress(PrismError):
                await self.applier.apply(await load_state(self.store))
            raise
        elapsed = round((self.clock.monotonic() - started) * 1000, 3)
        step = Step(
            name="switch",
            ok=True,
            message=f"traffic moved from {routing.active!r} to {record.to_color!r} in {elapsed} ms",
            at=self.clock.now(),
            readings={"operations": report.operations, "revision": report.revision, "ms": elapsed},
        )
        draining = record.moved(Phase.DRAINING, step.at, step)
        return await self._save(draining, rev)

    async def _drain(self, app: App, old: str, timeout_ms: int | None) -> GateResult:
        """Wait until the old color's in-use connections reach 0 (idle pooled ones don't count)."""
        backend = backend_name(app.name, old)
        timeout = (app.drain_timeout_ms if timeout_ms is None else timeout_ms) / 1000
        deadline = self.clock.monotonic() + timeout
        while True:
            used = {c.server: c.used_cur for c in await self.runtime.show_servers_conn(backend)}
            remaining = in_use(used)
            if remaining == 0:
                return GateResult(
                    "drain", True, f"{old!r} drained: no connection in use", {"in_use": used}
                )
            if self.clock.monotonic() >= deadline:
                return GateResult(
                    "drain",
                    False,
                    f"{old!r} still had {remaining} connection(s) in use after {timeout:g}s; "
                    "they finish on the old color, new requests go to the new one",
                    {"in_use": used},
                )
            await self.clock.sleep(self.poll_interval)

    async def _save(
        self, record: ReleaseRecord, expect: int, *, audit: AuditDraft | None = None
    ) -> _Saved:
        revision = await self.store.commit(
            [Put(release_key(record.app), dump(record))],
            expect=[Compare(release_key(record.app), expect)],
            audit=audit,
        )
        return _Saved(record, revision)

    def _audit(self, record: ReleaseRecord, event: str) -> AuditDraft:
        detail: dict[str, Any] = {
            "from": record.from_color,
            "to": record.to_color,
            "phase": record.phase.value,
        }
        if record.steps:
            last = record.steps[-1]
            detail["step"] = {"name": last.name, "ok": last.ok, "message": last.message}
            detail["readings"] = json.loads(json.dumps(last.readings, default=str))
        return AuditDraft(
            actor=record.actor,
            action=f"{record.kind}.{event}",
            app=record.app,
            detail=detail,
            reason=record.reason,
        )


def _with_step(record: ReleaseRecord, step: Step) -> ReleaseRecord:
    return record.model_copy(update={"steps": (*record.steps, step), "updated_at": step.at})
