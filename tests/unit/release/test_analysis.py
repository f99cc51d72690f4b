"""The analysis judge: windows across resets, and pass/fail/wait rules."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prism.core.readings import Counters
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
