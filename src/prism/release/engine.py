"""The release engine: drives every active release, one saved transition at a time.

Each release of a color of an app has one record in the store
(``releases/<app>/<color>``) and, while it is active, one task here. A tick
loads the record, takes at most one step of the plan, saves the result
(compare-and-put, so a person's pause/promote/abort is never lost), then acts
or sleeps. Because timers are wall-clock deadlines in the record and every
action is idempotent, a Prism killed at any point resumes from what was saved
(:meth:`ReleaseEngine.resume_all`): pauses keep their remaining time, the
analysis window keeps its baseline counters, and a release whose target is no
longer healthy rolls back before anything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

from prism.core.keys import dump
from prism.errors import (
    Conflict,
    GateFailed,
    IllegalTransition,
    InvalidInput,
    NotFound,
    PrismError,
)
from prism.release.driver import StepDriver
from prism.release.phases import Phase
from prism.release.plan import PauseStep, ReleasePlan, WeightStep
from prism.release.record import LogEntry, ReleaseRecord
from prism.release.webhooks import Event, WebhookSender
from prism.services.routing import Traffic, format_weights
from prism.store.desired import load_state
from prism.types import AuditDraft, Clock, Compare, Put, Store

__all__ = ["ReleaseEngine", "release_key"]

log = logging.getLogger("prism.release.engine")

RELEASES = "releases/"
#: Phases a person must act on (or that wait for time); `start(wait=True)` returns there.
_SETTLED = frozenset({Phase.WAITING, Phase.PAUSED, Phase.HOLDING})


def release_key(app: str, color: str) -> str:
    return f"{RELEASES}{app}/{color}"


class ReleaseEngine:
    """Starts, drives and steers releases; see the module docstring."""

    def __init__(
        self, store: Store, traffic: Traffic, clock: Clock, webhooks: WebhookSender
    ) -> None:
        self.store = store
        self.traffic = traffic
        self.runtime = traffic.runtime
        self.clock = clock
        self.webhooks = webhooks
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._wake: dict[tuple[str, str], asyncio.Event] = {}
        #: set on every save of a release, for callers waiting on its progress
        self._saved: dict[tuple[str, str], asyncio.Event] = {}
        self._driver = StepDriver(self)

    # -- lifecycle -----------------------------------------------------------

    async def resume_all(self) -> None:
        """After a (re)start: drive every release the store says is active."""
        for entry in await self.store.list(RELEASES):
            record = ReleaseRecord.model_validate_json(entry.value)
            if record.phase is Phase.PENDING:
                # Saved just before its first gate: nothing was changed yet.
                why = "Prism restarted before the release began"
                refused = record.moved(
                    Phase.REFUSED, self.clock.now(), self.entry("resume", False, why)
                )
                await self.save(refused, entry.mod_revision)
            elif record.active:
                self._spawn(record)

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    def _spawn(self, record: ReleaseRecord) -> None:
        key = (record.app, record.to_color)
        self.traffic.releasing.setdefault(record.app, set()).add(record.to_color)
        self._wake[key] = asyncio.Event()
        if key not in self._tasks or self._tasks[key].done():
            self._tasks[key] = asyncio.create_task(self._run(record.app, record.to_color))

    def wakeup(self, app: str, color: str) -> None:
        event = self._wake.get((app, color))
        if event is not None:
            event.set()

    # -- reads ---------------------------------------------------------------

    async def get(self, app: str, color: str) -> tuple[ReleaseRecord, int] | None:
        entry = await self.store.get(release_key(app, color))
        if entry is None:
            return None
        return ReleaseRecord.model_validate_json(entry.value), entry.mod_revision

    async def records(self, app: str) -> list[ReleaseRecord]:
        """Every color's latest release of ``app``, newest first."""
        found = [
            ReleaseRecord.model_validate_json(e.value)
            for e in await self.store.list(f"{RELEASES}{app}/")
        ]
        return sorted(found, key=lambda r: r.started_at, reverse=True)

    async def latest(self, app: str) -> ReleaseRecord | None:
        records = await self.records(app)
        return records[0] if records else None

    async def find(self, app: str, color: str | None) -> tuple[ReleaseRecord, int]:
        """The release of ``color``, or the app's only active one when no color is named."""
        if color is not None:
            found = await self.get(app, color)
            if found is None:
                raise NotFound(f"no release of {color!r} in {app!r}")
            return found
        active = [r for r in await self.records(app) if r.active]
        if not active:
            raise NotFound(f"{app!r} has no active release", hint=f"prism release status {app}")
        if len(active) > 1:
            raise InvalidInput(
                f"{app!r} has {len(active)} active releases: name one",
                hint="--color " + " | ".join(r.to_color for r in active),
            )
        found = await self.get(app, active[0].to_color)
        assert found is not None
        return found

    # -- starting ------------------------------------------------------------

    async def start(
        self, app_name: str, plan: ReleasePlan, *, actor: str, reason: str | None, wait: bool
    ) -> ReleaseRecord:
        """Gate, save and start a release; with ``wait``, return once it ends or waits."""
        async with self.traffic.lock(app_name):
            record = await self._begin(app_name, plan, actor, reason)
        if not wait:
            return record
        saved = self._saved.setdefault((record.app, record.to_color), asyncio.Event())
        while True:
            found = await self.get(record.app, record.to_color)
            assert found is not None
            if not found[0].active or found[0].phase in _SETTLED:
                return found[0]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(saved.wait(), 1.0)
            saved.clear()

    async def _begin(
        self, app_name: str, plan: ReleasePlan, actor: str, reason: str | None
    ) -> ReleaseRecord:
        state = await load_state(self.store)
        app = state.spec.app(app_name)
        app.color(plan.to)
        for step in plan.steps:
            if isinstance(step, WeightStep) and step.source is not None:
                app.color(step.source)
        routing = state.routing_for(app)
        existing = await self.get(app.name, plan.to)
        if existing is not None and existing[0].active:
            raise Conflict(
                f"{plan.to!r} of {app.name!r} is already being released "
                f"(phase {existing[0].phase.value})",
                hint=f"prism release status {app.name}",
            )
        if routing.weights.get(plan.to, 0) >= plan.final_weight and plan.final_weight == 100:
            raise Conflict(
                f"{app.name!r} already sends all its traffic to {plan.to!r}", hint="nothing to do"
            )
        now = self.clock.now()
        others = sorted(c for c in routing.weights if c != plan.to)
        record = ReleaseRecord(
            id=uuid.uuid4().hex[:12],
            app=app.name,
            from_color=max(others, key=lambda c: routing.weights[c]) if others else app.stable,
            to_color=plan.to,
            plan=plan,
            initial_weights=routing.weights,
            phase=Phase.PENDING,
            analysis=plan.analysis,
            actor=actor,
            reason=reason,
            started_at=now,
            updated_at=now,
        )
        revision = await self.save(record, existing[1] if existing else 0)
        gates = await self.traffic.gates(state, app, [plan.to], plan.smoke)
        for gate in gates:
            record = record.noted(
                self.clock.now(), self.entry(gate.name, gate.passed, gate.message, gate.readings)
            )
        failed = next((g for g in gates if not g.passed), None)
        if failed is not None:
            refused = record.moved(Phase.REFUSED, self.clock.now())
            await self.save(refused, revision, audit=self.audit(refused, "refused", failed.message))
            raise GateFailed(
                f"release of {app.name!r} to {plan.to!r} refused: {failed.message}",
                hint=f"nothing was changed; traffic stays as it was "
                f"({format_weights(routing.weights)})",
                detail={"gate": failed.name, "readings": failed.readings},
            )
        record = record.moved(Phase.RUNNING, self.clock.now(), step_started_at=self.clock.now())
        await self.save(record, revision, audit=self.audit(record, "started"))
        await self.emit(record, "started", {"plan": plan.model_dump(mode="json")})
        self._spawn(record)
        return record

    # -- steering ------------------------------------------------------------

    async def promote(
        self, app: str, color: str | None, *, full: bool, actor: str
    ) -> ReleaseRecord:
        """Skip the current pause (or hold); with ``full``, go straight to the final weight."""
        record, revision = await self.find(app, color)
        now = self.clock.now()
        if record.phase not in (Phase.RUNNING, Phase.WAITING, Phase.HOLDING):
            raise Conflict(f"a release in phase {record.phase.value!r} cannot be promoted")
        step = record.step
        if full:
            step = max(i for i, s in enumerate(record.plan.steps) if isinstance(s, WeightStep))
        elif step < len(record.plan.steps) and isinstance(record.plan.steps[step], PauseStep):
            step += 1
        entry = self.entry("promote", True, f"promoted by {actor}" + (" (full)" if full else ""))
        moved = record.moved(
            Phase.RUNNING, now, entry, step=step, step_started_at=now, confirmed_step=step
        )
        await self.save(moved, revision, audit=self.audit(moved, "promoted", entry.message))
        await self.emit(moved, "promoted", {"full": full, "by": actor})
        self.wakeup(moved.app, moved.to_color)
        return moved

    async def pause(self, app: str, color: str | None, *, actor: str) -> ReleaseRecord:
        record, revision = await self.find(app, color)
        now = self.clock.now()
        paused = record.moved(
            Phase.PAUSED, now, self.entry("pause", True, f"paused by {actor}"), paused_at=now
        )
        await self.save(paused, revision, audit=self.audit(paused, "paused", f"by {actor}"))
        await self.emit(paused, "paused", {"by": actor})
        return paused

    async def resume(self, app: str, color: str | None, *, actor: str) -> ReleaseRecord:
        record, revision = await self.find(app, color)
        if record.phase is not Phase.PAUSED:
            raise Conflict(f"the release is {record.phase.value!r}, not paused")
        now = self.clock.now()
        held = now - (record.paused_at or now)
        resumed = record.moved(
            Phase.RUNNING,
            now,
            self.entry("resume", True, f"resumed by {actor}"),
            paused_at=None,
            step_started_at=record.step_started_at + held,
        )
        await self.save(resumed, revision, audit=self.audit(resumed, "resumed", f"by {actor}"))
        await self.emit(resumed, "resumed", {"by": actor})
        self.wakeup(resumed.app, resumed.to_color)
        return resumed

    async def abort(
        self, app: str, color: str | None, *, actor: str, reason: str | None
    ) -> ReleaseRecord:
        """Roll back on request: the target returns to its share before the release."""
        record, revision = await self.find(app, color)
        why = f"aborted by {actor}" + (f": {reason}" if reason else "")
        aborting = record.moved(
            Phase.ROLLING_BACK, self.clock.now(), self.entry("abort", False, why)
        )
        await self.save(aborting, revision)
        self.wakeup(aborting.app, aborting.to_color)
        return aborting

    # -- the driver ----------------------------------------------------------

    async def _run(self, app: str, color: str) -> None:
        key = (app, color)
        try:
            while True:
                found = await self.get(app, color)
                if found is None or not found[0].active:
                    return
                record, revision = found
                try:
                    delay = await self._driver.tick(record, revision)
                except IllegalTransition as exc:
                    log.error("release %s/%s: %s", app, color, exc)  # a bug: don't spin on it
                    delay = record.analysis.tick_ms / 1000
                except Conflict:
                    delay = 0.0  # someone steered the release meanwhile: reload and go on
                except PrismError as exc:
                    log.warning("release %s/%s: %s", app, color, exc)
                    delay = record.analysis.tick_ms / 1000
                if delay > 0:
                    event = self._wake.setdefault(key, asyncio.Event())
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(event.wait(), delay)
                    event.clear()
        finally:
            self.traffic.releasing.get(app, set()).discard(color)

    # -- helpers -------------------------------------------------------------

    async def save(
        self, record: ReleaseRecord, expect: int, *, audit: AuditDraft | None = None
    ) -> int:
        key = release_key(record.app, record.to_color)
        revision = await self.store.commit(
            [Put(key, dump(record))], expect=[Compare(key, expect)], audit=audit
        )
        self._saved.setdefault((record.app, record.to_color), asyncio.Event()).set()
        return revision

    def entry(
        self, name: str, ok: bool, message: str, readings: dict[str, Any] | None = None
    ) -> LogEntry:
        return LogEntry(
            name=name, ok=ok, message=message, at=self.clock.now(), readings=readings or {}
        )

    def event(self, record: ReleaseRecord, kind: str, data: dict[str, Any]) -> Event:
        return Event(
            kind=kind,
            app=record.app,
            color=record.to_color,
            release_id=record.id,
            seq=record.seq,
            at=self.clock.now(),
            data=data,
        )

    async def emit(self, record: ReleaseRecord, kind: str, data: dict[str, Any]) -> None:
        """Queue an event for the plan's webhooks (never blocks the release)."""
        if record.plan.webhooks:
            found = await self.get(record.app, record.to_color)
            seq = (found[0].seq if found else record.seq) + 1
            if found is not None:
                with contextlib.suppress(Conflict):
                    await self.save(found[0].noted(self.clock.now(), seq=seq), found[1])
            event = Event(
                kind=kind,
                app=record.app,
                color=record.to_color,
                release_id=record.id,
                seq=seq,
                at=self.clock.now(),
                data=data,
            )
            self.webhooks.emit(record.plan.webhooks, event)

    def audit(
        self,
        record: ReleaseRecord,
        event: str,
        message: str | None = None,
        readings: dict[str, Any] | None = None,
    ) -> AuditDraft:
        detail: dict[str, Any] = {
            "release": record.id,
            "from": record.from_color,
            "to": record.to_color,
            "phase": record.phase.value,
            "step_index": record.step,
        }
        if message:
            detail["step"] = {"name": event, "message": message}
        if readings:
            detail["readings"] = readings
        return AuditDraft(
            actor=record.actor,
            action=f"release.{event}",
            app=record.app,
            detail=detail,
            reason=record.reason,
        )
