"""The machine's three budgets and its sliding window: failures roll back, inconclusive and
missing readings hold, each counted per step exactly as the analysis limits say."""

from __future__ import annotations

from typing import Any

import pytest

from prism.core.model import parse_model
from prism.core.readings import Counters
from prism.errors import InvalidInput
from prism.release.events import Abort, Audit, Began, Emit, Promote, SetShare, ShareSet, Tick
from prism.release.gates import GateResult
from prism.release.machine import Phase, propose, step
from prism.release.plan import Analysis, ReleasePlan
from prism.release.record import ReleaseRecord

T0 = 1_700_000_000.0
UP = GateResult("health", True, "all 1 server(s) of 'green' are UP")
ZERO = Counters(0, 0, 0)
HOOK = {"url": "http://hooks.test/events"}


def in_pause(**analysis: Any) -> ReleaseRecord:
    """Green at 10% in a 10-minute pause; the window started at zero counters at T0."""
    plan = ReleasePlan.model_validate(
        {
            "to": "green",
            "steps": [{"weight": 10}, {"pause": "10m"}, {"weight": 100}],
            "analysis": {"tick_ms": 1000, "min_requests": 20, **analysis},
            "webhooks": [HOOK],
        }
    )
    record = propose(
        id="r1",
        app="shop",
        stable="blue",
        plan=plan,
        weights={"blue": 100},
        actor="ci",
        reason=None,
        at=T0 - 2,
    )
    record = step(record, Began(T0 - 2, (UP,))).record
    record = step(record, Tick(T0 - 1, weights={"blue": 100}, health=UP)).record
    weights = {"blue": 90, "green": 10}
    return step(record, ShareSet(T0, "step", weights, target=ZERO, baseline=ZERO)).record


def tick(at: float, target: Counters | None, baseline: Counters | None = ZERO) -> Tick:
    return Tick(
        at=T0 + at, weights={"blue": 90, "green": 10}, health=UP, target=target, baseline=baseline
    )


def test_failure_limit_tolerates_that_many_failed_readings() -> None:
    """failure_limit 2: the first two failed readings are logged, the third rolls back."""
    record = in_pause(failure_limit=2)
    for second in (1, 2):
        record = step(record, tick(second, Counters(100 * second, 50 * second, 5))).record
        assert record.phase is Phase.RUNNING
        assert record.budget.failures == second
        assert record.steps[-1].message.startswith(f"failed reading {second} of 2 allowed")
    result = step(record, tick(3, Counters(300, 150, 5)))
    assert result.record.phase is Phase.ROLLING_BACK
    assert result.record.steps[-1].message.endswith("(failed reading 3, limit 2)")
    assert isinstance(result.actions[0], SetShare)


def test_a_failure_limit_of_zero_rolls_back_at_the_first_failed_reading() -> None:
    """The default: one failed reading is enough."""
    result = step(in_pause(), tick(1, Counters(100, 50, 5)))
    assert result.record.phase is Phase.ROLLING_BACK


def test_too_little_data_for_max_wait_holds_and_notifies() -> None:
    """No traffic for max_wait: one inconclusive reading over a limit of 0 holds the release,
    audited and emitted, and it stays held until a person promotes."""
    record = in_pause(max_wait_ms=5000)
    for second in range(1, 5):
        record = step(record, tick(second, ZERO)).record
        assert record.phase is Phase.RUNNING
        assert record.verdict is not None
        assert record.verdict["outcome"] == "wait"
    result = step(record, tick(5, ZERO))
    held = result.record
    assert held.phase is Phase.HOLDING
    assert held.held == "inconclusive"
    assert held.verdict is not None
    assert held.verdict["outcome"] == "inconclusive"
    assert held.budget.inconclusive == 1
    audit = next(a for a in result.actions if isinstance(a, Audit))
    assert audit.event == "held"
    assert "inconclusive" in audit.message
    assert [a.kind for a in result.actions if isinstance(a, Emit)] == ["analysis.inconclusive"]
    # held: later ticks, even after the pause deadline, neither pass nor move on
    later = step(held, tick(900, Counters(500, 0, 5)))
    assert later.record.phase is Phase.HOLDING
    assert later.record.step == held.step
    promoted = step(held, Promote(T0 + 901, "ann")).record
    assert promoted.phase is Phase.RUNNING
    assert promoted.held is None
    assert promoted.budget.inconclusive == 0


def test_inconclusive_limit_counts_each_max_wait_period() -> None:
    """inconclusive_limit 1: the first max_wait without data is logged, the second holds."""
    record = in_pause(max_wait_ms=3000, inconclusive_limit=1)
    phases = []
    for second in range(1, 7):
        record = step(record, tick(second, ZERO)).record
        phases.append((second, record.phase, record.budget.inconclusive))
    assert phases[2] == (3, Phase.RUNNING, 1)
    assert phases[5] == (6, Phase.HOLDING, 2)
    assert [p for _, p, _ in phases[:5]] == [Phase.RUNNING] * 5


