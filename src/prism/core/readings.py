"""What the data plane reports: servers' exact health, backend counters, smoke replies. Pure.

These values cross the data-plane seam (:mod:`prism.dataplane`) upwards: the
local data plane reads them from its HAProxy, the fleet data plane from every
node's report. Gates and analysis judge them; nothing here talks to HAProxy.

A server is **ready** for traffic only when its status is exactly ``UP``
(``UP 1/2`` is still short of its rise count) *and* a health check has run and
passed: HAProxy reports a never-checked server as ``UP`` too. A server whose
circuit breaker tripped (HAProxy's ``observe`` saw ``error-limit`` consecutive
errors: its last check reads ``HANA``) is not ready either, whatever its
status. This module holds the one definition of "a passed check"
(:func:`check_passed`) and of "ready" (:attr:`ServerReading.ready`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prism.core.requestlog import RequestLog
from prism.errors import InvalidInput

__all__ = [
    "PASSED_CHECKS",
    "TRIPPED_CHECK",
    "Counters",
    "ServerReading",
    "SmokeReply",
    "check_passed",
]

#: Last-check results that mean a check really ran and passed.
PASSED_CHECKS = frozenset({"L4OK", "L6OK", "L7OK"})
#: The last-check result HAProxy sets when its health analysis of real traffic
#: (``observe``) acted on a server: the circuit breaker tripped.
TRIPPED_CHECK = "HANA"

_COUNTER_FIELDS = ("requests", "errors_5xx", "mean_response_ms")


def check_passed(check_status: str, *, settled: bool = False) -> bool:
    """Whether HAProxy's ``check_status`` says the last completed check passed.

    ``* L7OK`` reads so while the next check is in progress: the last one
    passed, which a gate accepts. ``settled`` refuses it too (the running
    check's outcome is still open): the strictness wanted at the moment a new
    server is let in. ``INI`` (none yet), ``L4CON``, ``L7STS`` ... never pass.
    """
    if settled:
        return check_status in PASSED_CHECKS
    return check_status.removeprefix("* ").strip() in PASSED_CHECKS


@dataclass(frozen=True, slots=True)
class ServerReading:
    """One server of one backend as one HAProxy sees it.

    ``status`` is HAProxy's exact string (``UP``, ``UP 1/2``, ``DOWN``,
    ``MAINT``, ``DRAIN`` ...); ``in_use`` counts connections being served (idle
    pooled ones excluded). ``node`` names the HAProxy in fleet mode ("" on a
    single node).

    ``weight`` is HAProxy's effective weight, ``user_weight`` the one set in
    the config or by ``set server weight`` (Prism gives every server 100, so it
    reads as a percentage); ``warming`` the share a server coming up has reached
    of its ``slowstart`` ramp (None when not ramping). ``trips`` counts the
    circuit breaker's actions on it (``hanafail``), ``circuit`` says why it last
    tripped while it is tripped. ``slow`` is the reason this node's Prism
    lowered its weight (empty while it has its full weight).
    """

    backend: str
    server: str
    status: str
    check_status: str = ""
    in_use: int = 0
    weight: int = 1
    address: str = ""
    node: str = ""
    user_weight: int = 100
    warming: int | None = None
    trips: int = 0
    circuit: str = ""
    slow: str = ""

    @property
    def checked_ok(self) -> bool:
        return check_passed(self.check_status)

    @property
    def tripped(self) -> bool:
        """HAProxy's circuit breaker acted on this server and no health check has passed
        since (``HANA``, or ``* HANA`` while the next check runs)."""
        return self.check_status.removeprefix("* ").strip() == TRIPPED_CHECK

    @property
    def absent(self) -> bool:
        """An empty DNS discovery slot (maintenance set by the resolver): not a server at
        all, so gates, status and drain leave it out rather than count it DOWN."""
        return self.status == "MAINT (resolution)"

    @property
    def ready(self) -> bool:
        """Exactly ``UP`` with a passed check and no tripped circuit: safe to send traffic to."""
        return self.status == "UP" and self.checked_ok and not self.tripped

    @property
    def where(self) -> str:
        """``s1`` on one node, ``s1@lb-2`` in a fleet: for messages."""
        return f"{self.server}@{self.node}" if self.node else self.server


@dataclass(frozen=True, slots=True)
class Counters:
    """A backend's HTTP counters: a snapshot, or a window between two snapshots.

    ``requests`` counts HTTP transactions that ended with a status (the sum of
    HAProxy's ``hrsp_*`` columns); ``errors_5xx`` those with a 5xx;
    ``mean_response_ms`` is HAProxy's moving average of the server response
    time (``rtime``), a gauge rather than a count. Summed over nodes in a fleet.

    ``log`` is the backend's request log (:mod:`prism.core.requestlog`) when
    the data plane receives one: exact counts by status class and response-time
    quantiles, cumulative since the receiver started (None: no log data).
    """

    requests: int
    errors_5xx: int
    mean_response_ms: int
    log: RequestLog | None = None

    def __post_init__(self) -> None:
        for name in _COUNTER_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidInput(f"counter {name} must be a whole number >= 0, not {value!r}")
        if self.errors_5xx > self.requests:
            raise InvalidInput(
                f"{self.errors_5xx} 5xx responses cannot exceed {self.requests} requests"
            )

    @property
    def ratio_5xx(self) -> float:
        """The share of requests answered with a 5xx, 0.0 without requests."""
        return self.errors_5xx / self.requests if self.requests else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the store."""
        data: dict[str, Any] = {name: getattr(self, name) for name in _COUNTER_FIELDS}
        if self.log is not None:
            data["log"] = self.log.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Counters:
        """The counters :meth:`to_dict` saved; :class:`~prism.errors.InvalidInput` if malformed."""
        missing = [name for name in _COUNTER_FIELDS if name not in data]
        if missing:
            raise InvalidInput(f"saved counters lack {', '.join(missing)}")
        log = data.get("log")
        return cls(
            data["requests"],
            data["errors_5xx"],
            data["mean_response_ms"],
            None if log is None else RequestLog.from_dict(log),
        )

    @classmethod
    def total(cls, parts: list[Counters]) -> Counters:
        """Counters of several HAProxy nodes as one: counts add up, the mean response
        time is weighted by each node's requests; the request logs add up when every
        node has one."""
        requests = sum(p.requests for p in parts)
        errors = sum(p.errors_5xx for p in parts)
        if requests:
            mean = round(sum(p.mean_response_ms * p.requests for p in parts) / requests)
        else:
            mean = max((p.mean_response_ms for p in parts), default=0)
        logs = [p.log for p in parts if p.log is not None]
        log = RequestLog.total(logs) if logs and len(logs) == len(parts) else None
        return cls(requests, errors, mean, log)


@dataclass(frozen=True, slots=True)
class SmokeReply:
    """What one smoke request through an app's listener got back (or why it got nothing)."""

    status: int | None
    body: str = ""
    error: str | None = None
    node: str = ""
