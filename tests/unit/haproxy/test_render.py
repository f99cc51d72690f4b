"""Unit tests of the pure renderer: golden outputs, determinism, maps, pins, pages, limits.

Golden cases live in ``golden/<case>/``: ``state.json`` is the input,
``haproxy.cfg``, ``maps/*.map`` and ``files/**`` (pages) the expected output. Regenerate them with
``PRISM_UPDATE_GOLDEN=1 pytest tests/unit/test_render.py`` and review the diff.
"""

from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from prism.core.buckets import layout_ranges
from prism.core.model import (
    App,
    Color,
    Discovery,
    Maintenance,
    PinRule,
    Server,
    Spec,
    Stickiness,
    parse_model,
)
from prism.core.state import DesiredState, Registration, Routing
from prism.errors import InvalidInput, NotFound
from prism.haproxy import commands as cmd
from prism.haproxy.changes import without_servers
from prism.haproxy.render import (
    RenderedFiles,
    RenderMemo,
    RenderSettings,
    derive_maxconn,
    maintenance_file,
    map_entries,
    pin_entries,
    pin_map_name,
    render,
    render_map,
    server_args,
    server_tuning,
)
from prism.node.paths import StatePaths
from tests.conftest import crowded_listener_spec

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "state.json").is_file())
PATHS = StatePaths(Path("/var/lib/prism"))
SETTINGS = RenderSettings(admin_port=8404, maxconn=9000, smoke_key="GoldenSmokeKey0123456789")


def load_state(case: str) -> DesiredState:
    data = json.loads((GOLDEN / case / "state.json").read_text())
    return parse_model(DesiredState, data, source=f"golden {case}")


def read_golden(case: str) -> RenderedFiles:
    maps_dir = GOLDEN / case / "maps"
    maps = {p.name: p.read_text() for p in sorted(maps_dir.glob("*.map"))}
    files_dir = GOLDEN / case / "files"
    files = {
        p.relative_to(files_dir).as_posix(): p.read_text(encoding="utf-8")
        for p in sorted(files_dir.rglob("*"))
        if p.is_file()
    }
    config = (GOLDEN / case / "haproxy.cfg").read_text()
    return RenderedFiles(config=config, maps=maps, files=files)


def write_golden(case: str, files: RenderedFiles) -> None:
    maps_dir, files_dir = GOLDEN / case / "maps", GOLDEN / case / "files"
    maps_dir.mkdir(parents=True, exist_ok=True)
    for stale in maps_dir.glob("*.map"):
        stale.unlink()
    for stale in files_dir.rglob("*"):
        if stale.is_file():
            stale.unlink()
    (GOLDEN / case / "haproxy.cfg").write_text(files.config)
    for name, text in files.maps.items():
        (maps_dir / name).write_text(text)
    for name, text in files.files.items():
        (files_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (files_dir / name).write_text(text, encoding="utf-8")


def frontend(config: str, name: str) -> list[str]:
    """The lines of one config section, without its header."""
    sections = config.split("\n\n")
    (section,) = [s for s in sections if s.startswith(f"frontend {name}\n")]
    return [line.strip() for line in section.splitlines()[1:]]


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str) -> None:
    """Each golden state renders exactly to its checked-in config and maps."""
    files = render(load_state(case), PATHS, SETTINGS)
    if os.environ.get("PRISM_UPDATE_GOLDEN") == "1":
        write_golden(case, files)
    expected = read_golden(case)
    assert files.config == expected.config
    assert dict(files.maps) == dict(expected.maps)
    assert dict(files.files) == dict(expected.files)


def test_golden_cases_present() -> None:
    """The required golden scenarios are checked in."""
    required = {"one_app_three_colors", "shared_listener", "color_without_servers", "rainbow"}
    assert required | {"rainbow_listener"} <= set(CASES)


@pytest.mark.parametrize("case", CASES)
def test_render_is_deterministic(case: str) -> None:
    """Rendering the same inputs twice gives identical files."""
    state = load_state(case)
    assert render(state, PATHS, SETTINGS) == render(state, PATHS, SETTINGS)


def test_render_ignores_declaration_order() -> None:
    """Shuffling apps, listeners, colors and servers in the spec changes nothing."""
    state = load_state("shared_listener")
    rng = random.Random(4)
    for _ in range(5):
        apps = []
        for app in state.spec.apps:
            colors = [
                c.model_copy(update={"servers": tuple(rng.sample(c.servers, len(c.servers)))})
                for c in app.colors
            ]
            apps.append(app.model_copy(update={"colors": tuple(rng.sample(colors, len(colors)))}))
        shuffled = state.model_copy(
            update={"spec": state.spec.model_copy(update={"apps": tuple(rng.sample(apps, 2))})}
        )
        assert render(shuffled, PATHS, SETTINGS) == render(state, PATHS, SETTINGS)


