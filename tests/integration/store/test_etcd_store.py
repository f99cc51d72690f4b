"""The etcd store keeps the Store contract against a real etcd, and survives etcd failing.

The first half mirrors tests/unit/store/test_sqlite_store.py assertion for
assertion, so both stores provably agree; where etcd differs by design
(revisions are etcd's, shared with every other writer, so they increase but do
not count from 1) the assertion is relative and the docstring says so. The
second half crashes, freezes, restarts, compacts and partitions real etcd
servers. Every server is stopped by PID at teardown.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prism.errors import Compacted, Conflict, InvalidInput, StoreError
from prism.store.etcd import EtcdStore, keep_alive, parse_store_url
from prism.testing.etcd import EtcdServer, compact, make_test_tls, start_cluster, start_etcd
from prism.testing.processes import free_port
from prism.types import AuditDraft, Compare, Delete, Entry, Lease, Put, Store, WatchEvent

pytestmark = pytest.mark.etcd

_names = itertools.count()


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


def unique_prefix() -> str:
    """A store prefix no other test uses (the module's tests share one etcd)."""
    return f"test/p{next(_names)}-{time.monotonic_ns() % 10**9}"


@pytest.fixture(scope="module")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """One real etcd member for the whole module, on free ports, in a temp dir."""
    server = start_etcd(tmp_path_factory.mktemp("etcd"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    """A private etcd member this test may kill, freeze, restart or compact."""
    server = start_etcd(tmp_path / "own")
    try:
        yield server
    finally:
        server.stop()


OpenStore = Callable[..., Awaitable[EtcdStore]]


@pytest.fixture
async def open_store() -> AsyncIterator[OpenStore]:
    """``await open_store(url, **options)``: an EtcdStore that is closed at teardown."""
    stores: list[EtcdStore] = []

    async def opener(url: str, **options: Any) -> EtcdStore:
        store = await EtcdStore.open(url, **options)
        stores.append(store)
        return store

    yield opener
    for store in stores:
        await store.close()


@pytest.fixture
async def store(etcd_server: EtcdServer, open_store: OpenStore) -> EtcdStore:
    """An EtcdStore on the shared etcd, under a prefix of its own."""
    return await open_store(etcd_server.url(unique_prefix()))


async def next_event(events: AsyncIterator[WatchEvent], within: float = 2.0) -> WatchEvent:
    """The next event, or TimeoutError after ``within`` seconds."""
    return await asyncio.wait_for(anext(events), within)


async def eventually(check: Callable[[], Awaitable[bool]], *, within: float) -> float:
    """Poll ``check`` until true; return the seconds it took, or fail after ``within``."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > within:
            raise AssertionError(f"not true within {within}s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


# -- the Store contract, as the SQLite store tests state it --------------------------------


async def test_new_prefix_is_empty(store: EtcdStore) -> None:
    """A fresh prefix has no entries, no audit records, an empty stamp; revision() is etcd's."""
    assert await store.revision() >= 1  # a new etcd starts at revision 1
    assert await store.list("") == []
    assert await store.get("/a") is None
    assert await store.audit() == []
    assert await store.stamp("") == (0, 0)


async def test_revisions_strictly_increase(store: EtcdStore) -> None:
    """Each commit returns a higher revision (etcd's), and revision() is the latest one."""
    revisions = [await store.commit([Put(f"/k{i}", str(i))]) for i in range(5)]
    assert revisions == sorted(set(revisions))
    assert await store.revision() == revisions[-1]
    assert [e.mod_revision for e in await store.list("/k")] == revisions


async def test_put_keeps_create_revision_and_moves_mod_revision(store: EtcdStore) -> None:
    """Updating a key keeps its create_revision and sets mod_revision to the new one."""
    first = await store.commit([Put("/a", '"1"')])
    await store.commit([Put("/b", '"x"')])
    third = await store.commit([Put("/a", '"2"')])
    assert await store.get("/a") == Entry("/a", '"2"', first, third)


async def test_compare_and_put_succeeds_when_revision_matches(store: EtcdStore) -> None:
    """A commit whose Compare matches the key's mod_revision (or 0 for absent) applies."""
    rev = await store.commit([Put("/a", "1")], expect=[Compare("/a", 0)])
    rev2 = await store.commit([Put("/a", "2")], expect=[Compare("/a", rev)])
    assert (await store.get("/a")) == Entry("/a", "2", rev, rev2)


@pytest.mark.parametrize(
    ("key", "expected"),
    [("/a", lambda r: 0), ("/a", lambda r: r + 1000), ("/missing", lambda r: r)],
    ids=["exists-but-expected-absent", "stale-revision", "absent-but-expected-present"],
)
async def test_failed_compare_raises_conflict_and_changes_nothing(
    store: EtcdStore, key: str, expected: Callable[[int], int]
) -> None:
    """A failed Compare raises Conflict naming the key and both revisions; nothing changes."""
    rev = await store.commit([Put("/a", "1")])
    expect = Compare(key, expected(rev))
    with pytest.raises(Conflict, match=re.escape(f"key {key!r} changed")) as info:
        await store.commit(
            [Put("/a", "2"), Put("/b", "2"), Put("/c", "3")],
            expect=[Compare("/a", rev), expect],
            audit=AuditDraft(actor="t", action="x"),
        )
    assert info.value.hint
    conflict = info.value.detail["conflicts"][0]
    assert conflict == {
        "key": key,
        "expected": expect.mod_revision,
        "actual": rev if key == "/a" else 0,
    }
    assert f"expected mod_revision {expect.mod_revision}" in info.value.message
    assert await store.revision() == rev
    assert await store.list("") == [Entry("/a", "1", rev, rev)]
    assert await store.audit() == []


async def test_multi_op_commit_is_atomic_under_one_revision(store: EtcdStore) -> None:
    """All ops of one commit land together and share one revision."""
    await store.commit([Put("/a", "1")])
    rev = await store.commit([Put("/b", "2"), Put("/c", "3"), Delete("/a")])
    assert await store.list("") == [Entry("/b", "2", rev, rev), Entry("/c", "3", rev, rev)]


async def test_failing_op_rolls_back_whole_commit(store: EtcdStore) -> None:
    """A commit rejected for one bad op applies none of its other ops."""
    before = await store.revision()
    with pytest.raises(InvalidInput, match="invalid store key"):
        await store.commit([Put("/ok", "1"), Put("bad\nkey", "2")])
    with pytest.raises(InvalidInput, match="appears twice"):
        await store.commit([Put("/ok", "1"), Delete("/ok")])
    assert await store.revision() == before
    assert await store.list("") == []


async def test_delete_removes_key_and_missing_delete_still_takes_revision(
    store: EtcdStore,
) -> None:
    """Delete removes a key; deleting a missing key is a no-op that still gets a revision."""
    first = await store.commit([Put("/a", "1")])
    second = await store.commit([Delete("/a")])
    assert second > first
    assert await store.get("/a") is None
    assert await store.commit([Delete("/a")]) > second
    assert await store.list("") == []


async def test_empty_commit_with_audit_gets_a_revision(store: EtcdStore) -> None:
    """A commit with no ops but an audit takes a new revision and records it there."""
    before = await store.revision()
    rev = await store.commit([], audit=AuditDraft(actor="ann", action="note"))
    assert rev > before
    [record] = await store.audit()
    assert record.revision == rev


async def test_a_commit_with_several_audits_records_each_in_order_at_its_revision(
    store: EtcdStore,
) -> None:
    """Several drafts in one commit: one entry each, with consecutive ids in the order
    given, all at its revision; the next commit's entry follows them."""
    rev = await store.commit(
        [Put("/a", "1")],
        audit=[AuditDraft("ann", "release.started", "shop"), AuditDraft("ann", "release.step")],
    )
    later = await store.commit([], audit=AuditDraft("bob", "note"))
    records = await store.audit()
    assert [(r.action, r.revision) for r in records] == [
        ("note", later),
        ("release.step", rev),
        ("release.started", rev),
    ]
    assert [r.id for r in records] == [3, 2, 1]
    assert [r.action for r in await store.audit(app="shop")] == ["release.started"]


async def test_list_matches_prefix_literally_and_sorts(store: EtcdStore) -> None:
    """list() returns keys starting with the prefix, sorted; % and _ are not wildcards."""
    keys = ["/apps/b", "/apps/a", "/apps0", "/app", "/a%b/x", "/aXb/x", "/a_b/x", "/a_bb", "/z"]
    await store.commit([Put(k, k) for k in keys])
    assert [e.key for e in await store.list("/apps/")] == ["/apps/a", "/apps/b"]
    assert [e.key for e in await store.list("/a%b/")] == ["/a%b/x"]
    assert [e.key for e in await store.list("/a_b/")] == ["/a_b/x"]
    assert [e.key for e in await store.list("/a_")] == ["/a_b/x", "/a_bb"]
    assert [e.key for e in await store.list("")] == sorted(keys)
    assert await store.list("/q") == []


async def test_list_reads_many_pages_as_one_snapshot(store: EtcdStore) -> None:
    """A list longer than one page (500 keys) comes back complete and sorted."""
    keys = [f"/many/{i:04d}" for i in range(1_234)]
    for start in range(0, len(keys), 100):
        await store.commit([Put(k, "v") for k in keys[start : start + 100]])
    assert [e.key for e in await store.list("/many/")] == keys


async def test_stamp_changes_with_every_commit_under_its_prefix(store: EtcdStore) -> None:
    """stamp() is (entries, newest mod revision): puts and deletes under the prefix move it,
    commits elsewhere do not."""
    assert await store.stamp("/apps/") == (0, 0)
    first = await store.commit([Put("/apps/b", "1"), Put("/apps/a", "2")])
    assert await store.stamp("/apps/") == (2, first)
    await store.commit([Put("/other", "3")])
    assert await store.stamp("/apps/") == (2, first)
    swapped = await store.commit([Delete("/apps/a"), Put("/apps/c", "4")])
    assert await store.stamp("/apps/") == (2, swapped)
    await store.commit([Delete("/apps/b")])
    assert await store.stamp("/apps/") == (1, swapped)


async def test_audit_is_newest_first_and_filters_by_app(
    etcd_server: EtcdServer, open_store: OpenStore
) -> None:
    """audit() lists newest first, honours limit, and can keep only one app's records; a
    record keeps the request id it was made with."""
    clock = FakeClock()
    store = await open_store(etcd_server.url(unique_prefix()), clock=clock)
    r1 = await store.commit(
        [Put("/apps/shop", "{}")],
        audit=AuditDraft("ann", "create", "shop", {"n": 1}, "new app"),
    )
    clock.t += 1
    r2 = await store.commit([Put("/apps/blog", "{}")], audit=AuditDraft("bob", "create", "blog"))
    clock.t += 1
    await store.record(AuditDraft("eve", "refuse", "shop", {"why": ["gate"]}, request_id="r-9"))
    records = await store.audit()
    assert [r.request_id for r in records] == ["r-9", None, None]
    assert [(r.actor, r.revision, r.at) for r in records] == [
        ("eve", r2, 1002.0),
        ("bob", r2, 1001.0),
        ("ann", r1, 1000.0),
    ]
    assert [r.id for r in records] == [3, 2, 1]  # unique and increasing, from 1 per prefix
    assert records[2].detail == {"n": 1}
    assert records[2].reason == "new app"
    assert [r.actor for r in await store.audit(app="shop")] == ["eve", "ann"]
    assert [r.actor for r in await store.audit(limit=1)] == ["eve"]
    assert [r.actor for r in await store.audit(app="shop", limit=1)] == ["eve"]
    assert await store.audit(app="none") == []


async def test_audit_ids_stay_unique_across_racing_writers(
    etcd_server: EtcdServer, open_store: OpenStore
) -> None:
    """Two stores (two control planes) writing audited commits at once never share an id."""
    url = etcd_server.url(unique_prefix())
    one, two = await open_store(url), await open_store(url)

    async def write(store: EtcdStore, actor: str) -> None:
        for i in range(15):
            await store.commit([Put(f"/{actor}/{i}", "1")], audit=AuditDraft(actor, "put", actor))

    await asyncio.gather(write(one, "a"), write(two, "b"))
    records = await one.audit(limit=100)
    assert [r.id for r in records] == list(range(30, 0, -1))
    assert [r.revision for r in records] == sorted((r.revision for r in records), reverse=True)
    assert len(await two.audit(app="b")) == 15


async def test_one_store_s_concurrent_audited_writes_all_land(store: EtcdStore) -> None:
    """A control plane writing many audited entries at once (a fleet's nodes lost and
    back in one burst) while it commits a change: every write lands, none is starved by
    the others taking the next audit id, and the ids stay unique and dense."""
    records = [
        store.record(AuditDraft("fleet", "node.lost", None, {"node": f"n{i}"})) for i in range(150)
    ]
    commits = [
        store.commit([Put(f"/c/{i}", "1")], audit=AuditDraft("ann", "put", "shop"))
        for i in range(10)
    ]
    await asyncio.gather(*records, *commits)
    ids = [r.id for r in await store.audit(limit=500)]
    assert sorted(ids) == list(range(1, 161))
    assert len(await store.list("/c/")) == 10


async def test_record_carries_the_newest_commit_and_changes_no_state(store: EtcdStore) -> None:
    """record() stores an entry at the newest commit's revision and changes no state (the
    audit key itself takes an etcd revision, so unlike SQLite, revision() moves past it)."""
    rev = await store.commit([Put("/a", "1")])
    record = await store.record(AuditDraft("ann", "refuse", "shop", {"k": [1, 2]}, "gate red"))
    assert record.revision == rev
    assert await store.audit() == [record]
    assert await store.list("") == [Entry("/a", "1", rev, rev)]
    assert await store.stamp("") == (1, rev)
    again = await store.record(AuditDraft("bob", "refuse", "shop"))
    assert again.revision == rev  # still the newest commit, not the previous record
    assert again.id == record.id + 1


async def test_bad_audit_input_is_rejected(store: EtcdStore) -> None:
    """Non-JSON audit detail and a limit below 1 raise InvalidInput and change nothing."""
    before = await store.revision()
    with pytest.raises(InvalidInput, match="not JSON"):
        await store.commit([Put("/a", "1")], audit=AuditDraft("a", "b", detail={"x": object()}))
    with pytest.raises(InvalidInput, match="limit"):
        await store.audit(limit=0)
    assert await store.revision() == before


HOSTILE_KEYS = ["", "a\x00b", "a\nb", "tab\there", "caf\u00e9", "\x7f", "x" * 513, None, 7]


@pytest.mark.parametrize("key", HOSTILE_KEYS, ids=repr)
async def test_hostile_keys_are_rejected(store: EtcdStore, key: object) -> None:
    """Empty, non-printable, non-ASCII, over-long and non-str keys raise InvalidInput."""
    before = await store.revision()
    with pytest.raises(InvalidInput, match="invalid store key"):
        await store.commit([Put(key, "v")])  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="invalid store key"):
        await store.commit([Delete(key)])  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="invalid store key"):
        await store.commit([], expect=[Compare(key, 0)])  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="invalid store key"):
        await store.get(key)  # type: ignore[arg-type]
    assert await store.revision() == before


