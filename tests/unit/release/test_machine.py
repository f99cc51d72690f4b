"""The pure release machine: every row of its table, illegal events, restarts, FAILED."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest

from prism.core.readings import Counters
from prism.errors import IllegalTransition, InvalidInput
from prism.release.events import (
    Abort,
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
)
from prism.release.gates import GateResult
from prism.release.machine import (
    ROLLBACK_ATTEMPTS,
    TABLE,
    TERMINAL,
    TRANSITIONS,
    Phase,
    advance,
    propose,
    step,
    wants,
)
from prism.release.plan import ReleasePlan
from prism.release.record import ReleaseRecord

T0 = 1_700_000_000.0
UP = GateResult("health", True, "all 1 server(s) of 'green' are UP")
DOWN = GateResult("health", False, "color 'green' is not ready: s1 is DOWN", {"servers": {}})
IDLE = GateResult("drain", True, "'blue' drained: no connection in use", {"in_use": {}})
ZERO = Counters(0, 0, 0)
#: ticks 1 s apart; 20 requests make a window worth judging
FAST = {"tick_ms": 1000, "min_requests": 20}


def plan(*steps: dict[str, Any], **extra: Any) -> ReleasePlan:
    """A plan to green; by default 10% -> 30 s -> 50% -> manual -> 100%."""
    chosen = steps or (
        {"weight": 10},
        {"pause": "30s"},
        {"weight": 50},
        {"pause": "manual"},
        {"weight": 100},
    )
    return ReleasePlan.model_validate(
        {"to": "green", "steps": list(chosen), "analysis": FAST, **extra}
    )


def pending(chosen: ReleasePlan | None = None) -> ReleaseRecord:
    return propose(
        id="r1",
        app="shop",
        stable="blue",
        plan=chosen or plan(),
        weights={"blue": 100},
        actor="ci",
        reason="ship it",
        at=T0,
    )


def go(record: ReleaseRecord, *events: Event) -> ReleaseRecord:
    for event in events:
        record = step(record, event).record
    return record


def tick(at: float, green: int = 0, **seen: Any) -> Tick:
    """An observation with green at ``green`` percent, healthy, with counters."""
    weights = {"blue": 100 - green, "green": green} if green else {"blue": 100}
    seen.setdefault("health", UP)
    seen.setdefault("target", ZERO)
    seen.setdefault("baseline", ZERO)
    return Tick(at=at, weights={c: w for c, w in weights.items() if w}, **seen)


def share_set(at: float, green: int, purpose: str = "step", **extra: Any) -> ShareSet:
    weights = {"blue": 100 - green, "green": green} if green < 100 else {"green": 100}
    return ShareSet(at, purpose, {c: w for c, w in weights.items() if w}, **extra)  # type: ignore[arg-type]


def running(chosen: ReleasePlan | None = None) -> ReleaseRecord:
    return go(pending(chosen), Began(T0, (UP,)))


def stepping() -> ReleaseRecord:
    """Running, with the first step's share saved as in flight."""
    return go(running(), tick(T0))


def in_pause() -> ReleaseRecord:
    """At the 30 s pause after 10%, its window started at zero counters."""
    return go(stepping(), share_set(T0 + 1, 10, ms=1.5, target=ZERO, baseline=ZERO))


def waiting() -> ReleaseRecord:
    record = go(in_pause(), tick(T0 + 2, 10, target=Counters(30, 0, 5)))  # analysis passes
    record = go(record, tick(T0 + 32, 10, target=Counters(60, 0, 5)))  # pause over
    record = go(record, tick(T0 + 33, 10), share_set(T0 + 33, 50, target=ZERO))
    return go(record, tick(T0 + 34, 50))


def confirming() -> ReleasePlan:
    return plan({"weight": 10}, {"weight": 100}, confirm={"url": "http://hooks.test/confirm"})


def holding() -> ReleaseRecord:
    return go(running(confirming()), tick(T0 + 1, confirm=(False, "503 Service Unavailable")))


def paused() -> ReleaseRecord:
    return go(in_pause(), Pause(T0 + 5, "ann"))


def draining() -> ReleaseRecord:
    record = go(running(plan({"weight": 100})), tick(T0), share_set(T0, 100))
    return go(record, tick(T0 + 1, 100))


