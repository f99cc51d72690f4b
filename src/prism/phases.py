"""The release state machine, as data.

Rules:
* A release starts ``pending`` and ends in exactly one terminal phase.
* Only the transitions in :data:`TRANSITIONS` are legal; anything else raises
  :class:`prism.errors.IllegalTransition` and changes nothing.
* The driver saves the next phase *before* acting on it, so after a crash the
  saved phase tells what may have happened: ``switching`` means the switch may
  or may not have reached HAProxy (the reconciler converges it from desired
  state either way); ``draining`` means traffic already moved.

    pending ──> gating ──> switching ──> draining ──> completed
                  │            │             └──────> drain_timeout
                  └─> refused  └─> failed
"""

from __future__ import annotations

from enum import StrEnum

from prism.errors import IllegalTransition

__all__ = ["TERMINAL", "TRANSITIONS", "Phase", "advance"]


class Phase(StrEnum):
    PENDING = "pending"
    GATING = "gating"
    SWITCHING = "switching"
    DRAINING = "draining"
    COMPLETED = "completed"
    DRAIN_TIMEOUT = "drain_timeout"
    REFUSED = "refused"
    FAILED = "failed"


TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.PENDING: frozenset({Phase.GATING}),
    Phase.GATING: frozenset({Phase.SWITCHING, Phase.REFUSED}),
    Phase.SWITCHING: frozenset({Phase.DRAINING, Phase.FAILED}),
    Phase.DRAINING: frozenset({Phase.COMPLETED, Phase.DRAIN_TIMEOUT}),
    Phase.COMPLETED: frozenset(),
    Phase.DRAIN_TIMEOUT: frozenset(),
    Phase.REFUSED: frozenset(),
    Phase.FAILED: frozenset(),
}

TERMINAL = frozenset(phase for phase, nexts in TRANSITIONS.items() if not nexts)


def advance(current: Phase, nxt: Phase) -> Phase:
    """Return ``nxt`` if moving there from ``current`` is legal; raise otherwise."""
    if nxt not in TRANSITIONS[current]:
        raise IllegalTransition(
            f"a release cannot go from {current.value!r} to {nxt.value!r}",
            hint=f"from {current.value!r} it may go to: "
            + (", ".join(sorted(p.value for p in TRANSITIONS[current])) or "nothing (it ended)"),
        )
    return nxt
