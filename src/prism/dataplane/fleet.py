"""The data plane of a fleet: every node's HAProxy, through etcd and the nodes' agents.

The control plane never talks to a node. It commits desired state, and the
agents (:mod:`prism.agent`) converge their HAProxy on it and report
(:class:`~prism.core.fleet.NodeReport`). This module mirrors the reports
(a watch on ``fleet/``) and turns them into the seam's answers:

* **converge(R)** waits until every *live* node (its report exists, it has
  resynced) reports revision R applied, staged, or refused. A refusal, or a
  node still silent at the deadline, fails the change and names the node: the
  caller (:class:`~prism.dataplane.change.Changes`) then reverts, on every
  node. When nodes staged R (map changes: weights, the active color, pins),
  and only once *all* of them have, ``fleet/commit`` is written; each node
  then writes its map files and commits the staged version. Either every node
  switches, one watch fan-out apart, or none does.
* **readings** write ``fleet/poll`` and wait for every live node to answer it
  with fresh readings, so a gate judges what each HAProxy sees now; health
  passes only if every live node sees every server exactly ``UP``; counters
  are summed over nodes; smoke requests are sent by each node through its own
  listener.
* **membership**: a node is live while its lease holds. A node that joined
  once (``fleet/known/<node>``) but has no report is *lost*: it is listed, and
  :attr:`lost` lets the release engine hold until it returns or a person
  forgets it (:meth:`forget`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from prism.core.fleet import COMMIT, FLEET, KNOWN, NODES, POLL, NodeReport, known_key
from prism.core.keys import dump
from prism.core.model import App, Spec
from prism.core.pem import CertInfo
from prism.core.readings import Counters, ServerReading, SmokeReply
from prism.core.state import DesiredState
from prism.core.tls import Tls
from prism.dataplane.base import Converged, PlaneInfo
from prism.errors import Conflict, InvalidInput, NodeFailed, NotFound, StoreError
from prism.haproxy.binary import HAProxyBinary
from prism.haproxy.layout import HAProxyFiles
from prism.haproxy.render import RenderSettings, render
from prism.haproxy.supervisor import check_config
from prism.node.admission import check_fd_budget
from prism.node.files import write_atomic
from prism.types import AuditDraft, Delete, Put, Store

__all__ = ["FleetDataPlane"]

log = logging.getLogger(__name__)


class FleetDataPlane:
    """A fleet of agents behind one seam; see the module docstring."""

    def __init__(
        self,
        store: Store,
        binary: HAProxyBinary,
        staging: Path,
        *,
        converge_timeout: float = 15.0,
        poll_timeout: float | None = None,
    ) -> None:
        self.store = store
        self.binary = binary
        self.staging = HAProxyFiles(staging)
        self.converge_timeout = converge_timeout
        # fresh readings of every node: a fifth of the converge budget, at least 3 s
        self.poll_timeout = poll_timeout or max(3.0, converge_timeout / 5)
        self.reports: dict[str, NodeReport] = {}
        self.known: set[str] = set()
        #: nodes seen lost (known, no report): their next report is a return, not a join
        self._lost_seen: set[str] = set()
        self._changed = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None
        self._converging = asyncio.Lock()
        #: set by the leader's lifespan: only one control plane audits membership changes
        self.leading = False
        self._audits: set[asyncio.Task[None]] = set()
        self._polling = asyncio.Lock()
        # Only for `haproxy -c` of candidate states: nodes render with their own settings.
        self._check_settings = RenderSettings(
            admin_port=9, maxconn=1000, smoke_key=secrets.token_hex(16)
        )

    # -- lifecycle -------------------------------------------------------

    async def start(self) -> None:
        """Read every report and known node, then follow them."""
        revision = await self._load()
        self._watcher = asyncio.create_task(self._follow(revision))

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher

    async def _load(self) -> int:
        revision = await self.store.revision()
        reports = {}
        for entry in await self.store.list(NODES):
            report = NodeReport.from_json(entry.value)
            reports[report.node] = report
        self.reports = reports
        self.known = {e.key[len(KNOWN) :] for e in await self.store.list(KNOWN)}
        self._lost_seen = self.known - set(reports)
        self._wake()
        return revision

    async def _follow(self, revision: int) -> None:
        """Mirror ``fleet/nodes/`` and ``fleet/known/`` for as long as the plane runs."""
        delay = 0.2
        while True:
            try:
                async for event in self.store.watch(FLEET, from_revision=revision):
                    revision = event.revision
                    self._apply_event(event.kind, event.key, event.value)
                    delay = 0.2
            except StoreError as exc:
                log.warning("fleet watch: %s; reading everything again", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                with contextlib.suppress(StoreError):
                    revision = await self._load()

    def _apply_event(self, kind: str, key: str, value: str | None) -> None:
        if key.startswith(NODES):
            node = key[len(NODES) :]
            if kind == "put" and value:
                if node not in self.reports:
                    returned = node in self._lost_seen
                    self._lost_seen.discard(node)
                    self._audit("node.returned" if returned else "node.joined", node)
                self.reports[node] = NodeReport.from_json(value)
            elif self.reports.pop(node, None) is not None and node in self.known:
                self._lost_seen.add(node)
                self._audit("node.lost", node)
        elif key.startswith(KNOWN):
            node = key[len(KNOWN) :]
            if kind == "put":
                self.known.add(node)
            else:
                self.known.discard(node)
        else:
            return
        self._wake()

    def _audit(self, action: str, node: str) -> None:
        """Record a node leaving or returning (the leader only: one record per change)."""
        if not self.leading:
            return
        log.warning("fleet: node %s %s", node, action.removeprefix("node."))
        draft = AuditDraft(actor="fleet", action=action, detail={"node": node})
        task = asyncio.create_task(self._record(draft))
        self._audits.add(task)
        task.add_done_callback(self._audits.discard)

    async def _record(self, draft: AuditDraft) -> None:
        with contextlib.suppress(StoreError):
            await self.store.record(draft)

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _until(self, done: Callable[[], bool], deadline: float) -> bool:
        """Wait for ``done()`` as reports arrive; False when ``deadline`` (monotonic) passes."""
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), left)
        return True

    # -- membership ------------------------------------------------------

    @property
    def live(self) -> dict[str, NodeReport]:
        """Nodes whose lease holds and that have resynced: the ones a change must reach."""
        return {n: r for n, r in self.reports.items() if r.synced}

    @property
    def lost(self) -> list[str]:
        """Nodes that joined once and have no report now."""
        return sorted(self.known - set(self.reports))

    async def forget(self, node: str) -> None:
        """Stop waiting for a lost node (it rejoins by starting its agent again)."""
        if node not in self.known:
            raise NotFound(f"no node {node!r} has joined", hint="prism nodes lists them")
        if node in self.reports:
            raise Conflict(
                f"node {node!r} is live; only a lost node can be forgotten",
                hint="stop its agent first",
            )
        await self.store.commit([Delete(known_key(node))])
        self.known.discard(node)

    async def nodes(self) -> list[dict[str, Any]]:
        """Every node, live or lost, for ``prism nodes``."""
        rows: list[dict[str, Any]] = []
        for name in sorted(self.known | set(self.reports)):
            report = self.reports.get(name)
            if report is None:
                rows.append({"name": name, "state": "lost"})
                continue
            rows.append(
                {
                    "name": name,
                    "state": "live" if report.synced else "joining",
                    "address": report.address,
                    "applied_revision": report.applied,
                    "staged_revision": report.staged or None,
                    "heartbeat": report.heartbeat,
                    "haproxy": dict(report.haproxy),
                    "drift": report.drift,
                    "last_error": report.error,
                }
            )
        return rows

    # -- the seam --------------------------------------------------------

    async def set_certificate(self, path: str, cert: CertInfo) -> dict[str, Any]:
        raise InvalidInput(
            "certificates are replaced at runtime on a single node only, not yet in a fleet",
            hint="put the new PEM file on every node and apply the spec again (a reload)",
        )

    async def certificates(self, tls: Tls, *, warn_days: int) -> list[dict[str, Any]]:
        # Each node holds its own files; their expiry is not reported in a fleet yet.
        return []

    async def admit(self, old: Spec, new: Spec) -> None:
        for name, report in sorted(self.live.items()):
            check_fd_budget(new, report.maxconn, report.fd_limit, node=name)

    async def check(self, state: DesiredState) -> None:
        files = render(state, self.staging, self._check_settings)
        for name, text in files.maps.items():
            write_atomic(self.staging.maps / name, text)
        for name, text in files.files.items():
            write_atomic(self.staging.root / name, text)
        write_atomic(self.staging.config, files.config, mode=0o600)
        await check_config(self.binary, self.staging.config, cwd=self.staging.root)

    async def converge(self, state: DesiredState) -> Converged:
        revision = state.revision
        started = time.monotonic()
        async with self._converging:
            deadline = started + self.converge_timeout

            def answered() -> bool:
                return all(_answered(r, revision) for r in self.live.values())

            await self._until(answered, deadline)
            self._raise_failures(revision, "apply")
            staged = [n for n, r in self.live.items() if r.applied < revision <= r.staged]
            if staged:
                await self.store.commit([Put(COMMIT, dump({"revision": revision}))])

                def switched() -> bool:
                    return all(
                        r.applied >= revision or r.error_revision >= revision
                        for r in self.live.values()
                    )

                await self._until(switched, deadline)
                self._raise_failures(revision, "switch to")
            modes = {r.mode for r in self.live.values() if r.applied >= revision}
            mode = next((m for m in ("reload", "runtime") if m in modes), "none")
            return Converged(
                revision=revision,
                mode="runtime" if staged and mode == "none" else mode,
                operations=tuple(f"{n} applied" for n in sorted(self.live)),
                duration_ms=round((time.monotonic() - started) * 1000, 3),
                nodes=tuple(sorted(self.live)),
            )

    def _raise_failures(self, revision: int, doing: str) -> None:
        failed: dict[str, str] = {}
        for name, report in sorted(self.live.items()):
            if report.applied >= revision:
                continue
            if report.error is not None and report.error_revision >= revision:
                failed[name] = report.error
            elif doing == "apply" and report.staged < revision:
                failed[name] = f"did not apply revision {revision} in {self.converge_timeout:g} s"
            elif doing != "apply":
                failed[name] = f"did not switch to revision {revision} in time"
        if failed:
            listed = "; ".join(f"{n}: {why}" for n, why in failed.items())
            raise NodeFailed(
                f"{len(failed)} of {len(self.live)} node(s) could not {doing} revision "
                f"{revision}: {listed}",
                hint="the change is reverted on every node; see `prism nodes`",
                detail={"nodes": failed, "revision": revision},
            )

    async def _fresh(self, smoke: Sequence[tuple[str, str]] = ()) -> dict[str, NodeReport]:
        """Every live node's report, newly answered to a poll (with these smoke requests)."""
        async with self._polling:
            seq = await self.store.commit(
                [Put(POLL, json.dumps({"smoke": [list(s) for s in smoke]}))]
            )

            def answered() -> bool:
                return all(r.poll >= seq for r in self.live.values())

            await self._until(answered, time.monotonic() + self.poll_timeout)
            silent = sorted(n for n, r in self.live.items() if r.poll < seq)
            if silent:
                raise NodeFailed(
                    f"node(s) {', '.join(silent)} sent no fresh readings within "
                    f"{self.poll_timeout:g} s",
                    hint="check those agents (prism nodes); gates judge every live node",
                    detail={"nodes": {n: "no fresh readings" for n in silent}},
                )
            return dict(self.live)

    async def reported_servers(self, backends: Sequence[str]) -> list[ServerReading]:
        """Servers as the live nodes' latest reports (heartbeats) have them: no poll, so
        metrics and the dashboard's samples never wait for, or delay, a gate's readings."""
        wanted = set(backends)
        return [
            s
            for _, report in sorted(self.live.items())
            for s in report.servers
            if not wanted or s.backend in wanted
        ]

    async def reported_counters(self, backends: Sequence[str]) -> dict[str, Counters]:
        """Counters per backend from the live nodes' latest reports (no poll)."""
        found: dict[str, Counters] = {}
        for backend in backends:
            parts = [r.counters[backend] for r in self.live.values() if backend in r.counters]
            if parts:
                found[backend] = Counters.total(parts)
        return found

    async def servers(self, backends: Sequence[str]) -> list[ServerReading]:
        reports = await self._fresh()
        wanted = set(backends)
        return [
            s
            for _, report in sorted(reports.items())
            for s in report.servers
            if not wanted or s.backend in wanted
        ]

    async def counters(self, backends: Sequence[str]) -> dict[str, Counters]:
        reports = await self._fresh()
        found: dict[str, Counters] = {}
        for backend in backends:
            parts = [r.counters[backend] for r in reports.values() if backend in r.counters]
            if parts:
                found[backend] = Counters.total(parts)
        return found

    async def in_use(self, backends: Sequence[str]) -> dict[str, int]:
        reports = await self._fresh()
        wanted = {f"{b}/" for b in backends}
        return {
            f"{key}@{name}": count
            for name, report in sorted(reports.items())
            for key, count in report.in_use.items()
            if any(key.startswith(w) for w in wanted)
        }

    async def smoke(self, spec: Spec, app: App, color: str) -> list[SmokeReply]:
        reports = await self._fresh([(app.name, color)])
        replies = []
        for name, report in sorted(reports.items()):
            reply = next((r for a, c, r in report.smoke if (a, c) == (app.name, color)), None)
            replies.append(reply or SmokeReply(None, "", "no smoke reply", name))
        return replies

    async def info(self) -> PlaneInfo:
        live = self.live
        errors = {n: r.error for n, r in live.items() if r.error}
        lost = self.lost
        healthy = bool(live) and not errors and not lost
        last_error = "; ".join(f"{n}: {e}" for n, e in errors.items()) or None
        if lost:
            last_error = (last_error + "; " if last_error else "") + "lost: " + ", ".join(lost)
        return PlaneInfo(
            healthy=healthy,
            applied_revision=min((r.applied for r in live.values()), default=0),
            last_error=last_error,
            detail={
                "mode": "fleet",
                "running": bool(live),
                "nodes": len(self.reports),
                "live": sorted(live),
                "lost": lost,
                "version": sorted({str(r.haproxy.get("version", "")) for r in live.values()}),
            },
            lost=tuple(lost),
        )


def _answered(report: NodeReport, revision: int) -> bool:
    """Whether a node has done what it can with ``revision``: applied, staged or refused it."""
    return (
        report.applied >= revision
        or report.staged >= revision
        or (report.error is not None and report.error_revision >= revision)
    )
