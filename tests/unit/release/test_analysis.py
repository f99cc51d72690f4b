"""The analysis judge: windows across resets, and pass/fail/wait rules."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from prism.core.readings import Counters
from prism.core.requestlog import MAX_RELATIVE_ERROR, Recorder
from prism.errors import InvalidInput
from prism.release.analysis import Verdict, delta, judge
from prism.release.plan import Analysis

# --------------------------------------------------------------------------- Counters and delta


def test_counters_round_trip_through_plain_data() -> None:
    """to_dict / from_dict keep the counters, so a restarted Prism resumes the window."""
    counters = Counters(requests=120, errors_5xx=3, mean_response_ms=42)
    data = counters.to_dict()
    assert data == {"requests": 120, "errors_5xx": 3, "mean_response_ms": 42}
    assert Counters.from_dict(data) == counters


@pytest.mark.parametrize(
    ("data", "refused"),
    [
        pytest.param(
            {"requests": 1, "errors_5xx": 0},
            "saved counters lack mean_response_ms",
            id="missing",
        ),
        pytest.param(
            {"requests": "1", "errors_5xx": 0, "mean_response_ms": 0},
            "counter requests must be a whole number >= 0, not '1'",
            id="string",
        ),
        pytest.param(
            {"requests": -1, "errors_5xx": 0, "mean_response_ms": 0},
            "counter requests must be a whole number >= 0, not -1",
            id="negative",
        ),
        pytest.param(
            {"requests": 1, "errors_5xx": 2, "mean_response_ms": 0},
            "2 5xx responses cannot exceed 1 requests",
            id="5xx>requests",
        ),
        pytest.param(
            {"requests": True, "errors_5xx": 0, "mean_response_ms": 0},
            "counter requests must be a whole number >= 0, not True",
            id="bool",
        ),
    ],
)
def test_malformed_saved_counters_are_invalid_input(data: dict[str, Any], refused: str) -> None:
    """Saved counters that are incomplete or impossible are refused, not trusted."""
    with pytest.raises(InvalidInput, match=f"^{re.escape(refused)}$"):
        Counters.from_dict(data)


def test_delta_is_the_window_and_keeps_the_latest_mean() -> None:
    """The window subtracts the counters; the moving-average response time is taken as is."""
    start = Counters(1000, 10, 80)
    now = Counters(1250, 16, 95)
    assert delta(start, now) == Counters(250, 6, 95)


@pytest.mark.parametrize(
    ("start", "now"),
    [
        pytest.param(Counters(1000, 10, 80), Counters(40, 0, 20), id="reload-reset"),
        pytest.param(Counters(1000, 10, 80), Counters(1500, 5, 20), id="5xx-went-down"),
        pytest.param(Counters(1000, 10, 80), Counters(1001, 12, 20), id="5xx-outgrew-requests"),
    ],
)
def test_delta_after_a_reset_is_none(start: Counters, now: Counters) -> None:
    """Counters that went down (HAProxy reloaded) give no window: the caller restarts it."""
    assert delta(start, now) is None


def test_delta_of_equal_snapshots_is_empty() -> None:
    """No traffic between two reads is an empty window, not a reset."""
    assert delta(Counters(5, 1, 9), Counters(5, 1, 9)) == Counters(0, 0, 9)


COUNTS = st.integers(0, 10**9)


@settings(max_examples=200, deadline=None)
@given(COUNTS, COUNTS, COUNTS, COUNTS, COUNTS)
def test_delta_recovers_any_window(r0: int, e0: int, r: int, e: int, rt: int) -> None:
    """delta(start, start + window) == window for any consistent start and window."""
    start = Counters(max(r0, e0), min(r0, e0), 7)
    window = Counters(max(r, e), min(r, e), rt)
    now = Counters(start.requests + window.requests, start.errors_5xx + window.errors_5xx, rt)
    assert delta(start, now) == window


# --------------------------------------------------------------------------- judge

#: Only the rule under test enabled, so each case isolates one rule.
ONLY_ABSOLUTE_5XX: dict[str, Any] = {
    "max_5xx_ratio_vs_stable": None,
    "max_mean_response_ms": None,
    "max_response_vs_stable": None,
}
ONLY_RELATIVE_5XX: dict[str, Any] = {
    "max_5xx_ratio": 1.0,
    "max_mean_response_ms": None,
    "max_response_vs_stable": None,
}
ONLY_ABSOLUTE_RT: dict[str, Any] = {
    "max_5xx_ratio": 1.0,
    "max_5xx_ratio_vs_stable": None,
    "max_response_vs_stable": None,
}
ONLY_RELATIVE_RT: dict[str, Any] = {
    "max_5xx_ratio": 1.0,
    "max_5xx_ratio_vs_stable": None,
    "max_mean_response_ms": None,
}

C = Counters
CASES = [
    # (id, analysis overrides, target window, baseline window, outcome, message)
    ("no-data", {}, C(0, 0, 0), None, "wait", "waiting for data: 0/20 requests"),
    ("12-of-20", {}, C(12, 0, 10), None, "wait", "waiting for data: 12/20 requests"),
    ("19-of-20", {}, C(19, 0, 10), None, "wait", "waiting for data: 19/20 requests"),
    ("19-all-5xx-still-waits", {}, C(19, 19, 10), None, "wait", "waiting for data: 19/20"),
    ("20-is-enough", {}, C(20, 0, 10), None, "pass", "healthy: 20 requests"),
    ("custom-min", {"min_requests": 100}, C(99, 0, 1), None, "wait", "99/100 requests"),
    # absolute 5xx ratio, strict: exactly at the limit passes
    (
        "5xx-fail",
        ONLY_ABSOLUTE_5XX,
        C(200, 84, 10),
        None,
        "fail",
        "5xx ratio 0.42 > 0.05 (84 of 200 requests)",
    ),
    ("5xx-at-limit", ONLY_ABSOLUTE_5XX, C(200, 10, 10), None, "pass", "5xx ratio 0.05,"),
    (
        "5xx-just-over",
        ONLY_ABSOLUTE_5XX,
        C(200, 11, 10),
        None,
        "fail",
        "5xx ratio 0.055 > 0.05 (11 of 200 requests)",
    ),
    ("5xx-all", ONLY_ABSOLUTE_5XX, C(20, 20, 10), None, "fail", "5xx ratio 1 > 0.05"),
    # relative 5xx ratio: max(ratio_floor, stable x factor)
    (
        "vs-stable-fail",
        ONLY_RELATIVE_5XX,
        C(200, 9, 10),
        C(200, 4, 10),
        "fail",
        "5xx ratio 0.045 > 0.04 (2 x stable 0.02): 9 of 200 requests, stable 4 of 200",
    ),
    ("vs-stable-at-limit", ONLY_RELATIVE_5XX, C(200, 8, 10), C(200, 4, 10), "pass", "healthy"),
    (
        "vs-stable-floor-fail",
        ONLY_RELATIVE_5XX,
        C(200, 3, 10),
        C(500, 0, 10),
        "fail",
        "5xx ratio 0.015 > 0.01 (ratio floor; stable 0): 3 of 200 requests, stable 0 of 500",
    ),
    (
        "vs-stable-floor-at-limit",
        ONLY_RELATIVE_5XX,
        C(200, 2, 10),
        C(500, 0, 10),
        "pass",
        "healthy",
    ),
    ("vs-stable-no-baseline", ONLY_RELATIVE_5XX, C(200, 50, 10), None, "pass", "healthy"),
    ("vs-stable-thin-baseline", ONLY_RELATIVE_5XX, C(200, 50, 10), C(19, 0, 10), "pass", "healthy"),
    (
        "vs-stable-baseline-at-min",
        ONLY_RELATIVE_5XX,
        C(200, 50, 10),
        C(20, 0, 10),
        "fail",
        "5xx ratio 0.25 > 0.01 (ratio floor; stable 0)",
    ),
    (
        "vs-stable-off",
        {**ONLY_RELATIVE_5XX, "max_5xx_ratio_vs_stable": None},
        C(200, 50, 10),
        C(200, 0, 10),
        "pass",
        "healthy",
    ),
    # absolute mean response time
    ("rt-fail", ONLY_ABSOLUTE_RT, C(50, 0, 2001), None, "fail", "mean response 2001 ms > 2000 ms"),
    ("rt-at-limit", ONLY_ABSOLUTE_RT, C(50, 0, 2000), None, "pass", "mean response 2000 ms"),
    (
        "rt-off",
        {**ONLY_ABSOLUTE_RT, "max_mean_response_ms": None},
        C(50, 0, 99_999),
        None,
        "pass",
        "healthy",
    ),
    # relative mean response time: max(response_floor_ms, stable x factor)
    (
        "rt-vs-stable-fail",
        ONLY_RELATIVE_RT,
        C(50, 0, 301),
        C(50, 0, 100),
        "fail",
        "mean response 301 ms > 300 ms (3 x stable 100 ms)",
    ),
    ("rt-vs-stable-at-limit", ONLY_RELATIVE_RT, C(50, 0, 300), C(50, 0, 100), "pass", "healthy"),
    (
        "rt-vs-stable-fractional",
        {**ONLY_RELATIVE_RT, "max_response_vs_stable": 1.5, "response_floor_ms": 0},
        C(50, 0, 11),
        C(50, 0, 7),
        "fail",
        "mean response 11 ms > 10.5 ms (1.5 x stable 7 ms)",
    ),
    (
        "rt-floor-fail",
        ONLY_RELATIVE_RT,
        C(50, 0, 51),
        C(50, 0, 10),
        "fail",
        "mean response 51 ms > 50 ms (response floor; stable 10 ms)",
    ),
    ("rt-floor-at-limit", ONLY_RELATIVE_RT, C(50, 0, 50), C(50, 0, 10), "pass", "healthy"),
    ("rt-vs-stable-no-baseline", ONLY_RELATIVE_RT, C(50, 0, 1500), None, "pass", "healthy"),
    ("rt-vs-stable-thin-baseline", ONLY_RELATIVE_RT, C(50, 0, 1500), C(3, 0, 1), "pass", "healthy"),
    # everything on (the defaults)
    (
        "defaults-pass",
        {},
        C(200, 1, 120),
        C(800, 4, 100),
        "pass",
        "healthy: 200 requests, 5xx ratio 0.005, mean response 120 ms",
    ),
    (
        "defaults-every-rule-fails",
        {},
        C(200, 84, 2500),
        C(800, 2, 100),
        "fail",
        "5xx ratio 0.42 > 0.05 (84 of 200 requests); "
        "5xx ratio 0.42 > 0.01 (ratio floor; stable 0.0025): 84 of 200 requests, stable 2 of 800; "
        "mean response 2500 ms > 2000 ms; "
        "mean response 2500 ms > 300 ms (3 x stable 100 ms)",
    ),
]


@pytest.mark.parametrize(
    ("overrides", "target", "baseline", "outcome", "message"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_judge_rules(
    overrides: dict[str, Any],
    target: Counters,
    baseline: Counters | None,
    outcome: str,
    message: str,
) -> None:
    """Each rule's wait / pass / fail boundary, with the numbers in the message."""
    verdict = judge(Analysis(**overrides), target, baseline)
    assert verdict.outcome == outcome
    assert message in verdict.message


