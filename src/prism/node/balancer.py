"""The node's own load-balancing loop: slow-server weights and circuit-trip records.

It runs where HAProxy is — inside the local data plane of a single node, and
inside every fleet node's agent — because each HAProxy sees its servers' times
and failures on its own. Every ``interval`` it reads ``show stat`` for the
apps that ask for slow-server weights or a circuit breaker, and then:

* judges each color (:func:`prism.core.balancing.judge_color`) and sends
  ``set server <backend>/<server> weight <percent>`` for each change;
* writes what it lowered to ``weights.json`` in the state directory (Prism's
  own record: a restarted Prism, or a restarted HAProxy, gets the same
  weights back), while HAProxy's server-state file carries ``uweight``
  across reloads; a weight HAProxy lost anyway (a server re-added, a restart
  from an older file) is sent again;
* puts lowered servers back to 100 when an app turns the feature off;
* follows each breaker's trips (:func:`prism.core.balancing.watch_trips`).

Every weight change and every trip episode is audited (``server.weight``,
``circuit.tripped``, ``circuit.closed``, with the node's name in a fleet)
through the store's ``record``: the audit log is the one history, and a node's
report is overwritten every heartbeat, so an event put there would be lost
whenever no control plane happened to read it. The store may be unreachable
(the data plane never waits for the control plane): audits then wait in a
bounded outbox and go out once it answers.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from prism.core.balancing import (
    FULL_WEIGHT,
    Sample,
    Track,
    Trips,
    WeightChange,
    judge_color,
    restore,
    watch_trips,
)
from prism.core.model import App, backend_name
from prism.core.readings import ServerReading
from prism.core.state import DesiredState
from prism.errors import PrismError
from prism.haproxy.parsers import StatRow
from prism.haproxy.readouts import server_readings
from prism.haproxy.runtime import RuntimeClient
from prism.node.files import read_text, write_atomic
from prism.types import AuditDraft, Clock

__all__ = ["Balancer"]

log = logging.getLogger(__name__)

Record = Callable[[AuditDraft], Awaitable[object]]

_RESPONSES = ("hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "hrsp_other")
_OUTBOX = 1000
#: a tripped server is whole again once ready this long without a new trip
_QUIET = 10.0


@dataclass(frozen=True, slots=True)
class _Watched:
    app: App
    color: str
    backend: str


class Balancer:
    """One node's slow-server weights and circuit-trip records; see the module docstring."""

    def __init__(
        self,
        runtime: RuntimeClient,
        record_path: Path,
        clock: Clock,
        *,
        node: str = "",
        interval: float = 0.5,
    ) -> None:
        self.runtime = runtime
        self.record_path = record_path
        self.clock = clock
        self.node = node
        self.interval = interval
        #: where audits go (the store's ``record``); set by whoever owns the store
        self.audit: Record | None = None
        self._tracks: dict[str, dict[str, Track]] = self._load()
        self._trips: dict[str, dict[str, Trips]] = {}
        self._outbox: list[AuditDraft] = []
        self._last_error = ""

    # -- the loop --------------------------------------------------------

    async def run(self, state: Callable[[], DesiredState | None]) -> None:
        """Tick every ``interval`` on the state HAProxy holds now, until cancelled."""
        while True:
            current = state()
            if current is not None:
                try:
                    await self.tick(current)
                except PrismError as exc:
                    if str(exc) != self._last_error:  # once, not twice a second
                        log.warning("balancer: %s", exc)
                    self._last_error = str(exc)
                else:
                    self._last_error = ""
            await self.flush()
            await self.clock.sleep(self.interval)

    async def tick(self, state: DesiredState) -> list[WeightChange]:
        """Read, judge, set weights, record; return the changes made."""
        watched = self._watched(state)
        if not watched and not self._tracks:
            return []
        rows = await self.runtime.show_stat(*sorted({w.backend for w in watched}))
        now = self.clock.monotonic()
        by_backend: dict[str, list[StatRow]] = {}
        for row in rows:
            if row.type == 2:
                by_backend.setdefault(row.proxy, []).append(row)
        made: list[WeightChange] = []
        seen: set[str] = set()
        for item in watched:
            seen.add(item.backend)
            found = by_backend.get(item.backend, [])
            readings = {r.server: r for r in server_readings(found) if not r.absent}
            raw = {row.server: row for row in found}
            if item.app.circuit is not None:
                await self._watch_trips(item, readings, now)
            else:
                self._trips.pop(item.backend, None)
            made += await self._judge(item, readings, raw, now)
        for backend in sorted(set(self._tracks) - seen):
            # the app or color is gone, or the feature is off for every app: forget it
            del self._tracks[backend]
            self._save()
        return made

    def _watched(self, state: DesiredState) -> list[_Watched]:
        # Runs every tick on the event loop: at 1,000 apps naming every color's
        # backend took milliseconds that weight moves waited behind, so apps with
        # neither feature nor a track left are skipped before any name is built.
        tracked = {backend.partition(".")[0] for backend in self._tracks}
        watched = []
        for app in state.served.apps:
            every = app.slow_servers.enabled or app.circuit is not None
            if not every and app.name not in tracked:
                continue
            for color in app.colors:
                backend = backend_name(app.name, color.name)
                if every or backend in self._tracks:
                    watched.append(_Watched(app, color.name, backend))
        return watched

    async def _judge(
        self,
        item: _Watched,
        readings: dict[str, ServerReading],
        raw: dict[str, StatRow],
        now: float,
    ) -> list[WeightChange]:
        before = self._tracks.get(item.backend, {})
        settings = item.app.slow_servers
        if settings.enabled:
            samples = {
                name: Sample(
                    at=now,
                    rtime_ms=raw[name].rtime,
                    requests=raw[name].req_tot,
                    responses=sum(_count(raw[name], c) for c in _RESPONSES),
                    ready=reading.ready,
                )
                for name, reading in readings.items()
            }
            tracks, changes = judge_color(settings, now, samples, before)
        else:
            changes = restore(before, "slow-server weights are off for this app")
            tracks = {}
        made = []
        for change in changes:
            if change.server not in readings:
                continue
            try:
                await self.runtime.set_server_weight(item.backend, change.server, change.new)
            except PrismError as exc:
                log.warning(
                    "balancer: cannot set %s/%s weight %d: %s",
                    item.backend,
                    change.server,
                    change.new,
                    exc,
                )
                if change.server in before:
                    tracks[change.server] = before[change.server]
                continue
            made.append(change)
            moved = {"from": change.old, "to": change.new}
            log.info(
                "%s/%s weight %d%% -> %d%%: %s",
                item.backend,
                change.server,
                change.old,
                change.new,
                change.reason,
            )
            self._queue(
                AuditDraft(
                    actor="prism",
                    action="server.weight",
                    app=item.app.name,
                    detail=self._detail(item, change.server, moved),
                    reason=change.reason,
                )
            )
        await self._repair(item, readings, tracks, {c.server for c in made})
        if tracks:
            self._tracks[item.backend] = tracks
        else:
            self._tracks.pop(item.backend, None)
        if _lowered(tracks) != _lowered(before):
            self._save()
        return made

    async def _repair(
        self,
        item: _Watched,
        readings: dict[str, ServerReading],
        tracks: dict[str, Track],
        changed: set[str],
    ) -> None:
        """Send again a lowered weight HAProxy no longer holds (a re-added server, a
        restart from an older state file)."""
        for name, track in tracks.items():
            reading = readings.get(name)
            if (
                track.weight == FULL_WEIGHT
                or name in changed
                or reading is None
                or reading.user_weight == track.weight
            ):
                continue
            log.info(
                "%s/%s holds weight %d, Prism set %d%%: setting it again",
                item.backend,
                name,
                reading.user_weight,
                track.weight,
            )
            with contextlib.suppress(PrismError):
                await self.runtime.set_server_weight(item.backend, name, track.weight)

    async def _watch_trips(
        self, item: _Watched, readings: dict[str, ServerReading], now: float
    ) -> None:
        current = {n: (r.trips, r.ready, r.circuit) for n, r in readings.items()}
        trips, events = watch_trips(now, current, self._trips.get(item.backend, {}), quiet=_QUIET)
        self._trips[item.backend] = trips
        circuit = item.app.circuit
        assert circuit is not None
        for event in events:
            extra: dict[str, Any] = {"trips": event.trips, "status": readings[event.server].status}
            why = event.why
            if event.kind == "tripped" and not why:
                # a health check ran since and replaced HAProxy's own words
                why = f"{circuit.error_limit} consecutive errors (observe {circuit.observe})"
            log.warning(
                "%s/%s circuit %s (%d trips)", item.backend, event.server, event.kind, event.trips
            )
            self._queue(
                AuditDraft(
                    actor="haproxy",
                    action=f"circuit.{event.kind}",
                    app=item.app.name,
                    detail=self._detail(item, event.server, extra),
                    reason=why or None,
                )
            )

    def _detail(self, item: _Watched, server: str, extra: dict[str, Any]) -> dict[str, Any]:
        detail = {"color": item.color, "server": server, **extra}
        if self.node:
            detail["node"] = self.node
        return detail

    # -- what status shows -------------------------------------------------

    def annotate(self, readings: Sequence[ServerReading]) -> list[ServerReading]:
        """The readings, each lowered server's with the reason Prism lowered it."""
        out = []
        for reading in readings:
            track = self._tracks.get(reading.backend, {}).get(reading.server)
            if track is not None and track.weight != FULL_WEIGHT:
                reason = track.reason or f"weight set to {track.weight}% by Prism"
                reading = replace(reading, slow=reason)
            out.append(reading)
        return out

    def weights(self) -> dict[str, dict[str, int]]:
        """Per backend, the servers Prism lowered and their weight (percent)."""
        return {
            backend: {n: t.weight for n, t in tracks.items() if t.weight != FULL_WEIGHT}
            for backend, tracks in sorted(self._tracks.items())
            if any(t.weight != FULL_WEIGHT for t in tracks.values())
        }

    # -- audits ------------------------------------------------------------

    def _queue(self, draft: AuditDraft) -> None:
        self._outbox.append(draft)
        if len(self._outbox) > _OUTBOX:
            dropped = self._outbox.pop(0)
            log.warning("balancer: audit outbox full, dropping %s", dropped.action)

    async def flush(self) -> None:
        """Send queued audits, in order, while the store takes them."""
        while self._outbox and self.audit is not None:
            try:
                await self.audit(self._outbox[0])
            except PrismError as exc:
                log.info("balancer: %d audits wait for the store: %s", len(self._outbox), exc)
                return
            self._outbox.pop(0)

    # -- Prism's own record ------------------------------------------------

    def _save(self) -> None:
        servers = {
            f"{backend}/{name}": {"weight": track.weight, "reason": track.reason}
            for backend, tracks in sorted(self._tracks.items())
            for name, track in sorted(tracks.items())
            if track.weight != FULL_WEIGHT
        }
        text = json.dumps({"version": 1, "servers": servers}, indent=1, sort_keys=True) + "\n"
        if read_text(self.record_path) != text:
            write_atomic(self.record_path, text, mode=0o600)

    def _load(self) -> dict[str, dict[str, Track]]:
        """The weights Prism set before it (or this node's agent) restarted; the next step
        waits a whole window from now."""
        text = read_text(self.record_path)
        if not text:
            return {}
        now = self.clock.monotonic()
        tracks: dict[str, dict[str, Track]] = {}
        try:
            servers = json.loads(text)["servers"]
            for key, entry in servers.items():
                backend, _, name = key.rpartition("/")
                weight = entry["weight"]
                if not backend or not isinstance(weight, int) or not 1 <= weight <= FULL_WEIGHT:
                    raise ValueError(key)
                tracks.setdefault(backend, {})[name] = Track(
                    weight=weight, changed_at=now, reason=str(entry.get("reason", ""))[:200]
                )
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("balancer: ignoring an unreadable %s", self.record_path)
            return {}
        return tracks


def _count(row: StatRow, column: str) -> int:
    value = row.raw.get(column, "")
    return int(value) if value.isdigit() else 0


def _lowered(tracks: dict[str, Track]) -> dict[str, int]:
    return {n: t.weight for n, t in tracks.items() if t.weight != FULL_WEIGHT}
