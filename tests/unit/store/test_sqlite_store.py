"""The SQLite store keeps the Store contract: revisions, conflicts, watch, audit."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import stat
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prism.errors import Conflict, InvalidInput, StoreError
from prism.store import SqliteStore
from prism.store.sqlite import SCHEMA_VERSION
from prism.testing.memory_store import memory_store
from prism.testing.wait import eventually
from prism.types import AuditDraft, Compare, Delete, Entry, Put, Store, WatchEvent


class FakeClock:
    """Wall time that only moves when told to."""

    def __init__(self) -> None:
        self.t = 1_000.0

    def now(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
async def store() -> AsyncIterator[SqliteStore]:
    s = await memory_store()
    yield s
    await s.close()


@pytest.fixture
async def file_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = await SqliteStore.open(tmp_path / "prism.db", poll_interval=0.05)
    yield s
    await s.close()


async def next_event(events: AsyncIterator[WatchEvent], within: float = 2.0) -> WatchEvent:
    """The next event, or TimeoutError after ``within`` seconds."""
    return await asyncio.wait_for(anext(events), within)


def parked(events: AsyncGenerator[WatchEvent, None]) -> bool:
    """Whether the watch is suspended waiting for a commit: it has read all there was."""
    return getattr(events.ag_await, "__qualname__", None) == "Event.wait"


async def until_parked(events: AsyncGenerator[WatchEvent, None]) -> None:
    """Wait (bounded) until the watch has caught up and waits for the next commit."""
    await eventually(lambda: parked(events), timeout=5, interval=0.01, what="the watch to park")


async def test_new_store_is_empty_at_revision_zero(store: SqliteStore) -> None:
    """A fresh store has revision 0, no entries and no audit records."""
    assert await store.revision() == 0
    assert await store.list("") == []
    assert await store.get("/a") is None
    assert await store.audit() == []


async def test_revisions_strictly_increase(store: SqliteStore) -> None:
    """Each commit returns the previous revision plus one, and revision() agrees."""
    revisions = [await store.commit([Put(f"/k{i}", str(i))]) for i in range(5)]
    assert revisions == [1, 2, 3, 4, 5]
    assert await store.revision() == 5


async def test_put_keeps_create_revision_and_moves_mod_revision(store: SqliteStore) -> None:
    """Updating a key keeps its create_revision and sets mod_revision to the new one."""
    await store.commit([Put("/a", '"1"')])
    await store.commit([Put("/b", '"x"')])
    await store.commit([Put("/a", '"2"')])
    assert await store.get("/a") == Entry("/a", '"2"', 1, 3)


async def test_compare_and_put_succeeds_when_revision_matches(store: SqliteStore) -> None:
    """A commit whose Compare matches the key's mod_revision (or 0 for absent) applies."""
    rev = await store.commit([Put("/a", "1")], expect=[Compare("/a", 0)])
    rev2 = await store.commit([Put("/a", "2")], expect=[Compare("/a", rev)])
    assert (await store.get("/a")) == Entry("/a", "2", rev, rev2)


@pytest.mark.parametrize(
    "expect",
    [Compare("/a", 0), Compare("/a", 5), Compare("/missing", 1)],
    ids=["exists-but-expected-absent", "stale-revision", "absent-but-expected-present"],
)
async def test_failed_compare_raises_conflict_and_changes_nothing(
    store: SqliteStore, expect: Compare
) -> None:
    """A failed Compare raises Conflict naming the key; revision and values stay put."""
    await store.commit([Put("/a", "1")])
    pattern = f"key {re.escape(repr(expect.key))} changed: expected"
    with pytest.raises(Conflict, match=pattern) as info:
        await store.commit(
            [Put("/a", "2"), Put("/b", "2"), Put("/c", "3")],
            expect=[Compare("/a", 1), expect],
            audit=AuditDraft(actor="t", action="x"),
        )
    assert repr(expect.key) in info.value.message
    assert info.value.hint
    assert info.value.detail["conflicts"][0]["expected"] == expect.mod_revision
    assert await store.revision() == 1
    assert await store.list("") == [Entry("/a", "1", 1, 1)]
    assert await store.audit() == []


async def test_multi_op_commit_is_atomic_under_one_revision(store: SqliteStore) -> None:
    """All ops of one commit land together and share one revision."""
    await store.commit([Put("/a", "1")])
    rev = await store.commit([Put("/b", "2"), Put("/c", "3"), Delete("/a")])
    assert rev == 2
    assert await store.list("") == [Entry("/b", "2", 2, 2), Entry("/c", "3", 2, 2)]


