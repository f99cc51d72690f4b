"""Judgements a node makes over its own HAProxy's readings: slow servers, tripped circuits. Pure.

**Slow-server weights.** Each reading of a server is a :class:`Sample`: its
moving-average response time (``rtime``) and its request and response
counters. HAProxy 2.8 keeps ``rtime`` as the plain mean of a server's first
512 responses, then as a sliding average: each response moves it 1/512 of the
way to its own time (``sum - sum/512 + t``; measured on the 2.8.25 binary: the
figures below are what it reported). From two readings ``k`` responses apart,
:func:`window_mean` recovers the mean of those ``k`` responses::

    A2 = A1 * a**k + mean * (1 - a**k),   a = 1 - 1/512

so a judgement sees what the server did during the window, not the last 512
responses (at 10% weight that is most of a minute of traffic, which made
recovery crawl). :func:`judge_color` then compares each server of one color
with the median of the color's *other* ready servers (with two servers, a
median that includes the slow one could never be exceeded) and steps weights
(:class:`~prism.core.model.SlowServers`): down one ``step`` per window while
slow, to ``floor``; up one ``step`` per ``recover_after`` once fast again.
A server with fewer than ``min_requests`` responses in its window is not
judged (a server Prism lowered, and so sent fewer requests, has its window
stretched back to its last weight change to find them), nor is a color with
a single judged server: its only server is never lowered.

**Circuit trips.** HAProxy counts each action of its breaker on a server
(``hanafail``). :func:`watch_trips` turns increases of that counter into
episodes: ``tripped`` when the first one comes, ``closed`` once the server has
been ready with no new trip for ``quiet`` seconds.

Times are monotonic seconds given by the caller; nothing here reads a clock.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal

from prism.core.model import SlowServers

__all__ = [
    "FULL_WEIGHT",
    "RTIME_SAMPLES",
    "Sample",
    "Track",
    "TripEvent",
    "Trips",
    "WeightChange",
    "judge_color",
    "restore",
    "watch_trips",
    "window_mean",
]

#: the weight Prism renders on every server, so a weight reads as a percentage
FULL_WEIGHT = 100
#: HAProxy 2.8's TIME_STATS_SAMPLES: how many responses its ``rtime`` average spans
RTIME_SAMPLES = 512
#: how many windows of readings a track keeps
_HISTORY_WINDOWS = 10


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading of one server: when (monotonic s), HAProxy's ``rtime`` (ms), its
    ``req_tot`` and responses (``hrsp_*`` summed), and whether it is ready."""

    at: float
    rtime_ms: int
    requests: int
    responses: int
    ready: bool = True


@dataclass(frozen=True, slots=True)
class Track:
    """What the judge remembers of one server between readings.

    ``weight`` is the percentage Prism set (100: untouched); ``changed_at`` when
    Prism last changed it; ``fast_since`` since when it has been judged fast
    while lowered; ``reason`` why it is lowered.
    """

    samples: tuple[Sample, ...] = ()
    weight: int = FULL_WEIGHT
    changed_at: float | None = None
    fast_since: float | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class WeightChange:
    """Set ``server``'s weight from ``old`` to ``new`` percent, because of ``reason``."""

    server: str
    old: int
    new: int
    reason: str


def window_mean(old: Sample, new: Sample) -> float | None:
    """The mean response time (ms) of the responses between two readings of a server,
    recovered from HAProxy's average (see the module docstring); None when there were
    none, or the counters went back (HAProxy restarted or reloaded in between)."""
    responses = new.responses - old.responses
    if responses <= 0 or new.requests <= old.requests:
        return None
    if new.requests <= RTIME_SAMPLES:
        # still the plain mean of every response so far, over req_tot
        total = new.rtime_ms * new.requests - old.rtime_ms * old.requests
        return max(0.0, total / (new.requests - old.requests))
    kept = (1 - 1 / RTIME_SAMPLES) ** responses
    return max(0.0, (new.rtime_ms - old.rtime_ms * kept) / (1 - kept))


def _with_sample(track: Track, sample: Sample, history: float) -> Track:
    samples = track.samples
    if samples and (sample.requests < samples[-1].requests or sample.at <= samples[-1].at):
        samples = ()  # counters reset (a reload): what came before no longer adds up
    kept = tuple(s for s in samples if s.at >= sample.at - history)
    return replace(track, samples=(*kept, sample))


def _judged_mean(track: Track, settings: SlowServers) -> float | None:
    """The mean over the last window, or None: too young, or too quiet. A server Prism
    lowered gets fewer requests because of it, so its window stretches back (to its
    last change at most) until it holds ``min_requests`` responses."""
    if not track.samples:
        return None
    new = track.samples[-1]
    window = settings.window_ms / 1000
    older = [s for s in track.samples[:-1] if s.at <= new.at - window]
    if not older:
        return None
    if track.changed_at is not None:
        since = track.changed_at
        stretched = [s for s in older[:-1] if s.at >= since]
        older = [*stretched, older[-1]]
    else:
        older = older[-1:]
    for old in reversed(older):
        if new.responses - old.responses >= settings.min_requests:
            return window_mean(old, new)
    return None


