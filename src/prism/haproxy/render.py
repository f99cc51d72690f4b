"""Render desired state into HAProxy's files: one config, its map files and pages.

Pure: values in, text out. No file, socket or process I/O happens here; the
caller writes the files (atomically) and runs ``haproxy -c`` on them.

Layout of the config (every section in a stable order, so equal inputs give
byte-equal output and an unchanged config needs no reload)::

    global                 admin socket, server-state file, maxconn, hard-stop-after
    defaults               mode http, timeouts, load-server-state-from-file global
    frontend prism_admin   127.0.0.1:<admin_port>: /stats and /metrics
    frontend app_<app>     one per app with its own ``bind``
    frontend listener_<l>  one per shared listener; apps told apart by Host
                           (either may terminate TLS: ``bind ... ssl crt <file|dir> ...``,
                           and a plain bind that redirects to https)
    backend <app>.<color>  one per color, named by :func:`prism.core.model.backend_name`

Files beside the config, all read by HAProxy when it loads the config::

    maps/<app>.weights.map          bucket range ``lo:hi`` → backend (:func:`map_entries`)
    maps/<app>.pins.<rule>.map      pin key → backend, one per pin rule (:func:`pin_entries`)
    pages/<app>.maintenance         the body served when no color is usable

How a frontend routes (smoke, pins, buckets, weights, fallback, maintenance)
is :mod:`prism.haproxy.rules`. Backends keep ``balance roundrobin`` and carry
every check setting, the weight (100, so a weight reads as a percentage),
``slowstart`` and the circuit breaker on each ``server`` line: a server added
at runtime inherits nothing from ``default-server``, so the line must stand
alone (:func:`server_args` gives the same text for ``add server``, which
accepts every one of these keywords in HAProxy 2.8). The backend's own
settings (``retries``, ``retry-on``, ``option redispatch``, ``http-reuse``)
apply to dynamic servers as to any other.

Every name and value written here comes from the validated model; each one is
checked again so that nothing can break out of its token. The maintenance
body goes only into its file, never into the config.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from prism.core.buckets import layout_ranges
from prism.core.model import (
    SLOT_PREFIX,
    App,
    Color,
    Discovery,
    HealthCheck,
    Listener,
    PinRule,
    Server,
    Spec,
    backend_name,
    split_bind,
)
from prism.core.state import DesiredState
from prism.core.tls import Tls
from prism.errors import InvalidInput
from prism.haproxy.commands import ServerTuning
from prism.haproxy.layout import HAProxyFiles
from prism.haproxy.requestlog import line_key, log_lines
from prism.haproxy.rules import (
    app_rules,
    check_pin_key,
    frontend_acls,
    maintenance_body,
    maintenance_file,
    pin_map_name,
    set_cookie_response,
)
from prism.haproxy.tokens import MAP_TOKEN, check_path, check_word
from prism.names import ADDRESS

__all__ = [
    "RenderMemo",
    "RenderSettings",
    "RenderedFiles",
    "derive_maxconn",
    "fd_demand",
    "maintenance_file",
    "map_entries",
    "pin_entries",
    "pin_map_name",
    "render",
    "render_app_files",
    "render_config",
    "render_map",
    "server_args",
    "server_tuning",
]

_SMOKE_KEY = re.compile(r"[A-Za-z0-9]{16,64}", re.ASCII)
_ALPN = frozenset({"h2,http/1.1", "http/1.1", "h2"})
_TIMEOUT = re.compile(r"[1-9][0-9]{0,8}(?:us|ms|s|m|h|d)?", re.ASCII)
# The file-descriptor budget: HAProxy holds two fds per proxied connection
# (client side and server side). The rest is a reserve for listeners, health
# checks (each check opens its own connection), the admin and master sockets,
# pollers and pipes, and files read at start-up. 10% of the limit, at least
# 256, keeps that reserve ahead of any realistic count of servers.
_FD_PER_CONN = 2
_FD_RESERVE_MIN = 256
_MAXCONN_MIN = 100
_MAXCONN_MAX = 1_000_000


#: file descriptors HAProxy 2.8 wants besides connections, servers and listeners
#: (pollers, thread pipes, the stats and master sockets, the admin listener): it
#: asked for 2 x maxconn + servers + listeners + 53 with 100 apps here; rounded up.
_FD_OWN = 64


def fd_demand(spec: Spec, maxconn: int) -> int:
    """The file-descriptor limit HAProxy will ask for with ``spec``: two per connection,
    one per server (its checks and connections) and per listener, and its own."""
    servers = sum(len(color.servers) + color.slots for app in spec.apps for color in app.colors)
    owners = [(x.bind, x.tls) for x in spec.listeners] + [(a.bind, a.tls) for a in spec.apps]
    binds = sum(
        1 + (tls is not None and tls.redirect_from is not None)
        for bind, tls in owners
        if bind is not None
    )
    return _FD_PER_CONN * maxconn + servers + binds + _FD_OWN


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
    listen_address: str | None = None
    """The address a bind of ``*:PORT`` or ``0.0.0.0:PORT`` takes on this node (a fleet
    node's ``--listen-address``); None keeps those binds on every address."""
    request_log_port: int | None = None
    """The 127.0.0.1 UDP port of Prism's request-log receiver; None logs nothing
    (see :mod:`prism.haproxy.requestlog`)."""
    request_log_sample: int = 1
    """Log one request in this many (1: every request)."""

    @property
    def request_log_key(self) -> str:
        """The key each request-log line starts with, derived from the smoke key."""
        return line_key(self.smoke_key)

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
        if self.listen_address is not None and (
            not isinstance(self.listen_address, str)
            or ADDRESS.fullmatch(self.listen_address) is None
        ):
            raise InvalidInput(
                f"invalid listen address {str(self.listen_address)[:80]!r}",
                hint="an IPv4 address or host name of this node, e.g. 10.0.1.11",
            )
        if not isinstance(self.smoke_key, str) or _SMOKE_KEY.fullmatch(self.smoke_key) is None:
            # Never echo the secret itself.
            raise InvalidInput("invalid smoke key", hint="use 16 to 64 letters and digits")
        if self.request_log_port is not None:
            # raises if invalid
            log_lines(self.request_log_port, self.request_log_sample, self.request_log_key)
        for setting in (
            "hard_stop_after",
            "timeout_connect",
            "timeout_client",
            "timeout_server",
            "timeout_http_request",
            "timeout_http_keep_alive",
            "timeout_queue",
        ):
            value = getattr(self, setting)
            if not isinstance(value, str) or _TIMEOUT.fullmatch(value) is None:
                raise InvalidInput(
                    f"invalid {setting} {value!r}", hint="use an HAProxy time such as 500ms or 30s"
                )


@dataclass(frozen=True)
class RenderedFiles:
    """Everything HAProxy reads: the config, the map files and the page files."""

    config: str
    maps: Mapping[str, str]
    """File name inside the maps directory → content."""
    files: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """Other files, by path relative to the state root (``pages/shop.maintenance``) → content.

    The config names them by absolute path and HAProxy reads them only when it
    loads the config; their digests appear in the config text, so a changed
    file always comes with a changed config.
    """


def map_entries(state: DesiredState, app: App) -> list[tuple[str, str]]:
    """The weights map of ``app``: ``lo:hi`` bucket range → backend, covering 0..99 in order.

    The ranges come from the routing's layout, not straight from the weights,
    so a weight change moves only the buckets the layout moved.
    """
    layout = state.routing_for(app).layout
    return [
        (f"{low}:{high}", backend_name(app.name, color))
        for low, high, color in layout_ranges(layout)
    ]


def pin_entries(state: DesiredState, app: App, rule: PinRule | str) -> list[tuple[str, str]]:
    """One pin rule's map of ``app``: key → backend, sorted by key; empty without pins.

    Raises InvalidInput for a key that cannot be a key of this rule (an
    address rule takes addresses and CIDRs; the others, pin-key tokens).
    """
    pin_rule = rule if isinstance(rule, PinRule) else app.pin_rule(rule)
    keys = state.pins_for(app).get(pin_rule.name, {})
    return [
        (check_pin_key(pin_rule, key), backend_name(app.name, color))
        for key, color in sorted(keys.items())
    ]


def render_map(entries: Iterable[tuple[str, str]]) -> str:
    """Map file text: one ``key value`` line per entry."""
    return "".join(
        f"{_map_token(key, 'key')} {_map_token(value, 'value')}\n" for key, value in entries
    )


def _map_token(value: object, what: str) -> str:
    # A map line is "<key> <value>": no whitespace may split a token, and a
    # leading '#' would make the line a comment.
    if not isinstance(value, str) or MAP_TOKEN.fullmatch(value) is None:
        raise InvalidInput(f"refusing to write map {what} {str(value)[:80]!r}")
    return value


def server_tuning(app: App) -> ServerTuning:
    """The weight, warm-up and circuit breaker every server of ``app`` carries."""
    circuit = app.circuit
    if circuit is None:
        return ServerTuning(slowstart_ms=app.slowstart_ms)
    return ServerTuning(
        slowstart_ms=app.slowstart_ms,
        observe=circuit.observe,
        error_limit=circuit.error_limit,
        on_error=circuit.on_error,
    )


def server_args(check: HealthCheck, server: Server, tuning: ServerTuning | None = None) -> str:
    """What follows the server's name on its config line and on ``add server``.

    ``<host>:<port> check inter <ms>ms rise <n> fall <n>`` and the tuning's
    words (:meth:`~prism.haproxy.commands.ServerTuning.words`): complete on its
    own, since a server added at runtime inherits nothing from ``default-server``.
    """
    host = check_word(server.host, "server host")
    port = server.port
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InvalidInput(f"refusing to render server port {port!r}")
    return f"{host}:{port} {_check_words(check)}" + (tuning.words() if tuning else "")


def _check_words(check: HealthCheck) -> str:
    return f"check inter {_int(check.inter_ms)}ms rise {_int(check.rise)} fall {_int(check.fall)}"


def render(state: DesiredState, paths: HAProxyFiles, settings: RenderSettings) -> RenderedFiles:
    """Render ``state`` into the config, map and page files for the state dir ``paths``."""
    config = render_config(state.served, paths, settings)
    maps: dict[str, str] = {}
    files: dict[str, str] = {}
    for app in sorted(state.spec.apps, key=lambda a: a.name):
        app_maps, app_files = render_app_files(state, app, paths)
        maps.update(app_maps)
        files.update(app_files)
    return RenderedFiles(config=config, maps=MappingProxyType(maps), files=MappingProxyType(files))


def render_config(spec: Spec, paths: HAProxyFiles, settings: RenderSettings) -> str:
    """The HAProxy config of ``spec``. It does not depend on routing or pins (those
    live in map files), so a weight move or a pin never changes it."""
    apps = sorted(spec.apps, key=lambda a: a.name)
    sections = [_global(paths, settings), _defaults(settings), _admin(settings)]
    for app in apps:
        if app.bind is not None:
            sections.append(_app_frontend(app, paths, settings))
    for listener in sorted(spec.listeners, key=lambda x: x.name):
        members = [app for app in apps if app.listener == listener.name]
        sections.append(_listener_frontend(listener, members, paths, settings))
    for app in apps:
        for color in sorted(app.colors, key=lambda c: c.name):
            if color.discovery is not None:
                sections.append(_resolvers(app, color, color.discovery))
            sections.append(_backend(app, color))
    # No revision in the header: a config that did not change must render
    # byte-equal, so a runtime-only change never looks like it needs a reload.
    header = "# Rendered by Prism from desired state. Do not edit: Prism rewrites this file.\n"
    return header + "\n".join("\n".join(section) + "\n" for section in sections)


def render_app_files(
    state: DesiredState, app: App, paths: HAProxyFiles
) -> tuple[dict[str, str], dict[str, str]]:
    """One app's map files (weights, one per pin rule) and page files, by file name."""
    maps = {paths.weights_map(app.name).name: render_map(map_entries(state, app))}
    for rule in app.pins:
        # Written even when empty: HAProxy 2.8 cannot start on a missing map file.
        maps[pin_map_name(app.name, rule.name)] = render_map(pin_entries(state, app, rule))
    files: dict[str, str] = {}
    body = maintenance_body(app)
    if body is not None:
        files[maintenance_file(app.name)] = body
    return maps, files


class RenderMemo:
    """Renders successive desired states for one state dir, reusing what did not change.

    At 1,000 apps, rendering everything took most of a one-app weight move. The
    config is reused while the served spec (declared plus registered servers) is the
    very same (frozen) object, and an
    app's files while its app object, stored routing and pins are unchanged,
    so a weight move renders one app's weights map. The output is always what
    :func:`render` gives for the same state.
    """

    def __init__(self, paths: HAProxyFiles, settings: RenderSettings) -> None:
        self.paths = paths
        self.settings = settings
        self._spec: Spec | None = None
        self._config = ""
        # app name -> (app, stored routing, stored pins, maps, files)
        self._apps: dict[str, tuple[App, object, object, dict[str, str], dict[str, str]]] = {}
        # every app's files together, patched per app as apps change
        self._maps: dict[str, str] = {}
        self._files: dict[str, str] = {}

    def render(self, state: DesiredState) -> RenderedFiles:
        if state.served is not self._spec:
            self._config = render_config(state.served, self.paths, self.settings)
            self._spec = state.served
        gone = set(self._apps) - {app.name for app in state.spec.apps}
        for name in gone:
            self._forget(name)
        for app in state.spec.apps:
            routing, pins = state.routing.get(app.name), state.pins.get(app.name)
            held = self._apps.get(app.name)
            if held is None or held[0] is not app or held[1] != routing or held[2] != pins:
                self._forget(app.name)
                maps, files = render_app_files(state, app, self.paths)
                self._apps[app.name] = (app, routing, pins, maps, files)
                self._maps.update(maps)
                self._files.update(files)
        return RenderedFiles(
            config=self._config,
            maps=MappingProxyType(dict(self._maps)),
            files=MappingProxyType(dict(self._files)),
        )

    def _forget(self, app: str) -> None:
        held = self._apps.pop(app, None)
        if held is not None:
            for name in held[3]:
                del self._maps[name]
            for name in held[4]:
                del self._files[name]


def _bind(bind: str | None, settings: RenderSettings) -> str:
    """A listener's bind word; a wildcard host takes the node's listen address, if any."""
    host, port = split_bind(bind)
    if settings.listen_address is not None and host in ("*", "0.0.0.0"):
        bind = f"{settings.listen_address}:{port}"
    return check_word(bind, "bind address")


def _bind_lines(bind: str, tls: Tls | None, settings: RenderSettings) -> list[str]:
    """The ``bind`` lines of a frontend: plain, or TLS with every certificate (HAProxy
    picks one by SNI; the first is the default) and a plain bind that only redirects."""
    word = _bind(bind, settings)
    if tls is None:
        return [f"    bind {word}"]
    # A directory is named without its final '/': HAProxy then calls its files
    # <dir>/<file>, the names `set ssl cert` takes.
    crts = " ".join(f"crt {check_path(item.rstrip('/'), 'certificate')}" for item in tls.certs)
    if tls.alpn is not None and tls.alpn not in _ALPN:
        raise InvalidInput(f"refusing to render alpn {str(tls.alpn)[:40]!r} into haproxy.cfg")
    alpn = f" alpn {tls.alpn}" if tls.alpn else ""
    lines = [f"    bind {word} ssl {crts}{alpn}"]
    if tls.redirect_from is not None:
        host = word.rsplit(":", 1)[0]
        lines.append(f"    bind {check_word(f'{host}:{_int(tls.redirect_from)}', 'bind address')}")
    return lines


def _redirect(bind: str, tls: Tls | None) -> list[str]:
    """Plain HTTP to the same host's https URL (the Host header's port replaced)."""
    if tls is None or tls.redirect_from is None:
        return []
    port = split_bind(bind)[1]
    suffix = "" if port == 443 else f":{_int(port)}"
    return [
        "    http-request redirect location"
        f" https://%[req.hdr(host),field(1,:)]{suffix}%[capture.req.uri]"
        " code 301 unless { ssl_fc }"
    ]


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"refusing to render {value!r} as a number")
    return value


