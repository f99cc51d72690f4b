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
record, which learns of the refusal as ``ShareFailed``.

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

from prism.core.capacity import cap_rollback, ready_counts
from prism.core.keys import RELEASES, dump, release_key
from prism.core.model import backend_name
from prism.core.readings import Counters
from prism.core.shares import set_share
from prism.dataplane.base import DataPlane
from prism.dataplane.change import Along
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
from prism.release.events import (
    Abort,
    Audit,
    Began,
    Drain,
    Drained,
    Emit,
    Event,
    Pause,
    Promote,
    Restarted,
    Resume,
    SetShare,
    ShareFailed,
    ShareSet,
    Step,
    Tick,
)
from prism.release.gates import health_gate
from prism.release.plan import ReleasePlan, WeightStep
from prism.release.record import Phase, ReleaseRecord
from prism.release.traffic import Traffic, format_weights
from prism.release.webhooks import Event as HookEvent
from prism.release.webhooks import WebhookSender, confirm
from prism.store.desired import load_state
from prism.types import AuditDraft, Clock, Compare, Put, Store, WatchEvent

__all__ = ["ReleaseEngine", "release_key", "stored_releases"]

log = logging.getLogger("prism.release.engine")

#: Phases a person must act on (or that wait for time); `start(wait=True)` returns there.
_SETTLED = frozenset({Phase.WAITING, Phase.PAUSED, Phase.HOLDING})

_Key = tuple[str, str]
#: what a starter leaves its release's driving task: the record, its revision, the next event
_Handoff = tuple[ReleaseRecord, int, Event]


