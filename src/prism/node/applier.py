"""The apply path for one local HAProxy: disk first, then runtime, then read-back.

1. Render desired state (pure) and plan against what is live.
2. Reload path: render into ``staging/`` and run ``haproxy -c`` there, then
   write maps and config atomically, then reload through the master CLI. If
   the reload is refused, the previous files are put back, so a later restart
   still reads the last good state.
3. Runtime path: write each changed map file first (a reload or restart will
   read it), then send the change (``set map`` or a map transaction).
4. Server-only changes: the new config is written first, then servers are
   added (health-checked through DRAIN before they take traffic) and removed
   (drained first) at runtime; if that fails the previous config is put back.
5. Read back every changed map with ``show map`` and compare with desired
   state; a mismatch is raised as :class:`prism.errors.Drift`, never ignored.

Reading every map costs two Runtime API commands per app per apply, which at
1,000 apps made one weight move take seconds. So the applier remembers the
text each map was last *read back* to hold, and an apply changes and verifies
(after acting) only the maps whose desired text differs from that. It plans
such a change from the remembered text rather than reading the map first (a
round trip in front of every cutover); should the read-back then disagree --
the map was edited behind Prism's back since -- the apply forgets what it
remembered of those maps and plans once more from what HAProxy holds. A map
it remembers nothing of is read before planning. The first apply after
HAProxy (re)started, and any apply after a failed one, reads every map.

Edits made behind Prism's back are found by :meth:`Applier.reconcile`, run
periodically: it reads every map *without* holding the apply lock (about a
second at 1,000 apps, which weight moves must not wait behind), forgets what
it found changed, and only then applies, which reads and repairs exactly those.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from prism.clock import SystemClock
from prism.core.model import App, Server, backend_name
from prism.core.state import DesiredState
from prism.errors import ConfigRejected, Conflict, Drift, PrismError
from prism.haproxy import commands
from prism.haproxy.changes import (
    ApplyPlan,
    MapAdd,
    MapChange,
    MapDel,
    MapReplace,
    MapSet,
    ServerDiff,
    parse_map_text,
    plan_apply,
    without_servers,
)
from prism.haproxy.dynamic import add_server, remove_server
from prism.haproxy.render import (
    RenderedFiles,
    RenderMemo,
    RenderSettings,
    render,
    server_tuning,
)
from prism.haproxy.runtime import RuntimeClient
from prism.haproxy.server_state import desired_addresses, filter_server_state
from prism.haproxy.supervisor import Supervisor
from prism.node.files import read_text, remove, sync, write_atomic
from prism.node.paths import StatePaths
from prism.types import Clock

__all__ = ["Applier", "ApplyReport"]

log = logging.getLogger("prism.node.applier")


@dataclass(frozen=True)
class ApplyReport:
    """What one apply did."""

    revision: int
    mode: str  # "reload", "runtime" or "none"
    operations: list[str] = field(default_factory=list)
    duration_ms: float = 0.0


class Applier:
    """Makes the local HAProxy match desired state. One apply runs at a time."""

    def __init__(
        self,
        paths: StatePaths,
        settings: RenderSettings,
        supervisor: Supervisor,
        runtime: RuntimeClient,
        clock: Clock | None = None,
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        self.paths = paths
        self.settings = settings
        self.supervisor = supervisor
        self.runtime = runtime
        self.applied_revision = 0
        #: the desired state HAProxy was last converged on (not a staged one)
        self.applied_state: DesiredState | None = None
        self.last_error: str | None = None
        self._lock = asyncio.Lock()
        # The servers HAProxy is about to load; saved state of any other is dropped.
        self._addresses: dict[tuple[str, str], tuple[str, int] | None] = {}
        # Map file name -> the rendered text HAProxy was last read back to hold,
        # trusted only while the master with this PID runs (see the module docstring).
        self._held: dict[str, str] = {}
        #: maps the periodic check found changed behind Prism's back (and restored)
        self.drift_repairs = 0
        self._held_master: int | None = None
        # What the last preflight that passed was rendered from: a reload of the very
        # same desired state need not render and `haproxy -c` it a second time.
        self._checked: tuple[object, ...] | None = None
        self._memo = RenderMemo(paths, settings)
        self._config_read: tuple[tuple[int, int, int], str] | None = None
        self._staged: _Staged | None = None

    def render(self, state: DesiredState) -> RenderedFiles:
        return self._memo.render(state)

    async def preflight(self, state: DesiredState) -> RenderedFiles:
        """Render into the staging directory and run ``haproxy -c`` on it.

        Raises ConfigRejected with HAProxy's words; nothing live is touched.
        """
        staging = StatePaths(self.paths.staging)
        files = render(state, staging, self.settings)
        _write_files(staging, files)
        self._checked = None
        await self.supervisor.check(staging.config)
        self._checked = _checked_key(state)
        return files

    async def write_initial(self, state: DesiredState) -> None:
        """Before HAProxy first starts: checked files on disk (map files must exist)."""
        async with self._lock:
            await self.preflight(state)
            _write_files(self.paths, self.render(state))
            self.prepare_start(state)

    async def apply(
        self, state: DesiredState, *, stage: bool = False, newer_only: bool = False
    ) -> ApplyReport:
        """Converge the local HAProxy on ``state``; see the module docstring.

        With ``stage``, map changes are only staged (``prepare map`` and
        ``add map @<version>``, invisible to traffic) and the report's mode is
        ``staged``: :meth:`commit_staged` switches them, :meth:`apply` of
        another state forgets them. Reloads and server changes are never staged.

        With ``newer_only``, a state older than the one applied last is not
        applied (mode ``none``): in one process, changes and the reconciler
        each read desired state and then wait for this lock, so a state read
        before another change can reach it after that change was applied.
        Applying it would put HAProxy back on older weights or an older config
        (at 1,000 apps, a reload of seconds that every weight move waited
        behind) until the next apply; the newer state already holds it.
        """
        async with self._lock:
            started = time.perf_counter()
            if newer_only and state.revision < self.applied_revision:
                return ApplyReport(state.revision, "none")
            self._staged = None
            try:
                report = await self._apply(state, stage=stage)
            except PrismError as exc:
                self.last_error = str(exc)
                self._held.clear()  # after a failure, trust nothing: read everything again
                raise
            self.last_error = None
            if report.mode != "staged":
                self.applied_revision = state.revision
                self.applied_state = state
            return ApplyReport(
                report.revision,
                report.mode,
                report.operations,
                round((time.perf_counter() - started) * 1000, 3),
            )

    @property
    def staged_revision(self) -> int | None:
        """The revision whose map changes wait for :meth:`commit_staged`, if any."""
        return self._staged.revision if self._staged is not None else None

    async def commit_staged(self, revision: int) -> ApplyReport:
        """Switch the maps staged for ``revision``: write each file, then ``commit map``,
        then read every one back. Conflict if nothing (or another revision) is staged."""
        async with self._lock:
            started = time.perf_counter()
            staged = self._staged
            if staged is None or staged.revision != revision:
                raise Conflict(
                    f"no change of revision {revision} is staged here",
                    hint="the staged change was replaced or HAProxy restarted; resync",
                )
            self._staged = None
            operations = []
            try:
                for name, (version, _) in staged.maps.items():
                    path = self.paths.maps / name
                    write_atomic(path, staged.files.maps[name])  # disk first
                    await self.runtime.commit_map(str(path), version)
                    operations.append(f"commit map {name} @{version}")
                await self._verify(staged.files, staged.maps)
            except PrismError as exc:
                self.last_error = str(exc)
                self._held.clear()
                raise
            self.last_error = None
            self.applied_revision = revision
            return ApplyReport(
                revision,
                "runtime",
                staged.operations + operations,
                round((time.perf_counter() - started) * 1000, 3),
            )

    async def reconcile(self, state: DesiredState) -> ApplyReport:
        """Find and repair drift: the periodic check (see the module docstring)."""
        if self._held_master == self.supervisor.pid and self.supervisor.running:
            believed = dict(self._held)
            live = await self._runtime_maps(believed)
            for name, text in believed.items():
                changed = sorted(live.get(name, ())) != sorted(parse_map_text(text))
                # (an apply that ran meanwhile and verified a newer text is trusted)
                if changed and self._held.get(name) == text:
                    log.warning("map %s changed behind Prism's back; restoring it", name)
                    self.drift_repairs += 1
                    del self._held[name]
        # Its state was read before the maps: a change may have been applied since.
        return await self.apply(state, newer_only=True)

    async def _apply(self, state: DesiredState, *, stage: bool) -> ApplyReport:
        files = self.render(state)
        if self._held_master != self.supervisor.pid:
            self._held.clear()
            self._held_master = self.supervisor.pid
        unsure = [name for name, text in files.maps.items() if self._held.get(name) != text]
        # A map read back before is planned from what it was read back to hold
        # (the read-back after acting catches an edit made since; see above).
        believed = {n: list(parse_map_text(self._held[n])) for n in unsure if n in self._held}
        live_maps = believed | await self._runtime_maps(n for n in unsure if n not in believed)
        live_config = self._live_config()
        # Only a config that differs needs the (costly, at 1,000 apps) servers-only test.
        servers_only = (
            live_config is not None
            and live_config != files.config
            and without_servers(live_config) == without_servers(files.config)
            and all(read_text(self.paths.root / n) == t for n, t in files.files.items())
        )
        # A map HAProxy was read back to hold as it is desired needs no change: only
        # the others are planned (a one-app move plans one map, not one per app).
        changing = {name: files.maps[name] for name in unsure}
        the_plan = plan_apply(
            live_config, live_maps, files.config, changing, servers_only=servers_only
        )
        if the_plan.reload or not self.supervisor.running:
            await self._reload(state, files)
            await self._verify(files, files.maps)
            return ApplyReport(state.revision, "reload", ["reload"])
        for name in unsure:  # just read, and already as desired
            if name in live_maps and name not in the_plan.map_changes:
                self._held[name] = files.maps[name]
        if the_plan.empty:
            return ApplyReport(state.revision, "none")
        if stage and the_plan.map_changes:
            operations = []
            if the_plan.server_changes:
                operations += await self._servers(
                    state, files, live_config, the_plan.server_changes
                )
            operations += await self._stage(state.revision, files, the_plan)
            return ApplyReport(state.revision, "staged", operations)
        operations = await self._runtime(files, the_plan)
        if the_plan.server_changes:
            operations += await self._servers(state, files, live_config, the_plan.server_changes)
        try:
            await self._verify(files, the_plan.map_changes)
        except Drift:
            planned_blind = [name for name in the_plan.map_changes if name in believed]
            if not planned_blind:
                raise
            # Edited behind Prism's back since the last read-back: read, plan, act again.
            log.warning("maps %s were not as last read back; reading them", planned_blind)
            for name in planned_blind:
                self._held.pop(name, None)
            again = await self._apply(state, stage=stage)
            return ApplyReport(state.revision, again.mode, operations + list(again.operations))
        return ApplyReport(state.revision, "runtime", operations)

    async def _stage(self, revision: int, files: RenderedFiles, the_plan: ApplyPlan) -> list[str]:
        """A new, invisible version of every changed map, remembered for the commit."""
        versions: dict[str, tuple[int, str]] = {}
        operations: list[str] = []
        for name in the_plan.map_changes:
            path = str(self.paths.maps / name)
            entries = list(parse_map_text(files.maps[name]))
            version = await self.runtime.prepare_map(path)
            for payload in commands.add_map_payloads(path, version, entries):
                await self.runtime.execute(payload)
            versions[name] = (version, files.maps[name])
            operations.append(f"stage map {name} @{version} ({len(entries)} entries)")
        self._staged = _Staged(revision, files, versions, operations)
        return operations

    def _live_config(self) -> str | None:
        """The config on disk. At 1,000 apps it is megabytes, so the text read last is
        reused while the file's inode, size and mtime are unchanged (Prism replaces it
        by rename, which makes a new inode; an edit in place changes the mtime)."""
        try:
            info = os.stat(self.paths.config)
        except FileNotFoundError:
            return None
        key = (info.st_ino, info.st_size, info.st_mtime_ns)
        if self._config_read is None or self._config_read[0] != key:
            text = read_text(self.paths.config)
            if text is None:
                return None
            self._config_read = (key, text)
        return self._config_read[1]

    async def _runtime_maps(self, names: Iterable[str]) -> dict[str, list[tuple[str, str]]]:
        """What HAProxy holds now for each of the named map files."""
        held: dict[str, list[tuple[str, str]]] = {}
        if not self.supervisor.running:
            return held
        for name in names:
            path = self.paths.maps / name
            try:
                held[name] = [(e.key, e.value) for e in await self.runtime.show_map(str(path))]
            except PrismError:
                # A map HAProxy does not know yet arrives with the reload that adds it.
                continue
        return held

    async def _reload(self, state: DesiredState, files: RenderedFiles) -> None:
        # The supervisor checks the live config once more right before reloading.
        if self._checked is None or self._checked != _checked_key(state):
            await self.preflight(state)
        previous = _snapshot(self.paths, files)
        _write_files(self.paths, files)
        self.prepare_start(state)
        try:
            if self.supervisor.running:
                await self.supervisor.reload()
            else:
                await self.supervisor.start()
        except ConfigRejected:
            _restore(self.paths, previous, files)
            raise
        for stale in set(previous.maps) - set(files.maps):
            remove(self.paths.maps / stale)

    async def _runtime(self, files: RenderedFiles, the_plan: ApplyPlan) -> list[str]:
        operations: list[str] = []
        written: list[Path] = []
        try:
            for name, change in the_plan.map_changes.items():
                path = self.paths.maps / name
                # Disk first, so that a reload cannot undo this; the fsyncs wait until
                # the switch was made (the store's commit already is durable).
                write_atomic(path, files.maps[name], durable=False)
                written.append(path)
                operations.append(await self._map_change(path, name, change))
        finally:
            sync(*written)
        return operations

    async def _map_change(self, path: Path, name: str, change: MapChange) -> str:
        """Make one planned map change at runtime; the operation, as reported."""
        if isinstance(change, MapSet):
            await self.runtime.set_map(str(path), change.key, change.value)
            return f"set map {name} {change.key} {change.value}"
        if isinstance(change, MapAdd):
            await self.runtime.add_map(str(path), change.key, change.value)
            return f"add map {name} {change.key} {change.value}"
        if isinstance(change, MapDel):
            await self.runtime.del_map(str(path), change.key)
            return f"del map {name} {change.key}"
        assert isinstance(change, MapReplace)
        await self.runtime.replace_map(str(path), list(change.entries))
        return f"commit map {name} ({len(change.entries)} entries)"

    async def _servers(
        self,
        state: DesiredState,
        files: RenderedFiles,
        live_config: str | None,
        changes: tuple[ServerDiff, ...],
    ) -> list[str]:
        """Add, then remove servers at runtime; the config on disk already has them."""
        write_atomic(self.paths.config, files.config, mode=0o600)
        self._addresses = desired_addresses(state)
        owners = {
            backend_name(app.name, color.name): (app, {s.name: s for s in color.servers})
            for app in state.served.apps
            for color in app.colors
        }
        operations: list[str] = []
        try:
            adds = [
                self._add(owners[c.backend][0], c.backend, owners[c.backend][1][name])
                for c in changes
                for name in c.add
            ]
            for done in await asyncio.gather(*adds):
                operations.append(done)
            for change in changes:
                app = owners[change.backend][0] if change.backend in owners else None
                drain = app.drain_timeout_ms / 1000 if app else 30.0
                for name in change.remove:
                    await remove_server(
                        self.runtime, change.backend, name, clock=self.clock, drain_timeout=drain
                    )
                    operations.append(f"remove server {change.backend}/{name}")
        except PrismError:
            if live_config is not None:
                write_atomic(self.paths.config, live_config, mode=0o600)
            raise
        return operations

    async def _add(self, app: App, backend: str, server: Server) -> str:
        await add_server(
            self.runtime, backend, server, app.check, clock=self.clock, tuning=server_tuning(app)
        )
        return f"add server {backend}/{server.name} {server.address}"

    async def _verify(self, files: RenderedFiles, names: Iterable[str]) -> None:
        """Read the named maps back from HAProxy; disagreement is drift."""
        problems = []
        for name in sorted(names):
            text = files.maps[name]
            path = self.paths.maps / name
            held = [(e.key, e.value) for e in await self.runtime.show_map(str(path))]
            if sorted(held) != sorted(parse_map_text(text)):
                problems.append(f"{name}: HAProxy holds {held[:5]}, desired {text.strip()[:200]!r}")
            else:
                self._held[name] = text
        if problems:
            raise Drift(
                "read-back disagrees with desired state: " + "; ".join(problems),
                hint="the next apply will try again; check the HAProxy log in the state directory",
                detail={"drift": problems},
            )

    def prepare_start(self, state: DesiredState) -> None:
        """Before HAProxy (re)reads the server-state file: keep only still-valid lines."""
        self._addresses = desired_addresses(state)
        text = read_text(self.paths.server_state)
        if text is not None:
            write_atomic(
                self.paths.server_state,
                filter_server_state(text, self._addresses),
                mode=0o600,
            )

    async def save_server_state(self) -> None:
        """Dump ``show servers state`` where the reload about to happen will load it."""
        text = await self.runtime.execute(commands.show_servers_state())
        write_atomic(
            self.paths.server_state, filter_server_state(text, self._addresses), mode=0o600
        )


@dataclass(frozen=True)
class _Staged:
    """Map versions prepared for one revision, waiting for the fleet's commit marker."""

    revision: int
    files: RenderedFiles
    maps: dict[str, tuple[int, str]]
    operations: list[str]


