"""Token buckets over a clock the test moves."""

from __future__ import annotations

import pytest

from prism.api.ratelimit import RateLimit, RateLimiter, parse_rate


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_the_rate() -> None:
    """burst changes at once, then one per 1/rate seconds; a refusal spends nothing."""
    clock = Clock()
    limiter = RateLimiter(RateLimit(rate=2.0, burst=3), clock)
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == pytest.approx(0.5)
    assert limiter.take("a") == pytest.approx(0.5)
    clock.now += 0.5
    assert limiter.take("a") == 0.0
    assert limiter.take("b") == 0.0  # every key has its own bucket
    clock.now += 60
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]  # full again, no more


def test_idle_buckets_are_dropped_past_max_keys() -> None:
    """Keys whose buckets refilled are forgotten once there are too many."""
    clock = Clock()
    limiter = RateLimiter(RateLimit(rate=1.0, burst=1), clock, max_keys=2)
    limiter.take("a")
    limiter.take("b")
    clock.now += 5
    limiter.take("c")
    assert set(limiter._buckets) == {"c"}


@pytest.mark.parametrize(
    ("text", "rate", "burst"),
    [("20/s", 20.0, 40), ("600/m", 10.0, 20), ("1/h", 1 / 3600, 1), ("0.5/s", 0.5, 1)],
)
def test_parse_rate(text: str, rate: float, burst: int) -> None:
    """N/s, N/m, N/h; the burst defaults to two seconds' worth, at least 1."""
    limit = parse_rate(text)
    assert limit is not None
    assert (limit.rate, limit.burst) == (pytest.approx(rate), burst)
    assert parse_rate(text, 7) == RateLimit(limit.rate, 7)


@pytest.mark.parametrize("text", ["20", "20/d", "-1/s", "0/s", "fast", ""])
def test_parse_rate_refuses_nonsense(text: str) -> None:
    """Anything else is refused with the accepted forms."""
    with pytest.raises(ValueError, match=r"N/s|above 0"):
        parse_rate(text)


def test_off_means_unlimited() -> None:
    assert parse_rate("off") is None
