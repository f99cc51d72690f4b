"""A release as saved in the store: its plan, phase, position and what it saw.

Frozen data only. The phases are named here because a record stores one;
which phase may follow which, and on what event, is the business of the
release machine (:mod:`prism.release.machine`), which imports this module and
is never imported by it. Records written before a field existed still load:
every field added since has a default.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from prism.release.plan import Analysis, ReleasePlan

__all__ = [
    "ACTIVE",
    "TERMINAL",
    "Budget",
    "Held",
    "InFlight",
    "LogEntry",
    "Phase",
    "ReleaseRecord",
    "Sample",
]


class Phase(StrEnum):
    """Where a release is; :mod:`prism.release.machine` says what may follow."""

    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    WAITING = "waiting"
    HOLDING = "holding"
    DRAINING = "draining"
    ROLLING_BACK = "rolling_back"
    COMPLETED = "completed"
    ROLLED_BACK = "rolled_back"
    REFUSED = "refused"
    FAILED = "failed"


#: The phases a release ends in; the machine checks at import that they take no event.
TERMINAL = frozenset({Phase.COMPLETED, Phase.ROLLED_BACK, Phase.REFUSED, Phase.FAILED})
ACTIVE = frozenset(Phase) - TERMINAL

#: The traffic action a record has saved before performing it: the current
#: step's share, the rollback's share, or the drain of the colors left empty.
InFlight = Literal["step", "rollback", "drain"]


#: Why a release holds until a person promotes or aborts it: its analysis stayed
#: inconclusive, or gave no reading, for longer than the step's limits allow.
Held = Literal["inconclusive", "errors"]


class Sample(BaseModel):
    """The counters of the target and the baseline read at one tick (``at``)."""

    model_config = ConfigDict(frozen=True)

    at: float
    target: dict[str, Any]
    baseline: dict[str, Any] | None = None


class Budget(BaseModel):
    """The current step's readings counted against its analysis limits.

    ``errors`` counts readings missing in a row (any reading resets it);
    ``starved_since`` is when the analysis last started waiting for enough
    data (None while it has enough).
    """

    model_config = ConfigDict(frozen=True)

    failures: int = 0
    inconclusive: int = 0
    errors: int = 0
    starved_since: float | None = None


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
    #: ready servers per color when the release began: a rollback never loads them more
    initial_up: dict[str, int] = {}
    phase: Phase
    step: int = 0
    #: wall-clock time the current step began (pause deadlines derive from it)
    step_started_at: float = 0.0
    #: set while a person has paused the release, to shift timers on resume
    paused_at: float | None = None
    analysis: Analysis = Analysis()
    #: HAProxy counters of the target and the baseline when the analysis window began
    window: dict[str, dict[str, Any] | None] | None = None
    #: one sample per tick over the sliding analysis window, oldest first
    samples: tuple[Sample, ...] = ()
    #: the current step's failed, inconclusive and missing readings
    budget: Budget = Budget()
    #: set while the release holds for a person because its analysis could not judge
    held: Held | None = None
    verdict: dict[str, Any] | None = None
    #: the step whose confirm hook answered yes (so a restart does not ask twice)
    confirmed_step: int | None = None
    actor: str
    reason: str | None = None
    started_at: float
    updated_at: float
    seq: int = 0
    steps: tuple[LogEntry, ...] = ()
    #: the traffic action saved but not yet known to be done: re-issued after a crash
    inflight: InFlight | None = None
    #: refusals of the in-flight action in a row (a rollback gives up after a few)
    attempts: int = 0
    #: when the rollback began (a capped rollback's ramp runs from here)
    rollback_at: float | None = None

    @property
    def active(self) -> bool:
        """Whether the release has not ended yet."""
        return self.phase in ACTIVE

    def noted(self, at: float, *entries: LogEntry, **changes: Any) -> ReleaseRecord:
        """The record with log entries appended and fields changed (the log keeps 200)."""
        steps = (*self.steps, *entries)[-200:]
        return self.model_copy(update={"updated_at": at, "steps": steps, **changes})

    def summary(self) -> dict[str, Any]:
        """The record as JSON data, as the API and the CLI show it."""
        return self.model_dump(mode="json")