def rolling_back() -> ReleaseRecord:
    return go(in_pause(), Abort(T0 + 5, "ann", "not today"))


def kinds(result: Step) -> list[str]:
    return [type(a).__name__ for a in result.actions]


def audits(result: Step) -> list[str]:
    return [a.event for a in result.actions if isinstance(a, Audit)]


# -- one case per row of the table: (record, event, check) ---------------------

Case = tuple[ReleaseRecord, Event, Callable[[Step], object]]


def _began_ok() -> Case:
    def check(r: Step) -> None:
        assert r.record.phase is Phase.RUNNING
        assert r.record.step_started_at == T0 + 1
        assert audits(r) == ["started"]
        assert [e.name for e in r.record.steps] == ["health"]

    return pending(), Began(T0 + 1, (UP,)), check


def _began_refused() -> Case:
    def check(r: Step) -> None:
        assert r.record.phase is Phase.REFUSED
        assert r.actions == (Audit("refused", DOWN.message),)
        assert r.record.steps[-1].ok is False

    return pending(), Began(T0, (DOWN,)), check


def _pending_restarted() -> Case:
    def check(r: Step) -> None:
        assert r.record.phase is Phase.REFUSED
        assert r.record.steps[-1].message == "Prism restarted before the release began"
        assert r.actions == ()

    return pending(), Restarted(T0 + 9), check


def _running_tick() -> Case:
    def check(r: Step) -> None:
        assert r.record.phase is Phase.RUNNING
        assert r.record.inflight == "step"
        assert r.actions == (SetShare("step", 10, detail={"color": "green", "step_index": 0}),)

    return running(), tick(T0 + 1), check


def _running_share_set() -> Case:
    def check(r: Step) -> None:
        assert r.record.step == 1
        assert r.record.inflight is None
        assert r.record.steps[-1].message == "green at 10% (blue=90 green=10) in 1.5 ms"
        assert r.record.window == {"target": ZERO.to_dict(), "baseline": ZERO.to_dict()}
        assert r.wake_in == 0

    return stepping(), share_set(T0 + 2, 10, ms=1.5, target=ZERO, baseline=ZERO), check


def _running_share_failed() -> Case:
    def check(r: Step) -> None:
        assert r.record.phase is Phase.RUNNING
        assert r.record.inflight == "step"
        assert r.record.attempts == 1
        assert r.record.steps[-1].name == "retry"
        assert r.wake_in == 1.0

    return stepping(), ShareFailed(T0 + 2, "step", "HAProxy said no"), check


def _running_restarted() -> Case:
    def check(r: Step) -> None:
        assert r.record is record
        assert kinds(r) == ["SetShare"]

    record = stepping()
    return record, Restarted(T0 + 3), check


def _promote(record: ReleaseRecord, to_step: int) -> Case:
    def check(r: Step) -> None:
        assert r.record.phase is Phase.RUNNING
        assert r.record.step == to_step
        assert r.record.confirmed_step == to_step
        assert r.record.steps[-1].message == "promoted by ann"
        assert audits(r) == ["promoted"]

    return record, Promote(T0 + 50, "ann"), check


def _pause(record: ReleaseRecord) -> Case:
    def check(r: Step) -> None:
        assert r.record.phase is Phase.PAUSED
        assert r.record.paused_at == T0 + 50
        assert r.actions == (Audit("paused", "by ann"),)
        assert r.wake_in is None

    return record, Pause(T0 + 50, "ann"), check


def _abort(record: ReleaseRecord) -> Case:
    def check(r: Step) -> None:
        assert r.record.phase is Phase.ROLLING_BACK
        assert r.record.inflight == "rollback"
        assert r.record.steps[-1].message == "aborted by ann: nope"
        assert r.actions == (
            SetShare("rollback", 0, restore={"blue": 100}, detail={"color": "green"}),
        )

    return record, Abort(T0 + 50, "ann", "nope"), check


def _waiting_tick() -> Case:
    def check(r: Step) -> None:
        assert r.record.phase is Phase.WAITING
        assert r.actions == ()
        assert r.wake_in == 1.0

    return waiting(), tick(T0 + 40, 50), check