def test_memo_renders_what_render_does_through_a_sequence_of_changes() -> None:
    """Routing, pins and spec changes, and back: the memo always equals a fresh render,
    and while the spec object is the same it reuses the config it rendered."""
    base = load_state("rainbow_listener")
    memo = RenderMemo(PATHS, SETTINGS)
    api = base.spec.app("api")
    moved = base.model_copy(
        update={
            "routing": {**base.routing, "api": Routing.moved(base.routing_for(api), {"blue": 100})}
        }
    )
    pinned = moved.model_copy(update={"pins": {"api": {"canary": {"yes": "blue", "no": "green"}}}})
    unpinned = pinned.model_copy(update={"pins": {}})
    apps = tuple(
        a.model_copy(update={"retries": 7}) if a.name == "web" else a for a in base.spec.apps
    )
    respecced = unpinned.model_copy(update={"spec": base.spec.model_copy(update={"apps": apps})})
    only_api = tuple(a for a in base.spec.apps if a.name == "api")
    shrunk = base.model_copy(update={"spec": base.spec.model_copy(update={"apps": only_api})})
    configs = []
    for state in [base, moved, pinned, unpinned, respecced, shrunk, base]:
        files = memo.render(state)
        assert files == render(state, PATHS, SETTINGS)
        configs.append(files.config)
    assert configs[1] is configs[0]
    assert configs[3] is configs[0]
    assert configs[4] != configs[0]
    assert not any(name.startswith("web.") for name in memo.render(shrunk).maps)
    assert render(moved, PATHS, SETTINGS).maps != render(base, PATHS, SETTINGS).maps


def test_render_ignores_revision() -> None:
    """A new revision with the same spec and routing renders byte-equal files."""
    state = load_state("one_app_three_colors")
    bumped = state.model_copy(update={"revision": state.revision + 100})
    assert render(bumped, PATHS, SETTINGS) == render(state, PATHS, SETTINGS)


def test_render_depends_on_paths_only_through_paths() -> None:
    """Staging and live renders differ only in the state-dir prefix of their paths."""
    state = load_state("shared_listener")
    live = render(state, StatePaths(Path("/srv/prism")), SETTINGS)
    staging = render(state, StatePaths(Path("/srv/prism/staging")), SETTINGS)
    assert staging.config.replace("/srv/prism/staging/", "/srv/prism/") == live.config
    assert staging.maps == live.maps
    assert staging.files == live.files


def test_config_references_state_paths() -> None:
    """The config points at the admin socket, server-state file and map files of ``paths``."""
    config = render(load_state("shared_listener"), PATHS, SETTINGS).config
    assert f"stats socket {PATHS.admin_socket} mode 600 level admin" in config
    assert f"server-state-file {PATHS.server_state}" in config
    # No pins: nothing else sets the color before the weights lookup.
    assert f"map_int({PATHS.weights_map('api')}) if host_api\n" in config
    assert f"map_int({PATHS.weights_map('shop')}) if host_shop\n" in config
    assert f"file {PATHS.root}/pages/api.maintenance if host_api" in config


def test_global_has_no_daemon_or_user_switch() -> None:
    """The supervisor owns the process: no daemon, user, group or chroot lines."""
    config = render(load_state("one_app_three_colors"), PATHS, SETTINGS).config
    words = {line.split()[0] for line in config.splitlines() if line.strip()}
    assert not words & {"daemon", "user", "group", "chroot", "uid", "gid", "nbproc"}


@pytest.mark.parametrize("case", CASES)
def test_request_rules_precede_backend_rules(case: str) -> None:
    """In every frontend all http-request/http-response rules come before any use_backend."""
    config = render(load_state(case), PATHS, SETTINGS).config
    for section in config.split("\n\n"):
        kinds = [line.split()[0] for line in section.splitlines()[1:]]
        if "use_backend" in kinds:
            rules = [i for i, k in enumerate(kinds) if k in ("http-request", "http-response")]
            assert max(rules) < kinds.index("use_backend")


def test_backend_rules_order_smoke_chosen_fallback() -> None:
    """Per app: one smoke line, one chosen-color line, then stable, then others by name."""
    config = render(load_state("shared_listener"), PATHS, SETTINGS).config
    own = [
        line
        for line in frontend(config, "listener_web")
        if line.startswith("use_backend") and "host_api" in line
    ]
    assert own == [
        "use_backend api.%[req.hdr(x-prism-color,-1)] if host_api"
        " { req.hdr(x-prism-color,-1) -m str blue green } prism_smoke_key",
        "use_backend %[var(txn.prism_color)] if host_api"
        " { var(txn.prism_color) -m str api.blue api.green } { var(txn.prism_color),nbsrv gt 0 }",
        "use_backend api.green if host_api { nbsrv(api.green) gt 0 }",
        "use_backend api.blue if host_api { nbsrv(api.blue) gt 0 }",
        "use_backend api.green if host_api",
    ]


def test_request_rules_order_pins_bucket_weights() -> None:
    """Maintenance first, pins in rule order, then the bucket, then the weights lookup."""
    lines = frontend(render(load_state("rainbow"), PATHS, SETTINGS).config, "app_shop")
    requests = [line for line in lines if line.startswith("http-request")]
    assert requests[0].startswith("http-request return status 503 ")
    assert requests[0].endswith(" if !usable_shop !prism_smoke_key")
    pins = requests[1:4]
    assert [p.split()[2].split("(")[0] for p in pins] == ["req.hdr", "src,map_ip", "url_param"]
    # The first pin runs before anything can set the color; the others test it.
    assert " if " not in pins[0]
    assert all(p.endswith(" if !prism_color_set") for p in pins[1:])
    assert "shop.pins.tenant.map" in pins[0]
    assert "shop.pins.office.map" in pins[1]
    assert "shop.pins.beta.map" in pins[2]
    assert requests[-1] == (
        "http-request set-var(txn.prism_color) var(txn.prism_bucket),"
        f"map_int({PATHS.weights_map('shop')}) if !prism_color_set"
    )
    stickiness = {line.split()[1].split(")")[0] for line in requests[4:-1]}
    assert stickiness == {
        "set-var(txn.prism_bucket",
        "set-var(txn.prism_uid",
        "set-var-fmt(txn.prism_set_cookie",
    }


