"""The release use case: start a blue/green or progressive release, steer it, read it."""

from __future__ import annotations

from typing import Any, Literal

from prism import names
from prism.core.model import parse_model
from prism.release.engine import ReleaseEngine
from prism.release.plan import ReleasePlan
from prism.release.record import ReleaseRecord
from prism.services.status import StatusService
from prism.store.desired import load_state

__all__ = ["ReleaseService", "Steer"]

Steer = Literal["promote", "pause", "resume", "abort"]


class ReleaseService:
    """``prism release``: start, steer and inspect releases (the engine drives them)."""

    def __init__(self, engine: ReleaseEngine, status: StatusService) -> None:
        self.engine = engine
        self.status = status

    async def blue_green(
        self,
        app: str,
        to: str,
        *,
        smoke: bool,
        drain_timeout_ms: int | None,
        actor: str,
        reason: str | None,
    ) -> ReleaseRecord:
        """The one-step plan ``[weight: 100]``: gate, switch, read back, drain.

        Answers once the release has ended."""
        plan = parse_model(
            ReleasePlan,
            {
                "to": names.check(names.NAME, to, "color"),
                "smoke": smoke,
                "drain_timeout_ms": drain_timeout_ms,
            },
            source="release",
        )
        return await self.engine.start(app, plan, actor=actor, reason=reason, wait=True)

    async def start(
        self, app: str, plan: ReleasePlan, *, actor: str, reason: str | None, wait: bool
    ) -> ReleaseRecord:
        """Start a progressive release (weight steps, pauses, analysis, webhooks)."""
        return await self.engine.start(app, plan, actor=actor, reason=reason, wait=wait)

    async def steer(
        self,
        app: str,
        action: Steer,
        *,
        color: str | None,
        full: bool,
        actor: str,
        reason: str | None,
    ) -> ReleaseRecord:
        """Promote (``full``: straight to the final weight), pause, resume or abort."""
        if action == "promote":
            return await self.engine.promote(app, color, full=full, actor=actor)
        if action == "pause":
            return await self.engine.pause(app, color, actor=actor)
        if action == "resume":
            return await self.engine.resume(app, color, actor=actor)
        return await self.engine.abort(app, color, actor=actor, reason=reason)

    async def records(self, app: str) -> list[ReleaseRecord]:
        """The latest release of each color of the app, newest first."""
        (await load_state(self.engine.store)).spec.app(app)
        return await self.engine.records(app)

    async def history(self, app: str, limit: int) -> list[dict[str, Any]]:
        """Release events from the audit log, newest first."""
        records = await self.status.history(app, 10_000)
        return [r for r in records if str(r["action"]).startswith("release.")][:limit]
