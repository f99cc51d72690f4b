"""Properties of the bucket layout: exact shares, minimal movement, stickiness, validation."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Sequence
from typing import Any
from unittest import mock

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from prism.core import buckets as routing
from prism.core.buckets import (
    BUCKETS,
    check_weights,
    initial_layout,
    layout_ranges,
    moved_buckets,
    relayout,
)
from prism.core.model import parse_model
from prism.core.state import Routing
from prism.errors import InvalidInput

COLORS = ("blue", "green", "red", "c3", "c4", "c5")
PROPERTY = settings(max_examples=200, deadline=None)
#: Sequences carry 1..10 shifts each (5.5 on average): ~550 relayouts per property.
SEQUENCES = settings(max_examples=100, deadline=None)

# --------------------------------------------------------------------------- strategies


# Strategies are module-level and built from flat tuples of plain values (no
# @composite, no st.data): hypothesis draws them several times faster.

Weights = dict[str, int]
Scenario = tuple[tuple[str, ...], list[Weights]]
Shift = tuple[int, int, int] | Weights


def _gaps(mask: int, cuts: tuple[int, ...]) -> Weights:
    colors = [c for i, c in enumerate(COLORS) if mask >> i & 1]
    bounds = [0, *sorted(cuts[: len(colors) - 1]), 100]
    return {c: hi - lo for c, lo, hi in zip(colors, bounds[:-1], bounds[1:], strict=True)}


_CUT = st.one_of(st.sampled_from([0, 100]), st.integers(0, 100))

#: 1..6 distinct colors (a non-empty subset of COLORS, by bit mask) with whole
#: weights 0..100 summing to 100: the gaps between sorted cut points in 0..100.
#: Cuts are biased towards 0 and 100, so zero weights and a single color at
#: 100 come up often; shrinking heads for {"blue": 100}.
WEIGHTS: st.SearchStrategy[Weights] = st.builds(
    _gaps, st.integers(1, 2 ** len(COLORS) - 1), st.tuples(*[_CUT] * (len(COLORS) - 1))
)

#: A shift is brand-new weights, or (source, destination, amount): some share
#: of one live color moved to another color, possibly a new one.
SHIFTS: st.SearchStrategy[Shift] = st.one_of(
    st.tuples(st.integers(0, 5), st.integers(0, 4), st.integers(0, 100)), WEIGHTS
)


def _apply(before: Weights, shift: Shift) -> Weights:
    if isinstance(shift, dict):
        return shift
    i, j, amount = shift
    live = sorted(c for c, w in before.items() if w > 0)
    src = live[i % len(live)]
    dst = [c for c in COLORS if c != src][j]
    after = dict(before)
    after[src] -= min(amount, before[src])
    after[dst] = after.get(dst, 0) + min(amount, before[src])
    return after


def shuffled(layout: Sequence[str], seed: int | None) -> tuple[str, ...]:
    out = list(layout)
    if seed is not None:
        random.Random(seed).shuffle(out)
    return tuple(out)


def _scenario(start: Weights, seed: int | None, shifts: list[Shift]) -> Scenario:
    steps, current = [], start
    for shift in shifts:
        current = _apply(current, shift)
        steps.append(current)
    return shuffled(initial_layout(start), seed), steps


SEEDS = st.one_of(st.none(), st.integers(0, 2**32))

#: A consistent layout in any arrangement (not only ones relayout produces).
LAYOUTS: st.SearchStrategy[tuple[str, ...]] = st.builds(
    lambda w, seed: shuffled(initial_layout(w), seed), WEIGHTS, SEEDS
)

#: A starting layout, any consistent arrangement, and 1..10 successive weights.
SCENARIOS: st.SearchStrategy[Scenario] = st.builds(
    _scenario, WEIGHTS, SEEDS, st.lists(SHIFTS, min_size=1, max_size=10)
)


# --------------------------------------------------------------------------- helpers


def positive(w: dict[str, int]) -> dict[str, int]:
    return {c: n for c, n in w.items() if n > 0}


def owned(layout: Sequence[str], color: str) -> set[int]:
    return {b for b, c in enumerate(layout) if c == color}


def owners(layout: Sequence[str]) -> dict[str, set[int]]:
    """Each color's buckets, in one pass (missing colors own nothing)."""
    out: dict[str, set[int]] = {c: set() for c in COLORS}
    for bucket, color in enumerate(layout):
        out.setdefault(color, set()).add(bucket)
    return out


def expand(ranges: list[tuple[int, int, str]]) -> tuple[str, ...]:
    return tuple(c for lo, hi, c in ranges for _ in range(lo, hi + 1))