def test_usable_acl_ors_every_color() -> None:
    """The app's usable ACL has one nbsrv line per color; the page needs it false."""
    lines = frontend(render(load_state("rainbow"), PATHS, SETTINGS).config, "app_shop")
    assert [line for line in lines if line.startswith("acl usable_shop")] == [
        "acl usable_shop nbsrv(shop.blue) gt 0",
        "acl usable_shop nbsrv(shop.green) gt 0",
        "acl usable_shop nbsrv(shop.red) gt 0",
    ]


def test_smoke_needs_key_and_color() -> None:
    """The smoke line needs a color header naming one of the app's colors, then the key."""
    config = render(load_state("one_app_three_colors"), PATHS, SETTINGS).config
    lines = frontend(config, "app_shop")
    assert "acl prism_smoke_key req.hdr(x-prism-smoke-key) -m str GoldenSmokeKey0123456789" in lines
    smoke = [line for line in lines if "x-prism-color" in line]
    # The color header first: a request without it stops there, before the key is compared.
    assert smoke == [
        "use_backend shop.%[req.hdr(x-prism-color,-1)]"
        " if { req.hdr(x-prism-color,-1) -m str blue green red } prism_smoke_key"
    ]


def test_chosen_color_is_one_dynamic_rule() -> None:
    """The chosen color is used by one rule naming only the app's backends, if usable."""
    lines = frontend(render(load_state("one_app_three_colors"), PATHS, SETTINGS).config, "app_shop")
    backends = [line for line in lines if line.startswith(("use_backend", "default_backend"))]
    assert backends == [
        "use_backend shop.%[req.hdr(x-prism-color,-1)]"
        " if { req.hdr(x-prism-color,-1) -m str blue green red } prism_smoke_key",
        "use_backend %[var(txn.prism_color)]"
        " if { var(txn.prism_color) -m str shop.blue shop.green shop.red }"
        " { var(txn.prism_color),nbsrv gt 0 }",
        "use_backend shop.blue if { nbsrv(shop.blue) gt 0 }",
        "use_backend shop.green if { nbsrv(shop.green) gt 0 }",
        "use_backend shop.red if { nbsrv(shop.red) gt 0 }",
        "default_backend shop.blue",
    ]


def test_thirty_two_colors_fit_a_line() -> None:
    """The dynamic rules list every color on one line: 32 colors stay under 64 words."""
    colors = [f"c{i:02d}" for i in range(32)]
    state = parse_model(
        DesiredState,
        {
            "spec": {
                "apps": [
                    {
                        "name": "wide",
                        "bind": "127.0.0.1:8100",
                        "stable": "c00",
                        "colors": [{"name": c, "servers": []} for c in colors],
                    }
                ]
            }
        },
    )
    config = render(state, PATHS, SETTINGS).config
    assert max(len(line.split()) for line in config.splitlines()) < 64


def test_unmatched_host_gets_404() -> None:
    """On a shared listener a request matching no app's host gets a 404 reply."""
    lines = frontend(render(load_state("shared_listener"), PATHS, SETTINGS).config, "listener_web")
    (rule,) = [line for line in lines if "return status 404" in line]
    assert rule.endswith(" if !prism_known_host")
    known = [line.split(" -m str ")[1] for line in lines if "acl prism_known_host " in line]
    assert known == ["api.example.com", "shop.example.com"]


def test_no_line_names_every_app_of_a_crowded_listener() -> None:
    """HAProxy reads at most 64 words of a line: 200 apps on one listener stay under it."""
    spec = crowded_listener_spec(200)
    config = render(parse_model(DesiredState, {"spec": spec}), PATHS, SETTINGS).config
    assert max(len(line.split()) for line in config.splitlines()) < 64


def test_listener_without_apps_answers_404_to_all() -> None:
    """A listener no app uses still renders: it answers 404 unconditionally."""
    spec = {"listeners": [{"name": "idle", "bind": "127.0.0.1:8001"}]}
    state = parse_model(DesiredState, {"spec": spec})
    lines = frontend(render(state, PATHS, SETTINGS).config, "listener_idle")
    (rule,) = [line for line in lines if "return status 404" in line]
    assert rule.endswith('Host\\n"')
    assert not any(line.startswith("use_backend") for line in lines)


def test_backend_without_servers_renders_empty_pool() -> None:
    """A color with no servers renders a backend with no server lines."""
    config = render(load_state("color_without_servers"), PATHS, SETTINGS).config
    (section,) = [s for s in config.split("\n\n") if s.startswith("backend billing.canary\n")]
    assert not [line for line in section.splitlines() if line.strip().startswith("server ")]
    assert "http-response set-header X-Prism-Color canary" in section


def test_map_entries_default_to_stable() -> None:
    """An app without routing sends every bucket to its stable color."""
    state = load_state("color_without_servers")
    app = state.spec.app("billing")
    assert map_entries(state, app) == [("0:99", "billing.blue")]


def test_map_entries_follow_routing() -> None:
    """The weights map names the routing's only color, and follows a change of it."""
    state = load_state("one_app_three_colors")
    assert map_entries(state, state.spec.app("shop")) == [("0:99", "shop.green")]
    moved = state.model_copy(update={"routing": {"shop": Routing.only("red")}})
    assert map_entries(moved, moved.spec.app("shop")) == [("0:99", "shop.red")]


