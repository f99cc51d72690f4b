"""set_share: exact target share, total 100, only donors move, proportional and deterministic."""

from __future__ import annotations

import random
import re
from collections.abc import Collection

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from prism.core.shares import apportion, set_share
from prism.errors import Conflict, InvalidInput

COLORS = ("blue", "green", "red", "c3", "c4", "c5")
PROPERTY = settings(max_examples=300, deadline=None)

Weights = dict[str, int]

# --------------------------------------------------------------------------- strategies


def _gaps(mask: int, cuts: tuple[int, ...]) -> Weights:
    colors = [c for i, c in enumerate(COLORS) if mask >> i & 1]
    bounds = [0, *sorted(cuts[: len(colors) - 1]), 100]
    return {c: hi - lo for c, lo, hi in zip(colors, bounds[:-1], bounds[1:], strict=True)}


_CUT = st.one_of(st.sampled_from([0, 50, 100]), st.integers(0, 100))

#: 1..6 colors with whole weights summing to 100 (zeros and 100s come up often).
WEIGHTS = st.builds(
    _gaps, st.integers(1, 2 ** len(COLORS) - 1), st.tuples(*[_CUT] * (len(COLORS) - 1))
)
TARGETS = st.sampled_from(COLORS)
SHARES = st.one_of(st.sampled_from([0, 1, 50, 99, 100]), st.integers(0, 100))
#: explicit donors as a bit mask over COLORS (may include the target, or be empty)
MASKS = st.integers(0, 2 ** len(COLORS) - 1)


def _subset(mask: int) -> set[str]:
    return {c for i, c in enumerate(COLORS) if mask >> i & 1}


def _changed(before: Weights, after: Weights) -> set[str]:
    return {c for c in {*before, *after} if before.get(c, 0) != after.get(c, 0)}


def _try(
    w: Weights,
    target: str,
    share: int,
    *,
    donors: Collection[str] | None = None,
    source: str | None = None,
) -> Weights | None:
    """The new weights, or None when set_share refuses with Conflict."""
    try:
        return set_share(w, target, share, donors=donors, source=source)
    except Conflict:
        return None


# --------------------------------------------------------------------------- properties


@PROPERTY
@given(WEIGHTS, TARGETS, SHARES, st.one_of(st.none(), MASKS))
@example({"blue": 100}, "green", 30, None)
@example({"blue": 50, "red": 50}, "green", 1, None)
def test_result_sums_to_100_and_target_holds_exactly_the_share(
    w: Weights, target: str, share: int, mask: int | None
) -> None:
    """Whenever set_share succeeds, the target has the share, the total is 100, no zeros."""
    donors = None if mask is None else _subset(mask)
    after = _try(w, target, share, donors=donors)
    if after is None:
        return
    assert sum(after.values()) == 100
    assert after.get(target, 0) == share
    assert all(v > 0 for v in after.values())
    assert list(after) == sorted(after)


@PROPERTY
@given(WEIGHTS, TARGETS, SHARES, MASKS)
def test_only_target_and_donors_change(w: Weights, target: str, share: int, mask: int) -> None:
    """Colors outside the donors keep their weight exactly: concurrent releases don't collide."""
    donors = _subset(mask)
    after = _try(w, target, share, donors=donors)
    if after is None:
        return
    assert _changed(w, after) <= donors | {target}
    for color in set(COLORS) - donors - {target}:
        assert after.get(color, 0) == w.get(color, 0)


@PROPERTY
@given(WEIGHTS, TARGETS, SHARES)
def test_default_donors_are_the_other_colors_with_traffic(
    w: Weights, target: str, share: int
) -> None:
    """Without donors, taking share only touches colors that held traffic before."""
    after = _try(w, target, share)
    if after is None or share < w.get(target, 0):
        return
    holders = {c for c, v in w.items() if v > 0 and c != target}
    assert _changed(w, after) <= holders | {target}


@PROPERTY
@given(WEIGHTS, TARGETS, SHARES, st.one_of(st.none(), MASKS))
def test_donors_all_move_against_the_target(
    w: Weights, target: str, share: int, mask: int | None
) -> None:
    """Every donor changes in the direction opposite to the target, never below 0."""
    donors = None if mask is None else _subset(mask)
    after = _try(w, target, share, donors=donors)
    if after is None:
        return
    step = share - w.get(target, 0)
    for color in _changed(w, after) - {target}:
        change = after.get(color, 0) - w.get(color, 0)
        assert change * step < 0
        assert after.get(color, 0) >= 0


@PROPERTY
@given(WEIGHTS, TARGETS, SHARES, MASKS)
def test_each_donor_moves_within_1_of_its_proportional_amount(
    w: Weights, target: str, share: int, mask: int
) -> None:
    """A donor's change is its exact proportional part of the difference, rounded down or up."""
    donors = _subset(mask) - {target}
    after = _try(w, target, share, donors=donors)
    if after is None:
        return
    diff = abs(share - w.get(target, 0))
    held = {c: w.get(c, 0) for c in donors}
    total = sum(held.values())
    if diff == 0 or total == 0:
        return
    for color in donors:
        exact = diff * held[color] / total
        moved = abs(after.get(color, 0) - held[color])
        assert exact - 1 < moved < exact + 1


