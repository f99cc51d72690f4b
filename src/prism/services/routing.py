"""Gated traffic changes of one app: the primitives every release is made of.

* :meth:`Traffic.gates` — health (every server of each color gaining share is
  exactly ``UP`` with a passed check) then the optional smoke request through
  the app's own listener.
* :meth:`Traffic.set_weights` — persist the new routing (compare-and-put),
  then apply it (disk first, one atomic map change, read back); if HAProxy
  does not take it, the previous routing is restored.
* :meth:`Traffic.drain` — wait, bounded, until colors that lost all traffic
  have no connection in use.

``shift`` and ``rollback`` are built from these; so is the release engine.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx

from prism.core.buckets import check_weights, moved_buckets
from prism.core.keys import dump, routing_key
from prism.core.model import App, DesiredState, Routing, Spec, backend_name, split_hostport
from prism.errors import Conflict, GateFailed, PrismError
from prism.haproxy.runtime import RuntimeClient
from prism.node.applier import Applier
from prism.release.gates import GateResult, health_gate, in_use, smoke_gate
from prism.store.desired import load_state
from prism.types import AuditDraft, Clock, Compare, Put, Store

__all__ = ["Traffic", "format_weights", "growing"]


def growing(before: dict[str, int], after: dict[str, int]) -> list[str]:
    """Colors whose share grows: the ones gates must vouch for."""
    return sorted(c for c, w in after.items() if w > before.get(c, 0))


def format_weights(weights: dict[str, int]) -> str:
    return " ".join(f"{c}={w}" for c, w in sorted(weights.items())) or "(none)"


class Traffic:
    """Gated, persisted, verified weight changes against the local HAProxy."""

    def __init__(
        self,
        store: Store,
        applier: Applier,
        runtime: RuntimeClient,
        clock: Clock,
        *,
        smoke_key: str,
        poll_interval: float = 0.1,
    ) -> None:
        self.store = store
        self.applier = applier
        self.runtime = runtime
        self.clock = clock
        self.smoke_key = smoke_key
        self.poll_interval = poll_interval
        self._locks: dict[str, asyncio.Lock] = {}
        #: app -> colors currently being released (the engine keeps this up to date)
        self.releasing: dict[str, set[str]] = {}

    def lock(self, app: str) -> asyncio.Lock:
        """Serialises routing changes of one app (shifts, release steps, rollbacks)."""
        return self._locks.setdefault(app, asyncio.Lock())

    # -- primitives ----------------------------------------------------------

    async def gates(
        self, state: DesiredState, app: App, colors: list[str], smoke: bool
    ) -> list[GateResult]:
        """Health (then smoke) of every color about to get more traffic; stops at a refusal."""
        rows = await self.runtime.show_stat(*(backend_name(app.name, c) for c in colors))
        results: list[GateResult] = []
        for color in colors:
            results.append(health_gate(rows, backend_name(app.name, color), color))
            if not results[-1].passed:
                return results
        if smoke and app.smoke is not None:
            for color in colors:
                results.append(await self._smoke(state.spec, app, color))
                if not results[-1].passed:
                    return results
        return results

    async def _smoke(self, spec: Spec, app: App, color: str) -> GateResult:
        assert app.smoke is not None
        bind = app.bind or next(x.bind for x in spec.listeners if x.name == app.listener)
        host, port = split_hostport(bind)
        if host in ("0.0.0.0", "*"):
            host = "127.0.0.1"
        headers = {"X-Prism-Color": color, "X-Prism-Smoke-Key": self.smoke_key}
        if app.host:
            headers["Host"] = app.host
        status, body = app.smoke.expect_status, app.smoke.expect_body
        try:
            async with httpx.AsyncClient(
                timeout=app.smoke.timeout_ms / 1000, trust_env=False
            ) as client:
                reply = await client.get(f"http://{host}:{port}{app.smoke.path}", headers=headers)
        except httpx.HTTPError as exc:
            error = str(exc) or type(exc).__name__
            return smoke_gate(None, "", expect_status=status, expect_body=body, error=error)
        return smoke_gate(reply.status_code, reply.text, expect_status=status, expect_body=body)

    async def set_weights(
        self,
        app: App,
        routing: Routing,
        target: dict[str, int],
        *,
        actor: str,
        action: str,
        reason: str | None,
        detail: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Persist ``target`` weights, then apply them; restore ``routing`` if HAProxy refuses."""
        new_route = Routing.moved(routing, target)
        moved = moved_buckets(routing.layout, new_route.layout)
        started = self.clock.monotonic()
        entry = await self.store.get(routing_key(app.name))
        await self.store.commit(
            [Put(routing_key(app.name), dump(new_route))],
            expect=[Compare(routing_key(app.name), entry.mod_revision if entry else 0)],
            audit=AuditDraft(
                actor=actor,
                action=action,
                app=app.name,
                detail={
                    "from_weights": routing.weights,
                    "to_weights": new_route.weights,
                    "moved_buckets": moved,
                    **(detail or {}),
                },
                reason=reason,
            ),
        )
        try:
            report = await self.applier.apply(await load_state(self.store))
        except PrismError:
            await self.store.commit(
                [Put(routing_key(app.name), dump(routing))],
                audit=AuditDraft(actor=actor, action=f"{action}.reverted", app=app.name),
            )
            # The reconciler retries a failed revert; the caller needs the original error.
            with contextlib.suppress(PrismError):
                await self.applier.apply(await load_state(self.store))
            raise
        return {
            "weights": new_route.weights,
            "previous": routing.weights,
            "moved_buckets": moved,
            "operations": report.operations,
            "ms": round((self.clock.monotonic() - started) * 1000, 3),
        }

    async def drain(self, app: App, colors: list[str], timeout_ms: int | None) -> GateResult:
        """Wait until ``colors`` have no connection in use (idle pooled ones don't count)."""
        timeout = (app.drain_timeout_ms if timeout_ms is None else timeout_ms) / 1000
        deadline = self.clock.monotonic() + timeout
        names = ", ".join(repr(c) for c in colors) or "nothing"
        while True:
            used: dict[str, int] = {}
            for color in colors:
                backend = backend_name(app.name, color)
                for conn in await self.runtime.show_servers_conn(backend):
                    used[f"{color}/{conn.server}"] = conn.used_cur
            remaining = in_use(used)
            if remaining == 0:
                return GateResult(
                    "drain", True, f"{names} drained: no connection in use", {"in_use": used}
                )
            if self.clock.monotonic() >= deadline:
                return GateResult(
                    "drain",
                    False,
                    f"{names} still had {remaining} connection(s) in use after {timeout:g}s; "
                    "they finish where they are, new requests follow the new weights",
                    {"in_use": used},
                )
            await self.clock.sleep(self.poll_interval)

    # -- operations ----------------------------------------------------------

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
        async with self.lock(app_name):
            state = await load_state(self.store)
            app = state.spec.app(app_name)
            for color in weights:
                app.color(color)
            target = check_weights(weights)
            busy = self.releasing.get(app.name, set())
            if busy:
                raise Conflict(
                    f"{app.name!r} has a release running ({', '.join(sorted(busy))})",
                    hint="pause, promote or abort it first",
                )
            routing = state.routing_for(app)
            if routing.weights == target:
                return {"app": app.name, "weights": target, "moved_buckets": 0, "changed": False}
            await self._gate_or_refuse(state, app, routing, target, smoke, actor, reason, "shift")
            done = await self.set_weights(
                app, routing, target, actor=actor, action="shift", reason=reason
            )
            return {"app": app.name, "changed": True, **done}

    async def rollback(
        self, app_name: str, *, actor: str, reason: str | None = None, smoke: bool = True
    ) -> dict[str, Any]:
        """Return to the weights before the last change, through the same gates, then drain."""
        async with self.lock(app_name):
            state = await load_state(self.store)
            app = state.spec.app(app_name)
            routing = state.routing_for(app)
            previous = routing.previous
            if previous is None or not all(app.has_color(c) for c in previous):
                raise Conflict(
                    f"app {app.name!r} has no previous weights to roll back to",
                    hint=f"release a named color instead: prism release {app.name} --to COLOR",
                )
            if self.releasing.get(app.name):
                raise Conflict(
                    f"{app.name!r} has a release running", hint="abort it: it rolls back itself"
                )
            await self._gate_or_refuse(
                state, app, routing, previous, smoke, actor, reason, "rollback"
            )
            done = await self.set_weights(
                app, routing, previous, actor=actor, action="rollback", reason=reason
            )
        emptied = sorted(c for c in routing.weights if c not in previous)
        drained = await self.drain(app, emptied, None)
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

    async def _gate_or_refuse(
        self,
        state: DesiredState,
        app: App,
        routing: Routing,
        target: dict[str, int],
        smoke: bool,
        actor: str,
        reason: str | None,
        action: str,
    ) -> None:
        for gate in await self.gates(state, app, growing(routing.weights, target), smoke):
            if gate.passed:
                continue
            await self.store.record(
                AuditDraft(
                    actor=actor,
                    action=f"{action}.refused",
                    app=app.name,
                    detail={
                        "from_weights": routing.weights,
                        "to_weights": target,
                        "step": {"name": gate.name, "message": gate.message},
                    },
                    reason=reason,
                )
            )
            raise GateFailed(
                f"{action} of {app.name!r} refused: {gate.message}",
                hint=f"nothing was changed ({format_weights(routing.weights)})",
                detail={"gate": gate.name, "readings": gate.readings},
            )
