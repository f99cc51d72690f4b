"""Desired state as a whole: the spec, each app's routing, pins and registered servers. Pure.

Shape::

    DesiredState
    ├── spec: Spec                                 what prism.yaml declares (:mod:`.model`)
    ├── routing: app -> Routing                    weights and bucket layout, changed by releases
    ├── pins: app -> rule -> key -> color          pinned tenants, users, networks
    ├── registrations: app -> color -> name -> Registration
    │                                              servers that registered themselves for a TTL
    └── revision                                   the store revision of the newest change

:attr:`DesiredState.served` is the spec HAProxy must serve: the declared one
with every registered server added to its color.
"""

from __future__ import annotations

from pydantic import Field, PrivateAttr, StrictInt, field_validator, model_validator

from prism.core.model import (
    Address,
    App,
    DurationMs,
    Name,
    Port,
    Server,
    Spec,
    _Frozen,
)

__all__ = ["DesiredState", "Registration", "Routing"]


class Routing(_Frozen):
    """How an app's traffic splits across its colors now.

    ``weights`` (zero weights omitted) sum to 100; ``layout`` gives the color of
    each bucket 0..99 and always matches the weights (see :mod:`prism.core.buckets`).
    ``previous`` holds the weights before the last release, for rollback.
    """

    weights: dict[Name, StrictInt]
    layout: tuple[Name, ...]
    previous: dict[Name, StrictInt] | None = None

    @field_validator("weights", "previous")
    @classmethod
    def _normal_weights(cls, value: dict[str, int] | None) -> dict[str, int] | None:
        """Sum to 100; stored sorted by color, without zero weights."""
        from prism.core.buckets import check_weights

        return None if value is None else check_weights(value)

    @model_validator(mode="after")
    def _consistent(self) -> Routing:
        from prism.core.buckets import BUCKETS

        if len(self.layout) != BUCKETS:
            raise ValueError("a layout has exactly 100 buckets")
        for color, weight in self.weights.items():
            if self.layout.count(color) != weight:
                raise ValueError(f"layout gives {color!r} a share other than its weight")
        return self

    @classmethod
    def only(cls, color: str, previous: dict[str, int] | None = None) -> Routing:
        """All traffic to one color."""
        return cls(weights={color: 100}, layout=(color,) * 100, previous=previous)

    @classmethod
    def moved(
        cls, current: Routing | None, weights: dict[str, int], *, keep_previous: bool = False
    ) -> Routing:
        """New weights with the fewest buckets moved from ``current``."""
        from prism.core.buckets import check_weights, relayout

        clean = check_weights(weights)
        previous = None
        if current is not None:
            previous = current.previous if keep_previous else current.weights
        return cls(
            weights=clean,
            layout=relayout(current.layout if current else None, clean),
            previous=previous,
        )

    @property
    def active(self) -> str:
        """The color with the largest share (ties: first by name)."""
        return max(sorted(self.weights), key=lambda c: self.weights[c])

    @property
    def colors(self) -> frozenset[str]:
        return frozenset(self.weights)


class Registration(_Frozen):
    """A server that joined a color by itself, for as long as its lease is renewed."""

    host: Address
    port: Port
    ttl_ms: DurationMs = Field(ge=1000, le=86_400_000)
    #: the store lease the registration's key lives under
    lease: int = Field(ge=1)
    #: who registered it (the API actor) and when (unix seconds)
    by: str = Field(min_length=1, max_length=64)
    at: float

    def server(self, name: str) -> Server:
        return Server(name=name, host=self.host, port=self.port)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class DesiredState(_Frozen):
    """A spec, the routing, pins and registrations of its apps, and the revision read at."""

    spec: Spec = Spec()
    routing: dict[str, Routing] = {}
    #: app -> pin rule -> key -> color
    pins: dict[str, dict[str, dict[str, str]]] = {}
    #: app -> color -> server name -> registration
    registrations: dict[str, dict[str, dict[str, Registration]]] = {}
    revision: int = 0
    _served: Spec | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _routing_matches(self) -> DesiredState:
        for app in self.spec.apps:
            routing = self.routing.get(app.name)
            if routing is not None:
                unknown = [c for c in routing.weights if not app.has_color(c)]
                if unknown:
                    raise ValueError(f"app {app.name!r}: weights name unknown colors {unknown}")
        return self

    def routing_for(self, app: App) -> Routing:
        """The app's routing, defaulting to all traffic on its stable color."""
        routing = self.routing.get(app.name)
        if routing is None or not all(app.has_color(c) for c in routing.weights):
            return Routing.only(app.stable)
        return routing

    def pins_for(self, app: App) -> dict[str, dict[str, str]]:
        """The app's pins per rule, only for rules and colors that still exist."""
        rules = {r.name for r in app.pins}
        return {
            rule: {k: c for k, c in keys.items() if app.has_color(c)}
            for rule, keys in self.pins.get(app.name, {}).items()
            if rule in rules
        }

    def registered(self, app: str, color: str) -> dict[str, Registration]:
        """The servers registered into one color, by name."""
        return self.registrations.get(app, {}).get(color, {})

    @property
    def served(self) -> Spec:
        """The spec HAProxy serves: declared servers, then each color's registered ones
        (sorted by name; a name the spec declares itself keeps the declared server)."""
        if self._served is None:
            self._served = serve_registrations(self.spec, self.registrations)
        return self._served

    def reuse_served(self, other: DesiredState) -> None:
        """Take ``other``'s served spec when it was built from the very same inputs, so a
        renderer that caches by identity renders nothing twice."""
        if other.spec is self.spec and other.registrations == self.registrations:
            self._served = other.served


def serve_registrations(
    spec: Spec, registrations: dict[str, dict[str, dict[str, Registration]]]
) -> Spec:
    """``spec`` with the registered servers added to their colors (no validation rerun:
    registrations are checked against the spec when they are made)."""
    if not registrations:
        return spec
    apps = []
    for app in spec.apps:
        by_color = registrations.get(app.name)
        if not by_color:
            apps.append(app)
            continue
        colors = []
        for color in app.colors:
            extra = by_color.get(color.name, {})
            taken = {s.name for s in color.servers}
            added = tuple(r.server(n) for n, r in sorted(extra.items()) if n not in taken)
            colors.append(
                color.model_copy(update={"servers": (*color.servers, *added)}) if added else color
            )
        apps.append(app.model_copy(update={"colors": tuple(colors)}))
    return spec.model_copy(update={"apps": tuple(apps)})