def test_readings_hold_every_number_and_threshold() -> None:
    """The readings carry the compared values, the thresholds, the limits and each rule's result."""
    verdict = judge(Analysis(), Counters(200, 9, 301), Counters(200, 4, 100))
    assert verdict.outcome == "fail"
    assert verdict.readings == {
        "source": "counters",
        "log": None,
        "baseline_log": None,
        "max_p50_response_ms": None,
        "max_p95_response_ms": None,
        "max_p99_response_ms": None,
        "max_p99_vs_stable": None,
        "p99_limit_ms_vs_stable": None,
        "requests": 200,
        "errors_5xx": 9,
        "ratio_5xx": 0.045,
        "mean_response_ms": 301,
        "baseline_requests": 200,
        "baseline_errors_5xx": 4,
        "baseline_ratio_5xx": 0.02,
        "baseline_mean_response_ms": 100,
        "min_requests": 20,
        "max_5xx_ratio": 0.05,
        "max_5xx_ratio_vs_stable": 2.0,
        "ratio_floor": 0.01,
        "max_mean_response_ms": 2000,
        "max_response_vs_stable": 3.0,
        "response_floor_ms": 50,
        "ratio_5xx_limit_vs_stable": 0.04,
        "response_limit_ms_vs_stable": 300.0,
        "checks": {
            "5xx_ratio": "pass",
            "5xx_ratio_vs_stable": "fail",
            "mean_response": "pass",
            "response_vs_stable": "fail",
            "p50_response": "off",
            "p95_response": "off",
            "p99_response": "off",
            "p99_vs_stable": "off",
        },
    }


