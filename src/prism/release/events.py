"""What the release machine is told and what it asks for: its events and actions. Pure.

Events are what happened, as the engine observed it (a tick's readings, a
person's command, the outcome of an action); actions are what the engine must
do once the new record is saved. Both are frozen values that check themselves
when built. The machine itself is :mod:`prism.release.machine`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from prism.core.readings import Counters
from prism.errors import InvalidInput
from prism.release.gates import GateResult
from prism.release.record import ReleaseRecord

__all__ = [
    "Abort",
    "Action",
    "Ask",
    "Audit",
    "Began",
    "Drain",
    "Drained",
    "Emit",
    "Event",
    "Pause",
    "Promote",
    "Purpose",
    "Restarted",
    "Resume",
    "SetShare",
    "ShareFailed",
    "ShareSet",
    "Step",
    "Tick",
    "Wants",
]

#: What a share change is for: the plan's current weight step, or the rollback.
Purpose = Literal["step", "rollback"]


def _check_purpose(value: str) -> None:
    if value not in ("step", "rollback"):
        raise InvalidInput(f"a share change is for 'step' or 'rollback', not {value!r}")


# -- events: what happened, as the engine observed it -------------------------


@dataclass(frozen=True, slots=True)
class Began:
    """The start gates ran (health, then smoke), stopping at the first refusal."""

    at: float
    gates: tuple[GateResult, ...]
    #: ready servers per color when the release began (the rollback's capacity)
    up: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.gates:
            raise InvalidInput("a release begins with at least one gate result")


@dataclass(frozen=True, slots=True)
class Restarted:
    """An engine (re)started driving this record: redo what it saved as in flight."""

    at: float


@dataclass(frozen=True, slots=True)
class Tick:
    """One observation: the app's weights, the target's health and counters (and the
    baseline's), the confirm hook's ``(yes?, why)`` when :func:`wants` asked, and the
    fleet nodes that are lost (joined once, no report now)."""

    at: float
    weights: Mapping[str, int] = field(default_factory=dict)
    health: GateResult | None = None
    target: Counters | None = None
    baseline: Counters | None = None
    confirm: tuple[bool, str] | None = None
    lost: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Promote:
    """A person skips the current pause or hold (``full``: straight to the final weight)."""

    at: float
    actor: str
    full: bool = False


@dataclass(frozen=True, slots=True)
class Pause:
    """A person stops the release where it is."""

    at: float
    actor: str


@dataclass(frozen=True, slots=True)
class Resume:
    """A person lets a paused release go on, with the time its pause had left."""

    at: float
    actor: str


@dataclass(frozen=True, slots=True)
class Abort:
    """A person rolls the release back."""

    at: float
    actor: str
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class ShareSet:
    """A SetShare took effect: the weights now, how long it took (None: nothing had to
    change), the counters right after it (where the new analysis window starts), and
    for a rollback the colors capped for the servers they lost
    (:func:`prism.core.capacity.cap_rollback`)."""

    at: float
    purpose: Purpose
    weights: Mapping[str, int]
    ms: float | None = None
    target: Counters | None = None
    baseline: Counters | None = None
    capped: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_purpose(self.purpose)


@dataclass(frozen=True, slots=True)
class ShareFailed:
    """A SetShare was refused, and why."""

    at: float
    purpose: Purpose
    error: str

    def __post_init__(self) -> None:
        _check_purpose(self.purpose)


@dataclass(frozen=True, slots=True)
class Drained:
    """The drain ended: every emptied color idle, or its timeout ran out."""

    at: float
    result: GateResult


Event = (
    Began | Restarted | Tick | Promote | Pause | Resume | Abort | ShareSet | ShareFailed | Drained
)

# -- actions: what the engine does after saving the record -------------------


@dataclass(frozen=True, slots=True)
class SetShare:
    """Give the target exactly ``share`` percent, from (or back to) ``source`` alone, else
    the colors no other release is moving; ``restore`` splits a give-back among colors that
    hold nothing (:func:`prism.core.shares.set_share`). Audited ``release.<purpose>``."""

    purpose: Purpose
    share: int
    source: str | None = None
    restore: Mapping[str, int] | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_purpose(self.purpose)
        if not 0 <= self.share <= 100:
            raise InvalidInput(f"a share is 0 to 100, not {self.share!r}")


@dataclass(frozen=True, slots=True)
class Drain:
    """Wait until ``colors`` have no connection in use, bounded (None: the app's timeout)."""

    colors: tuple[str, ...]
    timeout_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Emit:
    """Send webhook event ``kind``, numbered ``seq`` (already saved in the record)."""

    kind: str
    data: Mapping[str, Any]
    seq: int
    at: float


@dataclass(frozen=True, slots=True)
class Audit:
    """Record ``release.<event>`` in the audit log, in the commit that saves the record."""

    event: str
    message: str | None = None
    readings: Mapping[str, Any] | None = None


Action = SetShare | Drain | Emit | Audit


@dataclass(frozen=True, slots=True)
class Ask:
    """The question for the confirm hook: may the plan take weight step ``step``?"""

    step: int
    weight: int
    seq: int


@dataclass(frozen=True, slots=True)
class Wants:
    """What to observe for the next Tick: the weights, health and counters (``readings``),
    and the confirm hook's answer to ``confirm``."""

    readings: bool
    confirm: Ask | None = None


@dataclass(frozen=True, slots=True)
class Step:
    """The record to save, the actions to perform once it is saved, and when to tick again
    (seconds; 0: at once; None: when an outcome, a person or another process wakes it)."""

    record: ReleaseRecord
    actions: tuple[Action, ...] = ()
    wake_in: float | None = None
