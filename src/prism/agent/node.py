"""One fleet node's agent: converge this HAProxy on desired state in the store, and report.

Lifecycle::

    start HAProxy from disk (last applied state)       no store needed
    loop:                                               every store outage: back off, retry
        lease; known/<node>; full resync (a checked converge of the whole desired state)
        watch spec/, routing/, pins/, registrations/, desired, fleet/commit and fleet/poll
        from the resync revision + 1
        on desired changes   converge with map changes *staged*; report staged or applied
        on fleet/commit R    if R is what is staged: write map files, commit, read back
        on fleet/poll n      fresh readings (and the smoke requests asked for), answering n
        every heartbeat      report; every reconcile interval: repair drift
    beside it all: the node's balancer (slow-server weights, circuit trips) on the
    last applied state, auditing into the store with the node's name

A watch that the store can no longer resume (history compacted) ends the
session: the next one resyncs fully. The last applied desired state is kept in
``applied.json`` beside HAProxy's files, so a restarted agent knows its
servers' addresses before the store answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prism.clock import SystemClock
from prism.core.fleet import COMMIT, POLL, NodeReport, known_key, node_key
from prism.core.keys import DESIRED, PINS, REGISTRATIONS, ROUTING, SPEC, dump
from prism.core.readings import Counters, SmokeReply
from prism.core.state import DesiredState
from prism.dataplane.local import LocalDataPlane, smoke_request
from prism.errors import Compacted, PrismError, StoreError
from prism.haproxy.readouts import backend_counters, server_readings
from prism.node.admission import fd_limit
from prism.node.files import read_text, write_atomic
from prism.store.desired import load_state
from prism.types import Clock, Lease, Put, Store, WatchEvent

__all__ = ["Agent", "AgentOptions"]

log = logging.getLogger(__name__)

_DESIRED = (SPEC, ROUTING, PINS, REGISTRATIONS, DESIRED)
_BACKOFF = (0.2, 5.0)


@dataclass(frozen=True)
class AgentOptions:
    """Who this node is and how often it speaks."""

    node: str
    address: str
    heartbeat: float = 1.0
    lease_ttl: float = 3.0
    reconcile_interval: float = 5.0


class _Restart(Exception):
    """The session must start over (lease lost, watch ended)."""


class Agent:
    """Keeps one node's HAProxy in step with the fleet; see the module docstring."""

    def __init__(
        self,
        store: Store,
        plane: LocalDataPlane,
        options: AgentOptions,
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.plane = plane
        self.options = options
        self.clock: Clock = clock or SystemClock()
        self.applier = plane.applier
        self.applied: DesiredState | None = self._load_applied()
        self._staged: DesiredState | None = None
        self._mode = "none"
        self._error: tuple[str, int] | None = None
        self._synced = False
        self._poll = 0
        self._smoke: tuple[tuple[str, str, SmokeReply], ...] = ()
        self._lease: Lease | None = None
        self._publishing = asyncio.Lock()
        plane.balancer.node = options.node
        plane.balancer.audit = store.record

    # -- lifecycle -------------------------------------------------------

    async def run(self) -> None:
        """Serve until cancelled: HAProxy first, then the store, reconnecting forever."""
        await self.plane.start(self.applied or DesiredState())
        balancing = asyncio.create_task(self.plane.balancer.run(lambda: self.applied))
        delay = _BACKOFF[0]
        try:
            while True:
                try:
                    await self._session()
                    delay = _BACKOFF[0]
                except (StoreError, _Restart) as exc:
                    self._synced = False
                    level = logging.INFO if isinstance(exc, Compacted) else logging.WARNING
                    log.log(level, "agent %s: %s; reconnecting", self.options.node, exc)
                    await asyncio.sleep(0 if isinstance(exc, Compacted) else delay)
                    delay = min(delay * 2, _BACKOFF[1])
        finally:
            balancing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await balancing

    async def close(self) -> None:
        """End the lease now, so the fleet sees this node leave at once."""
        if self._lease is not None:
            with contextlib.suppress(PrismError):
                await self._lease.revoke()

    async def _session(self) -> None:
        self._lease = await self.store.grant(self.options.lease_ttl)
        if await self.store.get(known_key(self.options.node)) is None:
            await self.store.commit(
                [Put(known_key(self.options.node), dump({"since": self.clock.now()}))]
            )
        revision = await self._resync()
        queue: asyncio.Queue[tuple[str, WatchEvent] | BaseException] = asyncio.Queue()
        tasks = [
            asyncio.create_task(self._pump(prefix, revision, queue))
            for prefix in (*_DESIRED, COMMIT, POLL)
        ]
        tasks.append(asyncio.create_task(self._keep_alive(self._lease, queue)))
        tasks.append(asyncio.create_task(self._heartbeat(queue)))
        try:
            await self._serve(queue)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _serve(self, queue: asyncio.Queue[tuple[str, WatchEvent] | BaseException]) -> None:
        while True:
            try:
                first = await asyncio.wait_for(queue.get(), self.options.reconcile_interval)
            except TimeoutError:
                await self._reconcile()
                continue
            batch = [first]
            while not queue.empty():
                batch.append(queue.get_nowait())
            for item in batch:
                if isinstance(item, BaseException):
                    raise item
            events = [item for item in batch if not isinstance(item, BaseException)]
            commits = [e for p, e in events if p == COMMIT and e.value]
            polls = [e for p, e in events if p == POLL and e.value]
            if commits:
                await self._commit(max(json.loads(e.value or "{}")["revision"] for e in commits))
            if any(p in _DESIRED for p, _ in events):
                await self._converge()
            if polls:
                await self._answer(max(polls, key=lambda e: e.revision))

    # -- converging ------------------------------------------------------

    async def _resync(self) -> int:
        """Converge on the whole desired state at once (no staging); return its revision."""
        state = await load_state(self.store)
        self._staged = None
        try:
            self._mode = (await self.applier.apply(state)).mode
        except PrismError as exc:
            self._error = (str(exc), state.revision)
            log.warning(
                "agent %s: resync to revision %d failed: %s", self.options.node, state.revision, exc
            )
        else:
            self._applied(state)
        self._synced = True
        await self._publish()
        return state.revision

    async def _converge(self) -> None:
        state = await load_state(self.store)
        try:
            report = await self.applier.apply(state, stage=True)
        except PrismError as exc:
            self._staged = None
            self._error = (str(exc), state.revision)
            log.warning("agent %s: revision %d refused: %s", self.options.node, state.revision, exc)
        else:
            if report.mode == "staged":
                self._staged = state
            else:
                self._staged = None
                self._mode = report.mode
                self._applied(state)
        await self._publish()

    async def _commit(self, revision: int) -> None:
        staged = self._staged
        if staged is None or self.applier.staged_revision != revision:
            return  # not ours: a newer change replaced it, or it never staged here
        self._staged = None
        try:
            self._mode = (await self.applier.commit_staged(revision)).mode
        except PrismError as exc:
            self._error = (str(exc), revision)
            log.warning(
                "agent %s: commit of revision %d failed: %s", self.options.node, revision, exc
            )
        else:
            self._applied(staged)
        await self._publish()

    async def _reconcile(self) -> None:
        if self.applied is None or self._staged is not None:
            return
        try:
            await self.plane.reconcile(self.applied)
        except PrismError as exc:
            log.warning("agent %s: reconcile failed: %s", self.options.node, exc)

    def _applied(self, state: DesiredState) -> None:
        self.applied = state
        self._error = None
        write_atomic(
            self.plane.paths.root / "applied.json", state.model_dump_json() + "\n", mode=0o600
        )

    def _load_applied(self) -> DesiredState | None:
        text = read_text(self.plane.paths.root / "applied.json")
        if not text:
            return None
        try:
            return DesiredState.model_validate_json(text)
        except ValueError:
            log.warning("agent %s: ignoring an unreadable applied.json", self.options.node)
            return None

    # -- answering -------------------------------------------------------

    async def _answer(self, event: WatchEvent) -> None:
        """Fresh readings for a poll, with the smoke requests it asks for."""
        wanted: Sequence[Sequence[str]] = json.loads(event.value or "{}").get("smoke", [])
        replies = []
        state = self.applied
        for app_name, color in wanted:
            if state is None or app_name not in {a.name for a in state.spec.apps}:
                reply = SmokeReply(None, "", f"app {app_name!r} is not applied here", "")
            else:
                app = state.spec.app(app_name)
                reply = await smoke_request(
                    state.spec,
                    app,
                    color,
                    self.plane.settings.smoke_key,
                    address=self.options.address,
                    node=self.options.node,
                )
            replies.append((app_name, color, reply))
        self._poll, self._smoke = event.revision, tuple(replies)
        await self._publish()

    async def _publish(self) -> None:
        if self._lease is None:
            return
        async with self._publishing:
            report = await self._report()
            await self.store.commit(
                [Put(node_key(self.options.node), report.to_json(), lease=self._lease.id)]
            )

    async def _report(self) -> NodeReport:
        info = await self.plane.info()
        servers: tuple[Any, ...] = ()
        counters: dict[str, Counters] = {}
        used: dict[str, int] = {}
        if self.plane.supervisor.running:
            try:
                rows = await self.plane.runtime.show_stat()
                servers = tuple(
                    self.plane.balancer.annotate(server_readings(rows, node=self.options.node))
                )
                recorder = self.plane.requests.recorder if self.plane.requests else None
                for backend in {r.proxy for r in rows if r.type == 1}:
                    counted = backend_counters(rows, backend)
                    if recorder is not None:
                        counted = dataclasses.replace(counted, log=recorder.snapshot(backend))
                    counters[backend] = counted
                for conn in await self.plane.runtime.show_servers_conn():
                    used[f"{conn.backend}/{conn.server}"] = conn.used_cur
            except PrismError as exc:
                log.warning("agent %s: readings failed: %s", self.options.node, exc)
        error, error_revision = self._error or (None, 0)
        return NodeReport(
            node=self.options.node,
            address=self.options.address,
            heartbeat=self.clock.now(),
            synced=self._synced,
            applied=self.applied.revision if self.applied else 0,
            mode=self._mode,
            staged=self._staged.revision if self._staged else 0,
            error=error,
            error_revision=error_revision,
            drift=bool(self.applier.last_error and "read-back" in self.applier.last_error),
            poll=self._poll,
            haproxy=dict(info.detail),
            maxconn=self.plane.settings.maxconn,
            fd_limit=fd_limit(),
            servers=servers,
            counters=counters,
            in_use=used,
            smoke=self._smoke,
        )

    # -- background ------------------------------------------------------

    async def _pump(
        self,
        prefix: str,
        revision: int,
        queue: asyncio.Queue[tuple[str, WatchEvent] | BaseException],
    ) -> None:
        try:
            async for event in self.store.watch(prefix, from_revision=revision):
                await queue.put((prefix, event))
            await queue.put(_Restart(f"the watch of {prefix} ended"))
        except PrismError as exc:
            await queue.put(exc)

    async def _keep_alive(
        self, lease: Lease, queue: asyncio.Queue[tuple[str, WatchEvent] | BaseException]
    ) -> None:
        try:
            while True:
                await asyncio.sleep(lease.ttl / 3)
                await lease.refresh()
        except PrismError as exc:
            await queue.put(_Restart(f"lease lost: {exc}"))

    async def _heartbeat(
        self, queue: asyncio.Queue[tuple[str, WatchEvent] | BaseException]
    ) -> None:
        try:
            while True:
                await asyncio.sleep(self.options.heartbeat)
                started = time.monotonic()
                await self._publish()
                if time.monotonic() - started > self.options.lease_ttl:
                    log.warning("agent %s: a report took longer than the lease", self.options.node)
        except PrismError as exc:
            await queue.put(exc)
