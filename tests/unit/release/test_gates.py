"""Gates: the exact health gate, the smoke gate, drain counting."""

from __future__ import annotations

from prism.core.readings import ServerReading
from prism.release.gates import health_gate, in_use, smoke_gate


def Row(
    proxy: str, server: str, status: str, scur: int = 0, check_status: str = "L7OK"
) -> ServerReading:
    return ServerReading(proxy, server, status, check_status, in_use=scur)


def test_health_gate_is_exact() -> None:
    """Only exactly UP after a passed check passes: UP 1/2, DOWN, MAINT, INI ... refuse."""
    assert health_gate([Row("shop.green", "s1", "UP")], "shop.green", "green").passed
    for status in ("UP 1/2", "DOWN", "MAINT", "DRAIN", "NOLB", "no check", "DOWN 1/3"):
        result = health_gate(
            [Row("shop.green", "s1", "UP"), Row("shop.green", "s2", status)], "shop.green", "green"
        )
        assert not result.passed, status
        assert f"s2 is {status}" in result.message
    unchecked = health_gate([Row("shop.green", "s1", "UP", 0, "INI")], "shop.green", "green")
    assert not unchecked.passed
    assert "a health check must have passed" in unchecked.message
    assert health_gate([Row("shop.green", "s1", "UP", 0, "* L7OK")], "shop.green", "green").passed
    empty = health_gate([Row("shop.blue", "s1", "UP")], "shop.green", "green")
    assert not empty.passed
    assert "no servers" in empty.message


def test_smoke_gate() -> None:
    """The smoke gate checks status and body text, and reports transport errors."""
    assert smoke_gate(200, "ok green", expect_status=200, expect_body="green").passed
    assert not smoke_gate(500, "", expect_status=200, expect_body=None).passed
    assert not smoke_gate(200, "blue", expect_status=200, expect_body="green").passed
    assert not smoke_gate(None, "", expect_status=200, expect_body=None, error="refused").passed


def test_in_use_ignores_negative_readings() -> None:
    """Drain counts in-use connections only."""
    assert in_use({"s1": 0, "s2": 3}) == 3
    assert in_use({"s1": -1}) == 0


def test_tripped_server_is_not_ready_even_while_up() -> None:
    """A server whose breaker tripped (last check HANA) fails the gate and is not ready,
    whether HAProxy shows it DOWN (mark-down) or still UP (fail-check, sudden-death)."""
    for status in ("DOWN", "UP"):
        tripped = ServerReading(
            "shop.green",
            "s2",
            status,
            "HANA",
            circuit="Detected 5 consecutive errors, last one was: HTTP status 500",
        )
        assert tripped.tripped
        assert not tripped.ready
        result = health_gate([Row("shop.green", "s1", "UP"), tripped], "shop.green", "green")
        assert not result.passed
        assert "circuit breaker tripped (s2 is " in result.message
        assert "Detected 5 consecutive errors" in result.message
    recovering = ServerReading("shop.green", "s2", "DOWN 1/3", "L7OK", trips=2)
    result = health_gate([recovering], "shop.green", "green")
    assert "s2 is DOWN 1/3 (circuit breaker trips: 2)" in result.message
    running = ServerReading("shop.green", "s2", "DOWN", "* HANA")
    assert running.tripped
    assert ServerReading("shop.green", "s2", "UP", "L7OK", trips=4).ready
