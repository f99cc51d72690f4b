"""Commit a change of desired state, converge on it, and undo it if it does not take.

Every mutation Prism makes (a spec apply, a weight change, a pin, a server add
or remove, a release step) is this one sequence:

1. commit the store operations (compare-and-put; the audit record in the
   same transaction, and the ``desired`` key, whose revision is thereby that
   of the newest change): desired state is persisted before it is applied;
2. converge the data plane on the new desired state;
3. if the data plane refuses (HAProxy rejects the config, a node cannot stage
   the change, read-back disagrees), put back what every touched key held
   before — unless someone changed it meanwhile — audit that as
   ``<action>.reverted``, converge again, and re-raise the original error.

So a refused change leaves the last good state both stored and serving.

A change may carry an :class:`Along`: keys saved in the same transaction (a
release record naming this very change as in flight, with its audit), so one
fsync'd commit covers both. They are never undone with the change: the record
says what was attempted, and its driver learns of the refusal from the error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from prism.core.keys import DESIRED
from prism.dataplane.base import Converged, DataPlane
from prism.errors import Conflict, PrismError
from prism.store.desired import load_state
from prism.types import AuditDraft, Compare, Delete, Entry, Put, Store

__all__ = ["Along", "Applied", "Changes"]

log = logging.getLogger(__name__)

#: rewritten with every change, so desired state's revision counts deletions too
_MARK = Put(DESIRED, "{}")


@dataclass(slots=True)
class Along:
    """Puts committed with a change, in its transaction, and never reverted with it.

    ``revision`` is set once that transaction committed (whatever converging does next),
    and ``landed`` called with it then, before anything else runs.
    """

    ops: Sequence[Put]
    expect: Sequence[Compare] = ()
    audits: Sequence[AuditDraft] = ()
    landed: Callable[[int], None] | None = None
    revision: int | None = field(default=None, init=False)


@dataclass(frozen=True, slots=True)
class Applied:
    """A committed change and what converging on it did."""

    revision: int
    converged: Converged

    def report(self) -> dict[str, object]:
        """What the change did, as the API reports it: operations, mode, milliseconds."""
        return {
            "operations": list(self.converged.operations),
            "mode": self.converged.mode,
            "ms": self.converged.duration_ms,
        }


class Changes:
    """The one path from a desired-state change to a converged data plane."""

    def __init__(self, store: Store, plane: DataPlane) -> None:
        self.store = store
        self.plane = plane

    async def commit(
        self,
        ops: Sequence[Put | Delete],
        *,
        audit: AuditDraft,
        expect: Sequence[Compare] = (),
        before: Mapping[str, Entry | None] | None = None,
        along: Along | None = None,
    ) -> Applied:
        """Persist ``ops`` (and ``along``), converge on the result, undo ``ops`` on refusal
        (module docstring).

        ``before`` holds what the touched keys held, when the caller has read
        them already (it must cover every key of ``ops``); else they are read here.
        """
        if before is None:
            entries = await asyncio.gather(*(self.store.get(op.key) for op in ops))
            before = {op.key: entry for op, entry in zip(ops, entries, strict=True)}
        if along is None:
            revision = await self.store.commit([*ops, _MARK], expect=expect, audit=audit)
        else:
            revision = await self.store.commit(
                [*ops, *along.ops, _MARK],
                expect=[*expect, *along.expect],
                audit=[*along.audits, audit],
            )
            along.revision = revision
            if along.landed is not None:
                along.landed(revision)
        try:
            converged = await self.plane.converge(await load_state(self.store))
        except PrismError as exc:
            await self._undo(ops, before, revision, audit, exc)
            raise
        return Applied(revision, replace(converged, revision=revision))

    async def converge(self) -> Converged:
        """Converge on whatever desired state is stored now (start-up, repair)."""
        return await self.plane.converge(await load_state(self.store))

    async def _undo(
        self,
        ops: Sequence[Put | Delete],
        before: Mapping[str, Entry | None],
        revision: int,
        audit: AuditDraft,
        error: PrismError,
    ) -> None:
        undo: list[Put | Delete] = []
        still: list[Compare] = []
        for op in ops:
            old = before[op.key]
            undo.append(Put(op.key, old.value) if old is not None else Delete(op.key))
            # Only while the key is still what this change made it: a newer change wins.
            still.append(Compare(op.key, revision if isinstance(op, Put) else 0))
        try:
            await self.store.commit(
                [*undo, _MARK],
                expect=still,
                audit=AuditDraft(
                    actor=audit.actor,
                    action=f"{audit.action}.reverted",
                    app=audit.app,
                    detail=audit.detail,
                    reason=str(error)[:500],
                ),
            )
        except Conflict:
            log.warning(
                "%s was refused, but a newer change replaced it: not reverted", audit.action
            )
            return
        # The reconciler retries a failed revert; the caller needs the original error.
        with contextlib.suppress(PrismError):
            await self.plane.converge(await load_state(self.store))
