"""The desired-state model: what Prism should make HAProxy do.

One set of frozen pydantic models validates every way state comes in: the
``prism.yaml`` file, the REST API and the store. A model that exists is valid:
names match :mod:`prism.names`, references resolve, ports don't collide.
Nothing here does I/O.

Shape::

    Spec
    ├── listeners: Listener(name, bind, tls)       shared listeners, host-matched
    └── apps: App
        ├── bind | listener + host                 where its traffic comes in
        ├── tls: Tls | None                        certificates of its own bind (core.tls)
        ├── stable                                 the color serving by default
        ├── check: HealthCheck                     how HAProxy checks servers
        ├── smoke: Smoke | None                    request sent before a cutover
        ├── retries, retry_on, redispatch          when HAProxy tries a request again
        ├── slowstart_ms, http_reuse               warm-up of a joining server; connection reuse
        ├── circuit: Circuit | None                HAProxy's own breaker on every server
        ├── slow_servers: SlowServers              lower a slow server's weight (off by default)
        ├── dns: DnsExport | None                  the record of health-weighted DNS export
        └── colors: Color(name, version, servers: Server(name, host, port))

Routing, registrations and the whole desired state are :mod:`prism.core.state`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from prism import names
from prism.core.tls import Tls
from prism.errors import InvalidInput

__all__ = [
    "BIND_PATTERN",
    "HOSTPORT_PATTERN",
    "MAX_APPS",
    "MAX_LISTENERS",
    "RETRY_ON",
    "SLOT_PREFIX",
    "App",
    "Circuit",
    "Color",
    "Discovery",
    "DnsExport",
    "DurationMs",
    "HealthCheck",
    "Listener",
    "Maintenance",
    "PinRule",
    "Server",
    "SlowServers",
    "Smoke",
    "Spec",
    "Stickiness",
    "Tls",
    "backend_name",
    "error_lines",
    "json_pattern",
    "parse_duration_ms",
    "parse_model",
    "split_bind",
    "split_hostport",
]

M = TypeVar("M", bound="BaseModel")

_DURATION = re.compile(r"(\d{1,9})(ms|s|m|h)?", re.ASCII)
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, None: 1}


def parse_duration_ms(value: object) -> int:
    """Parse ``500ms``, ``2s``, ``1m``, ``1h`` or a bare integer of milliseconds."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of ms or a string like '2s'")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return value
    if isinstance(value, str):
        match = _DURATION.fullmatch(value)
        if match:
            return int(match.group(1)) * _UNIT_MS[match.group(2)]
    raise ValueError("a duration is a number of ms or a string like '500ms', '2s', '1m'")


#: the most apps and shared listeners one spec may declare
MAX_APPS = 2000
MAX_LISTENERS = 256


def json_pattern(pattern: re.Pattern[str] | str) -> str:
    """A :mod:`prism.names` pattern as an anchored JSON Schema (ECMA-262) pattern."""
    text = pattern if isinstance(pattern, str) else pattern.pattern
    return "^(?:" + text.replace(r"\Z", "$") + ")$"


_DURATION_TEXT = r"\d{1,9}(ms|s|m|h)?"


@dataclass(frozen=True)
class _DurationSchema:
    """A duration's JSON Schema: milliseconds, or a string like ``500ms``, ``2s``, ``1m``."""

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        milliseconds = handler(schema)
        milliseconds.setdefault("minimum", 0)
        return {
            "anyOf": [
                milliseconds,
                {"type": "string", "pattern": json_pattern(_DURATION_TEXT), "examples": ["30s"]},
            ]
        }


DurationMs = Annotated[int, BeforeValidator(parse_duration_ms), _DurationSchema()]