def _global(paths: HAProxyFiles, settings: RenderSettings) -> list[str]:
    # No `daemon`, no user/group: the supervisor runs `haproxy -W -S` in the
    # foreground as Prism's own user.
    return [
        "global",
        f"    stats socket {check_path(paths.admin_socket, 'admin socket')} mode 600 level admin",
        f"    server-state-file {check_path(paths.server_state, 'server state')}",
        f"    maxconn {settings.maxconn}",
        f"    hard-stop-after {settings.hard_stop_after}",
        *_request_log(settings)[0],
    ]


def _request_log(settings: RenderSettings) -> tuple[list[str], list[str]]:
    if settings.request_log_port is None:
        return [], []
    return log_lines(
        settings.request_log_port, settings.request_log_sample, settings.request_log_key
    )


def _defaults(settings: RenderSettings) -> list[str]:
    # Per-request lines go to Prism's own receiver when it has one (response-time
    # quantiles and exact counts); counters come over the admin socket either way.
    return [
        "defaults",
        "    mode http",
        "    option dontlognull",
        *_request_log(settings)[1],
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
        # scrapes of /stats and /metrics are no app's requests
        *(
            ["    http-request set-log-level silent"]
            if settings.request_log_port is not None
            else []
        ),
        "    http-request use-service prometheus-exporter if { path /metrics }",
        "    stats enable",
        "    stats uri /stats",
        "    stats refresh 5s",
    ]


