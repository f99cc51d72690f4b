"""Desired state in one SQLite file: the embedded implementation of :class:`prism.types.Store`.

Schema (version 3)::

    schema_version(version)                       one row: the applied migration level
    counter(id = 1, revision)                     one row: the global revision
    kv(key PK, value, create_revision, mod_revision, lease)
    leases(id PK, ttl, expires_at)                a key's lease ends it when it expires
    changes(id PK, revision, key, kind, value)    every put/delete, in order; feeds watch
    audit(id PK, revision, at, actor, action, app, detail JSON, reason, request_id)

Every ``commit`` is one ``BEGIN IMMEDIATE`` transaction taking the next
revision, so kv, change log and audit log never disagree. ``watch`` replays the
change log, then waits: a commit in this process wakes it at once; a slow poll
notices commits by another process on the same file.

SQLite calls run directly on the event-loop thread: a statement on a local file
takes microseconds and a durable commit ~0.5 ms (one fsync), too short to starve
other tasks, and a worker thread would buy little (``sqlite3`` connections are
bound to their thread). An ``asyncio.Lock`` keeps overlapping coroutines from
interleaving statements on the one connection.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import logging
import os
import re
import secrets
import sqlite3
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

from prism.errors import Conflict, InvalidInput, StoreError
from prism.types import (
    AuditDraft,
    AuditRecord,
    Clock,
    Compare,
    Delete,
    Entry,
    Put,
    WatchEvent,
    audits_of,
)

__all__ = ["MAX_KEY_LENGTH", "SCHEMA_VERSION", "SqliteLease", "SqliteStore"]

log = logging.getLogger(__name__)

MAX_KEY_LENGTH = 512
_PRINTABLE = re.compile(rf"[\x20-\x7e]{{0,{MAX_KEY_LENGTH}}}", re.ASCII)
# Keys are printable ASCII (<= 0x7e), so every key starting with `prefix` sorts
# below `prefix + "\x7f"`: a range scan matches the prefix literally (no LIKE
# wildcards to escape) and uses the primary-key index.
_PREFIX_END = "\x7f"
# Watch replays history in slices of this many revisions, to bound memory.
_WATCH_BATCH = 500
# Seconds between sweeps of expired leases.
_SWEEP_INTERVAL = 0.2
# How long a commit keeps retrying while another process holds the write lock.
_LOCK_WAIT = 5.0
# Each entry upgrades the schema from version `index` to `index + 1`. Append
# new steps; never edit a released one (files in the field have applied it).
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE TABLE schema_version (version INTEGER NOT NULL)",
        "INSERT INTO schema_version (version) VALUES (0)",
        "CREATE TABLE counter (id INTEGER PRIMARY KEY CHECK (id = 1),"
        " revision INTEGER NOT NULL CHECK (revision >= 0))",
        "INSERT INTO counter (id, revision) VALUES (1, 0)",
        "CREATE TABLE kv (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL,"
        " create_revision INTEGER NOT NULL, mod_revision INTEGER NOT NULL) WITHOUT ROWID",
        "CREATE TABLE changes (id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " revision INTEGER NOT NULL, key TEXT NOT NULL,"
        " kind TEXT NOT NULL CHECK (kind IN ('put', 'delete')), value TEXT)",
        "CREATE INDEX changes_by_revision ON changes (revision)",
        # AUTOINCREMENT: an audit id is never reused, even after rows are pruned.
        "CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " revision INTEGER NOT NULL, at REAL NOT NULL, actor TEXT NOT NULL,"
        " action TEXT NOT NULL, app TEXT, detail TEXT NOT NULL, reason TEXT)",
        "CREATE INDEX audit_by_app ON audit (app, id)",
    ),
    # stamp() reads only this index, not the table's pages full of values
    ("CREATE INDEX kv_revisions ON kv (key, mod_revision)",),
    # leases: keys put under one vanish when it expires (the store sweeps them)
    (
        "CREATE TABLE leases (id INTEGER PRIMARY KEY, ttl REAL NOT NULL, expires_at REAL NOT NULL)",
        "ALTER TABLE kv ADD COLUMN lease INTEGER",
        "CREATE INDEX kv_by_lease ON kv (lease) WHERE lease IS NOT NULL",
    ),
    # the API request that made the change (None: not made through the API)
    ("ALTER TABLE audit ADD COLUMN request_id TEXT",),
)
SCHEMA_VERSION = len(_MIGRATIONS)

_HINTS = {
    "SQLITE_FULL": "the disk is full: free space next to the store file",
    "SQLITE_BUSY": "another process holds the store locked: is a second Prism running?",
    "SQLITE_LOCKED": "the store is locked by another connection: retry",
    "SQLITE_CANTOPEN": "the store path is not writable or its directory does not exist",
    "SQLITE_READONLY": "the store file or its directory is read-only: check permissions",
    "SQLITE_PERM": "permission denied on the store file: check its owner and mode",
    "SQLITE_IOERR": "a disk I/O error: check the disk and the filesystem",
    "SQLITE_NOTADB": "the file is not a Prism store: check the path",
    "SQLITE_CORRUPT": "the store file is damaged: restore it from a backup",
}


@contextmanager
def _sqlite_errors(doing: str) -> Iterator[None]:
    """Translate sqlite3 (and file) errors into StoreError at the adapter's boundary."""
    try:
        yield
    except sqlite3.Error as exc:
        name = getattr(exc, "sqlite_errorname", "")
        hint = next((h for code, h in _HINTS.items() if name.startswith(code)), None)
        raise StoreError(
            f"could not {doing}: {exc}",
            hint=hint or "check the store file and the disk it lives on",
            detail={"sqlite_error": name} if name else None,
        ) from exc
    except OSError as exc:
        raise StoreError(
            f"could not {doing}: {exc}",
            hint="check that the store's directory exists and is writable",
        ) from exc