def test_map_entries_come_from_layout() -> None:
    """70/20/10 after a relayout keeps blue's buckets: ranges follow the layout, not name order."""
    state = load_state("rainbow")
    app = state.spec.app("shop")
    entries = map_entries(state, app)
    assert entries == [("0:69", "shop.blue"), ("70:79", "shop.red"), ("80:99", "shop.green")]
    layout = state.routing_for(app).layout
    assert entries == [(f"{lo}:{hi}", f"shop.{c}") for lo, hi, c in layout_ranges(layout)]


def test_map_entries_are_disjoint_and_cover_all_buckets() -> None:
    """For interleaved layouts too, ranges are in order, disjoint and cover 0..99 exactly."""
    state = load_state("rainbow")
    app = state.spec.app("shop")
    routing = state.routing_for(app)
    for weights in ({"blue": 10, "green": 45, "red": 45}, {"green": 1, "red": 99}, {"blue": 100}):
        routing = Routing.moved(routing, weights)
        changed = state.model_copy(update={"routing": {"shop": routing}})
        entries = map_entries(changed, app)
        covered = [n for key, _ in entries for n in range(*_span(key))]
        assert covered == list(range(100))
        for color, weight in weights.items():
            owned = sum(len(range(*_span(k))) for k, v in entries if v == f"shop.{color}")
            assert owned == weight


def _span(key: str) -> tuple[int, int]:
    low, high = key.split(":")
    return int(low), int(high) + 1


def test_pin_entries_sorted_with_backend_names() -> None:
    """Pins become key → backend lines sorted by key, per rule."""
    state = load_state("rainbow")
    app = state.spec.app("shop")
    assert pin_entries(state, app, "tenant") == [("acme", "shop.green"), ("globex", "shop.red")]
    assert pin_entries(state, app, app.pins[1]) == [
        ("10.0.0.0/8", "shop.green"),
        ("127.0.0.1/32", "shop.red"),
        ("2001:db8::/32", "shop.green"),
    ]


def test_pin_entries_empty_without_pins() -> None:
    """A rule with no pins has an empty map, and its file still renders (HAProxy needs it)."""
    state = load_state("rainbow")
    assert pin_entries(state, state.spec.app("shop"), "beta") == []
    files = render(state, PATHS, SETTINGS)
    assert files.maps[pin_map_name("shop", "beta")] == ""
    assert set(files.maps) == {
        "shop.weights.map",
        "shop.pins.tenant.map",
        "shop.pins.office.map",
        "shop.pins.beta.map",
    }


def test_pin_entries_unknown_rule() -> None:
    """Asking for a rule the app does not have raises NotFound."""
    state = load_state("rainbow")
    with pytest.raises(NotFound, match="app 'shop' has no pin rule 'nope'"):
        pin_entries(state, state.spec.app("shop"), "nope")


def test_pins_to_removed_colors_are_dropped() -> None:
    """A pin naming a color the app no longer has is left out of the map."""
    state = load_state("rainbow")
    pins = {"shop": {"tenant": {"acme": "green", "gone": "purple"}}}
    changed = state.model_copy(update={"pins": pins})
    assert pin_entries(changed, changed.spec.app("shop"), "tenant") == [("acme", "shop.green")]


@pytest.mark.parametrize(
    ("rule", "key", "refused"),
    [
        ("office", "10.0.0.0/8 x", "invalid address pin key "),
        ("office", "not-an-ip", "invalid address pin key "),
        ("office", "300.1.1.1", "invalid address pin key "),
        ("office", "fe80::1%eth0", "invalid address pin key "),
        ("tenant", "a b", "invalid header pin key: "),
        ("tenant", "a#b", "invalid header pin key: "),
        ("tenant", "a\nb", "invalid header pin key: "),
        ("tenant", "", "invalid header pin key: "),
    ],
)
def test_pin_entries_refuse_bad_keys(rule: str, key: str, refused: str) -> None:
    """A pin key that is not an address (address rules) or a safe token (others) is refused."""
    state = load_state("rainbow")
    changed = state.model_copy(update={"pins": {"shop": {rule: {key: "green"}}}})
    with pytest.raises(InvalidInput, match=re.escape(refused + repr(key))):
        render(changed, PATHS, SETTINGS)


@pytest.mark.parametrize("key", ["::1", "192.168.1.7", "2001:db8::/32", "10.1.2.3/8"])
def test_pin_entries_accept_addresses(key: str) -> None:
    """Address rules take IPv4/IPv6 addresses and CIDRs (host bits allowed, as map_ip does)."""
    state = load_state("rainbow")
    changed = state.model_copy(update={"pins": {"shop": {"office": {key: "red"}}}})
    assert pin_entries(changed, changed.spec.app("shop"), "office") == [(key, "shop.red")]


def _with_app(state: DesiredState, **changes: object) -> DesiredState:
    """``state`` with its first app changed (validated again)."""
    app = state.spec.apps[0].model_copy(update=changes)
    spec = state.spec.model_copy(update={"apps": (app, *state.spec.apps[1:])})
    return parse_model(DesiredState, state.model_copy(update={"spec": spec}).model_dump())


def test_pin_lookups_per_source() -> None:
    """Each pin source reads its own sample fetch; addresses use map_ip, the rest map_str."""
    state = load_state("rainbow")
    app = state.spec.app("shop")
    who = PinRule(name="who", source="cookie", key="user_id")
    changed = _with_app(state, pins=(*app.pins, who))
    config = render(changed, PATHS, SETTINGS).config
    maps = PATHS.maps
    assert f"req.hdr(X-Tenant),map_str({maps}/shop.pins.tenant.map)" in config
    assert f"src,map_ip({maps}/shop.pins.office.map)" in config
    assert f"url_param(beta),map_str({maps}/shop.pins.beta.map)" in config
    assert f"req.cook(user_id),map_str({maps}/shop.pins.who.map)" in config