def _frontend_body(
    apps: Sequence[tuple[App, str]],
    paths: HAProxyFiles,
    settings: RenderSettings,
    before: list[str],
) -> list[str]:
    """ACLs, then ``before`` (e.g. the 404), then every request rule, then every use_backend.

    HAProxy runs every http-request rule before any use_backend rule and warns
    about rules written in the other order, so the apps' lines are grouped by kind.
    """
    routes = [app_rules(app, paths, host_acl) for app, host_acl in apps]
    lines = frontend_acls(settings.smoke_key)
    for route in routes:
        lines += route.acls
    lines += before
    for route in routes:
        lines += route.requests
    if any(route.sets_cookie for route in routes):
        lines.append(set_cookie_response())
    for route in routes:
        lines += route.backends
    return lines


def _app_frontend(app: App, paths: HAProxyFiles, settings: RenderSettings) -> list[str]:
    assert app.bind is not None
    return [
        f"frontend app_{check_word(app.name, 'app')}",
        *_bind_lines(app.bind, app.tls, settings),
        *_frontend_body([(app, "")], paths, settings, _redirect(app.bind, app.tls)),
        # Reached only when no color is usable and the request skipped the
        # maintenance page (a smoke request): HAProxy answers 503 itself.
        f"    default_backend {check_word(backend_name(app.name, app.stable), 'backend')}",
    ]


