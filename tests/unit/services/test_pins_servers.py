"""Pins and server changes through the services and a fake data plane: no I/O."""

from __future__ import annotations

import pytest

from prism.errors import Conflict, GateFailed, InvalidInput, NotFound, TooLarge
from prism.services import pins
from tests.unit.services.conftest import Rig


async def test_pin_is_stored_and_converged_and_unpin_removes_it(rig: Rig) -> None:
    """A pin reaches the data plane's desired state; unpinning takes it away again."""
    done = await rig.pins.pin("shop", "acme", "red", rule=None, actor="ann", reason=None)
    assert (done["rule"], done["key"], done["color"], done["changed"]) == (
        "tenant",
        "acme",
        "red",
        True,
    )
    assert rig.plane.last.pins == {"shop": {"tenant": {"acme": "red"}}}
    again = await rig.pins.pin("shop", "acme", "red", rule=None, actor="ann", reason=None)
    assert again["changed"] is False
    await rig.pins.unpin("shop", "acme", rule=None, actor="ann", reason=None)
    assert rig.plane.last.pins == {}
    with pytest.raises(NotFound, match="'acme' is not pinned"):
        await rig.pins.unpin("shop", "acme", rule=None, actor="ann", reason=None)


async def test_a_refused_pin_leaves_the_old_pin(rig: Rig) -> None:
    """A re-pin the data plane refuses restores the previous color."""
    await rig.pins.pin("shop", "acme", "red", rule=None, actor="ann", reason=None)
    rig.plane.refuse_next(GateFailed("nope"))
    with pytest.raises(GateFailed, match="nope"):
        await rig.pins.pin("shop", "acme", "green", rule=None, actor="ann", reason=None)
    assert await rig.pins.pins("shop") == [
        {"rule": "tenant", "source": "header", "key": "acme", "color": "red"}
    ]


async def test_pins_past_the_limit_are_refused_and_change_nothing(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At the limit a new key is refused with 413 (its limit named); moving a pinned key
    to another color still works."""
    monkeypatch.setattr(pins, "MAX_PINS", 2)
    for key in ("acme", "globex"):
        await rig.pins.pin("shop", key, "red", rule=None, actor="ann", reason=None)
    revision = await rig.store.revision()
    with pytest.raises(TooLarge, match="already has 2 pinned keys") as refused:
        await rig.pins.pin("shop", "initech", "red", rule=None, actor="ann", reason=None)
    assert refused.value.status == 413
    assert refused.value.detail == {"limit": 2}
    assert await rig.store.revision() == revision
    moved = await rig.pins.pin("shop", "acme", "green", rule=None, actor="ann", reason=None)
    assert moved["changed"] is True


@pytest.mark.parametrize("key", ["a b", "x;y", "#1", "", "k\n"])
async def test_hostile_pin_keys_are_refused_before_anything_changes(rig: Rig, key: str) -> None:
    """Keys that could break out of a map line or a Runtime API argument change nothing."""
    revision = await rig.store.revision()
    with pytest.raises(InvalidInput, match="invalid header pin key"):
        await rig.pins.pin("shop", key, "red", rule=None, actor="ann", reason=None)
    assert await rig.store.revision() == revision


async def test_server_add_and_remove_reach_the_data_plane(rig: Rig) -> None:
    """server add names the next free sN; remove takes it out of the desired spec again."""
    done = await rig.servers.add(
        "shop", "green", "127.0.0.1:9100", name=None, actor="ann", reason=None
    )
    assert (done["server"], done["address"]) == ("s2", "127.0.0.1:9100")
    green = rig.plane.last.spec.app("shop").color("green")
    assert [s.address for s in green.servers] == ["127.0.0.1:9002", "127.0.0.1:9100"]
    await rig.servers.remove("shop", "green", "s2", actor="ann", reason=None)
    assert [s.name for s in rig.plane.last.spec.app("shop").color("green").servers] == ["s1"]


async def test_a_server_whose_checks_fail_is_reverted_from_desired_state(rig: Rig) -> None:
    """When the data plane refuses the add (checks never passed), desired state forgets it."""
    rig.plane.refuse_next(GateFailed("server s2 failed its health checks"))
    with pytest.raises(GateFailed, match="failed its health checks"):
        await rig.servers.add(
            "shop", "green", "127.0.0.1:9100", name=None, actor="ann", reason=None
        )
    state = await rig.spec.state()
    assert [s.name for s in state.spec.app("shop").color("green").servers] == ["s1"]
    assert (await rig.actions())[-2:] == ["server.add", "server.add.reverted"]


async def test_duplicate_and_hostile_servers_are_refused(rig: Rig) -> None:
    """A taken name, a bad address or a bad name changes nothing."""
    revision = await rig.store.revision()
    with pytest.raises(Conflict, match="already has a server 's1'"):
        await rig.servers.add("shop", "green", "127.0.0.1:9100", name="s1", actor="a", reason=None)
    with pytest.raises(InvalidInput, match="invalid host"):
        await rig.servers.add("shop", "green", "bad host:1", name=None, actor="a", reason=None)
    with pytest.raises(InvalidInput, match="invalid server name"):
        await rig.servers.add("shop", "green", "127.0.0.1:9", name="x;y", actor="a", reason=None)
    assert await rig.store.revision() == revision