async def stored_releases(store: Store, app: str) -> list[ReleaseRecord]:
    """Every color's latest release of ``app`` as the store holds it, newest first."""
    found = [
        ReleaseRecord.model_validate_json(e.value) for e in await store.list(f"{RELEASES}{app}/")
    ]
    return sorted(found, key=lambda r: r.started_at, reverse=True)


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
        self._tasks: dict[_Key, asyncio.Task[None]] = {}
        self._wake: dict[_Key, asyncio.Event] = {}
        self._handoff: dict[_Key, _Handoff] = {}
        #: revisions this engine saved, so following the store does not wake it for them
        self._own: set[int] = set()
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
                    await self._commit(result, entry.mod_revision)
            elif record.active:
                self._spawn(record.app, record.to_color, restarted=True)
        if self._follower is None or self._follower.done():
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

    # -- reads ---------------------------------------------------------------

    async def get(self, app: str, color: str) -> tuple[ReleaseRecord, int] | None:
        """The latest release record of ``color`` and its store revision, or None."""
        entry = await self.store.get(release_key(app, color))
        if entry is None:
            return None
        return ReleaseRecord.model_validate_json(entry.value), entry.mod_revision

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
            await self._commit(result, expect)
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
                outcome, revision = await self._share_locked(both, share, expect)
                return tick.record, (tick.record, revision, outcome)
        await self._commit(result, expect)
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
        await self._commit(result, revision)
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
                    event = await self._observe(record)
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
                    outcome, saved = await self._set_share(
                        result, share, revision if changed else None
                    )
                    revision = saved if changed else revision
                else:
                    if changed:
                        revision = await self._commit(result, revision)
                    for action in result.actions:
                        if isinstance(action, Drain):
                            outcome = await self._drain(result.record, action)
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

    async def _observe(self, record: ReleaseRecord) -> Tick:
        """What :func:`machine.wants` for the next Tick of ``record``."""
        wants = machine.wants(record)
        if not wants.readings:
            return Tick(at=self.clock.now())
        state = await load_state(self.store)
        app = state.spec.app(record.app)
        target = backend_name(app.name, record.to_color)
        baseline = backend_name(app.name, record.from_color)
        try:
            servers = await self.plane.servers([target])
            counters = await self.plane.counters([target, baseline])
        except PrismError as exc:
            # no reading at all: the machine counts it against consecutive_error_limit
            log.warning("release %s/%s: no reading: %s", record.app, record.to_color, exc)
            return Tick(at=self.clock.now(), weights=state.routing_for(app).weights)
        answer = None
        if wants.confirm is not None and record.plan.confirm is not None:
            ask = wants.confirm
            question = self._hook_event(
                record, "step.confirm", ask.seq, {"step": ask.step, "weight": ask.weight}
            )
            answer = await confirm(self.webhooks, record.plan.confirm, question)
        return Tick(
            at=self.clock.now(),
            weights=state.routing_for(app).weights,
            health=health_gate(servers, target, record.to_color),
            target=counters.get(target),
            baseline=counters.get(baseline),
            confirm=answer,
            lost=(await self.plane.info()).lost,
        )

    async def _set_share(
        self, result: Step, action: SetShare, expect: int | None
    ) -> tuple[ShareSet | ShareFailed, int]:
        """Give the target its share (leaving colors other releases move alone) and save
        ``result`` unless ``expect`` is None (already saved); see :meth:`_share_locked`."""
        async with self.traffic.lock(result.record.app):
            return await self._share_locked(result, action, expect)

    async def _share_locked(
        self, result: Step, action: SetShare, expect: int | None
    ) -> tuple[ShareSet | ShareFailed, int]:
        """The share change of ``action``, holding the app's traffic lock.

        With ``expect`` (the record's stored revision), ``result`` is saved first:
        in the share change's own transaction when there is one, so the record
        naming the change in flight and the new routing land together; alone
        otherwise, or when that transaction was refused (then a Conflict on the
        record itself propagates: reload). Returns the outcome and the record's
        revision.
        """
        record = result.record
        along: Along | None = None
        if expect is not None:
            key = release_key(record.app, record.to_color)
            along = Along(
                [Put(key, dump(record))],
                expect=[Compare(key, expect)],
                # a started release's first step carries its start's entry too
                audits=[_draft(record, a) for a in result.actions if isinstance(a, Audit)],
                landed=self._landed,
            )
        try:
            state = await load_state(self.store)
            app = state.spec.app(record.app)
            routing = state.routing_for(app)
            busy = await self.traffic.releasing(app.name) - {record.to_color}
            donors = [
                c.name for c in app.colors if c.name != record.to_color and c.name not in busy
            ]
            target = set_share(
                routing.weights,
                record.to_color,
                action.share,
                donors=donors,
                source=action.source,
                restore=action.restore,
            )
            capped: tuple[str, ...] = ()
            if action.purpose == "rollback" and record.initial_up:
                up = await self._ready(app.name, list(target))
                target, capped = cap_rollback(
                    target,
                    record.to_color,
                    record.initial_weights,
                    record.initial_up,
                    up,
                )
            ms = None
            if target != routing.weights:
                done = await self.traffic.set_weights(
                    app,
                    routing,
                    target,
                    actor=record.actor,
                    action=f"release.{action.purpose}",
                    reason=record.reason,
                    detail=dict(action.detail),
                    along=along,
                )
                ms = done["ms"]
        except PrismError as exc:
            revision = await self._saved(result, expect, along)
            return ShareFailed(
                at=self.clock.now(), purpose=action.purpose, error=str(exc)
            ), revision
        revision = await self._saved(result, expect, along)
        readings: dict[str, Counters] = {}
        if action.purpose == "step":
            # The counters the new analysis window starts from; none read is no window yet.
            backends = [backend_name(app.name, c) for c in (record.to_color, record.from_color)]
            try:
                readings = await self.plane.counters(backends)
            except PrismError as exc:
                log.warning("release %s/%s: %s", record.app, record.to_color, exc)
        return ShareSet(
            at=self.clock.now(),
            purpose=action.purpose,
            weights=target,
            ms=ms,
            target=readings.get(backend_name(app.name, record.to_color)),
            baseline=readings.get(backend_name(app.name, record.from_color)),
            capped=capped,
        ), revision

    async def _saved(self, result: Step, expect: int | None, along: Along | None) -> int:
        """``result``'s revision once saved: by the share change's commit, or now, alone."""
        if along is not None and along.revision is not None:
            self._emit(result)
            return along.revision
        if expect is None:
            return 0  # not ours to save: the caller keeps the revision it has
        return await self._commit(result, expect)

    async def _ready(self, app: str, colors: list[str]) -> dict[str, int]:
        """Ready servers per color, as the data plane sees them now."""
        backends = {color: backend_name(app, color) for color in colors}
        return ready_counts(await self.plane.servers(list(backends.values())), backends)

    async def _drain(self, record: ReleaseRecord, action: Drain) -> Drained:
        state = await load_state(self.store)
        app = state.spec.app(record.app)
        result = await self.traffic.drain(app, list(action.colors), action.timeout_ms)
        return Drained(at=self.clock.now(), result=result)

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
        if change.revision in self._own:
            self._own.discard(change.revision)
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

    # -- saving and telling ---------------------------------------------------

    async def _commit(self, result: Step, expect: int) -> int:
        """Save the step's record (with its audit entry), then send its webhook events."""
        record = result.record
        audit = _audit_of(result)
        key = release_key(record.app, record.to_color)
        revision = await self.store.commit(
            [Put(key, dump(record))],
            expect=[Compare(key, expect)],
            audit=None if audit is None else _draft(record, audit),
        )
        if self._follower is not None:
            self._own.add(revision)
        self._emit(result)
        return revision

    def _landed(self, revision: int) -> None:
        """A record saved by a share change's commit: following the store skips it."""
        if self._follower is not None:
            self._own.add(revision)

    def _emit(self, result: Step) -> None:
        """Send the saved step's webhook events."""
        record = result.record
        for action in result.actions:
            if isinstance(action, Emit):
                event = self._hook_event(
                    record, action.kind, action.seq, dict(action.data), at=action.at
                )
                self.webhooks.emit(record.plan.webhooks, event)

    def _hook_event(
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


def _share_of(result: Step) -> SetShare | None:
    """The step's share change, if it has one (a step has at most one traffic action)."""
    return next((a for a in result.actions if isinstance(a, SetShare)), None)


def _audit_of(result: Step) -> Audit | None:
    """The step's audit entry, if it has one (at most one)."""
    return next((a for a in result.actions if isinstance(a, Audit)), None)


def _draft(record: ReleaseRecord, audit: Audit) -> AuditDraft:
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


async def _close(changes: AsyncIterator[WatchEvent]) -> None:
    """Release a watch promptly (the Store protocol types it as a plain async iterator)."""
    close = getattr(changes, "aclose", None)
    if close is not None:
        await close()
