"""How a fleet talks through the store: its keys and each node's report. Pure.

Key layout, beside desired state (:mod:`prism.core.keys`)::

    fleet/nodes/<node>    the node's report (below), put under the agent's lease:
                          it vanishes when the agent stops refreshing it
    fleet/known/<node>    the node has joined once: a known node without a report
                          is *lost* until it returns or a person forgets it
    fleet/commit          {"revision": R}: every live node staged R, switch now
    fleet/poll            {"seq": n, "smoke": [...]}: publish fresh readings (and
                          run these smoke requests), answering with seq n
    fleet/leader          the control plane holding the leader lease drives releases

A report is what one node last did and saw: the revision it applied, the one
it staged (lockstep changes wait there for the commit marker), the last error
(with the revision it concerns), HAProxy's state, every server's exact health,
per-backend counters and connections in use, and its limits.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from prism import names
from prism.core.readings import Counters, ServerReading, SmokeReply

__all__ = [
    "COMMIT",
    "FLEET",
    "KNOWN",
    "LEADER",
    "NODES",
    "POLL",
    "NodeReport",
    "check_node_name",
    "known_key",
    "node_key",
]

_SERVER_FIELDS = fields(ServerReading)
_SMOKE_FIELDS = fields(SmokeReply)

FLEET = "fleet/"
NODES = "fleet/nodes/"
KNOWN = "fleet/known/"
COMMIT = "fleet/commit"
POLL = "fleet/poll"
LEADER = "fleet/leader"


def check_node_name(name: object) -> str:
    """A node name is a lowercase name like an app's: ``lb-1``, ``edge-eu-3``."""
    return names.check(names.NAME, name, "node name")


def node_key(node: str) -> str:
    return f"{NODES}{node}"


def known_key(node: str) -> str:
    return f"{KNOWN}{node}"


@dataclass(frozen=True)
class NodeReport:
    """One node's report, as its agent puts it (see the module docstring)."""

    node: str
    address: str
    heartbeat: float
    synced: bool = False
    applied: int = 0
    #: how the last apply took effect: reload, runtime or none
    mode: str = "none"
    staged: int = 0
    error: str | None = None
    error_revision: int = 0
    drift: bool = False
    poll: int = 0
    haproxy: Mapping[str, Any] = field(default_factory=dict)
    maxconn: int = 0
    fd_limit: int | None = None
    servers: tuple[ServerReading, ...] = ()
    counters: Mapping[str, Counters] = field(default_factory=dict)
    in_use: Mapping[str, int] = field(default_factory=dict)
    smoke: tuple[tuple[str, str, SmokeReply], ...] = ()

    def to_json(self) -> str:
        # Built field by field: dataclasses.asdict deep-copies every reading, and a node
        # encodes its report every heartbeat.
        data: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        data["haproxy"] = dict(self.haproxy)
        data["in_use"] = dict(self.in_use)
        data["servers"] = [
            {f.name: getattr(s, f.name) for f in _SERVER_FIELDS} for s in self.servers
        ]
        data["counters"] = {b: c.to_dict() for b, c in self.counters.items()}
        data["smoke"] = [
            [app, color, {f.name: getattr(r, f.name) for f in _SMOKE_FIELDS}]
            for app, color, r in self.smoke
        ]
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> NodeReport:
        data = json.loads(text)
        data["servers"] = tuple(ServerReading(**s) for s in data.get("servers", ()))
        data["counters"] = {b: Counters.from_dict(c) for b, c in data.get("counters", {}).items()}
        data["smoke"] = tuple(
            (app, color, SmokeReply(**reply)) for app, color, reply in data.get("smoke", ())
        )
        return cls(**data)
