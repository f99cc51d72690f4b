"""One tick of a release: at most one step of its plan, saved before it is acted on.

The engine (:mod:`prism.release.engine`) owns the records, the tasks and the steering;
this module holds what a tick does in each phase: watch health and analysis,
set a weight, wait out a pause, drain, complete, or roll back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prism.core.model import App, backend_name
from prism.core.shares import set_share
from prism.errors import Drift
from prism.release.analysis import Counters, Verdict, counters_from_stat, delta, judge
from prism.release.gates import health_gate
from prism.release.phases import Phase
from prism.release.plan import AnalysisStep, PauseStep, WeightStep
from prism.release.record import ReleaseRecord
from prism.release.webhooks import confirm
from prism.services.routing import format_weights
from prism.store.desired import load_state

if TYPE_CHECKING:
    from prism.release.engine import ReleaseEngine

__all__ = ["StepDriver"]


class StepDriver:
    """What a tick of one release does; every action is idempotent."""

    def __init__(self, engine: ReleaseEngine) -> None:
        self.engine = engine

    async def tick(self, record: ReleaseRecord, revision: int) -> float:
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
            entry = self.engine.entry("analysis", True, "analysis thresholds set")
            noted = record.noted(entry.at, entry, step=record.step + 1, analysis=step.analysis)
            await self.engine.save(noted, revision)
            return 0
        if isinstance(step, WeightStep):
            return await self._weight(record, revision, step)
        assert isinstance(step, PauseStep)
        return await self._pause(record, revision, step)

    async def _watch(self, record: ReleaseRecord, revision: int) -> tuple[bool, ReleaseRecord, int]:
        """Health and analysis of a running release; roll back on failure.

        Returns whether it rolled back, and the (possibly updated) record and revision.
        """
        rows = await self.engine.runtime.show_stat(
            backend_name(record.app, record.to_color), backend_name(record.app, record.from_color)
        )
        state = await load_state(self.engine.store)
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
            record = record.noted(self.engine.clock.now(), window=self._window(app, record, rows))
            revision = await self.engine.save(record, revision)
            return False, record, revision
        if verdict.outcome == "fail":
            why = f"analysis failed: {verdict.message}"
            await self._start_rollback(record, revision, why, verdict.readings)
            return True, record, revision
        if record.verdict is None or record.verdict.get("message") != verdict.message:
            record = record.noted(self.engine.clock.now(), verdict=_verdict(verdict))
            revision = await self.engine.save(record, revision)
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
            event = self.engine.event(
                record, "step.confirm", {"step": record.step, "weight": step.weight}
            )
            ok, why = await confirm(self.engine.webhooks, record.plan.confirm, event)
            if not ok:
                if record.phase is not Phase.HOLDING:
                    entry = self.engine.entry("confirm", False, f"held by the confirm hook: {why}")
                    held = record.moved(Phase.HOLDING, entry.at, entry)
                    await self.engine.save(
                        held, revision, audit=self.engine.audit(held, "held", why)
                    )
                return tick
            entry = self.engine.entry("confirm", True, f"confirm hook: {why}")
            record = record.noted(entry.at, entry, confirmed_step=record.step)
        async with self.engine.traffic.lock(record.app):
            state = await load_state(self.engine.store)
            app = state.spec.app(record.app)
            routing = state.routing_for(app)
            busy = self.engine.traffic.releasing.get(app.name, set()) - {record.to_color}
            donors = [
                c.name for c in app.colors if c.name != record.to_color and c.name not in busy
            ]
            target = set_share(
                routing.weights, record.to_color, step.weight, donors=donors, source=step.source
            )
            done: dict[str, Any] = {}
            if target != routing.weights:
                done = await self.engine.traffic.set_weights(
                    app,
                    routing,
                    target,
                    actor=record.actor,
                    action="release.step",
                    reason=record.reason,
                    detail={"color": record.to_color, "step_index": record.step},
                )
            rows = await self.engine.runtime.show_stat(
                backend_name(app.name, record.to_color), backend_name(app.name, record.from_color)
            )
        window = {
            "target": counters_from_stat(rows, backend_name(app.name, record.to_color)).to_dict(),
            "baseline": counters_from_stat(
                rows, backend_name(app.name, record.from_color)
            ).to_dict(),
        }
        now = self.engine.clock.now()
        message = f"{record.to_color} at {step.weight}% ({format_weights(target)})"
        if done:
            message += f" in {done['ms']} ms"
        advanced = record.moved(
            Phase.RUNNING,
            now,
            self.engine.entry("weight", True, message, {"weights": target}),
            step=record.step + 1,
            step_started_at=now,
            window=window,
            verdict=None,
        )
        await self.engine.save(
            advanced, revision
        )  # the weight change itself is audited by set_weights
        await self.engine.emit(
            advanced,
            "step.advanced",
            {"step": record.step, "weight": step.weight, "weights": target},
        )
        return 0

    async def _pause(self, record: ReleaseRecord, revision: int, step: PauseStep) -> float:
        tick = record.analysis.tick_ms / 1000
        now = self.engine.clock.now()
        if step.pause == "manual":
            entry = self.engine.entry("pause", True, "waiting for promote")
            waiting = record.moved(Phase.WAITING, now, entry)
            await self.engine.save(
                waiting,
                revision,
                audit=self.engine.audit(waiting, "waiting", "waiting for promote"),
            )
            await self.engine.emit(waiting, "paused", {"manual": True})
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
        entry = self.engine.entry("pause", True, message)
        done = record.noted(now, entry, step=record.step + 1, step_started_at=now)
        await self.engine.save(done, revision)
        return 0

    async def _complete(self, record: ReleaseRecord, revision: int) -> float:
        now = self.engine.clock.now()
        if record.plan.final_weight == 100:
            await self.engine.save(record.moved(Phase.DRAINING, now), revision)
            return 0
        finished = record.moved(
            Phase.COMPLETED, now, self.engine.entry("complete", True, "plan finished")
        )
        await self.engine.save(finished, revision, audit=self.engine.audit(finished, "completed"))
        await self.engine.emit(finished, "completed", {})
        return 0

    async def _finish(self, record: ReleaseRecord, revision: int) -> None:
        state = await load_state(self.engine.store)
        app = state.spec.app(record.app)
        emptied = sorted(
            c
            for c in record.initial_weights
            if c != record.to_color and c not in state.routing_for(app).weights
        )
        drained = await self.engine.traffic.drain(app, emptied, record.plan.drain_timeout_ms)
        now = self.engine.clock.now()
        entry = self.engine.entry("drain", drained.passed, drained.message, drained.readings)
        finished = record.moved(Phase.COMPLETED, now, entry)
        await self.engine.save(
            finished, revision, audit=self.engine.audit(finished, "completed", drained.message)
        )
        await self.engine.emit(finished, "completed", {"drain": drained.message})

    async def _start_rollback(
        self, record: ReleaseRecord, revision: int, why: str, readings: dict[str, Any]
    ) -> None:
        entry = self.engine.entry("rollback", False, why, readings)
        rolling = record.moved(Phase.ROLLING_BACK, entry.at, entry)
        await self.engine.save(rolling, revision)
        self.engine.wakeup(record.app, record.to_color)

    async def _roll_back(self, record: ReleaseRecord, revision: int) -> None:
        """Return the target to its share before the release, in one atomic change."""
        async with self.engine.traffic.lock(record.app):
            state = await load_state(self.engine.store)
            app = state.spec.app(record.app)
            routing = state.routing_for(app)
            busy = self.engine.traffic.releasing.get(app.name, set()) - {record.to_color}
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
                await self.engine.traffic.set_weights(
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
            self.engine.clock.now(),
            self.engine.entry(
                "rolled_back",
                True,
                f"{record.to_color} back to {share}% ({format_weights(target)})",
            ),
        )
        await self.engine.save(
            done, revision, audit=self.engine.audit(done, "rolled_back", why, readings)
        )
        await self.engine.emit(
            done, "rolled_back", {"reason": why, "readings": readings, "weights": target}
        )


def _counters(rows: list[Any], backend: str) -> Counters | None:
    """A backend's counters, or None if it is gone (its color was removed)."""
    try:
        return counters_from_stat(rows, backend)
    except Drift:
        return None


def _verdict(verdict: Verdict) -> dict[str, Any]:
    return {"outcome": verdict.outcome, "message": verdict.message, "readings": verdict.readings}