async def test_longest_key_is_accepted(store: EtcdStore) -> None:
    """A 512-character printable key is the limit, and it is accepted."""
    key = "/" + "k" * 511
    rev = await store.commit([Put(key, "v")])
    assert (await store.get(key)) == Entry(key, "v", rev, rev)


@pytest.mark.parametrize("prefix", ["a\nb", "\x00", "x" * 513])
async def test_hostile_prefixes_are_rejected(store: EtcdStore, prefix: str) -> None:
    """list() and watch() refuse prefixes a key could never have, at the call."""
    with pytest.raises(InvalidInput, match="invalid store prefix"):
        await store.list(prefix)
    with pytest.raises(InvalidInput, match="invalid store prefix"):
        store.watch(prefix, from_revision=0)


async def test_too_big_a_commit_is_refused_whole(store: EtcdStore) -> None:
    """A commit over etcd's 128-ops limit raises StoreError naming the limit; nothing lands."""
    before = await store.revision()
    with pytest.raises(StoreError, match="too many operations") as info:
        await store.commit([Put(f"/big/{i}", "v") for i in range(200)])
    assert info.value.hint
    assert "--max-txn-ops" in info.value.hint
    assert await store.list("/big/") == []
    assert await store.revision() == before


async def test_prefixes_keep_stores_apart(etcd_server: EtcdServer, open_store: OpenStore) -> None:
    """Two stores on one etcd under different prefixes see none of each other's keys or audit."""
    one = await open_store(etcd_server.url(unique_prefix()))
    two = await open_store(etcd_server.url(unique_prefix()))
    start = await two.revision()
    await one.commit([Put("/apps/a", "1")], audit=AuditDraft("ann", "create", "a"))
    assert await two.list("") == []
    assert await two.audit() == []
    assert await two.stamp("") == (0, 0)
    async with aclosing(two.watch("", from_revision=start)) as events:
        with pytest.raises(TimeoutError):
            await next_event(events, within=0.3)


