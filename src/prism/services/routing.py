"""Routing use cases: shift an app's weights, roll back to the previous ones.

Both go through the same gates and the same persisted, verified weight change
as a release step (:class:`~prism.release.traffic.Traffic`).
"""

from __future__ import annotations

from typing import Any

from prism.core.buckets import check_weights
from prism.errors import Conflict
from prism.release.traffic import Traffic
from prism.store.desired import load_state
from prism.types import AuditDraft

__all__ = ["RoutingService"]


class RoutingService:
    """``shift`` and ``rollback`` of one app's weights."""

    def __init__(self, traffic: Traffic) -> None:
        self.traffic = traffic
        self.store = traffic.store

    async def shift(
        self,
        app_name: str,
        weights: dict[str, int],
        *,
        actor: str,
        reason: str | None = None,
        smoke: bool = True,
    ) -> dict[str, Any]:
        """Set an app's weights across any number of colors in one atomic map change.

        Colors gaining share must pass the gates first; users only move if their
        bucket's color lost share (see :mod:`prism.core.buckets`).
        """
        async with self.traffic.lock(app_name):
            state = await load_state(self.store)
            app = state.spec.app(app_name)
            for color in weights:
                app.color(color)
            target = check_weights(weights)
            busy = await self.traffic.releasing(app.name)
            if busy:
                raise Conflict(
                    f"{app.name!r} has a release running ({', '.join(sorted(busy))})",
                    hint="pause, promote or abort it first",
                )
            routing = state.routing_for(app)
            if routing.weights == target:
                return {"app": app.name, "weights": target, "moved_buckets": 0, "changed": False}
            await self.traffic.gate_or_refuse(
                state, app, routing, target, smoke=smoke, actor=actor, reason=reason, action="shift"
            )
            done = await self.traffic.set_weights(
                app, routing, target, actor=actor, action="shift", reason=reason
            )
            return {"app": app.name, "changed": True, **done}

    async def rollback(
        self, app_name: str, *, actor: str, reason: str | None = None, smoke: bool = True
    ) -> dict[str, Any]:
        """Return to the weights before the last change, through the same gates, then drain."""
        async with self.traffic.lock(app_name):
            state = await load_state(self.store)
            app = state.spec.app(app_name)
            routing = state.routing_for(app)
            previous = routing.previous
            if previous is None or not all(app.has_color(c) for c in previous):
                raise Conflict(
                    f"app {app.name!r} has no previous weights to roll back to",
                    hint=f"release a named color instead: prism release {app.name} --to COLOR",
                )
            if await self.traffic.releasing(app.name):
                raise Conflict(
                    f"{app.name!r} has a release running", hint="abort it: it rolls back itself"
                )
            await self.traffic.gate_or_refuse(
                state,
                app,
                routing,
                previous,
                smoke=smoke,
                actor=actor,
                reason=reason,
                action="rollback",
            )
            done = await self.traffic.set_weights(
                app, routing, previous, actor=actor, action="rollback", reason=reason
            )
        emptied = sorted(c for c in routing.weights if c not in previous)
        drained = await self.traffic.drain(app, emptied, None)
        await self.store.record(
            AuditDraft(
                actor=actor,
                action="rollback.drained" if drained.passed else "rollback.drain_timeout",
                app=app.name,
                detail={"step": {"name": "drain", "message": drained.message}},
                reason=reason,
            )
        )
        return {"app": app.name, "changed": True, **done, "drain": drained.message}
