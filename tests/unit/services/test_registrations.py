"""Registrations through the service, the in-memory store's leases and a fake data plane."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from prism.errors import Conflict, GateFailed, InvalidInput, NotFound
from prism.services.registrations import RegistrationService
from prism.testing.wait import eventually
from tests.unit.services.conftest import Rig


@pytest.fixture
def registrations(rig: Rig) -> RegistrationService:
    return RegistrationService(rig.store, rig.changes, rig.clock)


async def test_a_registration_is_served_and_renewed_without_a_new_change(
    rig: Rig, registrations: RegistrationService
) -> None:
    """A new one adds a server to the served spec; the same PUT again only renews."""
    done = await registrations.register(
        "shop", "blue", None, "10.0.0.9:8080", ttl_ms=10_000, actor="ci"
    )
    assert (done["server"], done["renewed"]) == ("10.0.0.9_8080", False)
    served = rig.plane.last.served.app("shop").color("blue")
    assert [s.name for s in served.servers] == ["s1", "10.0.0.9_8080"]
    assert [s.name for s in rig.plane.last.spec.app("shop").color("blue").servers] == ["s1"]
    converged = len(rig.plane.converged)
    again = await registrations.register(
        "shop", "blue", None, "10.0.0.9:8080", ttl_ms=10_000, actor="ci"
    )
    assert again["renewed"] is True
    assert len(rig.plane.converged) == converged
    (row,) = await registrations.list("shop")
    assert row["ttl_left"] is not None


async def test_an_expired_registration_is_audited_and_converged_away(
    rig: Rig, registrations: RegistrationService
) -> None:
    """When its lease ends the store drops the key; the follower audits the expiry."""
    follower = asyncio.create_task(registrations.follow_expiries(converge=True))
    try:
        await asyncio.sleep(0)  # let it start watching
        await registrations.register("shop", "red", "r1", "10.0.0.7:80", ttl_ms=2_000, actor="ci")
        rig.clock.advance(3)
        assert await rig.store.sweep() == 1
        await eventually(
            rig.actions,
            until=lambda actions: actions[-1] == "registration.expired",
            timeout=5,
            what="the expiry audit",
        )
        names = [s.name for s in rig.plane.last.served.app("shop").color("red").servers]
        assert names == ["s1"]
        record = (await rig.store.audit(app="shop", limit=1))[0]
        assert (record.detail["server"], record.detail["registered_by"]) == ("r1", "ci")
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower


async def test_deregistering_is_not_an_expiry(rig: Rig, registrations: RegistrationService) -> None:
    """A deliberate deregistration is audited as such, never as an expiry."""
    follower = asyncio.create_task(registrations.follow_expiries(converge=False))
    try:
        await asyncio.sleep(0)
        await registrations.register("shop", "red", "r1", "10.0.0.7:80", ttl_ms=5_000, actor="ci")
        await registrations.deregister("shop", "red", "r1", actor="ci")
        with pytest.raises(NotFound, match="no server 'r1' is registered"):
            await registrations.deregister("shop", "red", "r1", actor="ci")
        for _ in range(20):
            await asyncio.sleep(0)  # give the follower every chance to (wrongly) audit
        assert "registration.expired" not in await rig.actions()
        assert (await rig.actions())[-2:] == ["register", "deregister"]
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower


async def test_a_registration_whose_checks_fail_is_not_kept(
    rig: Rig, registrations: RegistrationService
) -> None:
    """The data plane refuses the join: no key is left behind, and its lease is revoked."""
    rig.plane.refuse_next(GateFailed("server r1 failed its health checks"))
    with pytest.raises(GateFailed, match="failed its health checks"):
        await registrations.register("shop", "red", "r1", "10.0.0.7:80", ttl_ms=5_000, actor="c")
    assert await registrations.list("shop") == []
    assert (await rig.actions())[-2:] == ["register", "register.reverted"]


@pytest.mark.parametrize(
    ("name", "address", "ttl", "error", "match"),
    [
        ("r1", "10.0.0.7:80", 500, InvalidInput, "ttl is 1 s to 24 h"),
        ("r1", "10.0.0.7:80", 10**9, InvalidInput, "ttl is 1 s to 24 h"),
        ("r1", "10.0.0.7", 5000, InvalidInput, "expected host:port"),
        ("r;1", "10.0.0.7:80", 5000, InvalidInput, "invalid server name"),
        ("srv2", "10.0.0.7:80", 5000, InvalidInput, "reserved for DNS discovery"),
        ("s1", "10.0.0.7:80", 5000, Conflict, "declares a server 's1' itself"),
    ],
)
async def test_hostile_registrations_change_nothing(
    rig: Rig,
    registrations: RegistrationService,
    name: str,
    address: str,
    ttl: int,
    error: type[Exception],
    match: str,
) -> None:
    """Bad TTLs, addresses and names are refused before the store is touched."""
    revision = await rig.store.revision()
    with pytest.raises(error, match=match):
        await registrations.register("shop", "red", name, address, ttl_ms=ttl, actor="ci")
    assert await rig.store.revision() == revision