@dataclass(frozen=True)
class _Matches:
    """A str that must fully match ``pattern``; its JSON Schema carries the pattern."""

    pattern: re.Pattern[str]
    what: str

    def validate(self, value: object) -> str:
        if not isinstance(value, str) or self.pattern.fullmatch(value) is None:
            raise ValueError(f"invalid {self.what}: must match {self.pattern.pattern}")
        return value

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        return core_schema.no_info_before_validator_function(self.validate, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {**handler(schema), "pattern": json_pattern(self.pattern)}


def _pattern_validator(pattern: re.Pattern[str], what: str) -> _Matches:
    return _Matches(pattern, what)


Name = Annotated[str, _pattern_validator(names.NAME, "name")]
ServerName = Annotated[str, _pattern_validator(names.SERVER_NAME, "server name")]
Address = Annotated[str, _pattern_validator(names.ADDRESS, "address")]
Hostname = Annotated[str, _pattern_validator(names.HOSTNAME, "host name")]
VersionLabel = Annotated[str, _pattern_validator(names.VERSION_LABEL, "version label")]
HttpPath = Annotated[str, _pattern_validator(names.HTTP_PATH, "HTTP path")]
Text = Annotated[str, _pattern_validator(names.TEXT, "text")]
Port = Annotated[int, Field(ge=1, le=65535, strict=True)]
HeaderName = Annotated[str, _pattern_validator(names.HEADER_NAME, "header name")]
CookieName = Annotated[str, _pattern_validator(names.COOKIE_NAME, "cookie name")]

# What split_hostport and split_bind accept, for the JSON Schema.
_PORT_TEXT = r"0*(?:[1-9]\d{0,3}|[1-5]\d{4}|6[0-4]\d{3}|65[0-4]\d{2}|655[0-2]\d|6553[0-5])"
HOSTPORT_PATTERN = json_pattern(f"(?:{names.ADDRESS.pattern}):{_PORT_TEXT}")
BIND_PATTERN = json_pattern(rf"(?:\*|{names.ADDRESS.pattern}):{_PORT_TEXT}")


def split_hostport(value: object) -> tuple[str, int]:
    """Split ``host:port`` into a checked host and port; raise ValueError otherwise."""
    if not isinstance(value, str) or value.count(":") != 1:
        raise ValueError("expected host:port, e.g. 127.0.0.1:8080")
    host, _, port_text = value.partition(":")
    if names.ADDRESS.fullmatch(host) is None:
        raise ValueError(f"invalid host in {value[:80]!r}")
    if not port_text.isascii() or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"invalid port in {value[:80]!r}: expected 1..65535")
    return host, int(port_text)


def split_bind(value: object) -> tuple[str, int]:
    """Split a listener's ``host:port``; the host may also be ``*`` (every address, or
    the node's ``--listen-address`` in a fleet)."""
    if isinstance(value, str) and value.startswith("*:"):
        return "*", split_hostport("0.0.0.0" + value[1:])[1]
    return split_hostport(value)


# Header, cookie and query names together (which applies depends on the source).
_ANY_NAME = r"[A-Za-z][A-Za-z0-9_.-]{0,63}"


def _servers_schema(schema: JsonSchemaValue) -> None:
    """A color's servers: full mappings, ``host:port`` strings or ``{address, name}``."""
    items = schema.get("items", {})
    shorthand = {
        "type": "object",
        "additionalProperties": False,
        "required": ["address"],
        "properties": {
            "address": {"type": "string", "pattern": HOSTPORT_PATTERN},
            "name": {"type": "string", "pattern": json_pattern(names.SERVER_NAME)},
        },
    }
    schema["items"] = {"anyOf": [items, {"type": "string", "pattern": HOSTPORT_PATTERN}, shorthand]}
    schema["maxItems"] = 1000


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)


class HealthCheck(_Frozen):
    """How HAProxy decides a server may take traffic."""

    path: HttpPath = "/"
    expect_status: int = Field(default=200, ge=100, le=599, strict=True)
    inter_ms: DurationMs = Field(default=1000, ge=100, le=3_600_000)
    rise: int = Field(default=2, ge=1, le=100, strict=True)
    fall: int = Field(default=3, ge=1, le=100, strict=True)


