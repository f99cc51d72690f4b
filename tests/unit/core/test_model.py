"""The model accepts well-formed specs and rejects everything else with InvalidInput."""

from __future__ import annotations

from typing import Any

import pytest

from prism.core.model import Spec, error_lines, parse_duration_ms, parse_model
from prism.core.state import DesiredState, Routing
from prism.errors import InvalidInput


def spec_data(**app: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "shop",
        "bind": "127.0.0.1:8080",
        "stable": "blue",
        "colors": [
            {"name": "blue", "version": "v1", "servers": ["127.0.0.1:9001"]},
            {"name": "green", "version": "v2", "servers": ["127.0.0.1:9002"]},
        ],
    }
    base.update(app)
    return {"apps": [base]}


def test_shorthand_servers_get_names() -> None:
    """`host:port` strings become servers named s1, s2, ..."""
    spec = parse_model(Spec, spec_data())
    assert spec.app("shop").color("blue").servers[0].name == "s1"
    assert spec.app("shop").color("blue").servers[0].address == "127.0.0.1:9001"


@pytest.mark.parametrize(
    ("value", "ms"), [("500ms", 500), ("2s", 2000), ("1m", 60_000), (750, 750), ("15", 15)]
)
def test_durations(value: object, ms: int) -> None:
    """Durations accept ms, s, m and bare integers."""
    assert parse_duration_ms(value) == ms