def assert_exact(layout: Sequence[str], w: dict[str, int]) -> None:
    """Property 1, for one layout: 100 buckets, each color owns exactly its weight."""
    assert len(layout) == BUCKETS
    assert Counter(layout) == Counter(positive(w))
    ranges = layout_ranges(layout)
    assert ranges[0][0] == 0
    assert ranges[-1][1] == BUCKETS - 1
    for (_, hi, _), (lo, _, _) in itertools.pairwise(ranges):
        assert lo == hi + 1  # disjoint, ordered, no gap
    per_color: Counter[str] = Counter()
    for lo, hi, color in ranges:
        assert lo <= hi
        per_color[color] += hi - lo + 1
    assert per_color == Counter(positive(w))


def cost(before: Sequence[str], w: dict[str, int]) -> int:
    """The least movement possible: buckets a color owns beyond its new weight.

    Lower bound: a color c can keep at most min(owned_c, w_c) of its buckets in
    any layout with weights w, so at most sum_c min(owned_c, w_c) buckets keep
    their color and at least sum_c (owned_c - min(owned_c, w_c)) =
    sum_c max(0, owned_c - w_c) buckets must change. Because both counts sum to
    100 this equals sum_c max(0, w_c - owned_c), i.e. half the L1 distance.
    """
    counts = Counter(before)
    return sum(max(0, counts[c] - w.get(c, 0)) for c in counts)


# --------------------------------------------------------------------------- 1. exact shares


