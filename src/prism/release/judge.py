"""The statistical judge: target against stable, per metric, over the window's ticks. Pure.

The thresholds of :mod:`prism.release.analysis` look at one number per window.
The judge looks at the *distribution* of per-tick readings
(:func:`prism.release.window.series`): for each metric it asks a one-sided
Mann-Whitney U test (:mod:`prism.core.mannwhitney`) whether the target's ticks
are stochastically worse (larger) than the stable color's over the same
window, and it asks how much worse (the effect size):

* ``5xx_ratio``: each tick's 5xx share; the effect is the difference of the
  means, in ratio points, against ``max_5xx_increase``;
* ``response``: each tick's mean response time (HAProxy's moving average
  when the tick was read); the effect is the relative difference of the
  medians, against ``max_response_increase`` (0.2: 20% slower).

A metric **fails** only when both say so: ``p < alpha`` *and* an effect above
its threshold (a significant but negligible difference, which large samples
always find, passes; so does a large difference the samples cannot support).
A side with fewer than ``min_samples`` ticks that carried requests makes the
metric ``n/a``: not judged, neither passing nor failing. The **score** is the
share of judged metrics that pass, 0-100, shown while the step runs.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from prism.core.mannwhitney import mann_whitney_u
from prism.core.readings import Counters
from prism.release.plan import Judge

__all__ = ["Judgement", "judge_series"]


@dataclass(frozen=True, slots=True)
class Judgement:
    """The score (None: nothing judged), what failed, and every number per metric."""

    score: float | None
    failures: tuple[str, ...]
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"score": self.score, "failures": list(self.failures), "metrics": self.metrics}


def _metric(
    settings: Judge,
    target: Sequence[float],
    baseline: Sequence[float],
    effect: float | None,
    limit: float,
) -> dict[str, Any]:
    found: dict[str, Any] = {
        "target_ticks": len(target),
        "baseline_ticks": len(baseline),
        "limit": limit,
        "effect": effect,
        "p": None,
        "auc": None,
    }
    if min(len(target), len(baseline)) < settings.min_samples or effect is None:
        found["outcome"] = "n/a"
        return found
    test = mann_whitney_u(target, baseline, "greater")
    found["p"], found["auc"] = test.p, test.auc
    found["outcome"] = "fail" if test.p < settings.alpha and effect > limit else "pass"
    return found


def _relative(target: Sequence[float], baseline: Sequence[float]) -> float | None:
    if not target or not baseline:
        return None
    base = statistics.median(baseline)
    mine = statistics.median(target)
    if base <= 0:
        return 0.0 if mine <= 0 else float("inf")
    return mine / base - 1


def judge_series(
    settings: Judge, target: Sequence[Counters], baseline: Sequence[Counters]
) -> Judgement:
    """Judge per-tick deltas of the target against the baseline's; see the module docstring."""
    busy_t = [c for c in target if c.requests]
    busy_b = [c for c in baseline if c.requests]
    ratios_t = [c.ratio_5xx for c in busy_t]
    ratios_b = [c.ratio_5xx for c in busy_b]
    increase = (
        statistics.fmean(ratios_t) - statistics.fmean(ratios_b) if ratios_t and ratios_b else None
    )
    times_t = [float(c.mean_response_ms) for c in busy_t]
    times_b = [float(c.mean_response_ms) for c in busy_b]
    metrics = {
        "5xx_ratio": _metric(settings, ratios_t, ratios_b, increase, settings.max_5xx_increase),
        "response": _metric(
            settings, times_t, times_b, _relative(times_t, times_b), settings.max_response_increase
        ),
    }
    judged = [m for m in metrics.values() if m["outcome"] != "n/a"]
    score = None if not judged else 100 * sum(m["outcome"] == "pass" for m in judged) / len(judged)
    failures = []
    for name, m in metrics.items():
        if m["outcome"] != "fail":
            continue
        shown = f"+{m['effect']:.3g}" if name == "5xx_ratio" else f"+{m['effect']:.0%}"
        failures.append(
            f"judge: {name} worse than stable ({shown} > {m['limit']:g}, p={m['p']:.2g}, "
            f"{m['target_ticks']} vs {m['baseline_ticks']} ticks)"
        )
    return Judgement(score, tuple(failures), metrics)
