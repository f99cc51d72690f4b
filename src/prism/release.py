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
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict

from prism.apply import Applier
from prism.clock import SystemClock
from prism.desired import load_state
from prism.errors import Conflict, GateFailed, InvalidInput, PrismError
from prism.gates import GateResult, health_gate, in_use, smoke_gate
from prism.haproxy.runtime import RuntimeClient
from prism.model import App, DesiredState, Routing, Spec, backend_name, split_hostport
from prism.phases import TERMINAL, Phase, advance
from prism.routing import check_weights, moved_buckets
from prism.state import dump, release_key, routing_key
from prism.types import AuditDraft, Clock, Compare, Put, Store

__all__ = ["ReleaseRecord", "Releases", "Step", "SystemClock"]


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
    from_weights: dict[str, int] = {}
    to_weights: dict[str, int] = {}
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

    async def shift(
        self,
        app_name: str,
        weights: dict[str, int],
        *,
        actor: str,
        reason: str | None = None,
        smoke: bool = True,
    ) -> dict[str, Any]:
        """Set an app's weights across any number of colors in one atomic map change.

        Colors whose share grows must pass the gates first; users only move if
        their bucket's color lost share (see :mod:`prism.routing`).
        """
        lock = self._locks.setdefault(app_name, asyncio.Lock())
        if lock.locked():
            raise Conflict(f"a change of {app_name!r} is already running", hint="wait for it")
        async with lock:
            state = await load_state(self.store)
            app = state.spec.app(app_name)
            for color in weights:
                app.color(color)
            target = check_weights(weights)
            latest = await self.latest(app.name)
            if latest is not None and latest.phase not in TERMINAL:
                raise Conflict(
                    f"a {latest.kind} of {app.name!r} is in phase {latest.phase.value!r}",
                    hint="wait until it ends",
                )
            routing = state.routing_for(app)
            if routing.weights == target:
                return {"app": app.name, "weights": target, "moved_buckets": 0, "changed": False}
            for gate in await self._gates(state, app, growing(routing.weights, target), smoke):
                if not gate.passed:
                    await self.store.record(
                        AuditDraft(
                            actor=actor,
                            action="shift.refused",
                            app=app.name,
                            detail={
                                "from_weights": routing.weights,
                                "to_weights": target,
                                "step": {"name": gate.name, "message": gate.message},
                            },
                            reason=reason,
                        )
                    )
                    raise GateFailed(
                        f"shift of {app.name!r} refused: {gate.message}",
                        hint=f"nothing was changed ({_weights(routing.weights)})",
                        detail={"gate": gate.name, "readings": gate.readings},
                    )
            new_route = Routing.moved(routing, target)
            moved = moved_buckets(routing.layout, new_route.layout)
            started = self.clock.monotonic()
            entry = await self.store.get(routing_key(app.name))
            await self.store.commit(
                [Put(routing_key(app.name), dump(new_route))],
                expect=[Compare(routing_key(app.name), entry.mod_revision if entry else 0)],
                audit=AuditDraft(
                    actor=actor,
                    action="shift",
                    app=app.name,
                    detail={
                        "from_weights": routing.weights,
                        "to_weights": target,
                        "moved_buckets": moved,
                    },
                    reason=reason,
                ),
            )
            try:
                report = await self.applier.apply(await load_state(self.store))
            except PrismError:
                await self.store.commit(
                    [Put(routing_key(app.name), dump(routing))],
                    audit=AuditDraft(actor=actor, action="shift.reverted", app=app.name),
                )
                with contextlib.suppress(PrismError):
                    await self.applier.apply(await load_state(self.store))
                raise
            return {
                "app": app.name,
                "weights": target,
                "previous": routing.weights,
                "moved_buckets": moved,
                "changed": True,
                "operations": report.operations,
                "ms": round((self.clock.monotonic() - started) * 1000, 3),
            }

    async def rollback(
        self, app_name: str, *, actor: str, reason: str | None = None, smoke: bool = True
    ) -> ReleaseRecord:
        """Return the app to the color it served before its last release, through the same gates."""
        state = await load_state(self.store)
        app = state.spec.app(app_name)
        previous = state.routing_for(app).previous
        if previous is None or not all(app.has_color(c) for c in previous):
            raise Conflict(
                f"app {app.name!r} has no previous weights to roll back to",
                hint=f"release it to a named color instead: prism release {app.name} --to COLOR",
            )
        return await self.release(
            app_name, None, actor=actor, reason=reason, smoke=smoke, kind="rollback"
        )

    async def release(
        self,
        app_name: str,
        to: str | None,
        *,
        actor: str,
        reason: str | None = None,
        smoke: bool = True,
        drain_timeout_ms: int | None = None,
        kind: Literal["release", "rollback"] = "release",
    ) -> ReleaseRecord:
        """Move all of ``app_name``'s traffic to color ``to`` (a rollback, with ``to`` None,
        restores the weights before the last change); see the module docstring."""
        lock = self._locks.setdefault(app_name, asyncio.Lock())
        if lock.locked():
            raise Conflict(f"a release of {app_name!r} is already running", hint="wait for it")
        async with lock:
            return await self._release(app_name, to, actor, reason, smoke, drain_timeout_ms, kind)

    async def _release(
        self,
        app_name: str,
        to: str | None,
        actor: str,
        reason: str | None,
        smoke: bool,
        drain_timeout_ms: int | None,
        kind: Literal["release", "rollback"],
    ) -> ReleaseRecord:
        state = await load_state(self.store)
        app = state.spec.app(app_name)
        routing = state.routing_for(app)
        if to is None:
            if routing.previous is None:
                raise Conflict(f"app {app.name!r} has no previous weights to roll back to")
            target = dict(routing.previous)
            to = Routing.moved(routing, target).active
        else:
            app.color(to)
            target = {to: 100}
        if routing.weights == target:
            raise Conflict(
                f"{app.name!r} already sends all its traffic there ({_weights(target)})",
                hint="nothing to do",
            )
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
            from_weights=routing.weights,
            to_weights=target,
            phase=Phase.PENDING,
            actor=actor,
            reason=reason,
            started_at=now,
            updated_at=now,
        )
        saved = await self._save(
            record.moved(Phase.GATING, now), previous.mod_revision if previous else 0
        )

        for gate in await self._gates(state, app, growing(routing.weights, target), smoke):
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
                    hint="nothing was changed; traffic stays as it was "
                    f"({_weights(routing.weights)})",
                    detail={"gate": gate.name, "readings": gate.readings},
                )
            saved = await self._save(_with_step(saved.record, step), saved.revision)

        switching = saved.record.moved(Phase.SWITCHING, self.clock.now())
        saved = await self._switch(app, routing, switching, saved.revision)
        emptied = sorted(c for c in routing.weights if c not in target)
        drained = await self._drain(app, emptied, drain_timeout_ms)
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

    async def _gates(
        self, state: DesiredState, app: App, colors: list[str], smoke: bool
    ) -> list[GateResult]:
        """Health (then smoke) of every color about to get more traffic; stops at a refusal."""
        rows = await self.runtime.show_stat()
        results: list[GateResult] = []
        for color in colors:
            results.append(health_gate(rows, backend_name(app.name, color), color))
            if not results[-1].passed:
                return results
        if smoke and app.smoke is not None:
            for color in colors:
                results.append(await self._smoke(state.spec, app, color))
                if not results[-1].passed:
                    return results
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
        new_route = Routing.moved(routing, record.to_weights)
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
            message=f"traffic moved from {_weights(routing.weights)} to "
            f"{_weights(record.to_weights)} in {elapsed} ms",
            at=self.clock.now(),
            readings={"operations": report.operations, "revision": report.revision, "ms": elapsed},
        )
        draining = record.moved(Phase.DRAINING, step.at, step)
        return await self._save(draining, rev)

    async def _drain(self, app: App, colors: list[str], timeout_ms: int | None) -> GateResult:
        """Wait until the colors that lost all traffic have no connection in use
        (idle pooled ones don't count), bounded by the drain timeout."""
        timeout = (app.drain_timeout_ms if timeout_ms is None else timeout_ms) / 1000
        deadline = self.clock.monotonic() + timeout
        names = ", ".join(repr(c) for c in colors) or "nothing"
        while True:
            used: dict[str, int] = {}
            for color in colors:
                backend = backend_name(app.name, color)
                for conn in await self.runtime.show_servers_conn(backend):
                    used[f"{color}/{conn.server}"] = conn.used_cur
            remaining = in_use(used)
            if remaining == 0:
                return GateResult(
                    "drain", True, f"{names} drained: no connection in use", {"in_use": used}
                )
            if self.clock.monotonic() >= deadline:
                return GateResult(
                    "drain",
                    False,
                    f"{names} still had {remaining} connection(s) in use after {timeout:g}s; "
                    "they finish where they are, new requests go to the new weights",
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
            "from_weights": record.from_weights,
            "to_weights": record.to_weights,
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


def growing(before: dict[str, int], after: dict[str, int]) -> list[str]:
    """Colors whose share grows: the ones gates must vouch for."""
    return sorted(c for c, w in after.items() if w > before.get(c, 0))


def _weights(weights: dict[str, int]) -> str:
    return " ".join(f"{c}={w}" for c, w in sorted(weights.items()))


def _with_step(record: ReleaseRecord, step: Step) -> ReleaseRecord:
    return record.model_copy(update={"steps": (*record.steps, step), "updated_at": step.at})