def test_data_arriving_resets_the_wait() -> None:
    """A passing reading in between starts max_wait again: silence must be continuous."""
    record = in_pause(max_wait_ms=3000)
    record = step(record, tick(1, ZERO)).record
    record = step(record, tick(2, Counters(50, 0, 5))).record  # passes
    assert record.budget.starved_since is None
    # the counters stop moving: the sliding window still holds the 50, then runs dry
    for second in range(3, 15):
        record = step(record, tick(second, Counters(50, 0, 5))).record
    assert record.phase is Phase.RUNNING  # the step's window holds 50 requests: still judged


def test_missing_readings_in_a_row_hold_past_their_limit() -> None:
    """consecutive_error_limit 2: two missing readings wait, the third holds; a reading in
    between resets the count."""
    record = in_pause(consecutive_error_limit=2)
    record = step(record, tick(1, None)).record
    record = step(record, tick(2, None)).record
    assert record.budget.errors == 2
    assert record.verdict is not None
    assert record.verdict["outcome"] == "error"
    reset = step(record, tick(3, Counters(30, 0, 5))).record
    assert reset.budget.errors == 0
    record = step(record, tick(3, None)).record
    assert record.phase is Phase.HOLDING
    assert record.held == "errors"
    assert "no reading" in record.steps[-1].message


def test_budgets_start_again_at_each_step() -> None:
    """A new weight step's share resets every count."""
    record = in_pause(failure_limit=3)
    record = step(record, tick(1, Counters(100, 50, 5))).record
    assert record.budget.failures == 1
    record = step(record, Promote(T0 + 2, "ann")).record
    assert record.budget.failures == 0


def test_the_sliding_window_sees_a_fault_in_the_next_tick() -> None:
    """After 100 s of healthy traffic a tick of 100% 5xx fails at once: the window is the last
    10 s, not the step's 10,000 requests, which would dilute it to 1%."""
    record = in_pause()
    for second in range(1, 101):
        record = step(record, tick(second, Counters(100 * second, 0, 5))).record
    assert record.phase is Phase.RUNNING
    assert len(record.samples) <= 11  # bounded to the window
    result = step(record, tick(101, Counters(10_100, 100, 5)))
    assert result.record.phase is Phase.ROLLING_BACK
    assert result.record.steps[-1].readings["window"] == "sliding"
    assert result.record.steps[-1].readings["requests"] == 1000


@pytest.mark.parametrize(
    ("analysis", "words"),
    [
        ({"tick_ms": 50}, "greater than or equal to 100"),
        ({"tick_ms": 1000, "window_ms": 500}, "window_ms must be at least tick_ms"),
        ({"tick_ms": 100, "window_ms": "20s"}, "at most 100 ticks"),
        ({"failure_limit": -1}, "greater than or equal to 0"),
        ({"max_wait_ms": "soon"}, "max_wait_ms"),
        ({"judge": {"alpha": 0.7}}, "less than 0.5"),
    ],
)
def test_analysis_settings_are_checked_before_anything_is_stored(
    analysis: dict[str, Any], words: str
) -> None:
    """Bad analysis settings are refused as invalid input, naming the problem."""
    with pytest.raises(InvalidInput, match=words):
        parse_model(ReleasePlan, {"to": "green", "steps": [{"weight": 10}], "analysis": analysis})


def test_a_capped_rollback_ramps_only_when_configured() -> None:
    """A capped ShareSet ends the rollback at once without rollback_ramp_ms; with it, the
    release keeps rolling back (logged and audited once) until the ramp is over."""
    capped = ("blue has 1 of the 2 ready server(s) ...",)
    weights = {"blue": 45, "green": 55}
    plain = step(in_pause(), Abort(T0 + 1, "ann")).record
    done = step(plain, ShareSet(T0 + 2, "rollback", weights, capped=capped)).record
    assert done.phase is Phase.ROLLED_BACK
    assert done.steps[-1].readings["capped"] == list(capped)

    ramped = in_pause().model_copy(
        update={"plan": in_pause().plan.model_copy(update={"rollback_ramp_ms": 10_000})}
    )
    rolling = step(ramped, Abort(T0 + 1, "ann")).record
    first = step(rolling, ShareSet(T0 + 2, "rollback", weights, capped=capped))
    assert first.record.phase is Phase.ROLLING_BACK
    assert first.record.inflight == "rollback"
    assert [a.event for a in first.actions if isinstance(a, Audit)] == ["capped"]
    assert first.wake_in == 1.0
    again = step(first.record, ShareSet(T0 + 3, "rollback", weights, capped=capped))
    assert again.record is first.record  # same weights: nothing new to save
    over = step(first.record, ShareSet(T0 + 11, "rollback", weights, capped=capped))
    assert over.record.phase is Phase.ROLLED_BACK
    back = step(first.record, ShareSet(T0 + 4, "rollback", {"blue": 90, "green": 10}))
    assert back.record.phase is Phase.ROLLED_BACK


def test_a_plan_without_window_ms_fits_the_default_window_to_its_tick() -> None:
    """10 s by default; a 30 s tick (plans saved before window_ms existed) judges one tick;
    a 100 ms tick at most 100 ticks."""
    assert Analysis().window == 10_000
    assert Analysis(tick_ms=30_000).window == 30_000
    assert Analysis(tick_ms=100).window == 10_000
    assert Analysis(tick_ms=100, window_ms=2000).window == 2000