@dataclass(frozen=True)
class _Snapshot:
    config: str | None
    maps: dict[str, str]
    files: dict[str, str | None]


def _snapshot(paths: StatePaths, files: RenderedFiles | None = None) -> _Snapshot:
    maps = {}
    if paths.maps.is_dir():
        maps = {p.name: p.read_text(encoding="utf-8") for p in paths.maps.glob("*.map")}
    extra = {name: read_text(paths.root / name) for name in (files.files if files else {})}
    return _Snapshot(read_text(paths.config), maps, extra)


def _restore(paths: StatePaths, snapshot: _Snapshot, failed: RenderedFiles) -> None:
    log.warning("reload refused; restoring the previous configuration files")
    for name, text in snapshot.maps.items():
        write_atomic(paths.maps / name, text)
    for name in set(failed.maps) - set(snapshot.maps):
        remove(paths.maps / name)
    for name, page in snapshot.files.items():
        if page is None:
            remove(paths.root / name)
        else:
            write_atomic(paths.root / name, page)
    if snapshot.config is not None:
        write_atomic(paths.config, snapshot.config, mode=0o600)


def _checked_key(state: DesiredState) -> tuple[object, ...]:
    """What rendering depends on, besides node settings (not the revision)."""
    return (state.spec, state.routing, state.pins, state.registrations)


def _write_files(paths: StatePaths, files: RenderedFiles) -> None:
    """Maps and pages first (the config names them), then the config.

    A file that already holds its text is left alone: each write costs two
    fsyncs, and at 1,000 apps rewriting 2,000 unchanged maps and pages made
    most of a reload's time.
    """
    for name, text in sorted(files.maps.items()):
        _write_if_changed(paths.maps / name, text)
    for name, text in sorted(files.files.items()):
        _write_if_changed(paths.root / name, text)
    _write_if_changed(paths.config, files.config, mode=0o600)


def _write_if_changed(path: Path, text: str, *, mode: int = 0o644) -> None:
    if read_text(path) != text:
        write_atomic(path, text, mode=mode)
