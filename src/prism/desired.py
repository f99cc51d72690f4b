"""Reading desired state out of a store."""

from __future__ import annotations

import weakref

from prism.model import DesiredState, Spec
from prism.state import APPS, LISTENERS, PINS, ROUTING, decode_state
from prism.types import Entry, Store

__all__ = ["load_state"]

# Validating the spec is the costly part of a read (~0.1 s at 1,000 apps), and a
# weight move or a pin does not change it. An entry never changes under the same
# mod revision, so a spec decoded from the same (key, revision) pairs is reused.
_specs: weakref.WeakKeyDictionary[object, tuple[tuple[tuple[str, int], ...], Spec]] = (
    weakref.WeakKeyDictionary()
)


async def load_state(store: Store) -> DesiredState:
    """The desired state; its revision is the last one that changed spec, routing or pins."""
    listeners = await store.list(LISTENERS)
    apps = await store.list(APPS)
    routing = await store.list(ROUTING)
    pins = await store.list(PINS)
    revision = max((e.mod_revision for e in (*listeners, *apps, *routing, *pins)), default=0)
    signature = _signature(listeners, apps)
    cached = _specs.get(store)
    if cached is not None and cached[0] == signature:
        return decode_state(listeners, apps, routing, revision, pins, spec=cached[1])
    state = decode_state(listeners, apps, routing, revision, pins)
    _specs[store] = (signature, state.spec)
    return state


def _signature(*groups: list[Entry]) -> tuple[tuple[str, int], ...]:
    return tuple((e.key, e.mod_revision) for group in groups for e in group)
