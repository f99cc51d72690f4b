"""Weighted routing: which bucket (0..99) goes to which color. Pure.

Every request gets a bucket, from a hash of its stickiness key or at random,
and the bucket's color serves it. A **layout** is the color of each of the
100 buckets; it always matches the weights exactly (a color of weight w owns
w buckets).

The relayout algorithm moves as few buckets as possible when weights change:

1. every color keeps ``min(owned, new weight)`` of the buckets it owns now —
   a color whose share grows keeps all of them, one that shrinks keeps its
   lowest-numbered ones;
2. the buckets that became free (those of shrinking or removed colors) are
   handed out in ascending order to the growing colors, in color-name order,
   each taking exactly what it lacks.

So a user's color changes only if their bucket's color lost share, and the
number of buckets moved is ``sum(max(0, owned - weight))`` — half the L1
distance between the two weight vectors, which no layout can beat.
Deterministic: the same layout and weights always give the same result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from prism.errors import InvalidInput

__all__ = [
    "BUCKETS",
    "Layout",
    "check_weights",
    "initial_layout",
    "layout_ranges",
    "moved_buckets",
    "relayout",
]

BUCKETS = 100
Layout = tuple[str, ...]


def check_weights(weights: Mapping[str, int]) -> dict[str, int]:
    """Weights of 0..100 each, summing to exactly 100; zero weights are dropped."""
    for color, weight in weights.items():
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= BUCKETS:
            raise InvalidInput(
                f"weight of {color!r} must be a whole number from 0 to 100, not {weight!r}"
            )
    total = sum(weights.values())
    if total != BUCKETS:
        raise InvalidInput(
            f"weights must sum to 100, these sum to {total}",
            hint="e.g. blue=70 green=20 red=10",
        )
    return {c: w for c, w in sorted(weights.items()) if w > 0}


def initial_layout(weights: Mapping[str, int]) -> Layout:
    """Contiguous blocks in color-name order, for an app with no layout yet."""
    layout: list[str] = []
    for color, weight in sorted(check_weights(weights).items()):
        layout.extend([color] * weight)
    return tuple(layout)


def relayout(current: Layout | None, weights: Mapping[str, int]) -> Layout:
    """The layout for ``weights`` that moves the fewest buckets from ``current``."""
    wanted = check_weights(weights)
    if current is None or len(current) != BUCKETS:
        return initial_layout(wanted)
    kept: dict[str, int] = {}
    new: list[str | None] = [None] * BUCKETS
    for bucket, color in enumerate(current):
        if kept.get(color, 0) < wanted.get(color, 0):
            kept[color] = kept.get(color, 0) + 1
            new[bucket] = color
    free = iter(b for b in range(BUCKETS) if new[b] is None)
    for color, weight in sorted(wanted.items()):
        for _ in range(weight - kept.get(color, 0)):
            new[next(free)] = color
    assert all(c is not None for c in new)
    return tuple(c for c in new if c is not None)


def layout_ranges(layout: Sequence[str]) -> list[tuple[int, int, str]]:
    """Runs of consecutive buckets with one color: ``(lo, hi, color)``, inclusive, in order."""
    runs: list[tuple[int, int, str]] = []
    for bucket, color in enumerate(layout):
        if runs and runs[-1][2] == color and runs[-1][1] == bucket - 1:
            runs[-1] = (runs[-1][0], bucket, color)
        else:
            runs.append((bucket, bucket, color))
    return runs


def moved_buckets(before: Sequence[str], after: Sequence[str]) -> int:
    return sum(1 for a, b in zip(before, after, strict=True) if a != b)
