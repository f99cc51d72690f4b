"""The release state machine: ``step(record, event) -> Step(record, actions, wake_in)``. Pure.

A release's :class:`~prism.release.record.ReleaseRecord` is its whole state.
The engine (:mod:`prism.release.engine`) reads what :func:`wants` asks for,
wraps it in an event, calls :func:`step`, saves the new record, then performs
the actions, feeding each one's outcome back in as the next event. Nothing
here awaits, reads a clock or touches a store: time comes in the event.

Rules:

* :data:`TABLE` names, for every legal (phase, event type), the phases that
  event may lead to. Any other event raises
  :class:`~prism.errors.IllegalTransition` and changes nothing; so does a
  handler leaving its declared phases (a bug, caught here).
* A release starts ``pending`` and ends in exactly one terminal phase --
  ``completed``, ``rolled_back``, ``refused`` or ``failed`` -- which takes no
  event at all.
* Save, then act. A step yields at most one *traffic* action (SetShare or
  Drain) and the record it returns already names it (``inflight``), so it is
  saved before it is performed. Only the process driving the release performs
  it; a person's command only saves. Traffic actions are idempotent (setting
  a share that is set changes nothing), so ``Restarted`` -- and every Tick in
  ``rolling_back`` or ``draining`` -- re-issues the in-flight action: a crash
  at any point resumes from what was saved.
* At most one Audit per step; the engine commits it with the saved record.
  An Emit numbers its event by bumping ``seq`` in that same record (only when
  the plan has webhooks, so receivers see no gaps).
* Timers are wall-clock deadlines in the record (``step_started_at``,
  ``paused_at``) and the analysis window is counters saved in the record, so a
  restart keeps both. Counters that went down (HAProxy reloaded) start a
  fresh window (the last verdict stands until the new window gives one).
* Once traffic has moved, every Tick of ``running``, ``waiting`` and
  ``holding`` judges health and analysis over the sliding window
  (:mod:`prism.release.window`): an unhealthy target rolls back at once. Each
  reading is pass, fail, wait (too little data yet), inconclusive (a wait
  that lasted ``max_wait_ms``) or error (no reading), counted per step in the
  record's ``budget``: the ``failure_limit + 1``-th failed reading rolls back;
  the ``inconclusive_limit + 1``-th inconclusive reading, or the
  ``consecutive_error_limit + 1``-th error in a row, makes a ``running``
  release *hold* (``held`` says why; audited ``release.held``, emitted
  ``analysis.inconclusive`` or ``analysis.errors``) until a person promotes or
  aborts. Silence never passes a pause and never waits forever.
* A fleet node that is lost (it joined once and has no report) holds the
  plan: ``running`` goes to ``holding`` until no node is lost (it returned,
  or a person forgot it). Health and analysis are still judged meanwhile.
* ``failed``: a rollback whose share change keeps being refused (by the data
  plane, the store or the share arithmetic) ends ``failed`` at the
  :data:`ROLLBACK_ATTEMPTS`-th refusal in a row, one tick apart: audited
  ``release.failed``, emitted ``failed``, traffic left where the refusals
  left it, for a person to look at. A refused *plan step* never ends a
  release: it is retried every tick, and traffic stays where the last good
  step put it.

    phase         event                    may lead to
    pending       Began                    running | refused (a gate said no)
                  Restarted                refused
    running       Tick                     running | waiting (manual pause) | holding
                                           (confirm said no, a node lost, analysis inconclusive
                                           or without readings) | draining | completed |
                                           rolling_back (unhealthy, analysis failed)
                  ShareSet | ShareFailed   running (the step's share set, or retried)
                  Restarted | Promote      running
                  Pause | Abort            paused | rolling_back
    waiting       Tick                     waiting | rolling_back
                  Restarted                waiting
                  Promote | Pause | Abort  running | paused | rolling_back
    holding       Tick                     holding | running (confirmed, nodes back; never while
                                           ``held``) | rolling_back
                  Restarted                holding
                  Promote | Pause | Abort  running | paused | rolling_back
    paused        Tick | Restarted         paused (nothing moves, nothing is judged)
                  Resume | Abort           running | rolling_back
    draining      Tick | Restarted         draining (the drain again)
                  Drained                  completed
    rolling_back  Tick | Restarted         rolling_back (the rollback again)
                  ShareSet                 rolled_back | rolling_back (capped for lost
                                           servers, within ``rollback_ramp_ms``)
                  ShareFailed              rolling_back | failed
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from prism.core.readings import Counters
from prism.errors import IllegalTransition
from prism.release.analysis import Verdict, delta
from prism.release.budget import count_missing, count_reading
from prism.release.events import (
    Abort,
    Action,
    Ask,
    Audit,
    Began,
    Drain,
    Drained,
    Emit,
    Event,
    Pause,
    Promote,
    Restarted,
    Resume,
    SetShare,
    ShareFailed,
    ShareSet,
    Step,
    Tick,
    Wants,
)
from prism.release.plan import AnalysisStep, PauseStep, ReleasePlan, WeightStep
from prism.release.record import (
    ACTIVE,
    TERMINAL,
    Budget,
    Held,
    LogEntry,
    Phase,
    ReleaseRecord,
)
from prism.release.window import judge_window, sample, slide

__all__ = [
    "ACTIVE",
    "ROLLBACK_ATTEMPTS",
    "TABLE",
    "TERMINAL",
    "TRANSITIONS",
    "Phase",
    "advance",
    "propose",
    "step",
    "wants",
]

#: Refusals of a rollback's share change, in a row, at which the release ends ``failed``.
ROLLBACK_ATTEMPTS: Final = 5

# -- the table ---------------------------------------------------------------

_P = Phase
#: a person's commands to a release that is following its plan
_STEERED: dict[type[Event], frozenset[Phase]] = {
    Promote: frozenset({_P.RUNNING}),
    Pause: frozenset({_P.PAUSED}),
    Abort: frozenset({_P.ROLLING_BACK}),
}

TABLE: Final[Mapping[tuple[Phase, type[Event]], frozenset[Phase]]] = {
    # saved just before the first gate: nothing has changed yet
    (_P.PENDING, Began): frozenset({_P.RUNNING, _P.REFUSED}),
    (_P.PENDING, Restarted): frozenset({_P.REFUSED}),
    # following the plan
    (_P.RUNNING, Tick): frozenset(
        {_P.RUNNING, _P.WAITING, _P.HOLDING, _P.DRAINING, _P.COMPLETED, _P.ROLLING_BACK}
    ),
    (_P.RUNNING, ShareSet): frozenset({_P.RUNNING}),
    (_P.RUNNING, ShareFailed): frozenset({_P.RUNNING}),
    (_P.RUNNING, Restarted): frozenset({_P.RUNNING}),
    **{(_P.RUNNING, kind): nxt for kind, nxt in _STEERED.items()},
    # a `pause: manual` step, until promote; health is still watched
    (_P.WAITING, Tick): frozenset({_P.WAITING, _P.ROLLING_BACK}),
    (_P.WAITING, Restarted): frozenset({_P.WAITING}),
    **{(_P.WAITING, kind): nxt for kind, nxt in _STEERED.items()},
    # the confirm hook said no: asked again every tick
    (_P.HOLDING, Tick): frozenset({_P.HOLDING, _P.RUNNING, _P.ROLLING_BACK}),
    (_P.HOLDING, Restarted): frozenset({_P.HOLDING}),
    **{(_P.HOLDING, kind): nxt for kind, nxt in _STEERED.items()},
    # a person paused it
    (_P.PAUSED, Tick): frozenset({_P.PAUSED}),
    (_P.PAUSED, Restarted): frozenset({_P.PAUSED}),
    (_P.PAUSED, Resume): frozenset({_P.RUNNING}),
    (_P.PAUSED, Abort): frozenset({_P.ROLLING_BACK}),
    # the plan ended at 100%: the emptied colors' connections finish
    (_P.DRAINING, Tick): frozenset({_P.DRAINING}),
    (_P.DRAINING, Restarted): frozenset({_P.DRAINING}),
    (_P.DRAINING, Drained): frozenset({_P.COMPLETED}),
    # the target goes back to its share before the release
    (_P.ROLLING_BACK, Tick): frozenset({_P.ROLLING_BACK}),
    (_P.ROLLING_BACK, Restarted): frozenset({_P.ROLLING_BACK}),
    (_P.ROLLING_BACK, ShareSet): frozenset({_P.ROLLED_BACK, _P.ROLLING_BACK}),
    (_P.ROLLING_BACK, ShareFailed): frozenset({_P.ROLLING_BACK, _P.FAILED}),
}

#: Phase -> the phases some event can take it to, derived from :data:`TABLE`.
TRANSITIONS: Final[Mapping[Phase, frozenset[Phase]]] = {
    phase: frozenset().union(*(nxt for (p, _), nxt in TABLE.items() if p is phase))
    for phase in Phase
}

if {p for p, nxt in TRANSITIONS.items() if not nxt} != TERMINAL:  # pragma: no cover
    raise RuntimeError("the release table and prism.release.record.TERMINAL disagree")

_REFUSALS = {
    Promote: "a release in phase {phase!r} cannot be promoted",
    Resume: "the release is {phase!r}, not paused",
    # the words these two always had, from the phase table they were once checked against
    Pause: "a release cannot go from {phase!r} to 'paused'",
    Abort: "a release cannot go from {phase!r} to 'rolling_back'",
}


def advance(current: Phase, nxt: Phase) -> Phase:
    """Return ``nxt`` if some event can take a release there from ``current``; raise otherwise."""
    if nxt not in TRANSITIONS[current]:
        raise IllegalTransition(
            f"a release cannot go from {current.value!r} to {nxt.value!r}",
            hint=f"from {current.value!r} it may go to: "
            + (", ".join(sorted(p.value for p in TRANSITIONS[current])) or "nothing (it ended)"),
        )
    return nxt


def _illegal(phase: Phase, kind: type[Event]) -> IllegalTransition:
    if kind in _REFUSALS:  # a person's command: say which commands the phase takes
        legal = sorted(k.__name__.lower() for p, k in TABLE if p is phase and k in _REFUSALS)
        template = _REFUSALS[kind]
    else:
        legal = sorted(k.__name__ for p, k in TABLE if p is phase)
        template = "{event} is not legal in phase {phase!r}"
    return IllegalTransition(
        template.format(phase=phase.value, event=kind.__name__),
        hint=f"a {phase.value!r} release takes: " + (", ".join(legal) or "nothing (it ended)"),
    )


# -- the machine -------------------------------------------------------------


def step(record: ReleaseRecord, event: Event) -> Step:
    """The next record, the actions that lead there, and when to tick again.

    Raises IllegalTransition, changing nothing, for an event that is not legal
    in the record's phase (see :data:`TABLE`).
    """
    allowed = TABLE.get((record.phase, type(event)))
    if allowed is None:
        raise _illegal(record.phase, type(event))
    result = _handle(record, event)
    if result.record.phase not in allowed:
        raise IllegalTransition(
            f"{type(event).__name__} would take a {record.phase.value!r} release to "
            f"{result.record.phase.value!r}, which the table does not allow",
            hint="a bug in prism.release.machine",
        )
    return result


def wants(record: ReleaseRecord) -> Wants:
    """What the engine must observe before the next Tick of ``record``."""
    if record.phase not in (_P.RUNNING, _P.WAITING, _P.HOLDING):
        return Wants(readings=False)
    ask = None
    if record.phase is not _P.WAITING and _inflight(record) is None and _awaits_confirm(record):
        current = record.plan.steps[record.step]
        assert isinstance(current, WeightStep)
        ask = Ask(step=record.step, weight=current.weight, seq=record.seq)
    return Wants(readings=True, confirm=ask)


def propose(
    *,
    id: str,
    app: str,
    stable: str,
    plan: ReleasePlan,
    weights: Mapping[str, int],
    actor: str,
    reason: str | None,
    at: float,
) -> ReleaseRecord:
    """A new ``pending`` record, to save before the gates run."""
    others = sorted(c for c in weights if c != plan.to)
    return ReleaseRecord(
        id=id,
        app=app,
        from_color=max(others, key=lambda c: weights[c]) if others else stable,
        to_color=plan.to,
        plan=plan,
        initial_weights=dict(weights),
        phase=_P.PENDING,
        analysis=plan.analysis,
        actor=actor,
        reason=reason,
        started_at=at,
        updated_at=at,
    )


def _handle(record: ReleaseRecord, event: Event) -> Step:
    at = event.at
    match event:
        case Began():
            return _began(record, event)
        case Restarted():
            return _restarted(record, event)
        case Tick():
            return _tick(record, event)
        case Promote():
            return _promote(record, event)
        case Pause():
            entry = _e("pause", True, f"paused by {event.actor}", at)
            paused = record.noted(at, entry, phase=_P.PAUSED, paused_at=at)
            return _told(paused, Audit("paused", f"by {event.actor}"), "paused", by=event.actor)
        case Resume():
            entry = _e("resume", True, f"resumed by {event.actor}", at)
            held = at - (record.paused_at or at)  # the pause's deadline moves by as much
            resumed = record.noted(
                at,
                entry,
                phase=_P.RUNNING,
                paused_at=None,
                step_started_at=record.step_started_at + held,
                held=None,  # a person looked: the budgets start again
                budget=Budget(starved_since=at),
            )
            audit = Audit("resumed", f"by {event.actor}")
            return _told(resumed, audit, "resumed", 0.0, by=event.actor)
        case Abort():
            why = f"aborted by {event.actor}" + (f": {event.reason}" if event.reason else "")
            return _roll_back(record, _e("abort", False, why, at))
        case ShareSet():
            return _share_set(record, event)
        case ShareFailed():
            return _share_failed(record, event)
        case Drained():
            drained = event.result
            entry = _e("drain", drained.passed, drained.message, at, drained.readings)
            done = record.noted(at, entry, phase=_P.COMPLETED, inflight=None)
            audit = Audit("completed", drained.message)
            return _told(done, audit, "completed", drain=drained.message)


# -- handlers ----------------------------------------------------------------


def _e(
    name: str, ok: bool, message: str, at: float, readings: Mapping[str, Any] | None = None
) -> LogEntry:
    return LogEntry(name=name, ok=ok, message=message, at=at, readings=dict(readings or {}))


def _told(
    record: ReleaseRecord, audit: Audit | None, kind: str, wake_in: float | None = None, **data: Any
) -> Step:
    """A step ending at ``record`` with its audit, then its webhook event ``kind``."""
    actions: list[Action] = [] if audit is None else [audit]
    if record.plan.webhooks:
        record = record.model_copy(update={"seq": record.seq + 1})
        actions.append(Emit(kind, data, record.seq, record.updated_at))
    return Step(record, tuple(actions), wake_in)


def _tick_s(record: ReleaseRecord) -> float:
    return record.analysis.tick_ms / 1000


def _weights(weights: Mapping[str, int]) -> str:
    # the text of format_weights, which lives in the I/O module prism.release.traffic
    return " ".join(f"{c}={w}" for c, w in sorted(weights.items())) or "(none)"


def _began(record: ReleaseRecord, event: Began) -> Step:
    at = event.at
    record = record.noted(
        at, *(_e(g.name, g.passed, g.message, at, g.readings) for g in event.gates)
    )
    failed = next((g for g in event.gates if not g.passed), None)
    if failed is not None:
        return Step(record.noted(at, phase=_P.REFUSED), (Audit("refused", failed.message),))
    running = record.noted(at, phase=_P.RUNNING, step_started_at=at, initial_up=dict(event.up))
    return _told(
        running, Audit("started"), "started", 0.0, plan=record.plan.model_dump(mode="json")
    )


def _restarted(record: ReleaseRecord, event: Restarted) -> Step:
    if record.phase is _P.PENDING:
        entry = _e("resume", False, "Prism restarted before the release began", event.at)
        return Step(record.noted(event.at, entry, phase=_P.REFUSED))
    again = _reissue(record)
    if again:
        return Step(record, again)
    return Step(record, (), None if record.phase is _P.PAUSED else 0.0)


def _inflight(record: ReleaseRecord) -> str | None:
    # Records saved before ``inflight`` existed: their phase alone says what is in flight.
    if record.phase is _P.ROLLING_BACK:
        return "rollback"
    if record.phase is _P.DRAINING:
        return "drain"
    if record.phase is _P.RUNNING and record.inflight == "step":
        return "step"
    return None


def _reissue(record: ReleaseRecord) -> tuple[Action, ...]:
    """The in-flight traffic action again (idempotent), or nothing."""
    kind = _inflight(record)
    if kind == "rollback":
        return (_rollback_share(record),)
    if kind == "drain":
        # the final step gave the target 100%: every other color is empty now
        others = sorted(c for c in record.initial_weights if c != record.to_color)
        return (Drain(tuple(others), record.plan.drain_timeout_ms),)
    if kind == "step" and record.step < len(record.plan.steps):
        current = record.plan.steps[record.step]
        if isinstance(current, WeightStep):
            return (_step_share(record, current),)
    return ()


def _step_share(record: ReleaseRecord, current: WeightStep) -> SetShare:
    detail = {"color": record.to_color, "step_index": record.step}
    return SetShare("step", current.weight, source=current.source, detail=detail)


def _rollback_share(record: ReleaseRecord) -> SetShare:
    share = record.initial_weights.get(record.to_color, 0)
    return SetShare(
        "rollback", share, restore=record.initial_weights, detail={"color": record.to_color}
    )


def _roll_back(record: ReleaseRecord, why: LogEntry) -> Step:
    rolling = record.noted(
        why.at, why, phase=_P.ROLLING_BACK, inflight="rollback", attempts=0, rollback_at=why.at
    )
    return Step(rolling, (_rollback_share(rolling),))


def _awaits_confirm(record: ReleaseRecord) -> bool:
    """The current step is a weight step the confirm hook has not said yes to."""
    steps = record.plan.steps
    return (
        record.plan.confirm is not None
        and record.step < len(steps)
        and isinstance(steps[record.step], WeightStep)
        and record.confirmed_step != record.step
    )


def _tick(record: ReleaseRecord, event: Tick) -> Step:
    if record.phase in (_P.ROLLING_BACK, _P.DRAINING):
        return Step(record, _reissue(record))
    if record.phase is _P.PAUSED:
        return Step(record)
    record, seen = _watch(record, event)
    if isinstance(seen, Step):
        return seen
    if seen == "blind" or record.phase is _P.WAITING:
        return Step(record, (), _tick_s(record))
    if event.lost:
        if record.phase is _P.HOLDING:
            return Step(record, (), _tick_s(record))
        why = (
            f"node(s) {', '.join(event.lost)} lost: holding until they return "
            "or a person runs `prism nodes forget`"
        )
        held = record.noted(event.at, _e("lost", False, why, event.at), phase=_P.HOLDING)
        return _told(held, Audit("held", why), "node.lost", _tick_s(record), nodes=list(event.lost))
    if record.phase is _P.HOLDING and record.held is not None:
        return Step(record, (), _tick_s(record))  # until a person promotes or aborts
    if record.phase is _P.HOLDING and not _awaits_confirm(record):
        return Step(record.noted(event.at, phase=_P.RUNNING), (), 0.0)
    if _inflight(record) == "step":
        return Step(record, _reissue(record))
    steps = record.plan.steps
    if record.step >= len(steps):
        return _complete(record, event.at)
    current = steps[record.step]
    if isinstance(current, AnalysisStep):
        entry = _e("analysis", True, "analysis thresholds set", event.at)
        noted = record.noted(event.at, entry, step=record.step + 1, analysis=current.analysis)
        return Step(noted, (), 0.0)
    if isinstance(current, WeightStep):
        return _weight(record, current, event)
    return _pause(record, current, event.at)


def _watch(record: ReleaseRecord, event: Tick) -> tuple[ReleaseRecord, str | Step]:
    """Health and analysis once traffic has moved: the record and "ok", "blind" (readings
    missing) or the step that rolls back or holds."""
    if event.weights.get(record.to_color, 0) <= record.initial_weights.get(record.to_color, 0):
        return record, "ok"  # no traffic moved yet: nothing to judge or protect
    if event.health is None or event.target is None:
        return _no_reading(record, event)
    if not event.health.passed:
        why = f"target unhealthy: {event.health.message}"
        return record, _roll_back(
            record, _e("rollback", False, why, event.at, event.health.readings)
        )
    record, verdict = _analyse(record, event.at, event.target, event.baseline)
    if verdict is None:
        return record, "ok"
    return _count(record, verdict, event.at)


def _no_reading(record: ReleaseRecord, event: Tick) -> tuple[ReleaseRecord, str | Step]:
    """An error reading: counted in a row; past the limit the release holds."""
    missing = "health" if event.health is None else "counters"
    counted = count_missing(record.analysis, record.budget, missing)
    message = counted.verdict.message
    record = record.noted(event.at, budget=counted.budget, verdict=counted.verdict.to_dict())
    if counted.decision == "hold" and record.phase is _P.RUNNING and record.held is None:
        return record, _hold(record, "errors", f"analysis has no reading: {message}", event.at)
    return record, "blind"


def _count(record: ReleaseRecord, verdict: Verdict, at: float) -> tuple[ReleaseRecord, str | Step]:
    """Count one reading against the step's limits (:mod:`prism.release.budget`): roll
    back, hold, or carry on."""
    counted = count_reading(record.analysis, record.budget, verdict, at)
    verdict = counted.verdict
    record = record.noted(at, budget=counted.budget)
    if counted.decision == "roll_back":
        why = f"analysis failed: {verdict.message}"
        return record, _roll_back(record, _e("rollback", False, why, at, verdict.readings))
    if verdict.outcome == "inconclusive":
        record = record.noted(at, verdict=verdict.to_dict())
        if counted.decision == "hold" and record.phase is _P.RUNNING and record.held is None:
            return record, _hold(record, "inconclusive", verdict.message, at)
    if counted.note is not None:
        entry = _e("analysis", False, counted.note, at, verdict.readings)
        return record.noted(at, entry, verdict=verdict.to_dict()), "ok"
    if record.verdict is None or record.verdict.get("message") != verdict.message:
        record = record.noted(at, verdict=verdict.to_dict())
    return record, "ok"


def _hold(record: ReleaseRecord, held: Held, why: str, at: float) -> Step:
    """Hold for a person (promote or abort), audited and notified: never pass on silence."""
    message = f"holding: {why}; promote or abort"
    holding = record.noted(at, _e("held", False, message, at), phase=_P.HOLDING, held=held)
    return _told(holding, Audit("held", message), f"analysis.{held}", _tick_s(record), reason=why)


def _analyse(
    record: ReleaseRecord, at: float, target: Counters, baseline: Counters | None
) -> tuple[ReleaseRecord, Verdict | None]:
    """Slide the window and judge it; no verdict when the step's window must start now
    (none yet, or counters were reset).

    The sliding window is judged when it holds ``min_requests`` target requests;
    otherwise the whole step so far (a quiet canary still gathers its evidence).
    """
    analysis = record.analysis
    samples = slide(record.samples, sample(at, target, baseline), analysis.window, analysis.tick_ms)
    record = record.noted(at, samples=samples)
    window = record.window or {}
    start = window.get("target")
    moved = None if start is None else delta(Counters.from_dict(start), target)
    if moved is None:
        return record.noted(at, window=_window(target, baseline)), None
    base_start = window.get("baseline")
    base = None
    if baseline is not None and base_start is not None:
        base = delta(Counters.from_dict(base_start), baseline)
    return record, judge_window(analysis, samples, moved, base)


def _window(
    target: Counters | None, baseline: Counters | None
) -> dict[str, dict[str, Any] | None] | None:
    if target is None:
        return None
    return {"target": target.to_dict(), "baseline": baseline.to_dict() if baseline else None}


def _weight(record: ReleaseRecord, current: WeightStep, event: Tick) -> Step:
    at = event.at
    if _awaits_confirm(record):
        if event.confirm is None or (not event.confirm[0] and record.phase is _P.HOLDING):
            return Step(record, (), _tick_s(record))  # not asked, or still no
        ok, why = event.confirm
        if not ok:
            entry = _e("confirm", False, f"held by the confirm hook: {why}", at)
            held = record.noted(at, entry, phase=_P.HOLDING)
            return Step(held, (Audit("held", why),), _tick_s(record))
        entry = _e("confirm", True, f"confirm hook: {why}", at)
        record = record.noted(at, entry, confirmed_step=record.step)
    going = record.noted(at, phase=_P.RUNNING, inflight="step", attempts=0)
    return Step(going, (_step_share(going, current),))


def _pause(record: ReleaseRecord, current: PauseStep, at: float) -> Step:
    tick = _tick_s(record)
    if current.pause == "manual":
        waiting = record.noted(at, _e("pause", True, "waiting for promote", at), phase=_P.WAITING)
        return _told(waiting, Audit("waiting", "waiting for promote"), "paused", tick, manual=True)
    deadline = record.step_started_at + current.pause / 1000
    if at < deadline:
        return Step(record, (), min(tick, deadline - at))
    verdict = record.verdict or {}
    if record.window is not None and verdict.get("outcome") != "pass":
        return Step(record, (), tick)  # too little data to judge: wait, never pass
    message = "pause over" + (f"; analysis passed: {verdict.get('message')}" if verdict else "")
    done = record.noted(
        at, _e("pause", True, message, at), step=record.step + 1, step_started_at=at
    )
    return Step(done, (), 0.0)


def _complete(record: ReleaseRecord, at: float) -> Step:
    if record.plan.final_weight == 100:
        draining = record.noted(at, phase=_P.DRAINING, inflight="drain", attempts=0)
        return Step(draining, _reissue(draining))
    finished = record.noted(at, _e("complete", True, "plan finished", at), phase=_P.COMPLETED)
    return _told(finished, Audit("completed"), "completed")


def _promote(record: ReleaseRecord, event: Promote) -> Step:
    steps = record.plan.steps
    index = record.step
    if event.full:
        index = max(i for i, s in enumerate(steps) if isinstance(s, WeightStep))
    elif index < len(steps) and isinstance(steps[index], PauseStep):
        index += 1
    message = f"promoted by {event.actor}" + (" (full)" if event.full else "")
    moved = record.noted(
        event.at,
        _e("promote", True, message, event.at),
        phase=_P.RUNNING,
        step=index,
        step_started_at=event.at,
        confirmed_step=index,
        inflight=None,  # the plan position moved: the next tick decides what to set
        attempts=0,
        held=None,
        budget=Budget(starved_since=event.at),
    )
    audit = Audit("promoted", message)
    return _told(moved, audit, "promoted", 0.0, full=event.full, by=event.actor)


def _expect(record: ReleaseRecord, purpose: str, kind: type[Event]) -> None:
    if _inflight(record) != purpose:
        raise IllegalTransition(
            f"{kind.__name__} of a {purpose} share, but the release has "
            f"{_inflight(record) or 'nothing'} in flight",
            hint="a stale outcome: reload the record",
        )


def _share_set(record: ReleaseRecord, event: ShareSet) -> Step:
    _expect(record, event.purpose, ShareSet)
    at, weights = event.at, dict(event.weights)
    if event.purpose == "rollback" and event.capped and _ramping(record, at):
        return _ramp(record, event)
    if event.purpose == "rollback":
        cause = next((e for e in reversed(record.steps) if e.name in ("rollback", "abort")), None)
        why = cause.message if cause else "rolled back"
        readings = cause.readings if cause else {}
        share = record.initial_weights.get(record.to_color, 0)
        message = f"{record.to_color} back to {share}% ({_weights(weights)})"
        if event.capped:
            # capacity held part of the old share back on the target: say so everywhere
            message = (
                f"{record.to_color} at {weights.get(record.to_color, 0)}%, not {share}%, "
                f"({_weights(weights)}): " + "; ".join(event.capped)
            )
            readings = {**readings, "capped": list(event.capped)}
        entry = _e("rolled_back", True, message, at, {"capped": list(event.capped)})
        done = record.noted(at, entry, phase=_P.ROLLED_BACK, inflight=None, attempts=0)
        audit = Audit("rolled_back", why, readings)
        return _told(
            done,
            audit,
            "rolled_back",
            reason=why,
            readings=readings,
            weights=weights,
            capped=list(event.capped),
        )
    current = record.plan.steps[record.step]
    assert isinstance(current, WeightStep)
    message = f"{record.to_color} at {current.weight}% ({_weights(weights)})"
    if event.ms is not None:
        message += f" in {event.ms} ms"
    advanced = record.noted(
        at,
        _e("weight", True, message, at, {"weights": weights}),
        step=record.step + 1,
        step_started_at=at,
        window=_window(event.target, event.baseline),
        samples=() if event.target is None else (sample(at, event.target, event.baseline),),
        budget=Budget(starved_since=at),
        verdict=None,
        inflight=None,
        attempts=0,
    )
    # the share change itself was audited (release.step) when the engine made it
    data = {"step": record.step, "weight": current.weight, "weights": weights}
    return _told(advanced, None, "step.advanced", 0.0, **data)


def _ramping(record: ReleaseRecord, at: float) -> bool:
    """Whether a capped rollback still has time to return traffic as servers come back."""
    ramp = record.plan.rollback_ramp_ms
    started = record.rollback_at if record.rollback_at is not None else record.updated_at
    return ramp is not None and at < started + ramp / 1000


def _ramp(record: ReleaseRecord, event: ShareSet) -> Step:
    """A capped rollback within its ramp: stay rolling back, re-capping every tick."""
    at, weights = event.at, dict(event.weights)
    last = next((e for e in reversed(record.steps) if e.name == "capped"), None)
    if last is not None and last.readings.get("weights") == weights:
        kept = record if record.attempts == 0 else record.noted(at, attempts=0)
        return Step(kept, (), _tick_s(record))  # nothing new: nothing to save
    assert record.plan.rollback_ramp_ms is not None
    started = record.rollback_at if record.rollback_at is not None else at
    until = started + record.plan.rollback_ramp_ms / 1000
    message = (
        f"{record.to_color} at {weights.get(record.to_color, 0)}% ({_weights(weights)}): "
        + "; ".join(event.capped)
        + f"; the rest returns as servers come back, for {until - at:.0f} s more"
    )
    entry = _e("capped", False, message, at, {"weights": weights, "capped": list(event.capped)})
    capped = record.noted(at, entry, attempts=0)
    actions: tuple[Action, ...] = (Audit("capped", message),) if last is None else ()
    return Step(capped, actions, _tick_s(record))


def _share_failed(record: ReleaseRecord, event: ShareFailed) -> Step:
    _expect(record, event.purpose, ShareFailed)
    at, attempts, tick = event.at, record.attempts + 1, _tick_s(record)
    if event.purpose == "step":
        # logged once, not every tick: the log keeps only 200 entries
        why = f"share change refused, retrying every tick: {event.error}"
        entries = (_e("retry", False, why, at),) if attempts == 1 else ()
        return Step(record.noted(at, *entries, attempts=attempts), (), tick)
    if attempts < ROLLBACK_ATTEMPTS:
        why = f"rollback refused ({attempts} of {ROLLBACK_ATTEMPTS}): {event.error}"
        return Step(record.noted(at, _e("retry", False, why, at), attempts=attempts), (), tick)
    message = (
        f"rollback refused {attempts} times in a row, giving up: {event.error}; "
        "traffic stays as it is until a person acts"
    )
    failed = record.noted(
        at, _e("failed", False, message, at), phase=_P.FAILED, inflight=None, attempts=attempts
    )
    return _told(failed, Audit("failed", message), "failed", reason=event.error, attempts=attempts)
