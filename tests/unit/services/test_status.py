"""A server's status entry: health, weight, and why it is not whole (slow, tripped, warming)."""

from __future__ import annotations

from prism.core.readings import ServerReading
from prism.services.status import server_status


def test_weight_and_reasons_of_one_node() -> None:
    """The weight Prism set, its reason, a tripped breaker, a warm-up and the trip count."""
    plain = server_status([ServerReading("shop.blue", "s1", "UP", "L7OK")])
    assert plain == {"status": "UP", "check": "L7OK", "in_use": 0, "weight": 100, "trips": 0}
    lowered = server_status(
        [
            ServerReading(
                "shop.blue",
                "s2",
                "UP",
                "L7OK",
                user_weight=40,
                slow="slow: 730 ms vs 95 ms median",
                trips=2,
                warming=63,
            )
        ]
    )
    assert lowered["weight"] == 40
    assert lowered["slow"] == "slow: 730 ms vs 95 ms median"
    assert (lowered["trips"], lowered["warming"]) == (2, 63)
    tripped = server_status(
        [ServerReading("shop.blue", "s3", "DOWN", "HANA", circuit="Detected 5 errors")]
    )
    assert tripped["circuit"] == "Detected 5 errors"


def test_fleet_weight_is_the_lowest_and_each_node_keeps_its_own() -> None:
    """Each node judges on its own: status shows the lowest weight and every node's."""
    entry = server_status(
        [
            ServerReading("shop.blue", "s2", "UP", "L7OK", node="lb-1"),
            ServerReading("shop.blue", "s2", "UP", "L7OK", node="lb-2", user_weight=70, slow="x"),
        ]
    )
    assert entry["weight"] == 70
    assert entry["slow"] == "x"
    assert entry["nodes"]["lb-1"]["weight"] == 100
    assert entry["nodes"]["lb-2"] == {
        "status": "UP",
        "check": "L7OK",
        "in_use": 0,
        "weight": 70,
        "slow": "x",
    }