async def test_failing_op_rolls_back_whole_commit(store: SqliteStore) -> None:
    """A commit rejected for one bad op applies none of its other ops."""
    with pytest.raises(InvalidInput, match=r"invalid store key: 'bad\\nkey'"):
        await store.commit([Put("/ok", "1"), Put("bad\nkey", "2")])
    with pytest.raises(InvalidInput, match="key '/ok' appears twice in one commit"):
        await store.commit([Put("/ok", "1"), Delete("/ok")])
    assert await store.revision() == 0
    assert await store.list("") == []


async def test_delete_removes_key_and_missing_delete_still_takes_revision(
    store: SqliteStore,
) -> None:
    """Delete removes a key; deleting a missing key is a no-op that still gets a revision."""
    await store.commit([Put("/a", "1")])
    assert await store.commit([Delete("/a")]) == 2
    assert await store.get("/a") is None
    assert await store.commit([Delete("/a")]) == 3
    assert await store.list("") == []


async def test_empty_commit_with_audit_gets_a_revision(store: SqliteStore) -> None:
    """A commit with no ops but an audit takes a new revision and records it there."""
    rev = await store.commit([], audit=AuditDraft(actor="ann", action="note"))
    assert rev == 1
    [record] = await store.audit()
    assert record.revision == 1


async def test_a_commit_with_several_audits_records_each_in_order_at_its_revision(
    store: SqliteStore,
) -> None:
    """Several drafts in one commit: one entry each, in the order given, all at its revision."""
    rev = await store.commit(
        [Put("/a", "1")],
        audit=[AuditDraft("ann", "release.started", "shop"), AuditDraft("ann", "release.step")],
    )
    records = await store.audit()
    assert [(r.action, r.revision) for r in records] == [
        ("release.step", rev),
        ("release.started", rev),
    ]
    assert [r.action for r in await store.audit(app="shop")] == ["release.started"]


async def test_list_matches_prefix_literally_and_sorts(store: SqliteStore) -> None:
    """list() returns keys starting with the prefix, sorted; % and _ are not wildcards."""
    keys = ["/apps/b", "/apps/a", "/apps0", "/app", "/a%b/x", "/aXb/x", "/a_b/x", "/a_bb", "/z"]
    await store.commit([Put(k, k) for k in keys])
    assert [e.key for e in await store.list("/apps/")] == ["/apps/a", "/apps/b"]
    assert [e.key for e in await store.list("/a%b/")] == ["/a%b/x"]
    assert [e.key for e in await store.list("/a_b/")] == ["/a_b/x"]
    assert [e.key for e in await store.list("/a_")] == ["/a_b/x", "/a_bb"]
    assert [e.key for e in await store.list("")] == sorted(keys)
    assert await store.list("/q") == []


async def test_stamp_changes_with_every_commit_under_its_prefix(store: SqliteStore) -> None:
    """stamp() is (entries, newest mod revision): puts and deletes under the prefix move it,
    commits elsewhere do not."""
    assert await store.stamp("/apps/") == (0, 0)
    await store.commit([Put("/apps/b", "1"), Put("/apps/a", "2")])
    assert await store.stamp("/apps/") == (2, 1)
    await store.commit([Put("/other", "3")])
    assert await store.stamp("/apps/") == (2, 1)
    swapped = await store.commit([Delete("/apps/a"), Put("/apps/c", "4")])
    assert await store.stamp("/apps/") == (2, swapped)
    await store.commit([Delete("/apps/b")])
    assert await store.stamp("/apps/") == (1, swapped)


async def test_audit_is_newest_first_and_filters_by_app() -> None:
    """audit() lists newest first, honours limit, and can keep only one app's records."""
    clock = FakeClock()
    store = await memory_store(clock=clock)
    try:
        await store.commit(
            [Put("/apps/shop", "{}")],
            audit=AuditDraft("ann", "create", "shop", {"n": 1}, "new app"),
        )
        clock.t += 1
        await store.commit([Put("/apps/blog", "{}")], audit=AuditDraft("bob", "create", "blog"))
        clock.t += 1
        await store.record(AuditDraft("eve", "refuse", "shop", {"why": ["gate"]}))
        records = await store.audit()
        assert [(r.actor, r.revision, r.at) for r in records] == [
            ("eve", 2, 1002.0),
            ("bob", 2, 1001.0),
            ("ann", 1, 1000.0),
        ]
        assert records[2].detail == {"n": 1}
        assert records[2].reason == "new app"
        assert [r.actor for r in await store.audit(app="shop")] == ["eve", "ann"]
        assert [r.actor for r in await store.audit(limit=1)] == ["eve"]
        assert await store.audit(app="none") == []
    finally:
        await store.close()


