"""Token buckets: at most ``rate`` changes a second per key, after a ``burst``.

Pure arithmetic over a monotonic clock the caller passes in; the API keeps one
bucket per bearer token (:mod:`prism.api.auth`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["RateLimit", "RateLimiter", "parse_rate"]

_RATE = re.compile(r"(\d{1,6}(?:\.\d{1,3})?)/(s|m|h)", re.ASCII)
_PER = {"s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class RateLimit:
    """``rate`` tokens a second, at most ``burst`` saved up."""

    rate: float
    burst: int

    def __post_init__(self) -> None:
        if not self.rate > 0 or self.burst < 1:
            raise ValueError("a rate limit needs a rate > 0 and a burst >= 1")


def parse_rate(text: str, burst: int | None = None) -> RateLimit | None:
    """``20/s``, ``600/m`` or ``off``; the burst defaults to two seconds' worth (at least 1)."""
    if text.strip().lower() == "off":
        return None
    match = _RATE.fullmatch(text.strip())
    if match is None:
        raise ValueError("a rate limit is N/s, N/m or N/h (e.g. 20/s), or 'off'")
    rate = float(match.group(1)) / _PER[match.group(2)]
    if rate <= 0:
        raise ValueError("a rate limit must be above 0 (or 'off')")
    return RateLimit(rate, burst if burst is not None else max(1, round(2 * rate)))


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class RateLimiter:
    """One token bucket per key; :meth:`take` says how long to wait, 0 when allowed."""

    limit: RateLimit
    clock: Callable[[], float]
    #: buckets idle long enough to be full again are dropped past this many keys
    max_keys: int = 10_000
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def take(self, key: str) -> float:
        """Spend one token of ``key``'s bucket if it has one (0.0), else the seconds
        until it will have one (nothing is spent)."""
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._prune(now)
            bucket = self._buckets[key] = _Bucket(float(self.limit.burst), now)
        bucket.tokens = min(
            float(self.limit.burst), bucket.tokens + (now - bucket.at) * self.limit.rate
        )
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.limit.rate

    def _prune(self, now: float) -> None:
        full = self.limit.burst / self.limit.rate
        for key in [k for k, b in self._buckets.items() if now - b.at >= full]:
            del self._buckets[key]
