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

from prism import names
from prism.clock import SystemClock
from prism.core.buckets import layout_ranges
from prism.core.keys import APPS, diff_spec, dump, pin_key, routing_key, spec_ops
from prism.core.model import (
    App,
    Color,
    DesiredState,
    PinRule,
    Server,
    Spec,
    backend_name,
    split_hostport,
)
from prism.errors import ConfigRejected, Conflict, InvalidInput, NotFound, PrismError
from prism.haproxy.binary import HAProxyBinary, find_haproxy
from prism.haproxy.render import RenderSettings, derive_maxconn, fd_demand
from prism.haproxy.runtime import RuntimeClient, UnixSocketTransport
from prism.haproxy.supervisor import Supervisor
from prism.node.applier import Applier
from prism.node.files import read_text, write_atomic
from prism.node.paths import StatePaths, default_state_dir
from prism.release.engine import ReleaseEngine
from prism.release.gates import server_readings
from prism.release.webhooks import WebhookSender
from prism.services.routing import Traffic
from prism.store.desired import load_state
from prism.store.sqlite import SqliteStore
from prism.types import AuditDraft, Compare, Delete, Put, Store

__all__ = ["Prism", "ServiceOptions", "default_state_dir", "ensure_token", "normalize_pin_key"]


def normalize_pin_key(rule: PinRule, key: str) -> str:
    """Check a pin key against its rule's source; addresses become canonical networks."""
    if rule.source == "address":
        import ipaddress

        if not isinstance(key, str) or len(key) > 64 or not key.isascii():
            raise InvalidInput(f"invalid address or network: {key[:64]!r}")
        try:
            network = ipaddress.ip_network(key, strict=False)
        except ValueError:
            raise InvalidInput(
                f"invalid address or network: {key[:64]!r}",
                hint="e.g. 203.0.113.7 or 10.0.0.0/8",
            ) from None
        full = network.prefixlen == network.max_prefixlen
        return str(network.network_address) if full else str(network)
    return names.check(names.PIN_KEY, key, f"{rule.source} pin key")


