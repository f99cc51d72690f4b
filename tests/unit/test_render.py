"""Unit tests of the pure renderer: golden outputs, determinism, maps, limits.

Golden cases live in ``golden/<case>/``: ``state.json`` is the input,
``haproxy.cfg`` and ``maps/*.map`` the expected output. Regenerate them with
``PRISM_UPDATE_GOLDEN=1 pytest tests/unit/test_render.py`` and review the diff.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from prism.errors import InvalidInput
from prism.model import App, Color, DesiredState, Routing, Server, Spec, parse_model
from prism.paths import StatePaths
from prism.render import (
    RenderedFiles,
    RenderSettings,
    bucket_ranges,
    derive_maxconn,
    map_entries,
    render,
    render_map,
)

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
    return RenderedFiles(config=(GOLDEN / case / "haproxy.cfg").read_text(), maps=maps)


def write_golden(case: str, files: RenderedFiles) -> None:
    maps_dir = GOLDEN / case / "maps"
    maps_dir.mkdir(parents=True, exist_ok=True)
    for stale in maps_dir.glob("*.map"):
        stale.unlink()
    (GOLDEN / case / "haproxy.cfg").write_text(files.config)
    for name, text in files.maps.items():
        (maps_dir / name).write_text(text)


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


def test_golden_cases_present() -> None:
    """The three required golden scenarios are checked in."""
    assert {"one_app_three_colors", "shared_listener", "color_without_servers"} <= set(CASES)


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


def test_config_references_state_paths() -> None:
    """The config points at the admin socket, server-state file and map files of ``paths``."""
    config = render(load_state("shared_listener"), PATHS, SETTINGS).config
    assert f"stats socket {PATHS.admin_socket} mode 600 level admin" in config
    assert f"server-state-file {PATHS.server_state}" in config
    assert f"map_int({PATHS.weights_map('api')},api.green)" in config
    assert f"map_int({PATHS.weights_map('shop')},shop.blue)" in config


def test_global_has_no_daemon_or_user_switch() -> None:
    """The supervisor owns the process: no daemon, user, group or chroot lines."""
    config = render(load_state("one_app_three_colors"), PATHS, SETTINGS).config
    words = {line.split()[0] for line in config.splitlines() if line.strip()}
    assert not words & {"daemon", "user", "group", "chroot", "uid", "gid", "nbproc"}


def test_smoke_rules_precede_weighted_rule() -> None:
    """Every smoke use_backend line comes before the weighted one, and all http-request first."""
    config = render(load_state("shared_listener"), PATHS, SETTINGS).config
    lines = frontend(config, "listener_web")
    kinds = [line.split()[0] for line in lines]
    last_request = max(i for i, k in enumerate(kinds) if k == "http-request")
    assert last_request < kinds.index("use_backend")
    for app in ("api", "shop"):
        own = [line for line in lines if line.startswith("use_backend") and f"host_{app}" in line]
        weighted = [i for i, line in enumerate(own) if "map_int" in line]
        smoke = [i for i, line in enumerate(own) if "prism_smoke_key" in line]
        assert len(smoke) == 2
        assert weighted == [len(smoke)]


def test_smoke_needs_key_and_color() -> None:
    """A smoke line requires the secret-key ACL and the exact color header together."""
    config = render(load_state("one_app_three_colors"), PATHS, SETTINGS).config
    lines = frontend(config, "app_shop")
    assert "acl prism_smoke_key req.hdr(x-prism-smoke-key) -m str GoldenSmokeKey0123456789" in lines
    assert "use_backend shop.red if prism_smoke_key { req.hdr(x-prism-color) -m str red }" in lines


def test_unmatched_host_gets_404() -> None:
    """On a shared listener a request matching no app's host gets a 404 reply."""
    lines = frontend(render(load_state("shared_listener"), PATHS, SETTINGS).config, "listener_web")
    (rule,) = [line for line in lines if "return status 404" in line]
    assert rule.endswith(" if !host_api !host_shop")


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


def test_map_entries_follow_active_color() -> None:
    """The weights map names the routing's active color."""
    state = load_state("one_app_three_colors")
    assert map_entries(state, state.spec.app("shop")) == [("0:99", "shop.green")]
    moved = state.model_copy(update={"routing": {"shop": Routing(active="red")}})
    assert map_entries(moved, moved.spec.app("shop")) == [("0:99", "shop.red")]


