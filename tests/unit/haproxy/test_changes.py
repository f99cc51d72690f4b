"""Planning an apply: the smallest runtime map change, server diffs, reload or not."""

from __future__ import annotations

from prism.haproxy.changes import (
    MapAdd,
    MapDel,
    MapReplace,
    MapSet,
    ServerDiff,
    map_change,
    parse_map_text,
    plan_apply,
    server_diff,
)


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
    p = plan_apply(CONFIG, {}, new, {}, servers_only=True)
    assert not p.reload
    assert p.server_changes == (
        ServerDiff("shop.blue", ("s1",), ("s1",)),
        ServerDiff("shop.green", ("s2",), ()),
    )
    assert plan_apply(CONFIG, {}, new, {}, servers_only=False).reload
    assert server_diff(CONFIG, CONFIG) == ()


def test_plan_reloads_only_on_config_change() -> None:
    """A changed config means reload; equal config with a changed map means runtime ops."""
    maps = {"shop.weights.map": "0:99 shop.green\n"}
    assert plan_apply("old", {}, "new", maps).reload
    p = plan_apply("cfg", {"shop.weights.map": [("0:99", "shop.blue")]}, "cfg", maps)
    assert not p.reload
    assert p.map_changes == {"shop.weights.map": MapSet("0:99", "shop.green")}
    assert plan_apply("cfg", {"shop.weights.map": [("0:99", "shop.green")]}, "cfg", maps).empty


def test_parse_map_text_skips_comments() -> None:
    """Map files may carry comments and blank lines."""
    assert parse_map_text("# x\n\n0:49 a\n50:99 b\n") == (("0:49", "a"), ("50:99", "b"))