log = logging.getLogger("prism")


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
        traffic: Traffic,
        engine: ReleaseEngine,
    ) -> None:
        self.paths = paths
        self.store = store
        self.binary = binary
        self.settings = settings
        self.supervisor = supervisor
        self.runtime = runtime
        self.applier = applier
        self.traffic = traffic
        self.engine = engine

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
            clock = SystemClock()
            traffic = Traffic(store, applier, runtime, clock, smoke_key=settings.smoke_key)
            webhooks = WebhookSender(clock)
            engine = ReleaseEngine(store, traffic, clock, webhooks)
            prism = cls(
                paths, store, binary, settings, supervisor, runtime, applier, traffic, engine
            )
            reconciler: asyncio.Task[None] | None = None
            try:
                await prism._start()
                reconciler = asyncio.create_task(
                    prism._reconcile_forever(options.reconcile_interval)
                )
                yield prism
            finally:
                if reconciler is not None:
                    reconciler.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await reconciler
                await engine.close()
                await webhooks.close()
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
        await self.applier.apply(await self.state())
        await self.engine.resume_all()

    async def _reconcile_forever(self, interval: float) -> None:
        """Converge periodically: catches drift and anything a crash left half-done."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.applier.reconcile(await self.state())
            except PrismError as exc:
                log.warning("reconcile failed: %s", exc)

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
        """Per app: weights, buckets, servers with their exact health, pins, latest release."""
        state = await self.state()
        apps = [state.spec.app(app_name)] if app_name else list(state.spec.apps)
        # one app: only its backends, not a row per server of the whole configuration
        backends = (
            [backend_name(a.name, c.name) for a in apps for c in a.colors] if app_name else []
        )
        rows = await self.runtime.show_stat(*backends) if self.supervisor.running else []
        return [await self._app_status(state, app, rows) for app in apps]

    async def _app_status(self, state: DesiredState, app: App, rows: list[Any]) -> dict[str, Any]:
        routing = state.routing_for(app)
        release = await self.engine.latest(app.name)
        ranges = layout_ranges(routing.layout)
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
                    "weight": routing.weights.get(color.name, 0),
                    "buckets": [f"{lo}-{hi}" for lo, hi, c in ranges if c == color.name],
                    "servers": [
                        {
                            "name": s.name,
                            "address": s.address,
                            "status": readings[s.name].status if s.name in readings else "UNKNOWN",
                            "check": readings[s.name].check_status if s.name in readings else "",
                            "in_use": readings[s.name].scur if s.name in readings else 0,
                        }
                        for s in color.servers
                    ],
                }
            )
        return {
            "name": app.name,
            "bind": app.bind,
            "listener": app.listener,
            "host": app.host,
            "stable": app.stable,
            "active": routing.active,
            "weights": routing.weights,
            "previous": routing.previous,
            "stickiness": app.stickiness.model_dump(mode="json"),
            "colors": colors,
            "pins": self._pin_list(state, app),
            "release": release.model_dump(mode="json") if release else None,
            "desired_revision": state.revision,
            "applied_revision": self.applier.applied_revision,
        }

    @staticmethod
    def _pin_list(state: DesiredState, app: App) -> list[dict[str, str]]:
        pins = state.pins_for(app)
        return [
            {"rule": rule.name, "source": rule.source, "key": key, "color": color}
            for rule in app.pins
            for key, color in sorted(pins.get(rule.name, {}).items())
        ]

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
        self._check_fd_budget(spec)
        ops = spec_ops(old, spec)
        kept = {k: v for k, v in old.routing.items() if routing_key(k) not in _deleted(ops)}
        await self.applier.preflight(DesiredState(spec=spec, routing=_valid(spec, kept)))
        revision = await self.store.commit(
            ops,
            audit=AuditDraft(actor=actor, action="apply", detail=change.as_dict(), reason=reason),
        )
        try:
            report = await self.applier.apply(await self.state())
        except PrismError as exc:
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
        ops += [
            Put(pin_key(app, rule, key), dump({"color": color}))
            for app, rules in old.pins.items()
            for rule, keys in rules.items()
            for key, color in keys.items()
        ]
        await self.store.commit(
            ops,
            audit=AuditDraft(actor=actor, action="apply.reverted", reason=why[:500]),
        )
        with contextlib.suppress(PrismError):
            await self.applier.apply(await self.state())

    # -- pins ----------------------------------------------------------------

    async def pins(self, app_name: str) -> list[dict[str, str]]:
        state = await self.state()
        return self._pin_list(state, state.spec.app(app_name))

    async def pin(
        self,
        app_name: str,
        key: str,
        color: str,
        *,
        rule: str | None,
        actor: str,
        reason: str | None,
    ) -> dict[str, Any]:
        """Pin ``key`` (read by the rule's source) to ``color``; wins over weights."""
        state = await self.state()
        app = state.spec.app(app_name)
        the_rule = app.pin_rule(rule)
        app.color(color)
        key = normalize_pin_key(the_rule, key)
        entry_key = pin_key(app.name, the_rule.name, key)
        old = await self.store.get(entry_key)
        if old is not None and json.loads(old.value)["color"] == color:
            return {"rule": the_rule.name, "key": key, "color": color, "changed": False}
        await self.store.commit(
            [Put(entry_key, dump({"color": color}))],
            expect=[Compare(entry_key, old.mod_revision if old else 0)],
            audit=AuditDraft(
                actor=actor,
                action="pin",
                app=app.name,
                detail={"rule": the_rule.name, "key": key, "color": color},
                reason=reason,
            ),
        )
        undo: list[Put | Delete] = [Put(entry_key, old.value)] if old else [Delete(entry_key)]
        done = await _apply_or_revert(self, undo, actor, "pin", app.name)
        return {"rule": the_rule.name, "key": key, "color": color, "changed": True, **done}

    async def unpin(
        self, app_name: str, key: str, *, rule: str | None, actor: str, reason: str | None
    ) -> dict[str, Any]:
        """Remove a pin; the key goes back to weighted routing."""
        state = await self.state()
        app = state.spec.app(app_name)
        the_rule = app.pin_rule(rule)
        key = normalize_pin_key(the_rule, key)
        entry_key = pin_key(app.name, the_rule.name, key)
        old = await self.store.get(entry_key)
        if old is None:
            raise NotFound(
                f"{key!r} is not pinned in rule {the_rule.name!r} of {app.name!r}",
                hint=f"`prism pins {app.name}` lists the pins",
            )
        await self.store.commit(
            [Delete(entry_key)],
            expect=[Compare(entry_key, old.mod_revision)],
            audit=AuditDraft(
                actor=actor,
                action="unpin",
                app=app.name,
                detail={"rule": the_rule.name, "key": key, "color": json.loads(old.value)["color"]},
                reason=reason,
            ),
        )
        done = await _apply_or_revert(self, [Put(entry_key, old.value)], actor, "unpin", app.name)
        return {"rule": the_rule.name, "key": key, "changed": True, **done}

    # -- servers -------------------------------------------------------------

    async def add_server(
        self,
        app_name: str,
        color_name: str,
        address: str,
        *,
        name: str | None,
        actor: str,
        reason: str | None,
    ) -> dict[str, Any]:
        """Add a server without reload: checked through DRAIN before it takes traffic."""
        state = await self.state()
        app = state.spec.app(app_name)
        color = app.color(color_name)
        try:
            host, port = split_hostport(address)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        taken = {s.name for s in color.servers}
        if name is None:
            name = next(f"s{i}" for i in range(1, len(taken) + 2) if f"s{i}" not in taken)
        names.check(names.SERVER_NAME, name, "server name")
        if name in taken:
            raise Conflict(f"color {color.name!r} of {app.name!r} already has a server {name!r}")
        server = Server(name=name, host=host, port=port)
        new_color = color.model_copy(update={"servers": (*color.servers, server)})
        return await self._replace_color(
            state, app, new_color, actor, reason, "server.add", {"server": name, "address": address}
        )

    async def remove_server(
        self, app_name: str, color_name: str, name: str, *, actor: str, reason: str | None
    ) -> dict[str, Any]:
        """Drain a server until its in-use connections are 0, then remove it, without reload."""
        state = await self.state()
        app = state.spec.app(app_name)
        color = app.color(color_name)
        names.check(names.SERVER_NAME, name, "server name")
        if not any(s.name == name for s in color.servers):
            raise NotFound(f"color {color.name!r} of {app.name!r} has no server {name!r}")
        new_color = color.model_copy(
            update={"servers": tuple(s for s in color.servers if s.name != name)}
        )
        return await self._replace_color(
            state, app, new_color, actor, reason, "server.remove", {"server": name}
        )

    async def _replace_color(
        self,
        state: DesiredState,
        app: App,
        color: Color,
        actor: str,
        reason: str | None,
        action: str,
        detail: dict[str, Any],
    ) -> dict[str, Any]:
        colors = tuple(color if c.name == color.name else c for c in app.colors)
        new_app = App.model_validate(
            {**app.model_dump(), "colors": [c.model_dump() for c in colors]}
        )
        apps = tuple(new_app if a.name == app.name else a for a in state.spec.apps)
        self._check_fd_budget(state.spec.model_copy(update={"apps": apps}))
        key = f"{APPS}{app.name}"
        entry = await self.store.get(key)
        assert entry is not None
        await self.store.commit(
            [Put(key, dump(new_app))],
            expect=[Compare(key, entry.mod_revision)],
            audit=AuditDraft(
                actor=actor,
                action=action,
                app=app.name,
                detail={"color": color.name, **detail},
                reason=reason,
            ),
        )
        done = await _apply_or_revert(self, [Put(key, entry.value)], actor, action, app.name)
        return {"app": app.name, "color": color.name, **detail, **done}

    def _check_fd_budget(self, spec: Spec) -> None:
        """HAProxy refuses to start (or reload) with more servers and listeners than its
        file-descriptor limit holds, after ``haproxy -c`` has passed: refuse first."""
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        need = fd_demand(spec, self.settings.maxconn)
        if hard != resource.RLIM_INFINITY and need > hard:
            raise InvalidInput(
                f"this configuration needs {need:,} file descriptors in HAProxy "
                f"(2 x maxconn {self.settings.maxconn:,} + one per server and listener), "
                f"but the limit is {hard:,}",
                hint="raise the open-files limit (ulimit -n) Prism starts with, "
                "or declare fewer servers; nothing was changed",
                detail={"needed": need, "limit": hard, "maxconn": self.settings.maxconn},
            )

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


async def _apply_or_revert(
    prism: Prism, ops_undo: list[Put | Delete], actor: str, action: str, app: str
) -> dict[str, Any]:
    """Apply the latest desired state; if HAProxy refuses, undo the store change."""
    try:
        report = await prism.applier.apply(await prism.state())
    except PrismError as exc:
        await prism.store.commit(
            ops_undo,
            audit=AuditDraft(
                actor=actor, action=f"{action}.reverted", app=app, reason=str(exc)[:500]
            ),
        )
        with contextlib.suppress(PrismError):
            await prism.applier.apply(await prism.state())
        raise
    return {"operations": report.operations, "mode": report.mode, "ms": report.duration_ms}


def _binds(spec: Spec) -> list[str]:
    return [x.bind for x in spec.listeners] + [a.bind for a in spec.apps if a.bind]


def _deleted(ops: list[Put | Delete]) -> set[str]:
    return {op.key for op in ops if isinstance(op, Delete)}


def _valid(spec: Spec, routing: dict[str, Any]) -> dict[str, Any]:
    names = {a.name: a for a in spec.apps}
    return {k: v for k, v in routing.items() if k in names and names[k].has_color(v.active)}
