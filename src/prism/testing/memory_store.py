"""An in-memory :class:`prism.types.Store` for unit tests.

It is the real :class:`~prism.store.SqliteStore` on ``":memory:"``, so tests
exercise the same revisions, conflicts, watch and audit semantics as
production, without touching the disk.
"""

from __future__ import annotations

from prism.store.sqlite import SqliteStore
from prism.types import Clock

__all__ = ["memory_store"]


async def memory_store(*, clock: Clock | None = None) -> SqliteStore:
    """Open a fresh, empty in-memory store; the caller must ``await store.close()``.

    ``clock`` stamps audit records (wall time when omitted).
    """
    return await SqliteStore.open(":memory:", clock=clock)