async def test_record_does_not_bump_revision(store: SqliteStore) -> None:
    """record() stores an entry at the current revision and leaves the revision alone."""
    await store.commit([Put("/a", "1")])
    record = await store.record(AuditDraft("ann", "refuse", "shop", {"k": [1, 2]}, "gate red"))
    assert await store.revision() == 1
    assert record.revision == 1
    assert await store.audit() == [record]


async def test_bad_audit_input_is_rejected(store: SqliteStore) -> None:
    """Non-JSON audit detail and a limit below 1 raise InvalidInput and change nothing."""
    with pytest.raises(InvalidInput, match="audit detail is not JSON: Object of type object"):
        await store.commit([Put("/a", "1")], audit=AuditDraft("a", "b", detail={"x": object()}))
    with pytest.raises(InvalidInput, match=r"invalid audit limit: 0 \(use a limit >= 1\)"):
        await store.audit(limit=0)
    assert await store.revision() == 0


async def test_watch_replays_history_then_live_events_in_order(store: SqliteStore) -> None:
    """watch() yields past events after from_revision, then events committed while waiting."""
    await store.commit([Put("/apps/a", "1")])  # 1
    await store.commit([Put("/other", "x")])  # 2
    await store.commit([Put("/apps/b", "2"), Delete("/apps/a")])  # 3
    await store.commit([Delete("/apps/zzz")])  # 4: deletes nothing, so no event
    async with aclosing(store.watch("/apps/", from_revision=1)) as events:
        assert await next_event(events) == WatchEvent("put", "/apps/b", "2", 3)
        assert await next_event(events) == WatchEvent("delete", "/apps/a", None, 3)
        waiting = asyncio.create_task(next_event(events))
        await until_parked(events)  # it read all there was and found nothing new
        assert not waiting.done()
        await store.commit([Put("/other", "y")])  # 5: outside the prefix
        await store.commit([Put("/apps/c", "3")])  # 6
        assert await waiting == WatchEvent("put", "/apps/c", "3", 6)
        await store.commit([Put("/apps/c", "4")])
        await store.commit([Put("/apps/d", "5")])
        assert await next_event(events) == WatchEvent("put", "/apps/c", "4", 7)
        assert await next_event(events) == WatchEvent("put", "/apps/d", "5", 8)
        extra = asyncio.create_task(next_event(events, within=0.3))
        with pytest.raises(TimeoutError, match=r"^$"):  # wait_for's own: no message
            await extra  # nothing duplicated


async def test_watch_from_zero_sees_everything_and_concurrent_commits(store: SqliteStore) -> None:
    """Many commits racing a watcher are each seen exactly once, in revision order."""
    seen: list[int] = []

    async def consume() -> None:
        async with aclosing(store.watch("", from_revision=0)) as events:
            async for event in events:
                seen.append(event.revision)
                if event.revision == 60:
                    return

    consumer = asyncio.create_task(consume())
    for i in range(30):
        await store.commit([Put(f"/k{i % 4}", str(i))])
        await asyncio.sleep(0)  # a turn of the loop, so the watcher races the commits
    await asyncio.gather(*(store.commit([Put(f"/p{i}", "v")]) for i in range(30)))
    await asyncio.wait_for(consumer, 2)
    assert seen == list(range(1, 61))


async def test_watch_spans_more_than_one_batch(store: SqliteStore) -> None:
    """A watch far behind replays a long history completely, without gaps."""
    for i in range(1_200):
        await store.commit([Put("/k", str(i))])
    async with aclosing(store.watch("/k", from_revision=100)) as events:
        revisions = [(await next_event(events)).revision for _ in range(1_100)]
    assert revisions == list(range(101, 1_201))