def _check_key(key: object, *, prefix: bool = False) -> None:
    """Keys (and prefixes, which may be empty) are printable ASCII, at most 512 long."""
    if not isinstance(key, str) or not (key or prefix) or _PRINTABLE.fullmatch(key) is None:
        raise InvalidInput(
            f"invalid store {'prefix' if prefix else 'key'}: {key!r:.80}",
            hint=f"use {0 if prefix else 1} to {MAX_KEY_LENGTH} printable ASCII characters",
        )


def _check_ops(ops: Sequence[Put | Delete], expect: Sequence[Compare]) -> None:
    seen: set[str] = set()
    for op in ops:
        if not isinstance(op, Put | Delete):
            raise InvalidInput(f"not a store operation: {op!r:.80}", hint="pass Put or Delete")
        _check_key(op.key)
        if isinstance(op, Put) and not isinstance(op.value, str):
            raise InvalidInput(f"value of {op.key!r} is not text", hint="store JSON text")
        # Like etcd, one commit touches a key once: "put then delete" has no clear order.
        if op.key in seen:
            raise InvalidInput(
                f"key {op.key!r} appears twice in one commit", hint="merge the operations"
            )
        seen.add(op.key)
    for cmp in expect:
        _check_key(cmp.key)
        if not isinstance(cmp.mod_revision, int) or cmp.mod_revision < 0:
            raise InvalidInput(
                f"invalid expected revision for {cmp.key!r}: {cmp.mod_revision!r}",
                hint="use a mod_revision >= 0 (0: the key must not exist)",
            )


_SELECT_AUDIT = "SELECT id, revision, at, actor, action, app, detail, reason, request_id FROM audit"


def _audit_record(row: tuple[Any, ...]) -> AuditRecord:
    return AuditRecord(
        row[0], row[1], row[2], row[3], row[4], row[5], json.loads(row[6]), row[7], row[8]
    )


def _create_private(path: Path) -> None:
    # Desired state sits beside the API token: create the file owner-only before
    # SQLite opens it (SQLite gives its -wal and -shm files the same mode).
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)