@PROPERTY
@given(WEIGHTS, TARGETS, SHARES, MASKS)
def test_refuses_exactly_when_the_donors_hold_too_little(
    w: Weights, target: str, share: int, mask: int
) -> None:
    """Conflict is raised iff the target must grow by more than its donors hold."""
    donors = _subset(mask) - {target}
    need = share - w.get(target, 0)
    available = sum(w.get(c, 0) for c in donors)
    short = need > available or (need < 0 and not donors)
    assert (_try(w, target, share, donors=donors) is None) == short


@PROPERTY
@given(WEIGHTS, TARGETS, SHARES, st.one_of(st.none(), MASKS), st.randoms(use_true_random=False))
def test_result_does_not_depend_on_input_order(
    w: Weights, target: str, share: int, mask: int | None, rnd: random.Random
) -> None:
    """The same weights and donors in any insertion order give the same result, same order."""
    donors = None if mask is None else sorted(_subset(mask))
    items = list(w.items())
    rnd.shuffle(items)
    shuffled_donors = None if donors is None else rnd.sample(donors, len(donors))
    first = _try(w, target, share, donors=donors)
    again = _try(dict(items), target, share, donors=shuffled_donors)
    assert first == again
    assert first is None or again is None or list(first.items()) == list(again.items())


@PROPERTY
@given(WEIGHTS, TARGETS, SHARES, MASKS)
def test_round_trip_restores_the_weights_when_the_split_is_exact(
    w: Weights, target: str, share: int, mask: int
) -> None:
    """Moving to a share and back restores the original when each donor's part is whole."""
    donors = _subset(mask) - {target}
    original = w.get(target, 0)
    diff = abs(share - original)
    total = sum(w.get(c, 0) for c in donors)
    if total == 0 or any(diff * w.get(c, 0) % total for c in donors):
        return
    there = _try(w, target, share, donors=donors)
    if there is None:
        return
    back = set_share(there, target, original, donors=donors, restore=w)
    assert back == {c: v for c, v in sorted(w.items()) if v > 0}


@PROPERTY
@given(WEIGHTS, TARGETS, SHARES, st.sampled_from(COLORS))
def test_a_named_source_is_the_only_color_that_changes(
    w: Weights, target: str, share: int, source: str
) -> None:
    """With a source, only the target and the source change."""
    if source == target:
        return
    after = _try(w, target, share, source=source)
    if after is None:
        assert share - w.get(target, 0) > w.get(source, 0)
        return
    assert _changed(w, after) <= {target, source}
    assert sum(after.values()) == 100


@PROPERTY
@given(st.integers(0, 100), st.dictionaries(st.sampled_from(COLORS), st.integers(0, 100)))
def test_apportion_parts_are_whole_exact_and_within_1(amount: int, basis: dict[str, int]) -> None:
    """apportion's parts sum to the amount and each is within 1 of its exact share."""
    total = sum(basis.values())
    if total == 0:
        with pytest.raises(InvalidInput, match="non-negative weights with a positive total"):
            apportion(amount, basis)
        return
    parts = apportion(amount, basis)
    assert set(parts) == set(basis)
    assert sum(parts.values()) == amount
    for color, part in parts.items():
        assert abs(part - amount * basis[color] / total) < 1


# --------------------------------------------------------------------------- examples


