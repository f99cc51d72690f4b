"""The data plane of one node, driven in-process: this machine's HAProxy.

:class:`LocalDataPlane` owns the node's pieces (supervisor, Runtime API
client, applier) and answers the :class:`~prism.dataplane.base.DataPlane`
questions from them directly: no watch hop, no agent, so the embedded
single-node mode stays as fast as one HAProxy allows. The fleet's agents
(:mod:`prism.agent`) drive each node's HAProxy with the same applier, and run
the same balancer (:mod:`prism.node.balancer`: slow-server weights, circuit
trips), whose reasons this plane's readings carry. With the request log on, its
receiver (:mod:`prism.node.requestlog`) runs here too, and every counter reading
carries the backend's logged requests.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import Any

from prism.clock import SystemClock
from prism.core.model import App, Spec, split_bind
from prism.core.pem import CertInfo
from prism.core.readings import Counters, ServerReading, SmokeReply
from prism.core.state import DesiredState
from prism.core.tls import Tls
from prism.dataplane.base import Converged, PlaneInfo
from prism.errors import ConfigRejected, Drift, HAProxyError, NotFound
from prism.haproxy.binary import HAProxyBinary
from prism.haproxy.parsers import StatRow
from prism.haproxy.readouts import backend_counters, server_readings
from prism.haproxy.render import RenderSettings
from prism.haproxy.runtime import RuntimeClient, SessionTransport
from prism.haproxy.supervisor import Supervisor
from prism.node import certs, smoke
from prism.node.admission import check_fd_budget, check_ports_free, fd_limit
from prism.node.applier import Applier
from prism.node.balancer import Balancer
from prism.node.paths import StatePaths
from prism.node.requestlog import RequestLogReceiver

__all__ = ["LocalDataPlane", "smoke_request"]

log = logging.getLogger(__name__)

#: above this many backends, counters come from one whole `show stat`
_FILTERED_READS = 16


async def smoke_request(
    spec: Spec, app: App, color: str, smoke_key: str, *, address: str | None = None, node: str = ""
) -> SmokeReply:
    """One GET through ``app``'s own listener, routed to ``color`` by the smoke key.

    ``address`` replaces a wildcard bind's host (a fleet node's listen address).
    """
    assert app.smoke is not None
    if app.bind is not None:
        bind, tls = app.bind, app.tls
    else:
        listener = next(x for x in spec.listeners if x.name == app.listener)
        bind, tls = listener.bind, listener.tls
    host, port = split_bind(bind)
    if host in ("0.0.0.0", "*"):
        host = address or "127.0.0.1"
    headers = {"X-Prism-Color": color, "X-Prism-Smoke-Key": smoke_key}
    if app.host:
        headers["Host"] = app.host
    # A smoke request checks routing through this node's own listener, not the
    # certificate, which `prism status` and the certificate read-back cover.
    try:
        status, text = await smoke.get(
            host,
            port,
            app.smoke.path,
            headers,
            tls=tls is not None,
            timeout=app.smoke.timeout_ms / 1000,
        )
    except smoke.SmokeError as exc:
        return SmokeReply(None, "", str(exc), node)
    return SmokeReply(status, text, None, node)


def _tls_sections(spec: Spec) -> list[Tls]:
    owners = [x.tls for x in spec.listeners] + [a.tls for a in spec.apps]
    return [tls for tls in owners if tls is not None]


class LocalDataPlane:
    """One HAProxy, supervised here; see the module docstring."""

    def __init__(
        self,
        paths: StatePaths,
        settings: RenderSettings,
        binary: HAProxyBinary,
        supervisor: Supervisor,
        runtime: RuntimeClient,
        applier: Applier,
        balancer: Balancer | None = None,
        requests: RequestLogReceiver | None = None,
    ) -> None:
        self.paths = paths
        self.settings = settings
        self.binary = binary
        self.supervisor = supervisor
        self.runtime = runtime
        self.applier = applier
        self.balancer = balancer or Balancer(runtime, paths.weights, SystemClock())
        self.requests = requests
        if requests is None and settings.request_log_port is not None:
            self.requests = RequestLogReceiver(
                settings.request_log_port, settings.request_log_key, settings.request_log_sample
            )
        # HAProxy holds one certificate transaction at a time: replacements take turns.
        self._cert_lock = asyncio.Lock()

    @classmethod
    def for_node(
        cls, paths: StatePaths, settings: RenderSettings, binary: HAProxyBinary
    ) -> LocalDataPlane:
        """The pieces of one node wired together: its HAProxy's Runtime API client, the
        supervisor (which saves server state through the applier before each reload),
        the applier and the balancer."""
        transport = SessionTransport(paths.master_socket, paths.admin_socket)
        runtime = RuntimeClient(transport)
        applier: Applier | None = None

        async def save_state() -> None:
            assert applier is not None
            await applier.save_server_state()

        supervisor = Supervisor(paths, binary, save_state=save_state)
        applier = Applier(paths, settings, supervisor, runtime)
        return cls(paths, settings, binary, supervisor, runtime, applier)

    # -- lifecycle -------------------------------------------------------

    async def start(self, state: DesiredState) -> None:
        """Start (or adopt) HAProxy on what is on disk, rendering it first if needed.

        The request-log receiver starts first, so no request of the new HAProxy goes
        unlogged."""
        if self.requests is not None:
            await self.requests.start()
        try:
            if not self.paths.config.exists():
                await self.applier.write_initial(state)
            self.applier.prepare_start(state)
            try:
                await self.supervisor.start()
            except ConfigRejected:
                # What is on disk no longer passes the check: start from fresh files.
                await self.applier.write_initial(state)
                await self.supervisor.start()
        except BaseException:
            if self.requests is not None:
                self.requests.close()  # no HAProxy of ours to log: free the port
            raise

    async def close_sockets(self) -> None:
        """Close the request-log receiver (HAProxy's lines then go nowhere) and the
        Runtime API sessions (HAProxy keeps serving; a later command connects anew)."""
        try:
            if self.requests is not None:
                self.requests.close()
        finally:
            await self.runtime.close()

    async def reconcile(self, state: DesiredState) -> None:
        """Find and repair drift (maps edited behind Prism's back, a half-done apply)."""
        await self.applier.reconcile(state)

    # -- the seam --------------------------------------------------------

    async def admit(self, old: Spec, new: Spec) -> None:
        check_ports_free(old, new, self.settings.admin_port)
        check_fd_budget(new, self.settings.maxconn, fd_limit())
        held = _tls_sections(old)
        certs.check_files(tls for tls in _tls_sections(new) if tls not in held)

    async def check(self, state: DesiredState) -> None:
        await self.applier.preflight(state)

    async def converge(self, state: DesiredState) -> Converged:
        # Concurrent changes each read their state, then queue for the applier:
        # one that arrives after a newer one was applied is already in effect.
        report = await self.applier.apply(state, newer_only=True)
        return Converged(
            revision=report.revision,
            mode=report.mode,
            operations=tuple(report.operations),
            duration_ms=report.duration_ms,
        )

    async def servers(self, backends: Sequence[str]) -> list[ServerReading]:
        if not self.supervisor.running:
            # No readings is not "no servers": a gate must wait, not judge the color empty.
            raise HAProxyError(
                "HAProxy is not running, so its servers cannot be read",
                hint="the supervisor restarts it; see the HAProxy log in the state directory",
            )
        return self.balancer.annotate(server_readings(await self.runtime.show_stat(*backends)))

    async def counters(self, backends: Sequence[str]) -> dict[str, Counters]:
        # A gate reads a few backends, one filtered command each; metrics and the
        # dashboard's samples read every backend: one whole `show stat` is far cheaper
        # than thousands of round trips.
        many = len(backends) > _FILTERED_READS
        rows = await self.runtime.show_stat() if many else await self.runtime.show_stat(*backends)
        by_proxy: dict[str, list[StatRow]] = {}
        for row in rows:
            by_proxy.setdefault(row.proxy, []).append(row)
        found: dict[str, Counters] = {}
        recorder = self.requests.recorder if self.requests is not None else None
        for backend in backends:
            try:
                counted = backend_counters(by_proxy.get(backend, ()), backend)
            except Drift:
                continue  # a color removed meanwhile
            if recorder is not None:
                counted = dataclasses.replace(counted, log=recorder.snapshot(backend))
            found[backend] = counted
        return found

    async def in_use(self, backends: Sequence[str]) -> dict[str, int]:
        used: dict[str, int] = {}
        for backend in backends:
            for conn in await self.runtime.show_servers_conn(backend):
                used[f"{backend}/{conn.server}"] = conn.used_cur
        return used

    async def smoke(self, spec: Spec, app: App, color: str) -> list[SmokeReply]:
        return [await smoke_request(spec, app, color, self.settings.smoke_key)]

    async def set_certificate(self, path: str, cert: CertInfo) -> dict[str, Any]:
        async with self._cert_lock:
            return await certs.rotate(self.runtime, path, cert)

    async def certificates(self, tls: Tls, *, warn_days: int) -> list[dict[str, Any]]:
        return await certs.loaded(self.runtime, tls, warn_days=warn_days)

    async def nodes(self) -> list[dict[str, Any]]:
        info = await self.info()
        return [
            {
                "name": "local",
                "state": "live" if info.detail.get("running") else "down",
                "address": self.settings.listen_address or "127.0.0.1",
                "applied_revision": info.applied_revision,
                "staged_revision": None,
                "heartbeat": time.time(),
                "haproxy": dict(info.detail),
                "drift": bool(info.last_error and "read-back" in info.last_error),
                "last_error": info.last_error,
            }
        ]

    async def forget(self, node: str) -> None:
        raise NotFound(
            f"no lost node {node!r}: this control plane drives one local HAProxy",
            hint="nodes are forgotten in fleet mode (prism serve --store etcd://...)",
        )

    def _request_log_info(self) -> dict[str, Any] | None:
        if self.requests is None:
            return None
        recorder = self.requests.recorder
        return {
            "port": self.requests.port,
            "every": recorder.every,
            "receiving": self.requests.running,
            "lines": recorder.lines,
            "malformed": recorder.malformed,
            "overflow": recorder.overflow,
        }

    async def info(self) -> PlaneInfo:
        running = self.supervisor.running
        return PlaneInfo(
            healthy=running and not self.applier.last_error,
            applied_revision=self.applier.applied_revision,
            last_error=self.applier.last_error,
            detail={
                "running": running,
                "pid": self.supervisor.pid,
                "version": self.binary.version,
                "restarts": self.supervisor.restarts,
                "admin_url": f"http://127.0.0.1:{self.settings.admin_port}/stats",
                "metrics_url": f"http://127.0.0.1:{self.settings.admin_port}/metrics",
                "request_log": self._request_log_info(),
            },
        )
