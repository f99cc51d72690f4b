"""Leader election among the control planes of one fleet: who drives the releases.

Every ``prism serve`` on the same store serves the API; exactly one — the
holder of ``fleet/leader``, a key put under its lease with a compare that it
did not exist — drives release steps. The leader refreshes its lease every
third of its TTL; if it dies (even ``kill -9``) the lease lapses, the key
vanishes, and a follower watching it campaigns and takes over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from prism.core.fleet import LEADER
from prism.core.keys import dump
from prism.errors import Conflict, PrismError, StoreError
from prism.types import Compare, Put, Store

__all__ = ["Leadership"]

log = logging.getLogger(__name__)


class Leadership:
    """Campaign for the leader key for as long as :meth:`run` runs."""

    def __init__(
        self,
        store: Store,
        name: str,
        *,
        on_lead: Callable[[], Awaitable[None]],
        on_follow: Callable[[], Awaitable[None]],
        ttl: float = 2.0,
    ) -> None:
        self.store = store
        self.name = name
        self.ttl = ttl
        self.on_lead = on_lead
        self.on_follow = on_follow
        self.leading = False

    async def run(self) -> None:
        delay = 0.2
        while True:
            try:
                await self._campaign()
                delay = 0.2
            except StoreError as exc:
                log.warning("leader election: %s; retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _campaign(self) -> None:
        lease = await self.store.grant(self.ttl)
        try:
            await self.store.commit(
                [Put(LEADER, dump({"name": self.name}), lease=lease.id)],
                expect=[Compare(LEADER, 0)],
            )
        except Conflict:
            with contextlib.suppress(PrismError):
                await lease.revoke()
            await self._until_vacant()
            return
        log.info("control plane %s leads the fleet", self.name)
        self.leading = True
        await self.on_lead()
        try:
            while True:
                await asyncio.sleep(self.ttl / 3)
                await lease.refresh()
        finally:
            self.leading = False
            log.warning("control plane %s no longer leads", self.name)
            await self.on_follow()
            # Stepping down on purpose (shutdown) hands over at once, not after the TTL.
            with contextlib.suppress(PrismError):
                await lease.revoke()

    async def _until_vacant(self) -> None:
        """Return once the leader key is gone (its holder stopped or died)."""
        revision = await self.store.revision()
        if await self.store.get(LEADER) is None:
            return
        async for event in self.store.watch(LEADER, from_revision=revision):
            if event.kind == "delete":
                return