async def test_etcd_store_satisfies_store_protocol(store: EtcdStore) -> None:
    """EtcdStore is a prism.types.Store and its leases are Leases (checked by mypy here)."""
    store_type: type[Store] = EtcdStore
    lease: Lease = await store.grant(5)
    assert store_type is EtcdStore
    await lease.revoke()


KEYS = st.sampled_from(["/a", "/a/b", "/a%", "/a_", "/b", "/b/c/d", "/%", "/_"])
VALUES = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=8)
COMMITS = st.lists(st.dictionaries(KEYS, st.none() | VALUES, max_size=4), max_size=12)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(commits=COMMITS)
async def test_random_commits_match_a_dict_model(
    etcd_server: EtcdServer, commits: list[dict[str, str | None]]
) -> None:
    """Any commit sequence keeps revisions increasing and list() equal to a plain dict model."""
    store = await EtcdStore.open(etcd_server.url(unique_prefix()))
    try:
        model: dict[str, str] = {}
        previous = 0
        for changes in commits:
            ops = [Delete(k) if v is None else Put(k, v) for k, v in changes.items()]
            revision = await store.commit(ops)
            assert revision > previous
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


# -- watch --------------------------------------------------------------------------------


async def test_watch_replays_history_then_live_events_in_order(store: EtcdStore) -> None:
    """watch() yields past events after from_revision, then events committed while waiting;
    audit records and the store's own bookkeeping keys never show up."""
    r1 = await store.commit([Put("/apps/a", "1")])
    await store.commit([Put("/other", "x")], audit=AuditDraft("ann", "put"))
    r3 = await store.commit([Put("/apps/b", "2"), Delete("/apps/a")])
    await store.commit([Delete("/apps/zzz")])  # deletes nothing, so no event
    async with aclosing(store.watch("/apps/", from_revision=r1)) as events:
        assert await next_event(events) == WatchEvent("put", "/apps/b", "2", r3)
        assert await next_event(events) == WatchEvent("delete", "/apps/a", None, r3)
        waiting = asyncio.create_task(next_event(events))
        await asyncio.sleep(0.05)  # the watcher is now parked waiting for a commit
        assert not waiting.done()
        await store.commit([Put("/other", "y")])  # outside the prefix
        r6 = await store.commit([Put("/apps/c", "3")], audit=AuditDraft("bob", "put", "c"))
        assert await waiting == WatchEvent("put", "/apps/c", "3", r6)
        r7 = await store.commit([Put("/apps/c", "4")])
        r8 = await store.commit([Put("/apps/d", "5")])
        assert await next_event(events) == WatchEvent("put", "/apps/c", "4", r7)
        assert await next_event(events) == WatchEvent("put", "/apps/d", "5", r8)
        with pytest.raises(TimeoutError):
            await next_event(events, within=0.3)  # nothing duplicated


