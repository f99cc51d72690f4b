"""Mann-Whitney U against SciPy's asymptotic test (the oracle, in tests only) and known
answers: identical samples, shifted ones, heavy tails, tiny samples, ties."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import mannwhitneyu

from prism.core.mannwhitney import Alternative, mann_whitney_u
from prism.errors import InvalidInput

SIDES: tuple[Alternative, ...] = ("two-sided", "greater", "less")


def oracle(x: list[float], y: list[float], side: Alternative) -> tuple[float, float]:
    found = mannwhitneyu(x, y, alternative=side, method="asymptotic", use_continuity=True)
    return float(found.statistic), float(found.pvalue)


@pytest.mark.parametrize("side", SIDES)
def test_identical_samples_show_no_difference(side: Alternative) -> None:
    """The same 30 values on both sides: U is half the pairs, AUC 0.5, p near 1."""
    rng = random.Random(1)
    x = [rng.gauss(100, 10) for _ in range(30)]
    got = mann_whitney_u(x, list(x), side)
    assert got.u == 450
    assert got.auc == 0.5
    assert got.p == pytest.approx(oracle(x, list(x), side)[1], abs=1e-12)
    assert got.p > 0.5


def test_a_shifted_sample_is_greater() -> None:
    """Latencies 20% higher: one-sided p tiny for greater, near 1 for less; as SciPy says."""
    rng = random.Random(2)
    base = [rng.gauss(100, 10) for _ in range(40)]
    shifted = [rng.gauss(120, 10) for _ in range(40)]
    for side in SIDES:
        u, p = oracle(shifted, base, side)
        got = mann_whitney_u(shifted, base, side)
        assert got.u == u
        assert got.p == pytest.approx(p, rel=1e-9, abs=1e-15)
    assert mann_whitney_u(shifted, base, "greater").p < 1e-6
    assert mann_whitney_u(shifted, base, "less").p > 0.99
    assert mann_whitney_u(shifted, base).auc > 0.8


def test_heavy_tails_do_not_fool_a_rank_test() -> None:
    """Same median, one side with a few enormous outliers (Pareto tail): ranks barely move,
    so no difference is found where a mean would double."""
    rng = random.Random(3)
    base = [rng.lognormvariate(0, 0.5) for _ in range(50)]
    tailed = [rng.lognormvariate(0, 0.5) for _ in range(47)] + [1e3, 5e3, 1e4]
    got = mann_whitney_u(tailed, base, "greater")
    assert got.p == pytest.approx(oracle(tailed, base, "greater")[1], rel=1e-9)
    assert got.p > 0.01
    assert sum(tailed) / len(tailed) > 2 * sum(base) / len(base)


def test_tiny_samples_match_the_oracle_and_prove_little() -> None:
    """Two against three, completely separated: still p > 0.05 two-sided."""
    x, y = [10.0, 11.0], [1.0, 2.0, 3.0]
    got = mann_whitney_u(x, y)
    u, p = oracle(x, y, "two-sided")
    assert (got.u, got.auc) == (u, 1.0)
    assert got.p == pytest.approx(p, rel=1e-12)
    assert got.p > 0.05


def test_ties_are_corrected_as_scipy_does() -> None:
    """Per-tick 5xx ratios are mostly 0: many ties, corrected in the variance."""
    x = [0.0] * 12 + [0.1, 0.2, 0.2]
    y = [0.0] * 14 + [0.05]
    for side in SIDES:
        assert mann_whitney_u(x, y, side).p == pytest.approx(oracle(x, y, side)[1], rel=1e-12)


def test_all_values_tied_give_no_evidence() -> None:
    """Nothing to rank: p is 1 (SciPy answers NaN)."""
    got = mann_whitney_u([0.0, 0.0, 0.0], [0.0, 0.0])
    assert got.p == 1.0
    assert got.auc == 0.5


def test_bad_input_is_refused() -> None:
    """Empty samples, NaN and unknown alternatives raise InvalidInput."""
    with pytest.raises(InvalidInput, match="at least one value"):
        mann_whitney_u([], [1.0])
    with pytest.raises(InvalidInput, match="NaN"):
        mann_whitney_u([float("nan")], [1.0])
    with pytest.raises(InvalidInput, match="alternative"):
        mann_whitney_u([1.0], [2.0], "sideways")  # type: ignore[arg-type]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.integers(0, 20), min_size=1, max_size=25),
    st.lists(st.integers(0, 20), min_size=1, max_size=25),
    st.sampled_from(SIDES),
)
def test_matches_scipy_on_random_samples(x: list[int], y: list[int], side: Alternative) -> None:
    """Any samples of small integers (plenty of ties): U and p as SciPy computes them."""
    got = mann_whitney_u([float(v) for v in x], [float(v) for v in y], side)
    u, p = oracle([float(v) for v in x], [float(v) for v in y], side)
    assert got.u == u
    if p == p:  # SciPy gives NaN when every value is tied; we give 1
        assert got.p == pytest.approx(p, rel=1e-9, abs=1e-12)
    else:
        assert got.p == 1.0