async def test_close_ends_watch() -> None:
    """Closing the store ends a waiting watch, and later calls raise StoreError."""
    store = await memory_store()
    events = store.watch("", from_revision=0)
    waiting = asyncio.create_task(anext(events, None))
    await until_parked(events)
    await store.close()
    assert await asyncio.wait_for(waiting, 1) is None
    await store.close()  # idempotent
    with pytest.raises(StoreError, match=r"the store is closed \(open it again\)"):
        await store.revision()


async def test_file_store_persists_across_reopen(tmp_path: Path) -> None:
    """Entries, revision, change log and audit survive close and reopen of the file."""
    path = tmp_path / "prism.db"
    async with await SqliteStore.open(path) as first:
        await first.commit([Put("/a", "1")], audit=AuditDraft("ann", "create", "shop"))
        await first.commit([Put("/a", "2"), Put("/b", "3")])
    async with await SqliteStore.open(path) as again:
        assert await again.revision() == 2
        assert await again.list("") == [Entry("/a", "2", 1, 2), Entry("/b", "3", 2, 2)]
        assert [r.action for r in await again.audit()] == ["create"]
        async with aclosing(again.watch("", from_revision=0)) as events:
            assert (await next_event(events)).value == "1"
        assert await again.commit([Delete("/b")]) == 3


async def test_file_is_private(tmp_path: Path) -> None:
    """The store file and its WAL are created owner-only (0600)."""
    path = tmp_path / "prism.db"
    async with await SqliteStore.open(path) as s:
        await s.commit([Put("/a", "1")])
        for name in ("prism.db", "prism.db-wal"):
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600


async def test_second_instance_sees_commits_through_poll(
    tmp_path: Path, file_store: SqliteStore
) -> None:
    """A watch on a second store of the same file sees the first one's commits by polling."""
    async with await SqliteStore.open(tmp_path / "prism.db", poll_interval=0.05) as other:
        async with aclosing(other.watch("/apps/", from_revision=0)) as events:
            waiting = asyncio.create_task(next_event(events))
            await until_parked(events)  # so the commit can only reach it by polling
            await file_store.commit([Put("/apps/a", "1")])
            assert await waiting == WatchEvent("put", "/apps/a", "1", 1)
        pattern = "key '/apps/a' changed: expected mod_revision 0, found 1"
        with pytest.raises(Conflict, match=pattern):
            await other.commit([Put("/apps/a", "2")], expect=[Compare("/apps/a", 0)])


async def test_commit_waits_for_another_writer(tmp_path: Path, file_store: SqliteStore) -> None:
    """A commit waits (without blocking the loop) for another process's write lock."""
    other = sqlite3.connect(tmp_path / "prism.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        loop = asyncio.get_running_loop()
        loop.call_later(0.2, other.execute, "COMMIT")
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)  # not a wait: the tick that shows the loop is free

        ticker = asyncio.create_task(tick())
        assert await file_store.commit([Put("/a", "1")]) == 1
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        assert ticks >= 5  # the event loop kept running while the commit waited
    finally:
        other.close()


