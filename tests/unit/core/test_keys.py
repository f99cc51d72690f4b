"""Desired state as store entries and back: the key layout, spec diffs and ops."""

from __future__ import annotations

from prism.core.keys import decode_state, diff_spec, dump, routing_key, spec_ops
from prism.core.model import Spec, parse_model
from prism.core.state import DesiredState, Routing
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


def test_decode_state_with_a_cached_spec_drops_routing_of_unknown_colors() -> None:
    """Reusing a spec skips its validation, not the check of routing against it."""
    spec = make_spec()
    stale = Entry(routing_key("shop"), dump(Routing.only("red")), 3, 3)
    state = decode_state([], [], [stale], 3, spec=spec)
    assert state.routing == {}
    assert state.routing_for(spec.app("shop")).active == "blue"


def test_a_node_report_survives_its_json() -> None:
    """A report is encoded every heartbeat and decoded by every control plane: losslessly."""
    from prism.core.fleet import NodeReport
    from prism.core.readings import Counters, ServerReading, SmokeReply

    report = NodeReport(
        node="lb-1",
        address="127.0.0.2",
        heartbeat=1.5,
        synced=True,
        applied=7,
        mode="runtime",
        staged=8,
        servers=(ServerReading("shop.blue", "s1", "UP", "L7OK", 2, 1, "127.0.0.1:9", "lb-1"),),
        counters={"shop.blue": Counters(10, 1, 3)},
        in_use={"shop.blue/s1": 2},
        smoke=(("shop", "green", SmokeReply(200, "ok", None, "lb-1")),),
        haproxy={"running": True},
    )
    assert NodeReport.from_json(report.to_json()) == report
