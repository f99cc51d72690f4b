"""Reading desired state out of a store."""

from __future__ import annotations

import weakref

from prism.core.keys import (
    APPS,
    DESIRED,
    LISTENERS,
    PINS,
    REGISTRATIONS,
    ROUTING,
    SPEC,
    decode_state,
)
from prism.core.model import Spec
from prism.core.state import DesiredState
from prism.types import Store

__all__ = ["load_state"]

# Validating the spec is the costly part of a read (~0.1 s at 1,000 apps), and a
# weight move or a pin does not change it; nor is reading 1,000 app entries
# free. The store's stamp of spec/ changes with any commit that touches it, so
# while it is the stamp a cached spec was decoded under, that spec is reused
# and no spec entry is read at all.
_specs: weakref.WeakKeyDictionary[object, tuple[tuple[int, int], Spec]] = (
    weakref.WeakKeyDictionary()
)
# The spec HAProxy serves (declared plus registered servers) is rebuilt only when
# the spec or the registrations change, so the renderer's cache keeps working.
_states: weakref.WeakKeyDictionary[object, DesiredState] = weakref.WeakKeyDictionary()


async def load_state(store: Store) -> DesiredState:
    """The desired state, with the revision of the newest change to it.

    Every change goes through :class:`~prism.dataplane.change.Changes`, which
    also rewrites the ``desired`` key, so that key's revision counts deletions
    too (they leave no entry whose revision could say so). It is read first:
    every change up to it is in the entries read after it.
    """
    marker = await store.get(DESIRED)
    stamp = await store.stamp(SPEC)
    routing = await store.list(ROUTING)
    pins = await store.list(PINS)
    joined = await store.list(REGISTRATIONS)
    cached = _specs.get(store)
    revision = max(
        [marker.mod_revision if marker else 0, stamp[1]]
        + [e.mod_revision for e in (*routing, *pins, *joined)]
    )
    if cached is not None and cached[0] == stamp:
        state = decode_state((), (), routing, revision, pins, joined, spec=cached[1])
    else:
        entries = await store.list(SPEC)  # one read: listeners and apps of the same revision
        listeners = [e for e in entries if e.key.startswith(LISTENERS)]
        apps = [e for e in entries if e.key.startswith(APPS)]
        newest = max((e.mod_revision for e in entries), default=0)
        state = decode_state(listeners, apps, routing, revision, pins, joined)
        _specs[store] = ((len(entries), newest), state.spec)
    previous = _states.get(store)
    if previous is not None:
        state.reuse_served(previous)
    _states[store] = state
    return state