async def test_watch_from_zero_sees_everything_and_concurrent_commits(store: EtcdStore) -> None:
    """Many commits racing a watcher are each seen exactly once, in revision order."""
    start = await store.revision()
    seen: list[int] = []
    done = asyncio.Event()

    async def consume() -> None:
        async with aclosing(store.watch("", from_revision=start)) as events:
            async for event in events:
                seen.append(event.revision)
                if len(seen) == 60:
                    done.set()
                    return

    consumer = asyncio.create_task(consume())
    revisions = []
    for i in range(30):
        revisions.append(await store.commit([Put(f"/k{i % 4}", str(i))]))
        await asyncio.sleep(0)
    revisions += await asyncio.gather(*(store.commit([Put(f"/p{i}", "v")]) for i in range(30)))
    await asyncio.wait_for(consumer, 5)
    assert seen == sorted(revisions)


async def test_close_ends_watch(etcd_server: EtcdServer) -> None:
    """Closing the store ends a waiting watch quietly, and later calls raise StoreError."""
    store = await EtcdStore.open(etcd_server.url(unique_prefix()))
    events = store.watch("", from_revision=await store.revision())
    waiting = asyncio.create_task(anext(events, None))
    await asyncio.sleep(0.05)
    await store.close()
    assert await asyncio.wait_for(waiting, 1) is None
    await store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        await store.revision()


