"""A release as saved in the store: its plan, phase, position and what it saw.

Frozen; every change makes a new record through :meth:`ReleaseRecord.moved`
(which checks the phase table) or :meth:`ReleaseRecord.noted`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from prism.release.phases import ACTIVE, Phase, advance
from prism.release.plan import Analysis, ReleasePlan

__all__ = ["LogEntry", "ReleaseRecord"]


class LogEntry(BaseModel):
    """One thing a release did or saw."""

    model_config = ConfigDict(frozen=True)

    name: str
    ok: bool
    message: str
    at: float
    readings: dict[str, Any] = {}


class ReleaseRecord(BaseModel):
    """The state of one release of one color of one app."""

    model_config = ConfigDict(frozen=True)

    id: str
    app: str
    kind: Literal["release"] = "release"
    from_color: str
    to_color: str
    plan: ReleasePlan
    initial_weights: dict[str, int]
    phase: Phase
    step: int = 0
    #: wall-clock time the current step began (pause deadlines derive from it)
    step_started_at: float = 0.0
    #: set while a person has paused the release, to shift timers on resume
    paused_at: float | None = None
    analysis: Analysis = Analysis()
    #: HAProxy counters of the target and the baseline when the analysis window began
    window: dict[str, dict[str, int] | None] | None = None
    verdict: dict[str, Any] | None = None
    #: the step whose confirm hook answered yes (so a restart does not ask twice)
    confirmed_step: int | None = None
    actor: str
    reason: str | None = None
    started_at: float
    updated_at: float
    seq: int = 0
    steps: tuple[LogEntry, ...] = ()

    @property
    def active(self) -> bool:
        return self.phase in ACTIVE

    def moved(
        self, phase: Phase, at: float, entry: LogEntry | None = None, **changes: Any
    ) -> ReleaseRecord:
        """The record in ``phase`` (checked against the table), with an optional log entry."""
        advance(self.phase, phase)
        return self.noted(at, entry, phase=phase, **changes)

    def noted(self, at: float, entry: LogEntry | None = None, **changes: Any) -> ReleaseRecord:
        """The record with a log entry and field changes, in the same phase."""
        steps = (*self.steps, entry) if entry else self.steps
        return self.model_copy(update={"updated_at": at, "steps": steps[-200:], **changes})

    def summary(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
