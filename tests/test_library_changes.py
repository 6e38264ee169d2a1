"""Libraries and their change feeds in the stores (issue 15, section 4), on both backends where
the behaviour is the same: each video write records ADDED, UPDATED (with the fields that
changed), MOVED or REMOVED for the paths under a library's root, in its own transaction, with
the library's next sequence and counts; roots never overlap; the history is trimmed; a
deletion keeps or drops the videos; the listeners hear of every commit.

PostgreSQL only: two stores (two servers) writing one library at once leave no gap and commit
in sequence order; a write refused by its fence or rolled back records nothing; overlapping
creates at once, and a create amid writes, still count right; the listeners of one store hear
the other's changes through NOTIFY, and every library after a reconnection; libraries are
leased to one server at a time; the migration to schema version 7 keeps what was there."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import psycopg
import pytest
from _library_helpers import video_row
from _postgres import StoreFactory

from mediascan.server.engine.recorder import new_event, start_change
from mediascan.server.jobs import JobState, ScanSpec
from mediascan.server.store import Fence, HealthUpdate, LeaseLost, MovedVideo, SqliteStore
from mediascan.server.store.changes import (
    LibraryCatalog,
    LibraryExists,
    RootsOverlap,
    changed_fields,
)
from mediascan.server.store.postgres import schema as pg_schema
from mediascan.server.store.postgres.changelog import ChangeLog
from mediascan.server.store.postgres.store import PostgresStore
from mediascan.server.store.protocol import LibraryStore
from mediascan.v1 import scan_pb2

pytestmark = [pytest.mark.both_backends, pytest.mark.both_walks]

TIMEOUT = 30.0
ADDED = scan_pb2.CHANGE_KIND_ADDED
UPDATED = scan_pb2.CHANGE_KIND_UPDATED
MOVED = scan_pb2.CHANGE_KIND_MOVED
REMOVED = scan_pb2.CHANGE_KIND_REMOVED
STATUS = scan_pb2.CHANGE_KIND_STATUS


class Store(LibraryStore, LibraryCatalog, Protocol):
    """What these tests use of either store."""

    history: int

    async def close(self) -> None: ...


Opener = Callable[[], Awaitable[Store]]


@pytest.fixture
async def open_catalog(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Opener]:
    """`await open_catalog()`: an opened store of the test's backend, closed at teardown."""
    stores: list[Store] = []
    url = str(request.getfixturevalue("pg_url")) if backend == "postgres" else ""

    async def factory() -> Store:
        store: Store = PostgresStore(url) if url else SqliteStore(tmp_path / "db.sqlite")
        await store.open()  # type: ignore[attr-defined]
        stores.append(store)
        return store

    yield factory
    for store in stores:
        await store.close()


def library(root: str) -> scan_pb2.Library:
    return scan_pb2.Library(root=root)


def moved(old: str, new: str, size: int) -> MovedVideo:
    row = video_row(old, size=size)
    return MovedVideo(
        old_path=old,
        new_path=new,
        size_bytes=size,
        mtime_ns=row.mtime_ns,
        fingerprint="",
        dev=7,
        folder_dev=7,
    )


async def changes(store: Store, library_id: str, after: int = 0) -> list[tuple[Any, ...]]:
    """The library's changes after `after`: (sequence, kind, path, old path, fields)."""
    page = await store.changes_after(library_id, after, 1000)
    assert page is not None
    return [(c.sequence, c.kind, c.path, c.old_path, list(c.changed_fields)) for c in page.changes]


async def counts(store: Store, library_id: str) -> tuple[int, int, int]:
    """(video count, total size, last sequence)."""
    found = await store.get_library(library_id)
    assert found is not None
    status = found.status
    return status.video_count, status.total_size_bytes, status.last_sequence


# -- both backends ----------------------------------------------------------------------------