HOSTILE = [
    "sh\nop",
    "shop;show",
    "shop<<",
    "sh op",
    "sh\\op",
    "sh\x00op",
    "shöp",
    "x" * 10_000,
    "shop\n",
    "",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_app_names_rejected(name: str) -> None:
    """Newline, ;, <<, space, backslash, NUL, non-ASCII, 10 kB: all rejected."""
    with pytest.raises(InvalidInput, match=r"apps\.0\.name: Value error, invalid name: must match"):
        parse_model(Spec, spec_data(name=name))


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_color_names_rejected(name: str) -> None:
    """The same hostile values are rejected as color names."""
    data = spec_data(stable=name)
    data["apps"][0]["colors"][0]["name"] = name
    with pytest.raises(InvalidInput, match=r"apps\.0\.colors\.0\.name: Value error, invalid name"):
        parse_model(Spec, data)


@pytest.mark.parametrize(
    ("field", "why"),
    [
        ({"check": {"path": "/health z"}}, r"check\.path: Value error, invalid HTTP path"),
        ({"check": {"path": "/h\nset map x"}}, r"check\.path: Value error, invalid HTTP path"),
        ({"check": {"path": "/#comment"}}, r"check\.path: Value error, invalid HTTP path"),
        ({"bind": "127.0.0.1:99999"}, r"invalid port in '127\.0\.0\.1:99999': expected 1\.\.65535"),
        ({"bind": "127.0.0.1:80;x"}, r"invalid port in '127\.0\.0\.1:80;x': expected 1\.\.65535"),
        ({"smoke": {"expect_body": "a\nb"}}, r"smoke\.expect_body: Value error, invalid text"),
    ],
)
def test_hostile_fields_rejected(field: dict[str, Any], why: str) -> None:
    """Check paths, binds and smoke bodies are checked as strictly as names."""
    with pytest.raises(InvalidInput, match=why):
        parse_model(Spec, spec_data(**field))


def test_hostile_version_and_server_rejected() -> None:
    """Version labels and server addresses cannot carry config syntax."""
    data = spec_data()
    data["apps"][0]["colors"][0]["version"] = "v1 # x"
    with pytest.raises(InvalidInput, match=r"colors\.0\.version: Value error, invalid version"):
        parse_model(Spec, data)
    data = spec_data()
    data["apps"][0]["colors"][0]["servers"] = ["127.0.0.1:9001\nserver evil 1.2.3.4:80"]
    with pytest.raises(InvalidInput, match=r"colors\.0\.servers: Value error, expected host:port"):
        parse_model(Spec, data)


def test_stable_must_be_a_color() -> None:
    """A stable color that is not declared is refused with a message naming it."""
    with pytest.raises(InvalidInput, match="stable color 'purple'"):
        parse_model(Spec, spec_data(stable="purple"))


def test_unknown_fields_rejected() -> None:
    """A typo in a field name is an error, not silently ignored."""
    with pytest.raises(InvalidInput, match="stabel"):
        parse_model(Spec, spec_data(stabel="blue"))


def test_port_collisions_rejected() -> None:
    """Two apps binding the same port are refused."""
    data = spec_data()
    data["apps"].append({**data["apps"][0], "name": "cart"})
    with pytest.raises(InvalidInput, match="both bind port 8080"):
        parse_model(Spec, data)


def test_shared_listener_needs_host() -> None:
    """An app on a shared listener must say which host it answers."""
    data = spec_data(bind=None, listener="web")
    data["listeners"] = [{"name": "web", "bind": "127.0.0.1:80"}]
    with pytest.raises(InvalidInput, match="needs a 'host'"):
        parse_model(Spec, data)
    data["apps"][0]["host"] = "shop.example.com"
    assert parse_model(Spec, data).app("shop").host == "shop.example.com"


def test_routing_defaults_to_stable() -> None:
    """An app without routing serves its stable color."""
    spec = parse_model(Spec, spec_data())
    state = DesiredState(spec=spec)
    assert state.routing_for(spec.app("shop")).active == "blue"
    state = DesiredState(spec=spec, routing={"shop": Routing.only("green", {"blue": 100})})
    assert state.routing_for(spec.app("shop")).active == "green"
    assert state.routing_for(spec.app("shop")).weights == {"green": 100}


def test_routing_rejects_inconsistent_layout() -> None:
    """A layout must give each color exactly its weight in buckets."""
    with pytest.raises(InvalidInput, match="layout gives 'blue' a share other than its weight"):
        parse_model(Routing, {"weights": {"blue": 50, "green": 50}, "layout": ["blue"] * 100})
    with pytest.raises(InvalidInput, match="weights must sum to 100, these sum to 60"):
        parse_model(Routing, {"weights": {"blue": 60}, "layout": ["blue"] * 60})
    moved = Routing.moved(Routing.only("blue"), {"blue": 70, "green": 30})
    assert moved.previous == {"blue": 100}
    assert moved.layout.count("green") == 30


@pytest.mark.parametrize(
    ("app", "why"),
    [
        ({"stickiness": {"source": "cookie"}}, "stickiness from a cookie needs its 'name'"),
        (
            {"stickiness": {"source": "header", "name": "X User"}},
            "stickiness: Value error, invalid header name",
        ),
        (
            {"stickiness": {"source": "header", "name": "X-User", "set_cookie": True}},
            "set_cookie needs stickiness from a cookie",
        ),
        ({"stickiness": {"source": "none", "name": "x"}}, "stickiness 'none' takes no name"),
        ({"pins": [{"name": "t", "source": "header"}]}, "pin rule 't' needs a header name"),
        (
            {"pins": [{"name": "t", "source": "header", "key": "X-Tenant\nx"}]},
            "pin rule 't' needs a header name",
        ),
        (
            {"pins": [{"name": "t", "source": "address", "key": "X"}]},
            "an address pin rule reads the client address and takes no key",
        ),
        (
            {"pins": [{"name": "t", "source": "query", "key": "a b"}]},
            "pin rule 't' needs a query name",
        ),
        (
            {"pins": [{"name": "t", "source": "header", "key": "A"}] * 2},
            "app 'shop': duplicate pin rule names",
        ),
        (
            {"maintenance": {"body": "x" * 9000}},
            r"maintenance\.body: String should have at most 8192 characters",
        ),
        (
            {"maintenance": {"status": 99}},
            r"maintenance\.status: Input should be greater than or equal to 200",
        ),
    ],
)
def test_hostile_or_inconsistent_routing_fields_rejected(app: dict[str, Any], why: str) -> None:
    """Stickiness, pin rules and maintenance pages are validated like names."""
    with pytest.raises(InvalidInput, match=why):
        parse_model(Spec, spec_data(**app))


def test_routing_fields_accepted() -> None:
    """Cookie stickiness with set_cookie, header/address pins and a page are accepted."""
    spec = parse_model(
        Spec,
        spec_data(
            stickiness={"source": "cookie", "name": "prism_uid", "set_cookie": True},
            pins=[
                {"name": "tenant", "source": "header", "key": "X-Tenant"},
                {"name": "office", "source": "address"},
            ],
            maintenance={"status": 503, "body": "<h1>Wartung läuft</h1>"},
        ),
    )
    app = spec.app("shop")
    assert app.pin_rule(None).name == "tenant"
    assert app.pin_rule("office").source == "address"


def test_load_balancing_settings_accepted() -> None:
    """Retries, warm-up, reuse, circuit, slow-server weights and DNS export parse, with
    YAML's numeric statuses read as HAProxy's words; every one is off by default."""
    plain = parse_model(Spec, spec_data()).app("shop")
    assert (plain.retry_on, plain.slowstart_ms, plain.http_reuse) == ((), 0, None)
    assert plain.circuit is None
    assert plain.slow_servers.enabled is False
    assert plain.dns is None
    app = parse_model(
        Spec,
        spec_data(
            retry_on=["all-retryable-errors", 404],
            slowstart_ms="5s",
            http_reuse="always",
            circuit={"error_limit": 3, "on_error": "fail-check"},
            slow_servers={"enabled": True, "factor": 2, "window_ms": "5s", "floor": 20},
            dns={"name": "shop.example.com", "ttl_ms": "30s"},
        ),
    ).app("shop")
    assert app.retry_on == ("all-retryable-errors", "404")
    assert app.slowstart_ms == 5000
    assert app.circuit is not None
    assert (app.circuit.observe, app.circuit.error_limit) == ("layer7", 3)
    assert (app.slow_servers.factor, app.slow_servers.window_ms) == (2.0, 5000)
    assert app.dns is not None
    assert app.dns.ttl_ms == 30_000


@pytest.mark.parametrize(
    ("app", "why"),
    [
        ({"retry_on": ["400"]}, r"retry_on\.0: Value error, unknown retry-on condition"),
        ({"retry_on": [505]}, r"retry_on\.0: Value error, unknown retry-on condition"),
        ({"retry_on": ["503 conn-failure"]}, r"retry_on\.0: Value error, unknown retry-on"),
        ({"retry_on": ["503\nserver x 1.2.3.4:80"]}, r"retry_on\.0: Value error, unknown"),
        ({"retry_on": [True]}, r"retry_on\.0: Value error, unknown retry-on condition"),
        ({"retry_on": ["none", "503"]}, "retry_on 'none' must stand alone"),
        ({"retry_on": ["503", "503"]}, "duplicate retry_on conditions"),
        ({"retry_on": ["503"], "retries": 0}, "retry_on needs retries of 1 or more"),
        ({"slowstart_ms": "2h"}, r"slowstart_ms: Input should be less than or equal to 3600000"),
        ({"slowstart_ms": "5 s"}, r"slowstart_ms: Value error, a duration is a number"),
        ({"http_reuse": "sometimes"}, r"http_reuse: Input should be 'never', 'safe'"),
        ({"circuit": {"on_error": "shutdown"}}, r"circuit\.on_error: Input should be"),
        ({"circuit": {"observe": "layer8"}}, r"circuit\.observe: Input should be"),
        ({"circuit": {"error_limit": 0}}, r"circuit\.error_limit: Input should be greater"),
        ({"circuit": {"error_limit": "10"}}, r"circuit\.error_limit: Input should be a valid"),
        ({"slow_servers": {"factor": 1.0}}, r"slow_servers\.factor: Input should be greater"),
        ({"slow_servers": {"factor": "3"}}, r"slow_servers\.factor: Input should be a valid"),
        ({"slow_servers": {"floor": 0}}, r"slow_servers\.floor: Input should be greater"),
        ({"slow_servers": {"step": 100}}, r"slow_servers\.step: Input should be less"),
        ({"slow_servers": {"window_ms": "100ms"}}, r"slow_servers\.window_ms: Input should be"),
        ({"slow_servers": {"min_requests": 0}}, r"slow_servers\.min_requests: Input should be"),
        ({"slow_servers": {"enable": True}}, r"slow_servers\.enable: Extra inputs"),
        ({"dns": {"name": "shop example.com"}}, r"dns\.name: Value error, invalid host name"),
        ({"dns": {"name": "a.b", "ttl_ms": 1500}}, "a DNS TTL is a whole number of seconds"),
    ],
)
def test_hostile_load_balancing_settings_rejected(app: dict[str, Any], why: str) -> None:
    """Every new setting is checked against what HAProxy 2.8 accepts, strictly typed."""
    with pytest.raises(InvalidInput, match=why):
        parse_model(Spec, spec_data(**app))


def test_pattern_mismatches_read_as_what_was_expected() -> None:
    """A long pattern is not shown (it reads like noise): addresses say HOST:PORT, short
    patterns are shown, anything else points at the schema."""
    errors = [
        {
            "type": "string_pattern_mismatch",
            "loc": ("body", "address"),
            "ctx": {"pattern": "x" * 90},
        },
        {
            "type": "string_pattern_mismatch",
            "loc": ("path", "name"),
            "ctx": {"pattern": "^[a-z]+$"},
        },
        {"type": "string_pattern_mismatch", "loc": ("query", "key"), "ctx": {"pattern": "y" * 90}},
        {"type": "missing", "loc": ("body", "to"), "msg": "Field required"},
    ]
    assert error_lines(errors) == [
        "address: not HOST:PORT with a port of 1-65535",
        "path.name: should match ^[a-z]+$",
        "query.key: not in the form the API's schema gives for it (see /api/v1/openapi.json)",
        "to: Field required",
    ]