class Smoke(_Frozen):
    """A request Prism sends through the app's own listener before a cutover.

    The request carries a header that routes it to the target color, so the
    smoke test exercises the real listener and the new color before any user
    traffic moves.
    """

    path: HttpPath = "/"
    expect_status: int | None = Field(default=200, ge=100, le=599, strict=True)
    expect_body: Text | None = None
    timeout_ms: DurationMs = Field(default=2000, ge=10, le=60_000)


class Stickiness(_Frozen):
    """Where a request's bucket comes from.

    ``none``: a fresh ``rand(100)`` per request. ``cookie``/``header``: a 32-bit
    hash (xxh32) of that cookie or header, mod 100, so a user keeps one bucket
    (and so one color while its share does not shrink). With ``set_cookie``,
    Prism itself gives a browser without the cookie a random id on its first
    response, so users stick without any change to the app.
    """

    source: Literal["none", "cookie", "header"] = "none"
    name: str | None = Field(default=None, json_schema_extra={"pattern": json_pattern(_ANY_NAME)})
    set_cookie: bool = False
    max_age_s: int = Field(default=31_536_000, ge=60, le=315_360_000, strict=True)

    @model_validator(mode="after")
    def _consistent(self) -> Stickiness:
        if self.source == "none":
            if self.name is not None or self.set_cookie:
                raise ValueError("stickiness 'none' takes no name or set_cookie")
            return self
        if self.name is None:
            raise ValueError(f"stickiness from a {self.source} needs its 'name'")
        pattern = names.COOKIE_NAME if self.source == "cookie" else names.HEADER_NAME
        if pattern.fullmatch(self.name) is None:
            raise ValueError(f"invalid {self.source} name: must match {pattern.pattern}")
        if self.set_cookie and self.source != "cookie":
            raise ValueError("set_cookie needs stickiness from a cookie")
        return self


class PinRule(_Frozen):
    """Where a pin key is read from: a header, cookie, query parameter or the client address.

    Pins map keys (tenants, users, networks) to colors and win over weights.
    Rules are tried in order; the first that finds a pinned key decides.
    """

    name: Name
    source: Literal["header", "cookie", "query", "address"]
    key: str | None = Field(default=None, json_schema_extra={"pattern": json_pattern(_ANY_NAME)})

    @model_validator(mode="after")
    def _consistent(self) -> PinRule:
        if self.source == "address":
            if self.key is not None:
                raise ValueError("an address pin rule reads the client address and takes no key")
            return self
        pattern = {
            "header": names.HEADER_NAME,
            "cookie": names.COOKIE_NAME,
            "query": names.QUERY_NAME,
        }[self.source]
        if self.key is None or pattern.fullmatch(self.key) is None:
            raise ValueError(
                f"pin rule {self.name!r} needs a {self.source} name matching {pattern.pattern}"
            )
        return self

    def normalize_key(self, key: str) -> str:
        """Check a pin key against this rule's source; addresses become canonical networks
        (``10.0.0.7/8`` is ``10.0.0.0/8``, ``203.0.113.7/32`` is ``203.0.113.7``)."""
        if self.source != "address":
            return names.check(names.PIN_KEY, key, f"{self.source} pin key")
        if not isinstance(key, str) or len(key) > 64 or not key.isascii():
            raise InvalidInput(f"invalid address or network: {str(key)[:64]!r}")
        try:
            network = ipaddress.ip_network(key, strict=False)
        except ValueError:
            raise InvalidInput(
                f"invalid address or network: {key[:64]!r}",
                hint="e.g. 203.0.113.7 or 10.0.0.0/8",
            ) from None
        full = network.prefixlen == network.max_prefixlen
        return str(network.network_address) if full else str(network)


