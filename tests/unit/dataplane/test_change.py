"""The one change path: commit, converge, and undo exactly what was changed if refused."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from prism.dataplane.change import Changes
from prism.errors import Conflict, Drift
from prism.store.sqlite import SqliteStore
from prism.testing.dataplane import FakeDataPlane
from prism.testing.memory_store import memory_store
from prism.types import AuditDraft, Compare, Delete, Put


@pytest.fixture
async def store() -> AsyncIterator[SqliteStore]:
    s = await memory_store()
    yield s
    await s.close()


AUDIT = AuditDraft(actor="ann", action="pin", app="shop")
BLUE, GREEN = '{"color":"blue"}', '{"color":"green"}'
A, B, C = "pins/shop/t/a", "pins/shop/t/b", "pins/shop/t/c"


async def test_a_change_is_stored_before_the_plane_converges_on_it(store: SqliteStore) -> None:
    """converge sees the committed revision; the result carries it."""
    plane = FakeDataPlane()
    applied = await Changes(store, plane).commit([Put("pins/shop/t/acme", BLUE)], audit=AUDIT)
    assert applied.revision == await store.revision() == plane.last.revision
    assert applied.converged.revision == applied.revision
    assert (await store.get("pins/shop/t/acme")) is not None


async def test_a_refused_change_puts_every_touched_key_back(store: SqliteStore) -> None:
    """Puts of new keys are deleted, changed keys get their old value, deleted keys return."""
    await store.commit([Put(A, BLUE), Put(C, BLUE)])
    plane = FakeDataPlane()
    plane.refuse_next(Drift("read-back disagrees"))
    with pytest.raises(Drift, match="read-back disagrees"):
        await Changes(store, plane).commit([Put(A, GREEN), Put(B, GREEN), Delete(C)], audit=AUDIT)
    assert (await store.get(A)).value == BLUE  # type: ignore[union-attr]
    assert await store.get(B) is None
    assert (await store.get(C)).value == BLUE  # type: ignore[union-attr]
    assert plane.last.pins == {"shop": {"t": {"a": "blue", "c": "blue"}}}  # converged on the undo
    actions = [r.action for r in await store.audit(limit=5)]
    assert actions[:2] == ["pin.reverted", "pin"]
    reverted = (await store.audit(limit=1))[0]
    assert reverted.reason is not None
    assert "read-back disagrees" in reverted.reason


async def test_a_newer_change_is_never_undone(store: SqliteStore) -> None:
    """If someone changed a key after the refused commit, the undo gives way to them."""
    plane = FakeDataPlane()

    class Racing(FakeDataPlane):
        async def converge(self, state):  # type: ignore[no-untyped-def]
            if not self.converged:
                self.converged.append(state)
                await store.commit([Put("a", "someone-else")])
                raise Drift("refused")
            return await super().converge(state)

    plane = Racing()
    with pytest.raises(Drift, match="refused"):
        await Changes(store, plane).commit([Put("a", "mine")], audit=AUDIT)
    assert (await store.get("a")).value == "someone-else"  # type: ignore[union-attr]
    assert "pin.reverted" not in [r.action for r in await store.audit(limit=5)]


async def test_a_failed_compare_changes_nothing_and_converges_nothing(store: SqliteStore) -> None:
    """The compare-and-put refuses a stale write before the data plane hears of it."""
    await store.commit([Put("a", "1")])
    plane = FakeDataPlane()
    with pytest.raises(Conflict, match="key 'a' changed"):
        await Changes(store, plane).commit([Put("a", "2")], expect=[Compare("a", 0)], audit=AUDIT)
    assert (await store.get("a")).value == "1"  # type: ignore[union-attr]
    assert plane.converged == []


async def test_a_deletion_advances_the_desired_revision(store: SqliteStore) -> None:
    """An unpin leaves no entry behind, yet the state converged on carries its revision."""
    plane = FakeDataPlane()
    changes = Changes(store, plane)
    await changes.commit([Put(A, BLUE)], audit=AUDIT)
    applied = await changes.commit([Delete(A)], audit=AUDIT)
    assert plane.last.revision == applied.revision
    assert plane.last.pins == {}
