"""The release state machine, as data.

Rules:
* A release starts ``pending`` and ends in exactly one terminal phase:
  ``completed``, ``rolled_back``, ``refused`` or ``failed``.
* Only the transitions in :data:`TRANSITIONS` are legal; anything else raises
  :class:`prism.errors.IllegalTransition` and changes nothing.
* The driver saves the next phase *before* acting on it, so after a crash the
  saved phase says what to redo. Every action is idempotent (setting a share
  that is already set changes nothing), so redoing is always safe:
  ``running`` re-runs the current step, ``rolling_back`` re-runs the rollback,
  ``draining`` drains again. Timers are wall-clock deadlines stored in the
  record, so a pause survives a restart with its remaining time.

    pending ──> running ⇄ paused            (pause / resume, by a person)
       │          │ ⇅ waiting               (a `pause: manual` step, until promote)
       │          │ ⇅ holding               (confirm hook said no; retried each tick)
       │          ├──> draining ──> completed  (a plan that ends at 100%: drain the rest)
       │          ├──> completed               (a plan that ends below 100%)
       │          └──> rolling_back ──> rolled_back | failed
       └──> refused                         (first gate failed: nothing changed)

``rolling_back`` is reachable from every non-terminal phase except
``pending`` (abort, failed gate, target down).
"""

from __future__ import annotations

from enum import StrEnum

from prism.errors import IllegalTransition

__all__ = ["ACTIVE", "TERMINAL", "TRANSITIONS", "Phase", "advance"]


class Phase(StrEnum):
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


_P = Phase
TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    _P.PENDING: frozenset({_P.RUNNING, _P.REFUSED}),
    _P.RUNNING: frozenset(
        {
            _P.RUNNING,
            _P.PAUSED,
            _P.WAITING,
            _P.HOLDING,
            _P.DRAINING,
            _P.COMPLETED,
            _P.ROLLING_BACK,
        }
    ),
    _P.PAUSED: frozenset({_P.RUNNING, _P.ROLLING_BACK}),
    _P.WAITING: frozenset({_P.RUNNING, _P.PAUSED, _P.ROLLING_BACK}),
    _P.HOLDING: frozenset({_P.RUNNING, _P.PAUSED, _P.ROLLING_BACK}),
    _P.DRAINING: frozenset({_P.COMPLETED}),
    _P.ROLLING_BACK: frozenset({_P.ROLLED_BACK, _P.FAILED}),
    _P.COMPLETED: frozenset(),
    _P.ROLLED_BACK: frozenset(),
    _P.REFUSED: frozenset(),
    _P.FAILED: frozenset(),
}

TERMINAL = frozenset(phase for phase, nexts in TRANSITIONS.items() if not nexts)
ACTIVE = frozenset(Phase) - TERMINAL


def advance(current: Phase, nxt: Phase) -> Phase:
    """Return ``nxt`` if moving there from ``current`` is legal; raise otherwise."""
    if nxt not in TRANSITIONS[current]:
        raise IllegalTransition(
            f"a release cannot go from {current.value!r} to {nxt.value!r}",
            hint=f"from {current.value!r} it may go to: "
            + (", ".join(sorted(p.value for p in TRANSITIONS[current])) or "nothing (it ended)"),
        )
    return nxt