def _stays(record: ReleaseRecord, event: Event, wake_in: float | None) -> Case:
    def check(r: Step) -> None:
        assert r.record is record
        assert r.actions == ()
        assert r.wake_in == wake_in

    return record, event, check


def _holding_tick() -> Case:
    def check(r: Step) -> None:
        assert r.record.phase is Phase.RUNNING
        assert r.record.confirmed_step == 0
        assert [e.message for e in r.record.steps[-1:]] == ["confirm hook: 200 OK"]
        assert kinds(r) == ["SetShare"]

    return holding(), tick(T0 + 2, confirm=(True, "200 OK")), check


def _paused_resume() -> Case:
    record = paused()

    def check(r: Step) -> None:
        assert r.record.phase is Phase.RUNNING
        assert r.record.paused_at is None
        assert r.record.step_started_at == record.step_started_at + 100
        assert audits(r) == ["resumed"]

    return record, Resume(T0 + 105, "bob"), check


def _reissues(record: ReleaseRecord, event: Event, action: type) -> Case:
    def check(r: Step) -> None:
        assert r.record is record
        assert [type(a) for a in r.actions] == [action]

    return record, event, check


def _drained() -> Case:
    def check(r: Step) -> None:
        assert r.record.phase is Phase.COMPLETED
        assert r.record.inflight is None
        assert r.record.steps[-1].name == "drain"
        assert r.actions == (Audit("completed", IDLE.message),)

    return draining(), Drained(T0 + 3, IDLE), check


def _rolled_back() -> Case:
    def check(r: Step) -> None:
        assert r.record.phase is Phase.ROLLED_BACK
        assert r.record.steps[-1].message == "green back to 0% (blue=100)"
        assert r.actions == (Audit("rolled_back", "aborted by ann: not today", {}),)

    return rolling_back(), ShareSet(T0 + 6, "rollback", {"blue": 100}), check


def _rollback_refused() -> Case:
    def check(r: Step) -> None:
        assert r.record.phase is Phase.ROLLING_BACK
        assert r.record.attempts == 1
        assert r.record.steps[-1].message == f"rollback refused (1 of {ROLLBACK_ATTEMPTS}): no"
        assert r.wake_in == 1.0

    return rolling_back(), ShareFailed(T0 + 6, "rollback", "no"), check


P = Phase
CASES: dict[tuple[Phase, type[Event]], Callable[[], Case]] = {
    (P.PENDING, Began): _began_ok,
    (P.PENDING, Restarted): _pending_restarted,
    (P.RUNNING, Tick): _running_tick,
    (P.RUNNING, ShareSet): _running_share_set,
    (P.RUNNING, ShareFailed): _running_share_failed,
    (P.RUNNING, Restarted): _running_restarted,
    (P.RUNNING, Promote): lambda: _promote(in_pause(), 2),
    (P.RUNNING, Pause): lambda: _pause(in_pause()),
    (P.RUNNING, Abort): lambda: _abort(in_pause()),
    (P.WAITING, Tick): _waiting_tick,
    (P.WAITING, Restarted): lambda: _stays(waiting(), Restarted(T0 + 40), 0.0),
    (P.WAITING, Promote): lambda: _promote(waiting(), 4),
    (P.WAITING, Pause): lambda: _pause(waiting()),
    (P.WAITING, Abort): lambda: _abort(waiting()),
    (P.HOLDING, Tick): _holding_tick,
    (P.HOLDING, Restarted): lambda: _stays(holding(), Restarted(T0 + 2), 0.0),
    (P.HOLDING, Promote): lambda: _promote(holding(), 0),
    (P.HOLDING, Pause): lambda: _pause(holding()),
    (P.HOLDING, Abort): lambda: _abort(holding()),
    (P.PAUSED, Tick): lambda: _stays(paused(), tick(T0 + 60, 10), None),
    (P.PAUSED, Restarted): lambda: _stays(paused(), Restarted(T0 + 60), None),
    (P.PAUSED, Resume): _paused_resume,
    (P.PAUSED, Abort): lambda: _abort(paused()),
    (P.DRAINING, Tick): lambda: _reissues(draining(), Tick(T0 + 2), Drain),
    (P.DRAINING, Restarted): lambda: _reissues(draining(), Restarted(T0 + 2), Drain),
    (P.DRAINING, Drained): _drained,
    (P.ROLLING_BACK, Tick): lambda: _reissues(rolling_back(), Tick(T0 + 6), SetShare),
    (P.ROLLING_BACK, Restarted): lambda: _reissues(rolling_back(), Restarted(T0 + 6), SetShare),
    (P.ROLLING_BACK, ShareSet): _rolled_back,
    (P.ROLLING_BACK, ShareFailed): _rollback_refused,
}