async def test_each_video_write_records_its_changes_and_counts(open_catalog: Opener) -> None:
    store = await open_catalog()
    heard: list[tuple[str, int]] = []
    store.add_library_listener(lambda library_id, last: heard.append((library_id, last)))
    await store.upsert_videos([video_row("/m/a/old.mp4", size=10)])
    created = await store.create_library("films", library("/m/a"))
    assert created.status.video_count == 1 and created.status.total_size_bytes == 10
    assert await changes(store, "films") == []

    added = await store.upsert_videos(
        [video_row("/m/a/x.mp4", size=20), video_row("/m/b/outside.mp4", size=5)]
    )
    assert added == (2, 0)
    assert await counts(store, "films") == (2, 30, 1)
    assert await store.upsert_videos([video_row("/m/a/x.mp4", size=25)]) == (0, 1)
    assert await counts(store, "films") == (2, 35, 2)
    assert await store.upsert_videos([video_row("/m/a/x.mp4", size=25)]) == (0, 1)
    assert await counts(store, "films") == (2, 35, 2)  # nothing changed: nothing recorded
    assert await store.move_videos([moved("/m/a/x.mp4", "/m/a/y.mp4", 25)], before_ns=10) == [True]
    assert await counts(store, "films") == (2, 35, 3)
    health = HealthUpdate(
        path="/m/a/y.mp4",
        size_bytes=25,
        mtime_ns=video_row("/m/a/y.mp4", size=25).mtime_ns,
        health=scan_pb2.HEALTH_OK,
        health_errors=0,
        health_messages="",
        health_first_error_ns=-1,
        verify_ns=5,
    )
    assert await store.set_health([health]) == 1
    assert await store.remove_videos([("/m/a/old.mp4", 7)], before_ns=10) == 1
    assert await counts(store, "films") == (1, 25, 5)
    assert await changes(store, "films") == [
        (1, ADDED, "/m/a/x.mp4", "", []),
        (2, UPDATED, "/m/a/x.mp4", "", ["size_bytes", "modify_time"]),
        (3, MOVED, "/m/a/y.mp4", "/m/a/x.mp4", []),
        (4, UPDATED, "/m/a/y.mp4", "", ["health", "health_report"]),
        (5, REMOVED, "/m/a/old.mp4", "", []),
    ]
    page = await store.changes_after("films", 2, 2)
    assert page is not None and page.last_sequence == 5 and page.first_kept == 1
    for change in page.changes:  # each with the video as it is now, at the change's path
        assert change.video.path == "/m/a/y.mp4" and change.video.health == scan_pb2.HEALTH_OK
        assert change.video_id == change.video.video_id and change.library_uid == created.uid
    page = await store.changes_after("films", 0, 1)
    assert page is not None and not page.changes[0].HasField("video")  # it moved since
    assert heard == [("films", n) for n in range(1, 6)]


async def test_a_move_between_two_libraries_is_removed_then_added(open_catalog: Opener) -> None:
    store = await open_catalog()
    await store.create_library("one", library("/lib/one"))
    await store.create_library("two", library("/lib/two"))
    await store.upsert_videos([video_row("/lib/one/a.mp4", size=7)])
    moves = [moved("/lib/one/a.mp4", "/lib/two/a.mp4", 7)]
    assert await store.move_videos(moves, before_ns=10) == [True]
    assert await counts(store, "one") == (0, 0, 2)
    assert await counts(store, "two") == (1, 7, 1)
    assert await changes(store, "one") == [
        (1, ADDED, "/lib/one/a.mp4", "", []),
        (2, REMOVED, "/lib/one/a.mp4", "", []),
    ]
    assert await changes(store, "two") == [(1, ADDED, "/lib/two/a.mp4", "", [])]
    # Out of every library: removed from the one it left, nothing elsewhere.
    moves = [moved("/lib/two/a.mp4", "/loose/a.mp4", 7)]
    assert await store.move_videos(moves, before_ns=10) == [True]
    assert await counts(store, "two") == (0, 0, 2)


