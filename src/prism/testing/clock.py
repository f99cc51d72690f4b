"""A :class:`prism.types.Clock` for tests: time moves only when something sleeps."""

from __future__ import annotations

import asyncio

__all__ = ["FakeClock"]


class FakeClock:
    """Wall and monotonic time that advance only by :meth:`sleep` and :meth:`advance`.

    ``sleep`` records the duration, moves time forward at once and yields to
    the other tasks, so code that waits out a 30 s pause runs in microseconds
    and deterministically. ``now`` is unix time; ``monotonic`` starts at
    ``start``.
    """

    def __init__(self, start: float = 100.0, *, epoch: float = 1_700_000_000.0) -> None:
        self.t = start
        self.epoch = epoch
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.epoch + self.t

    def monotonic(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += max(0.0, seconds)
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        """Move time forward without sleeping."""
        self.t += seconds
