"""Per-request measurements from HAProxy's request log, as bounded histograms. Pure.

HAProxy sends one log line per request (or one per ``every`` requests when
sampled) to Prism; each line names the backend, the status and the request's
active time (``%Ta``, ms: from the first byte of the request to the last byte
of the response). A :class:`Recorder` adds them up per backend into
:class:`RequestLog` values: cumulative since the recorder started, so a
window is the difference of two snapshots (:meth:`RequestLog.minus`), and the
logs of several nodes add up (:meth:`RequestLog.plus`).

Bounded memory, whatever the rate: a log holds counts by status class and
one count per *time bucket*, and there are at most :data:`BUCKETS` buckets
(log-spaced: bucket 0 holds 0 ms, bucket 1 holds 1 ms, bucket ``i`` the
times ``t`` with ``GROWTH**(i-2) < t <= GROWTH**(i-1)`` ms; times above
:data:`MAX_MS` count in the last bucket). A quantile is read as the
representative value of the bucket holding the nearest-rank quantile, so it
is within :data:`MAX_RELATIVE_ERROR` (2%) of the exact nearest-rank quantile
of the same requests (times up to :data:`MAX_MS`).

A recorder tracks at most :data:`MAX_BACKENDS` backends; lines naming more,
and lines that do not parse, are counted, never kept.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from prism.errors import InvalidInput

__all__ = [
    "BUCKETS",
    "GROWTH",
    "MAX_BACKENDS",
    "MAX_MS",
    "MAX_RELATIVE_ERROR",
    "Recorder",
    "RequestLog",
    "bucket_of",
    "bucket_value",
]

#: the ratio of one bucket's upper bound to the one below it
GROWTH: Final = 1.04
#: the largest time told apart from larger ones: an hour, in ms
MAX_MS: Final = 3_600_000
#: bucket i's upper bound: 0 ms for bucket 0, then GROWTH**(i-1) ms; the last reaches MAX_MS
_BOUNDS: Final = (0.0, *(GROWTH**i for i in range(math.ceil(math.log(MAX_MS, GROWTH)) + 1)))
#: how many time buckets one backend's log can hold, whatever the rate
BUCKETS: Final = len(_BOUNDS)
#: a quantile read from the buckets is within this share of the exact one
MAX_RELATIVE_ERROR: Final = (GROWTH - 1) / (GROWTH + 1)
#: backends one recorder tracks at most
MAX_BACKENDS: Final = 10_000
#: status classes: 0 for a request logged without a status, 1..5 for 1xx..5xx
_CLASSES: Final = 6


def bucket_of(ms: int) -> int:
    """The bucket a time of ``ms`` (>= 0) counts in."""
    if ms <= 0:
        return 0
    return min(bisect.bisect_left(_BOUNDS, ms), BUCKETS - 1)


def bucket_value(index: int) -> float:
    """The time bucket ``index`` stands for: the point of least relative error in it."""
    if index <= 0:
        return 0.0
    return 2 * _BOUNDS[index] / (GROWTH + 1)


def _status_class(status: int) -> int:
    return status // 100 if 100 <= status <= 599 else 0


@dataclass(frozen=True, slots=True)
class RequestLog:
    """One backend's logged requests: counts by status class and a histogram of times.

    ``classes[0]`` counts requests logged with no status (the client left first),
    ``classes[k]`` those answered ``kxx``. ``buckets`` maps a bucket index to its
    count (only buckets with requests); ``every`` is the sampling: one request in
    ``every`` is logged, so counts are exact only when it is 1.
    """

    classes: tuple[int, ...] = (0,) * _CLASSES
    buckets: Mapping[int, int] = field(default_factory=dict, hash=False)
    every: int = 1

    def __post_init__(self) -> None:
        if len(self.classes) != _CLASSES or any(
            isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in self.classes
        ):
            raise InvalidInput(f"request log classes must be {_CLASSES} counts >= 0")
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise InvalidInput(f"request log sampling must be 1 or more, not {self.every!r}")
        for index, count in self.buckets.items():
            if not 0 <= index < BUCKETS or isinstance(count, bool) or count < 1:
                raise InvalidInput(f"bad request log bucket {index!r}: {count!r}")

    @property
    def requests(self) -> int:
        """Requests logged (with sampling: one in ``every`` of those served)."""
        return sum(self.classes)

    @property
    def errors_5xx(self) -> int:
        return self.classes[5]

    @property
    def exact(self) -> bool:
        """Every request was logged: the counts are the requests' own, not a sample's."""
        return self.every == 1

    @property
    def timed(self) -> int:
        """Requests in the histogram (every logged one)."""
        return sum(self.buckets.values())

    def quantile(self, q: float) -> float | None:
        """The nearest-rank ``q``-quantile of the times, in ms; None without requests.

        Within :data:`MAX_RELATIVE_ERROR` of the exact nearest-rank quantile.
        """
        if not 0 < q <= 1:
            raise InvalidInput(f"a quantile lies in (0, 1], not {q!r}")
        total = self.timed
        if total == 0:
            return None
        rank = max(1, math.ceil(q * total))
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                return bucket_value(index)
        raise AssertionError("unreachable: the ranks add up to the total")

    def at_most(self, bounds_ms: Iterable[float]) -> list[int]:
        """Requests of at most each bound (ms), for a coarse cumulative histogram such as
        Prometheus's; a bucket counts below a bound when the value it stands for does."""
        ordered = sorted(self.buckets.items())
        out = []
        for bound in bounds_ms:
            out.append(sum(c for i, c in ordered if bucket_value(i) <= bound))
        return out

    def total_ms(self) -> float:
        """The sum of the times, from each bucket's value (within 2%)."""
        return sum(bucket_value(i) * c for i, c in self.buckets.items())

    def minus(self, earlier: RequestLog) -> RequestLog | None:
        """The requests logged since ``earlier``; None when ``earlier`` is not an
        earlier snapshot of the same log (a count went down: the recorder restarted)."""
        if earlier.every != self.every:
            return None
        classes = tuple(a - b for a, b in zip(self.classes, earlier.classes, strict=True))
        if any(c < 0 for c in classes):
            return None
        buckets: dict[int, int] = {}
        for index in set(self.buckets) | set(earlier.buckets):
            count = self.buckets.get(index, 0) - earlier.buckets.get(index, 0)
            if count < 0:
                return None
            if count:
                buckets[index] = count
        return RequestLog(classes, buckets, self.every)

    def plus(self, other: RequestLog) -> RequestLog:
        """Two logs as one (two nodes', say); sampled at the coarser of their rates."""
        buckets = dict(self.buckets)
        for index, count in other.buckets.items():
            buckets[index] = buckets.get(index, 0) + count
        classes = tuple(a + b for a, b in zip(self.classes, other.classes, strict=True))
        return RequestLog(classes, buckets, max(self.every, other.every))

    @classmethod
    def total(cls, parts: Iterable[RequestLog]) -> RequestLog:
        out = cls()
        for part in parts:
            out = out.plus(part)
        return out

    def summary(self) -> dict[str, Any]:
        """Counts and p50/p95/p99 (ms, rounded to 0.1), for readings and status."""
        return {
            "requests": self.requests,
            "errors_5xx": self.errors_5xx,
            "every": self.every,
            "p50_ms": _round(self.quantile(0.5)),
            "p95_ms": _round(self.quantile(0.95)),
            "p99_ms": _round(self.quantile(0.99)),
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the store (bucket indexes as strings, for JSON)."""
        return {
            "classes": list(self.classes),
            "buckets": {str(i): c for i, c in sorted(self.buckets.items())},
            "every": self.every,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RequestLog:
        """The log :meth:`to_dict` saved; :class:`~prism.errors.InvalidInput` if malformed."""
        try:
            buckets = {int(i): c for i, c in dict(data["buckets"]).items()}
            return cls(tuple(data["classes"]), buckets, data.get("every", 1))
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"malformed saved request log: {exc}") from exc


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


class Recorder:
    """Adds logged requests up per backend; :meth:`snapshot` gives the totals so far.

    Mutable and not thread-safe: one event loop feeds it and reads it.
    """

    def __init__(self, every: int = 1, max_backends: int = MAX_BACKENDS) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise InvalidInput(f"request log sampling must be 1 or more, not {every!r}")
        self.every = every
        self.max_backends = max_backends
        self._classes: dict[str, list[int]] = {}
        self._buckets: dict[str, list[int]] = {}
        #: lines that did not parse, and lines for backends past the limit
        self.malformed = 0
        self.overflow = 0
        self.lines = 0

    def add(self, backend: str, status: int, ms: int) -> None:
        """Count one request of ``backend``: its status (-1: none) and time in ms."""
        classes = self._classes.get(backend)
        if classes is None:
            if len(self._classes) >= self.max_backends:
                self.overflow += 1
                return
            classes = self._classes[backend] = [0] * _CLASSES
            self._buckets[backend] = [0] * BUCKETS
        self.lines += 1
        classes[_status_class(status)] += 1
        self._buckets[backend][bucket_of(ms)] += 1

    def backends(self) -> list[str]:
        return sorted(self._classes)

    def snapshot(self, backend: str) -> RequestLog:
        """``backend``'s requests so far (an empty log for one never seen)."""
        classes = self._classes.get(backend)
        if classes is None:
            return RequestLog(every=self.every)
        buckets = {i: c for i, c in enumerate(self._buckets[backend]) if c}
        return RequestLog(tuple(classes), buckets, self.every)
