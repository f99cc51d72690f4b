"""The interfaces Prism's adapters implement, documented in one place.

* :class:`RuntimeTransport` carries one Runtime API exchange (unix socket,
  TCP, or an in-memory fake that replays HAProxy replies).
* :class:`Store` holds desired state as revisioned key/value entries plus an
  audit log; SQLite (:mod:`prism.store.sqlite`) and etcd
  (:mod:`prism.store.etcd`) implement it. Keys are ``/``-separated paths;
  values are JSON text. Every commit gets a higher revision, like etcd.
  A :class:`Lease` binds keys to a lifetime: they vanish when it expires.
* :class:`Clock` is wall time, monotonic time and sleeping, so the engine can be
  driven by a fake clock in unit tests.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from prism.context import current_request_id

__all__ = [
    "AuditDraft",
    "AuditRecord",
    "Clock",
    "Compare",
    "Delete",
    "Entry",
    "Lease",
    "Put",
    "RuntimeTransport",
    "Store",
    "WatchEvent",
    "audits_of",
]


class RuntimeTransport(Protocol):
    """One request/response exchange with an HAProxy CLI socket."""

    async def request(self, text: str) -> str:
        """Send ``text`` (an already validated command, without trailing newline) and
        return HAProxy's whole reply. Raises RuntimeAPIError on I/O failure."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Entry:
    """A stored value and the revisions that created and last modified it."""

    key: str
    value: str
    create_revision: int
    mod_revision: int


@dataclass(frozen=True, slots=True)
class Put:
    """Set ``key`` to ``value``; with ``lease``, the key is deleted when that lease ends."""

    key: str
    value: str
    lease: int | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    key: str


@dataclass(frozen=True, slots=True)
class Compare:
    """Commit only if ``key`` was last modified at ``mod_revision`` (0: must not exist)."""

    key: str
    mod_revision: int


@dataclass(frozen=True, slots=True)
class WatchEvent:
    kind: Literal["put", "delete"]
    key: str
    value: str | None
    revision: int


@dataclass(frozen=True, slots=True)
class AuditDraft:
    """What to record about a change: who did what to which app, and why.

    ``request_id`` names the API request that made the change; by default the
    one being served when the draft is made (see :mod:`prism.context`).
    """

    actor: str
    action: str
    app: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None
    request_id: str | None = field(default_factory=current_request_id)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """An audit entry as stored: a draft plus its id, revision and time (unix seconds)."""

    id: int
    revision: int
    at: float
    actor: str
    action: str
    app: str | None
    detail: dict[str, Any]
    reason: str | None
    request_id: str | None = None


class Lease(Protocol):
    """A lifetime granted by the store: keys put with its ``id`` vanish when it ends.

    It ends ``ttl`` seconds after the last :meth:`refresh` (the holder must
    refresh about every ``ttl / 3``), or at once on :meth:`revoke`.
    """

    @property
    def id(self) -> int: ...

    @property
    def ttl(self) -> float: ...

    async def refresh(self) -> None:
        """Extend the lease by ``ttl``; raises StoreError if it already ended."""
        ...

    async def revoke(self) -> None:
        """End the lease now, deleting its keys; a lease already gone is no error."""
        ...

    async def remaining(self) -> float | None:
        """Seconds until it expires, or None once it has ended."""
        ...


class Store(Protocol):
    """Revisioned desired state plus an audit log.

    * ``commit`` applies puts and deletes atomically, only if every ``Compare``
      holds (else raises :class:`prism.errors.Conflict` and changes nothing),
      returns the new revision, and records ``audit`` under that revision
      (several drafts: one entry each, in order, all in that one transaction).
    * ``record`` adds an audit entry that changes no state (a refused release);
      it carries the current revision.
    * ``stamp`` is ``(entries, newest mod_revision)`` under a prefix: cheap,
      and different after any commit that changed something under it (a put
      raises the newest revision; deletes alone lower the count).
    * ``watch`` yields every change under ``prefix`` after ``from_revision``,
      in revision order, then waits for more. It survives the store's server
      restarting; if the history after ``from_revision`` is gone (compacted),
      it raises :class:`prism.errors.Compacted` and the caller resyncs from a
      fresh ``list``.
    * ``grant`` makes a :class:`Lease`; puts naming it vanish with it; ``lease``
      is a handle on one granted before. SQLite sweeps its expired leases
      itself; etcd expires them on its own.
    """

    async def revision(self) -> int: ...

    async def get(self, key: str) -> Entry | None: ...

    async def list(self, prefix: str) -> list[Entry]: ...

    async def stamp(self, prefix: str) -> tuple[int, int]: ...

    async def commit(
        self,
        ops: Sequence[Put | Delete],
        *,
        expect: Sequence[Compare] = (),
        audit: AuditDraft | Sequence[AuditDraft] | None = None,
    ) -> int: ...

    async def record(self, audit: AuditDraft) -> AuditRecord: ...

    async def audit(
        self, *, app: str | None = None, limit: int = 100
    ) -> builtins.list[AuditRecord]:
        """Audit records, newest first, optionally only those of one app."""
        ...

    def watch(self, prefix: str, *, from_revision: int) -> AsyncIterator[WatchEvent]: ...

    async def grant(self, ttl: float) -> Lease: ...

    async def lease(self, lease_id: int, ttl: float) -> Lease:
        """A handle on a lease granted before, by this process or another (a renewal)."""
        ...

    async def close(self) -> None: ...


class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock time, unix seconds."""
        ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


def audits_of(audit: AuditDraft | Sequence[AuditDraft] | None) -> tuple[AuditDraft, ...]:
    """The drafts a commit's ``audit`` argument names (none, one or several), in order."""
    if audit is None:
        return ()
    if isinstance(audit, AuditDraft):
        return (audit,)
    return tuple(audit)