async def test_watch_survives_kill9_and_restart(
    own_etcd: EtcdServer, open_store: OpenStore
) -> None:
    """A watch parked during etcd's crash (kill -9) and restart on the same port gets every
    later event once: none lost, none duplicated; a commit made while etcd is down waits."""
    store = await open_store(own_etcd.url("prism"))
    start = await store.revision()
    async with aclosing(store.watch("/k/", from_revision=start)) as events:
        before = [await store.commit([Put(f"/k/{i}", str(i))]) for i in range(3)]
        got = [(await next_event(events)).revision for _ in range(3)]
        waiting = asyncio.create_task(next_event(events, within=15))
        await asyncio.sleep(0.05)
        own_etcd.kill9()
        restarting = asyncio.create_task(asyncio.to_thread(own_etcd.restart))
        after = [await store.commit([Put(f"/k/{i}", str(i))]) for i in range(3, 6)]
        await restarting
        got.append((await waiting).revision)
        got += [(await next_event(events, within=5)).revision for _ in range(2)]
        assert got == before + after
        with pytest.raises(TimeoutError):
            await next_event(events, within=0.5)


async def test_watch_raises_compacted_when_its_history_is_gone(
    own_etcd: EtcdServer, open_store: OpenStore
) -> None:
    """A watch from a compacted revision raises Compacted; so does a watch that resumes after
    a restart to find etcd compacted past the last revision it saw."""
    store = await open_store(own_etcd.url("prism"))
    start = await store.revision()
    old = await store.commit([Put("/k/old", "1")])
    async with aclosing(store.watch("/k/", from_revision=start)) as events:
        assert (await next_event(events)).revision == old
        # The watch is suspended at its yield: crash and restart etcd, write, compact.
        own_etcd.kill9()
        own_etcd.restart()
        await store.commit([Put("/k/new", "2")])  # old + 1 ...
        await store.commit([Put("/k/new", "3")])  # ... is history once etcd compacts to here
        compacted_to = await compact(own_etcd)
        assert compacted_to > old + 1
        with pytest.raises(Compacted, match="compacted") as info:
            await next_event(events, within=10)
        assert info.value.revision == old + 1
        assert info.value.detail["compact_revision"] == compacted_to
    with pytest.raises(Compacted, match=f"after revision {start}"):
        async with aclosing(store.watch("/k/", from_revision=start)) as events:
            await next_event(events)
    # the resync the error asks for: list, then watch from revision()
    assert [e.key for e in await store.list("/k/")] == ["/k/new", "/k/old"]
    async with aclosing(store.watch("/k/", from_revision=await store.revision())) as events:
        latest = await store.commit([Put("/k/newer", "3")])
        assert (await next_event(events)).revision == latest