async def test_overlapping_roots_and_taken_ids_are_refused(open_catalog: Opener) -> None:
    store = await open_catalog()
    await store.create_library("films", library("/media/films"))
    for root in ("/media/films", "/media", "/media/films/new", "/"):
        with pytest.raises(RootsOverlap) as refused:
            await store.create_library("other", library(root))
        assert (refused.value.library_id, refused.value.root) == ("films", "/media/films")
    with pytest.raises(LibraryExists):
        await store.create_library("films", library("/elsewhere"))
    beside = await store.create_library("films-2", library("/media/films-2"))
    assert beside.name == "libraries/films-2"
    listed = await store.list_libraries(after="", limit=10)
    assert [lib.name for lib in listed] == ["libraries/films", "libraries/films-2"]
    assert [lib.name for lib in await store.list_libraries(after="films", limit=10)] == [
        "libraries/films-2"
    ]
    roots = await store.library_roots()
    assert roots.library_of("/media/films-2/x.mp4") == "films-2"
    assert roots.library_of("/media/x.mp4") is None


async def test_the_history_is_trimmed_and_first_kept_follows(open_catalog: Opener) -> None:
    store = await open_catalog()
    store.history = 5
    await store.create_library("lib", library("/lib"))
    for n in range(12):
        await store.upsert_videos([video_row(f"/lib/{n}.mp4", size=n + 1)])
    page = await store.changes_after("lib", 0, 100)
    assert page is not None
    assert (page.first_kept, page.last_sequence) == (8, 12)
    assert [c.sequence for c in page.changes] == [8, 9, 10, 11, 12]
    # One transaction of more changes than the history keeps the newest of them.
    await store.upsert_videos([video_row(f"/lib/big-{n}.mp4", size=1) for n in range(7)])
    page = await store.changes_after("lib", 0, 100)
    assert page is not None
    assert (page.first_kept, page.last_sequence) == (15, 19)
    assert [c.path for c in page.changes] == [f"/lib/big-{n}.mp4" for n in range(2, 7)]
    assert await counts(store, "lib") == (19, 12 * 13 // 2 + 7, 19)


async def test_an_update_records_a_status_change_only_when_asked(open_catalog: Opener) -> None:
    store = await open_catalog()
    await store.create_library("lib", library("/lib"))

    def settings(changed: scan_pb2.Library) -> bool:
        changed.quiet_window.FromSeconds(30)
        return False

    def offline(changed: scan_pb2.Library) -> bool:
        changed.status.state = scan_pb2.LIBRARY_STATE_OFFLINE
        changed.status.reason = "the root is missing"
        return True

    updated = await store.update_library("lib", settings)
    assert updated is not None and updated.quiet_window.seconds == 30
    assert await changes(store, "lib") == []
    updated = await store.update_library("lib", offline)
    assert updated is not None and updated.status.state == scan_pb2.LIBRARY_STATE_OFFLINE
    assert updated.quiet_window.seconds == 30 and updated.status.last_sequence == 1
    page = await store.changes_after("lib", 0, 10)
    assert page is not None
    (change,) = page.changes
    assert change.kind == STATUS and change.status.reason == "the root is missing"
    assert await store.update_library("nope", offline) is None


async def test_a_deletion_keeps_or_drops_the_videos(open_catalog: Opener) -> None:
    store = await open_catalog()
    first = await store.create_library("lib", library("/lib"))
    await store.upsert_videos([video_row("/lib/a.mp4", size=3), video_row("/lib/b.mp4", size=4)])
    assert await store.delete_library("lib", drop_videos=False)
    assert await store.get_library("lib") is None
    assert await store.changes_after("lib", 0, 10) is None
    assert not await store.delete_library("lib", drop_videos=False)
    assert await store.get_video(video_id=None, path="/lib/a.mp4") is not None
    again = await store.create_library("lib", library("/lib"))
    assert again.uid != first.uid
    assert await counts(store, "lib") == (2, 7, 0)  # counted again, a new feed
    await store.upsert_videos([video_row("/lib/c.mp4", size=5)])
    assert await changes(store, "lib") == [(1, ADDED, "/lib/c.mp4", "", [])]
    assert await store.delete_library("lib", drop_videos=True)
    for name in ("a", "b", "c"):
        assert await store.get_video(video_id=None, path=f"/lib/{name}.mp4") is None
    assert not await store.library_roots()


async def test_leases_on_a_store_of_one_server(tmp_path: Path) -> None:
    """SQLite: one server uses the file, so it holds every library (within its roots and its
    limit), with no holder named."""
    store = SqliteStore(tmp_path / "db.sqlite")
    await store.open()
    try:
        for name, root in (("a", "/x/a"), ("b", "/y/b"), ("c", "/x/c")):
            await store.create_library(name, library(root))
        lease = store.lease_libraries
        assert await lease(node="n", lease_s=1, roots=[], limit=10) == ["a", "b", "c"]
        assert await lease(node="n", lease_s=1, roots=["/x"], limit=10) == ["a", "c"]
        assert await lease(node="n", lease_s=1, roots=["/x/"], limit=1) == ["a"]
        assert await lease(node="n", lease_s=1, roots=[], limit=0) == []
        await store.release_libraries(node="n", library_ids=["a"])
        found = await store.get_library("a")
        assert found is not None and found.status.node == ""
    finally:
        await store.close()


def test_both_stores_have_the_catalog_with_the_same_signatures() -> None:
    for name, _ in inspect.getmembers(LibraryCatalog, inspect.isfunction):
        if not name.startswith("_"):
            assert inspect.signature(getattr(PostgresStore, name)) == inspect.signature(
                getattr(SqliteStore, name)
            ), name
    assert issubclass(PostgresStore, LibraryCatalog)  # runtime_checkable: members present
    assert issubclass(SqliteStore, LibraryCatalog)


# -- PostgreSQL: several servers on one database ----------------------------------------------


def scan_spec(path: str) -> ScanSpec:
    return ScanSpec(
        path=path,
        recursive=True,
        follow_symlinks=False,
        timeout=60.0,
        priority=0,
        full=False,
        request_id="",
        fingerprint="",
    )


async def hear(heard: asyncio.Queue[tuple[str, int]], expected: tuple[str, int]) -> None:
    """Take what the listener heard until `expected` comes (the caller bounds the wait)."""
    while await heard.get() != expected:
        pass


async def test_two_servers_writing_one_library_at_once_leave_no_gap(
    open_store: StoreFactory,
) -> None:
    """Two stores (two servers) write the same two libraries at once, every transaction
    touching both (their rows are locked in one order: no deadlock). A follower polling
    `changes_after` on a third store only ever sees an unbroken run of sequences that ends at
    the library's last one (commit order is sequence order: a later commit never fills a hole
    behind one already seen), and in the end every change exactly once."""
    a, b, reader = [await open_store(node=name) for name in ("a", "b", "reader")]
    await a.create_library("lib", library("/lib"))
    await a.create_library("other", library("/other"))
    rounds, per_round = 40, 3

    async def write(store: PostgresStore, name: str) -> None:
        for n in range(rounds):
            rows = [video_row(f"/lib/{name}/{n}-{k}.mp4", size=k + 1) for k in range(per_round)]
            rows.append(video_row(f"/other/{name}/{n}.mp4", size=1))
            if name == "b":
                rows.reverse()
            await store.upsert_videos(rows)

    writers = asyncio.gather(write(a, "a"), write(b, "b"))
    seen: list[int] = []
    paths: list[str] = []
    polls = 0
    async with asyncio.timeout(TIMEOUT * 4):
        while True:
            finished = writers.done()
            after = seen[-1] if seen else 0
            page = await reader.changes_after("lib", after, 50)
            assert page is not None
            got = [c.sequence for c in page.changes]
            assert got == list(range(after + 1, after + 1 + len(got))), (after, got)
            if len(got) < 50:  # the whole rest: it ends at the last committed sequence
                assert (got[-1] if got else after) == page.last_sequence
            seen += got
            paths += [c.path for c in page.changes]
            polls += 1
            if finished and len(got) < 50:
                break
    await writers
    total = rounds * per_round * 2
    assert seen == list(range(1, total + 1))
    expected = [
        f"/lib/{name}/{n}-{k}.mp4" for name in "ab" for n in range(rounds) for k in range(per_round)
    ]
    assert sorted(paths) == sorted(expected)
    assert await counts(reader, "lib") == (total, rounds * 2 * (1 + 2 + 3), total)
    assert await counts(reader, "other") == (rounds * 2, rounds * 2, rounds * 2)
    assert polls > 1


async def test_a_write_refused_or_rolled_back_records_nothing(open_store: StoreFactory) -> None:
    """A fenced write of an attempt that is over (LeaseLost) and a transaction that fails
    after its sequences were taken leave no change, no count and no gap behind them."""
    store = await open_store(node="a")
    await store.create_library("lib", library("/lib"))
    spec = scan_spec("/lib")
    await store.insert_job(spec.new_job(), spec)
    claimed = await store.claim_next(start_change)
    assert claimed is not None
    fence = Fence(claimed.job.job_id, claimed.job.attempt)
    await store.upsert_videos([video_row("/lib/a.mp4", size=1)], fence=fence)
    assert await counts(store, "lib") == (1, 1, 1)
    requeued = scan_pb2.Job()
    requeued.CopyFrom(claimed.job)  # re-queued as a reclaim does: attempt 1 is over
    requeued.state = scan_pb2.JOB_STATE_QUEUED
    requeued.attempt += 1
    requeued.last_sequence += 1
    event = new_event(requeued.job_id, requeued.last_sequence, scan_pb2.StateChange())
    assert await store.record(requeued, [event], expected_state=JobState.RUNNING)
    with pytest.raises(LeaseLost):
        await store.upsert_videos([video_row("/lib/b.mp4", size=2)], fence=fence)
    with pytest.raises(LeaseLost):
        await store.remove_videos([("/lib/a.mp4", 7)], before_ns=10, fence=fence)
    with pytest.raises(LeaseLost):
        await store.move_videos([moved("/lib/a.mp4", "/lib/c.mp4", 1)], before_ns=10, fence=fence)

    async def failing(conn: Any, log: ChangeLog) -> None:
        log.record("lib", ADDED, path="/lib/ghost.mp4", count=1, size=9)
        await log.flush(conn)  # sequence 2 taken, then the transaction fails
        await conn.execute("SELECT 1 / 0")

    with pytest.raises(psycopg.errors.DivisionByZero):
        await store.library_writes.write(failing)
    assert await counts(store, "lib") == (1, 1, 1)
    assert await changes(store, "lib") == [(1, ADDED, "/lib/a.mp4", "", [])]
    await store.upsert_videos([video_row("/lib/d.mp4", size=4)])
    assert await changes(store, "lib", 1) == [(2, ADDED, "/lib/d.mp4", "", [])]


async def test_a_batch_another_server_probed_records_its_changes(open_store: StoreFactory) -> None:
    """On PostgreSQL any server may probe a scan's files: its finish of a batch records the
    changes of the videos it stores, in the finish's transaction."""
    from mediascan.server.store.probe_queue import BatchOutcome, WalkedFile

    runner, prober = await open_store(node="runner"), await open_store(node="prober")
    await runner.create_library("lib", library("/lib"))
    spec = scan_spec("/lib")
    await runner.insert_job(spec.new_job(), spec)
    claimed = await runner.claim_next(start_change)
    assert claimed is not None
    fence = Fence(claimed.job.job_id, claimed.job.attempt)
    walked = [WalkedFile(f"/lib/{n}.mp4", n + 1, 1, 5) for n in range(3)]
    await runner.probe_queue.add(fence, "/lib", False, walked)
    batch = await prober.probe_queue.claim(["/lib"])
    assert batch is not None
    rows = [video_row(f.path, size=f.size, job_id=fence.job_id) for f in walked]
    await prober.probe_queue.finish(batch, rows, BatchOutcome(done=3))
    page = await runner.changes_after("lib", 0, 10)
    assert page is not None
    assert [(c.kind, c.path, c.job_id) for c in page.changes] == [
        (ADDED, f.path, fence.job_id) for f in walked
    ]
    assert await counts(runner, "lib") == (3, 6, 3)


async def test_overlapping_roots_created_at_once_on_two_servers(open_store: StoreFactory) -> None:
    """Creates of overlapping roots on two servers at once: always exactly one of them."""
    a, b = await open_store(node="a"), await open_store(node="b")
    for n in range(10):
        outcomes = await asyncio.gather(
            a.create_library(f"outer-{n}", library(f"/c/{n}")),
            b.create_library(f"inner-{n}", library(f"/c/{n}/in")),
            return_exceptions=True,
        )
        kinds = sorted(type(outcome).__name__ for outcome in outcomes)
        assert kinds == ["Library", "RootsOverlap"], outcomes
    assert len(await a.list_libraries(after="", limit=100)) == 10


async def test_a_library_created_amid_writes_counts_every_video(open_store: StoreFactory) -> None:
    """A library created on one server while another writes videos under its root: its first
    counts take the writes committed before it, its feed every write after it, so that the
    counts are the videos under its root whatever the interleaving."""
    writer, creator = await open_store(node="w"), await open_store(node="c")
    going = asyncio.Event()

    async def write() -> None:
        for n in range(30):
            await writer.upsert_videos([video_row(f"/w/{n}-{k}.mp4", size=k + 1) for k in range(5)])
            if n == 5:
                going.set()

    task = asyncio.create_task(write())
    async with asyncio.timeout(TIMEOUT):
        await going.wait()
    created = await creator.create_library("w", library("/w"))
    async with asyncio.timeout(TIMEOUT * 2):
        await task
    assert 30 <= created.status.video_count <= 150
    recorded = await changes(creator, "w")
    assert [c[0] for c in recorded] == list(range(1, len(recorded) + 1))
    assert {c[1] for c in recorded} <= {ADDED}
    assert created.status.video_count + len(recorded) == 150
    assert await counts(creator, "w") == (150, 30 * 15, len(recorded))


async def test_library_listeners_hear_every_servers_changes(
    open_store: StoreFactory, pg_url: str
) -> None:
    """A store's library listeners hear the changes another store commits (NOTIFY on
    `mediascan_library`, the last of a burst always), and every library when its LISTEN
    connection comes back after pg_terminate_backend."""
    here, there = await open_store(node="here"), await open_store(node="there")
    await there.create_library("lib", library("/lib"))
    await there.create_library("quiet", library("/quiet"))
    heard: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
    here.add_library_listener(lambda library_id, last: heard.put_nowait((library_id, last)))
    resyncs: asyncio.Queue[None] = asyncio.Queue()
    here.feed.add_resync_listener(lambda: resyncs.put_nowait(None))
    here.start_tasks()
    async with asyncio.timeout(TIMEOUT):
        await resyncs.get()  # the first connection LISTENs: every library is told
        assert {await heard.get(), await heard.get()} == {("lib", 0), ("quiet", 0)}
        await there.upsert_videos([video_row("/lib/a.mp4", size=1)])
        assert await heard.get() == ("lib", 1)
        for n in range(10):  # a burst: held back notifications, the last one sent after it
            await there.upsert_videos([video_row(f"/lib/{n}.mp4", size=1)])
        await hear(heard, ("lib", 11))
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as admin:
            cursor = await admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'mediascan here listen'"
            )
            assert await cursor.fetchone() == (1,)
        await resyncs.get()
        await hear(heard, ("quiet", 0))


