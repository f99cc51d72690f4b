"""Desired state as store entries, and back.

Key layout (values are JSON)::

    spec/listeners/<name>   a Listener
    spec/apps/<name>        an App with its colors and servers
    routing/<app>           a Routing: weights, bucket layout, previous weights
    pins/<app>/<rule>/<key> {"color": ...}: a pinned key (a key may contain '/')
    releases/<app>/<color>  the latest release record of one color of an app
    registrations/<app>/<color>/<name>
                            a Registration, put under its lease: it vanishes when the
                            server stops renewing it
    desired                 rewritten by every change of spec, routing or pins, so its
                            revision is that of the newest change, deletions included

Pure: functions here take and return values. Reading and committing is done by
callers with a :class:`prism.types.Store`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prism.core.model import App, Listener, Spec, parse_model
from prism.core.state import DesiredState, Registration, Routing
from prism.types import Delete, Entry, Put

__all__ = [
    "APPS",
    "DESIRED",
    "LISTENERS",
    "PINS",
    "REGISTRATIONS",
    "RELEASES",
    "ROUTING",
    "SPEC",
    "SpecChange",
    "decode_state",
    "diff_spec",
    "dump",
    "pin_key",
    "registration_key",
    "release_key",
    "routing_key",
    "spec_ops",
]

DESIRED = "desired"
SPEC = "spec/"
LISTENERS = "spec/listeners/"
APPS = "spec/apps/"
ROUTING = "routing/"
PINS = "pins/"
RELEASES = "releases/"
REGISTRATIONS = "registrations/"


def routing_key(app: str) -> str:
    return f"{ROUTING}{app}"


def pin_key(app: str, rule: str, key: str) -> str:
    return f"{PINS}{app}/{rule}/{key}"


def registration_key(app: str, color: str, name: str) -> str:
    return f"{REGISTRATIONS}{app}/{color}/{name}"


def release_key(app: str, color: str) -> str:
    return f"{RELEASES}{app}/{color}"


def dump(value: Any) -> str:
    """Canonical JSON: sorted keys, no spaces, so equal values store equal text."""
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def decode_state(
    listeners: Sequence[Entry],
    apps: Sequence[Entry],
    routing: Sequence[Entry],
    revision: int,
    pins: Sequence[Entry] = (),
    registrations: Sequence[Entry] = (),
    *,
    spec: Spec | None = None,
) -> DesiredState:
    """Build a DesiredState from the entries under spec/, routing/, pins/ and registrations/.

    ``spec``, when given, is the already decoded spec of these same entries.
    Routing, pins and registrations of apps or colors the spec no longer has are
    left out; a registration whose name the color declares itself too.
    """
    cached = spec is not None
    if spec is None:
        spec = parse_model(
            Spec,
            {
                "listeners": [json.loads(e.value) for e in listeners],
                "apps": [json.loads(e.value) for e in apps],
            },
            source="stored spec",
        )
    apps_by_name = {a.name: a for a in spec.apps}
    routes: dict[str, Routing] = {}
    for entry in routing:
        name = entry.key[len(ROUTING) :]
        route = parse_model(Routing, json.loads(entry.value), source=f"stored {entry.key}")
        app = apps_by_name.get(name)
        if app is not None and all(app.has_color(c) for c in route.weights):
            routes[name] = route
    pinned: dict[str, dict[str, dict[str, str]]] = {}
    for entry in pins:
        app_name, rule, key = entry.key[len(PINS) :].split("/", 2)
        color = json.loads(entry.value)["color"]
        pinned.setdefault(app_name, {}).setdefault(rule, {})[key] = color
    joined: dict[str, dict[str, dict[str, Registration]]] = {}
    for entry in registrations:
        app_name, color_name, name = entry.key[len(REGISTRATIONS) :].split("/", 2)
        owner = apps_by_name.get(app_name)
        if owner is None or not owner.has_color(color_name):
            continue
        if any(s.name == name for s in owner.color(color_name).servers):
            continue
        reg = parse_model(Registration, json.loads(entry.value), source=f"stored {entry.key}")
        joined.setdefault(app_name, {}).setdefault(color_name, {})[name] = reg
    if cached:
        # Validating would re-run every spec validator over all apps (a few ms
        # at 1,000 apps, on every read) for a spec that was validated when it was
        # decoded; routing was validated above and only kept where it matches.
        return DesiredState.model_construct(
            spec=spec, routing=routes, pins=pinned, registrations=joined, revision=revision
        )
    return DesiredState(
        spec=spec, routing=routes, pins=pinned, registrations=joined, revision=revision
    )


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

    Routing survives an apply while every color it weighs still exists, so that
    re-applying a file never silently undoes a release. Routing of a removed
    app, or one weighing a removed color, is dropped (the app then serves its
    stable color). Pins of removed apps, rules or colors are dropped too.
    """
    change = diff_spec(old.spec, new)
    after = _items(new)
    ops: list[Put | Delete] = [Put(k, dump(after[k])) for k in change.added + change.changed]
    ops += [Delete(k) for k in change.removed]
    apps = {a.name: a for a in new.apps}
    for name, route in old.routing.items():
        app = apps.get(name)
        if app is None or not all(app.has_color(c) for c in route.weights):
            ops.append(Delete(routing_key(name)))
        elif route.previous is not None and not all(app.has_color(c) for c in route.previous):
            kept = Routing(weights=route.weights, layout=route.layout)
            ops.append(Put(routing_key(name), dump(kept)))
    for name, rules in old.pins.items():
        app = apps.get(name)
        for rule, keys in rules.items():
            rule_alive = app is not None and any(r.name == rule for r in app.pins)
            for key, color in keys.items():
                if not rule_alive or app is None or not app.has_color(color):
                    ops.append(Delete(pin_key(name, rule, key)))
    return ops
