"""One Prism node: store, supervised HAProxy, applier and release engine,
owned by a single lifespan (:meth:`Prism.open`) and always released.

The API calls methods here; nothing here knows about HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import resource
import secrets
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prism.apply import Applier
from prism.desired import load_state
from prism.errors import ConfigRejected, InvalidInput, PrismError
from prism.files import read_text, write_atomic
from prism.gates import server_readings
from prism.haproxy.binary import HAProxyBinary, find_haproxy
from prism.haproxy.runtime import RuntimeClient, UnixSocketTransport
from prism.haproxy.supervisor import Supervisor
from prism.model import DesiredState, Spec, backend_name, split_hostport
from prism.paths import StatePaths
from prism.phases import TERMINAL, Phase
from prism.release import ReleaseRecord, Releases, SystemClock
from prism.render import RenderSettings, derive_maxconn
from prism.state import diff_spec, dump, routing_key, spec_ops
from prism.store.sqlite import SqliteStore
from prism.types import AuditDraft, Delete, Put, Store

__all__ = ["Prism", "ServiceOptions", "default_state_dir", "ensure_token"]

log = logging.getLogger("prism")


def default_state_dir() -> Path:
    """``$PRISM_STATE_DIR``, else ``$XDG_STATE_HOME/prism``, else ``~/.local/state/prism``."""
    import os

    if os.environ.get("PRISM_STATE_DIR"):
        return Path(os.environ["PRISM_STATE_DIR"])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "prism"


def ensure_token(paths: StatePaths) -> str:
    """The API bearer token, created on first start, readable only by its owner."""
    existing = read_text(paths.token)
    if existing and existing.strip():
        return existing.strip()
    token = secrets.token_urlsafe(32)
    write_atomic(paths.token, token + "\n", mode=0o600)
    return token


@dataclass(frozen=True)
class ServiceOptions:
    state_dir: Path
    haproxy: str | None = None
    admin_port: int | None = None
    stop_haproxy_on_exit: bool = False
    reconcile_interval: float = 5.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _node_settings(paths: StatePaths, admin_port: int | None) -> RenderSettings:
    """Settings kept across restarts (admin port, smoke key) so the config stays stable."""
    stored: dict[str, Any] = json.loads(read_text(paths.root / "settings.json") or "{}")
    if admin_port is not None:
        stored["admin_port"] = admin_port
    stored.setdefault("admin_port", _free_port())
    stored.setdefault("smoke_key", secrets.token_hex(16))
    write_atomic(paths.root / "settings.json", json.dumps(stored, indent=2) + "\n", mode=0o600)
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return RenderSettings(
        admin_port=int(stored["admin_port"]),
        maxconn=derive_maxconn(soft),
        smoke_key=str(stored["smoke_key"]),
    )


class Prism:
    """A running Prism node. Build it with :meth:`open`."""

    def __init__(
        self,
        paths: StatePaths,
        store: Store,
        binary: HAProxyBinary,
        settings: RenderSettings,
        supervisor: Supervisor,
        runtime: RuntimeClient,
        applier: Applier,
        releases: Releases,
    ) -> None:
        self.paths = paths
        self.store = store
        self.binary = binary
        self.settings = settings
        self.supervisor = supervisor
        self.runtime = runtime
        self.applier = applier
        self.releases = releases

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, options: ServiceOptions) -> AsyncIterator[Prism]:
        """Open the store, start (or adopt) HAProxy, converge it, and clean up on exit."""
        paths = StatePaths.at(options.state_dir)
        paths.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        if len(str(paths.admin_socket)) > 100:
            raise InvalidInput(
                f"state directory {str(paths.root)!r} is too long for unix sockets",
                hint="use a path under ~80 characters",
            )
        binary = find_haproxy(options.haproxy)
        settings = _node_settings(paths, options.admin_port)
        store = await SqliteStore.open(paths.database)
        try:
            runtime = RuntimeClient(UnixSocketTransport(str(paths.admin_socket)))
            holder: list[Applier] = []

            async def save_state() -> None:
                await holder[0].save_server_state()

            supervisor = Supervisor(paths, binary, save_state=save_state)
            applier = Applier(paths, settings, supervisor, runtime)
            holder.append(applier)
            releases = Releases(
                store, applier, runtime, SystemClock(), smoke_key=settings.smoke_key
            )
            prism = cls(paths, store, binary, settings, supervisor, runtime, applier, releases)
            await prism._start()
            reconciler = asyncio.create_task(prism._reconcile_forever(options.reconcile_interval))
            try:
                yield prism
            finally:
                reconciler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reconciler
                if options.stop_haproxy_on_exit:
                    await supervisor.stop()
                else:
                    await supervisor.detach()
        finally:
            await store.close()

    async def _start(self) -> None:
        state = await self.state()
        if not self.paths.config.exists():
            await self.applier.write_initial(state)
        self.applier.prepare_start(state)
        try:
            await self.supervisor.start()
        except ConfigRejected:
            # What is on disk no longer passes the check: start from freshly rendered files.
            await self.applier.write_initial(state)
            await self.supervisor.start()
        await self.recover_releases()
        await self.applier.apply(await self.state())

    async def _reconcile_forever(self, interval: float) -> None:
        """Converge periodically: catches drift and anything a crash left half-done."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.applier.apply(await self.state())
            except PrismError as exc:
                log.warning("reconcile failed: %s", exc)

    async def recover_releases(self) -> None:
        """Close releases a previous process left mid-way; desired routing is already saved."""
        for entry in await self.store.list("releases/"):
            record = ReleaseRecord.model_validate_json(entry.value)
            if record.phase in TERMINAL:
                continue
            ends = {
                Phase.PENDING: Phase.GATING,
                Phase.GATING: Phase.REFUSED,
                Phase.SWITCHING: Phase.DRAINING,
                Phase.DRAINING: Phase.DRAIN_TIMEOUT,
            }
            while record.phase not in TERMINAL:
                record = record.moved(ends[record.phase], record.updated_at)
            await self.store.commit(
                [Put(entry.key, dump(record))],
                audit=AuditDraft(
                    actor="prism",
                    action=f"{record.kind}.interrupted",
                    app=record.app,
                    detail={"phase": record.phase.value},
                    reason="Prism restarted while this release was running",
                ),
            )

    # -- reads ---------------------------------------------------------------

    async def state(self) -> DesiredState:
        return await load_state(self.store)

    async def health(self) -> dict[str, Any]:
        state = await self.state()
        return {
            "status": "ok"
            if self.supervisor.running and not self.applier.last_error
            else "degraded",
            "haproxy": {
                "running": self.supervisor.running,
                "pid": self.supervisor.pid,
                "version": self.binary.version,
                "restarts": self.supervisor.restarts,
                "admin_url": f"http://127.0.0.1:{self.settings.admin_port}/stats",
                "metrics_url": f"http://127.0.0.1:{self.settings.admin_port}/metrics",
            },
            "desired_revision": state.revision,
            "applied_revision": self.applier.applied_revision,
            "last_error": self.applier.last_error,
        }

    async def status(self, app_name: str | None = None) -> list[dict[str, Any]]:
        """Per app: routing, colors with servers and their exact health, the latest release."""
        state = await self.state()
        apps = [state.spec.app(app_name)] if app_name else list(state.spec.apps)
        rows = await self.runtime.show_stat() if self.supervisor.running else []
        out = []
        for app in apps:
            routing = state.routing_for(app)
            release = await self.releases.latest(app.name)
            colors = []
            for color in app.colors:
                readings = {
                    r.server: r for r in server_readings(rows, backend_name(app.name, color.name))
                }
                colors.append(
                    {
                        "name": color.name,
                        "version": color.version,
                        "active": color.name == routing.active,
                        "weight": 100 if color.name == routing.active else 0,
                        "servers": [
                            {
                                "name": s.name,
                                "address": s.address,
                                "status": readings[s.name].status
                                if s.name in readings
                                else "UNKNOWN",
                                "in_use": readings[s.name].scur if s.name in readings else 0,
                            }
                            for s in color.servers
                        ],
                    }
                )
            out.append(
                {
                    "name": app.name,
                    "bind": app.bind,
                    "listener": app.listener,
                    "host": app.host,
                    "stable": app.stable,
                    "active": routing.active,
                    "previous": routing.previous,
                    "colors": colors,
                    "release": release.model_dump(mode="json") if release else None,
                    "desired_revision": state.revision,
                    "applied_revision": self.applier.applied_revision,
                }
            )
        return out

    async def history(self, app_name: str | None, limit: int) -> list[dict[str, Any]]:
        if app_name is not None:
            (await self.state()).spec.app(app_name)
        if not 1 <= limit <= 10_000:
            raise InvalidInput("limit must be between 1 and 10000")
        records = await self.store.audit(app=app_name, limit=limit)
        return [
            {
                "id": r.id,
                "revision": r.revision,
                "at": r.at,
                "actor": r.actor,
                "action": r.action,
                "app": r.app,
                "detail": r.detail,
                "reason": r.reason,
            }
            for r in records
        ]

    # -- writes --------------------------------------------------------------

    async def apply_spec(self, spec: Spec, *, actor: str, reason: str | None) -> dict[str, Any]:
        """Validate, check, persist, then apply a whole spec. A refused apply changes nothing."""
        old = await self.state()
        change = diff_spec(old.spec, spec)
        if change.empty:
            return {"revision": old.revision, "changes": change.as_dict(), "mode": "none"}
        self._check_ports_free(old.spec, spec)
        ops = spec_ops(old, spec)
        kept = {k: v for k, v in old.routing.items() if routing_key(k) not in _deleted(ops)}
        await self.applier.preflight(DesiredState(spec=spec, routing=_valid(spec, kept)))
        revision = await self.store.commit(
            ops,
            audit=AuditDraft(actor=actor, action="apply", detail=change.as_dict(), reason=reason),
        )
        try:
            report = await self.applier.apply(await self.state())
        except ConfigRejected as exc:
            await self._revert(old, actor, str(exc))
            raise
        return {
            "revision": revision,
            "changes": change.as_dict(),
            "mode": report.mode,
            "duration_ms": report.duration_ms,
        }

    async def _revert(self, old: DesiredState, actor: str, why: str) -> None:
        current = await self.state()
        ops = spec_ops(current, old.spec)
        ops += [Put(routing_key(name), dump(route)) for name, route in old.routing.items()]
        await self.store.commit(
            ops,
            audit=AuditDraft(actor=actor, action="apply.reverted", reason=why[:500]),
        )
        with contextlib.suppress(PrismError):
            await self.applier.apply(await self.state())

    def _check_ports_free(self, old: Spec, new: Spec) -> None:
        """A new bind on a port some other process holds would only fail at reload: refuse now."""
        held = {split_hostport(b)[1] for b in _binds(old)} | {self.settings.admin_port}
        for bind in _binds(new):
            host, port = split_hostport(bind)
            if port in held and port != self.settings.admin_port:
                continue
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((host, port))
                except OSError as exc:
                    if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                        raise InvalidInput(
                            f"cannot listen on {bind}: {exc.strerror}",
                            hint="pick a free port; nothing was changed",
                        ) from exc
                    if exc.errno == errno.EADDRNOTAVAIL:
                        raise InvalidInput(
                            f"cannot listen on {bind}: no such local address",
                            hint="bind an address of this machine; nothing was changed",
                        ) from exc
                    raise


def _binds(spec: Spec) -> list[str]:
    return [x.bind for x in spec.listeners] + [a.bind for a in spec.apps if a.bind]


def _deleted(ops: list[Put | Delete]) -> set[str]:
    return {op.key for op in ops if isinstance(op, Delete)}


def _valid(spec: Spec, routing: dict[str, Any]) -> dict[str, Any]:
    names = {a.name: a for a in spec.apps}
    return {k: v for k, v in routing.items() if k in names and names[k].has_color(v.active)}