async def wait_for_lapse(url: str, library_ids: list[str]) -> None:
    """Wait until the database's clock is past these libraries' leases: a deadline read from
    the database, not a guess at how long something takes."""
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cursor = await conn.execute(
            "SELECT extract(epoch FROM max(lease_until) - now()) FROM libraries WHERE id = ANY(%s)",
            (library_ids,),
        )
        row = await cursor.fetchone()
    assert row is not None and row[0] is not None
    await asyncio.sleep(max(0.0, float(row[0])) + 0.01)


async def holders(store: PostgresStore) -> dict[str, str]:
    listed = await store.list_libraries(after="", limit=100)
    return {lib.name.removeprefix("libraries/"): lib.status.node for lib in listed}


async def test_libraries_are_leased_to_one_server_at_a_time(
    open_store: StoreFactory, pg_url: str
) -> None:
    a, b = await open_store(node="a"), await open_store(node="b")
    names = ["l1", "l2", "l3", "l4"]
    for name in names:
        await a.create_library(name, library(f"/lease/{name}"))
    # Both ask at once for everything: each library goes to one of them.
    took_a, took_b = await asyncio.gather(
        a.lease_libraries(node="a", lease_s=60, roots=[], limit=4),
        b.lease_libraries(node="b", lease_s=60, roots=[], limit=4),
    )
    assert not set(took_a) & set(took_b) and sorted(took_a + took_b) == names
    await a.release_libraries(node="a", library_ids=names)
    await b.release_libraries(node="b", library_ids=names)
    assert set((await holders(a)).values()) == {""}

    # Two servers split them, each up to its limit; a renewal takes nothing more.
    assert await a.lease_libraries(node="a", lease_s=60, roots=[], limit=2) == ["l1", "l2"]
    assert await b.lease_libraries(node="b", lease_s=60, roots=[], limit=3) == ["l3", "l4"]
    assert await a.lease_libraries(node="a", lease_s=60, roots=[], limit=2) == ["l1", "l2"]
    assert await holders(b) == {"l1": "a", "l2": "a", "l3": "b", "l4": "b"}

    # a stops renewing (its last lease short): b takes its libraries once the lease lapsed.
    assert await a.lease_libraries(node="a", lease_s=0.3, roots=[], limit=2) == ["l1", "l2"]
    assert await b.lease_libraries(node="b", lease_s=60, roots=[], limit=4) == ["l3", "l4"]
    await wait_for_lapse(pg_url, ["l1", "l2"])
    assert (await holders(b))["l1"] == ""  # lapsed: nobody holds it
    assert await b.lease_libraries(node="b", lease_s=60, roots=[], limit=4) == names
    assert await a.lease_libraries(node="a", lease_s=60, roots=[], limit=4) == []
    assert set((await holders(a)).values()) == {"b"}

    # A lower limit lets the rest go; a release frees at once; only b's own are released.
    await a.release_libraries(node="a", library_ids=["l2"])
    await b.release_libraries(node="b", library_ids=["l1"])
    assert await b.lease_libraries(node="b", lease_s=60, roots=[], limit=2) == ["l2", "l3"]

    # Roots: a folder and what lies below it, never a mere prefix of the name.
    assert await a.lease_libraries(node="a", lease_s=60, roots=["/lease/l"], limit=5) == []
    roots = ["/lease/l1", "/lease/l4/", "/elsewhere"]
    assert await a.lease_libraries(node="a", lease_s=60, roots=roots, limit=5) == ["l1", "l4"]
    assert await a.lease_libraries(node="a", lease_s=60, roots=["/lease/l4"], limit=5) == ["l4"]
    assert await holders(b) == {"l1": "", "l2": "b", "l3": "b", "l4": "a"}