class Maintenance(_Frozen):
    """The page served when no color of an app has a usable server."""

    status: int = Field(default=503, ge=200, le=599, strict=True)
    content_type: Literal["text/html", "text/plain", "application/json"] = "text/html"
    body: str = Field(
        default="<!doctype html><title>Down for maintenance</title>"
        "<h1>Down for maintenance</h1><p>Please try again shortly.</p>\n",
        max_length=8192,
    )

    @field_validator("status")
    @classmethod
    def _has_body(cls, value: int) -> int:
        if value in (204, 304):
            raise ValueError("a maintenance page needs a status that carries a body (not 204/304)")
        return value

    @field_validator("body")
    @classmethod
    def _printable(cls, value: str) -> str:
        if "\x00" in value or len(value.encode("utf-8")) > 8192:
            raise ValueError("the maintenance body must be text of at most 8 KiB")
        return value


class Server(_Frozen):
    """One ``host:port`` in a color's pool."""

    name: ServerName
    host: Address
    port: Port

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def _servers_from_shorthand(value: object) -> object:
    """Accept ``["127.0.0.1:9001", ...]`` as well as full server mappings."""
    if not isinstance(value, list | tuple):
        return value
    out: list[object] = []
    for index, item in enumerate(value, start=1):
        if isinstance(item, str):
            host, port = split_hostport(item)
            out.append({"name": f"s{index}", "host": host, "port": port})
        elif isinstance(item, Mapping) and "address" in item and "host" not in item:
            rest = {k: v for k, v in item.items() if k != "address"}
            host, port = split_hostport(item["address"])
            out.append({"name": f"s{index}", **rest, "host": host, "port": port})
        else:
            out.append(item)
    return tuple(out)  # a tuple: strict validation takes no list from Python


#: server-template slots are named srv1, srv2 ...: declared servers may not take those names
SLOT_PREFIX = "srv"


class Discovery(_Frozen):
    """Servers found through a DNS SRV record, which HAProxy itself follows at runtime.

    Consul's DNS interface serves ``<tag>.<service>.service.consul``; Nomad and
    Kubernetes headless services publish SRV records too. HAProxy renders it as
    a ``resolvers`` section and ``slots`` server slots (``server-template``):
    filled slots take the record's targets and ports; empty ones are absent
    (in maintenance set by the resolver), never DOWN.
    """

    srv: Annotated[str, _pattern_validator(names.SRV_NAME, "SRV record name")]
    resolvers: tuple[str, ...] = Field(min_length=1, max_length=4)
    slots: int = Field(default=10, ge=1, le=100, strict=True)

    @field_validator("resolvers")
    @classmethod
    def _valid_resolvers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            host, _ = split_hostport(item)
            if not names.ADDRESS.fullmatch(host) or not host.replace(".", "").isdigit():
                raise ValueError(f"a resolver is an IPv4 address:port, not {item[:80]!r}")
        if len(set(value)) != len(value):
            raise ValueError("duplicate resolvers")
        return value


class Color(_Frozen):
    """One version of an app, with its own backend of servers (declared, discovered by
    DNS SRV, or both)."""

    name: Name
    version: VersionLabel = "unversioned"
    servers: Annotated[
        tuple[Server, ...],
        BeforeValidator(_servers_from_shorthand),
        Field(json_schema_extra=_servers_schema),
    ] = ()
    discovery: Discovery | None = None

    @field_validator("servers")
    @classmethod
    def _unique_servers(cls, servers: tuple[Server, ...]) -> tuple[Server, ...]:
        seen: set[str] = set()
        for server in servers:
            if server.name in seen:
                raise ValueError(f"duplicate server name {server.name!r}")
            seen.add(server.name)
        if len(servers) > 1000:
            raise ValueError("at most 1000 servers per color")
        for server in servers:
            rest = server.name.removeprefix(SLOT_PREFIX)
            if rest != server.name and rest.isdigit():
                raise ValueError(f"server name {server.name!r} is reserved for DNS discovery slots")
        return servers

    @property
    def slots(self) -> int:
        """How many server slots DNS discovery reserves in the backend (0 without it)."""
        return self.discovery.slots if self.discovery is not None else 0

    def server(self, name: str) -> Server:
        for server in self.servers:
            if server.name == name:
                return server
        raise KeyError(name)