def _listener_frontend(
    listener: Listener, apps: Sequence[App], paths: HAProxyFiles, settings: RenderSettings
) -> list[str]:
    lines = [
        f"frontend listener_{check_word(listener.name, 'listener')}",
        *_bind_lines(listener.bind, listener.tls, settings),
    ]
    acls = [f"host_{check_word(app.name, 'app')}" for app in apps]
    for app, acl in zip(apps, acls, strict=True):
        # Host may carry a port ("shop.example.com:8080") and any case.
        host = f"req.hdr(host),field(1,:),lower -m str {check_word(app.host, 'host')}"
        lines.append(f"    acl {acl} {host}")
        # Lines declaring the same ACL are ORed: one line per app keeps every line
        # short (HAProxy reads at most 64 words of a line; naming every app's ACL
        # in the 404 rule broke a listener of about 60 apps).
        lines.append(f"    acl prism_known_host {host}")
    unmatched = " if !prism_known_host" if acls else ""
    not_found = (
        "    http-request return status 404 content-type text/plain"
        f' string "no app on this listener for this Host\\n"{unmatched}'
    )
    before = [*_redirect(listener.bind, listener.tls), not_found]
    lines += _frontend_body(list(zip(apps, acls, strict=True)), paths, settings, before)
    for app, acl in zip(apps, acls, strict=True):
        # As default_backend above, per app: a smoke request when nothing is usable.
        stable = check_word(backend_name(app.name, app.stable), "backend")
        lines.append(f"    use_backend {stable} if {acl}")
    return lines


