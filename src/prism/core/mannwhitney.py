"""The Mann-Whitney U test, normal approximation with tie correction. Pure, stdlib only.

Two samples ``x`` and ``y`` are ranked together (tied values share their mean
rank); ``U_x = R_x - n_x (n_x + 1) / 2`` counts the pairs where ``x`` beats
``y`` (ties count half). Under the hypothesis that both come from one
distribution, ``U`` is about normal with mean ``n_x n_y / 2`` and variance

    n_x n_y / 12 * ((n + 1) - sum(t^3 - t) / (n (n - 1)))

where ``t`` runs over the sizes of the groups of tied values (the tie
correction). ``z`` subtracts 0.5 from ``U - mean`` (the continuity
correction) and the p-value is the normal tail beyond it: one tail for
``greater`` (is ``x`` stochastically larger?) and ``less``, twice the tail of
the larger ``U`` for ``two-sided``, at most 1. These are the definitions of
SciPy's ``mannwhitneyu(..., method="asymptotic", use_continuity=True)``; the
tests use it as the oracle.

When every value is tied there is nothing to rank: the p-value is 1.
The approximation is rough below about 8 values a side; callers set a minimum.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from prism.errors import InvalidInput

__all__ = ["Alternative", "MannWhitney", "mann_whitney_u"]

Alternative = Literal["two-sided", "greater", "less"]


@dataclass(frozen=True, slots=True)
class MannWhitney:
    """``u`` is ``x``'s statistic (``U_x``), ``z`` the standardised statistic tested,
    ``p`` the p-value; ``auc`` is ``U_x / (n_x n_y)``, the chance that a value of ``x``
    exceeds one of ``y`` (0.5: no difference), an effect size of its own."""

    u: float
    z: float
    p: float
    auc: float


def _ranks(values: Sequence[float]) -> tuple[list[float], list[int]]:
    """Mean ranks (1-based) of ``values`` and the sizes of their groups of ties."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    ties: list[int] = []
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        mean_rank = (i + j) / 2 + 1
        for k in range(i, j + 1):
            ranks[order[k]] = mean_rank
        ties.append(j - i + 1)
        i = j + 1
    return ranks, ties


def mann_whitney_u(
    x: Sequence[float], y: Sequence[float], alternative: Alternative = "two-sided"
) -> MannWhitney:
    """Test whether ``x`` and ``y`` come from one distribution; see the module docstring."""
    n_x, n_y = len(x), len(y)
    if n_x == 0 or n_y == 0:
        raise InvalidInput("the Mann-Whitney U test needs at least one value in each sample")
    if alternative not in ("two-sided", "greater", "less"):
        raise InvalidInput(f"alternative is two-sided, greater or less, not {alternative!r}")
    values = [float(v) for v in (*x, *y)]
    if any(math.isnan(v) for v in values):
        raise InvalidInput("the Mann-Whitney U test cannot rank NaN")
    ranks, ties = _ranks(values)
    n = n_x + n_y
    u_x = sum(ranks[:n_x]) - n_x * (n_x + 1) / 2
    u_y = n_x * n_y - u_x
    auc = u_x / (n_x * n_y)
    tie_term = sum(t**3 - t for t in ties)
    variance = n_x * n_y / 12 * ((n + 1) - tie_term / (n * (n - 1))) if n > 1 else 0.0
    if variance <= 0:
        return MannWhitney(u_x, 0.0, 1.0, auc)
    if alternative == "greater":
        tested, tails = u_x, 1
    elif alternative == "less":
        tested, tails = u_y, 1
    else:
        tested, tails = max(u_x, u_y), 2
    z = (tested - n_x * n_y / 2 - 0.5) / math.sqrt(variance)
    p = min(1.0, tails * 0.5 * math.erfc(z / math.sqrt(2)))
    return MannWhitney(u_x, z, p, auc)