async def test_a_version_6_database_is_migrated_and_keeps_its_videos(
    open_store: StoreFactory, pg_url: str
) -> None:
    """Schema version 7 adds the libraries and their changes to a database of version 6:
    its videos stay, a library created over them counts them, and their next writes are
    recorded."""
    from mediascan.server.store.postgres.video_writes import upsert
    from mediascan.server.store.videos import video_values

    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute("CREATE TABLE schema_version (version integer NOT NULL)")
        await conn.execute("INSERT INTO schema_version VALUES (6)")
        for version in range(1, 7):
            for statement in pg_schema.MIGRATIONS[version]:
                await conn.execute(statement.encode())
        rows = [video_row(f"/old/{n}.mp4", size=n + 1) for n in range(3)]
        async with conn.transaction():
            assert await upsert(conn, [video_values(row) for row in rows]) == (3, 0)
    store = await open_store(node="n")
    assert store.migrations_applied == 1 and pg_schema.SCHEMA_VERSION == 7
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        cursor = await conn.execute(
            "SELECT (SELECT version FROM schema_version), "
            "(SELECT count(*) FROM libraries), (SELECT count(*) FROM library_changes)"
        )
        assert await cursor.fetchone() == (7, 0, 0)
    created = await store.create_library("old", library("/old"))
    assert (created.status.video_count, created.status.total_size_bytes) == (3, 6)
    await store.upsert_videos([video_row("/old/0.mp4", size=10)])
    assert await changes(store, "old") == [
        (1, UPDATED, "/old/0.mp4", "", ["size_bytes", "modify_time"])
    ]