def test_readings_say_which_rules_were_skipped() -> None:
    """Without a usable baseline the relative rules read "no baseline"; disabled ones "off"."""
    analysis = Analysis(max_mean_response_ms=None)
    verdict = judge(analysis, Counters(100, 0, 10), Counters(5, 0, 10))
    assert verdict.outcome == "pass"
    assert verdict.readings["checks"] == {
        "5xx_ratio": "pass",
        "5xx_ratio_vs_stable": "no baseline",
        "mean_response": "off",
        "response_vs_stable": "no baseline",
        "p50_response": "off",
        "p95_response": "off",
        "p99_response": "off",
        "p99_vs_stable": "off",
    }
    assert verdict.readings["ratio_5xx_limit_vs_stable"] is None


def test_waiting_verdict_still_reports_the_numbers() -> None:
    """A wait carries the request count and the threshold, and judges no rule yet."""
    verdict = judge(Analysis(), Counters(12, 1, 10), None)
    assert verdict.readings["requests"] == 12
    assert verdict.readings["min_requests"] == 20
    assert verdict.readings["baseline_requests"] is None
    assert verdict.readings["checks"] == {}


def test_message_shows_enough_digits_to_tell_value_from_limit() -> None:
    """A ratio just above its limit is printed with the digits that make the difference."""
    verdict = judge(Analysis(**ONLY_ABSOLUTE_5XX), Counters(100_000, 5001, 1), None)
    assert verdict.message == "5xx ratio 0.05001 > 0.05 (5001 of 100000 requests)"


