"""Pure core: store codec, apply planning, gates and the release phase table."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from prism.core.keys import decode_state, diff_spec, dump, routing_key, spec_ops
from prism.core.model import DesiredState, Routing, Spec, parse_model
from prism.errors import IllegalTransition
from prism.haproxy.changes import (
    MapAdd,
    MapDel,
    MapReplace,
    MapSet,
    ServerChange,
    map_change,
    parse_map_text,
    plan,
    server_diff,
)
from prism.release.gates import health_gate, in_use, smoke_gate
from prism.release.phases import TERMINAL, TRANSITIONS, Phase, advance
from prism.types import Delete, Entry, Put


def make_spec(colors: tuple[str, ...] = ("blue", "green")) -> Spec:
    return parse_model(
        Spec,
        {
            "apps": [
                {
                    "name": "shop",
                    "bind": "127.0.0.1:8080",
                    "stable": colors[0],
                    "colors": [{"name": c, "servers": ["127.0.0.1:9001"]} for c in colors],
                }
            ]
        },
    )


def test_spec_round_trips_through_entries() -> None:
    """Encoding a spec as entries and decoding it gives the same spec and routing."""
    spec = make_spec()
    apps = [Entry("spec/apps/shop", dump(spec.apps[0]), 1, 3)]
    routing = [Entry("routing/shop", dump(Routing.only("green", {"blue": 100})), 2, 4)]
    pins = [Entry("pins/shop/net/10.0.0.0/8", dump({"color": "green"}), 3, 3)]
    state = decode_state([], apps, routing, 4, pins)
    assert state.spec == spec
    assert state.routing["shop"].active == "green"
    assert state.pins == {"shop": {"net": {"10.0.0.0/8": "green"}}}


def test_reapply_keeps_routing_but_drops_it_with_its_color() -> None:
    """Re-applying a file never undoes a release; removing the active color resets routing."""
    old = DesiredState(spec=make_spec(), routing={"shop": Routing.only("green", {"blue": 100})})
    assert spec_ops(old, make_spec()) == []
    ops = spec_ops(old, make_spec(("blue", "red")))
    assert Delete(routing_key("shop")) in ops
    assert any(isinstance(op, Put) and op.key == "spec/apps/shop" for op in ops)


def test_diff_spec_names_changes() -> None:
    """diff_spec reports added, removed and changed apps by key."""
    change = diff_spec(make_spec(), make_spec(("blue", "red")))
    assert change.changed == ("spec/apps/shop",)
    assert diff_spec(Spec(), make_spec()).added == ("spec/apps/shop",)
    assert diff_spec(make_spec(), Spec()).removed == ("spec/apps/shop",)


def test_single_value_change_is_set_map() -> None:
    """A blue/green flip of one key is a `set map`, anything else a transaction."""
    assert map_change([("0:99", "shop.blue")], [("0:99", "shop.green")]) == MapSet(
        "0:99", "shop.green"
    )
    assert map_change([("0:99", "a")], [("0:99", "a")]) is None
    change = map_change([("0:99", "a")], [("0:49", "a"), ("50:99", "b")])
    assert change == MapReplace((("0:49", "a"), ("50:99", "b")))


def test_same_entries_in_another_order_need_no_change() -> None:
    """HAProxy appends added keys; the sorted file holds the same map."""
    assert map_change([("b", "y"), ("a", "x")], [("a", "x"), ("b", "y")]) is None
    assert map_change([("b", "y"), ("a", "x")], [("a", "z"), ("b", "y")]) == MapSet("a", "z")


def test_single_key_added_or_removed_is_add_or_del_map() -> None:
    """A new pin is one `add map`, a removed one one `del map`; more is a transaction."""
    assert map_change([("a", "x")], [("a", "x"), ("b", "y")]) == MapAdd("b", "y")
    assert map_change([("a", "x"), ("b", "y")], [("a", "x")]) == MapDel("b")
    assert isinstance(map_change([("a", "x")], [("b", "y"), ("c", "z")]), MapReplace)
    assert map_change([], [("a", "x")]) == MapAdd("a", "x")


CONFIG = """global
    maxconn 100

backend shop.blue
    balance roundrobin
    server s1 127.0.0.1:9001 check inter 1000ms rise 2 fall 3

backend shop.green
    balance roundrobin
    server s1 127.0.0.1:9002 check inter 1000ms rise 2 fall 3
