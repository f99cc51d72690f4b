"""Wait for something in a test by polling it against a deadline, not by sleeping.

A test that needs something to happen first (a server to come up, a state to
change, a file to appear, a process to exit, a watch to park) asks for it
again and again until it holds or the deadline passes, instead of sleeping a
guessed amount and hoping::

    status = wait_for(
        lambda: server.api("GET", "/apps/shop").json(),
        until=lambda s: s["active"] == "green",
        timeout=10,
        what="shop to serve green",
    )
    await eventually(lambda: supervisor.pid != old, timeout=10, what="a new master")

:func:`wait_for` is for synchronous code, :func:`eventually` for a running
event loop (its probe may be a plain function or return an awaitable). Both
return the probe's first value that satisfies ``until`` (by default: the first
truthy value), so the test can go on with what it waited for. When the
deadline passes they raise :class:`AssertionError` that names what was awaited
and the last value (or error) seen, so a failure explains itself.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

__all__ = ["eventually", "wait_for"]

T = TypeVar("T")

#: How much of the last value a timeout message shows.
_SHOWN = 2000


def _truthy(value: object) -> bool:
    return bool(value)


def _check_times(timeout: float, interval: float) -> None:
    if not (isinstance(timeout, int | float) and math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
    if not (isinstance(interval, int | float) and math.isfinite(interval) and interval > 0):
        raise ValueError(f"interval must be a positive number of seconds, not {interval!r}")


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else f"{text[:_SHOWN]}... ({len(text)} characters)"


def _gave_up(what: str, timeout: float, tries: int, last: str) -> AssertionError:
    return AssertionError(
        f"gave up waiting for {what} after {timeout:g} s ({tries} tries); last seen: {last}"
    )


def wait_for(
    probe: Callable[[], T],
    *,
    timeout: float,
    interval: float = 0.05,
    until: Callable[[T], object] = _truthy,
    what: str = "the condition",
    ignore: tuple[type[Exception], ...] = (),
) -> T:
    """Call ``probe`` every ``interval`` seconds until ``until(value)`` holds; return that value.

    ``probe`` is called at once, then after each pause, and once more at the
    deadline, so a condition that becomes true just in time still counts. An
    exception of a type in ``ignore`` (say, a connection refused while a
    server starts) counts as "not yet"; any other exception propagates at
    once. After ``timeout`` seconds it raises :class:`AssertionError` saying
    ``what`` was awaited and the last value or exception seen.
    """
    _check_times(timeout, interval)
    deadline = time.monotonic() + timeout
    tries = 0
    last = "nothing (the probe never ran)"
    while True:
        tries += 1
        try:
            value = probe()
        except ignore as exc:
            last = f"it raised {_shown(exc)}"
        else:
            if until(value):
                return value
            last = _shown(value)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _gave_up(what, timeout, tries, last)
        time.sleep(min(interval, remaining))


@overload
async def eventually(
    probe: Callable[[], Awaitable[T]],
    *,
    timeout: float,  # noqa: ASYNC109 (the deadline is the point; see the implementation)
    interval: float = ...,
    until: Callable[[T], object] = ...,
    what: str = ...,
    ignore: tuple[type[Exception], ...] = ...,
) -> T: ...


@overload
async def eventually(
    probe: Callable[[], T],
    *,
    timeout: float,  # noqa: ASYNC109
    interval: float = ...,
    until: Callable[[T], object] = ...,
    what: str = ...,
    ignore: tuple[type[Exception], ...] = ...,
) -> T: ...


async def eventually(
    probe: Callable[[], object],
    *,
    # Not asyncio.timeout() around the call: on the deadline this names what was
    # awaited and the last value seen, which a bare TimeoutError cannot.
    timeout: float,  # noqa: ASYNC109
    interval: float = 0.05,
    until: Callable[[Any], object] = _truthy,
    what: str = "the condition",
    ignore: tuple[type[Exception], ...] = (),
) -> object:
    """The event-loop form of :func:`wait_for`: pauses with ``asyncio.sleep``.

    ``probe`` may be a plain function or return an awaitable (an ``async def``
    or a lambda calling one); an awaited probe that is still running at the
    deadline is cancelled and counts as a timeout. Everything else is as in
    :func:`wait_for`: the first value ``until`` accepts is returned, exceptions
    in ``ignore`` mean "not yet", and the deadline raises :class:`AssertionError`
    naming ``what`` and the last value seen.
    """
    _check_times(timeout, interval)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    tries = 0
    last = "nothing (the probe never ran)"
    while True:
        tries += 1
        try:
            value = probe()
            if inspect.isawaitable(value):
                value = await _bounded(value, max(deadline - loop.time(), interval))
        except _ProbeTimedOut:
            raise _gave_up(what, timeout, tries, f"{last}, then a probe still running") from None
        except ignore as exc:
            last = f"it raised {_shown(exc)}"
        else:
            if until(value):
                return value
            last = _shown(value)
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise _gave_up(what, timeout, tries, last)
        await asyncio.sleep(min(interval, remaining))


class _ProbeTimedOut(Exception):
    """An awaited probe outlived the deadline (told apart from its own TimeoutError)."""


async def _bounded(awaitable: Awaitable[object], seconds: float) -> object:
    """Await ``awaitable`` for at most ``seconds``; past that raise :class:`_ProbeTimedOut`."""
    scope = asyncio.timeout(seconds)
    try:
        async with scope:
            return await awaitable
    except TimeoutError:
        if scope.expired():
            raise _ProbeTimedOut from None
        raise
