"""The DNS-weights use case: each app's health-weighted DNS weight per node, for export."""

from __future__ import annotations

from typing import Any

from prism.core.dns import dns_weights, route53_batch
from prism.core.model import backend_name
from prism.dataplane.base import DataPlane
from prism.errors import HAProxyError
from prism.store.desired import load_state
from prism.types import Store

__all__ = ["DnsService"]


class DnsService:
    """``prism dns-weights``: fresh readings from every node, judged by :mod:`prism.core.dns`.

    A node whose HAProxy is down gets weight 0. A lost fleet node reports
    nothing, not even its address, so it is left out: its last record stays at
    the provider until an export without it replaces the set.
    """

    def __init__(self, store: Store, plane: DataPlane) -> None:
        self.store = store
        self.plane = plane

    async def _weights(self, app: str | None) -> list[Any]:
        state = await load_state(self.store)
        apps = [state.spec.app(app)] if app is not None else list(state.spec.apps)
        backends = [backend_name(a.name, c.name) for a in apps for c in a.colors]
        try:
            readings = await self.plane.servers(backends) if backends else []
        except HAProxyError:
            readings = []  # this node's HAProxy is not running: nothing is healthy here
        nodes = {
            row["name"]: str(row.get("address") or "")
            for row in await self.plane.nodes()
            if row.get("state") in ("live", "down")
        }
        return dns_weights(state, readings, nodes, apps=[a.name for a in apps])

    async def weights(self, app: str | None = None) -> list[dict[str, Any]]:
        """Per app and node: weight 0..100, healthy and total servers, the record."""
        return [w.to_dict() for w in await self._weights(app)]

    async def route53(self, app: str | None = None) -> dict[str, Any]:
        """The Route 53 change batch of those weights (apps with a record name only)."""
        return route53_batch(await self._weights(app), comment="health-weighted records from Prism")
