"""The polling helpers tests wait with: the value they return, and what a timeout says."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from prism.testing.wait import eventually, wait_for


def counter(start: int = 0) -> Callable[[], int]:
    """A probe that returns start, start + 1, ... one more each call."""
    calls = iter(range(start, 1_000_000))
    return lambda: next(calls)


def test_wait_for_returns_the_first_value_that_holds() -> None:
    """The value until() accepted comes back, after as many polls as it took."""
    assert wait_for(counter(), until=lambda n: n >= 3, timeout=5, interval=0.001) == 3


def test_wait_for_default_until_is_truthiness() -> None:
    """Without until, the first truthy value is returned."""
    values = iter([None, 0, "", "ready"])
    assert wait_for(lambda: next(values), timeout=5, interval=0.001) == "ready"


def test_wait_for_does_not_sleep_when_already_true() -> None:
    """A condition that already holds returns at once."""
    started = time.monotonic()
    assert wait_for(lambda: True, timeout=5, interval=1) is True
    assert time.monotonic() - started < 0.5


def test_wait_for_timeout_names_what_and_the_last_value() -> None:
    """Past the deadline: AssertionError with what was awaited and the last value seen."""
    started = time.monotonic()
    pattern = r"gave up waiting for the answer after 0\.2 s"
    with pytest.raises(AssertionError, match=pattern) as caught:
        wait_for(
            lambda: {"phase": "canary"},
            until=lambda s: s["phase"] == "done",
            timeout=0.2,
            interval=0.02,
            what="the answer",
        )
    assert 0.2 <= time.monotonic() - started < 1.0
    assert "last seen: {'phase': 'canary'}" in str(caught.value)


def test_wait_for_ignores_only_the_named_errors() -> None:
    """An ignored error means "not yet" and is reported; another error propagates at once."""
    attempts = iter([ConnectionRefusedError("refused"), ConnectionRefusedError("refused"), 7])

    def probe() -> int:
        item = next(attempts)
        if isinstance(item, Exception):
            raise item
        return item

    assert wait_for(probe, timeout=5, interval=0.001, ignore=(ConnectionError,)) == 7
    with pytest.raises(AssertionError, match=r"it raised ConnectionRefusedError\('refused'\)"):
        wait_for(probe_refused, timeout=0.1, interval=0.01, ignore=(OSError,))
    with pytest.raises(ZeroDivisionError, match="by zero"):
        wait_for(lambda: 1 // 0, timeout=5, ignore=(OSError,))


def probe_refused() -> int:
    """A server that is never up."""
    raise ConnectionRefusedError("refused")


def test_wait_for_shortens_a_long_last_value() -> None:
    """A huge last value is cut in the message, which says how long it was."""
    with pytest.raises(AssertionError, match=r"\.\.\. \(10002 characters\)"):
        wait_for(lambda: "x" * 10_000, until=lambda _: False, timeout=0.05, interval=0.01)


@pytest.mark.parametrize(
    ("timeout", "interval", "refused"),
    [
        (0, 0.05, "timeout must be a positive number of seconds, not 0"),
        (-1, 0.05, "timeout must be a positive number of seconds, not -1"),
        (float("nan"), 0.05, "timeout must be a positive number of seconds, not nan"),
        (1, 0, "interval must be a positive number of seconds, not 0"),
    ],
)
def test_bad_times_are_refused(timeout: float, interval: float, refused: str) -> None:
    """A deadline or pause that is not a positive number is a mistake in the test."""
    with pytest.raises(ValueError, match=refused):
        wait_for(lambda: True, timeout=timeout, interval=interval)


async def test_eventually_takes_plain_and_awaitable_probes() -> None:
    """A sync probe and an async one are both polled; the accepted value is returned."""
    count = counter()
    assert await eventually(count, until=lambda n: n == 2, timeout=5, interval=0.001) == 2

    async def later() -> int:
        await asyncio.sleep(0)
        return count()

    assert await eventually(later, until=lambda n: n >= 5, timeout=5, interval=0.001) == 5


async def test_eventually_sees_a_change_made_by_another_task() -> None:
    """The pause yields to the loop, so another task can make the condition true."""
    flag = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, flag.set)
    assert await eventually(flag.is_set, timeout=5, interval=0.01, what="the flag") is True


async def test_eventually_timeout_names_what_and_the_last_value() -> None:
    """Past the deadline it raises AssertionError like wait_for."""
    pattern = r"gave up waiting for pid 7 to go after 0\.1 s"
    with pytest.raises(AssertionError, match=pattern) as caught:
        await eventually(lambda: 7, until=lambda pid: pid != 7, timeout=0.1, what="pid 7 to go")
    assert str(caught.value).endswith("last seen: 7")


async def test_eventually_bounds_a_probe_that_never_answers() -> None:
    """An awaited probe still running at the deadline is cancelled and reported."""
    cancelled = asyncio.Event()

    async def hangs() -> bool:
        try:
            await asyncio.sleep(3600)  # not a wait: a probe that never answers
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return True

    started = time.monotonic()
    with pytest.raises(AssertionError, match="then a probe still running"):
        await eventually(hangs, timeout=0.1, interval=0.01, what="an answer")
    assert time.monotonic() - started < 1.0
    assert cancelled.is_set()


async def test_eventually_keeps_a_probes_own_timeout_error_apart() -> None:
    """A TimeoutError the probe raises itself is its error, not the deadline."""

    async def times_out() -> bool:
        raise TimeoutError("the probe's own")

    with pytest.raises(TimeoutError, match="the probe's own"):
        await eventually(times_out, timeout=5)
    with pytest.raises(AssertionError, match=r"it raised TimeoutError\(\"the probe's own\"\)"):
        await eventually(times_out, timeout=0.05, interval=0.01, ignore=(TimeoutError,))