async def test_frozen_etcd_fails_a_watch_within_seconds(
    own_etcd: EtcdServer, open_store: OpenStore
) -> None:
    """A SIGSTOPped etcd makes a waiting watch raise StoreError in a few seconds (keepalive
    pings), not hang; a read on it fails within the call's time budget."""
    store = await open_store(own_etcd.url("prism"), timeout=1.5)
    events = store.watch("", from_revision=await store.revision())
    waiting = asyncio.create_task(anext(events))
    await asyncio.sleep(0.1)
    own_etcd.freeze()
    started = time.monotonic()
    with pytest.raises(StoreError, match="unreachable: could not watch"):
        await asyncio.wait_for(waiting, 15)
    assert time.monotonic() - started < 8
    started = time.monotonic()
    with pytest.raises(StoreError, match="unreachable: could not read"):
        await store.get("/a")
    assert time.monotonic() - started < 3
    own_etcd.thaw()
    assert await store.get("/a") is None  # and it recovers once etcd answers again
    await events.aclose()


async def test_close_during_a_call_raises_store_error(
    own_etcd: EtcdServer, open_store: OpenStore
) -> None:
    """A call in flight when the store is closed raises StoreError 'closed', not a bare
    CancelledError in a task nobody cancelled."""
    store = await open_store(own_etcd.url("prism"))
    own_etcd.freeze()  # so the read is still waiting when close() comes
    reading = asyncio.create_task(store.get("/a"))
    await asyncio.sleep(0.2)
    await store.close()
    with pytest.raises(StoreError, match="the store is closed"):
        await reading


# -- leases -------------------------------------------------------------------------------


async def test_leased_key_vanishes_after_its_ttl_without_refresh(store: EtcdStore) -> None:
    """A key put under a 1 s lease that nobody refreshes is deleted by etcd, and watched."""
    lease = await store.grant(1)
    assert lease.ttl >= 1
    rev = await store.commit([Put("/nodes/n1", "{}", lease=lease.id)])
    assert (await store.get("/nodes/n1")) == Entry("/nodes/n1", "{}", rev, rev)
    async with aclosing(store.watch("/nodes/", from_revision=rev)) as events:

        async def gone() -> bool:
            return await store.get("/nodes/n1") is None

        await eventually(gone, within=5)
        event = await next_event(events)
        assert (event.kind, event.key) == ("delete", "/nodes/n1")
    with pytest.raises(StoreError, match="has ended") as info:
        await lease.refresh()
    assert info.value.detail["ended"] is True


async def test_keep_alive_holds_a_lease_and_revoke_deletes_its_keys(store: EtcdStore) -> None:
    """keep_alive refreshes every ttl/3 so the key outlives its TTL; revoke deletes it at once."""
    lease = await store.grant(1)
    await store.commit([Put("/nodes/n1", "{}", lease=lease.id)])
    async with keep_alive(lease) as held:
        await asyncio.sleep(2.5)  # the TTL must genuinely elapse, more than twice
        assert await store.get("/nodes/n1") is not None
        assert held.held
        assert held.refreshes >= 4
    async with lease.keep_alive(interval=0.2):  # the same, as a method of the lease
        await asyncio.sleep(0.5)
    await lease.revoke()
    assert await store.get("/nodes/n1") is None
    await lease.revoke()  # a lease already gone is no error


async def test_keep_alive_reports_a_lost_lease(store: EtcdStore) -> None:
    """If the lease ends under it (revoked elsewhere), keep_alive sets lost and stops."""
    lease = await store.grant(5)
    async with keep_alive(lease, interval=0.1) as held:
        await lease.revoke()
        await asyncio.wait_for(held.lost.wait(), 2)
        assert held.error is not None
        assert not held.held