def test_stickiness_none_uses_rand() -> None:
    """Without stickiness the bucket is rand(100) and no hash or cookie appears."""
    lines = frontend(render(load_state("one_app_three_colors"), PATHS, SETTINGS).config, "app_shop")
    assert "http-request set-var(txn.prism_bucket) rand(100)" in lines
    assert not any("xxh32" in line or "Set-Cookie" in line for line in lines)


def test_stickiness_header() -> None:
    """Header stickiness: rand(100), replaced by the header's xxh32 when the header is sent."""
    state = _with_app(
        load_state("one_app_three_colors"),
        stickiness=Stickiness(source="header", name="X-User"),
    )
    lines = frontend(render(state, PATHS, SETTINGS).config, "app_shop")
    buckets = [line for line in lines if "set-var(txn.prism_bucket)" in line]
    # set-var keeps the variable when its fetch fails, so no line looks the header up twice.
    assert buckets == [
        "http-request set-var(txn.prism_bucket) rand(100)",
        "http-request set-var(txn.prism_bucket) req.hdr(X-User),xxh32,mod(100)",
    ]
    assert not any("Set-Cookie" in line for line in lines)


def test_stickiness_cookie_with_set_cookie() -> None:
    """set_cookie: a cookie-less request gets a uuid as its key and a Set-Cookie for it."""
    lines = frontend(render(load_state("rainbow"), PATHS, SETTINGS).config, "app_shop")
    fresh = "if { var(txn.prism_uid) -m found }"
    sticky = [line for line in lines if "prism_uid" in line and line.startswith("http-request")]
    assert sticky == [
        "http-request set-var(txn.prism_bucket) req.cook(prism_uid),xxh32,mod(100)",
        "http-request set-var(txn.prism_uid) uuid if !{ var(txn.prism_bucket) -m found }",
        f"http-request set-var(txn.prism_bucket) var(txn.prism_uid),xxh32,mod(100) {fresh}",
        'http-request set-var-fmt(txn.prism_set_cookie) "prism_uid=%[var(txn.prism_uid)];'
        f' Path=/; Max-Age=86400; SameSite=Lax; HttpOnly" {fresh}',
    ]
    assert (
        "http-response add-header Set-Cookie %[var(txn.prism_set_cookie)]"
        " if { var(txn.prism_set_cookie) -m found }"
    ) in lines


def test_stickiness_cookie_without_set_cookie_sets_none() -> None:
    """Plain cookie stickiness hashes the cookie and never answers with Set-Cookie."""
    lines = frontend(
        render(load_state("rainbow_listener"), PATHS, SETTINGS).config, "listener_edge"
    )
    assert (
        "http-request set-var(txn.prism_bucket) req.cook(sid),xxh32,mod(100) if host_web"
    ) in lines
    assert not any("Set-Cookie" in line or "uuid" in line for line in lines)


@pytest.mark.parametrize("case", CASES)
def test_only_32_bit_hashes(case: str) -> None:
    """No 64-bit hash (signed: negative buckets) appears in any rendered config."""
    config = render(load_state(case), PATHS, SETTINGS).config
    assert "xxh3," not in config
    assert "xxh64" not in config


def test_maintenance_page_goes_to_a_file() -> None:
    """The page body is a file under pages/; the config names it by absolute path only."""
    body = "<h1>Zurück gleich — ünïcödé</h1>\n" + "x" * 8000
    state = _with_app(
        load_state("one_app_three_colors"),
        maintenance=Maintenance(status=502, content_type="text/plain", body=body),
    )
    files = render(state, PATHS, SETTINGS)
    assert dict(files.files) == {"pages/shop.maintenance": body}
    assert maintenance_file("shop") == "pages/shop.maintenance"
    assert "Zurück" not in files.config
    assert "xxxxxxxx" not in files.config
    assert (
        'http-request return status 502 content-type "text/plain; charset=utf-8"'
        f" file {PATHS.root}/pages/shop.maintenance if !usable_shop !prism_smoke_key"
    ) in frontend(files.config, "app_shop")


def test_maintenance_body_change_changes_config() -> None:
    """HAProxy reads the page only on load, so a new body must change the config (digest)."""
    state = load_state("one_app_three_colors")
    changed = _with_app(state, maintenance=Maintenance(body="back soon\n"))
    before, after = render(state, PATHS, SETTINGS), render(changed, PATHS, SETTINGS)
    assert before.config != after.config
    assert before.files != after.files
    assert without_servers(render(state, PATHS, SETTINGS).config) != without_servers(
        render(changed, PATHS, SETTINGS).config
    )


@pytest.mark.parametrize("status", [204, 304])
def test_maintenance_status_without_body_is_refused(status: int) -> None:
    """204/304 take no payload in HAProxy, so the model refuses them for a maintenance page."""
    pattern = r"needs a status that carries a body \(not 204/304\)"
    with pytest.raises(ValidationError, match=pattern):
        Maintenance(status=status)


def test_server_lines_are_self_contained() -> None:
    """Every server line carries check, inter, rise and fall itself, as runtime adds must."""
    config = render(load_state("rainbow"), PATHS, SETTINGS).config
    servers = [line.strip() for line in config.splitlines() if line.strip().startswith("server ")]
    assert len(servers) == 4
    assert all(line.endswith(" check inter 500ms rise 2 fall 1 weight 100") for line in servers)
    # Kept per backend only so the server-less config still shows check settings.
    assert config.count("default-server check inter 500ms rise 2 fall 1 weight 100") == 3
    assert config.count("balance roundrobin") == 3


