"""Gated traffic changes of one app: the primitives releases, shifts and rollbacks are made of.

* :meth:`Traffic.gates` — health (every server of each color gaining share is
  exactly ``UP`` with a passed check, on every node) then the optional smoke
  request through the app's own listener.
* :meth:`Traffic.set_weights` — persist the new routing (compare-and-put),
  then converge the data plane on it; a refusal restores the previous routing
  (:class:`~prism.dataplane.change.Changes`).
* :meth:`Traffic.drain` — wait, bounded, until colors that lost all traffic
  have no connection in use.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from prism.core.buckets import moved_buckets
from prism.core.keys import RELEASES, dump, routing_key
from prism.core.model import App, backend_name
from prism.core.readings import ServerReading
from prism.core.state import DesiredState, Routing
from prism.dataplane.base import DataPlane
from prism.dataplane.change import Along, Changes
from prism.errors import GateFailed
from prism.release.gates import GateResult, health_gate, in_use, smoke_gate
from prism.release.record import ACTIVE
from prism.types import AuditDraft, Clock, Compare, Put, Store

__all__ = ["Traffic", "format_weights", "growing"]


def growing(before: dict[str, int], after: dict[str, int]) -> list[str]:
    """Colors whose share grows: the ones gates must vouch for."""
    return sorted(c for c, w in after.items() if w > before.get(c, 0))


def format_weights(weights: dict[str, int]) -> str:
    return " ".join(f"{c}={w}" for c, w in sorted(weights.items())) or "(none)"


class Traffic:
    """Gated, persisted, verified weight changes through the data plane."""

    def __init__(
        self,
        store: Store,
        changes: Changes,
        plane: DataPlane,
        clock: Clock,
        *,
        poll_interval: float = 0.1,
    ) -> None:
        self.store = store
        self.changes = changes
        self.plane = plane
        self.clock = clock
        self.poll_interval = poll_interval
        self._locks: dict[str, asyncio.Lock] = {}

    def lock(self, app: str) -> asyncio.Lock:
        """Serialises routing changes of one app in this process (shifts, release steps,
        rollbacks); compare-and-put covers other processes."""
        return self._locks.setdefault(app, asyncio.Lock())

    async def releasing(self, app: str) -> set[str]:
        """The colors of ``app`` with a release in progress, as the store says."""
        found = set()
        for entry in await self.store.list(f"{RELEASES}{app}/"):
            record = json.loads(entry.value)
            if record.get("phase") in ACTIVE:
                found.add(str(record["to_color"]))
        return found

    async def gates(
        self,
        state: DesiredState,
        app: App,
        colors: list[str],
        smoke: bool,
    ) -> list[GateResult]:
        """Health (then smoke) of every color about to get more traffic; stops at a refusal."""
        backends = [backend_name(app.name, c) for c in colors]
        return (await self.read_and_gate(state, app, colors, smoke, backends))[1]

    async def read_and_gate(
        self,
        state: DesiredState,
        app: App,
        colors: list[str],
        smoke: bool,
        backends: list[str],
    ) -> tuple[list[ServerReading], list[GateResult]]:
        """The servers of ``backends`` (which cover ``colors``) and the gates of ``colors``.

        The smoke requests go out while the servers are read (neither waits for the
        other), but are judged only after every color's health passed: the results
        stop at the first refusal, health first, as if run one after the other.
        """
        smoking = (
            asyncio.ensure_future(self._smoke(state, app, colors))
            if smoke and app.smoke is not None
            else None
        )
        try:
            servers = await self.plane.servers(backends)
            results: list[GateResult] = []
            for color in colors:
                results.append(health_gate(servers, backend_name(app.name, color), color))
                if not results[-1].passed:
                    return servers, results
            if smoking is not None:
                results += await smoking
            return servers, results
        finally:
            if smoking is not None:  # unjudged (a refusal came first): stop, and reap it
                smoking.cancel()
                await asyncio.gather(smoking, return_exceptions=True)

    async def _smoke(self, state: DesiredState, app: App, colors: list[str]) -> list[GateResult]:
        assert app.smoke is not None
        results: list[GateResult] = []
        for color in colors:
            for reply in await self.plane.smoke(state.spec, app, color):
                results.append(
                    smoke_gate(
                        reply.status,
                        reply.body,
                        expect_status=app.smoke.expect_status,
                        expect_body=app.smoke.expect_body,
                        error=reply.error,
                        node=reply.node,
                    )
                )
                if not results[-1].passed:
                    return results
        return results

    async def gate_or_refuse(
        self,
        state: DesiredState,
        app: App,
        routing: Routing,
        target: dict[str, int],
        *,
        smoke: bool,
        actor: str,
        reason: str | None,
        action: str,
    ) -> None:
        """Run the gates for ``target``; a refusal is audited and raised as GateFailed."""
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
        along: Along | None = None,
    ) -> dict[str, Any]:
        """Persist ``target`` weights, then converge on them; restored if refused.

        ``along``: keys saved in the same transaction and never restored (a release
        record naming this change); see :class:`~prism.dataplane.change.Along`."""
        new_route = Routing.moved(routing, target)
        moved = moved_buckets(routing.layout, new_route.layout)
        started = self.clock.monotonic()
        key = routing_key(app.name)
        entry = await self.store.get(key)
        applied = await self.changes.commit(
            [Put(key, dump(new_route))],
            expect=[Compare(key, entry.mod_revision if entry else 0)],
            before={key: entry},
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
            along=along,
        )
        return {
            "weights": new_route.weights,
            "previous": routing.weights,
            "moved_buckets": moved,
            "operations": list(applied.converged.operations),
            "ms": round((self.clock.monotonic() - started) * 1000, 3),
        }

    async def drain(self, app: App, colors: list[str], timeout_ms: int | None) -> GateResult:
        """Wait until ``colors`` have no connection in use (idle pooled ones don't count)."""
        timeout = (app.drain_timeout_ms if timeout_ms is None else timeout_ms) / 1000
        deadline = self.clock.monotonic() + timeout
        names = ", ".join(repr(c) for c in colors) or "nothing"
        backends = [backend_name(app.name, c) for c in colors]
        prefix = len(app.name) + 1
        while True:
            used = {k[prefix:]: n for k, n in (await self.plane.in_use(backends)).items()}
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