def judge_color(
    settings: SlowServers,
    now: float,
    samples: Mapping[str, Sample],
    tracks: Mapping[str, Track],
) -> tuple[dict[str, Track], list[WeightChange]]:
    """One judgement of one color's servers (``samples``: this reading, by server).

    Returns every server's new track (servers without a sample are forgotten)
    and the weight changes to make; see the module docstring.
    """
    history = _HISTORY_WINDOWS * settings.window_ms / 1000
    updated = {
        name: _with_sample(tracks.get(name, Track()), sample, history)
        for name, sample in samples.items()
    }
    means = {
        name: mean
        for name, track in updated.items()
        if samples[name].ready and (mean := _judged_mean(track, settings)) is not None
    }
    changes: list[WeightChange] = []
    window = settings.window_ms / 1000
    recover = settings.recover_after_ms / 1000
    for name, track in updated.items():
        others = [mean for other, mean in means.items() if other != name]
        mean = means.get(name)
        if mean is None or not others:
            continue
        median = statistics.median(others)
        figures = f"{mean:.0f} ms vs {median:.0f} ms median"
        if mean > max(settings.factor * median, settings.min_slow_ms):
            reason = f"slow: {figures}"
            track = replace(track, fast_since=None)
            settled = track.changed_at is None or now - track.changed_at >= window
            if track.weight > settings.floor and settled:
                new = max(settings.floor, track.weight - settings.step)
                changes.append(WeightChange(name, track.weight, new, reason))
                track = replace(track, weight=new, changed_at=now)
            if track.weight < FULL_WEIGHT:
                track = replace(track, reason=reason)
            updated[name] = track
        elif track.weight < FULL_WEIGHT:
            reason = f"fast again: {figures}"
            fast_since = track.fast_since if track.fast_since is not None else now
            track = replace(track, fast_since=fast_since, reason=reason)
            changed = track.changed_at
            since_change = now - changed if changed is not None else float("inf")
            if now - fast_since >= recover and since_change >= recover:
                new = min(FULL_WEIGHT, track.weight + settings.step)
                changes.append(WeightChange(name, track.weight, new, reason))
                track = replace(
                    track, weight=new, changed_at=now, reason=reason if new < FULL_WEIGHT else ""
                )
            updated[name] = track
    return updated, changes


def restore(tracks: Mapping[str, Track], reason: str) -> list[WeightChange]:
    """Every lowered server back to its full weight (the feature turned off)."""
    return [
        WeightChange(name, track.weight, FULL_WEIGHT, reason)
        for name, track in sorted(tracks.items())
        if track.weight != FULL_WEIGHT
    ]


@dataclass(frozen=True, slots=True)
class Trips:
    """The breaker's record of one server: ``hanafail`` as last read and, while an
    episode is open, when it began, how many trips it holds and when the last came."""

    seen: int = 0
    open_since: float | None = None
    count: int = 0
    last_at: float | None = None


@dataclass(frozen=True, slots=True)
class TripEvent:
    """A breaker episode began (``tripped``) or ended (``closed``) on ``server``."""

    server: str
    kind: Literal["tripped", "closed"]
    trips: int
    why: str = ""


def watch_trips(
    now: float,
    readings: Mapping[str, tuple[int, bool, str]],
    previous: Mapping[str, Trips],
    *,
    quiet: float,
) -> tuple[dict[str, Trips], list[TripEvent]]:
    """Follow ``hanafail`` per server (``readings``: server -> (hanafail, ready, why)).

    The first reading of a server only sets what was seen; a counter that went
    back (a reload starts counting again) likewise. Servers without a reading are
    forgotten.
    """
    out: dict[str, Trips] = {}
    events: list[TripEvent] = []
    for name, (count, ready, why) in readings.items():
        before = previous.get(name)
        if before is None or count < before.seen:
            out[name] = Trips(seen=count)
            continue
        trips = before
        if count > before.seen:
            added = count - before.seen
            if trips.open_since is None:
                events.append(TripEvent(name, "tripped", added, why))
                trips = Trips(seen=count, open_since=now, count=added, last_at=now)
            else:
                trips = replace(trips, seen=count, count=trips.count + added, last_at=now)
        elif (
            trips.open_since is not None
            and ready
            and trips.last_at is not None
            and now - trips.last_at >= quiet
        ):
            events.append(TripEvent(name, "closed", trips.count))
            trips = Trips(seen=count)
        out[name] = trips
    return out, events