def test_server_args_match_config_line() -> None:
    """server_args gives exactly what follows the server name in the config."""
    state = load_state("one_app_three_colors")
    app = state.spec.app("shop")
    server = app.color("green").servers[0]
    line = f"    server web-01 {server_args(app.check, server, server_tuning(app))}\n"
    assert line == "    server web-01 localhost:9003 check inter 2000ms rise 3 fall 2 weight 100\n"
    assert line in render(state, PATHS, SETTINGS).config


def tuned_state(**app: Any) -> DesiredState:
    """One app, two colors (one found by DNS SRV), with the given backend settings."""
    spec = Spec.model_validate(
        {
            "apps": [
                {
                    "name": "shop",
                    "bind": "127.0.0.1:8080",
                    "stable": "blue",
                    "colors": [
                        {"name": "blue", "servers": ["10.0.0.1:80", "10.0.0.2:80"]},
                        {
                            "name": "green",
                            "discovery": {
                                "srv": "_http._tcp.green.shop.service.consul",
                                "resolvers": ["127.0.0.1:8600"],
                                "slots": 2,
                            },
                        },
                    ],
                    **app,
                }
            ]
        }
    )
    return DesiredState(spec=spec)


TUNED = {
    "retry_on": ["conn-failure", "empty-response", 503],
    "slowstart_ms": "5s",
    "http_reuse": "aggressive",
    "circuit": {"error_limit": 5, "on_error": "sudden-death"},
}


def test_backend_settings_render_in_the_backend() -> None:
    """retry-on, redispatch and http-reuse are backend lines; without settings none appear."""
    config = render(tuned_state(**TUNED), PATHS, SETTINGS).config
    assert config.count("    retry-on conn-failure empty-response 503\n") == 2
    assert config.count("    option redispatch\n") == 2
    assert config.count("    http-reuse aggressive\n") == 2
    plain = render(tuned_state(), PATHS, SETTINGS).config
    assert "retry-on" not in plain
    assert "http-reuse" not in plain
    assert "slowstart" not in plain
    assert "observe" not in plain


def test_warm_up_and_circuit_on_every_server_line() -> None:
    """slowstart and the circuit breaker are on every server, template and default-server
    line, so a dynamic server (which inherits no default-server) has them too."""
    config = render(tuned_state(**TUNED), PATHS, SETTINGS).config
    words = " weight 100 slowstart 5000ms observe layer7 error-limit 5 on-error sudden-death"
    lines = [line.strip() for line in config.splitlines()]
    servers = [line for line in lines if line.startswith(("server ", "server-template "))]
    assert len(servers) == 3
    assert all(line.endswith(words) for line in servers)
    assert sum(1 for line in lines if line.startswith("default-server") and words in line) == 2


def test_changed_backend_settings_need_a_reload() -> None:
    """A new circuit or warm-up setting changes the server-less config (a reload), so no
    server is removed and re-added to take it."""
    for change in TUNED:
        before = bare(tuned_state())
        assert bare(tuned_state(**{change: TUNED[change]})) != before, change


def test_add_server_sends_the_config_line_words() -> None:
    """The runtime `add server` of a server carries exactly its config line's words."""
    state = tuned_state(**TUNED)
    app = state.spec.app("shop")
    server = app.color("blue").servers[0]
    tuning = server_tuning(app)
    add = cmd.add_server(
        "shop.blue",
        server.name,
        server.host,
        server.port,
        inter_ms=app.check.inter_ms,
        rise=app.check.rise,
        fall=app.check.fall,
        tuning=tuning,
    )
    assert add.text == f"add server shop.blue/s1 {server_args(app.check, server, tuning)}"
    assert (
        f"    server s1 {server_args(app.check, server, tuning)}\n"
        in render(state, PATHS, SETTINGS).config
    )


def bare(state: DesiredState) -> str:
    """The server-less form of ``state``'s rendered config."""
    return without_servers(render(state, PATHS, SETTINGS).config)


def test_config_without_servers_drops_only_server_lines() -> None:
    """The server-less form of a config is the config minus its server lines."""
    state = load_state("rainbow")
    full = render(state, PATHS, SETTINGS).config
    bare = without_servers(render(state, PATHS, SETTINGS).config)
    kept = "".join(
        line for line in full.splitlines(keepends=True) if not line.startswith("    server ")
    )
    assert bare.splitlines() == kept.splitlines()


def test_config_without_servers_ignores_server_changes() -> None:
    """Adding, removing or moving a server changes the config but not its server-less form."""
    state = load_state("rainbow")
    app = state.spec.app("shop")
    green = app.color("green")
    more = green.model_copy(
        update={"servers": (*green.servers, Server(name="s9", host="127.0.0.1", port=9999))}
    )
    colors = tuple(more if c.name == "green" else c for c in app.colors)
    changed = _with_app(state, colors=colors)
    assert render(changed, PATHS, SETTINGS).config != render(state, PATHS, SETTINGS).config
    assert without_servers(render(changed, PATHS, SETTINGS).config) == without_servers(
        render(state, PATHS, SETTINGS).config
    )
    checked = _with_app(state, check=app.check.model_copy(update={"rise": 5}))
    assert without_servers(render(checked, PATHS, SETTINGS).config) != without_servers(
        render(state, PATHS, SETTINGS).config
    )