"""


def test_server_only_changes_are_runtime_operations() -> None:
    """Configs equal but for server lines plan server adds/removes, not a reload."""
    new = CONFIG.replace(
        "    server s1 127.0.0.1:9002 check inter 1000ms rise 2 fall 3\n",
        "    server s1 127.0.0.1:9002 check inter 1000ms rise 2 fall 3\n"
        "    server s2 127.0.0.1:9003 check inter 1000ms rise 2 fall 3\n",
    ).replace("127.0.0.1:9001", "127.0.0.1:9011")
    p = plan(CONFIG, {}, new, {}, servers_only=True)
    assert not p.reload
    assert p.server_changes == (
        ServerChange("shop.blue", ("s1",), ("s1",)),
        ServerChange("shop.green", ("s2",), ()),
    )
    assert plan(CONFIG, {}, new, {}, servers_only=False).reload
    assert server_diff(CONFIG, CONFIG) == ()


def test_plan_reloads_only_on_config_change() -> None:
    """A changed config means reload; equal config with a changed map means runtime ops."""
    maps = {"shop.weights.map": "0:99 shop.green\n"}
    assert plan("old", {}, "new", maps).reload
    p = plan("cfg", {"shop.weights.map": [("0:99", "shop.blue")]}, "cfg", maps)
    assert not p.reload
    assert p.map_changes == {"shop.weights.map": MapSet("0:99", "shop.green")}
    assert plan("cfg", {"shop.weights.map": [("0:99", "shop.green")]}, "cfg", maps).empty


def test_parse_map_text_skips_comments() -> None:
    """Map files may carry comments and blank lines."""
    assert parse_map_text("# x\n\n0:49 a\n50:99 b\n") == (("0:49", "a"), ("50:99", "b"))


@dataclass
class Row:
    proxy: str
    server: str
    status: str
    scur: int = 0
    check_status: str = "L7OK"


def test_health_gate_is_exact() -> None:
    """Only exactly UP after a passed check passes: UP 1/2, DOWN, MAINT, INI ... refuse."""
    assert health_gate([Row("shop.green", "s1", "UP")], "shop.green", "green").passed
    for status in ("UP 1/2", "DOWN", "MAINT", "DRAIN", "NOLB", "no check", "DOWN 1/3"):
        result = health_gate(
            [Row("shop.green", "s1", "UP"), Row("shop.green", "s2", status)], "shop.green", "green"
        )
        assert not result.passed, status
        assert f"s2 is {status}" in result.message
    unchecked = health_gate([Row("shop.green", "s1", "UP", 0, "INI")], "shop.green", "green")
    assert not unchecked.passed
    assert "a health check must have passed" in unchecked.message
    assert health_gate([Row("shop.green", "s1", "UP", 0, "* L7OK")], "shop.green", "green").passed
    empty = health_gate([Row("shop.green", "BACKEND", "UP")], "shop.green", "green")
    assert not empty.passed
    assert "no servers" in empty.message


def test_smoke_gate() -> None:
    """The smoke gate checks status and body text, and reports transport errors."""
    assert smoke_gate(200, "ok green", expect_status=200, expect_body="green").passed
    assert not smoke_gate(500, "", expect_status=200, expect_body=None).passed
    assert not smoke_gate(200, "blue", expect_status=200, expect_body="green").passed
    assert not smoke_gate(None, "", expect_status=200, expect_body=None, error="refused").passed


def test_in_use_ignores_negative_readings() -> None:
    """Drain counts in-use connections only."""
    assert in_use({"s1": 0, "s2": 3}) == 3
    assert in_use({"s1": -1}) == 0


def test_phase_table() -> None:
    """Legal transitions advance; illegal ones raise; terminal phases go nowhere."""
    assert advance(Phase.PENDING, Phase.RUNNING) is Phase.RUNNING
    assert advance(Phase.WAITING, Phase.ROLLING_BACK) is Phase.ROLLING_BACK
    with pytest.raises(IllegalTransition):
        advance(Phase.PENDING, Phase.COMPLETED)
    with pytest.raises(IllegalTransition):
        advance(Phase.COMPLETED, Phase.RUNNING)
    with pytest.raises(IllegalTransition):
        advance(Phase.ROLLED_BACK, Phase.ROLLING_BACK)
    # Every active phase but pending can roll back; only draining cannot be aborted.
    for phase in (Phase.RUNNING, Phase.PAUSED, Phase.WAITING, Phase.HOLDING):
        assert Phase.ROLLING_BACK in TRANSITIONS[phase]
    assert {p for p, n in TRANSITIONS.items() if not n} == TERMINAL
    # Every phase is reachable from pending.
    seen, todo = {Phase.PENDING}, [Phase.PENDING]
    while todo:
        for nxt in TRANSITIONS[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    assert seen == set(Phase)


async def test_load_state_reuses_the_spec_until_an_entry_changes() -> None:
    """A weight move re-reads routing but reuses the decoded spec; a spec change re-decodes."""
    from prism.store.desired import load_state
    from prism.testing.memory_store import memory_store

    store = await memory_store()
    try:
        await store.commit([Put("spec/apps/shop", dump(make_spec().apps[0]))])
        first = await load_state(store)
        await store.commit([Put(routing_key("shop"), dump(Routing.only("green", {"blue": 100})))])
        second = await load_state(store)
        assert second.spec is first.spec
        assert second.routing["shop"].active == "green"
        await store.commit(
            [Put("spec/apps/shop", dump(make_spec(("blue", "green", "red")).apps[0]))]
        )
        third = await load_state(store)
        assert third.spec is not first.spec
        assert third.spec.app("shop").has_color("red")
    finally:
        await store.close()


async def test_load_state_revision_and_removals_with_a_cached_spec() -> None:
    """The revision is that of the newest spec, routing or pin entry; a removed app is seen
    at once although the cached spec still holds it."""
    from prism.store.desired import load_state
    from prism.testing.memory_store import memory_store

    store = await memory_store()
    try:
        other = make_spec().apps[0].model_copy(update={"name": "cart", "bind": "127.0.0.1:8081"})
        await store.commit(
            [Put("spec/apps/shop", dump(make_spec().apps[0])), Put("spec/apps/cart", dump(other))]
        )
        first = await load_state(store)
        assert first.revision == 1
        moved = await store.commit(
            [Put(routing_key("shop"), dump(Routing.only("green", {"blue": 100})))]
        )
        second = await load_state(store)
        assert (second.revision, second.spec) == (moved, first.spec)
        await store.commit([Delete("spec/apps/cart")])
        third = await load_state(store)
        assert [a.name for a in third.spec.apps] == ["shop"]
        assert third.routing["shop"].active == "green"
    finally:
        await store.close()


def test_decode_state_with_a_cached_spec_drops_routing_of_unknown_colors() -> None:
    """Reusing a spec skips its validation, not the check of routing against it."""
    spec = make_spec()
    stale = Entry(routing_key("shop"), dump(Routing.only("red")), 3, 3)
    state = decode_state([], [], [stale], 3, spec=spec)
    assert state.routing == {}
    assert state.routing_for(spec.app("shop")).active == "blue"
