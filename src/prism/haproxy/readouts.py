"""HAProxy's ``show stat`` rows as the values that cross the data-plane seam. Pure.

:func:`server_readings` gives each server's exact status, last check and
connections in use; :func:`backend_counters` a backend's HTTP counters, from
its ``BACKEND`` row (HAProxy 2.8):

* ``requests`` is the sum of ``hrsp_1xx`` .. ``hrsp_5xx`` and ``hrsp_other``:
  HTTP transactions that ended with a status, whether a server sent it or
  HAProxy did (a 503 for no server, a 504 for a timeout). HAProxy bumps the
  backend's response counter and its ``req_tot`` together when a transaction
  ends, so the two agree; the sum is used because it is exactly the
  denominator of the 5xx ratio. A backend in TCP mode counts no responses.
* ``errors_5xx`` is ``hrsp_5xx``.
* ``mean_response_ms`` is ``rtime``: HAProxy's *moving average* of the
  server response time, documented as over the last 1024 requests, updated
  only by responses that came from a server. It is not the exact mean of a
  window and never goes down to "no data"; it is a gauge.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from prism.core.readings import Counters, ServerReading
from prism.errors import Drift, RuntimeAPIError
from prism.haproxy.parsers import StatRow

__all__ = ["backend_counters", "server_readings"]

_BACKEND_ROW = 1
_SERVER_ROW = 2
_RESPONSE_COLUMNS = ("hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "hrsp_other")


def server_readings(rows: Iterable[StatRow], *, node: str = "") -> list[ServerReading]:
    """Every server row of ``show stat``, in order (FRONTEND and BACKEND rows left out).

    Besides status and check: ``uweight`` (the weight set by config or ``set server
    weight``), ``throttle`` (the slowstart ramp's share, empty when not ramping),
    ``hanafail`` (the circuit breaker's actions) and, while the breaker holds a
    server (check status ``HANA``), ``last_chk``'s words on why.
    """
    readings = []
    for row in rows:
        if row.type != _SERVER_ROW:
            continue
        reading = ServerReading(
            backend=row.proxy,
            server=row.server,
            status=row.status,
            check_status=row.check_status,
            in_use=row.scur,
            weight=row.weight,
            address=row.addr,
            node=node,
            user_weight=_column(row, "uweight") if row.raw.get("uweight") else row.weight,
            warming=_column(row, "throttle") if row.raw.get("throttle") else None,
            trips=_column(row, "hanafail"),
        )
        if reading.tripped:
            why = row.raw.get("last_chk", "").strip().strip('"')
            reading = replace(reading, circuit=(why or "error limit reached")[:160])
        readings.append(reading)
    return readings


def _column(row: StatRow, name: str) -> int:
    value = row.raw.get(name, "")
    if value == "":
        # HAProxy leaves a column empty where it does not apply
        return 0
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise RuntimeAPIError(
            f"unexpected show stat reply from HAProxy: {name}={value[:40]!r} is not a count"
        )
    return number


def backend_counters(rows: Iterable[StatRow], backend: str) -> Counters:
    """The counters of ``backend``'s ``BACKEND`` row in parsed ``show stat`` rows.

    Raises :class:`~prism.errors.Drift` if HAProxy has no such backend: the
    running configuration is not the one Prism rendered.
    """
    for row in rows:
        if row.proxy == backend and row.type == _BACKEND_ROW:
            return Counters(
                requests=sum(_column(row, name) for name in _RESPONSE_COLUMNS),
                errors_5xx=_column(row, "hrsp_5xx"),
                mean_response_ms=_column(row, "rtime"),
            )
    raise Drift(
        f"HAProxy reports no backend {backend!r} in show stat",
        hint="the running configuration is not the one Prism rendered; reload it",
        detail={"backend": backend},
    )
