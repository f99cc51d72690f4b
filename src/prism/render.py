"""Render desired state into HAProxy's files: one config and one weights map per app.

Pure: values in, text out. No file, socket or process I/O happens here; the
caller writes the files (atomically) and runs ``haproxy -c`` on them.

Layout of the config (every section in a stable order, so equal inputs give
byte-equal output and an unchanged config needs no reload)::

    global                 admin socket, server-state file, maxconn, hard-stop-after
    defaults               mode http, timeouts, load-server-state-from-file global
    frontend prism_admin   127.0.0.1:<admin_port>: /stats and /metrics
    frontend app_<app>     one per app with its own ``bind``
    frontend listener_<l>  one per shared listener; apps told apart by Host
    backend <app>.<color>  one per color, named by :func:`prism.model.backend_name`

Routing inside a frontend, per app, in HAProxy's evaluation order:

1. smoke: a request carrying the secret ``X-Prism-Smoke-Key`` *and*
   ``X-Prism-Color: <color>`` goes to that color, so Prism can test a color
   through the real listener before any user traffic moves to it;
2. weights: a bucket 0..99 looked up in the app's weights map (integer range
   keys ``lo:hi``) names the backend;
3. the stable color, should the map name no existing backend.

Every name and value written here comes from the validated model; each one is
checked again (:func:`_word`) so that nothing can break out of its token.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from prism.errors import InvalidInput
from prism.model import App, Color, DesiredState, backend_name
from prism.paths import SAFE_PATH, StatePaths

__all__ = [
    "RenderSettings",
    "RenderedFiles",
    "bucket_ranges",
    "derive_maxconn",
    "map_entries",
    "render",
    "render_map",
]

BUCKETS = 100
"""Requests are spread over buckets ``0 .. BUCKETS-1``; weights are percentages."""

_SMOKE_KEY = re.compile(r"[A-Za-z0-9]{16,64}", re.ASCII)
_TIMEOUT = re.compile(r"[1-9][0-9]{0,8}(?:us|ms|s|m|h|d)?", re.ASCII)
# One config token: no whitespace (word separator), '#' (comment), quotes,
# backslash or '$' (HAProxy's escaping and variable expansion), no control
# characters. The model's patterns are all narrower than this.
_WORD = re.compile(r"[A-Za-z0-9._:/%?&=+~-]+", re.ASCII)

# The file-descriptor budget: HAProxy holds two fds per proxied connection
# (client side and server side). The rest is a reserve for listeners, health
# checks (each check opens its own connection), the admin and master sockets,
# pollers and pipes, and files read at start-up. 10% of the limit, at least
# 256, keeps that reserve ahead of any realistic count of servers.
_FD_PER_CONN = 2
_FD_RESERVE_MIN = 256
_MAXCONN_MIN = 100
_MAXCONN_MAX = 1_000_000


def derive_maxconn(nofile_soft_limit: int) -> int:
    """A global ``maxconn`` that fits in ``nofile_soft_limit`` file descriptors.

    ``(nofile - reserve) // 2`` with ``reserve = max(256, nofile // 10)``,
    clamped to ``100 .. 1_000_000``: 20,000 fds give 9,000; 1,024 give 384.
    Below ~456 fds the floor of 100 no longer fits; raise the limit instead.
    """
    if isinstance(nofile_soft_limit, bool) or nofile_soft_limit < 1:
        raise InvalidInput(f"invalid file-descriptor limit {nofile_soft_limit}")
    reserve = max(_FD_RESERVE_MIN, nofile_soft_limit // 10)
    budget = (nofile_soft_limit - reserve) // _FD_PER_CONN
    return max(_MAXCONN_MIN, min(_MAXCONN_MAX, budget))


@dataclass(frozen=True)
class RenderSettings:
    """Node-level settings that are not part of desired state."""

    admin_port: int
    """Port of the 127.0.0.1 admin listener: ``/stats`` and ``/metrics``."""
    maxconn: int
    """Global connection limit; see :func:`derive_maxconn`."""
    smoke_key: str
    """Secret that unlocks smoke routing; ``[A-Za-z0-9]{16,64}``."""
    hard_stop_after: str = "60s"
    timeout_connect: str = "5s"
    timeout_client: str = "30s"
    timeout_server: str = "30s"
    timeout_http_request: str = "10s"
    timeout_http_keep_alive: str = "10s"
    timeout_queue: str = "30s"

    def __post_init__(self) -> None:
        if isinstance(self.admin_port, bool) or not 1 <= self.admin_port <= 65535:
            raise InvalidInput(f"invalid admin port {self.admin_port!r}", hint="use 1..65535")
        if isinstance(self.maxconn, bool) or not _MAXCONN_MIN <= self.maxconn <= _MAXCONN_MAX:
            raise InvalidInput(
                f"invalid maxconn {self.maxconn!r}", hint=f"use {_MAXCONN_MIN}..{_MAXCONN_MAX}"
            )
        if not isinstance(self.smoke_key, str) or _SMOKE_KEY.fullmatch(self.smoke_key) is None:
            # Never echo the secret itself.
            raise InvalidInput("invalid smoke key", hint="use 16 to 64 letters and digits")
        for field in (
            "hard_stop_after",
            "timeout_connect",
            "timeout_client",
            "timeout_server",
            "timeout_http_request",
            "timeout_http_keep_alive",
            "timeout_queue",
        ):
            value = getattr(self, field)
            if not isinstance(value, str) or _TIMEOUT.fullmatch(value) is None:
                raise InvalidInput(
                    f"invalid {field} {value!r}", hint="use an HAProxy time such as 500ms or 30s"
                )


@dataclass(frozen=True)
class RenderedFiles:
    """Everything HAProxy reads: the config and the map files."""

    config: str
    maps: Mapping[str, str]
    """File name inside the maps directory → content."""


def bucket_ranges(weights: Sequence[tuple[str, int]]) -> list[tuple[str, str]]:
    """Turn ``(value, weight)`` pairs summing to 100 into disjoint ``lo:hi`` bucket ranges.

    Ranges are laid out in the given order; weight-0 entries get no range.
    ``map_int`` returns the first matching range, so ranges must never overlap.
    """
    if any(isinstance(w, bool) or not 0 <= w <= BUCKETS for _, w in weights):
        raise InvalidInput(f"weights must be 0..{BUCKETS}: {list(weights)!r}")
    if sum(w for _, w in weights) != BUCKETS:
        raise InvalidInput(f"weights must sum to {BUCKETS}: {list(weights)!r}")
    entries: list[tuple[str, str]] = []
    low = 0
    for value, weight in weights:
        if weight:
            entries.append((f"{low}:{low + weight - 1}", value))
            low += weight
    return entries


def map_entries(state: DesiredState, app: App) -> list[tuple[str, str]]:
    """The weights map of ``app``: bucket range → backend name."""
    routing = state.routing_for(app)
    # One active color takes every bucket today; weighted colors will pass
    # several (backend, weight) pairs here.
    return bucket_ranges([(backend_name(app.name, routing.active), BUCKETS)])


def render_map(entries: Iterable[tuple[str, str]]) -> str:
    """Map file text: one ``key value`` line per entry."""
    return "".join(
        f"{_word(key, 'map key')} {_word(value, 'map value')}\n" for key, value in entries
    )


def render(state: DesiredState, paths: StatePaths, settings: RenderSettings) -> RenderedFiles:
    """Render ``state`` into the config and map files for the state dir ``paths``."""
    apps = sorted(state.spec.apps, key=lambda a: a.name)
    sections = [_global(paths, settings), _defaults(settings), _admin(settings)]
    for app in apps:
        if app.bind is not None:
            sections.append(_app_frontend(app, paths, settings))
    for listener in sorted(state.spec.listeners, key=lambda x: x.name):
        members = [app for app in apps if app.listener == listener.name]
        sections.append(_listener_frontend(listener.name, listener.bind, members, paths, settings))
    for app in apps:
        for color in sorted(app.colors, key=lambda c: c.name):
            sections.append(_backend(app, color))
    # No revision in the header: a config that did not change must render
    # byte-equal, so a runtime-only change never looks like it needs a reload.
    header = "# Rendered by Prism from desired state. Do not edit: Prism rewrites this file.\n"
    config = header + "\n".join("\n".join(section) + "\n" for section in sections)
    maps = {paths.weights_map(app.name).name: render_map(map_entries(state, app)) for app in apps}
    return RenderedFiles(config=config, maps=MappingProxyType(maps))


def _word(value: object, what: str) -> str:
    """``value`` if it is one safe config token; InvalidInput otherwise."""
    if not isinstance(value, str) or _WORD.fullmatch(value) is None:
        raise InvalidInput(f"refusing to render {what} {str(value)[:80]!r} into haproxy.cfg")
    return value


def _path(value: object, what: str) -> str:
    text = str(value)
    if SAFE_PATH.fullmatch(text) is None:
        raise InvalidInput(f"refusing to render {what} path {text[:120]!r} into haproxy.cfg")
    return text


def _global(paths: StatePaths, settings: RenderSettings) -> list[str]:
    # No `daemon`, no user/group: the supervisor runs `haproxy -W -S` in the
    # foreground as Prism's own user.
    return [
        "global",
        f"    stats socket {_path(paths.admin_socket, 'admin socket')} mode 600 level admin",
        f"    server-state-file {_path(paths.server_state, 'server state')}",
        f"    maxconn {settings.maxconn}",
        f"    hard-stop-after {settings.hard_stop_after}",
    ]


def _defaults(settings: RenderSettings) -> list[str]:
    # No log target: per-request logs would need a collector; Prism reads
    # counters over the admin socket instead.
    return [
        "defaults",
        "    mode http",
        "    option dontlognull",
        # Keeps drain/maint states and health across reloads (see DESIGN.md).
        "    load-server-state-from-file global",
        f"    timeout connect {settings.timeout_connect}",
        f"    timeout client {settings.timeout_client}",
        f"    timeout server {settings.timeout_server}",
        f"    timeout http-request {settings.timeout_http_request}",
        f"    timeout http-keep-alive {settings.timeout_http_keep_alive}",
        f"    timeout queue {settings.timeout_queue}",
    ]


def _admin(settings: RenderSettings) -> list[str]:
    return [
        "frontend prism_admin",
        f"    bind 127.0.0.1:{settings.admin_port}",
        "    http-request use-service prometheus-exporter if { path /metrics }",
        "    stats enable",
        "    stats uri /stats",
        "    stats refresh 5s",
    ]


def _smoke_acl(settings: RenderSettings) -> str:
    # Named once per frontend so the secret appears once, not once per color.
    return f"    acl prism_smoke_key req.hdr(x-prism-smoke-key) -m str {settings.smoke_key}"


def _routing(app: App, paths: StatePaths, cond: str) -> tuple[list[str], list[str]]:
    """One app's ``http-request`` and ``use_backend`` lines; ``cond`` is its host ACL or ''.

    HAProxy runs every http-request rule before any use_backend rule (and
    warns about rules written in the other order), so the caller places the
    two lists apart.
    """
    when = f" if {cond}" if cond else ""
    also = f"{cond} " if cond else ""
    weights = _path(paths.weights_map(app.name), "weights map")
    stable = _word(backend_name(app.name, app.stable), "backend")
    requests = [f"    http-request set-var(txn.prism_bucket) rand({BUCKETS}){when}"]
    # use_backend rules run in order: smoke lines must precede the weighted one.
    backends = []
    for color in sorted(app.colors, key=lambda c: c.name):
        name = _word(color.name, "color")
        backends.append(
            f"    use_backend {_word(backend_name(app.name, name), 'backend')} if {also}"
            f"prism_smoke_key {{ req.hdr(x-prism-color) -m str {name} }}"
        )
    backends.append(f"    use_backend %[var(txn.prism_bucket),map_int({weights},{stable})]{when}")
    if cond:
        # Reached only if the map names a backend that does not exist.
        backends.append(f"    use_backend {stable} if {cond}")
    return requests, backends


def _app_frontend(app: App, paths: StatePaths, settings: RenderSettings) -> list[str]:
    requests, backends = _routing(app, paths, "")
    return [
        f"frontend app_{_word(app.name, 'app')}",
        f"    bind {_word(app.bind, 'bind address')}",
        _smoke_acl(settings),
        *requests,
        *backends,
        # Reached only if the map names a backend that does not exist.
        f"    default_backend {_word(backend_name(app.name, app.stable), 'backend')}",
    ]


def _listener_frontend(
    name: str, bind: str, apps: Sequence[App], paths: StatePaths, settings: RenderSettings
) -> list[str]:
    lines = [
        f"frontend listener_{_word(name, 'listener')}",
        f"    bind {_word(bind, 'bind address')}",
        _smoke_acl(settings),
    ]
    acls = [f"host_{_word(app.name, 'app')}" for app in apps]
    for app, acl in zip(apps, acls, strict=True):
        # Host may carry a port ("shop.example.com:8080") and any case.
        lines.append(
            f"    acl {acl} req.hdr(host),field(1,:),lower -m str {_word(app.host, 'host')}"
        )
    unmatched = f" if {' '.join(f'!{acl}' for acl in acls)}" if acls else ""
    lines.append(
        "    http-request return status 404 content-type text/plain"
        f' string "no app on this listener for this Host\\n"{unmatched}'
    )
    routes = [_routing(app, paths, acl) for app, acl in zip(apps, acls, strict=True)]
    for requests, _ in routes:
        lines.extend(requests)
    for _, backends in routes:
        lines.extend(backends)
    return lines


def _backend(app: App, color: Color) -> list[str]:
    check = app.check
    name = _word(color.name, "color")
    lines = [
        f"backend {_word(backend_name(app.name, name), 'backend')}",
        "    balance roundrobin",
        "    option httpchk",
        f"    http-check send meth GET uri {_word(check.path, 'check path')}",
        f"    http-check expect status {check.expect_status}",
        f"    default-server check inter {check.inter_ms}ms rise {check.rise} fall {check.fall}",
        f"    retries {app.retries}",
    ]
    if app.redispatch:
        lines.append("    option redispatch")
    lines += [
        # The smoke secret stops here: servers never see it.
        "    http-request del-header x-prism-smoke-key",
        f"    http-response set-header X-Prism-Color {name}",
    ]
    for server in sorted(color.servers, key=lambda s: s.name):
        lines.append(
            f"    server {_word(server.name, 'server')}"
            f" {_word(server.host, 'server host')}:{server.port} check"
        )
    return lines
