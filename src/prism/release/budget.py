"""Counting a step's readings against its analysis limits. Pure.

Every tick that judges a release gives one reading (:mod:`prism.release.analysis`):

* **fail** counts one failure; the ``failure_limit + 1``-th rolls back;
* **wait** (too little data) starts, or continues, a wait: one lasting
  ``max_wait_ms`` is an **inconclusive** reading, and the next wait starts
  there; the ``inconclusive_limit + 1``-th holds the release;
* **error** (no reading at all) counts in a row; the
  ``consecutive_error_limit + 1``-th in a row holds the release;
* **pass** ends a wait. Any reading but an error ends a run of errors.

The machine (:mod:`prism.release.machine`) saves the new
:class:`~prism.release.record.Budget` and turns the decision into a rollback
or a hold; a reading counted but tolerated comes with a ``note`` to log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from prism.release.analysis import Verdict
from prism.release.plan import Analysis
from prism.release.record import Budget

__all__ = ["Counted", "count_missing", "count_reading"]

Decision = Literal["go", "roll_back", "hold"]


@dataclass(frozen=True, slots=True)
class Counted:
    """The budget after one reading, the verdict to keep, what to do, and a note to log."""

    budget: Budget
    verdict: Verdict
    decision: Decision = "go"
    note: str | None = None


def count_reading(analysis: Analysis, budget: Budget, verdict: Verdict, at: float) -> Counted:
    """Count a judged reading (pass, fail or wait) taken at ``at``."""
    budget = budget.model_copy(update={"errors": 0})
    if verdict.outcome == "fail":
        failures = budget.failures + 1
        budget = budget.model_copy(update={"failures": failures, "starved_since": None})
        if failures > analysis.failure_limit:
            message = verdict.message
            if analysis.failure_limit:
                message += f" (failed reading {failures}, limit {analysis.failure_limit})"
            return Counted(budget, Verdict("fail", message, verdict.readings), "roll_back")
        note = f"failed reading {failures} of {analysis.failure_limit} allowed: {verdict.message}"
        return Counted(budget, verdict, "go", note)
    if verdict.outcome != "wait":
        return Counted(budget.model_copy(update={"starved_since": None}), verdict)
    since = budget.starved_since if budget.starved_since is not None else at
    budget = budget.model_copy(update={"starved_since": since})
    if at - since < analysis.max_wait_ms / 1000:
        return Counted(budget, verdict)
    inconclusive = budget.inconclusive + 1
    budget = budget.model_copy(update={"inconclusive": inconclusive, "starved_since": at})
    message = (
        f"inconclusive: {verdict.message} after {analysis.max_wait_ms / 1000:g} s "
        f"(inconclusive reading {inconclusive}, limit {analysis.inconclusive_limit})"
    )
    verdict = Verdict("inconclusive", message, verdict.readings)
    if inconclusive > analysis.inconclusive_limit:
        return Counted(budget, verdict, "hold")
    return Counted(budget, verdict, "go", message)


def count_missing(analysis: Analysis, budget: Budget, missing: str) -> Counted:
    """Count a tick without a reading (``missing`` names what was missing)."""
    errors = budget.errors + 1
    limit = analysis.consecutive_error_limit
    message = f"no reading ({missing} missing): {errors} in a row, limit {limit}"
    verdict = Verdict("error", message, {"errors": errors, "consecutive_error_limit": limit})
    decision: Decision = "hold" if errors > limit else "go"
    return Counted(budget.model_copy(update={"errors": errors}), verdict, decision)