def test_the_cases_cover_every_row_of_the_table() -> None:
    """Every (phase, event) the table allows has a case below, and nothing else does."""
    assert set(CASES) == set(TABLE)


def _row(key: tuple[Phase, type[Event]]) -> str:
    return f"{key[0].value}-{key[1].__name__}"


ROWS = sorted(TABLE, key=_row)


@pytest.mark.parametrize("key", ROWS, ids=_row)
def test_each_table_row(key: tuple[Phase, type[Event]]) -> None:
    """Each legal (phase, event) lands in a phase its row allows, with the expected effects."""
    record, event, check = CASES[key]()
    assert (record.phase, type(event)) == key
    result = step(record, event)
    assert result.record.phase in TABLE[key]
    check(result)


def test_a_refused_gate_is_the_other_branch_of_began() -> None:
    """Began with a refusal ends refused, logged and audited, with no traffic action."""
    record, event, check = _began_refused()
    check(step(record, event))


SAMPLES: dict[Phase, Callable[[], ReleaseRecord]] = {
    P.PENDING: pending,
    P.RUNNING: in_pause,
    P.WAITING: waiting,
    P.HOLDING: holding,
    P.PAUSED: paused,
    P.DRAINING: draining,
    P.ROLLING_BACK: rolling_back,
    P.COMPLETED: lambda: go(draining(), Drained(T0 + 3, IDLE)),
    P.ROLLED_BACK: lambda: go(rolling_back(), ShareSet(T0 + 6, "rollback", {"blue": 100})),
    P.REFUSED: lambda: go(pending(), Began(T0, (DOWN,))),
    P.FAILED: lambda: go(
        rolling_back(), *[ShareFailed(T0 + 6 + i, "rollback", "no") for i in range(5)]
    ),
}
EVENTS: list[Event] = [
    Began(T0, (UP,)),
    Restarted(T0),
    tick(T0),
    Promote(T0, "ann"),
    Pause(T0, "ann"),
    Resume(T0, "ann"),
    Abort(T0, "ann"),
    ShareSet(T0, "step", {"blue": 100}),
    ShareFailed(T0, "step", "no"),
    Drained(T0, IDLE),
]
ILLEGAL = [
    (phase, event)
    for phase, event in itertools.product(SAMPLES, EVENTS)
    if (phase, type(event)) not in TABLE
]


@pytest.mark.parametrize(
    ("phase", "event"), ILLEGAL, ids=[f"{p.value}-{type(e).__name__}" for p, e in ILLEGAL]
)
def test_an_illegal_event_raises_and_changes_nothing(phase: Phase, event: Event) -> None:
    """Any event outside the table raises IllegalTransition; the record is left as it was."""
    record = SAMPLES[phase]()
    assert record.phase is phase
    before = record.model_dump()
    with pytest.raises(IllegalTransition, match=rf"'{phase.value}'"):
        step(record, event)
    assert record.model_dump() == before


def test_illegal_commands_keep_their_words() -> None:
    """Resuming a running release and promoting a completed one say so, as they always did."""
    with pytest.raises(IllegalTransition, match=r"^the release is 'running', not paused") as info:
        step(in_pause(), Resume(T0, "ann"))
    assert info.value.message == "the release is 'running', not paused"
    assert info.value.hint == "a 'running' release takes: abort, pause, promote"
    with pytest.raises(IllegalTransition, match=r"phase 'completed' cannot be promoted") as info:
        step(SAMPLES[P.COMPLETED](), Promote(T0, "ann"))
    assert info.value.hint == "a 'completed' release takes: nothing (it ended)"


