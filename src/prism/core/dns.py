"""Health-weighted DNS: each node's share of healthy servers, and a Route 53 change batch. Pure.

For global load balancing a DNS provider sends clients to several sites (or
HAProxy nodes) by weighted records. A node whose servers are partly down
should get less of the traffic, not all or nothing. Per app and per node,
:func:`dns_weights` counts the servers of the colors that carry traffic now
(weight above 0) and how many of them that node sees ready (exactly ``UP``
with a passed check and no tripped circuit), and makes that share a weight
``healthy * 100 // servers`` — what seed 003's ``health-reporter.sh`` computes
from ``show servers state`` — so 0 healthy servers give weight 0 and the
provider stops sending clients there.

:func:`route53_batch` turns the weights into the document
``aws route53 change-resource-record-sets --change-batch`` takes: one UPSERT
of a weighted record per node. Prism itself makes no cloud call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prism.core.model import App, backend_name, split_bind
from prism.core.readings import ServerReading
from prism.core.state import DesiredState

__all__ = ["DnsWeight", "dns_weights", "route53_batch"]

_WILDCARD = ("*", "0.0.0.0")


@dataclass(frozen=True, slots=True)
class DnsWeight:
    """One app on one node: its weight 0..100, from ``healthy`` of ``servers``.

    ``address`` is where the node takes the app's traffic (the node's address
    for a wildcard bind, else the bind's host); ``name`` and ``ttl_s`` are the
    record's (the app's ``dns`` setting, else its ``host``; None: no record).
    """

    app: str
    node: str
    address: str
    weight: int
    healthy: int
    servers: int
    colors: tuple[str, ...]
    name: str | None
    ttl_s: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "app": self.app,
            "node": self.node,
            "address": self.address,
            "weight": self.weight,
            "healthy": self.healthy,
            "servers": self.servers,
            "colors": list(self.colors),
            "name": self.name,
            "ttl": self.ttl_s,
        }


def _address(state: DesiredState, app: App, node_address: str) -> str:
    bind = app.bind
    if bind is None:
        bind = next(x.bind for x in state.spec.listeners if x.name == app.listener)
    host, _ = split_bind(bind)
    return node_address if host in _WILDCARD else host


def dns_weights(
    state: DesiredState,
    readings: Sequence[ServerReading],
    nodes: Mapping[str, str],
    *,
    apps: Sequence[str] | None = None,
    local: str = "local",
) -> list[DnsWeight]:
    """The weight of every app (or of ``apps``) on every node of ``nodes`` (name ->
    address). A reading without a node (one HAProxy) belongs to the node ``local``.
    A server of a weighted color that a node does not report counts as not healthy."""
    seen: dict[tuple[str, str], dict[str, ServerReading]] = {}
    for reading in readings:
        if not reading.absent:
            seen.setdefault((reading.node or local, reading.backend), {})[reading.server] = reading
    out: list[DnsWeight] = []
    for app in state.served.apps:
        if apps is not None and app.name not in apps:
            continue
        weights = state.routing_for(app).weights
        colors = tuple(sorted(c for c, w in weights.items() if w > 0))
        record = app.dns.name if app.dns is not None else app.host
        ttl = app.dns.ttl_ms // 1000 if app.dns is not None else 60
        for node, node_address in sorted(nodes.items()):
            healthy = total = 0
            for color in colors:
                found = seen.get((node, backend_name(app.name, color)), {})
                names = {s.name for s in app.color(color).servers} | set(found)
                total += len(names)
                healthy += sum(1 for name in names if name in found and found[name].ready)
            out.append(
                DnsWeight(
                    app=app.name,
                    node=node,
                    address=_address(state, app, node_address),
                    weight=healthy * 100 // total if total else 0,
                    healthy=healthy,
                    servers=total,
                    colors=colors,
                    name=record,
                    ttl_s=ttl,
                )
            )
    return out


def _record_type(address: str) -> str:
    parts = address.split(".")
    if len(parts) == 4 and all(p.isdigit() and int(p) <= 255 for p in parts):
        return "A"
    return "CNAME"


def route53_batch(weights: Sequence[DnsWeight], *, comment: str | None = None) -> dict[str, Any]:
    """``{"Changes": [...]}``: an UPSERT of one weighted record per app with a record
    name and node (``SetIdentifier`` is the node), for
    ``aws route53 change-resource-record-sets --change-batch file://batch.json``."""
    changes = [
        {
            "Action": "UPSERT",
            "ResourceRecordSet": {
                "Name": w.name,
                "Type": _record_type(w.address),
                "SetIdentifier": w.node,
                "Weight": w.weight,
                "TTL": w.ttl_s,
                "ResourceRecords": [{"Value": w.address}],
            },
        }
        for w in weights
        if w.name is not None
    ]
    batch: dict[str, Any] = {"Changes": changes}
    if comment is not None:
        batch = {"Comment": comment, **batch}
    return batch