@pytest.mark.parametrize(
    ("weights", "target", "share", "kwargs", "expected"),
    [
        pytest.param({"blue": 100}, "green", 10, {}, {"blue": 90, "green": 10}, id="first-canary"),
        pytest.param(
            {"blue": 70, "red": 30},
            "green",
            50,
            {},
            {"blue": 35, "green": 50, "red": 15},
            id="proportional",
        ),
        pytest.param(
            {"blue": 50, "red": 50},
            "green",
            1,
            {},
            {"blue": 49, "green": 1, "red": 50},
            id="tie-goes-to-first-name",
        ),
        pytest.param(
            {"blue": 90, "green": 10}, "green", 100, {}, {"green": 100}, id="full-drops-zeros"
        ),
        pytest.param(
            {"blue": 80, "green": 10, "red": 10},
            "green",
            30,
            {"donors": {"blue"}},
            {"blue": 60, "green": 30, "red": 10},
            id="concurrent-release-untouched",
        ),
        pytest.param(
            {"blue": 60, "red": 20, "green": 20},
            "green",
            40,
            {"source": "red"},
            {"blue": 60, "green": 40},
            id="source-only",
        ),
        pytest.param(
            {"blue": 35, "green": 50, "red": 15},
            "green",
            0,
            {},
            {"blue": 70, "red": 30},
            id="give-back-proportionally",
        ),
        pytest.param(
            {"green": 100},
            "green",
            0,
            {"donors": {"blue"}},
            {"blue": 100},
            id="rollback-to-dropped-color",
        ),
        pytest.param(
            {"green": 100},
            "green",
            0,
            {"donors": {"blue", "red"}, "restore": {"blue": 60, "red": 40}},
            {"blue": 60, "red": 40},
            id="rollback-by-restore",
        ),
        pytest.param(
            {"green": 100},
            "green",
            0,
            {"restore": {"blue": 60, "red": 40}},
            {"blue": 60, "red": 40},
            id="default-donors-from-restore",
        ),
        pytest.param(
            {"green": 100},
            "green",
            0,
            {"donors": {"blue", "red", "c3"}},
            {"blue": 34, "c3": 33, "red": 33},
            id="rollback-equally",
        ),
        pytest.param(
            {"blue": 40, "green": 60},
            "green",
            60,
            {"donors": set()},
            {"blue": 40, "green": 60},
            id="no-change-needs-no-donor",
        ),
        pytest.param(
            {"blue": 0, "green": 100}, "blue", 0, {}, {"green": 100}, id="zero-stays-dropped"
        ),
    ],
)
def test_set_share_examples(
    weights: Weights, target: str, share: int, kwargs: dict[str, object], expected: Weights
) -> None:
    """Worked examples: canaries, ties, concurrent releases, sources and rollbacks."""
    assert set_share(weights, target, share, **kwargs) == expected  # type: ignore[arg-type]


def test_round_trip_simple_canary() -> None:
    """blue 60 / red 40 → green 50 → green 0 gives back blue 60 / red 40."""
    there = set_share({"blue": 60, "red": 40}, "green", 50)
    assert there == {"blue": 30, "green": 50, "red": 20}
    assert set_share(there, "green", 0) == {"blue": 60, "red": 40}


def test_conflict_names_the_donors_and_their_share() -> None:
    """Too little share to take raises Conflict with the numbers in the message."""
    with pytest.raises(Conflict, match="cannot give green 50%") as caught:
        set_share({"blue": 30, "red": 70}, "green", 50, donors={"blue"})
    assert caught.value.message == (
        "cannot give green 50%: it holds 0% and the colors it may take from (blue) hold only 30%"
    )


def test_conflict_when_nothing_to_give_back_to() -> None:
    """Lowering a color that holds everything, with nowhere to go, is a Conflict."""
    with pytest.raises(Conflict, match="no color to give 100% back to"):
        set_share({"green": 100}, "green", 0)


def test_source_outside_donors_is_a_conflict() -> None:
    """A source another release is moving (not among the donors) is refused."""
    with pytest.raises(Conflict, match="cannot take from red"):
        set_share({"blue": 50, "red": 50}, "green", 10, donors={"blue"}, source="red")


def test_target_among_donors_is_ignored() -> None:
    """Passing the target among its donors changes nothing: it never donates to itself."""
    assert set_share({"blue": 100}, "green", 20, donors={"blue", "green"}) == {
        "blue": 80,
        "green": 20,
    }


@pytest.mark.parametrize("share", [-1, 101, 5.5, True, "50", None])
def test_bad_share_is_invalid_input(share: object) -> None:
    """A share must be a whole number 0..100 (bools and strings rejected)."""
    pattern = f"a share is a whole number from 0 to 100, not {re.escape(repr(share))}$"
    with pytest.raises(InvalidInput, match=pattern):
        set_share({"blue": 100}, "green", share)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("weights", "kwargs", "why"),
    [
        pytest.param(
            {"blue": 90}, {}, "weights must sum to 100, these sum to 90", id="sum-not-100"
        ),
        pytest.param(
            {"blue": 110, "red": -10},
            {},
            "weight of 'blue' must be a whole number from 0 to 100, not 110",
            id="out-of-range",
        ),
        pytest.param(
            {"blue": 100},
            {"source": "green"},
            "'green' cannot be its own source",
            id="source-is-target",
        ),
        pytest.param(
            {"blue": 100},
            {"restore": {"blue": -1}},
            "restore weight of 'blue' must be a whole number from 0 to 100, not -1",
            id="bad-restore",
        ),
    ],
)
def test_bad_inputs_are_invalid_input(
    weights: Weights, kwargs: dict[str, object], why: str
) -> None:
    """Malformed weights, a target as its own source or bad restore weights are rejected."""
    with pytest.raises(InvalidInput, match=why):
        set_share(weights, "green", 10, **kwargs)  # type: ignore[arg-type]


def test_input_mapping_is_not_modified() -> None:
    """set_share returns new weights and leaves its argument alone."""
    weights = {"blue": 70, "red": 30}
    set_share(weights, "green", 50)
    assert weights == {"blue": 70, "red": 30}
