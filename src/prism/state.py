"""Desired state as store entries, and back.

Key layout (values are JSON)::

    spec/listeners/<name>   a Listener
    spec/apps/<name>        an App with its colors and servers
    routing/<app>           a Routing: the active and previous color
    releases/<app>          the app's latest release record
    applied/<node>          what a node last applied (revision, drift)

Pure: functions here take and return values. Reading and committing is done by
callers with a :class:`prism.types.Store`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prism.model import App, DesiredState, Listener, Routing, Spec, parse_model
from prism.types import Delete, Entry, Put

__all__ = [
    "APPS",
    "LISTENERS",
    "ROUTING",
    "SpecChange",
    "applied_key",
    "decode_state",
    "diff_spec",
    "release_key",
    "routing_key",
    "spec_ops",
]

LISTENERS = "spec/listeners/"
APPS = "spec/apps/"
ROUTING = "routing/"
RELEASES = "releases/"
APPLIED = "applied/"


def routing_key(app: str) -> str:
    return f"{ROUTING}{app}"


def release_key(app: str) -> str:
    return f"{RELEASES}{app}"


def applied_key(node: str) -> str:
    return f"{APPLIED}{node}"


def dump(value: Any) -> str:
    """Canonical JSON: sorted keys, no spaces, so equal values store equal text."""
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def decode_state(
    listeners: Sequence[Entry], apps: Sequence[Entry], routing: Sequence[Entry], revision: int
) -> DesiredState:
    """Build a DesiredState from the entries under spec/ and routing/."""
    spec = parse_model(
        Spec,
        {
            "listeners": [json.loads(e.value) for e in listeners],
            "apps": [json.loads(e.value) for e in apps],
        },
        source="stored spec",
    )
    routes: dict[str, Routing] = {}
    for entry in routing:
        name = entry.key[len(ROUTING) :]
        route = parse_model(Routing, json.loads(entry.value), source=f"stored {entry.key}")
        app = next((a for a in spec.apps if a.name == name), None)
        if app is not None and app.has_color(route.active):
            routes[name] = route
    return DesiredState(spec=spec, routing=routes, revision=revision)


@dataclass(frozen=True)
class SpecChange:
    """What an apply changes: names added, removed and modified, per kind."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def as_dict(self) -> dict[str, list[str]]:
        return {
            "added": list(self.added),
            "removed": list(self.removed),
            "changed": list(self.changed),
        }


def _items(spec: Spec) -> dict[str, Listener | App]:
    items: dict[str, Listener | App] = {f"{LISTENERS}{x.name}": x for x in spec.listeners}
    items.update({f"{APPS}{a.name}": a for a in spec.apps})
    return items


def diff_spec(old: Spec, new: Spec) -> SpecChange:
    """Keys of listeners and apps that an apply adds, removes or changes."""
    before, after = _items(old), _items(new)
    return SpecChange(
        added=tuple(sorted(k for k in after if k not in before)),
        removed=tuple(sorted(k for k in before if k not in after)),
        changed=tuple(sorted(k for k in after if k in before and after[k] != before[k])),
    )


def spec_ops(old: DesiredState, new: Spec) -> list[Put | Delete]:
    """Store operations turning ``old``'s spec into ``new``.

    Routing survives an apply while its active color still exists, so that
    re-applying a file never silently undoes a release. Routing of a removed
    app, or one whose active color is gone, is dropped (the app then serves
    its stable color).
    """
    change = diff_spec(old.spec, new)
    after = _items(new)
    ops: list[Put | Delete] = [Put(k, dump(after[k])) for k in change.added + change.changed]
    ops += [Delete(k) for k in change.removed]
    for name, route in old.routing.items():
        app = next((a for a in new.apps if a.name == name), None)
        if app is None or not app.has_color(route.active):
            ops.append(Delete(routing_key(name)))
        elif route.previous is not None and not app.has_color(route.previous):
            ops.append(Put(routing_key(name), dump(Routing(active=route.active))))
    return ops
