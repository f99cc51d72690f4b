"""Shift and rollback through the services, the change path and a fake data plane: no I/O."""

from __future__ import annotations

import pytest

from prism.core.readings import SmokeReply
from prism.errors import ConfigRejected, Conflict, Drift, GateFailed, InvalidInput
from tests.unit.services.conftest import Rig, shop


async def test_shift_persists_then_converges_the_new_weights(rig: Rig) -> None:
    """A shift is stored (audited) and the data plane converges on exactly the new routing."""
    done = await rig.routing.shift("shop", {"blue": 70, "green": 30}, actor="ann", reason="canary")
    assert done["weights"] == {"blue": 70, "green": 30}
    assert done["previous"] == {"blue": 100}
    assert done["moved_buckets"] == 30
    assert rig.plane.last.routing["shop"].weights == {"blue": 70, "green": 30}
    assert rig.plane.last.revision == await rig.store.revision()
    record = (await rig.store.audit(app="shop", limit=1))[0]
    assert (record.action, record.actor, record.reason) == ("shift", "ann", "canary")


async def test_shift_refused_by_the_data_plane_restores_the_old_routing(rig: Rig) -> None:
    """When HAProxy refuses, the stored routing goes back and the plane converges on it again."""
    rig.plane.refuse_next(Drift("read-back disagrees"))
    with pytest.raises(Drift, match="read-back disagrees"):
        await rig.routing.shift("shop", {"blue": 50, "green": 50}, actor="ann")
    assert await rig.weights() == {"blue": 100}
    assert rig.plane.last.routing_for(rig.plane.last.spec.app("shop")).weights == {"blue": 100}
    assert (await rig.actions())[-2:] == ["shift", "shift.reverted"]


async def test_shift_to_an_unready_color_is_refused_and_changes_nothing(rig: Rig) -> None:
    """The health gate is exact: a color whose server is UP 1/2 gets no share."""
    rig.plane.set_servers("shop.green", "s1", status="UP 1/2")
    before = len(rig.plane.converged)
    with pytest.raises(GateFailed, match=r"s1 is UP 1/2"):
        await rig.routing.shift("shop", {"blue": 90, "green": 10}, actor="ann")
    assert await rig.weights() == {"blue": 100}
    assert len(rig.plane.converged) == before
    assert (await rig.actions())[-1] == "shift.refused"


async def test_smoke_failure_refuses_a_shift(rig: Rig) -> None:
    """With a smoke check declared, a failing smoke reply refuses the shift."""
    await rig.spec.apply(shop(smoke={"path": "/"}), actor="test", reason=None)
    rig.plane.smoke_replies["shop.green"] = SmokeReply(500, "boom")
    with pytest.raises(GateFailed, match="smoke request answered 500"):
        await rig.routing.shift("shop", {"blue": 90, "green": 10}, actor="ann")
    assert await rig.weights() == {"blue": 100}


async def test_rollback_returns_to_the_previous_weights_and_drains(rig: Rig) -> None:
    """Rollback restores the weights before the last change and drains the emptied color."""
    await rig.routing.shift("shop", {"green": 100}, actor="ann")
    done = await rig.routing.rollback("shop", actor="bob")
    assert done["weights"] == {"blue": 100}
    assert "drained" in done["drain"]
    assert (await rig.actions())[-2:] == ["rollback", "rollback.drained"]


async def test_rollback_waits_for_connections_then_reports_the_timeout(rig: Rig) -> None:
    """A color still serving connections drains until its timeout, then says so."""
    await rig.routing.shift("shop", {"green": 100}, actor="ann")
    rig.plane.used["shop.green/s1"] = 2
    done = await rig.routing.rollback("shop", actor="bob")
    assert "still had 2 connection(s) in use" in done["drain"]
    assert rig.clock.monotonic() >= 100.0 + 30.0  # the app's default 30 s drain timeout
    assert (await rig.actions())[-1] == "rollback.drain_timeout"


async def test_rollback_without_a_previous_change_is_a_conflict(rig: Rig) -> None:
    """Nothing to roll back to: refused, nothing stored."""
    revision = await rig.store.revision()
    with pytest.raises(Conflict, match="no previous weights"):
        await rig.routing.rollback("shop", actor="bob")
    assert await rig.store.revision() == revision


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        ({"blue": 60, "green": 30}, "sum to 100"),
        ({"blue": 100, "purple": 0}, "no color 'purple'"),
        ({"blue": 101}, "whole number from 0 to 100"),
    ],
)
async def test_bad_weights_are_refused_before_anything_changes(
    rig: Rig, weights: dict[str, int], match: str
) -> None:
    """Weights that do not sum to 100, name unknown colors or are out of range change nothing."""
    revision, converged = await rig.store.revision(), len(rig.plane.converged)
    with pytest.raises((InvalidInput, Exception), match=match):
        await rig.routing.shift("shop", weights, actor="ann")
    assert (await rig.store.revision(), len(rig.plane.converged)) == (revision, converged)


async def test_spec_apply_refused_by_haproxy_stores_nothing(rig: Rig) -> None:
    """An apply whose config HAProxy rejects at convergence is reverted: old spec, old state."""
    rig.plane.refuse_next(ConfigRejected("HAProxy rejected it"))
    with pytest.raises(ConfigRejected, match="rejected"):
        await rig.spec.apply(shop(retries=5), actor="ann", reason=None)
    state = await rig.spec.state()
    assert state.spec.app("shop").retries == 3
    assert (await rig.actions())[-2:] == ["apply", "apply.reverted"]


async def test_spec_apply_refused_by_the_check_commits_nothing(rig: Rig) -> None:
    """haproxy -c refusing the rendered spec stops the apply before the store is touched."""
    rig.plane.check_refusals.append(ConfigRejected("haproxy -c failed"))
    revision = await rig.store.revision()
    with pytest.raises(ConfigRejected, match="haproxy -c failed"):
        await rig.spec.apply(shop(retries=5), actor="ann", reason=None)
    assert await rig.store.revision() == revision