def test_render_map_format() -> None:
    """Map text is one ``key value`` line per entry, newline-terminated."""
    assert render_map([("0:49", "a.blue"), ("50:99", "a.green")]) == (
        "0:49 a.blue\n50:99 a.green\n"
    )
    assert render_map([]) == ""


@pytest.mark.parametrize(
    ("bad", "refused"),
    [
        (("0:99", "a blue"), "refusing to write map value 'a blue'"),
        (("0:99 #", "a.blue"), "refusing to write map key '0:99 #'"),
        (("0:99", "a\nb"), "refusing to write map value 'a\\nb'"),
    ],
)
def test_render_map_refuses_unsafe_tokens(bad: tuple[str, str], refused: str) -> None:
    """A map key or value with whitespace or '#' is refused, not written."""
    with pytest.raises(InvalidInput, match=re.escape(refused)):
        render_map([bad])


def _with_server(state: DesiredState, server: Server) -> DesiredState:
    """``state`` with ``server`` forced into its first color, bypassing validation."""
    app = state.spec.apps[0]
    color = Color.model_construct(name=app.colors[0].name, version="v", servers=(server,))
    forced = App.model_construct(**{**dict(app), "colors": (color, *app.colors[1:])})
    spec = Spec.model_construct(listeners=state.spec.listeners, apps=(forced,))
    return DesiredState.model_construct(spec=spec, routing=state.routing, revision=0)


@pytest.mark.parametrize(
    ("name", "host", "refused"),
    [
        ("s1 backup", "127.0.0.1", "refusing to render server 's1 backup' into haproxy.cfg"),
        ("s1#x", "127.0.0.1", "refusing to render server 's1#x' into haproxy.cfg"),
        ("s1", "127.0.0.1\nbackend x", "refusing to render server host '127.0.0.1\\nbackend x'"),
        ("s1", "", "refusing to render server host '' into haproxy.cfg"),
    ],
)
def test_unvalidated_values_are_refused(name: str, host: str, refused: str) -> None:
    """A value that slipped past the model (space, '#', newline, empty) raises InvalidInput."""
    state = _with_server(
        load_state("color_without_servers"), Server.model_construct(name=name, host=host, port=80)
    )
    with pytest.raises(InvalidInput, match=re.escape(refused)):
        render(state, PATHS, SETTINGS)


BAD_TYPE: Any = "text/html\nx"


def _forced_app(state: DesiredState, **changes: object) -> DesiredState:
    """``state`` with its first app changed without validation (as a bug might)."""
    forced = App.model_construct(**{**dict(state.spec.apps[0]), **changes})
    spec = Spec.model_construct(listeners=state.spec.listeners, apps=(forced,))
    return DesiredState.model_construct(
        spec=spec, routing=state.routing, pins=state.pins, revision=0
    )


@pytest.mark.parametrize(
    ("changes", "refused"),
    [
        (
            {
                "stickiness": Stickiness.model_construct(
                    source="cookie", name="a%[b]", set_cookie=True
                )
            },
            "invalid cookie name: 'a%[b]'",
        ),
        (
            {"stickiness": Stickiness.model_construct(source="header", name="X-A),rand(")},
            "invalid header name: 'X-A),rand('",
        ),
        (
            {
                "stickiness": Stickiness.model_construct(
                    source="cookie", name='a"b', set_cookie=True
                )
            },
            "invalid cookie name: 'a\"b'",
        ),
        (
            {"pins": (PinRule.model_construct(name="t", source="header", key="X-T) if TRUE"),)},
            "invalid header name: 'X-T) if TRUE'",
        ),
        (
            {"pins": (PinRule.model_construct(name="t x", source="header", key="X-T"),)},
            "refusing to render rule 't x' into haproxy.cfg",
        ),
        (
            {"maintenance": Maintenance.model_construct(status=503, content_type=BAD_TYPE)},
            "refusing to render content type 'text/html\\nx'",
        ),
        (
            {"maintenance": Maintenance.model_construct(status=99, content_type="text/html")},
            "refusing to render maintenance status 99",
        ),
    ],
)
def test_unvalidated_rainbow_values_are_refused(changes: dict[str, object], refused: str) -> None:
    """Stickiness names, pin rules and page settings that slipped past the model are refused."""
    with pytest.raises(InvalidInput, match=re.escape(refused)):
        render(_forced_app(load_state("rainbow"), **changes), PATHS, SETTINGS)


def test_unsafe_state_dir_is_refused() -> None:
    """A state directory path with a space cannot reach the config."""
    pattern = "refusing to render admin socket path '/var/lib/my prism/"
    with pytest.raises(InvalidInput, match=pattern):
        render(load_state("shared_listener"), StatePaths(Path("/var/lib/my prism")), SETTINGS)


@pytest.mark.parametrize(
    ("changes", "refused"),
    [
        ({"smoke_key": "short"}, "invalid smoke key (use 16 to 64 letters and digits)"),
        ({"smoke_key": "has space in it 1234"}, "invalid smoke key (use 16 to 64"),
        ({"smoke_key": "x" * 65}, "invalid smoke key (use 16 to 64 letters and digits)"),
        ({"admin_port": 0}, "invalid admin port 0 (use 1..65535)"),
        ({"admin_port": 70000}, "invalid admin port 70000 (use 1..65535)"),
        ({"maxconn": 10}, "invalid maxconn 10 (use 100..1000000)"),
        ({"timeout_client": "30 s"}, "invalid timeout_client '30 s' (use an HAProxy time"),
        ({"hard_stop_after": "1y"}, "invalid hard_stop_after '1y' (use an HAProxy time"),
    ],
)
def test_settings_validate(changes: dict[str, object], refused: str) -> None:
    """RenderSettings refuses bad ports, limits, keys and durations."""
    base: dict[str, object] = {"admin_port": 8404, "maxconn": 1000, "smoke_key": "k" * 16}
    with pytest.raises(InvalidInput, match=re.escape(refused)):
        RenderSettings(**{**base, **changes})  # type: ignore[arg-type]