def test_every_phase_is_reachable_and_terminal_phases_take_nothing() -> None:
    """FAILED is reachable; the terminal phases are exactly those with no transition."""
    seen, todo = {Phase.PENDING}, [Phase.PENDING]
    while todo:
        for nxt in TRANSITIONS[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    assert seen == set(Phase)
    assert {p for p, n in TRANSITIONS.items() if not n} == TERMINAL
    assert advance(Phase.ROLLING_BACK, Phase.FAILED) is Phase.FAILED
    with pytest.raises(IllegalTransition, match="cannot go from 'completed'"):
        advance(Phase.COMPLETED, Phase.RUNNING)


# -- behaviour in detail -----------------------------------------------------


def test_a_canary_walks_its_whole_plan() -> None:
    """10% -> 30 s pause (analysis must pass) -> 50% -> manual -> promote -> 100% -> drain."""
    record = waiting()
    assert [e.name for e in record.steps] == [
        "health",
        "weight",
        "pause",
        "weight",
        "pause",
    ]
    assert record.steps[2].message.startswith("pause over; analysis passed: healthy: 60 requests")
    record = go(record, Promote(T0 + 40, "ann"), tick(T0 + 40, 50))
    assert record.inflight == "step"
    record = go(record, share_set(T0 + 41, 100), tick(T0 + 42, 100))
    assert record.phase is Phase.DRAINING
    result = step(record, Restarted(T0 + 43))
    assert result.actions == (Drain(("blue",), None),)
    assert go(record, Drained(T0 + 44, IDLE)).phase is Phase.COMPLETED


def test_a_pause_waits_for_its_deadline_and_for_data() -> None:
    """Before the deadline it sleeps until then; after it, too few requests keep it waiting."""
    record = in_pause()
    early = step(record, tick(T0 + 30.5, 10))
    assert early.wake_in == pytest.approx(0.5)
    starved = step(record, tick(T0 + 40, 10, target=Counters(5, 0, 1)))
    assert starved.record.verdict is not None
    assert starved.record.verdict["outcome"] == "wait"
    assert starved.record.step == 1
    assert starved.wake_in == 1.0


def test_a_failing_analysis_rolls_back_with_its_readings() -> None:
    """A 5xx ratio over the limit rolls back to the initial share, logged with the verdict."""
    result = step(in_pause(), tick(T0 + 2, 10, target=Counters(40, 20, 5)))
    assert result.record.phase is Phase.ROLLING_BACK
    assert result.record.steps[-1].message.startswith("analysis failed: 5xx ratio")
    assert result.record.steps[-1].readings["errors_5xx"] == 20
    assert result.actions == (
        SetShare("rollback", 0, restore={"blue": 100}, detail={"color": "green"}),
    )


def test_an_unhealthy_target_rolls_back_but_only_once_traffic_moved() -> None:
    """Down before the first share moved: nothing to protect; down after: roll back."""
    before = step(running(), tick(T0 + 1, health=DOWN))
    assert before.record.phase is Phase.RUNNING
    after = step(in_pause(), tick(T0 + 2, 10, health=DOWN))
    assert after.record.phase is Phase.ROLLING_BACK
    assert after.record.steps[-1].message == f"target unhealthy: {DOWN.message}"


def test_missing_readings_hold_the_plan() -> None:
    """No counters once traffic moved: the pause neither passes nor fails, it waits."""
    result = step(in_pause(), tick(T0 + 99, 10, target=None))
    assert result.record.step == 1
    assert result.wake_in == 1.0


def test_a_counters_reset_starts_a_fresh_window() -> None:
    """Counters lower than the window's start (a reload) start a new window there and then."""
    record = go(in_pause(), tick(T0 + 2, 10, target=Counters(100, 0, 5)))
    assert record.verdict is not None
    record = record.model_copy(update={"window": {"target": Counters(100, 0, 5).to_dict()}})
    reset = step(record, tick(T0 + 3, 10, target=Counters(7, 0, 5), baseline=None))
    assert reset.record.window == {"target": Counters(7, 0, 5).to_dict(), "baseline": None}
    assert reset.record.verdict == record.verdict  # as before: judged again next tick
    assert reset.record.step == 1


def test_a_resumed_pause_keeps_its_remaining_time() -> None:
    """Paused at 5 s into a 30 s pause for an hour: after resume, 25 s are still left."""
    record = go(paused(), Resume(T0 + 3605, "ann"))
    assert step(record, tick(T0 + 3629, 10, target=Counters(30, 0, 1))).record.step == 1
    assert step(record, tick(T0 + 3632, 10, target=Counters(30, 0, 1))).record.step == 2


def test_the_confirm_hook_is_asked_once_per_step() -> None:
    """wants() asks before an unconfirmed weight step, and never again for a confirmed one."""
    record = running(confirming())
    assert wants(record).confirm == Ask(step=0, weight=10, seq=0)
    held = step(record, tick(T0 + 1, confirm=(False, "nope")))
    assert held.record.phase is Phase.HOLDING
    assert held.actions == (Audit("held", "nope"),)
    again = step(held.record, tick(T0 + 2, confirm=(False, "nope")))
    assert again.record is held.record  # logged and audited once, not every tick
    going = step(held.record, tick(T0 + 3, confirm=(True, "200 OK"))).record
    assert wants(going).confirm is None
    assert wants(go(going, share_set(T0 + 4, 10))).confirm == Ask(step=1, weight=100, seq=0)


def test_wants_readings_only_where_something_is_judged() -> None:
    """Running, waiting and holding read the data plane; the other phases need nothing."""
    assert {p for p, make in SAMPLES.items() if wants(make()).readings} == {
        P.RUNNING,
        P.WAITING,
        P.HOLDING,
    }


def test_events_are_numbered_only_when_the_plan_has_webhooks() -> None:
    """Each Emit bumps seq in the record it is saved with; without webhooks nothing is sent."""
    assert running().seq == 0
    hooked = running(plan({"weight": 100}, webhooks=[{"url": "http://hooks.test/e"}]))
    assert hooked.seq == 1
    result = step(go(hooked, tick(T0)), share_set(T0 + 1, 100))
    assert result.actions == (
        Emit(
            "step.advanced",
            {"step": 0, "weight": 100, "weights": {"green": 100}},
            2,
            T0 + 1,
        ),
    )
    assert result.record.seq == 2


def test_promote_full_jumps_to_the_last_weight_step() -> None:
    """Promote --full from the first pause goes straight to the final weight step."""
    result = step(in_pause(), Promote(T0 + 5, "ann", full=True))
    assert result.record.step == 4
    assert result.record.steps[-1].message == "promoted by ann (full)"


def test_a_refused_rollback_ends_failed_after_its_attempts() -> None:
    """Refused ROLLBACK_ATTEMPTS times in a row, a rollback ends FAILED, audited and emitted."""
    record = rolling_back().model_copy(
        update={"plan": plan(webhooks=[{"url": "http://hooks.test/e"}])}
    )
    for attempt in range(1, ROLLBACK_ATTEMPTS):
        record = go(record, ShareFailed(T0 + attempt, "rollback", "HAProxy refused"))
        assert record.phase is Phase.ROLLING_BACK
        assert step(record, Tick(T0 + attempt)).actions[0] == SetShare(
            "rollback", 0, restore={"blue": 100}, detail={"color": "green"}
        )
    result = step(record, ShareFailed(T0 + 9, "rollback", "HAProxy refused"))
    assert result.record.phase is Phase.FAILED
    assert result.record.attempts == ROLLBACK_ATTEMPTS
    assert result.record.steps[-1].name == "failed"
    assert audits(result) == ["failed"]
    assert [a.kind for a in result.actions if isinstance(a, Emit)] == ["failed"]


def test_a_refused_step_is_retried_and_logged_once() -> None:
    """A plan step's refused share change is retried every tick, never failing the release."""
    record = go(stepping(), *[ShareFailed(T0 + i, "step", "no") for i in range(1, 9)])
    assert record.phase is Phase.RUNNING
    assert record.attempts == 8
    assert [e.name for e in record.steps].count("retry") == 1
    assert step(record, tick(T0 + 10)).actions == (
        SetShare("step", 10, detail={"color": "green", "step_index": 0}),
    )


def test_a_stale_outcome_is_refused() -> None:
    """An outcome of a share change that is not in flight raises, changing nothing."""
    with pytest.raises(IllegalTransition, match="nothing in flight"):
        step(in_pause(), ShareSet(T0, "step", {"blue": 90, "green": 10}))
    with pytest.raises(IllegalTransition, match="rollback share, but the release has step"):
        step(stepping(), ShareFailed(T0, "rollback", "no"))


RESTART_CASES: dict[str, tuple[Callable[[], ReleaseRecord], list[type]]] = {
    "pending": (pending, []),
    "running, step in flight": (stepping, [SetShare]),
    "running, between steps": (in_pause, []),
    "waiting": (waiting, []),
    "holding": (holding, []),
    "paused": (paused, []),
    "draining": (draining, [Drain]),
    "rolling_back": (rolling_back, [SetShare]),
}


@pytest.mark.parametrize("name", list(RESTART_CASES))
def test_restarted_redoes_what_was_saved_in_flight(name: str) -> None:
    """After a crash right after saving, Restarted re-issues the in-flight action (or none)."""
    make, expected = RESTART_CASES[name]
    record = make()
    result = step(record, Restarted(T0 + 1000))
    assert [type(a) for a in result.actions] == expected
    if record.phase is P.PENDING:
        assert result.record.phase is P.REFUSED
    else:
        assert result.record is record


def test_old_records_without_inflight_still_resume() -> None:
    """A rolling_back record saved before ``inflight`` existed still re-issues its rollback."""
    record = rolling_back().model_copy(update={"inflight": None})
    assert kinds(step(record, Restarted(T0))) == ["SetShare"]
    loaded = ReleaseRecord.model_validate(
        {k: v for k, v in record.model_dump().items() if k not in ("inflight", "attempts")}
    )
    assert loaded.inflight is None
    assert loaded.attempts == 0


def test_values_validate_themselves() -> None:
    """A share over 100, an unknown purpose or a Began without gates cannot be built."""
    with pytest.raises(InvalidInput, match="a share is 0 to 100"):
        SetShare("step", 101)
    with pytest.raises(InvalidInput, match="'step' or 'rollback'"):
        ShareFailed(T0, "drain", "no")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="at least one gate"):
        Began(T0, ())


