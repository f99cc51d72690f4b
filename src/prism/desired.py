"""Reading desired state out of a store."""

from __future__ import annotations

from prism.model import DesiredState
from prism.state import APPS, LISTENERS, PINS, ROUTING, decode_state
from prism.types import Store

__all__ = ["load_state"]


async def load_state(store: Store) -> DesiredState:
    """The desired state; its revision is the last one that changed spec, routing or pins."""
    listeners = await store.list(LISTENERS)
    apps = await store.list(APPS)
    routing = await store.list(ROUTING)
    pins = await store.list(PINS)
    revision = max((e.mod_revision for e in (*listeners, *apps, *routing, *pins)), default=0)
    return decode_state(listeners, apps, routing, revision, pins)