def test_settings_error_does_not_echo_key() -> None:
    """A rejected smoke key is not repeated in the error message."""
    with pytest.raises(InvalidInput, match=r"^invalid smoke key \(use 16 to 64") as caught:
        RenderSettings(admin_port=8404, maxconn=1000, smoke_key="secret-but-bad!!!")
    assert "secret-but-bad" not in str(caught.value)


def test_derive_maxconn_fits_this_box() -> None:
    """20,000 fds give well under 10,000 connections with room for the reserve."""
    maxconn = derive_maxconn(20_000)
    assert maxconn == 9_000
    assert 2 * maxconn + 1_000 <= 20_000


@pytest.mark.parametrize(
    ("nofile", "expected"),
    [(1, 100), (256, 100), (1_024, 384), (4_096, 1_843), (65_536, 29_491), (10**9, 1_000_000)],
)
def test_derive_maxconn_table(nofile: int, expected: int) -> None:
    """derive_maxconn follows (nofile - max(256, nofile // 10)) // 2, clamped to 100..1e6."""
    assert derive_maxconn(nofile) == expected


def test_derive_maxconn_is_monotonic() -> None:
    """More file descriptors never yield a smaller maxconn."""
    values = [derive_maxconn(n) for n in range(1, 50_000, 97)]
    assert values == sorted(values)


@pytest.mark.parametrize("nofile", [0, -5])
def test_derive_maxconn_rejects_nonsense(nofile: int) -> None:
    """A non-positive fd limit is an error, not a silent default."""
    with pytest.raises(InvalidInput, match=f"^invalid file-descriptor limit {nofile}$"):
        derive_maxconn(nofile)


DISCOVERY = {"srv": "_http._tcp.blue.shop.service.consul", "resolvers": ["127.0.0.1:8600"]}


def test_dns_discovery_renders_resolvers_and_server_slots() -> None:
    """A color with an SRV record gets its own resolvers section and a server-template whose
    slots keep their last address across reloads; its declared servers stay as they are."""
    state = load_state("one_app_three_colors")
    app = state.spec.app("shop")
    blue = app.color("blue").model_copy(update={"discovery": Discovery(**DISCOVERY, slots=20)})
    colors = tuple(blue if c.name == "blue" else c for c in app.colors)
    config = render(_with_app(state, colors=colors), PATHS, SETTINGS).config
    section = config.split("resolvers prism_shop_blue\n", 1)[1].split("\n\n", 1)[0]
    assert "    nameserver ns1 127.0.0.1:8600" in section
    assert "    accepted_payload_size 8192" in section
    assert (
        "    server-template srv 20 _http._tcp.blue.shop.service.consul resolvers "
        "prism_shop_blue init-addr last,none check inter 2000ms rise 3 fall 2"
    ) in config
    assert config.count("server-template") == 1
    assert "resolvers prism_shop_green" not in config


@pytest.mark.parametrize(
    ("discovery", "match"),
    [
        ({**DISCOVERY, "srv": "shop.service.consul"}, "invalid SRV record name"),
        ({**DISCOVERY, "srv": "_http._tcp.shop;reload"}, "invalid SRV record name"),
        ({**DISCOVERY, "resolvers": ["dns.example:53"]}, "IPv4 address:port"),
        ({**DISCOVERY, "resolvers": []}, "at least 1 item"),
        ({**DISCOVERY, "slots": 0}, "greater than or equal to 1"),
        ({**DISCOVERY, "slots": 101}, "less than or equal to 100"),
    ],
)
def test_hostile_discovery_is_refused(discovery: dict[str, object], match: str) -> None:
    """Record names, resolvers and slot counts are checked before anything renders."""
    with pytest.raises(InvalidInput, match=match):
        parse_model(Discovery, discovery, source="discovery")


def test_slot_names_are_reserved() -> None:
    """A declared server may not take a discovery slot's name (srv1, srv2 ...)."""
    with pytest.raises(InvalidInput, match="reserved for DNS discovery slots"):
        parse_model(Color, {"name": "blue", "servers": [{"name": "srv3", "host": "h", "port": 1}]})


def test_registered_servers_are_served_but_not_declared() -> None:
    """A registration adds a server line to its color's backend; the declared spec (what
    `prism config` shows and `prism apply` replaces) does not change."""
    state = load_state("one_app_three_colors")
    registered = Registration(host="10.0.0.9", port=8080, ttl_ms=10_000, lease=7, by="ci", at=1.0)
    joined = state.model_copy(update={"registrations": {"shop": {"blue": {"r1": registered}}}})
    config = render(joined, PATHS, SETTINGS).config
    assert "    server r1 10.0.0.9:8080 check inter 2000ms rise 3 fall 2" in config
    assert [s.name for s in joined.spec.app("shop").color("blue").servers] == [
        s.name for s in state.spec.app("shop").color("blue").servers
    ]
    assert "r1" in [s.name for s in joined.served.app("shop").color("blue").servers]
    assert render(state, PATHS, SETTINGS).config != config