def test_verdict_to_dict_is_plain_data() -> None:
    """A verdict becomes a dict the store and the API can save as JSON."""
    verdict = judge(Analysis(), Counters(3, 0, 1), None)
    assert verdict.to_dict() == {
        "outcome": "wait",
        "message": "waiting for data: 3/20 requests",
        "readings": verdict.readings,
    }
    assert isinstance(verdict, Verdict)


def _logged(times: list[int], errors: int = 0, every: int = 1) -> Counters:
    """Counters whose request log holds ``times`` (the last ``errors`` of them 5xx)."""
    recorder = Recorder(every)
    for index, ms in enumerate(times):
        recorder.add("b", 500 if index >= len(times) - errors else 200, ms)
    log = recorder.snapshot("b")
    # HAProxy's own counters disagree on purpose: the log's counts must win
    return Counters(len(times) + 7, 0, 10, log)


def test_p99_above_its_ceiling_fails_and_below_passes() -> None:
    """max_p99_response_ms judges the log's p99: 99 fast and 2 slow requests fail a 500 ms
    ceiling; the same ceiling passes when every request is fast."""
    slow = _logged([20] * 98 + [900] * 2)
    verdict = judge(Analysis(max_p99_response_ms=500), slow, None)
    assert verdict.outcome == "fail"
    assert re.search(r"p99 response (8[89]\d|9[01]\d) ms > 500 ms \(100 logged\)", verdict.message)
    assert verdict.readings["checks"]["p99_response"] == "fail"
    assert verdict.readings["log"]["p99_ms"] == pytest.approx(900, rel=MAX_RELATIVE_ERROR)
    fast = judge(Analysis(max_p99_response_ms=500), _logged([20] * 100), None)
    assert fast.outcome == "pass"
    assert fast.readings["checks"]["p99_response"] == "pass"