async def test_put_under_an_unknown_lease_changes_nothing(store: EtcdStore) -> None:
    """A commit naming a lease etcd does not have raises StoreError; none of its ops land."""
    lease = await store.grant(5)
    await lease.revoke()
    before = await store.revision()
    with pytest.raises(StoreError, match=f"lease {lease.id:x} not found"):
        await store.commit([Put("/a", "1"), Put("/b", "2", lease=lease.id)])
    assert await store.list("") == []
    assert await store.revision() == before
    with pytest.raises(InvalidInput, match="invalid lease ttl"):
        await store.grant(0)
    with pytest.raises(InvalidInput, match="invalid lease"):
        await store.commit([Put("/a", "1", lease=-3)])


# -- endpoints, failures, retries ---------------------------------------------------------


async def test_cluster_member_killed_operations_fail_over(
    tmp_path: Path, open_store: OpenStore
) -> None:
    """With 3 members and the one in use killed, reads, commits and a watch go on elsewhere."""
    with start_cluster(3, tmp_path) as cluster:
        store = await open_store(cluster.url("prism"))
        first = await store.commit([Put("/a", "1")])
        async with aclosing(store.watch("/", from_revision=first)) as events:
            waiting = asyncio.create_task(next_event(events, within=15))
            await asyncio.sleep(0.1)  # the watch stream is open, on the first endpoint
            cluster.members[0].kill9()  # the member the store talks to
            second = await store.commit([Put("/b", "2")], expect=[Compare("/b", 0)])
            assert [e.key for e in await store.list("/")] == ["/a", "/b"]
            assert await store.get("/a") == Entry("/a", "1", first, first)
            assert await waiting == WatchEvent("put", "/b", "2", second)
            third = await store.commit([Put("/c", "3")])
            assert (await next_event(events)).revision == third
            with pytest.raises(TimeoutError):
                await next_event(events, within=0.3)  # nothing twice


async def test_unreachable_etcd_raises_a_clear_store_error_quickly() -> None:
    """With nothing listening at any endpoint, open() raises StoreError naming them all,
    within its time budget."""
    a, b = free_port(), free_port()
    started = time.monotonic()
    url = f"etcd://127.0.0.1:{a},127.0.0.1:{b}/prism"
    with pytest.raises(
        StoreError, match=rf"etcd at 127\.0\.0\.1:{a}, 127\.0\.0\.1:{b} unreachable"
    ):
        await EtcdStore.open(url, timeout=1)
    assert time.monotonic() - started < 3


