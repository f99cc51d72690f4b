"""The data-plane interface and the values that cross it.

One :class:`DataPlane` serves a whole Prism control plane. Its callers never
learn whether it is one HAProxy in this process or a fleet of nodes: an error
names the node when there are several, readings carry a ``node``, and a
change is only *converged* once it took effect everywhere it must.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from prism.core.model import App, Spec
from prism.core.pem import CertInfo
from prism.core.readings import Counters, ServerReading, SmokeReply
from prism.core.state import DesiredState
from prism.core.tls import Tls

__all__ = ["Converged", "DataPlane", "PlaneInfo"]


@dataclass(frozen=True, slots=True)
class Converged:
    """What converging on one revision did.

    ``mode`` is ``reload`` (a checked reload), ``runtime`` (Runtime API
    changes only) or ``none`` (already there); ``nodes`` names the nodes that
    confirmed it, in a fleet.
    """

    revision: int
    mode: str
    operations: tuple[str, ...] = ()
    duration_ms: float = 0.0
    nodes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PlaneInfo:
    """How the data plane is doing, for the health endpoint and status."""

    healthy: bool
    applied_revision: int
    last_error: str | None
    detail: Mapping[str, Any] = field(default_factory=dict)
    #: fleet nodes that joined once and have no report now (releases hold for them)
    lost: tuple[str, ...] = ()


class DataPlane(Protocol):
    """Converge HAProxy on desired state, and read what HAProxy sees.

    * :meth:`admit` refuses a spec this data plane could never run (more
      file descriptors than its limit, a port some other process holds),
      before anything is stored; :meth:`check` renders a desired state and has
      HAProxy check it (``haproxy -c``). Neither changes anything.
    * :meth:`converge` makes HAProxy hold ``state`` (disk first, then runtime,
      then read back) and returns what took effect; it raises a
      :class:`~prism.errors.PrismError` when it did not, leaving the last good
      state serving.
    * :meth:`servers`, :meth:`counters` and :meth:`in_use` are readings of
      the named backends (no backends named: every backend); :meth:`smoke`
      sends one request through an app's own listener to one color.
    * :meth:`nodes` lists the HAProxy nodes; :meth:`forget` drops a lost one.
    * :meth:`set_certificate` replaces one certificate file without a reload (disk,
      then runtime, then read back); :meth:`certificates` says what a listener serves.
    """

    async def admit(self, old: Spec, new: Spec) -> None: ...

    async def check(self, state: DesiredState) -> None: ...

    async def converge(self, state: DesiredState) -> Converged: ...

    async def servers(self, backends: Sequence[str]) -> list[ServerReading]: ...

    async def counters(self, backends: Sequence[str]) -> dict[str, Counters]:
        """Counters per backend; a backend HAProxy does not have is left out."""
        ...

    async def in_use(self, backends: Sequence[str]) -> dict[str, int]:
        """Connections in use (not idle in a pool) per ``backend/server`` (``@node`` in a fleet)."""
        ...

    async def smoke(self, spec: Spec, app: App, color: str) -> list[SmokeReply]:
        """One smoke request per node through ``app``'s listener, routed to ``color``."""
        ...

    async def info(self) -> PlaneInfo: ...

    async def nodes(self) -> list[dict[str, Any]]:
        """Every node: ``name``, ``state`` (live, joining, lost), ``address``,
        ``applied_revision``, ``heartbeat``, ``haproxy``, ``drift``, ``last_error``."""
        ...

    async def forget(self, node: str) -> None:
        """Stop waiting for a lost node; NotFound/Conflict when there is no such lost node."""
        ...

    async def set_certificate(self, path: str, cert: CertInfo) -> dict[str, Any]:
        """Serve the checked ``cert`` from the loaded file ``path``, without a reload."""
        ...

    async def certificates(self, tls: Tls, *, warn_days: int) -> list[dict[str, Any]]:
        """Each loaded certificate file of ``tls``: path, subject, serial, expiry, warning."""
        ...
