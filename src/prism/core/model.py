"""The desired-state model: what Prism should make HAProxy do.

One set of frozen pydantic models validates every way state comes in: the
``prism.yaml`` file, the REST API and the store. A model that exists is valid:
names match :mod:`prism.names`, references resolve, ports don't collide.
Nothing here does I/O.

Shape::

    Spec
    ├── listeners: Listener(name, bind)            shared listeners, host-matched
    └── apps: App
        ├── bind | listener + host                 where its traffic comes in
        ├── stable                                 the color serving by default
        ├── check: HealthCheck                     how HAProxy checks servers
        ├── smoke: Smoke | None                    request sent before a cutover
        └── colors: Color(name, version, servers: Server(name, host, port))

    Routing(active, previous)                      per app, changed by releases
    DesiredState(spec, routing, revision)
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
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from prism import names
from prism.errors import InvalidInput

__all__ = [
    "BIND_PATTERN",
    "HOSTPORT_PATTERN",
    "MAX_APPS",
    "MAX_LISTENERS",
    "App",
    "Color",
    "DesiredState",
    "DurationMs",
    "HealthCheck",
    "Listener",
    "Maintenance",
    "PinRule",
    "Routing",
    "Server",
    "Smoke",
    "Spec",
    "Stickiness",
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


class Color(_Frozen):
    """One version of an app, with its own backend of servers."""

    name: Name
    version: VersionLabel = "unversioned"
    servers: Annotated[
        tuple[Server, ...],
        BeforeValidator(_servers_from_shorthand),
        Field(json_schema_extra=_servers_schema),
    ] = ()

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
        return servers

    def server(self, name: str) -> Server:
        for server in self.servers:
            if server.name == name:
                return server
        raise KeyError(name)


class Listener(_Frozen):
    """A shared listener; apps on it are told apart by their ``host``."""

    name: Name
    bind: str = Field(json_schema_extra={"pattern": BIND_PATTERN})

    @field_validator("bind")
    @classmethod
    def _valid_bind(cls, value: str) -> str:
        split_bind(value)
        return value


class App(_Frozen):
    """One service behind one listener, with its colors."""

    name: Name
    bind: str | None = Field(default=None, json_schema_extra={"pattern": BIND_PATTERN})
    listener: Name | None = None
    host: Hostname | None = None
    stable: Name
    check: HealthCheck = HealthCheck()
    smoke: Smoke | None = None
    retries: int = Field(default=3, ge=0, le=10, strict=True)
    redispatch: bool = True
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
        for owner, bind in [(f"listener {x.name!r}", x.bind) for x in self.listeners] + [
            (f"app {a.name!r}", a.bind) for a in self.apps if a.bind is not None
        ]:
            _, port = split_bind(bind)
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


class Routing(_Frozen):
    """How an app's traffic splits across its colors now.

    ``weights`` (zero weights omitted) sum to 100; ``layout`` gives the color of
    each bucket 0..99 and always matches the weights (see :mod:`prism.core.buckets`).
    ``previous`` holds the weights before the last release, for rollback.
    """

    weights: dict[Name, StrictInt]
    layout: tuple[Name, ...]
    previous: dict[Name, StrictInt] | None = None

    @field_validator("weights", "previous")
    @classmethod
    def _normal_weights(cls, value: dict[str, int] | None) -> dict[str, int] | None:
        """Sum to 100; stored sorted by color, without zero weights."""
        from prism.core.buckets import check_weights

        return None if value is None else check_weights(value)

    @model_validator(mode="after")
    def _consistent(self) -> Routing:
        from prism.core.buckets import BUCKETS

        if len(self.layout) != BUCKETS:
            raise ValueError("a layout has exactly 100 buckets")
        for color, weight in self.weights.items():
            if self.layout.count(color) != weight:
                raise ValueError(f"layout gives {color!r} a share other than its weight")
        return self

    @classmethod
    def only(cls, color: str, previous: dict[str, int] | None = None) -> Routing:
        """All traffic to one color."""
        return cls(weights={color: 100}, layout=(color,) * 100, previous=previous)

    @classmethod
    def moved(
        cls, current: Routing | None, weights: dict[str, int], *, keep_previous: bool = False
    ) -> Routing:
        """New weights with the fewest buckets moved from ``current``."""
        from prism.core.buckets import check_weights, relayout

        clean = check_weights(weights)
        previous = None
        if current is not None:
            previous = current.previous if keep_previous else current.weights
        return cls(
            weights=clean,
            layout=relayout(current.layout if current else None, clean),
            previous=previous,
        )

    @property
    def active(self) -> str:
        """The color with the largest share (ties: first by name)."""
        return max(sorted(self.weights), key=lambda c: self.weights[c])

    @property
    def colors(self) -> frozenset[str]:
        return frozenset(self.weights)


class DesiredState(_Frozen):
    """A spec, the routing of each of its apps, and the store revision it was read at."""

    spec: Spec = Spec()
    routing: dict[str, Routing] = {}
    #: app -> pin rule -> key -> color
    pins: dict[str, dict[str, dict[str, str]]] = {}
    revision: int = 0

    @model_validator(mode="after")
    def _routing_matches(self) -> DesiredState:
        for app in self.spec.apps:
            routing = self.routing.get(app.name)
            if routing is not None:
                unknown = [c for c in routing.weights if not app.has_color(c)]
                if unknown:
                    raise ValueError(f"app {app.name!r}: weights name unknown colors {unknown}")
        return self

    def routing_for(self, app: App) -> Routing:
        """The app's routing, defaulting to all traffic on its stable color."""
        routing = self.routing.get(app.name)
        if routing is None or not all(app.has_color(c) for c in routing.weights):
            return Routing.only(app.stable)
        return routing

    def pins_for(self, app: App) -> dict[str, dict[str, str]]:
        """The app's pins per rule, only for rules and colors that still exist."""
        rules = {r.name for r in app.pins}
        return {
            rule: {k: c for k, c in keys.items() if app.has_color(c)}
            for rule, keys in self.pins.get(app.name, {}).items()
            if rule in rules
        }


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
        lines.append(f"{where}: {error.get('msg', 'invalid')}")
    return lines


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
