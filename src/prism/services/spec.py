"""The spec use case: read the desired spec, and apply a whole new one."""

from __future__ import annotations

from typing import Any

from prism.core.keys import diff_spec, routing_key, spec_ops
from prism.core.model import Spec
from prism.core.state import DesiredState, Routing
from prism.dataplane.change import Changes
from prism.store.desired import load_state
from prism.types import AuditDraft, Delete, Store

__all__ = ["SpecService"]


class SpecService:
    """``prism apply`` and ``prism config``."""

    def __init__(self, store: Store, changes: Changes) -> None:
        self.store = store
        self.changes = changes
        self.plane = changes.plane

    async def state(self) -> DesiredState:
        return await load_state(self.store)

    async def apply(self, spec: Spec, *, actor: str, reason: str | None) -> dict[str, Any]:
        """Validate, check, persist, then apply a whole spec. A refused apply changes nothing.

        Routing survives while every color it weighs still exists
        (:func:`~prism.core.keys.spec_ops`), so re-applying a file never undoes a release.
        """
        old = await self.state()
        change = diff_spec(old.spec, spec)
        if change.empty:
            return {"revision": old.revision, "changes": change.as_dict(), "mode": "none"}
        await self.plane.admit(old.spec, spec)
        ops = spec_ops(old, spec)
        deleted = {op.key for op in ops if isinstance(op, Delete)}
        kept = {k: v for k, v in old.routing.items() if routing_key(k) not in deleted}
        await self.plane.check(DesiredState(spec=spec, routing=_valid(spec, kept)))
        applied = await self.changes.commit(
            ops,
            audit=AuditDraft(actor=actor, action="apply", detail=change.as_dict(), reason=reason),
        )
        return {
            "revision": applied.revision,
            "changes": change.as_dict(),
            "mode": applied.converged.mode,
            "duration_ms": applied.converged.duration_ms,
        }


def _valid(spec: Spec, routing: dict[str, Routing]) -> dict[str, Routing]:
    apps = {a.name: a for a in spec.apps}
    return {k: v for k, v in routing.items() if k in apps and apps[k].has_color(v.active)}