def test_p50_and_p95_ceilings() -> None:
    """p50 and p95 have their own ceilings, reported together when both fail."""
    times = list(range(1, 101))
    verdict = judge(Analysis(max_p50_response_ms=40, max_p95_response_ms=90), _logged(times), None)
    assert verdict.outcome == "fail"
    assert re.search(r"p50 response (49|50|51) ms > 40 ms", verdict.message)
    assert re.search(r"p95 response (9[3-7]) ms > 90 ms", verdict.message)


def test_exact_log_counts_replace_the_counters() -> None:
    """With every request logged, the 5xx ratio is the log's own count (source: log)."""
    verdict = judge(Analysis(max_5xx_ratio=0.05), _logged([10] * 100, errors=10), None)
    assert verdict.outcome == "fail"
    assert verdict.readings["source"] == "log"
    assert verdict.readings["requests"] == 100
    assert verdict.readings["errors_5xx"] == 10
    assert "10 of 100 requests" in verdict.message


def test_sampled_log_keeps_the_counters_for_counts() -> None:
    """A log sampled 1:10 judges quantiles, not counts: those stay HAProxy's."""
    verdict = judge(Analysis(max_p99_response_ms=500), _logged([10] * 100, every=10), None)
    assert verdict.outcome == "pass"
    assert verdict.readings["source"] == "counters"
    assert verdict.readings["requests"] == 107


def test_quantile_rule_without_log_data_waits() -> None:
    """A p99 ceiling with no log (or too few lines) never passes: the tick waits; a failing
    counter rule still fails."""
    waiting = judge(Analysis(max_p99_response_ms=500), Counters(100, 0, 10), None)
    assert waiting.outcome == "wait"
    assert "waiting for request-log data: 0/20" in waiting.message
    assert waiting.readings["checks"]["p99_response"] == "no log data"
    failing = judge(Analysis(max_p99_response_ms=500), Counters(100, 50, 10), None)
    assert failing.outcome == "fail"


def test_p99_vs_stable() -> None:
    """p99 above factor x stable's p99 (at least the floor) fails; no baseline log: skipped."""
    analysis = Analysis(max_p99_vs_stable=2.0, response_floor_ms=50)
    target, stable = _logged([300] * 100), _logged([100] * 100)
    verdict = judge(analysis, target, stable)
    assert verdict.outcome == "fail"
    assert "x stable" in verdict.message
    assert verdict.readings["p99_limit_ms_vs_stable"] == pytest.approx(200, rel=0.05)
    alone = judge(analysis, target, Counters(100, 0, 10))
    assert alone.readings["checks"]["p99_vs_stable"] == "no baseline"
    assert alone.outcome == "pass"


def test_quantile_thresholds_are_validated() -> None:
    """Ceilings are whole ms from 1 to an hour; the factor 1..1000."""
    with pytest.raises(ValidationError, match="max_p99_response_ms"):
        Analysis(max_p99_response_ms=0)
    with pytest.raises(ValidationError, match="max_p95_response_ms"):
        Analysis(max_p95_response_ms=3_600_001)
    with pytest.raises(ValidationError, match="max_p99_vs_stable"):
        Analysis(max_p99_vs_stable=0.5)
