"""An in-memory :class:`~prism.dataplane.base.DataPlane` for unit tests of the layers above it.

:class:`FakeDataPlane` converges instantly on whatever it is given (and keeps
every state it was given), answers readings from values the test sets, and
can be told to refuse the next convergences, so the services and the release
engine can be driven with no HAProxy, no socket and no process::

    plane = FakeDataPlane()
    plane.set_servers("shop.green", "s1", status="UP", check_status="L7OK")
    plane.add_requests("shop.green", requests=100, errors_5xx=7)
    plane.refuse_next(ConfigRejected("no"))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from prism.core.model import App, Spec
from prism.core.readings import Counters, ServerReading, SmokeReply
from prism.core.state import DesiredState
from prism.dataplane.base import Converged, PlaneInfo
from prism.errors import NotFound, PrismError

__all__ = ["FakeDataPlane"]


@dataclass
class FakeDataPlane:
    """A data plane whose HAProxy is a few dictionaries; see the module docstring."""

    servers_by_backend: dict[str, list[ServerReading]] = field(default_factory=dict)
    counters_by_backend: dict[str, Counters] = field(default_factory=dict)
    used: dict[str, int] = field(default_factory=dict)
    smoke_replies: dict[str, SmokeReply] = field(default_factory=dict)
    #: every state converged on, in order
    converged: list[DesiredState] = field(default_factory=list)
    #: errors to raise from the next converge calls, first first
    refusals: list[PrismError] = field(default_factory=list)
    #: errors to raise from the next admit / check calls
    admit_refusals: list[PrismError] = field(default_factory=list)
    check_refusals: list[PrismError] = field(default_factory=list)
    applied_revision: int = 0
    last_error: str | None = None

    # -- set-up helpers --------------------------------------------------

    def set_servers(
        self,
        backend: str,
        *names: str,
        status: str = "UP",
        check_status: str = "L7OK",
        node: str = "",
    ) -> None:
        """Give ``backend`` these servers, all with ``status`` and ``check_status``."""
        self.servers_by_backend[backend] = [
            ServerReading(backend, name, status, check_status, node=node) for name in names
        ]
        self.counters_by_backend.setdefault(backend, Counters(0, 0, 0))

    def add_requests(
        self, backend: str, requests: int, errors_5xx: int = 0, mean_response_ms: int | None = None
    ) -> None:
        """Count ``requests`` more (``errors_5xx`` of them 5xx) on ``backend``."""
        now = self.counters_by_backend.get(backend, Counters(0, 0, 0))
        mean = now.mean_response_ms if mean_response_ms is None else mean_response_ms
        self.counters_by_backend[backend] = Counters(
            now.requests + requests, now.errors_5xx + errors_5xx, mean
        )

    def refuse_next(self, error: PrismError, times: int = 1) -> None:
        """Make the next ``times`` converge calls raise ``error``."""
        self.refusals.extend([error] * times)

    @property
    def last(self) -> DesiredState:
        """The state converged on last."""
        return self.converged[-1]

    # -- the seam --------------------------------------------------------

    async def admit(self, old: Spec, new: Spec) -> None:
        if self.admit_refusals:
            raise self.admit_refusals.pop(0)

    async def check(self, state: DesiredState) -> None:
        if self.check_refusals:
            raise self.check_refusals.pop(0)

    async def converge(self, state: DesiredState) -> Converged:
        if self.refusals:
            error = self.refusals.pop(0)
            self.last_error = str(error)
            raise error
        self.converged.append(state)
        self.applied_revision = state.revision
        self.last_error = None
        return Converged(state.revision, "runtime", ("converged",), 0.0)

    async def servers(self, backends: Sequence[str]) -> list[ServerReading]:
        chosen = backends or list(self.servers_by_backend)
        return [s for b in chosen for s in self.servers_by_backend.get(b, [])]

    async def counters(self, backends: Sequence[str]) -> dict[str, Counters]:
        return {b: self.counters_by_backend[b] for b in backends if b in self.counters_by_backend}

    async def in_use(self, backends: Sequence[str]) -> dict[str, int]:
        return {
            f"{s.backend}/{s.server}": self.used.get(f"{s.backend}/{s.server}", 0)
            for b in backends
            for s in self.servers_by_backend.get(b, [])
        }

    async def smoke(self, spec: Spec, app: App, color: str) -> list[SmokeReply]:
        return [self.smoke_replies.get(f"{app.name}.{color}", SmokeReply(200, "ok"))]

    async def nodes(self) -> list[dict[str, Any]]:
        return [{"name": "fake", "state": "live", "applied_revision": self.applied_revision}]

    async def forget(self, node: str) -> None:
        raise NotFound(f"no lost node {node!r}")

    async def info(self) -> PlaneInfo:
        return PlaneInfo(
            healthy=self.last_error is None,
            applied_revision=self.applied_revision,
            last_error=self.last_error,
            detail={"running": True, "version": "fake"},
        )
