"""The pin use case: pin a key (tenant, user, network) to a color, unpin it, list pins."""

from __future__ import annotations

import json
from typing import Any

from prism.core.keys import PINS, dump, pin_key
from prism.core.model import App
from prism.core.state import DesiredState
from prism.dataplane.change import Changes
from prism.errors import NotFound, TooLarge
from prism.store.desired import load_state
from prism.types import AuditDraft, Compare, Delete, Put, Store

__all__ = ["MAX_PINS", "PinService", "pin_list"]

#: pinned keys one app may have (each is a map entry in every HAProxy)
MAX_PINS = 10_000


def pin_list(state: DesiredState, app: App) -> list[dict[str, str]]:
    """The app's pins, rule by rule in the app's order, keys sorted."""
    pins = state.pins_for(app)
    return [
        {"rule": rule.name, "source": rule.source, "key": key, "color": color}
        for rule in app.pins
        for key, color in sorted(pins.get(rule.name, {}).items())
    ]


class PinService:
    """``prism pin``, ``prism unpin`` and ``prism pins``."""

    def __init__(self, store: Store, changes: Changes) -> None:
        self.store = store
        self.changes = changes

    async def pins(self, app_name: str) -> list[dict[str, str]]:
        state = await load_state(self.store)
        return pin_list(state, state.spec.app(app_name))

    async def pin(
        self,
        app_name: str,
        key: str,
        color: str,
        *,
        rule: str | None,
        actor: str,
        reason: str | None,
    ) -> dict[str, Any]:
        """Pin ``key`` (read by the rule's source) to ``color``; wins over weights."""
        state = await load_state(self.store)
        app = state.spec.app(app_name)
        the_rule = app.pin_rule(rule)
        app.color(color)
        key = the_rule.normalize_key(key)
        entry_key = pin_key(app.name, the_rule.name, key)
        old = await self.store.get(entry_key)
        if old is not None and json.loads(old.value)["color"] == color:
            return {"rule": the_rule.name, "key": key, "color": color, "changed": False}
        if old is None:
            pinned, _ = await self.store.stamp(f"{PINS}{app.name}/")
            if pinned >= MAX_PINS:
                raise TooLarge(
                    f"{app.name!r} already has {pinned} pinned keys, the most it may have",
                    hint="unpin keys it no longer needs; nothing was changed",
                    detail={"limit": MAX_PINS},
                )
        applied = await self.changes.commit(
            [Put(entry_key, dump({"color": color}))],
            expect=[Compare(entry_key, old.mod_revision if old else 0)],
            before={entry_key: old},
            audit=AuditDraft(
                actor=actor,
                action="pin",
                app=app.name,
                detail={"rule": the_rule.name, "key": key, "color": color},
                reason=reason,
            ),
        )
        done = applied.report()
        return {"rule": the_rule.name, "key": key, "color": color, "changed": True, **done}

    async def unpin(
        self, app_name: str, key: str, *, rule: str | None, actor: str, reason: str | None
    ) -> dict[str, Any]:
        """Remove a pin; the key goes back to weighted routing."""
        state = await load_state(self.store)
        app = state.spec.app(app_name)
        the_rule = app.pin_rule(rule)
        key = the_rule.normalize_key(key)
        entry_key = pin_key(app.name, the_rule.name, key)
        old = await self.store.get(entry_key)
        if old is None:
            raise NotFound(
                f"{key!r} is not pinned in rule {the_rule.name!r} of {app.name!r}",
                hint=f"`prism pins {app.name}` lists the pins",
            )
        applied = await self.changes.commit(
            [Delete(entry_key)],
            expect=[Compare(entry_key, old.mod_revision)],
            before={entry_key: old},
            audit=AuditDraft(
                actor=actor,
                action="unpin",
                app=app.name,
                detail={"rule": the_rule.name, "key": key, "color": json.loads(old.value)["color"]},
                reason=reason,
            ),
        )
        return {"rule": the_rule.name, "key": key, "changed": True, **applied.report()}
