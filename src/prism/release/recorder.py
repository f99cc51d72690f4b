"""Saving a release's steps and telling about them: records, audit entries, webhooks.

A step's record is saved with its audit entry in one compare-and-put commit
(a person's concurrent command makes it a Conflict, never a lost update), and
only then are its webhook events sent. The revisions saved here are
remembered while the engine follows the store, so it is not woken by its own
saves.
"""

from __future__ import annotations

from typing import Any

from prism.core.keys import RELEASES, dump, release_key
from prism.release.events import Audit, Emit, Step
from prism.release.record import ReleaseRecord
from prism.release.webhooks import Event as HookEvent
from prism.release.webhooks import WebhookSender
from prism.types import AuditDraft, Clock, Compare, Put, Store

__all__ = ["Recorder", "audit_draft", "audit_of", "stored_releases"]


async def stored_releases(store: Store, app: str) -> list[ReleaseRecord]:
    """Every color's latest release of ``app`` as the store holds it, newest first."""
    found = [
        ReleaseRecord.model_validate_json(e.value) for e in await store.list(f"{RELEASES}{app}/")
    ]
    return sorted(found, key=lambda r: r.started_at, reverse=True)


class Recorder:
    """Saves release steps to the store and sends their webhook events."""

    def __init__(self, store: Store, clock: Clock, webhooks: WebhookSender) -> None:
        self.store = store
        self.clock = clock
        self.webhooks = webhooks
        #: set while the engine follows the store: then saved revisions are remembered
        self.following = False
        #: revisions saved here and not yet seen by the follower
        self.own: set[int] = set()

    async def get(self, app: str, color: str) -> tuple[ReleaseRecord, int] | None:
        """The latest release record of ``color`` and its store revision, or None."""
        entry = await self.store.get(release_key(app, color))
        if entry is None:
            return None
        return ReleaseRecord.model_validate_json(entry.value), entry.mod_revision

    async def commit(self, result: Step, expect: int) -> int:
        """Save the step's record (with its audit entry), then send its webhook events."""
        record = result.record
        audit = audit_of(result)
        key = release_key(record.app, record.to_color)
        revision = await self.store.commit(
            [Put(key, dump(record))],
            expect=[Compare(key, expect)],
            audit=None if audit is None else audit_draft(record, audit),
        )
        self.landed(revision)
        self.emit(result)
        return revision

    def landed(self, revision: int) -> None:
        """A record saved at ``revision`` (here, or by a share change's commit): following
        the store skips it."""
        if self.following:
            self.own.add(revision)

    def ours(self, revision: int) -> bool:
        """Whether this process saved ``revision`` (told once: it is forgotten then)."""
        if revision in self.own:
            self.own.discard(revision)
            return True
        return False

    def emit(self, result: Step) -> None:
        """Send the saved step's webhook events."""
        record = result.record
        for action in result.actions:
            if isinstance(action, Emit):
                event = self.hook_event(
                    record, action.kind, action.seq, dict(action.data), at=action.at
                )
                self.webhooks.emit(record.plan.webhooks, event)

    def hook_event(
        self,
        record: ReleaseRecord,
        kind: str,
        seq: int,
        data: dict[str, Any],
        *,
        at: float | None = None,
    ) -> HookEvent:
        return HookEvent(
            kind=kind,
            app=record.app,
            color=record.to_color,
            release_id=record.id,
            seq=seq,
            at=self.clock.now() if at is None else at,
            data=data,
        )


def audit_of(result: Step) -> Audit | None:
    """The step's audit entry, if it has one (at most one)."""
    return next((a for a in result.actions if isinstance(a, Audit)), None)


def audit_draft(record: ReleaseRecord, audit: Audit) -> AuditDraft:
    """The audit entry a saved step makes, naming the release and its step."""
    detail: dict[str, Any] = {
        "release": record.id,
        "from": record.from_color,
        "to": record.to_color,
        "phase": record.phase.value,
        "step_index": record.step,
    }
    if audit.message:
        detail["step"] = {"name": audit.event, "message": audit.message}
    if audit.readings:
        detail["readings"] = dict(audit.readings)
    return AuditDraft(
        actor=record.actor,
        action=f"release.{audit.event}",
        app=record.app,
        detail=detail,
        reason=record.reason,
    )