def test_bucket_ranges_are_disjoint_and_cover_all_buckets() -> None:
    """Weights become adjacent, non-overlapping ranges covering 0..99; zero weights vanish."""
    entries = bucket_ranges([("a.blue", 70), ("a.green", 0), ("a.red", 25), ("a.x", 5)])
    assert entries == [("0:69", "a.blue"), ("70:94", "a.red"), ("95:99", "a.x")]
    covered = [n for key, _ in entries for n in range(*_span(key))]
    assert covered == list(range(100))


def _span(key: str) -> tuple[int, int]:
    low, high = key.split(":")
    return int(low), int(high) + 1


@pytest.mark.parametrize(
    "weights", [[("a", 50)], [("a", 60), ("b", 60)], [("a", 101), ("b", -1)], [("a", True)]]
)
def test_bucket_ranges_reject_bad_weights(weights: list[tuple[str, int]]) -> None:
    """Weights that are out of range or do not sum to 100 are refused."""
    with pytest.raises(InvalidInput):
        bucket_ranges(weights)


def test_render_map_format() -> None:
    """Map text is one ``key value`` line per entry, newline-terminated."""
    assert render_map([("0:49", "a.blue"), ("50:99", "a.green")]) == (
        "0:49 a.blue\n50:99 a.green\n"
    )
    assert render_map([]) == ""


@pytest.mark.parametrize("bad", [("0:99", "a blue"), ("0:99 #", "a.blue"), ("0:99", "a\nb")])
def test_render_map_refuses_unsafe_tokens(bad: tuple[str, str]) -> None:
    """A map key or value with whitespace or '#' is refused, not written."""
    with pytest.raises(InvalidInput):
        render_map([bad])


def _with_server(state: DesiredState, server: Server) -> DesiredState:
    """``state`` with ``server`` forced into its first color, bypassing validation."""
    app = state.spec.apps[0]
    color = Color.model_construct(name=app.colors[0].name, version="v", servers=(server,))
    forced = App.model_construct(**{**dict(app), "colors": (color, *app.colors[1:])})
    spec = Spec.model_construct(listeners=state.spec.listeners, apps=(forced,))
    return DesiredState.model_construct(spec=spec, routing=state.routing, revision=0)


@pytest.mark.parametrize(
    ("name", "host"),
    [("s1 backup", "127.0.0.1"), ("s1#x", "127.0.0.1"), ("s1", "127.0.0.1\nbackend x"), ("s1", "")],
)
def test_unvalidated_values_are_refused(name: str, host: str) -> None:
    """A value that slipped past the model (space, '#', newline, empty) raises InvalidInput."""
    state = _with_server(
        load_state("color_without_servers"), Server.model_construct(name=name, host=host, port=80)
    )
    with pytest.raises(InvalidInput):
        render(state, PATHS, SETTINGS)


def test_unsafe_state_dir_is_refused() -> None:
    """A state directory path with a space cannot reach the config."""
    with pytest.raises(InvalidInput):
        render(load_state("shared_listener"), StatePaths(Path("/var/lib/my prism")), SETTINGS)


@pytest.mark.parametrize(
    "changes",
    [
        {"smoke_key": "short"},
        {"smoke_key": "has space in it 1234"},
        {"smoke_key": "x" * 65},
        {"admin_port": 0},
        {"admin_port": 70000},
        {"maxconn": 10},
        {"timeout_client": "30 s"},
        {"hard_stop_after": "1y"},
    ],
)
def test_settings_validate(changes: dict[str, object]) -> None:
    """RenderSettings refuses bad ports, limits, keys and durations."""
    base: dict[str, object] = {"admin_port": 8404, "maxconn": 1000, "smoke_key": "k" * 16}
    with pytest.raises(InvalidInput):
        RenderSettings(**{**base, **changes})  # type: ignore[arg-type]


def test_settings_error_does_not_echo_key() -> None:
    """A rejected smoke key is not repeated in the error message."""
    with pytest.raises(InvalidInput) as caught:
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
    with pytest.raises(InvalidInput):
        derive_maxconn(nofile)
