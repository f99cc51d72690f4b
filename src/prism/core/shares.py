"""Setting one color's share of traffic without disturbing anyone else's. Pure.

:func:`set_share` gives a release's target color exactly the share a weight
step asks for and keeps the total at 100. The difference is taken from, or
given back to, a chosen set of colors only:

* ``source`` alone, when the step names one;
* else the ``donors``: the colors the caller allows to change. The release
  engine passes every color *not* being moved by another concurrent release,
  so two releases of different colors never touch each other's share;
* else, by default, every other color that holds traffic now.

Taking share, each donor gives in proportion to its current weight. Giving
share back, each donor receives in proportion to its current weight; when the
donors all hold 0 (a rollback to colors that were dropped), in proportion to
``restore`` (the weights before the release), or else equally.

Weights are whole percentages, so proportional amounts are rounded by the
largest-remainder method: every donor moves by its exact proportional amount
rounded down, and the units left over go one each to the donors with the
largest fractional parts, ties broken by color name. Each donor's change is
thus within 1 of its exact share of the difference, the total is exact, the
result is deterministic, and a donor never gives more than it holds.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from prism.core.buckets import BUCKETS, check_weights
from prism.errors import Conflict, InvalidInput

__all__ = ["apportion", "set_share"]


def apportion(amount: int, basis: Mapping[str, int]) -> dict[str, int]:
    """Split ``amount`` into whole parts proportional to ``basis`` (largest remainder).

    Every color in ``basis`` gets a part (possibly 0); the parts sum to
    ``amount``; each is its exact proportional share rounded down or up.
    Leftover units go to the largest fractional parts first, ties to the
    alphabetically first color. ``basis`` must hold a positive total.
    """
    total = sum(basis.values())
    if amount < 0 or total <= 0 or any(w < 0 for w in basis.values()):
        raise InvalidInput(
            f"cannot split {amount} in proportion to {dict(basis)!r}: "
            "need an amount >= 0 and non-negative weights with a positive total"
        )
    # integer arithmetic throughout: float rounding would break determinism
    parts = {color: amount * weight // total for color, weight in basis.items()}
    remainders = {color: amount * weight % total for color, weight in basis.items()}
    leftover = amount - sum(parts.values())
    for color in sorted(basis, key=lambda c: (-remainders[c], c))[:leftover]:
        parts[color] += 1
    return parts


def _check_share(share: object) -> int:
    if isinstance(share, bool) or not isinstance(share, int) or not 0 <= share <= BUCKETS:
        raise InvalidInput(f"a share is a whole number from 0 to 100, not {share!r}")
    return share


def _check_restore(restore: Mapping[str, int]) -> None:
    for color, weight in restore.items():
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= BUCKETS:
            raise InvalidInput(
                f"restore weight of {color!r} must be a whole number from 0 to 100, not {weight!r}"
            )


def _names(colors: Collection[str]) -> str:
    return ", ".join(sorted(colors)) or "none"


def _recipients(
    current: Mapping[str, int],
    target: str,
    donors: Collection[str] | None,
    source: str | None,
    restore: Mapping[str, int] | None,
) -> list[str]:
    """The colors whose weight may change besides the target, sorted by name."""
    if source is not None:
        if source == target:
            raise InvalidInput(f"{target!r} cannot be its own source")
        if donors is not None and source not in donors:
            # the caller's donors exclude colors another release is moving
            raise Conflict(
                f"{target} cannot take from {source}: it may only take from "
                f"{_names(set(donors) - {target})}",
                hint="another release may be moving that color's share",
            )
        return [source]
    if donors is not None:
        # the target is never its own donor; tolerate callers that include it
        return sorted(set(donors) - {target})
    holders = [c for c, w in current.items() if c != target and w > 0]
    if not holders and restore is not None:
        holders = [c for c, w in restore.items() if c != target and w > 0]
    return sorted(holders)


def set_share(
    weights: Mapping[str, int],
    target: str,
    share: int,
    *,
    donors: Collection[str] | None = None,
    source: str | None = None,
    restore: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """New weights where ``target`` holds exactly ``share`` and the total is still 100.

    Only ``target`` and the colors that give or receive the difference change:
    ``source`` if named (it must then be among ``donors``, when those are
    given), else ``donors``, else every other color with weight > 0. See the
    module docstring for the proportions and the rounding. ``target`` may be
    absent from ``weights`` (it holds 0). The result is sorted by color and
    has no zero weights, like :func:`~prism.core.buckets.check_weights`.

    Raises :class:`~prism.errors.InvalidInput` for malformed weights, share
    or restore weights, or a source equal to the target, and
    :class:`~prism.errors.Conflict` when the colors it may take from hold too
    little share, when there is no color to give share back to, or when the
    source is not among the donors.
    """
    current = check_weights(weights)
    share = _check_share(share)
    if restore is not None:
        _check_restore(restore)
    held = current.get(target, 0)
    if share == held:
        return current
    recipients = _recipients(current, target, donors, source, restore)
    new = dict(current)
    new[target] = share
    if share > held:
        need = share - held
        available = sum(current.get(c, 0) for c in recipients)
        if available < need:
            raise Conflict(
                f"cannot give {target} {share}%: it holds {held}% and the colors it may take "
                f"from ({_names(recipients)}) hold only {available}%",
                detail={"target": target, "share": share, "held": held, "available": available},
            )
        taken = apportion(need, {c: current.get(c, 0) for c in recipients})
        for color, amount in taken.items():
            new[color] = current.get(color, 0) - amount
    else:
        surplus = held - share
        if not recipients:
            raise Conflict(
                f"cannot lower {target} to {share}%: there is no color to give {surplus}% back to",
                hint="name the colors to give it back to",
            )
        basis = {c: current.get(c, 0) for c in recipients}
        if sum(basis.values()) == 0 and restore is not None:
            basis = {c: restore.get(c, 0) for c in recipients}
        if sum(basis.values()) == 0:
            basis = dict.fromkeys(recipients, 1)
        given = apportion(surplus, basis)
        for color, amount in given.items():
            new[color] = current.get(color, 0) + amount
    return check_weights(new)
