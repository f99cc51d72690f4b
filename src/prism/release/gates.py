"""Gates: pure judgements over HAProxy read-outs.

A gate takes parsed read-outs and returns a :class:`GateResult`; it never
talks to HAProxy itself. The health gate is exact on purpose: a server is
ready only when its status is exactly ``UP``. ``UP 1/2`` is still short of its
rise count, and accepting it once switched traffic to a dead version.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["PASSED_CHECKS", "GateResult", "ServerReading", "health_gate", "in_use", "smoke_gate"]


class _StatLike(Protocol):
    @property
    def proxy(self) -> str: ...
    @property
    def server(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def scur(self) -> int: ...
    @property
    def check_status(self) -> str: ...


#: Last-check results that mean a check really ran and passed ("* " marks one in progress).
PASSED_CHECKS = frozenset({"L4OK", "L6OK", "L7OK"})


@dataclass(frozen=True)
class ServerReading:
    server: str
    status: str
    scur: int
    check_status: str = ""

    @property
    def checked_ok(self) -> bool:
        return self.check_status.removeprefix("* ").strip() in PASSED_CHECKS


@dataclass(frozen=True)
class GateResult:
    """Whether a gate passed, why, and the readings it judged."""

    name: str
    passed: bool
    message: str
    readings: dict[str, Any] = field(default_factory=dict)


def server_readings(rows: Iterable[_StatLike], backend: str) -> list[ServerReading]:
    """The server rows of one backend from ``show stat``, without FRONTEND/BACKEND lines."""
    return [
        ServerReading(row.server, row.status, row.scur, row.check_status)
        for row in rows
        if row.proxy == backend and row.server not in ("FRONTEND", "BACKEND")
    ]


def health_gate(rows: Iterable[_StatLike], backend: str, color: str) -> GateResult:
    """Pass only if the backend has at least one server and every one is exactly ``UP``
    with a health check that really ran and passed (HAProxy reports a server it has
    not checked yet as ``UP`` too)."""
    servers = server_readings(rows, backend)
    readings = {
        "servers": {s.server: s.status for s in servers},
        "checks": {s.server: s.check_status for s in servers},
    }
    if not servers:
        return GateResult(
            "health",
            False,
            f"color {color!r} has no servers: add servers before releasing to it",
            readings,
        )
    not_up = [s for s in servers if s.status != "UP"]
    if not_up:
        listed = ", ".join(f"{s.server} is {s.status}" for s in not_up)
        return GateResult(
            "health",
            False,
            f"color {color!r} is not ready: {listed} (every server must be exactly UP)",
            readings,
        )
    unchecked = [s for s in servers if not s.checked_ok]
    if unchecked:
        listed = ", ".join(f"{s.server} last check {s.check_status or 'none'}" for s in unchecked)
        return GateResult(
            "health",
            False,
            f"color {color!r} is not ready: {listed} (a health check must have passed)",
            readings,
        )
    return GateResult("health", True, f"all {len(servers)} server(s) of {color!r} are UP", readings)


def smoke_gate(
    status: int | None,
    body: str,
    *,
    expect_status: int | None,
    expect_body: str | None,
    error: str | None = None,
) -> GateResult:
    """Judge one smoke request's outcome against its expectations."""
    readings: dict[str, Any] = {"status": status, "body": body[:200]}
    if error is not None:
        return GateResult("smoke", False, f"smoke request failed: {error}", readings)
    if expect_status is not None and status != expect_status:
        return GateResult(
            "smoke", False, f"smoke request answered {status}, expected {expect_status}", readings
        )
    if expect_body is not None and expect_body not in body:
        return GateResult(
            "smoke", False, f"smoke response does not contain {expect_body!r}", readings
        )
    return GateResult("smoke", True, f"smoke request answered {status}", readings)


def in_use(used_by_server: Mapping[str, int]) -> int:
    """Connections still in use across a backend's servers (idle pooled ones don't count)."""
    return sum(max(0, n) for n in used_by_server.values())
