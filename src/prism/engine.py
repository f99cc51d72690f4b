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

from prism.analysis import Counters, Verdict, counters_from_stat, delta, judge
from prism.desired import load_state
from prism.errors import (
    Conflict,
    Drift,
    GateFailed,
    IllegalTransition,
    InvalidInput,
    NotFound,
    PrismError,
)
from prism.gates import health_gate
from prism.model import App, backend_name
from prism.phases import Phase
from prism.records import LogEntry, ReleaseRecord
from prism.rollout import AnalysisStep, PauseStep, ReleasePlan, WeightStep
from prism.state import dump
from prism.traffic import Traffic, format_weights
from prism.types import AuditDraft, Clock, Compare, Put, Store
from prism.webhooks import Event, WebhookSender, confirm
from prism.weights import set_share

__all__ = ["ReleaseEngine", "release_key"]

log = logging.getLogger("prism.engine")

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

    # -- lifecycle -----------------------------------------------------------

    async def resume_all(self) -> None:
        """After a (re)start: drive every release the store says is active."""
        for entry in await self.store.list(RELEASES):
            record = ReleaseRecord.model_validate_json(entry.value)
            if record.phase is Phase.PENDING:
                # Saved just before its first gate: nothing was changed yet.
                why = "Prism restarted before the release began"
                refused = record.moved(
                    Phase.REFUSED, self.clock.now(), self._entry("resume", False, why)
                )
                await self._save(refused, entry.mod_revision)
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

    def _wakeup(self, app: str, color: str) -> None:
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
        revision = await self._save(record, existing[1] if existing else 0)
        gates = await self.traffic.gates(state, app, [plan.to], plan.smoke)
        for gate in gates:
            record = record.noted(
                self.clock.now(), self._entry(gate.name, gate.passed, gate.message, gate.readings)
            )
        failed = next((g for g in gates if not g.passed), None)
        if failed is not None:
            refused = record.moved(Phase.REFUSED, self.clock.now())
            await self._save(
                refused, revision, audit=self._audit(refused, "refused", failed.message)
            )
            raise GateFailed(
                f"release of {app.name!r} to {plan.to!r} refused: {failed.message}",
                hint=f"nothing was changed; traffic stays as it was "
                f"({format_weights(routing.weights)})",
                detail={"gate": failed.name, "readings": failed.readings},
            )
        record = record.moved(Phase.RUNNING, self.clock.now(), step_started_at=self.clock.now())
        await self._save(record, revision, audit=self._audit(record, "started"))
        await self._emit(record, "started", {"plan": plan.model_dump(mode="json")})
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
        entry = self._entry("promote", True, f"promoted by {actor}" + (" (full)" if full else ""))
        moved = record.moved(
            Phase.RUNNING, now, entry, step=step, step_started_at=now, confirmed_step=step
        )
        await self._save(moved, revision, audit=self._audit(moved, "promoted", entry.message))
        await self._emit(moved, "promoted", {"full": full, "by": actor})
        self._wakeup(moved.app, moved.to_color)
        return moved

    async def pause(self, app: str, color: str | None, *, actor: str) -> ReleaseRecord:
        record, revision = await self.find(app, color)
        now = self.clock.now()
        paused = record.moved(
            Phase.PAUSED, now, self._entry("pause", True, f"paused by {actor}"), paused_at=now
        )
        await self._save(paused, revision, audit=self._audit(paused, "paused", f"by {actor}"))
        await self._emit(paused, "paused", {"by": actor})
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
            self._entry("resume", True, f"resumed by {actor}"),
            paused_at=None,
            step_started_at=record.step_started_at + held,
        )
        await self._save(resumed, revision, audit=self._audit(resumed, "resumed", f"by {actor}"))
        await self._emit(resumed, "resumed", {"by": actor})
        self._wakeup(resumed.app, resumed.to_color)
        return resumed

    async def abort(
        self, app: str, color: str | None, *, actor: str, reason: str | None
    ) -> ReleaseRecord:
        """Roll back on request: the target returns to its share before the release."""
        record, revision = await self.find(app, color)
        why = f"aborted by {actor}" + (f": {reason}" if reason else "")
        aborting = record.moved(
            Phase.ROLLING_BACK, self.clock.now(), self._entry("abort", False, why)
        )
        await self._save(aborting, revision)
        self._wakeup(aborting.app, aborting.to_color)
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
                    delay = await self._tick(record, revision)
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

    async def _tick(self, record: ReleaseRecord, revision: int) -> float:
        """Take at most one step; return how long to sleep before the next tick."""
        tick = record.analysis.tick_ms / 1000
        if record.phase is Phase.ROLLING_BACK:
            await self._roll_back(record, revision)
            return 0
        if record.phase is Phase.DRAINING:
            await self._finish(record, revision)
            return 0
        if record.phase is Phase.PAUSED:
            return 3600.0
        if record.phase in (Phase.WAITING, Phase.HOLDING, Phase.RUNNING):
            failed, record, revision = await self._watch(record, revision)
            if failed:
                return 0
        if record.phase is Phase.WAITING:
            return tick
        if record.step >= len(record.plan.steps):
            return await self._complete(record, revision)
        step = record.plan.steps[record.step]
        if isinstance(step, AnalysisStep):
            entry = self._entry("analysis", True, "analysis thresholds set")
            noted = record.noted(entry.at, entry, step=record.step + 1, analysis=step.analysis)
            await self._save(noted, revision)
            return 0
        if isinstance(step, WeightStep):
            return await self._weight(record, revision, step)
        assert isinstance(step, PauseStep)
        return await self._pause(record, revision, step)

    async def _watch(self, record: ReleaseRecord, revision: int) -> tuple[bool, ReleaseRecord, int]:
        """Health and analysis of a running release; roll back on failure.

        Returns whether it rolled back, and the (possibly updated) record and revision.
        """
        rows = await self.runtime.show_stat()
        state = await load_state(self.store)
        app = state.spec.app(record.app)
        share = state.routing_for(app).weights.get(record.to_color, 0)
        if share <= record.initial_weights.get(record.to_color, 0):
            return False, record, revision  # no traffic moved yet: nothing to judge or protect
        health = health_gate(rows, backend_name(app.name, record.to_color), record.to_color)
        if not health.passed:
            why = f"target unhealthy: {health.message}"
            await self._start_rollback(record, revision, why, health.readings)
            return True, record, revision
        verdict = self._analyse(record, app, rows)
        if verdict is None:
            # HAProxy reloaded and reset its counters: start a fresh window now.
            record = record.noted(self.clock.now(), window=self._window(app, record, rows))
            revision = await self._save(record, revision)
            return False, record, revision
        if verdict.outcome == "fail":
            why = f"analysis failed: {verdict.message}"
            await self._start_rollback(record, revision, why, verdict.readings)
            return True, record, revision
        if record.verdict is None or record.verdict.get("message") != verdict.message:
            record = record.noted(self.clock.now(), verdict=_verdict(verdict))
            revision = await self._save(record, revision)
        return False, record, revision

    def _analyse(self, record: ReleaseRecord, app: App, rows: list[Any]) -> Verdict | None:
        """Judge the window; None when it must restart (counters were reset by a reload)."""
        if record.window is None or record.window.get("target") is None:
            return None
        start = record.window["target"]
        assert start is not None
        target = delta(
            Counters.from_dict(start),
            counters_from_stat(rows, backend_name(app.name, record.to_color)),
        )
        if target is None:
            return None
        baseline = None
        base_start = record.window.get("baseline")
        base_now = _counters(rows, backend_name(app.name, record.from_color))
        if base_now is not None and base_start is not None:
            baseline = delta(Counters.from_dict(base_start), base_now)
        return judge(record.analysis, target, baseline)

    @staticmethod
    def _window(app: App, record: ReleaseRecord, rows: list[Any]) -> dict[str, Any]:
        """Counters at the start of an analysis window (saved, so a restart keeps it)."""
        target = counters_from_stat(rows, backend_name(app.name, record.to_color))
        base = _counters(rows, backend_name(app.name, record.from_color))
        return {"target": target.to_dict(), "baseline": base.to_dict() if base else None}

    async def _weight(self, record: ReleaseRecord, revision: int, step: WeightStep) -> float:
        tick = record.analysis.tick_ms / 1000
        if record.plan.confirm is not None and record.confirmed_step != record.step:
            event = self._event(
                record, "step.confirm", {"step": record.step, "weight": step.weight}
            )
            ok, why = await confirm(self.webhooks, record.plan.confirm, event)
            if not ok:
                if record.phase is not Phase.HOLDING:
                    entry = self._entry("confirm", False, f"held by the confirm hook: {why}")
                    held = record.moved(Phase.HOLDING, entry.at, entry)
                    await self._save(held, revision, audit=self._audit(held, "held", why))
                return tick
            entry = self._entry("confirm", True, f"confirm hook: {why}")
            record = record.noted(entry.at, entry, confirmed_step=record.step)
        async with self.traffic.lock(record.app):
            state = await load_state(self.store)
            app = state.spec.app(record.app)
            routing = state.routing_for(app)
            busy = self.traffic.releasing.get(app.name, set()) - {record.to_color}
            donors = [
                c.name for c in app.colors if c.name != record.to_color and c.name not in busy
            ]
            target = set_share(
                routing.weights, record.to_color, step.weight, donors=donors, source=step.source
            )
            done: dict[str, Any] = {}
            if target != routing.weights:
                done = await self.traffic.set_weights(
                    app,
                    routing,
                    target,
                    actor=record.actor,
                    action="release.step",
                    reason=record.reason,
                    detail={"color": record.to_color, "step": record.step},
                )
            rows = await self.runtime.show_stat()
        window = {
            "target": counters_from_stat(rows, backend_name(app.name, record.to_color)).to_dict(),
            "baseline": counters_from_stat(
                rows, backend_name(app.name, record.from_color)
            ).to_dict(),
        }
        now = self.clock.now()
        message = f"{record.to_color} at {step.weight}% ({format_weights(target)})"
        if done:
            message += f" in {done['ms']} ms"
        advanced = record.moved(
            Phase.RUNNING,
            now,
            self._entry("weight", True, message, {"weights": target}),
            step=record.step + 1,
            step_started_at=now,
            window=window,
            verdict=None,
        )
        await self._save(advanced, revision)  # the weight change itself is audited by set_weights
        await self._emit(
            advanced,
            "step.advanced",
            {"step": record.step, "weight": step.weight, "weights": target},
        )
        return 0

    async def _pause(self, record: ReleaseRecord, revision: int, step: PauseStep) -> float:
        tick = record.analysis.tick_ms / 1000
        now = self.clock.now()
        if step.pause == "manual":
            entry = self._entry("pause", True, "waiting for promote")
            waiting = record.moved(Phase.WAITING, now, entry)
            await self._save(
                waiting, revision, audit=self._audit(waiting, "waiting", "waiting for promote")
            )
            await self._emit(waiting, "paused", {"manual": True})
            return tick
        if record.phase is Phase.HOLDING:
            record = record.moved(Phase.RUNNING, now)
        deadline = record.step_started_at + step.pause / 1000
        if now < deadline:
            return min(tick, deadline - now)
        verdict = record.verdict or {}
        if record.window is not None and verdict.get("outcome") != "pass":
            return tick  # too little data to judge: wait, never pass
        message = "pause over" + (f"; analysis passed: {verdict.get('message')}" if verdict else "")
        entry = self._entry("pause", True, message)
        done = record.noted(now, entry, step=record.step + 1, step_started_at=now)
        await self._save(done, revision)
        return 0

    async def _complete(self, record: ReleaseRecord, revision: int) -> float:
        now = self.clock.now()
        if record.plan.final_weight == 100:
            await self._save(record.moved(Phase.DRAINING, now), revision)
            return 0
        finished = record.moved(
            Phase.COMPLETED, now, self._entry("complete", True, "plan finished")
        )
        await self._save(finished, revision, audit=self._audit(finished, "completed"))
        await self._emit(finished, "completed", {})
        return 0

    async def _finish(self, record: ReleaseRecord, revision: int) -> None:
        state = await load_state(self.store)
        app = state.spec.app(record.app)
        emptied = sorted(
            c
            for c in record.initial_weights
            if c != record.to_color and c not in state.routing_for(app).weights
        )
        drained = await self.traffic.drain(app, emptied, record.plan.drain_timeout_ms)
        now = self.clock.now()
        entry = self._entry("drain", drained.passed, drained.message, drained.readings)
        finished = record.moved(Phase.COMPLETED, now, entry)
        await self._save(
            finished, revision, audit=self._audit(finished, "completed", drained.message)
        )
        await self._emit(finished, "completed", {"drain": drained.message})

    async def _start_rollback(
        self, record: ReleaseRecord, revision: int, why: str, readings: dict[str, Any]
    ) -> None:
        entry = self._entry("rollback", False, why, readings)
        rolling = record.moved(Phase.ROLLING_BACK, entry.at, entry)
        await self._save(rolling, revision)
        self._wakeup(record.app, record.to_color)

    async def _roll_back(self, record: ReleaseRecord, revision: int) -> None:
        """Return the target to its share before the release, in one atomic change."""
        async with self.traffic.lock(record.app):
            state = await load_state(self.store)
            app = state.spec.app(record.app)
            routing = state.routing_for(app)
            busy = self.traffic.releasing.get(app.name, set()) - {record.to_color}
            donors = [
                c.name for c in app.colors if c.name != record.to_color and c.name not in busy
            ]
            share = record.initial_weights.get(record.to_color, 0)
            target = set_share(
                routing.weights,
                record.to_color,
                share,
                donors=donors,
                restore=record.initial_weights,
            )
            if target != routing.weights:
                await self.traffic.set_weights(
                    app,
                    routing,
                    target,
                    actor=record.actor,
                    action="release.rollback",
                    reason=record.reason,
                    detail={"color": record.to_color},
                )
        why = next(
            (e.message for e in reversed(record.steps) if e.name in ("rollback", "abort")),
            "rolled back",
        )
        readings = next(
            (e.readings for e in reversed(record.steps) if e.name in ("rollback", "abort")), {}
        )
        done = record.moved(
            Phase.ROLLED_BACK,
            self.clock.now(),
            self._entry(
                "rolled_back",
                True,
                f"{record.to_color} back to {share}% ({format_weights(target)})",
            ),
        )
        await self._save(done, revision, audit=self._audit(done, "rolled_back", why, readings))
        await self._emit(
            done, "rolled_back", {"reason": why, "readings": readings, "weights": target}
        )

    # -- helpers -------------------------------------------------------------

    async def _save(
        self, record: ReleaseRecord, expect: int, *, audit: AuditDraft | None = None
    ) -> int:
        key = release_key(record.app, record.to_color)
        revision = await self.store.commit(
            [Put(key, dump(record))], expect=[Compare(key, expect)], audit=audit
        )
        self._saved.setdefault((record.app, record.to_color), asyncio.Event()).set()
        return revision

    def _entry(
        self, name: str, ok: bool, message: str, readings: dict[str, Any] | None = None
    ) -> LogEntry:
        return LogEntry(
            name=name, ok=ok, message=message, at=self.clock.now(), readings=readings or {}
        )

    def _event(self, record: ReleaseRecord, kind: str, data: dict[str, Any]) -> Event:
        return Event(
            kind=kind,
            app=record.app,
            color=record.to_color,
            release_id=record.id,
            seq=record.seq,
            at=self.clock.now(),
            data=data,
        )

    async def _emit(self, record: ReleaseRecord, kind: str, data: dict[str, Any]) -> None:
        """Queue an event for the plan's webhooks (never blocks the release)."""
        if record.plan.webhooks:
            found = await self.get(record.app, record.to_color)
            seq = (found[0].seq if found else record.seq) + 1
            if found is not None:
                with contextlib.suppress(Conflict):
                    await self._save(found[0].noted(self.clock.now(), seq=seq), found[1])
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

    def _audit(
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


def _counters(rows: list[Any], backend: str) -> Counters | None:
    """A backend's counters, or None if it is gone (its color was removed)."""
    try:
        return counters_from_stat(rows, backend)
    except Drift:
        return None


def _verdict(verdict: Verdict) -> dict[str, Any]:
    return {"outcome": verdict.outcome, "message": verdict.message, "readings": verdict.readings}
