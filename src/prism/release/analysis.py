"""Judging a release from HAProxy's counters: pass, fail, or wait for data. Pure.

The engine reads a backend's counters at the start of an analysis window and
at every tick, and judges the *window*: the counters now minus the counters at
the start. It judges the target color's backend, and compares it with the
baseline — the color traffic moves from — over the same window.

The counters are :class:`~prism.core.readings.Counters`; what HAProxy's
columns mean is in :mod:`prism.haproxy.readouts`.

The rules of :func:`judge`, over window deltas, in this order:

1. fewer than ``min_requests`` target requests: **wait** (never pass, never
   fail: a handful of requests proves nothing either way);
2. 5xx ratio (``errors_5xx / requests``) above ``max_5xx_ratio``: fail;
3. with ``max_5xx_ratio_vs_stable`` set and a baseline of at least
   ``min_requests`` requests: 5xx ratio above
   ``max(ratio_floor, baseline ratio x factor)``: fail. The floor keeps a
   near-perfect baseline from turning one error into a failure;
4. with ``max_mean_response_ms`` set: mean response above it: fail;
5. with ``max_response_vs_stable`` set and a baseline of at least
   ``min_requests`` requests: mean response above
   ``max(response_floor_ms, baseline mean x factor)``: fail;
6. with ``max_p50_response_ms``, ``max_p95_response_ms`` or
   ``max_p99_response_ms`` set: that quantile of the window's request log
   above it: fail; with ``max_p99_vs_stable`` and a baseline log of at least
   ``min_requests`` lines: p99 above ``max(response_floor_ms, stable p99 x
   factor)``: fail. A quantile rule whose window holds fewer than
   ``min_requests`` log lines cannot pass: the tick **waits** (unless another
   rule failed);
7. otherwise **pass**.

When the window carries a request log with every request in it (no
sampling), its exact counts replace the counters' for rules 1-3 (readings say
``"source": "log"``); otherwise the counters are judged (``"counters"``).

A relative rule whose baseline lacks data (none, or too few requests) is
skipped, not failed: the absolute rules still apply. Limits are strict — a
reading exactly at its limit passes. Every failing rule is reported, not
just the first. The verdict's ``readings`` hold every number compared, every
threshold and the result of each rule, for status output and release records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from prism.core.readings import Counters
from prism.core.requestlog import RequestLog
from prism.release.plan import Analysis

__all__ = ["Outcome", "Verdict", "delta", "judge"]

#: What one reading says. :func:`judge` gives pass, fail or wait; the machine
#: calls a wait that outlasted ``max_wait_ms`` inconclusive, and a tick with no
#: reading at all an error.
Outcome = Literal["pass", "fail", "wait", "inconclusive", "error"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of one analysis tick, why, and every number behind it."""

    outcome: Outcome
    message: str
    readings: dict[str, Any] = field(default_factory=dict, hash=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the store and the API."""
        return {"outcome": self.outcome, "message": self.message, "readings": dict(self.readings)}


def delta(start: Counters, now: Counters) -> Counters | None:
    """The window from ``start`` to ``now``, or None if the counters were reset.

    Counters only go down when HAProxy restarts or reloads (a new process
    starts from zero); the caller then starts a new window from ``now``. The
    mean response time is a moving average, so the window keeps ``now``'s.
    """
    requests = now.requests - start.requests
    errors = now.errors_5xx - start.errors_5xx
    # errors > requests means a reset hidden by new traffic: as unusable as a drop
    if requests < 0 or errors < 0 or errors > requests:
        return None
    # The request log is Prism's own: it survives HAProxy reloads and restarts with
    # Prism. A window without it (either end lacks it, or it restarted) falls back
    # to the counters alone.
    log = None
    if start.log is not None and now.log is not None:
        log = now.log.minus(start.log)
    return Counters(requests, errors, now.mean_response_ms, log)


def _pair(value: float, limit: float) -> tuple[str, str]:
    """``value`` and ``limit`` printed with just enough digits to look different."""
    for digits in range(3, 10):
        shown = f"{value:.{digits}g}", f"{limit:.{digits}g}"
        if shown[0] != shown[1]:
            return shown
    return f"{value!r}", f"{limit!r}"


def _factor(value: float) -> str:
    return f"{value:g}"


def _ms(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def _q(value: float) -> str:
    """A quantile read from buckets (2% error): whole ms, tenths below 10 ms."""
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def _counted(counters: Counters) -> tuple[Counters, str]:
    """The counts to judge: the request log's when it holds every request, else HAProxy's."""
    log = counters.log
    if log is None or not log.exact:
        return counters, "counters"
    return Counters(log.requests, log.errors_5xx, counters.mean_response_ms, log), "log"


_QUANTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))


def _quantiles(
    analysis: Analysis,
    log: RequestLog | None,
    baseline_log: RequestLog | None,
    readings: dict[str, Any],
    failures: list[str],
) -> str | None:
    """Judge the response-time quantiles; why the tick must wait for log data, if it must."""
    checks: dict[str, str] = readings["checks"]
    wanted = [(name, q, getattr(analysis, f"max_{name}_response_ms")) for name, q in _QUANTILES]
    factor = analysis.max_p99_vs_stable
    if all(limit is None for _, _, limit in wanted) and factor is None:
        for name, _ in _QUANTILES:
            checks[f"{name}_response"] = "off"
        checks["p99_vs_stable"] = "off"
        return None
    lines = 0 if log is None else log.timed
    enough = log is not None and lines >= analysis.min_requests
    starved = None
    for name, q, limit in wanted:
        if limit is None:
            checks[f"{name}_response"] = "off"
            continue
        if not enough:
            checks[f"{name}_response"] = "no log data"
            continue
        assert log is not None
        value = log.quantile(q) or 0.0
        if value > limit:
            failures.append(f"{name} response {_q(value)} ms > {limit} ms ({lines} logged)")
        checks[f"{name}_response"] = "fail" if value > limit else "pass"
    if factor is None:
        checks["p99_vs_stable"] = "off"
    elif not enough:
        checks["p99_vs_stable"] = "no log data"
    elif baseline_log is None or baseline_log.timed < analysis.min_requests:
        checks["p99_vs_stable"] = "no baseline"
    else:
        assert log is not None
        p99, stable = log.quantile(0.99) or 0.0, baseline_log.quantile(0.99) or 0.0
        bound = max(float(analysis.response_floor_ms), stable * factor)
        readings["p99_limit_ms_vs_stable"] = bound
        if p99 > bound:
            failures.append(
                f"p99 response {_q(p99)} ms > {_q(bound)} ms "
                f"({_factor(factor)} x stable {_q(stable)} ms, floor {analysis.response_floor_ms})"
            )
        checks["p99_vs_stable"] = "fail" if p99 > bound else "pass"
    if not enough:
        starved = f"waiting for request-log data: {lines}/{analysis.min_requests} lines logged"
    return starved


def judge(analysis: Analysis, target: Counters, baseline: Counters | None) -> Verdict:
    """Pass, fail or wait for the target's window, compared with the baseline's.

    ``target`` and ``baseline`` are window deltas (:func:`delta`); ``baseline``
    is None when the color traffic moves from has none. See the module
    docstring for the rules.
    """
    log, baseline_log = target.log, None if baseline is None else baseline.log
    target, source = _counted(target)
    if baseline is not None:
        baseline, _ = _counted(baseline)
    ratio = target.ratio_5xx
    readings: dict[str, Any] = {
        "source": source,
        "log": None if log is None else log.summary(),
        "baseline_log": None if baseline_log is None else baseline_log.summary(),
        "max_p50_response_ms": analysis.max_p50_response_ms,
        "max_p95_response_ms": analysis.max_p95_response_ms,
        "max_p99_response_ms": analysis.max_p99_response_ms,
        "max_p99_vs_stable": analysis.max_p99_vs_stable,
        "p99_limit_ms_vs_stable": None,
        "requests": target.requests,
        "errors_5xx": target.errors_5xx,
        "ratio_5xx": ratio,
        "mean_response_ms": target.mean_response_ms,
        "baseline_requests": None if baseline is None else baseline.requests,
        "baseline_errors_5xx": None if baseline is None else baseline.errors_5xx,
        "baseline_ratio_5xx": None if baseline is None else baseline.ratio_5xx,
        "baseline_mean_response_ms": None if baseline is None else baseline.mean_response_ms,
        "min_requests": analysis.min_requests,
        "max_5xx_ratio": analysis.max_5xx_ratio,
        "max_5xx_ratio_vs_stable": analysis.max_5xx_ratio_vs_stable,
        "ratio_floor": analysis.ratio_floor,
        "max_mean_response_ms": analysis.max_mean_response_ms,
        "max_response_vs_stable": analysis.max_response_vs_stable,
        "response_floor_ms": analysis.response_floor_ms,
        "ratio_5xx_limit_vs_stable": None,
        "response_limit_ms_vs_stable": None,
        "checks": {},
    }
    if target.requests < analysis.min_requests:
        return Verdict(
            "wait",
            f"waiting for data: {target.requests}/{analysis.min_requests} requests",
            readings,
        )

    checks: dict[str, str] = readings["checks"]
    failures: list[str] = []
    counted = f"{target.errors_5xx} of {target.requests} requests"
    # a baseline with too little traffic says nothing: its relative rules are skipped
    stable_window = (
        baseline if baseline is not None and baseline.requests >= analysis.min_requests else None
    )

    shown = _pair(ratio, analysis.max_5xx_ratio)
    if ratio > analysis.max_5xx_ratio:
        failures.append(f"5xx ratio {shown[0]} > {shown[1]} ({counted})")
    checks["5xx_ratio"] = "fail" if ratio > analysis.max_5xx_ratio else "pass"

    factor = analysis.max_5xx_ratio_vs_stable
    if factor is None:
        checks["5xx_ratio_vs_stable"] = "off"
    elif stable_window is None:
        checks["5xx_ratio_vs_stable"] = "no baseline"
    else:
        stable = stable_window.ratio_5xx
        limit = max(analysis.ratio_floor, stable * factor)
        readings["ratio_5xx_limit_vs_stable"] = limit
        if ratio > limit:
            value, bound = _pair(ratio, limit)
            why = (
                f"{_factor(factor)} x stable {stable:.3g}"
                if stable * factor >= analysis.ratio_floor
                else f"ratio floor; stable {stable:.3g}"
            )
            failures.append(
                f"5xx ratio {value} > {bound} ({why}): {counted}, "
                f"stable {stable_window.errors_5xx} of {stable_window.requests}"
            )
        checks["5xx_ratio_vs_stable"] = "fail" if ratio > limit else "pass"

    rt = target.mean_response_ms
    ceiling = analysis.max_mean_response_ms
    if ceiling is None:
        checks["mean_response"] = "off"
    else:
        if rt > ceiling:
            failures.append(f"mean response {rt} ms > {ceiling} ms")
        checks["mean_response"] = "fail" if rt > ceiling else "pass"

    factor = analysis.max_response_vs_stable
    if factor is None:
        checks["response_vs_stable"] = "off"
    elif stable_window is None:
        checks["response_vs_stable"] = "no baseline"
    else:
        stable_rt = stable_window.mean_response_ms
        bound_ms = max(float(analysis.response_floor_ms), stable_rt * factor)
        readings["response_limit_ms_vs_stable"] = bound_ms
        if rt > bound_ms:
            why = (
                f"{_factor(factor)} x stable {stable_rt} ms"
                if stable_rt * factor >= analysis.response_floor_ms
                else f"response floor; stable {stable_rt} ms"
            )
            failures.append(f"mean response {rt} ms > {_ms(bound_ms)} ms ({why})")
        checks["response_vs_stable"] = "fail" if rt > bound_ms else "pass"

    starved = _quantiles(analysis, log, baseline_log, readings, failures)
    if failures:
        return Verdict("fail", "; ".join(failures), readings)
    if starved is not None:
        return Verdict("wait", starved, readings)
    return Verdict(
        "pass",
        f"healthy: {target.requests} requests, 5xx ratio {ratio:.3g}, mean response {rt} ms",
        readings,
    )