async def test_retried_commit_after_a_lost_reply_applies_once(
    store: EtcdStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When a commit lands but its reply is lost, the retry returns the first revision: the
    change and its audit record exist once, and a create-only Compare does not turn into a
    false Conflict."""
    client = store._clients[0]
    real_txn = client.kvstub.Txn
    lost: list[int] = []

    async def txn_losing_first_reply(request: Any, **kwargs: Any) -> Any:
        response = await real_txn(request, **kwargs)
        if not lost:
            lost.append(response.header.revision)
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE,
                grpc.aio.Metadata(),
                grpc.aio.Metadata(),
                details="connection reset after the request was sent",
            )
        return response

    monkeypatch.setattr(client.kvstub, "Txn", txn_losing_first_reply)
    rev = await store.commit(
        [Put("/a", "1")], expect=[Compare("/a", 0)], audit=AuditDraft("ann", "create", "a")
    )
    assert lost == [rev]
    assert await store.get("/a") == Entry("/a", "1", rev, rev)
    assert [(r.id, r.revision) for r in await store.audit()] == [(1, rev)]


# -- TLS and authentication ---------------------------------------------------------------


async def test_tls_with_client_certificates(tmp_path: Path, open_store: OpenStore) -> None:
    """With --client-cert-auth, a client with the CA and a client certificate works; one
    without TLS, or without a client certificate, gets a clear StoreError."""
    tls = make_test_tls(tmp_path / "pki")
    with start_etcd(tmp_path / "tls", tls=tls) as server:
        url = server.url("prism")
        secure = await open_store(url, cacert=tls.ca, cert=tls.client_cert, key=tls.client_key)
        rev = await secure.commit([Put("/a", "1")])
        assert await secure.get("/a") == Entry("/a", "1", rev, rev)
        async with aclosing(secure.watch("/", from_revision=rev)) as events:
            later = await secure.commit([Put("/b", "2")])
            assert (await next_event(events)).revision == later
        with pytest.raises(StoreError, match="unreachable") as info:
            await EtcdStore.open(url, timeout=1)
        assert info.value.hint
        assert "TLS" in info.value.hint
        with pytest.raises(StoreError, match="unreachable"):
            await EtcdStore.open(url, cacert=tls.ca, timeout=1)
    with pytest.raises(InvalidInput, match="cannot read the CA certificate"):
        await EtcdStore.open(url, cacert=tmp_path / "missing.pem")
    with pytest.raises(InvalidInput, match="needs its key"):
        await EtcdStore.open(url, cacert=tls.ca, cert=tls.client_cert)


async def test_username_and_password(tmp_path: Path, open_store: OpenStore) -> None:
    """With etcd auth on, the right password works, and commits and a watch keep working
    after etcd restarts and forgets its tokens; none, or a wrong one, raises StoreError."""
    with start_etcd(tmp_path / "auth", auth=("prism", "s3cret")) as server:
        url = server.url("prism")
        store = await open_store(url, username="prism", password="s3cret")
        rev = await store.commit([Put("/a", "1")], audit=AuditDraft("ann", "create"))
        assert await store.get("/a") == Entry("/a", "1", rev, rev)
        with pytest.raises(StoreError, match="user name is empty") as info:
            await EtcdStore.open(url)
        assert info.value.hint == "etcd has authentication enabled: pass username and password"
        with pytest.raises(StoreError, match="authentication failed"):
            await EtcdStore.open(url, username="prism", password="wrong")
        async with aclosing(store.watch("/", from_revision=rev)) as events:
            waiting = asyncio.create_task(next_event(events, within=15))
            await asyncio.sleep(0.05)
            server.restart()  # etcd forgets every token it issued
            later = await store.commit([Put("/a", "2")], expect=[Compare("/a", rev)])
            assert (await store.get("/a")) == Entry("/a", "2", rev, later)
            assert await waiting == WatchEvent("put", "/a", "2", later)
    with pytest.raises(InvalidInput, match="go together"):
        await EtcdStore.open(url, username="prism")


# -- URLs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "endpoints", "prefix"),
    [
        ("etcd://127.0.0.1:2379/prism", [("127.0.0.1", 2379)], "prism"),
        (
            "etcd://10.0.0.1:2379,etcd-2.internal:2479/fleet/prod",
            [("10.0.0.1", 2379), ("etcd-2.internal", 2479)],
            "fleet/prod",
        ),
        ("etcd://[::1]:2379/p_1.x-y", [("[::1]", 2379)], "p_1.x-y"),
    ],
)
def test_store_urls_parse(url: str, endpoints: list[tuple[str, int]], prefix: str) -> None:
    """Good URLs give their endpoints in order and the prefix, and print back the same."""
    parsed = parse_store_url(url)
    assert list(parsed.endpoints) == endpoints
    assert parsed.prefix == prefix
    assert str(parsed) == url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:2379/prism", "must start with etcd://"),
        ("etcd://127.0.0.1:2379", "no key prefix"),
        ("etcd://127.0.0.1:2379/", "no key prefix"),
        ("etcd://127.0.0.1/prism", "has no port"),
        ("etcd://127.0.0.1:0/prism", "port '0'"),
        ("etcd://127.0.0.1:99999/prism", "port '99999'"),
        ("etcd://127.0.0.1:23x/prism", "port '23x'"),
        ("etcd://300.1.1.1:2379/prism", "not an IPv4 address"),
        ("etcd://bad_host:2379/prism", "not a host name"),
        ("etcd://[nope]:2379/prism", "not \\[IPv6\\]:PORT"),
        ("etcd://u:pw@127.0.0.1:2379/prism", "credentials do not belong"),
        ("etcd://127.0.0.1:2379/prism?x=1", "may not contain"),
        ("etcd://127.0.0.1:2379,127.0.0.1:2379/prism", "listed twice"),
        ("etcd://127.0.0.1:2379,/prism", "an empty address"),
        ("etcd://:2379/prism", "not a host name"),
        ("etcd:///prism", "no host:port"),
        ("etcd://127.0.0.1:2379/a//b", "prefix 'a//b'"),
        ("etcd://127.0.0.1:2379/prism/", "prefix 'prism/'"),
        ("etcd://127.0.0.1:2379/../x", "prefix '../x'"),
        ("etcd://127.0.0.1:2379/caf\u00e9", "prefix"),
    ],
)
def test_bad_store_urls_are_refused_with_the_reason(url: str, why: str) -> None:
    """Every malformed URL raises InvalidInput saying what is wrong and showing the form."""
    with pytest.raises(InvalidInput, match=why) as info:
        parse_store_url(url)
    assert info.value.hint
    assert "etcd://HOST:PORT" in info.value.hint


async def test_open_refuses_bad_arguments() -> None:
    """Bad timeouts and half-given credentials are refused before any connection."""
    url = "etcd://127.0.0.1:1/prism"
    with pytest.raises(InvalidInput, match="invalid timeout"):
        await EtcdStore.open(url, timeout=0)
    with pytest.raises(InvalidInput, match="go together"):
        await EtcdStore.open(url, password="x")
    with pytest.raises(InvalidInput, match="empty etcd username"):
        await EtcdStore.open(url, username="", password="x")
