"""Capacity-safe rollback: a color that lost servers gets back only what its remaining
servers carried per server when the release started; the rest stays on the target."""

from __future__ import annotations

from prism.core.capacity import cap_rollback, ready_counts
from prism.core.readings import ServerReading


def test_a_color_with_every_server_keeps_its_whole_share() -> None:
    """Nothing lost: the rollback's weights pass through, with no note."""
    weights, notes = cap_rollback(
        {"blue": 100}, "green", {"blue": 100}, {"blue": 2, "green": 1}, {"blue": 2, "green": 1}
    )
    assert weights == {"blue": 100}
    assert notes == ()


def test_stable_that_lost_half_its_servers_gets_half_its_share() -> None:
    """Blue carried 100% on 2 servers; with 1 left it gets 50%, green keeps 50%, and says so."""
    weights, notes = cap_rollback(
        {"blue": 100}, "green", {"blue": 100}, {"blue": 2, "green": 1}, {"blue": 1, "green": 1}
    )
    assert weights == {"blue": 50, "green": 50}
    assert notes == (
        "blue has 1 of the 2 ready server(s) it had when the release started: "
        "it gets 50% instead of 100%, 50% stays on green",
    )


def test_the_cap_rounds_down_and_counts_only_colors_that_lost_servers() -> None:
    """Rainbow: red kept its servers, blue lost 1 of 3: blue 60% -> 40%, red untouched."""
    weights, notes = cap_rollback(
        {"blue": 60, "red": 40},
        "green",
        {"blue": 60, "red": 40},
        {"blue": 3, "red": 1},
        {"blue": 2, "red": 1},
    )
    assert weights == {"blue": 40, "green": 20, "red": 40}
    assert len(notes) == 1


def test_a_color_with_no_servers_left_gets_nothing() -> None:
    """0 of 2 ready: the whole share stays on the target (HAProxy's fallback covers it)."""
    weights, _ = cap_rollback({"blue": 100}, "green", {"blue": 100}, {"blue": 2}, {"blue": 0})
    assert weights == {"green": 100}


def test_uncounted_colors_are_not_capped() -> None:
    """A record from before the count (no up_then) rolls back as it always did."""
    weights, notes = cap_rollback({"blue": 100}, "green", {"blue": 100}, {}, {"blue": 0})
    assert weights == {"blue": 100}
    assert notes == ()


def test_ready_counts_count_a_fleet_server_once_and_only_if_ready_everywhere() -> None:
    """s1 ready on both nodes counts 1; s2 DOWN on one node does not count."""
    rows = [
        ServerReading("shop.blue", "s1", "UP", "L7OK", node="lb-1"),
        ServerReading("shop.blue", "s1", "UP", "L7OK", node="lb-2"),
        ServerReading("shop.blue", "s2", "UP", "L7OK", node="lb-1"),
        ServerReading("shop.blue", "s2", "DOWN", "L7STS", node="lb-2"),
        ServerReading("shop.green", "s1", "UP 1/2", "L7OK", node="lb-1"),
    ]
    assert ready_counts(rows, {"blue": "shop.blue", "green": "shop.green"}) == {
        "blue": 1,
        "green": 0,
    }
