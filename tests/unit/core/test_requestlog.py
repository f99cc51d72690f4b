"""Request-log histograms: bounded buckets, quantile error bounds, windows and totals."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prism.core.readings import Counters
from prism.core.requestlog import (
    BUCKETS,
    MAX_MS,
    MAX_RELATIVE_ERROR,
    Recorder,
    RequestLog,
    bucket_of,
    bucket_value,
)
from prism.errors import InvalidInput
from prism.release.analysis import delta


def exact_quantile(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def recorded(values: list[int], statuses: list[int] | None = None) -> RequestLog:
    recorder = Recorder()
    for index, ms in enumerate(values):
        recorder.add("shop.blue", statuses[index] if statuses else 200, ms)
    return recorder.snapshot("shop.blue")


def test_bucket_count_is_bounded_whatever_the_times() -> None:
    """Every time from 0 to far past an hour lands in one of BUCKETS buckets (under 400)."""
    seen = {bucket_of(ms) for ms in [*range(0, 5000), 10**6, MAX_MS, 10 * MAX_MS, 2**31]}
    assert max(seen) == BUCKETS - 1
    assert min(seen) == 0
    assert BUCKETS < 400


@given(st.integers(min_value=1, max_value=MAX_MS))
def test_bucket_value_is_within_the_relative_error(ms: int) -> None:
    """The value a bucket stands for is within MAX_RELATIVE_ERROR (2%) of every time in it."""
    value = bucket_value(bucket_of(ms))
    assert abs(value - ms) <= MAX_RELATIVE_ERROR * ms + 1e-9


@settings(max_examples=200)
@given(
    st.lists(st.integers(min_value=0, max_value=60_000), min_size=1, max_size=300),
    st.sampled_from([0.5, 0.9, 0.95, 0.99, 1.0]),
)
def test_quantile_is_within_the_error_of_the_exact_quantile(values: list[int], q: float) -> None:
    """p50/p95/p99 from buckets are within 2% of the exact nearest-rank quantile."""
    found = recorded(values).quantile(q)
    exact = exact_quantile(values, q)
    assert found is not None
    assert abs(found - exact) <= MAX_RELATIVE_ERROR * exact + 1e-9


def test_quantiles_of_a_known_spread() -> None:
    """1..1000 ms once each: p50 ~500, p95 ~950, p99 ~990, each within 2%."""
    log = recorded(list(range(1, 1001)))
    for q, exact in ((0.5, 500), (0.95, 950), (0.99, 990)):
        value = log.quantile(q)
        assert value is not None
        assert abs(value - exact) <= MAX_RELATIVE_ERROR * exact
    assert log.timed == 1000
    assert len(log.buckets) < 200


def test_counts_by_status_class() -> None:
    """Statuses count by class; a request without a status (-1) counts apart."""
    log = recorded([5, 5, 5, 5, 5], [200, 204, 503, 500, -1])
    assert log.classes == (1, 0, 2, 0, 0, 2)
    assert log.requests == 5
    assert log.errors_5xx == 2
    assert log.exact


def test_window_is_the_difference_of_two_snapshots() -> None:
    """now.minus(start) holds exactly the requests in between; plus() adds them back."""
    recorder = Recorder()
    rng = random.Random(7)
    for _ in range(200):
        recorder.add("b", 200, rng.randint(1, 500))
    start = recorder.snapshot("b")
    later = [rng.randint(1, 500) for _ in range(100)]
    for ms in later:
        recorder.add("b", 500, ms)
    window = recorder.snapshot("b").minus(start)
    assert window is not None
    assert window.requests == 100
    assert window.errors_5xx == 100
    assert window.buckets == recorded(later).buckets
    assert start.plus(window) == recorder.snapshot("b")


def test_a_snapshot_that_went_down_gives_no_window() -> None:
    """A recorder that restarted (counts lower than before) gives None, not a negative count."""
    before = recorded([10, 20, 30])
    after = recorded([10])
    assert after.minus(before) is None
    assert before.minus(recorded([10], [200])) is not None


def test_sampled_logs_are_not_exact_and_mixed_rates_take_the_coarser() -> None:
    """A log sampled 1:10 is not exact; two nodes at 1 and 10 add up as sampled 1:10."""
    sampled = RequestLog(every=10)
    assert not sampled.exact
    assert RequestLog().plus(sampled).every == 10
    assert RequestLog.total([RequestLog(), RequestLog()]).exact


def test_round_trip_through_plain_data() -> None:
    """to_dict / from_dict give the same log; malformed data raises InvalidInput."""
    log = recorded([1, 2, 300, 4000], [200, 404, 500, 502])
    assert RequestLog.from_dict(log.to_dict()) == log
    with pytest.raises(InvalidInput, match="malformed saved request log"):
        RequestLog.from_dict({"classes": [0] * 6})
    with pytest.raises(InvalidInput, match="classes must be 6 counts"):
        RequestLog.from_dict({"classes": [1], "buckets": {}})
    with pytest.raises(InvalidInput, match="bad request log bucket"):
        RequestLog.from_dict({"classes": [0] * 6, "buckets": {"9999": 1}})


def test_recorder_tracks_a_bounded_number_of_backends() -> None:
    """Past max_backends, new backends' lines are counted as overflow, never kept."""
    recorder = Recorder(max_backends=3)
    for n in range(10):
        recorder.add(f"b{n}", 200, 1)
    assert recorder.backends() == ["b0", "b1", "b2"]
    assert recorder.overflow == 7
    assert recorder.snapshot("b9").requests == 0
    with pytest.raises(InvalidInput, match="sampling must be 1 or more"):
        Recorder(every=0)


def test_quantile_of_an_empty_log_is_none() -> None:
    """No requests, no quantile; q outside (0, 1] raises."""
    assert RequestLog().quantile(0.99) is None
    with pytest.raises(InvalidInput, match="a quantile lies in"):
        recorded([1]).quantile(0)


def test_counters_carry_the_log_through_store_deltas_and_totals() -> None:
    """Counters keep their log in to_dict/from_dict, windows subtract it, fleets add it up."""
    start = Counters(100, 1, 20, recorded([10] * 100))
    now = Counters(150, 3, 25, recorded([10] * 100 + [400] * 50))
    assert Counters.from_dict(now.to_dict()) == now
    assert Counters.from_dict({"requests": 1, "errors_5xx": 0, "mean_response_ms": 1}).log is None
    window = delta(start, now)
    assert window is not None
    assert window.log is not None
    assert window.log.requests == 50
    assert window.log.quantile(0.5) == pytest.approx(400, rel=MAX_RELATIVE_ERROR)
    assert delta(Counters(1, 0, 1), now) == Counters(149, 3, 25)  # no log at the start
    both = Counters.total([now, now])
    assert both.log is not None
    assert both.log.requests == 300
    assert Counters.total([now, Counters(1, 0, 1)]).log is None
