"""The sliding analysis window: one sample of counters per tick. Pure.

Every tick the engine reads the target's and the baseline's counters; the
machine appends them here as a :class:`~prism.release.record.Sample` and keeps
only the samples of the last ``window_ms`` (half a tick of slack absorbs timer
jitter), so the record stays bounded (``window_ms`` spans at most
:data:`~prism.release.plan.MAX_WINDOW_TICKS` ticks).

The window judged is the oldest kept sample to the newest: a fault shows in
the very next tick's reading, and ages out ``window_ms`` later. Counters that
went down (HAProxy reloaded) make every older sample useless: the window
starts again at the new sample.

:func:`series` turns the kept samples into per-tick deltas: the observations
the statistical judge (:mod:`prism.release.judge`) ranks.

:func:`judge_window` gives a tick's verdict: the thresholds over the sliding
window when it holds ``min_requests`` target requests, otherwise over the whole
step so far (a quiet canary still gathers its evidence), then the judge's.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from prism.core.readings import Counters
from prism.release.analysis import Verdict, delta, judge
from prism.release.judge import judge_series
from prism.release.plan import Analysis, Judge
from prism.release.record import Sample

__all__ = ["Span", "judge_window", "sample", "series", "slide", "span"]


@dataclass(frozen=True, slots=True)
class Span:
    """The window's deltas (None: no baseline over it) and how long it lasts, in seconds."""

    target: Counters
    baseline: Counters | None
    seconds: float


def sample(at: float, target: Counters, baseline: Counters | None) -> Sample:
    """The record's form of one tick's counters."""
    return Sample(
        at=at,
        target=target.to_dict(),
        baseline=None if baseline is None else baseline.to_dict(),
    )


def slide(
    samples: tuple[Sample, ...], new: Sample, window_ms: int, tick_ms: int
) -> tuple[Sample, ...]:
    """``samples`` with ``new`` appended and those older than the window dropped.

    All of them are dropped when ``new``'s target counters went down (a reset).
    """
    if samples:
        last = Counters.from_dict(samples[-1].target)
        if delta(last, Counters.from_dict(new.target)) is None:
            return (new,)
    horizon = new.at - (window_ms + tick_ms / 2) / 1000
    return (*(s for s in samples if s.at >= horizon), new)


def span(samples: tuple[Sample, ...]) -> Span | None:
    """The deltas from the oldest sample to the newest; None with fewer than two samples."""
    if len(samples) < 2:
        return None
    first, last = samples[0], samples[-1]
    target = delta(Counters.from_dict(first.target), Counters.from_dict(last.target))
    if target is None:
        return None
    baseline = None
    if first.baseline is not None and last.baseline is not None:
        baseline = delta(Counters.from_dict(first.baseline), Counters.from_dict(last.baseline))
    return Span(target, baseline, last.at - first.at)


def series(samples: tuple[Sample, ...], side: str) -> list[Counters]:
    """Per-tick deltas of ``side`` (``"target"`` or ``"baseline"``), oldest first.

    A tick whose counters are missing or went down is skipped.
    """
    out: list[Counters] = []
    for before, after in itertools.pairwise(samples):
        a = before.target if side == "target" else before.baseline
        b = after.target if side == "target" else after.baseline
        if a is None or b is None:
            continue
        moved = delta(Counters.from_dict(a), Counters.from_dict(b))
        if moved is not None:
            out.append(moved)
    return out


def judge_window(
    analysis: Analysis,
    samples: tuple[Sample, ...],
    step_target: Counters,
    step_baseline: Counters | None,
) -> Verdict:
    """The verdict of one tick: ``samples`` is the sliding window, ``step_*`` the deltas
    since the step began; the readings say which window was judged."""
    recent = span(samples)
    if recent is not None and recent.target.requests >= analysis.min_requests:
        verdict = judge(analysis, recent.target, recent.baseline)
        readings = {**verdict.readings, "window": "sliding", "window_s": round(recent.seconds, 3)}
    else:
        verdict = judge(analysis, step_target, step_baseline)
        readings = {**verdict.readings, "window": "step"}
    verdict = Verdict(verdict.outcome, verdict.message, readings)
    if analysis.judge is not None and verdict.outcome in ("pass", "fail"):
        verdict = _judged(analysis.judge, verdict, samples)
    return verdict


def _judged(settings: Judge, verdict: Verdict, samples: tuple[Sample, ...]) -> Verdict:
    """The thresholds' verdict with the statistical judge's score and failures added."""
    found = judge_series(settings, series(samples, "target"), series(samples, "baseline"))
    readings = {**verdict.readings, "judge": found.to_dict()}
    shown = "n/a" if found.score is None else f"{found.score:.0f}"
    if verdict.outcome == "fail":
        return Verdict("fail", verdict.message, readings)
    if found.failures:
        return Verdict("fail", "; ".join(found.failures), readings)
    return Verdict("pass", f"{verdict.message}; judge score {shown}", readings)