def _every_field_changed(base: scan_pb2.Video) -> list[scan_pb2.Video]:
    """`base` with each top-level field changed in turn (set, cleared, or set to an empty
    message), for the comparison of `changed_fields` with its definition."""
    variants = []
    for field in scan_pb2.Video.DESCRIPTOR.fields:
        for step in range(3):
            video = scan_pb2.Video()
            video.CopyFrom(base)
            if field.is_repeated:
                values = getattr(video, field.name)
                if field.message_type is not None:
                    values.add()
                else:
                    values.append("x" if field.type == field.TYPE_STRING else 1)
            elif field.message_type is not None:
                if step == 1:
                    video.ClearField(field.name)
                else:
                    getattr(video, field.name).SetInParent()
            elif field.type == field.TYPE_STRING:
                setattr(video, field.name, ("", "a", "b")[step])
            elif field.type == field.TYPE_BOOL:
                setattr(video, field.name, bool(step % 2))
            elif field.type in (field.TYPE_DOUBLE, field.TYPE_FLOAT):
                setattr(video, field.name, float(step))
            else:
                setattr(video, field.name, step)
            variants.append(video)
    return variants


def test_changed_fields_names_what_differs_as_its_definition_says() -> None:
    """`changed_fields` compares only the fields set in either video; its answer is the
    definition's (every top-level field read from both, those of every probe left out)."""
    quiet = {"video_id", "path", "probe_time", "job_id", "prober_version"}

    def definition(old: scan_pb2.Video, new: scan_pb2.Video) -> list[str]:
        return [
            f.name
            for f in scan_pb2.Video.DESCRIPTOR.fields
            if f.name not in quiet and getattr(old, f.name) != getattr(new, f.name)
        ]

    base = scan_pb2.Video(path="/a.mp4", size_bytes=3, video_codec="h264", width=64)
    base.modify_time.FromNanoseconds(5)
    base.health_report.error_count = 2
    variants = _every_field_changed(base)
    assert len(variants) > 100
    for video in variants:
        for old, new in ((base, video), (video, base), (video, video)):
            assert changed_fields(old, new) == definition(old, new)
