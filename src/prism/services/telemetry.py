"""What Prism sees, for its own metrics and the dashboard's charts.

:meth:`TelemetryService.snapshot` reads, in one pass, everything ``/metrics``
exposes: weights and active colors, every release record, HAProxy's counters
and servers' health per backend (per node in a fleet), nodes' revisions and
drift. :meth:`TelemetryService.sample` turns two readings of HAProxy's
counters into rates per app and color (requests a second, 5xx ratio, mean
response time) and keeps the last 15 minutes of them, so the dashboard draws
its charts without Prometheus; :meth:`run` samples every few seconds.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from prism.core.keys import RELEASES
from prism.core.model import backend_name
from prism.core.readings import Counters, ServerReading
from prism.core.state import DesiredState
from prism.dataplane.base import DataPlane
from prism.errors import PrismError
from prism.release.record import ReleaseRecord
from prism.store.desired import load_state
from prism.types import Clock, Store

__all__ = ["Point", "Snapshot", "TelemetryService"]

log = logging.getLogger(__name__)

#: how much history the dashboard's charts show
WINDOW_SECONDS = 15 * 60


@dataclass(frozen=True, slots=True)
class Point:
    """One color's traffic between two samples."""

    at: float
    rps: float
    ratio_5xx: float
    response_ms: int

    def as_list(self) -> list[float]:
        return [round(self.at, 3), round(self.rps, 3), round(self.ratio_5xx, 5), self.response_ms]


@dataclass(frozen=True)
class Snapshot:
    """Everything ``/metrics`` shows, read at one moment."""

    state: DesiredState
    releases: list[ReleaseRecord]
    counters: dict[str, Counters]
    servers: list[ServerReading]
    nodes: list[dict[str, Any]]
    drift_repairs: int = 0
    #: (owner, file, notAfter as a Unix time) of each certificate served
    certificates: tuple[tuple[str, str, float], ...] = ()


@dataclass
class _Series:
    points: deque[Point] = field(default_factory=deque)


def _backends(state: DesiredState) -> list[str]:
    return [backend_name(a.name, c.name) for a in state.spec.apps for c in a.colors]


class TelemetryService:
    """Snapshots for ``/metrics``; sampled rates for the dashboard."""

    def __init__(
        self,
        store: Store,
        plane: DataPlane,
        clock: Clock,
        *,
        drift_repairs: Callable[[], int] = lambda: 0,
        counters: Callable[[Sequence[str]], Awaitable[dict[str, Counters]]] | None = None,
        servers: Callable[[Sequence[str]], Awaitable[list[ServerReading]]] | None = None,
    ) -> None:
        self.store = store
        self.plane = plane
        self.clock = clock
        self.drift_repairs = drift_repairs
        # a fleet passes readings from the nodes' heartbeats, so that no sample or
        # scrape costs every node a poll (default: the data plane's own readings)
        self.counters = counters or plane.counters
        self.servers = servers or plane.servers
        self._last: tuple[float, dict[str, Counters]] | None = None
        #: samples taken so far (the dashboard's stream sends new points when it moves)
        self.samples = 0
        self._series: dict[str, _Series] = {}

    async def snapshot(self) -> Snapshot:
        state = await load_state(self.store)
        releases = [
            ReleaseRecord.model_validate_json(e.value) for e in await self.store.list(RELEASES)
        ]
        try:
            counters = await self.counters(_backends(state))
            servers = await self.servers([])
        except PrismError as exc:
            log.warning("metrics: cannot read HAProxy: %s", exc)
            counters, servers = {}, []
        nodes = await self.plane.nodes()
        return Snapshot(state, releases, counters, servers, nodes, self.drift_repairs())

    async def sample(self) -> None:
        """Read HAProxy's counters once; with a reading before, add a point per color."""
        try:
            now_counters = await self.counters(_backends(await load_state(self.store)))
        except PrismError as exc:
            log.warning("sampling: cannot read HAProxy's counters: %s", exc)
            return
        now = self.clock.now()
        if self._last is not None:
            then, before = self._last
            seconds = max(now - then, 1e-3)
            for backend, after in now_counters.items():
                prior = before.get(backend)
                if prior is None:
                    continue
                requests = after.requests - prior.requests
                errors = after.errors_5xx - prior.errors_5xx
                if requests < 0 or errors < 0:  # counters reset (a reload): start again
                    continue
                point = Point(
                    at=now,
                    rps=requests / seconds,
                    ratio_5xx=errors / requests if requests else 0.0,
                    response_ms=after.mean_response_ms,
                )
                series = self._series.setdefault(backend, _Series())
                series.points.append(point)
                while series.points and series.points[0].at < now - WINDOW_SECONDS:
                    series.points.popleft()
        self._last = (now, now_counters)
        self.samples += 1

    def series(self, app: str, colors: list[str]) -> dict[str, list[list[float]]]:
        """Per color of ``app``: ``[at, req/s, 5xx ratio, response ms]`` points, oldest first."""
        found: dict[str, list[list[float]]] = {}
        for color in colors:
            series = self._series.get(backend_name(app, color))
            found[color] = [p.as_list() for p in series.points] if series else []
        return found

    async def run(self, interval: float) -> None:
        """Sample every ``interval`` seconds until cancelled."""
        while True:
            await self.sample()
            await self.clock.sleep(interval)