class Listener(_Frozen):
    """A shared listener; apps on it are told apart by their ``host``."""

    name: Name
    bind: str = Field(json_schema_extra={"pattern": BIND_PATTERN})
    tls: Tls | None = None

    @field_validator("bind")
    @classmethod
    def _valid_bind(cls, value: str) -> str:
        split_bind(value)
        return value


#: the conditions HAProxy 2.8's ``retry-on`` accepts (its configuration manual, checked
#: with ``haproxy -c`` of the 2.8.25 build: 400, 429 or 505 are refused as unknown keywords)
RETRY_ON: tuple[str, ...] = (
    "none",
    "conn-failure",
    "empty-response",
    "junk-response",
    "response-timeout",
    "0rtt-rejected",
    "all-retryable-errors",
    "401",
    "403",
    "404",
    "408",
    "425",
    "500",
    "501",
    "502",
    "503",
    "504",
)


def _retry_condition(value: object) -> str:
    # YAML reads `503` as a number; HAProxy's word is the same either way
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or value not in RETRY_ON:
        raise ValueError(f"unknown retry-on condition; HAProxy 2.8 accepts {', '.join(RETRY_ON)}")
    return value


RetryCondition = Annotated[str, BeforeValidator(_retry_condition)]


class Circuit(_Frozen):
    """HAProxy's own circuit breaker, rendered on every server of the app.

    HAProxy watches the real traffic (``observe``: ``layer4`` connection
    failures, or ``layer7`` also invalid responses and 5xx other than 501/505);
    after ``error_limit`` consecutive errors ``on_error`` acts: ``mark-down``
    takes the server out at once until its health checks pass ``rise`` times
    again, ``fail-check`` counts one failed check, ``sudden-death`` leaves the
    server one failed check from down. A tripped server is not ready in
    release gates.
    """

    observe: Literal["layer4", "layer7"] = "layer7"
    error_limit: int = Field(default=10, ge=1, le=1000, strict=True)
    on_error: Literal["mark-down", "fail-check", "sudden-death"] = "mark-down"


class SlowServers(_Frozen):
    """Lower the weight of a server that answers much slower than the rest of its color.

    Each HAProxy node's Prism reads every server's response time over the last
    ``window_ms`` (from HAProxy's own moving average, with at least
    ``min_requests`` responses: a quiet server is never judged). A server whose
    mean is above ``factor`` x the median of its color's other servers, and
    above ``min_slow_ms``, loses ``step`` points of weight (``set server
    weight``), one step per window, down to ``floor`` percent; once it has
    been fast again for ``recover_after_ms`` it gets ``step`` back, one step
    per ``recover_after_ms``. A color's only server is never lowered.
    """

    enabled: bool = Field(default=False, strict=True)
    factor: float = Field(default=3.0, ge=1.5, le=100.0, strict=True)
    min_slow_ms: int = Field(default=50, ge=1, le=600_000, strict=True)
    window_ms: DurationMs = Field(default=10_000, ge=1000, le=600_000)
    min_requests: int = Field(default=20, ge=1, le=1_000_000, strict=True)
    step: int = Field(default=30, ge=1, le=99, strict=True)
    floor: int = Field(default=10, ge=1, le=99, strict=True)
    recover_after_ms: DurationMs = Field(default=10_000, ge=1000, le=3_600_000)


class DnsExport(_Frozen):
    """The DNS record that health-weighted DNS export (``prism dns-weights``) writes for
    the app: one weighted record per HAProxy node, pointing at that node."""

    name: Hostname
    ttl_ms: DurationMs = Field(default=60_000, ge=1000, le=86_400_000)

    @field_validator("ttl_ms")
    @classmethod
    def _whole_seconds(cls, value: int) -> int:
        if value % 1000:
            raise ValueError("a DNS TTL is a whole number of seconds")
        return value