async def test_commit_gives_up_on_a_stuck_writer(
    tmp_path: Path, file_store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write lock held too long raises StoreError with a hint, and changes nothing."""
    monkeypatch.setattr("prism.store.sqlite._LOCK_WAIT", 0.2)
    other = sqlite3.connect(tmp_path / "prism.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreError, match="could not commit: database is locked") as info:
            await file_store.commit([Put("/a", "1")])
        assert isinstance(info.value.__cause__, sqlite3.OperationalError)
        assert info.value.hint
        assert "another process" in info.value.hint
        other.execute("ROLLBACK")
    finally:
        other.close()
    assert await file_store.revision() == 0


def test_sqlite_store_satisfies_store_protocol() -> None:
    """SqliteStore is a prism.types.Store (checked by mypy on this assignment)."""
    store_type: type[Store] = SqliteStore
    assert store_type is SqliteStore


async def test_schema_version_is_recorded_and_newer_files_refused(tmp_path: Path) -> None:
    """A new file gets the current schema version; a file from a newer Prism is refused."""
    from prism.store.sqlite import SCHEMA_VERSION

    path = tmp_path / "prism.db"
    async with await SqliteStore.open(path):
        pass
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        conn.execute("UPDATE schema_version SET version = 99")
    conn.close()
    with pytest.raises(StoreError, match="schema version 99"):
        await SqliteStore.open(path)


async def test_a_version_one_file_is_migrated_and_keeps_its_entries(tmp_path: Path) -> None:
    """A store written before the revisions index exists gets it, and loses nothing."""
    path = tmp_path / "prism.db"
    async with await SqliteStore.open(path) as store:
        await store.commit([Put("/apps/a", "1"), Put("/apps/b", "2")])
    with sqlite3.connect(path) as conn:
        conn.execute("DROP INDEX kv_revisions")
        conn.execute("DROP INDEX kv_by_lease")
        conn.execute("DROP TABLE leases")
        conn.execute("ALTER TABLE kv DROP COLUMN lease")
        conn.execute("ALTER TABLE audit DROP COLUMN request_id")
        conn.execute("UPDATE schema_version SET version = 1")
    conn.close()
    async with await SqliteStore.open(path) as store:
        assert await store.stamp("/apps/") == (2, 1)
        assert [e.value for e in await store.list("/apps/")] == ["1", "2"]
    with sqlite3.connect(path) as conn:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        version = conn.execute("SELECT version FROM schema_version").fetchone()[0]
    conn.close()
    assert {"kv_revisions", "leases", "kv_by_lease"} <= names
    assert version == SCHEMA_VERSION == 4


async def test_a_version_three_file_gains_request_ids_and_keeps_its_audit(tmp_path: Path) -> None:
    """Audit records written before request ids were kept read back with none; new ones
    carry theirs."""
    path = tmp_path / "prism.db"
    async with await SqliteStore.open(path) as store:
        await store.commit([Put("/apps/a", "1")], audit=AuditDraft(actor="t", action="old"))
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE audit DROP COLUMN request_id")
        conn.execute("UPDATE schema_version SET version = 3")
    conn.close()
    async with await SqliteStore.open(path) as store:
        await store.record(AuditDraft(actor="t", action="new", request_id="req-1"))
        records = await store.audit(limit=10)
    assert [(r.action, r.request_id) for r in records] == [("new", "req-1"), ("old", None)]


async def test_unusable_paths_raise_store_error_with_hint(tmp_path: Path) -> None:
    """A missing directory or a file that is not a database raises StoreError with a hint."""
    with pytest.raises(StoreError, match=r"could not open the store at .*no-such-dir") as info:
        await SqliteStore.open(tmp_path / "no-such-dir" / "prism.db")
    assert info.value.hint
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database at all" * 100)
    pattern = r"could not set up the store .*: file is not a database"
    with pytest.raises(StoreError, match=pattern) as info:
        await SqliteStore.open(garbage)
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)
    assert info.value.hint
    assert "not a Prism store" in info.value.hint


HOSTILE_KEYS = ["", "a\x00b", "a\nb", "tab\there", "caf\u00e9", "\x7f", "x" * 513, None, 7]


@pytest.mark.parametrize("key", HOSTILE_KEYS, ids=repr)
async def test_hostile_keys_are_rejected(store: SqliteStore, key: object) -> None:
    """Empty, non-printable, non-ASCII, over-long and non-str keys raise InvalidInput."""
    refused = f"^invalid store key: {re.escape(repr(key)[:40])}"
    with pytest.raises(InvalidInput, match=refused):
        await store.commit([Put(key, "v")])  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match=refused):
        await store.commit([Delete(key)])  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match=refused):
        await store.commit([], expect=[Compare(key, 0)])  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match=refused):
        await store.get(key)  # type: ignore[arg-type]
    assert await store.revision() == 0


async def test_longest_key_is_accepted(store: SqliteStore) -> None:
    """A 512-character printable key is the limit, and it is accepted."""
    key = "/" + "k" * 511
    await store.commit([Put(key, "v")])
    assert (await store.get(key)) == Entry(key, "v", 1, 1)


@pytest.mark.parametrize("prefix", ["a\nb", "\x00", "x" * 513])
async def test_hostile_prefixes_are_rejected(store: SqliteStore, prefix: str) -> None:
    """list() and watch() refuse prefixes a key could never have, at the call."""
    refused = f"^invalid store prefix: {re.escape(repr(prefix)[:40])}"
    with pytest.raises(InvalidInput, match=refused):
        await store.list(prefix)
    with pytest.raises(InvalidInput, match=refused):
        store.watch(prefix, from_revision=0)


KEYS = st.sampled_from(["/a", "/a/b", "/a%", "/a_", "/b", "/b/c/d", "/%", "/_"])
VALUES = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=8)
COMMITS = st.lists(
    st.dictionaries(KEYS, st.none() | VALUES, max_size=4),  # None means Delete
    max_size=15,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(commits=COMMITS)
async def test_random_commits_match_a_dict_model(commits: list[dict[str, str | None]]) -> None:
    """Any commit sequence keeps revisions +1 each and list() equal to a plain dict model."""
    store = await memory_store()
    try:
        model: dict[str, str] = {}
        previous = 0
        for changes in commits:
            ops = [Delete(k) if v is None else Put(k, v) for k, v in changes.items()]
            revision = await store.commit(ops)
            assert revision == previous + 1
            previous = revision
            for key, value in changes.items():
                if value is None:
                    model.pop(key, None)
                else:
                    model[key] = value
            assert [(e.key, e.value) for e in await store.list("")] == sorted(model.items())
        for prefix in ("/a", "/a%", "/a_", "/b/"):
            expected = sorted((k, v) for k, v in model.items() if k.startswith(prefix))
            assert [(e.key, e.value) for e in await store.list(prefix)] == expected
    finally:
        await store.close()


# --------------------------------------------------------------------------- leases


async def test_a_leased_key_vanishes_when_its_lease_expires_unrefreshed() -> None:
    """Put under a lease, the key lives while refreshed and goes (watchably) once it expires."""
    clock = FakeClock()
    store = await SqliteStore.open(":memory:", clock=clock)
    try:
        lease = await store.grant(10)
        await store.commit([Put("registrations/shop/blue/r1", "{}", lease=lease.id)])
        seen = await store.revision()
        clock.t += 8
        await lease.refresh()
        clock.t += 8
        assert await store.sweep() == 0
        assert await store.get("registrations/shop/blue/r1") is not None
        assert await lease.remaining() == pytest.approx(2.0)
        clock.t += 3
        assert await store.sweep() == 1
        assert await store.get("registrations/shop/blue/r1") is None
        assert await lease.remaining() is None
        events = store.watch("registrations/", from_revision=seen)
        event = await next_event(events)
        assert (event.kind, event.key) == ("delete", "registrations/shop/blue/r1")
        await events.aclose()
        with pytest.raises(StoreError, match="has ended"):
            await lease.refresh()
        with pytest.raises(StoreError, match="has ended"):
            await store.commit([Put("x", "{}", lease=lease.id)])
        assert await store.get("x") is None
    finally:
        await store.close()


async def test_revoking_a_lease_deletes_its_keys_at_once(store: SqliteStore) -> None:
    """Revoke ends the lease and its keys under one revision; other keys stay."""
    lease = await store.grant(30)
    await store.commit(
        [Put("a", "1", lease=lease.id), Put("b", "2", lease=lease.id), Put("c", "3")]
    )
    before = await store.revision()
    await lease.revoke()
    assert await store.revision() == before + 1
    assert [e.key for e in await store.list("")] == ["c"]
    await lease.revoke()  # already gone: no error


async def test_a_put_without_the_lease_detaches_the_key(store: SqliteStore) -> None:
    """Like etcd: a later put without a lease keeps the key when the lease ends."""
    lease = await store.grant(30)
    await store.commit([Put("a", "1", lease=lease.id)])
    await store.commit([Put("a", "2")])
    await lease.revoke()
    assert (await store.get("a")).value == "2"  # type: ignore[union-attr]


async def test_leases_outlive_a_restart_and_still_expire(tmp_path: Path) -> None:
    """A lease granted before a restart is still swept when it expires after it."""
    clock = FakeClock()
    path = tmp_path / "prism.db"
    first = await SqliteStore.open(path, clock=clock)
    lease = await first.grant(5)
    await first.commit([Put("k", "v", lease=lease.id)])
    await first.close()
    second = await SqliteStore.open(path, clock=clock)
    try:
        handle = await second.lease(lease.id, 5)
        await handle.refresh()
        clock.t += 6
        assert await second.sweep() == 1
        assert await second.get("k") is None
    finally:
        await second.close()


@pytest.mark.parametrize("ttl", [0, -1, 1e9, True, "5"])
async def test_hostile_lease_ttls_are_refused(store: SqliteStore, ttl: object) -> None:
    """A TTL must be a number of seconds in (0, 86400]."""
    with pytest.raises(InvalidInput, match="invalid lease ttl"):
        await store.grant(ttl)  # type: ignore[arg-type]