def _backend(app: App, color: Color) -> list[str]:
    check = app.check
    tuning = server_tuning(app).words()
    name = check_word(color.name, "color")
    lines = [
        f"backend {check_word(backend_name(app.name, name), 'backend')}",
        # roundrobin: a dynamic algorithm, so servers can be added at runtime.
        "    balance roundrobin",
        "    option httpchk",
        f"    http-check send meth GET uri {check_word(check.path, 'check path')}",
        f"    http-check expect status {_int(check.expect_status)}",
        # The same settings as on every server line. Servers don't need it
        # (each line stands alone), but it keeps check settings, weight, warm-up
        # and circuit breaker in the server-less config, so changing them is a
        # reload, not a re-add of every server.
        f"    default-server {_check_words(check)}{tuning}",
        f"    retries {_int(app.retries)}",
    ]
    if app.retry_on:
        words = " ".join(check_word(c, "retry-on condition") for c in app.retry_on)
        lines.append(f"    retry-on {words}")
    if app.redispatch:
        lines.append("    option redispatch")
    if app.http_reuse is not None:
        lines.append(f"    http-reuse {check_word(app.http_reuse, 'http-reuse mode')}")
    lines += [
        # The smoke secret stops here: servers never see it.
        "    http-request del-header x-prism-smoke-key",
        f"    http-response set-header X-Prism-Color {name}",
    ]
    if color.discovery is not None:
        # Slots keep their address across reloads (the server-state file's `last`);
        # empty ones wait in maintenance until the record names a target.
        lines.append(
            f"    server-template {SLOT_PREFIX} {_int(color.discovery.slots)}"
            f" {check_word(color.discovery.srv, 'SRV record')}"
            f" resolvers {resolvers_name(app.name, color.name)} init-addr last,none"
            f" {_check_words(check)}{tuning}"
        )
    for server in sorted(color.servers, key=lambda s: s.name):
        args = server_args(check, server, server_tuning(app))
        lines.append(f"    server {check_word(server.name, 'server')} {args}")
    return lines


def resolvers_name(app: str, color: str) -> str:
    """The ``resolvers`` section of one color's DNS discovery."""
    return f"prism_{app}_{color}".replace("-", "_")


def _resolvers(app: App, color: Color, discovery: Discovery) -> list[str]:
    lines = [f"resolvers {check_word(resolvers_name(app.name, color.name), 'resolvers')}"]
    for index, resolver in enumerate(discovery.resolvers, start=1):
        lines.append(f"    nameserver ns{index} {check_word(resolver, 'resolver')}")
    return [
        *lines,
        # SRV answers of a few dozen targets do not fit the classic 512 bytes
        "    accepted_payload_size 8192",
        "    resolve_retries 3",
        "    timeout resolve 1s",
        "    timeout retry 1s",
        # re-ask every second; a target gone from the record leaves at the next answer
        "    hold valid 1s",
        "    hold obsolete 0s",
    ]
