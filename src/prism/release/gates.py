"""Gates: pure judgements over HAProxy read-outs.

A gate takes parsed read-outs and returns a :class:`GateResult`; it never
talks to HAProxy itself. The health gate is exact on purpose: a server is
ready only when its status is exactly ``UP``. ``UP 1/2`` is still short of its
rise count, and accepting it once switched traffic to a dead version. A server
whose circuit breaker tripped is not ready either, even while HAProxy still
shows it ``UP`` (``fail-check`` and ``sudden-death`` do not take it down at once).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prism.core.readings import ServerReading

__all__ = ["GateResult", "health_gate", "in_use", "smoke_gate"]


@dataclass(frozen=True)
class GateResult:
    """Whether a gate passed, why, and the readings it judged."""

    name: str
    passed: bool
    message: str
    readings: dict[str, Any] = field(default_factory=dict)


def health_gate(servers: Iterable[ServerReading], backend: str, color: str) -> GateResult:
    """Pass only if the backend has at least one server and every one is exactly ``UP``
    with a health check that really ran and passed (HAProxy reports a server it has
    not checked yet as ``UP`` too) and no tripped circuit, on every node that reports it."""
    rows = [s for s in servers if s.backend == backend and not s.absent]
    readings = {
        "servers": {s.where: s.status for s in rows},
        "checks": {s.where: s.check_status for s in rows},
    }
    if not rows:
        return GateResult(
            "health",
            False,
            f"color {color!r} has no servers: add servers before releasing to it",
            readings,
        )
    tripped = [s for s in rows if s.tripped]
    if tripped:
        listed = ", ".join(f"{s.where} is {s.status}: {s.circuit or 'tripped'}" for s in tripped)
        return GateResult(
            "health",
            False,
            f"color {color!r} is not ready: circuit breaker tripped ({listed})",
            readings,
        )
    not_up = [s for s in rows if s.status != "UP"]
    if not_up:
        # a server back from a trip reads DOWN 1/3 ... with a passed check: say why it is down
        listed = ", ".join(
            f"{s.where} is {s.status}" + (f" (circuit breaker trips: {s.trips})" if s.trips else "")
            for s in not_up
        )
        return GateResult(
            "health",
            False,
            f"color {color!r} is not ready: {listed} (every server must be exactly UP)",
            readings,
        )
    unchecked = [s for s in rows if not s.checked_ok]
    if unchecked:
        listed = ", ".join(f"{s.where} last check {s.check_status or 'none'}" for s in unchecked)
        return GateResult(
            "health",
            False,
            f"color {color!r} is not ready: {listed} (a health check must have passed)",
            readings,
        )
    count = len({s.server for s in rows})
    nodes = len({s.node for s in rows})
    where = f" on {nodes} nodes" if nodes > 1 else ""
    return GateResult("health", True, f"all {count} server(s) of {color!r} are UP{where}", readings)


def smoke_gate(
    status: int | None,
    body: str,
    *,
    expect_status: int | None,
    expect_body: str | None,
    error: str | None = None,
    node: str = "",
) -> GateResult:
    """Judge one smoke request's outcome against its expectations (``node``: through
    which HAProxy it went, in a fleet)."""
    readings: dict[str, Any] = {"status": status, "body": body[:200]}
    if node:
        readings["node"] = node
        error = None if error is None else f"{error} (through {node})"
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
