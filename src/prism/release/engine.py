"""The release engine: the thin async loop around the pure release machine.

Each release of a color of an app has one record in the store
(``releases/<app>/<color>``) and, in the process that drives releases, one
task here. A task loads the record, gathers what the machine
(:mod:`prism.release.machine`) wants observed -- the app's weights, the
target's health and the counters through the data plane, the confirm hook's
answer -- calls :func:`~prism.release.machine.step`, **saves** the new record
(compare-and-put, with its audit entry in the same commit, so a person's
pause/promote/abort is never lost), **then** performs the actions: webhook
events, and at most one traffic action (a share change through
:meth:`Traffic.set_weights`, or a drain), whose outcome is the next event.
A step whose action changes the routing is saved *in that change's own
commit* (:class:`~prism.dataplane.change.Along`): the record naming the share
change in flight and the new routing land in one transaction, before the data
plane converges, and a refused convergence reverts the routing but keeps the
record, which learns of the refusal as ``ShareFailed``. The readings and the
actions are :class:`~prism.release.acting.Acting`'s; saving a step and sending
its webhook events, :class:`~prism.release.recorder.Recorder`'s.

Starting a release saves nothing before the gates, which only read (one
reading of every color serves the health gate and the ready counts). A
driving engine then takes the first Tick at once from those readings when it
needs no other (no confirm hook): for blue/green the running record, the
switch and both audit entries are one fsync'd commit, and the release's task
goes on from the outcome.

Waiting goes through the injected :class:`~prism.types.Clock`, raced against
a wake-up, so a person's command acts at once and a fake clock passes a pause
instantly. A person's command only saves: the in-flight action it names (an
abort's rollback) is performed by the driving task when it wakes.

``drive=False`` makes an engine that only saves records (starts, commands):
a control plane that is not the leader. A driving engine also follows the
store's ``releases/`` prefix, so it drives releases other processes start or
steer. After a restart (:meth:`ReleaseEngine.resume_all`) every active record
first gets a ``Restarted`` event, which re-issues whatever it had in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from prism.core.capacity import ready_counts
from prism.core.keys import RELEASES, release_key
from prism.core.model import backend_name
from prism.dataplane.base import DataPlane
from prism.errors import (
    Compacted,
    Conflict,
    GateFailed,
    IllegalTransition,
    InvalidInput,
    NotFound,
    PrismError,
    StoreError,
)
from prism.release import machine
from prism.release.acting import Acting
from prism.release.events import (
    Abort,
    Began,
    Drain,
    Event,
    Pause,
    Promote,
    Restarted,
    Resume,
    SetShare,
    Step,
    Tick,
)
from prism.release.gates import health_gate
from prism.release.plan import ReleasePlan, WeightStep
from prism.release.record import Phase, ReleaseRecord
from prism.release.recorder import Recorder, stored_releases
from prism.release.traffic import Traffic, format_weights
from prism.release.webhooks import WebhookSender
from prism.store.desired import load_state
from prism.types import Clock, Store, WatchEvent

__all__ = ["ReleaseEngine", "release_key"]

log = logging.getLogger("prism.release.engine")

#: Phases a person must act on (or that wait for time); `start(wait=True)` returns there.
_SETTLED = frozenset({Phase.WAITING, Phase.PAUSED, Phase.HOLDING})

_Key = tuple[str, str]
#: what a starter leaves its release's driving task: the record, its revision, the next event
_Handoff = tuple[ReleaseRecord, int, Event]


class ReleaseEngine:
    """Starts, steers and (with ``drive``) drives releases; see the module docstring."""

    def __init__(
        self,
        store: Store,
        traffic: Traffic,
        plane: DataPlane,
        clock: Clock,
        webhooks: WebhookSender,
        *,
        drive: bool = True,
    ) -> None:
        self.store = store
        self.traffic = traffic
        self.plane = plane
        self.clock = clock
        self.webhooks = webhooks
        self.drive = drive
        self.recorder = Recorder(store, clock, webhooks)
        self.acting = Acting(store, traffic, plane, clock, self.recorder)
        self._tasks: dict[_Key, asyncio.Task[None]] = {}
        self._wake: dict[_Key, asyncio.Event] = {}
        self._handoff: dict[_Key, _Handoff] = {}
        self._follower: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------

    async def resume_all(self) -> None:
        """After a (re)start: refuse releases that never began, drive every active one, and
        follow the store for releases other processes start or steer.

        Does nothing for an engine that does not drive: the leader does this.
        """
        if not self.drive:
            return
        revision = await self.store.revision()
        for entry in await self.store.list(RELEASES):
            record = ReleaseRecord.model_validate_json(entry.value)
            if record.phase is Phase.PENDING:
                # Saved just before its first gate: nothing was changed yet.
                with contextlib.suppress(Conflict):  # its starter got there first
                    result = machine.step(record, Restarted(at=self.clock.now()))
                    await self.recorder.commit(result, entry.mod_revision)
            elif record.active:
                self._spawn(record.app, record.to_color, restarted=True)
        if self._follower is None or self._follower.done():
            self.recorder.following = True
            self._follower = asyncio.create_task(self._follow(revision), name="releases follower")

    async def close(self) -> None:
        """Stop every task of this engine (records stay as saved: a restart resumes them)."""
        tasks = list(self._tasks.values())
        if self._follower is not None:
            tasks.append(self._follower)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self._follower = None
        self.recorder.following = False

    # -- reads ---------------------------------------------------------------

    async def get(self, app: str, color: str) -> tuple[ReleaseRecord, int] | None:
        """The latest release record of ``color`` and its store revision, or None."""
        return await self.recorder.get(app, color)

    async def records(self, app: str) -> list[ReleaseRecord]:
        """Every color's latest release of ``app``, newest first."""
        return await stored_releases(self.store, app)

    async def latest(self, app: str) -> ReleaseRecord | None:
        """The app's newest release, or None."""
        records = await self.records(app)
        return records[0] if records else None

    async def find(self, app: str, color: str | None) -> tuple[ReleaseRecord, int]:
        """The release of ``color``, or the app's only active one when no color is named."""
        if color is not None:
            found = await self.get(app, color)
            if found is None:
                raise NotFound(f"no release of {color!r} in {app!r}")
            return found
        active = [r for r in await self.records(app) if r.active]
        if not active:
            raise NotFound(f"{app!r} has no active release", hint=f"prism release status {app}")
        if len(active) > 1:
            raise InvalidInput(
                f"{app!r} has {len(active)} active releases: name one",
                hint="--color " + " | ".join(r.to_color for r in active),
            )
        found = await self.get(app, active[0].to_color)
        if found is None:
            raise NotFound(f"no release of {active[0].to_color!r} in {app!r}")
        return found

    # -- starting ------------------------------------------------------------

    async def start(
        self, app_name: str, plan: ReleasePlan, *, actor: str, reason: str | None, wait: bool
    ) -> ReleaseRecord:
        """Gate, save and start a release; with ``wait``, return once it ends or waits.

        A refused gate raises GateFailed, with nothing changed but the refused record.
        Waiting follows the record in the store, so it works whichever process drives it.
        """
        async with self.traffic.lock(app_name):
            record, handoff = await self._begin(app_name, plan, actor, reason)
        if self.drive:
            if handoff is not None:
                self._handoff[(record.app, record.to_color)] = handoff
            self._spawn(record.app, record.to_color, restarted=False)
        if not wait:
            return record
        return await self._settled(record.app, record.to_color)

    async def _begin(
        self, app_name: str, plan: ReleasePlan, actor: str, reason: str | None
    ) -> tuple[ReleaseRecord, _Handoff | None]:
        """Gate, then save the release: the record, and what its driver goes on from.

        Nothing is saved before the gates, which only read: a refusal saves the
        refused record, a pass the running one. A driving engine whose first
        Tick needs nothing observed beyond what the gates just read (no confirm
        hook) takes that Tick at once, and when it sets a share, saves the record
        naming it in the share change's own commit (one fsync before the switch).
        """
        state = await load_state(self.store)
        app = state.spec.app(app_name)
        app.color(plan.to)
        for planned in plan.steps:
            if isinstance(planned, WeightStep) and planned.source is not None:
                app.color(planned.source)
        routing = state.routing_for(app)
        existing = await self.get(app.name, plan.to)
        if existing is not None and existing[0].active:
            raise Conflict(
                f"{plan.to!r} of {app.name!r} is already being released "
                f"(phase {existing[0].phase.value})",
                hint=f"prism release status {app.name}",
            )
        if routing.weights.get(plan.to, 0) >= plan.final_weight and plan.final_weight == 100:
            raise Conflict(
                f"{app.name!r} already sends all its traffic to {plan.to!r}", hint="nothing to do"
            )
        record = machine.propose(
            id=uuid.uuid4().hex[:12],
            app=app.name,
            stable=app.stable,
            plan=plan,
            weights=routing.weights,
            actor=actor,
            reason=reason,
            at=self.clock.now(),
        )
        # One reading of every color serves the health gate and the ready counts.
        backends = {c.name: backend_name(app.name, c.name) for c in app.colors}
        servers, gates = await self.traffic.read_and_gate(
            state, app, [plan.to], plan.smoke, list(backends.values())
        )
        up = ready_counts(servers, backends)
        result = machine.step(record, Began(at=self.clock.now(), gates=tuple(gates), up=up))
        expect = existing[1] if existing else 0
        if result.record.phase is Phase.REFUSED:
            await self.recorder.commit(result, expect)
            failed = next(g for g in gates if not g.passed)
            raise GateFailed(
                f"release of {app.name!r} to {plan.to!r} refused: {failed.message}",
                hint=f"nothing was changed; traffic stays as it was "
                f"({format_weights(routing.weights)})",
                detail={"gate": failed.name, "readings": failed.readings},
            )
        if self.drive and machine.wants(result.record).confirm is None:
            target = backend_name(app.name, plan.to)
            tick = machine.step(
                result.record,
                Tick(
                    at=self.clock.now(),
                    weights=routing.weights,
                    health=health_gate(servers, target, plan.to),
                    lost=(await self.plane.info()).lost,
                ),
            )
            share = _share_of(tick)
            if share is not None:
                both = Step(tick.record, result.actions + tick.actions, tick.wake_in)
                outcome, revision = await self.acting.share_locked(both, share, expect)
                return tick.record, (tick.record, revision, outcome)
        await self.recorder.commit(result, expect)
        return result.record, None

    async def _settled(self, app: str, color: str) -> ReleaseRecord:
        """The record once it ended or waits for a person, followed through the store."""
        key = release_key(app, color)
        while True:
            found = await self.get(app, color)
            if found is None:
                raise NotFound(f"no release of {color!r} in {app!r}")
            record, revision = found
            if not record.active or record.phase in _SETTLED:
                return record
            changes = self.store.watch(key, from_revision=revision)
            try:
                async for change in changes:
                    if change.key != key or change.value is None:
                        continue
                    record = ReleaseRecord.model_validate_json(change.value)
                    if not record.active or record.phase in _SETTLED:
                        return record
                return record  # the store closed
            except Compacted:
                continue  # the history is gone: read the record afresh
            finally:
                await _close(changes)

    # -- a person's commands -----------------------------------------------------

    async def promote(
        self, app: str, color: str | None, *, full: bool, actor: str
    ) -> ReleaseRecord:
        """Skip the current pause (or hold); with ``full``, go straight to the final weight."""
        return await self._command(app, color, lambda at: Promote(at=at, actor=actor, full=full))

    async def pause(self, app: str, color: str | None, *, actor: str) -> ReleaseRecord:
        """Stop the release where it is; its pause keeps the time it had left."""
        return await self._command(app, color, lambda at: Pause(at=at, actor=actor))

    async def resume(self, app: str, color: str | None, *, actor: str) -> ReleaseRecord:
        """Let a paused release go on."""
        return await self._command(app, color, lambda at: Resume(at=at, actor=actor))

    async def abort(
        self, app: str, color: str | None, *, actor: str, reason: str | None
    ) -> ReleaseRecord:
        """Roll back on request: the target returns to its share before the release."""
        return await self._command(app, color, lambda at: Abort(at=at, actor=actor, reason=reason))

    async def _command(
        self, app: str, color: str | None, event: Callable[[float], Event]
    ) -> ReleaseRecord:
        """Step, save, emit; an illegal command raises and saves nothing. The traffic
        action it may name is left to the driving task, woken here or by the store."""
        record, revision = await self.find(app, color)
        result = machine.step(record, event(self.clock.now()))
        await self.recorder.commit(result, revision)
        if self.drive and result.record.active:
            self._spawn(record.app, record.to_color, restarted=False)
        return result.record

    # -- driving -------------------------------------------------------------

    def _spawn(self, app: str, color: str, *, restarted: bool) -> None:
        """Start the release's task, or wake it if it runs."""
        key = (app, color)
        wake = self._wake.setdefault(key, asyncio.Event())
        task = self._tasks.get(key)
        if task is not None and not task.done():
            wake.set()
            return
        self._tasks[key] = asyncio.create_task(
            self._run(app, color, restarted), name=f"release {app}/{color}"
        )

    async def _run(self, app: str, color: str, restarted: bool) -> None:
        key = (app, color)
        while True:
            event: Event
            handed = self._handoff.pop(key, None)
            if handed is not None:
                record, revision, event = handed  # its starter saved it and acted
            else:
                found = await self.get(app, color)
                if found is None or not found[0].active or found[0].phase is Phase.PENDING:
                    return  # ended (or still being started: its starter spawns it again)
                record, revision = found
            delay: float | None
            try:
                if handed is not None:
                    pass
                elif restarted:
                    restarted = False
                    event = Restarted(at=self.clock.now())
                else:
                    event = await self.acting.observe(record)
                delay = await self._drive(record, revision, event)
            except IllegalTransition as exc:
                log.error("release %s/%s: %s", app, color, exc)  # a bug: don't spin on it
                delay = record.analysis.tick_ms / 1000
            except PrismError as exc:
                log.warning("release %s/%s: %s", app, color, exc)
                delay = record.analysis.tick_ms / 1000
            if delay is None or delay > 0:
                await self._nap(key, delay)

    async def _drive(self, record: ReleaseRecord, revision: int, event: Event) -> float | None:
        """Step, save, act, and feed each outcome back, until the machine waits."""
        while True:
            result = machine.step(record, event)
            changed = result.record is not record
            share = _share_of(result)
            outcome: Event | None = None
            try:
                if share is not None:
                    # saved with the share change itself, when it makes one (one commit)
                    outcome, saved = await self.acting.set_share(
                        result, share, revision if changed else None
                    )
                    revision = saved if changed else revision
                else:
                    if changed:
                        revision = await self.recorder.commit(result, revision)
                    for action in result.actions:
                        if isinstance(action, Drain):
                            outcome = await self.acting.drain(result.record, action)
            except Conflict:
                return 0.0  # a person (or another process) changed it meanwhile: reload
            record = result.record
            if outcome is None:
                return result.wake_in
            event = outcome

    async def _nap(self, key: _Key, delay: float | None) -> None:
        """Sleep ``delay`` seconds on the clock (None: indefinitely) or until woken."""
        wake = self._wake.setdefault(key, asyncio.Event())
        if not wake.is_set():
            waits: set[asyncio.Task[Any]] = {asyncio.create_task(wake.wait())}
            if delay is not None:
                waits.add(asyncio.create_task(self.clock.sleep(delay)))
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in waits:
                    waiting.cancel()
                await asyncio.gather(*waits, return_exceptions=True)
        wake.clear()

    # -- following other processes -------------------------------------------

    async def _follow(self, revision: int) -> None:
        """Drive releases other processes start, and wake ours when they are steered."""
        while True:
            changes = self.store.watch(RELEASES, from_revision=revision)
            try:
                async for change in changes:
                    revision = change.revision
                    self._notice(change)
                return  # the store closed
            except Compacted:
                revision = await self.store.revision()
                for entry in await self.store.list(RELEASES):
                    self._notice(WatchEvent("put", entry.key, entry.value, entry.mod_revision))
            except StoreError as exc:
                log.warning("following releases: %s", exc)
                await self.clock.sleep(1.0)
            finally:
                await _close(changes)

    def _notice(self, change: WatchEvent) -> None:
        if self.recorder.ours(change.revision):
            return
        if change.kind != "put" or change.value is None:
            return
        try:
            record = ReleaseRecord.model_validate_json(change.value)
        except ValueError:
            log.warning("ignoring an unreadable release record at %s", change.key)
            return
        # A pending record is its starter's until the gates passed.
        if record.active and record.phase is not Phase.PENDING:
            self._spawn(record.app, record.to_color, restarted=False)


def _share_of(result: Step) -> SetShare | None:
    """The step's share change, if it has one (a step has at most one traffic action)."""
    return next((a for a in result.actions if isinstance(a, SetShare)), None)


async def _close(changes: AsyncIterator[WatchEvent]) -> None:
    """Release a watch promptly (the Store protocol types it as a plain async iterator)."""
    close = getattr(changes, "aclose", None)
    if close is not None:
        await close()