@PROPERTY
@given(WEIGHTS)
@example({"blue": 100})
@example({"blue": 0, "green": 100})
@example({c: 100 // 6 + (1 if i < 100 % 6 else 0) for i, c in enumerate(COLORS)})
def test_initial_layout_gives_each_color_exactly_its_weight(w: dict[str, int]) -> None:
    """initial_layout has 100 buckets, owned by positive-weight colors in exact shares."""
    layout = initial_layout(w)
    assert_exact(layout, w)
    assert list(dict.fromkeys(layout)) == sorted(positive(w))  # contiguous, name order


@SEQUENCES
@given(SCENARIOS)
def test_every_relayout_gives_each_color_exactly_its_weight(
    case: Scenario,
) -> None:
    """After any sequence of shifts every layout matches its weights bucket for bucket."""
    layout, steps = case
    for w in steps:
        layout = relayout(layout, w)
        assert_exact(layout, w)


# --------------------------------------------------------------------------- 2. minimal movement


@SEQUENCES
@given(SCENARIOS)
def test_relayout_moves_the_minimum_number_of_buckets(
    case: Scenario,
) -> None:
    """Buckets moved == sum(max(0, owned - weight)) == half the L1 distance, the lower bound."""
    layout, steps = case
    for w in steps:
        new = relayout(layout, w)
        old_counts = Counter(layout)
        moved = moved_buckets(layout, new)
        assert moved == cost(layout, w)
        l1 = sum(abs(old_counts[c] - w.get(c, 0)) for c in set(old_counts) | set(w))
        assert 2 * moved == l1
        layout = new


@pytest.mark.parametrize("n", [4, 5])
def test_minimal_movement_brute_force_on_tiny_bucket_counts(n: int) -> None:
    """With n buckets, relayout matches the exhaustive optimum over every layout and weights."""
    colors = ("blue", "green", "red")

    def compositions(total: int) -> list[dict[str, int]]:
        out = []
        for a in range(total + 1):
            for b in range(total + 1 - a):
                out.append({"blue": a, "green": b, "red": total - a - b})
        return out

    def arrangements(w: dict[str, int]) -> set[tuple[str, ...]]:
        base = [c for c in colors for _ in range(w[c])]
        return set(itertools.permutations(base))

    targets = {tuple(w.values()): arrangements(w) for w in compositions(n)}
    with mock.patch.object(routing, "BUCKETS", n):
        for before in itertools.product(colors, repeat=n):
            for w in compositions(n):
                best = min(
                    sum(a != b for a, b in zip(before, cand, strict=True))
                    for cand in targets[tuple(w.values())]
                )
                new = relayout(before, w)
                assert Counter(new) == Counter(positive(w))
                assert moved_buckets(before, new) == best == cost(before, w)


# --------------------------------------------------------------------------- 3. stickiness


@SEQUENCES
@given(SCENARIOS)
def test_growing_colors_keep_all_buckets_and_shrinking_keep_a_subset(
    case: Scenario,
) -> None:
    """Growing/steady colors keep every bucket; shrinking ones keep a subset; only losers move."""
    layout, steps = case
    for w in steps:
        new = relayout(layout, w)
        old_counts = Counter(layout)
        old_owners, new_owners = owners(layout), owners(new)
        for color in set(old_counts) | set(w):
            before, after = old_owners[color], new_owners[color]
            if w.get(color, 0) >= old_counts[color]:
                assert before <= after
            else:
                assert after <= before
        for bucket, (a, b) in enumerate(zip(layout, new, strict=True)):
            if a != b:
                assert w.get(a, 0) < old_counts[a], f"bucket {bucket} left {a} which did not shrink"
        layout = new


@SEQUENCES
@given(SCENARIOS)
def test_relayout_follows_its_documented_tie_breaks(
    case: Scenario,
) -> None:
    """Shrinking colors keep their lowest buckets; freed buckets go ascending, in name order."""
    layout, steps = case
    for w in steps:
        new = relayout(layout, w)
        old_counts = Counter(layout)
        old_owners, new_owners = owners(layout), owners(new)
        for color, count in old_counts.items():
            if w.get(color, 0) < count:
                assert sorted(new_owners[color]) == sorted(old_owners[color])[: w.get(color, 0)]
        freed = sorted(b for b in range(BUCKETS) if layout[b] != new[b])
        gained = [
            b
            for color in sorted(positive(w))
            for b in sorted(new_owners[color] - old_owners[color])
        ]
        assert gained == freed
        layout = new


# --------------------------------------------------------------------------- 4. determinism


@PROPERTY
@given(LAYOUTS, WEIGHTS, st.integers(0, 2**32))
def test_relayout_is_deterministic_and_ignores_dict_order(
    layout: tuple[str, ...], w: dict[str, int], seed: int
) -> None:
    """Same layout and weights give the same result, whatever order the weights dict is in."""
    items = list(w.items())
    random.Random(seed).shuffle(items)
    first = relayout(layout, w)
    assert relayout(layout, w) == first
    assert relayout(layout, dict(items)) == first
    assert relayout(layout, {**w, "c5": w.get("c5", 0)}) == first  # an explicit zero


@PROPERTY
@given(LAYOUTS)
def test_relayout_with_unchanged_weights_moves_nothing(layout: tuple[str, ...]) -> None:
    """relayout(layout, its own weights) returns the layout unchanged."""
    w = dict(Counter(layout))
    assert relayout(layout, w) == layout
    assert moved_buckets(layout, relayout(layout, w)) == 0


@PROPERTY
@given(WEIGHTS, st.one_of(st.none(), st.integers(0, 99), st.integers(101, 200)), SEEDS)
def test_relayout_without_a_usable_layout_starts_fresh(
    w: dict[str, int], length: int | None, seed: int | None
) -> None:
    """No layout (or one of the wrong length) yields initial_layout(weights)."""
    current = None if length is None else shuffled((COLORS * 34)[:length], seed)
    assert relayout(current, w) == initial_layout(w)


# --------------------------------------------------------------------------- 5. canary


def test_canary_5_10_25_50_100_never_takes_a_bucket_back() -> None:
    """Blue→green 5, 10, 25, 50, 100: green buckets stay green; one move per point gained."""
    layout = initial_layout({"blue": 100})
    green: set[int] = set()
    for pct in (5, 10, 25, 50, 100):
        new = relayout(layout, {"blue": 100 - pct, "green": pct})
        assert green <= owned(new, "green")
        assert len(owned(new, "green")) == pct
        assert moved_buckets(layout, new) == pct - len(green)
        green, layout = owned(new, "green"), new
    assert layout == ("green",) * BUCKETS


@PROPERTY
@given(
    st.lists(
        st.tuples(st.integers(0, 100), st.integers(0, 100), st.integers(0, 100)),
        min_size=1,
        max_size=10,
    ),
    st.permutations(["blue", "red", "c3"]),
    st.integers(1, 3),
)
def test_monotone_canary_never_loses_a_bucket(
    steps: list[tuple[int, int, int]], order: list[str], n_others: int
) -> None:
    """While green's weight never falls, a bucket that became green stays green.

    The rest of the traffic is re-split arbitrarily among the other colors at
    every step, so this holds even when they reshuffle among themselves.
    """
    others = order[:n_others]
    layout = initial_layout({others[0]: 100})
    green: set[int] = set()
    for pct, *split in sorted(steps):
        cuts = sorted(min(x, 100 - pct) for x in split[: n_others - 1])
        bounds = [0, *cuts, 100 - pct]
        w = {c: hi - lo for c, lo, hi in zip(others, bounds[:-1], bounds[1:], strict=True)}
        w["green"] = pct
        layout = relayout(layout, w)
        assert green <= owned(layout, "green")
        green = owned(layout, "green")


# --------------------------------------------------------------------------- 6. validation


INVALID_WEIGHTS: list[dict[str, Any]] = [
    {},
    {"blue": 99},
    {"blue": 101},
    {"blue": 50, "green": 49},
    {"blue": 50, "green": 51},
    {"blue": 101, "green": -1},
    {"blue": -100, "green": 100, "red": 100},
    {"blue": 200, "green": -100},
    {"blue": 50.0, "green": 50},
    {"blue": 99.5, "green": 0.5},
    {"blue": "100"},
    {"blue": None, "green": 100},
    {"blue": True, "green": 99},
    {"blue": False, "green": 100},
    {"blue": [100]},
]


#: What check_weights says about a bad weight, or about weights not summing to 100.
BAD_WEIGHTS = r"must be a whole number from 0 to 100, not |weights must sum to 100, these sum to "
#: ... and what pydantic says first about a non-integer in a Routing field.
NOT_AN_INT = "Input should be a valid integer"


@pytest.mark.parametrize("w", INVALID_WEIGHTS, ids=repr)
def test_check_weights_rejects_bad_weights(w: dict[str, Any]) -> None:
    """Sums other than 100, negatives, >100, non-integers and bools raise InvalidInput."""
    with pytest.raises(InvalidInput, match=BAD_WEIGHTS):
        check_weights(w)
    with pytest.raises(InvalidInput, match=BAD_WEIGHTS):
        relayout(None, w)
    with pytest.raises(InvalidInput, match=BAD_WEIGHTS):
        Routing.moved(None, w)


@PROPERTY
@given(
    WEIGHTS,
    st.sampled_from(COLORS),
    st.one_of(
        st.integers(max_value=-1),
        st.integers(min_value=101),
        st.floats(allow_nan=True),
        st.booleans(),
        st.text(max_size=3),
        st.none(),
    ),
)
def test_check_weights_rejects_any_bad_value(w: dict[str, int], color: str, bad: Any) -> None:
    """Any weight that is not a whole number 0..100 is rejected, whatever the others are."""
    with pytest.raises(InvalidInput, match=f"weight of {color!r} must be a whole number"):
        check_weights({**w, color: bad})


@PROPERTY
@given(WEIGHTS, st.integers(1, 100), st.booleans())
def test_check_weights_rejects_wrong_sums(w: dict[str, int], delta: int, up: bool) -> None:
    """Whole weights 0..100 that do not sum to exactly 100 are rejected."""
    if up:
        bad = {**w, "extra": delta}
    else:
        bad, left = dict(w), delta
        for color in sorted(bad):
            take = min(left, bad[color])
            bad[color] -= take
            left -= take
    assert sum(bad.values()) == 100 + (delta if up else -delta)
    with pytest.raises(InvalidInput, match="sum to 100"):
        check_weights(bad)


@PROPERTY
@given(WEIGHTS)
def test_check_weights_accepts_and_normalises_good_weights(w: dict[str, int]) -> None:
    """Valid weights come back sorted by color with zero weights dropped, values unchanged."""
    clean = check_weights(w)
    assert clean == positive(w)
    assert list(clean) == sorted(clean)


@SEQUENCES
@given(SCENARIOS, st.booleans())
def test_routing_moved_is_valid_and_records_previous(case: Scenario, keep: bool) -> None:
    """Routing.moved output validates, round-trips, and records the weights it replaced."""
    _, steps = case
    current: Routing | None = None
    for w in steps:
        new = Routing.moved(current, w, keep_previous=keep)
        assert new.weights == check_weights(w)
        assert new.layout == relayout(current.layout if current else None, w)
        if current is None:
            assert new.previous is None
        else:
            assert new.previous == (current.previous if keep else current.weights)
        assert parse_model(Routing, new.model_dump(mode="json")) == new
        current = new


def test_routing_only_and_moved_from_it() -> None:
    """Routing.only puts all 100 buckets on one color; moving from it records it as previous."""
    only = Routing.only("blue")
    assert only.weights == {"blue": 100}
    assert only.layout == ("blue",) * BUCKETS
    assert only.previous is None
    canary = Routing.moved(only, {"blue": 90, "green": 10})
    assert canary.previous == {"blue": 100}
    assert canary.layout == ("blue",) * 90 + ("green",) * 10  # blue keeps its lowest
    back = Routing.moved(canary, {"blue": 100, "green": 0}, keep_previous=True)
    assert back.previous == {"blue": 100}
    assert back.weights == {"blue": 100}


@PROPERTY
@given(LAYOUTS, st.integers(0, BUCKETS - 1), st.integers(0, len(COLORS) - 2))
def test_routing_rejects_a_layout_inconsistent_with_its_weights(
    layout: tuple[str, ...], bucket: int, pick: int
) -> None:
    """Changing one bucket's color, or the layout's length, makes Routing invalid."""
    w = check_weights(Counter(layout))
    assert Routing(weights=w, layout=layout).layout == layout
    other = [c for c in COLORS if c != layout[bucket]][pick]
    recolored = (*layout[:bucket], other, *layout[bucket + 1 :])
    for bad, why in (
        (recolored, "a share other than its weight"),
        (layout[:-1], "a layout has exactly 100 buckets"),
        ((*layout, layout[0]), "a layout has exactly 100 buckets"),
    ):
        with pytest.raises(ValidationError, match=why):
            Routing(weights=w, layout=bad)
        with pytest.raises(InvalidInput, match=why):
            parse_model(Routing, {"weights": w, "layout": list(bad)})


@pytest.mark.parametrize(
    "previous", [None, {"blue": 100}, {"red": 0, "green": 30, "blue": 70}], ids=repr
)
def test_routing_stores_weights_sorted_without_zeros(previous: dict[str, int] | None) -> None:
    """Routing normalises weights and previous as check_weights does: sorted, zeros dropped."""
    layout = ("blue",) * 50 + ("green",) * 50
    r = Routing(weights={"red": 0, "green": 50, "blue": 50}, layout=layout, previous=previous)
    assert list(r.weights.items()) == [("blue", 50), ("green", 50)]
    if previous is None:
        assert r.previous is None
    else:
        assert r.previous is not None
        assert list(r.previous.items()) == list(check_weights(previous).items())


@pytest.mark.parametrize("w", INVALID_WEIGHTS, ids=repr)
def test_routing_rejects_what_check_weights_rejects(w: dict[str, Any]) -> None:
    """Routing is as strict as check_weights, for weights and for previous."""
    blue = ("blue",) * BUCKETS
    with pytest.raises((ValidationError, InvalidInput), match=f"{BAD_WEIGHTS}|{NOT_AN_INT}"):
        Routing(weights=w, layout=blue)
    with pytest.raises((ValidationError, InvalidInput), match=f"{BAD_WEIGHTS}|{NOT_AN_INT}"):
        Routing(weights={"blue": 100}, layout=blue, previous=w)
    with pytest.raises(InvalidInput, match=f"{BAD_WEIGHTS}|weights\\.blue: {NOT_AN_INT}"):
        parse_model(Routing, {"weights": w, "layout": list(blue)})
    with pytest.raises(InvalidInput, match=f"{BAD_WEIGHTS}|previous\\.blue: {NOT_AN_INT}"):
        parse_model(Routing, {"weights": {"blue": 100}, "layout": list(blue), "previous": w})


def test_routing_rejects_bad_color_names_in_the_layout() -> None:
    """Layout entries must be valid color names."""
    with pytest.raises(InvalidInput, match=r"layout\.0: Value error, invalid name: must match"):
        parse_model(Routing, {"weights": {"blue": 100}, "layout": ["Blue"] * BUCKETS})


# --------------------------------------------------------------------------- 7. ranges


@PROPERTY
@given(st.one_of(LAYOUTS, st.lists(st.sampled_from(COLORS), max_size=120).map(tuple)))
def test_layout_ranges_round_trip(layout: tuple[str, ...]) -> None:
    """Expanding layout_ranges gives back the layout; adjacent runs differ in color."""
    ranges = layout_ranges(layout)
    assert expand(ranges) == layout
    assert all(a[2] != b[2] for a, b in itertools.pairwise(ranges))
    if layout:
        assert [lo for lo, _, _ in ranges] == [0] + [hi + 1 for _, hi, _ in ranges[:-1]]
        assert ranges[-1][1] == len(layout) - 1
    else:
        assert ranges == []


def test_layout_ranges_of_a_canary() -> None:
    """A 10% canary from all-blue is two runs: blue keeps 0-89, green gets 90-99."""
    layout = relayout(initial_layout({"blue": 100}), {"blue": 90, "green": 10})
    assert layout_ranges(layout) == [(0, 89, "blue"), (90, 99, "green")]