def test_a_lost_node_holds_the_plan_until_it_returns() -> None:
    """A fleet node without a report holds a running release; its return lets it go on."""
    record = in_pause()
    held = step(record, tick(T0 + 40, 10, target=Counters(60, 0, 5), lost=("lb-2",)))
    assert held.record.phase is Phase.HOLDING
    assert held.record.steps[-1].name == "lost"
    assert "lb-2" in held.record.steps[-1].message
    assert [a for a in held.actions if isinstance(a, Audit)] == [
        Audit("held", held.record.steps[-1].message)
    ]
    hooked = step(
        go(running(plan(webhooks=[{"url": "http://127.0.0.1:9/hook"}])), tick(T0)),
        share_set(T0 + 1, 10, target=ZERO, baseline=ZERO),
    ).record
    told = step(hooked, tick(T0 + 2, 10, lost=("lb-2",)))
    (emit,) = [a for a in told.actions if isinstance(a, Emit)]
    assert (emit.kind, emit.data) == ("node.lost", {"nodes": ["lb-2"]})
    # still lost: nothing moves, and the hold is not logged again
    again = step(held.record, tick(T0 + 41, 10, target=Counters(70, 0, 5), lost=("lb-2",)))
    assert again.record.phase is Phase.HOLDING
    assert len(again.record.steps) == len(held.record.steps)
    assert again.actions == ()
    # back (or forgotten): the plan goes on from where it was
    back = step(again.record, tick(T0 + 42, 10, target=Counters(80, 0, 5)))
    assert back.record.phase is Phase.RUNNING
    assert back.record.step == record.step


def test_a_lost_node_does_not_stop_a_rollback() -> None:
    """An unhealthy target rolls back even while a node is lost: safety first."""
    record = in_pause()
    result = step(record, tick(T0 + 40, 10, health=DOWN, lost=("lb-2",)))
    assert result.record.phase is Phase.ROLLING_BACK
