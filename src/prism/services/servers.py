"""The server use case: add a server to a color, or remove one, without a reload."""

from __future__ import annotations

from typing import Any

from prism import names
from prism.core.keys import APPS, dump
from prism.core.model import App, Color, Server, split_hostport
from prism.core.state import DesiredState
from prism.dataplane.change import Changes
from prism.errors import Conflict, InvalidInput, NotFound
from prism.store.desired import load_state
from prism.types import AuditDraft, Compare, Put, Store

__all__ = ["ServerService"]


class ServerService:
    """``prism server add`` and ``prism server remove``."""

    def __init__(self, store: Store, changes: Changes) -> None:
        self.store = store
        self.changes = changes

    async def add(
        self,
        app_name: str,
        color_name: str,
        address: str,
        *,
        name: str | None,
        actor: str,
        reason: str | None,
    ) -> dict[str, Any]:
        """Add a server without reload: checked through DRAIN before it takes traffic."""
        state = await load_state(self.store)
        app = state.spec.app(app_name)
        color = app.color(color_name)
        try:
            host, port = split_hostport(address)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        taken = {s.name for s in color.servers}
        if name is None:
            name = next(f"s{i}" for i in range(1, len(taken) + 2) if f"s{i}" not in taken)
        names.check(names.SERVER_NAME, name, "server name")
        if name in taken:
            raise Conflict(f"color {color.name!r} of {app.name!r} already has a server {name!r}")
        server = Server(name=name, host=host, port=port)
        new_color = color.model_copy(update={"servers": (*color.servers, server)})
        return await self._replace_color(
            state, app, new_color, actor, reason, "server.add", {"server": name, "address": address}
        )

    async def remove(
        self, app_name: str, color_name: str, name: str, *, actor: str, reason: str | None
    ) -> dict[str, Any]:
        """Drain a server until its in-use connections are 0, then remove it, without reload."""
        state = await load_state(self.store)
        app = state.spec.app(app_name)
        color = app.color(color_name)
        names.check(names.SERVER_NAME, name, "server name")
        if not any(s.name == name for s in color.servers):
            raise NotFound(f"color {color.name!r} of {app.name!r} has no server {name!r}")
        new_color = color.model_copy(
            update={"servers": tuple(s for s in color.servers if s.name != name)}
        )
        return await self._replace_color(
            state, app, new_color, actor, reason, "server.remove", {"server": name}
        )

    async def _replace_color(
        self,
        state: DesiredState,
        app: App,
        color: Color,
        actor: str,
        reason: str | None,
        action: str,
        detail: dict[str, Any],
    ) -> dict[str, Any]:
        colors = tuple(color if c.name == color.name else c for c in app.colors)
        new_app = App.model_validate(
            {**app.model_dump(), "colors": [c.model_dump() for c in colors]}
        )
        apps = tuple(new_app if a.name == app.name else a for a in state.spec.apps)
        await self.changes.plane.admit(state.spec, state.spec.model_copy(update={"apps": apps}))
        key = f"{APPS}{app.name}"
        entry = await self.store.get(key)
        assert entry is not None
        applied = await self.changes.commit(
            [Put(key, dump(new_app))],
            expect=[Compare(key, entry.mod_revision)],
            before={key: entry},
            audit=AuditDraft(
                actor=actor,
                action=action,
                app=app.name,
                detail={"color": color.name, **detail},
                reason=reason,
            ),
        )
        return {"app": app.name, "color": color.name, **detail, **applied.report()}
