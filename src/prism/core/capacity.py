"""Capacity-safe rollback: never hand a color more traffic than its servers carried. Pure.

When a release starts, Prism counts every color's ready servers (exactly
``UP`` with a passed check). A rollback gives the colors back their shares
from before the release; but a color that has lost servers since would take
its whole old share on fewer servers, each carrying more than any of them did
when the release started — the overload that turns a rollback into an outage.

:func:`cap_rollback` caps each such color at its old share scaled by the
servers it has left (``share x up_now // up_then``, rounded down), so no server
carries more than it did; what is held back stays with the release's target,
and every cap is named in a note the rollback logs, audits and sends. A color
counted with no ready servers at the start, or not counted at all, is not
capped: there is no per-server load to keep.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prism.core.buckets import check_weights
from prism.core.readings import ServerReading

__all__ = ["cap_rollback", "ready_counts"]


def ready_counts(servers: Iterable[ServerReading], backends: Mapping[str, str]) -> dict[str, int]:
    """Ready servers per color (``backends``: color -> backend name).

    In a fleet every node reports every server: a server counts once, and only
    if it is ready on every node that reports it.
    """
    verdicts: dict[tuple[str, str], bool] = {}
    for row in servers:
        if row.absent:
            continue
        key = (row.backend, row.server)
        verdicts[key] = verdicts.get(key, True) and row.ready
    return {
        color: sum(1 for (be, _), ok in verdicts.items() if be == backend and ok)
        for color, backend in backends.items()
    }


def cap_rollback(
    weights: Mapping[str, int],
    target: str,
    initial: Mapping[str, int],
    up_then: Mapping[str, int],
    up_now: Mapping[str, int],
) -> tuple[dict[str, int], tuple[str, ...]]:
    """``weights`` (a rollback's result) with every color that lost servers capped.

    ``initial`` holds the weights when the release started, ``up_then`` and
    ``up_now`` the ready servers per color then and now. Returns the capped
    weights (sorted, no zeros) and one note per capped color.
    """
    capped = dict(weights)
    notes: list[str] = []
    held_back = 0
    for color in sorted(capped):
        if color == target:
            continue
        then, now = up_then.get(color, 0), up_now.get(color, 0)
        if then <= 0 or now >= then:
            continue
        allowed = min(initial.get(color, 0), initial.get(color, 0) * now // then)
        if capped[color] <= allowed:
            continue
        excess = capped[color] - allowed
        notes.append(
            f"{color} has {now} of the {then} ready server(s) it had when the release "
            f"started: it gets {allowed}% instead of {capped[color]}%, "
            f"{excess}% stays on {target}"
        )
        capped[color] = allowed
        held_back += excess
    if held_back:
        capped[target] = capped.get(target, 0) + held_back
    return check_weights(capped), tuple(notes)
