"""Reading desired state out of a store."""

from __future__ import annotations

import weakref

from prism.core.keys import APPS, LISTENERS, PINS, ROUTING, SPEC, decode_state
from prism.core.model import DesiredState, Spec
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


async def load_state(store: Store) -> DesiredState:
    """The desired state; its revision is the newest mod revision among its spec, routing
    and pin entries (a deletion leaves no entry, so it does not advance it)."""
    stamp = await store.stamp(SPEC)
    routing = await store.list(ROUTING)
    pins = await store.list(PINS)
    cached = _specs.get(store)
    if cached is not None and cached[0] == stamp:
        revisions = [stamp[1]] + [e.mod_revision for e in (*routing, *pins)]
        return decode_state((), (), routing, max(revisions), pins, spec=cached[1])
    entries = await store.list(SPEC)  # one read: listeners and apps of the same revision
    listeners = [e for e in entries if e.key.startswith(LISTENERS)]
    apps = [e for e in entries if e.key.startswith(APPS)]
    newest = max((e.mod_revision for e in entries), default=0)
    revision = max([newest] + [e.mod_revision for e in (*routing, *pins)])
    state = decode_state(listeners, apps, routing, revision, pins)
    _specs[store] = ((len(entries), newest), state.spec)
    return state