class App(_Frozen):
    """One service behind one listener, with its colors."""

    name: Name
    bind: str | None = Field(default=None, json_schema_extra={"pattern": BIND_PATTERN})
    listener: Name | None = None
    host: Hostname | None = None
    #: TLS termination on the app's own bind (an app on a shared listener uses the listener's)
    tls: Tls | None = None
    stable: Name
    check: HealthCheck = HealthCheck()
    smoke: Smoke | None = None
    retries: int = Field(default=3, ge=0, le=10, strict=True)
    #: HAProxy's `retry-on`: empty keeps its default (conn-failure)
    retry_on: tuple[RetryCondition, ...] = Field(default=(), max_length=len(RETRY_ON))
    redispatch: bool = True
    #: a server that comes up (from the spec, `server add`, discovery) ramps up over this
    slowstart_ms: DurationMs = Field(default=0, ge=0, le=3_600_000)
    #: HAProxy's `http-reuse`; None keeps its default (safe)
    http_reuse: Literal["never", "safe", "aggressive", "always"] | None = None
    circuit: Circuit | None = None
    slow_servers: SlowServers = SlowServers()
    dns: DnsExport | None = None
    drain_timeout_ms: DurationMs = Field(default=30_000, ge=0, le=3_600_000)
    stickiness: Stickiness = Stickiness()
    pins: tuple[PinRule, ...] = Field(default=(), json_schema_extra={"maxItems": 8})
    maintenance: Maintenance = Maintenance()
    colors: tuple[Color, ...] = Field(json_schema_extra={"minItems": 1, "maxItems": 32})

    @field_validator("bind")
    @classmethod
    def _valid_bind(cls, value: str | None) -> str | None:
        if value is not None:
            split_bind(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> App:
        if (self.bind is None) == (self.listener is None):
            raise ValueError(f"app {self.name!r}: set exactly one of 'bind' or 'listener'")
        if self.listener is not None and self.host is None:
            raise ValueError(f"app {self.name!r}: an app on a shared listener needs a 'host'")
        if self.listener is not None and self.tls is not None:
            raise ValueError(
                f"app {self.name!r}: an app on a shared listener uses the listener's 'tls'"
            )
        if not self.colors:
            raise ValueError(f"app {self.name!r}: needs at least one color")
        color_names = [c.name for c in self.colors]
        if len(set(color_names)) != len(color_names):
            raise ValueError(f"app {self.name!r}: duplicate color names")
        if len(color_names) > 32:
            raise ValueError(f"app {self.name!r}: at most 32 colors")
        if self.stable not in color_names:
            raise ValueError(
                f"app {self.name!r}: stable color {self.stable!r} is not one of {color_names}"
            )
        if len(set(self.retry_on)) != len(self.retry_on):
            raise ValueError(f"app {self.name!r}: duplicate retry_on conditions")
        if "none" in self.retry_on and len(self.retry_on) > 1:
            raise ValueError(f"app {self.name!r}: retry_on 'none' must stand alone")
        if self.retry_on and self.retry_on != ("none",) and self.retries == 0:
            raise ValueError(f"app {self.name!r}: retry_on needs retries of 1 or more")
        rules = [r.name for r in self.pins]
        if len(set(rules)) != len(rules):
            raise ValueError(f"app {self.name!r}: duplicate pin rule names")
        if len(rules) > 8:
            raise ValueError(f"app {self.name!r}: at most 8 pin rules")
        return self

    def pin_rule(self, name: str | None) -> PinRule:
        """The named pin rule, or the only/first one when ``name`` is None."""
        from prism.errors import InvalidInput, NotFound

        if not self.pins:
            raise InvalidInput(
                f"app {self.name!r} has no pin rules",
                hint="add one under 'pins:' in prism.yaml, e.g. {name: tenant, source: header, "
                "key: X-Tenant}",
            )
        if name is None:
            return self.pins[0]
        for rule in self.pins:
            if rule.name == name:
                return rule
        raise NotFound(
            f"app {self.name!r} has no pin rule {name!r}",
            hint=f"rules are: {', '.join(r.name for r in self.pins)}",
        )

    def color(self, name: str) -> Color:
        for color in self.colors:
            if color.name == name:
                return color
        from prism.errors import NotFound

        raise NotFound(
            f"app {self.name!r} has no color {name!r}",
            hint=f"colors are: {', '.join(c.name for c in self.colors)}",
        )

    def has_color(self, name: str) -> bool:
        return any(c.name == name for c in self.colors)


class Spec(_Frozen):
    """Everything a ``prism.yaml`` declares."""

    listeners: tuple[Listener, ...] = Field(default=(), max_length=MAX_LISTENERS)
    apps: tuple[App, ...] = Field(default=(), max_length=MAX_APPS)

    @model_validator(mode="after")
    def _consistent(self) -> Spec:
        listener_names = [item.name for item in self.listeners]
        if len(set(listener_names)) != len(listener_names):
            raise ValueError("duplicate listener names")
        app_names = [app.name for app in self.apps]
        if len(set(app_names)) != len(app_names):
            raise ValueError("duplicate app names")
        binds: dict[int, str] = {}
        owners: list[tuple[str, str, Tls | None]] = [
            (f"listener {x.name!r}", x.bind, x.tls) for x in self.listeners
        ] + [(f"app {a.name!r}", a.bind, a.tls) for a in self.apps if a.bind is not None]
        for owner, bind, tls in owners:
            ports = [split_bind(bind)[1]]
            if tls is not None and tls.redirect_from is not None:
                ports.append(tls.redirect_from)
            for port in ports:
                if port in binds:
                    raise ValueError(f"{owner} and {binds[port]} both bind port {port}")
                binds[port] = owner
        hosts: set[tuple[str, str]] = set()
        for app in self.apps:
            if app.listener is None:
                continue
            if app.listener not in listener_names:
                raise ValueError(f"app {app.name!r}: no listener named {app.listener!r}")
            assert app.host is not None
            if (app.listener, app.host) in hosts:
                raise ValueError(f"two apps on listener {app.listener!r} match host {app.host!r}")
            hosts.add((app.listener, app.host))
        return self

    def app(self, name: str) -> App:
        for app in self.apps:
            if app.name == name:
                return app
        from prism.errors import NotFound

        raise NotFound(f"no app named {name[:64]!r}", hint="`prism status` lists the apps")


def backend_name(app: str, color: str) -> str:
    """The HAProxy backend holding ``color``'s servers of ``app`` (names exclude '.')."""
    return f"{app}.{color}"


def error_lines(errors: Iterable[Mapping[str, Any]]) -> list[str]:
    """pydantic's errors as ``where: what`` lines, ``where`` the dotted path to the field
    (a request's leading ``body`` left out: users never wrote it)."""
    lines = []
    for error in errors:
        loc = list(error.get("loc", ()))
        if loc[:1] == ["body"]:
            loc = loc[1:]
        where = ".".join(str(p) for p in loc) or "(top)"
        lines.append(f"{where}: {_message(error, loc)}")
    return lines


# What a pattern mismatch means, by the field's name: the pattern itself reads like noise.
_PATTERN_MEANS = {
    "address": "not HOST:PORT with a port of 1-65535",
    "bind": "not [HOST]:PORT with a port of 1-65535",
}


def _message(error: Mapping[str, Any], loc: list[Any]) -> str:
    if error.get("type") != "string_pattern_mismatch":
        return str(error.get("msg", "invalid"))
    field = str(loc[-1]) if loc else ""
    if field in _PATTERN_MEANS:
        return _PATTERN_MEANS[field]
    pattern = str(error.get("ctx", {}).get("pattern", ""))
    if 0 < len(pattern) <= 48:
        return f"should match {pattern}"
    return "not in the form the API's schema gives for it (see /api/v1/openapi.json)"


def parse_model(model: type[M], data: Any, *, source: str = "input") -> M:
    """Validate ``data`` into ``model``; turn pydantic's errors into one InvalidInput."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = error_lines(exc.errors(include_url=False, include_input=False))
        raise InvalidInput(
            f"{source} is not valid: " + "; ".join(problems[:10]),
            hint="fix the fields named above; nothing was changed",
            detail={"errors": problems},
        ) from None
