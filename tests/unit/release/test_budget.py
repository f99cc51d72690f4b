"""The budget arithmetic on its own: what each outcome counts, and when it decides."""

from __future__ import annotations

from prism.release.analysis import Verdict
from prism.release.budget import count_missing, count_reading
from prism.release.plan import Analysis
from prism.release.record import Budget

PASS = Verdict("pass", "healthy")
FAIL = Verdict("fail", "5xx ratio 0.5 > 0.05")
WAIT = Verdict("wait", "waiting for data: 3/20 requests")


def test_failures_count_up_to_their_limit_then_roll_back() -> None:
    analysis = Analysis(failure_limit=1)
    first = count_reading(analysis, Budget(), FAIL, 1.0)
    assert (first.decision, first.budget.failures) == ("go", 1)
    assert first.note == "failed reading 1 of 1 allowed: 5xx ratio 0.5 > 0.05"
    second = count_reading(analysis, first.budget, FAIL, 2.0)
    assert second.decision == "roll_back"
    assert second.verdict.message.endswith("(failed reading 2, limit 1)")


def test_a_wait_becomes_inconclusive_after_max_wait_and_starts_again() -> None:
    analysis = Analysis(max_wait_ms=3000, inconclusive_limit=1)
    budget = Budget(starved_since=10.0)
    early = count_reading(analysis, budget, WAIT, 12.9)
    assert (early.decision, early.verdict.outcome) == ("go", "wait")
    first = count_reading(analysis, budget, WAIT, 13.0)
    assert first.verdict.outcome == "inconclusive"
    assert (first.decision, first.budget.inconclusive, first.budget.starved_since) == (
        "go",
        1,
        13.0,
    )
    second = count_reading(analysis, first.budget, WAIT, 16.0)
    assert (second.decision, second.budget.inconclusive) == ("hold", 2)


def test_a_pass_ends_the_wait_and_any_reading_ends_a_run_of_errors() -> None:
    counted = count_reading(Analysis(), Budget(errors=3, starved_since=1.0), PASS, 2.0)
    assert counted.budget == Budget()


def test_missing_readings_hold_past_their_limit() -> None:
    analysis = Analysis(consecutive_error_limit=1)
    first = count_missing(analysis, Budget(), "counters")
    assert (first.decision, first.verdict.outcome) == ("go", "error")
    second = count_missing(analysis, first.budget, "counters")
    assert second.decision == "hold"
    assert second.verdict.message == "no reading (counters missing): 2 in a row, limit 1"