class SqliteStore:
    """The :class:`prism.types.Store` on one SQLite file (or ``":memory:"`` for tests).

    Build it with :meth:`open`; release it with :meth:`close` (or ``async with``).
    """

    def __init__(
        self, conn: sqlite3.Connection, *, clock: Clock | None, poll_interval: float
    ) -> None:
        """Internal: use :meth:`open`."""
        self._conn = conn
        self._clock = clock
        self._poll_interval = poll_interval
        self._lock = asyncio.Lock()
        self._closed = False
        # Replaced after every commit: a watcher grabs the current one *before*
        # reading the log, so a commit landing after its read still wakes it.
        self._committed = asyncio.Event()
        self._sweeper: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls, path: str | Path, *, clock: Clock | None = None, poll_interval: float = 0.5
    ) -> SqliteStore:
        """Open (creating and migrating if needed) the store at ``path``.

        ``poll_interval`` is how often an idle ``watch`` re-reads the change log
        to notice commits made by other processes on the same file.
        """
        if poll_interval <= 0:
            raise InvalidInput("poll_interval must be positive", hint="use e.g. 0.5 seconds")
        memory = str(path) == ":memory:"
        with _sqlite_errors(f"open the store at {str(path)!r}"):
            if not memory:
                _create_private(Path(path))
            # isolation_level=None: we issue BEGIN/COMMIT ourselves (BEGIN IMMEDIATE).
            conn = sqlite3.connect(path, isolation_level=None)
        try:
            with _sqlite_errors(f"set up the store at {str(path)!r}"):
                # SQLite's busy handler sleeps on the event loop, so keep it short
                # (it covers another process briefly locking the file, e.g. on
                # close); waiting for a writer happens in _begin_immediate.
                conn.execute("PRAGMA busy_timeout = 20")
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode not in ("wal", "memory"):
                    raise StoreError(
                        f"the store at {str(path)!r} cannot use WAL mode (got {mode!r})",
                        hint="keep the state directory on a local filesystem",
                    )
                # FULL, not NORMAL: in WAL mode NORMAL may lose the last commits on
                # power loss, and a returned revision is a promise ("nothing is
                # lost"; the engine saves before it acts). Measured here: ~0.5 ms
                # per commit against ~0.05 ms, for commits made at human pace.
                conn.execute("PRAGMA synchronous = FULL")
                # Off by default in SQLite; on, so REFERENCES added by later
                # migrations are enforced from the start.
                conn.execute("PRAGMA foreign_keys = ON")
            store = cls(conn, clock=clock, poll_interval=poll_interval)
            await store._migrate()
            if conn.execute("SELECT 1 FROM leases LIMIT 1").fetchone() is not None:
                store._start_sweeping()  # leases from before a restart still expire
        except BaseException:
            conn.close()
            raise
        return store

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection and end every watch of this store. Idempotent."""
        async with self._lock:
            if self._closed:
                return
            self._closed = True
            self._conn.close()
        self._committed.set()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

    async def revision(self) -> int:
        """The revision of the last commit (0 for a new store)."""
        async with self._reading("read the revision"):
            return self._current_revision()

    async def get(self, key: str) -> Entry | None:
        """The entry at ``key``, or None."""
        _check_key(key)
        async with self._reading(f"read {key!r}"):
            row = self._conn.execute(
                "SELECT key, value, create_revision, mod_revision FROM kv WHERE key = ?", (key,)
            ).fetchone()
        return Entry(*row) if row else None

    async def list(self, prefix: str) -> list[Entry]:
        """Every entry whose key starts with ``prefix`` (taken literally), sorted by key."""
        _check_key(prefix, prefix=True)
        async with self._reading(f"list {prefix!r}"):
            rows = self._conn.execute(
                "SELECT key, value, create_revision, mod_revision FROM kv"
                " WHERE key >= ? AND key < ? ORDER BY key",
                (prefix, prefix + _PREFIX_END),
            ).fetchall()
        return [Entry(*row) for row in rows]

    async def stamp(self, prefix: str) -> tuple[int, int]:
        """``(entries, newest mod_revision)`` under ``prefix``; see :class:`prism.types.Store`."""
        _check_key(prefix, prefix=True)
        async with self._reading(f"stamp {prefix!r}"):
            count, newest = self._conn.execute(
                "SELECT COUNT(*), COALESCE(MAX(mod_revision), 0) FROM kv"
                " WHERE key >= ? AND key < ?",
                (prefix, prefix + _PREFIX_END),
            ).fetchone()
        return int(count), int(newest)

    async def commit(
        self,
        ops: Sequence[Put | Delete],
        *,
        expect: Sequence[Compare] = (),
        audit: AuditDraft | Sequence[AuditDraft] | None = None,
    ) -> int:
        """Apply ``ops`` atomically under one new revision if every ``expect`` holds.

        Raises Conflict (changing nothing) when a compared key's mod_revision
        differs. Every commit takes a revision, even one whose ops are all
        deletes of missing keys, or that has no ops at all (only an audit).
        """
        _check_ops(ops, expect)
        drafts = [(draft, self._audit_json(draft)) for draft in audits_of(audit)]
        async with self._writing("commit") as conn:
            failed = []
            for cmp in expect:
                row = conn.execute("SELECT mod_revision FROM kv WHERE key = ?", (cmp.key,))
                actual = (row.fetchone() or (0,))[0]
                if actual != cmp.mod_revision:
                    failed.append({"key": cmp.key, "expected": cmp.mod_revision, "actual": actual})
            if failed:
                key, expected, actual = failed[0].values()
                raise Conflict(
                    f"key {key!r} changed: expected mod_revision {expected},"
                    f" found {actual} (0 = absent)",
                    hint="re-read the current state and retry",
                    detail={"conflicts": failed},
                )
            for op in ops:
                if isinstance(op, Put) and op.lease is not None:
                    alive = conn.execute(
                        "SELECT 1 FROM leases WHERE id = ? AND expires_at > ?",
                        (op.lease, self._now()),
                    ).fetchone()
                    if alive is None:
                        raise StoreError(
                            f"lease {op.lease:x} of {op.key!r} has ended",
                            hint="grant a new lease",
                            detail={"ended": True},
                        )
            revision = self._current_revision() + 1
            conn.execute("UPDATE counter SET revision = ? WHERE id = 1", (revision,))
            for op in ops:
                self._apply(conn, op, revision)
            for draft, detail in drafts:
                self._insert_audit(conn, draft, detail, revision)
        self._wake_watchers()
        return revision

    async def record(self, audit: AuditDraft) -> AuditRecord:
        """Store an audit entry at the current revision, changing no state."""
        detail = self._audit_json(audit)
        async with self._writing("record an audit entry") as conn:
            return self._insert_audit(conn, audit, detail, self._current_revision())

    async def audit(
        self, *, app: str | None = None, limit: int = 100
    ) -> builtins.list[AuditRecord]:
        """Audit records, newest first, optionally only those of one app."""
        if not isinstance(limit, int) or limit < 1:
            raise InvalidInput(f"invalid audit limit: {limit!r}", hint="use a limit >= 1")
        async with self._reading("read the audit log"):
            # Two shapes, not "?1 IS NULL OR app = ?1", so the app index is used.
            where = " WHERE app = ?1" if app is not None else " WHERE ?1 IS NULL"
            rows = self._conn.execute(
                _SELECT_AUDIT + where + " ORDER BY id DESC LIMIT ?2", (app, limit)
            ).fetchall()
        return [_audit_record(row) for row in rows]

    def watch(self, prefix: str, *, from_revision: int) -> AsyncGenerator[WatchEvent, None]:
        """Yield every change under ``prefix`` with a revision above ``from_revision``.

        Past changes come first, in revision order (ops of one commit in the
        order given), then live ones as they are committed, by this process
        (at once) or by another one on the same file (within ``poll_interval``).
        The iteration ends when the store is closed. It is an async generator:
        wrap it in ``contextlib.aclosing`` to release it promptly when done.
        """
        # Validated here, not in the generator, so bad input fails at the call.
        _check_key(prefix, prefix=True)
        if not isinstance(from_revision, int) or from_revision < 0:
            raise InvalidInput(
                f"invalid from_revision: {from_revision!r}", hint="use a revision >= 0"
            )
        return self._watch(prefix, from_revision)

    async def _watch(self, prefix: str, seen: int) -> AsyncGenerator[WatchEvent, None]:
        while not self._closed:
            committed = self._committed
            events, seen, behind = await self._changes_after(prefix, seen)
            for event in events:
                yield event
            if behind:
                continue
            try:
                async with asyncio.timeout(self._poll_interval):
                    await committed.wait()
            except TimeoutError:
                pass

    async def _changes_after(
        self, prefix: str, seen: int
    ) -> tuple[builtins.list[WatchEvent], int, bool]:
        """Events under ``prefix`` in (seen, seen + batch]: (events, new seen, more left)."""
        async with self._lock:
            if self._closed:  # close() ends watches quietly: the end of a stream
                return [], seen, False
            # Read the counter first: every revision up to it is already
            # committed, so the log query below sees all of their rows (whole
            # commits only), and `seen` can advance past unmatched revisions.
            with _sqlite_errors("read the change log"):
                current = self._current_revision()
                upto = min(current, seen + _WATCH_BATCH)
                rows = self._conn.execute(
                    "SELECT kind, key, value, revision FROM changes"
                    " WHERE revision > ? AND revision <= ? AND key >= ? AND key < ?"
                    " ORDER BY revision, id",
                    (seen, upto, prefix, prefix + _PREFIX_END),
                ).fetchall()
        events = [WatchEvent(*row) for row in rows]
        return events, max(seen, upto), upto < current

    # -- leases ----------------------------------------------------------

    async def grant(self, ttl: float) -> SqliteLease:
        """A lease of ``ttl`` seconds; keys put under it vanish when it expires unrefreshed.

        Expiry is wall time (a restart keeps it), swept by this store every
        :data:`_SWEEP_INTERVAL` seconds while it is open.
        """
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= 86_400:
            raise InvalidInput(f"invalid lease ttl: {ttl!r}", hint="use 0 < seconds <= 86400")
        lease_id = secrets.randbits(62) + 1
        async with self._writing("grant a lease") as conn:
            conn.execute(
                "INSERT INTO leases (id, ttl, expires_at) VALUES (?, ?, ?)",
                (lease_id, float(ttl), self._now() + ttl),
            )
        self._start_sweeping()
        return SqliteLease(self, lease_id, float(ttl))

    async def lease(self, lease_id: int, ttl: float) -> SqliteLease:
        """A handle on a lease granted before (by this process or an earlier one)."""
        self._start_sweeping()
        return SqliteLease(self, lease_id, ttl)

    async def sweep(self) -> int:
        """End every expired lease now, deleting its keys; return how many ended."""
        async with self._reading("find expired leases"):
            rows = self._conn.execute(
                "SELECT id FROM leases WHERE expires_at <= ?", (self._now(),)
            ).fetchall()
        for (lease_id,) in rows:
            await self._end_lease(int(lease_id))
        return len(rows)

    async def _refresh(self, lease_id: int, ttl: float) -> None:
        async with self._writing("refresh a lease") as conn:
            ended = (
                conn.execute(
                    "UPDATE leases SET expires_at = ? + ttl WHERE id = ? AND expires_at > ?",
                    (self._now(), lease_id, self._now()),
                ).rowcount
                == 0
            )
        if ended:
            raise StoreError(
                f"lease {lease_id:x} has ended", hint="grant a new one", detail={"ended": True}
            )

    async def _remaining(self, lease_id: int) -> float | None:
        async with self._reading("read a lease"):
            row = self._conn.execute(
                "SELECT expires_at FROM leases WHERE id = ?", (lease_id,)
            ).fetchone()
        if row is None or row[0] <= self._now():
            return None
        return float(row[0]) - self._now()

    async def _end_lease(self, lease_id: int) -> None:
        """Delete the lease and, under one new revision, every key put under it."""
        async with self._writing("end a lease") as conn:
            keys = [
                row[0] for row in conn.execute("SELECT key FROM kv WHERE lease = ?", (lease_id,))
            ]
            conn.execute("DELETE FROM leases WHERE id = ?", (lease_id,))
            if keys:
                revision = self._current_revision() + 1
                conn.execute("UPDATE counter SET revision = ? WHERE id = 1", (revision,))
                for key in keys:
                    self._apply(conn, Delete(key), revision)
        if keys:
            self._wake_watchers()

    def _start_sweeping(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.create_task(self._sweep_forever(), name="sqlite lease sweeper")

    async def _sweep_forever(self) -> None:
        while not self._closed:
            await asyncio.sleep(_SWEEP_INTERVAL)
            try:
                await self.sweep()
            except StoreError as exc:
                if self._closed:
                    return
                log.warning("lease sweep failed: %s", exc)

    def _now(self) -> float:
        return self._clock.now() if self._clock else time.time()

    def _wake_watchers(self) -> None:
        self._committed.set()
        self._committed = asyncio.Event()

    def _current_revision(self) -> int:
        row = self._conn.execute("SELECT revision FROM counter WHERE id = 1").fetchone()
        return int(row[0])

    @staticmethod
    def _apply(conn: sqlite3.Connection, op: Put | Delete, revision: int) -> None:
        kind: Literal["put", "delete"]
        if isinstance(op, Put):
            conn.execute(
                "INSERT INTO kv (key, value, create_revision, mod_revision, lease)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET"
                " value = excluded.value, mod_revision = excluded.mod_revision,"
                " lease = excluded.lease",
                (op.key, op.value, revision, revision, op.lease),
            )
            kind, value = "put", op.value
        else:
            if conn.execute("DELETE FROM kv WHERE key = ?", (op.key,)).rowcount == 0:
                return  # deleting a missing key changes nothing, so nothing to watch
            kind, value = "delete", None
        conn.execute(
            "INSERT INTO changes (revision, key, kind, value) VALUES (?, ?, ?, ?)",
            (revision, op.key, kind, value),
        )

    @staticmethod
    def _audit_json(audit: AuditDraft) -> str:
        try:
            return json.dumps(audit.detail, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(
                f"audit detail is not JSON: {exc}", hint="use str, numbers, lists and dicts"
            ) from exc

    def _insert_audit(
        self, conn: sqlite3.Connection, audit: AuditDraft, detail: str, revision: int
    ) -> AuditRecord:
        at = self._clock.now() if self._clock else time.time()
        cursor = conn.execute(
            "INSERT INTO audit (revision, at, actor, action, app, detail, reason, request_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                revision,
                at,
                audit.actor,
                audit.action,
                audit.app,
                detail,
                audit.reason,
                audit.request_id,
            ),
        )
        # Read it back, so the record returned equals what audit() will list.
        row = conn.execute(_SELECT_AUDIT + " WHERE id = ?", (cursor.lastrowid,))
        return _audit_record(row.fetchone())

    @asynccontextmanager
    async def _reading(self, doing: str) -> AsyncIterator[None]:
        async with self._lock:
            self._check_open()
            with _sqlite_errors(doing):
                yield

    @asynccontextmanager
    async def _writing(self, doing: str) -> AsyncIterator[sqlite3.Connection]:
        """One BEGIN IMMEDIATE transaction: committed on exit, rolled back on error."""
        async with self._lock:
            self._check_open()
            with _sqlite_errors(doing):
                await self._begin_immediate()
                try:
                    yield self._conn
                    self._conn.execute("COMMIT")
                except BaseException:
                    # SQLite rolls back by itself after some errors (disk full).
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise

    async def _begin_immediate(self) -> None:
        # Another process may hold the write lock; wait for it here, yielding to
        # the event loop, instead of inside SQLite's busy handler (which blocks).
        deadline = time.monotonic() + _LOCK_WAIT
        while True:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if getattr(exc, "sqlite_errorname", "") != "SQLITE_BUSY":
                    raise
                if time.monotonic() >= deadline:
                    raise
            await asyncio.sleep(0.05)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the store is closed", hint="open it again")

    async def _migrate(self) -> None:
        async with self._writing("migrate the store schema") as conn:
            exists = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
            ).fetchone()
            version: int = (
                conn.execute("SELECT version FROM schema_version").fetchone()[0] if exists else 0
            )
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"the store has schema version {version}; this Prism knows up to"
                    f" {SCHEMA_VERSION}",
                    hint="upgrade Prism, or point it at another state directory",
                )
            for step in range(version, SCHEMA_VERSION):
                for statement in _MIGRATIONS[step]:
                    conn.execute(statement)
                conn.execute("UPDATE schema_version SET version = ?", (step + 1,))


class SqliteLease:
    """A :class:`prism.types.Lease` of a :class:`SqliteStore`."""

    __slots__ = ("_id", "_store", "_ttl")

    def __init__(self, store: SqliteStore, lease_id: int, ttl: float) -> None:
        self._store = store
        self._id = lease_id
        self._ttl = ttl

    @property
    def id(self) -> int:
        return self._id

    @property
    def ttl(self) -> float:
        return self._ttl

    async def refresh(self) -> None:
        """Extend the lease by its TTL; StoreError (``detail["ended"]``) if it has ended."""
        await self._store._refresh(self._id, self._ttl)

    async def revoke(self) -> None:
        """End the lease now, deleting its keys; a lease already gone is no error."""
        await self._store._end_lease(self._id)

    async def remaining(self) -> float | None:
        """Seconds until it expires, or None once it has ended."""
        return await self._store._remaining(self._id)

    def __repr__(self) -> str:
        return f"<SqliteLease {self._id:x} ttl={self._ttl:g}s>"
