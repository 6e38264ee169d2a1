"""The shared probing of a scan on a real PostgreSQL (`PostgresProbeQueue`), and the fencing of
the library writes made for a job: batches are claimed by one server at a time, only by servers
that name their folder, only for the current attempt of a RUNNING job; a claim whose lease
passed goes to another server and the first one's finish is refused with nothing stored; the
end of a scan counts every batch finished before it, and refuses the rest; the library writes
of an attempt that is over are refused.

Store-level and in-process: the servers sharing the database are stores opened side by side;
tests/test_shared_probing.py runs the same with real server processes."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import psycopg
import pytest
from _library_helpers import video_row
from _postgres import StoreFactory
from psycopg.types.json import Jsonb

from mediascan.server.engine.recorder import reclaim_change, start_change
from mediascan.server.fskeys import DeviceKeys
from mediascan.server.jobs import ScanSpec
from mediascan.server.store import Fence, LeaseLost, VideoRow
from mediascan.server.store.postgres.batches import lock_finishes
from mediascan.server.store.postgres.store import PostgresStore
from mediascan.server.store.probe_queue import BatchOutcome, WalkedFile

pytestmark = pytest.mark.slow

TIMEOUT = 30.0
ROOT = "/shared/videos"


def spec(path: str = ROOT) -> ScanSpec:
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


async def running_job(store: PostgresStore, path: str = ROOT) -> Fence:
    scan = spec(path)
    outcome = await store.insert_job(scan.new_job(), scan)
    claimed = await store.claim_next(start_change)
    assert claimed is not None and claimed.job.job_id == outcome.job.job_id
    return Fence(claimed.job.job_id, claimed.job.attempt)


def files(first: int, count: int = 3) -> list[WalkedFile]:
    return [
        WalkedFile(f"{ROOT}/v{n:03d}.mp4", 1000 + n, 1_700_000_000 + n, 5)
        for n in range(first, first + count)
    ]


def row(walked: WalkedFile, job_id: str) -> VideoRow:
    return video_row(
        walked.path, size=walked.size, mtime_ns=walked.mtime_ns, dev=walked.dev, job_id=job_id
    )


async def video_paths(store: PostgresStore) -> list[str]:
    async with await psycopg.AsyncConnection.connect(store.database.url) as conn:
        cursor = await conn.execute("SELECT path FROM videos ORDER BY path")
        return [path for (path,) in await cursor.fetchall()]


async def test_library_writes_for_an_attempt_that_is_over_are_refused(
    open_store: StoreFactory,
) -> None:
    """Once another server reclaimed the job (attempt 2, QUEUED), the first server's upsert,
    removal and device record for attempt 1 raise LeaseLost and store nothing; attempt 2 may
    not write either until it runs."""
    a = await open_store(node="a", lease=0.2)
    b = await open_store(node="b", lease=0.2)
    fence = await running_job(a)
    (first,) = files(0, 1)
    assert await a.upsert_videos([row(first, fence.job_id)], fence=fence) == (1, 0)
    await asyncio.sleep(0.3)
    moved = await reclaim(b)
    assert [c.job.attempt for c in moved] == [2]
    (second,) = files(1, 1)
    with pytest.raises(LeaseLost, match="attempt 1 is over"):
        await a.upsert_videos([row(second, fence.job_id)], fence=fence)
    with pytest.raises(LeaseLost):
        await a.remove_videos([(first.path, first.dev)], before_ns=2, fence=fence)
    with pytest.raises(LeaseLost):
        await a.set_devices([(9, first.path)], fence=fence)
    with pytest.raises(LeaseLost, match="no longer running"):
        await b.upsert_videos([row(second, fence.job_id)], fence=Fence(fence.job_id, 2))
    assert await video_paths(a) == [first.path]
    again = await b.claim_next(start_change)
    assert again is not None and again.job.attempt == 2
    assert await b.upsert_videos([row(second, fence.job_id)], fence=Fence(fence.job_id, 2)) == (
        1,
        0,
    )


async def reclaim(store: PostgresStore) -> list[Any]:
    """One reclaim round of `store`'s lease keeper: the jobs whose lease passed, re-queued."""
    return await store._feed.leases.reclaim_expired(reclaim_change, lambda _: None)


async def test_a_batch_is_claimed_once_by_a_server_that_names_its_folder(
    open_store: StoreFactory,
) -> None:
    """Batches are claimed oldest first, by one server at a time (a second claim takes the
    next one), only by a server whose roots name the folder; a finish stores the videos and
    the outcome with the library counts, and the running server reads it back."""
    a = await open_store(node="a")
    b = await open_store(node="b")
    fence = await running_job(a)
    queue_a, queue_b = a.probe_queue, b.probe_queue
    await queue_a.add(fence, ROOT, False, files(0))
    await queue_a.add(fence, ROOT, False, files(3))
    assert await queue_b.waiting_roots() == [ROOT]
    assert await queue_b.claim(["/elsewhere"]) is None
    assert await queue_b.claim([]) is None
    first = await queue_b.claim([ROOT])
    second = await queue_a.claim([ROOT])
    assert first is not None and second is not None
    assert [f.path for f in first.files] == [f.path for f in files(0)]
    assert [f.path for f in second.files] == [f.path for f in files(3)]
    assert first.fence == fence and first.root == ROOT and not first.follow_symlinks
    assert await queue_b.claim([ROOT]) is None  # both are claimed
    assert await queue_b.waiting_roots() == []
    outcome = BatchOutcome(done=3, bytes_done=3003, failed=1, last_path=first.files[-1].path)
    outcome.errors.append((first.files[2].path, 5, "the file vanished"))
    await queue_b.finish(first, [row(f, fence.job_id) for f in first.files[:2]], outcome)
    ((order, stored),) = await queue_a.outcomes(fence, 0)
    assert (stored.done, stored.added, stored.updated, stored.failed) == (3, 2, 0, 1)
    assert stored.errors == [(first.files[2].path, 5, "the file vanished")]
    assert await queue_a.outcomes(fence, order) == []
    assert await video_paths(a) == [f.path for f in first.files[:2]]
    with pytest.raises(LeaseLost):  # finished once only
        await queue_b.finish(first, [], BatchOutcome(done=3))


async def test_a_finish_that_took_its_number_first_is_read_even_if_it_commits_last(
    open_store: StoreFactory,
) -> None:
    """Two servers finish batches of one scan at once. The running server reads the outcomes
    finished after the last `done_seq` it saw, so a finish must not commit a later number
    while an earlier one is still uncommitted: here b's finish has its number and has not
    committed, and a's finish waits for it (`lock_finishes`), so both are read."""
    a = await open_store(node="a")
    b = await open_store(node="b")
    fence = await running_job(a)
    await a.probe_queue.add(fence, ROOT, False, files(0))
    await a.probe_queue.add(fence, ROOT, False, files(3))
    first = await b.probe_queue.claim([ROOT])
    second = await a.probe_queue.claim([ROOT])
    assert first is not None and second is not None
    async with await psycopg.AsyncConnection.connect(b.database.url) as conn:
        # b's finish of `first`, stopped between its number and its commit.
        await lock_finishes(conn, fence.job_id)
        await conn.execute(
            "UPDATE probe_batches SET outcome = %s, done_seq = nextval('probe_batches_done') "
            "WHERE id = %s",
            (Jsonb(BatchOutcome(done=3).to_json()), first.batch_id),
        )
        finishing = asyncio.create_task(a.probe_queue.finish(second, [], BatchOutcome(done=3)))
        # Time for a's finish to commit, were it not held back: then the read below would see
        # its number alone, and the one after it would skip b's smaller number.
        await asyncio.wait({finishing}, timeout=1.0)
        seen = await a.probe_queue.outcomes(fence, 0)
        await conn.commit()
    async with asyncio.timeout(TIMEOUT):
        await finishing
    seen += await a.probe_queue.outcomes(fence, seen[-1][0] if seen else 0)
    assert [outcome.done for _, outcome in seen] == [3, 3], seen
    assert [order for order, _ in seen] == sorted(order for order, _ in seen)


async def test_a_claim_whose_lease_passed_goes_to_another_server(
    open_store: StoreFactory,
) -> None:
    """A server that stops renewing its claim (dead, frozen) loses its batch once the lease
    passed: another server claims it, and the first one's late finish is refused with nothing
    stored; the renewal of a live server's leases keeps its claims."""
    a = await open_store(node="a", lease=0.3)
    b = await open_store(node="b", lease=0.3)
    fence = await running_job(a)
    await a.probe_queue.add(fence, ROOT, False, files(0))
    await a.probe_queue.add(fence, ROOT, False, files(3))
    lapsing = await b.probe_queue.claim([ROOT])
    kept = await a.probe_queue.claim([ROOT])
    assert lapsing is not None and kept is not None
    await asyncio.sleep(0.2)
    await a._feed.leases.tick()  # renews a's job and a's claim, not b's
    await asyncio.sleep(0.2)
    taken = await a.probe_queue.claim([ROOT])
    assert taken is not None and taken.batch_id == lapsing.batch_id
    assert taken.claim == lapsing.claim + 1
    assert await b.probe_queue.claim([ROOT]) is None  # a's own claim is alive
    rows = [row(f, fence.job_id) for f in lapsing.files]
    with pytest.raises(LeaseLost, match="claimed by another server"):
        await b.probe_queue.finish(lapsing, rows, BatchOutcome(done=3))
    assert await video_paths(a) == []
    await a.probe_queue.finish(taken, rows, BatchOutcome(done=3))
    assert await video_paths(a) == [f.path for f in lapsing.files]


async def test_the_batches_of_an_attempt_that_is_over_are_not_claimed_nor_finished(
    open_store: StoreFactory,
) -> None:
    """A reclaimed job's batches (attempt 1) are never claimed again; a finish of one claimed
    before is refused; the next attempt's run clears them."""
    a = await open_store(node="a", lease=0.2)
    b = await open_store(node="b", lease=0.2)
    fence = await running_job(a)
    await a.probe_queue.add(fence, ROOT, False, files(0))
    await a.probe_queue.add(fence, ROOT, False, files(3))
    claimed = await b.probe_queue.claim([ROOT])
    assert claimed is not None
    await asyncio.sleep(0.3)
    assert [c.job.attempt for c in await reclaim(b)] == [2]
    assert await b.probe_queue.claim([ROOT]) is None
    with pytest.raises(LeaseLost, match="attempt 1 is over"):
        await b.probe_queue.finish(claimed, [row(claimed.files[0], fence.job_id)], BatchOutcome())
    with pytest.raises(LeaseLost):
        await a.probe_queue.add(fence, ROOT, False, files(6))
    with pytest.raises(LeaseLost):  # the scan of attempt 1 stops waiting for its batches
        await a.probe_queue.outcomes(fence, 0)
    again = await b.claim_next(start_change)
    assert again is not None
    second = Fence(fence.job_id, again.job.attempt)
    await b.probe_queue.clear(second)
    assert await batch_count(b, fence.job_id) == 0
    await b.probe_queue.add(second, ROOT, False, files(0))
    assert await a.probe_queue.drop(fence, 0) == []  # the old run's end
    assert await batch_count(b, fence.job_id) == 1  # leaves the new attempt's batch
    assert await video_paths(a) == []


async def test_the_end_of_a_scan_counts_every_batch_finished_before_it(
    open_store: StoreFactory,
) -> None:
    """`drop` forgets the job's batches and returns the outcomes finished since the last read:
    a batch finished after the last read is counted, one finished after the drop is refused."""
    a = await open_store(node="a")
    fence = await running_job(a)
    for first in (0, 3, 6):
        await a.probe_queue.add(fence, ROOT, False, files(first))
    one = await a.probe_queue.claim([ROOT])
    two = await a.probe_queue.claim([ROOT])
    three = await a.probe_queue.claim([ROOT])
    assert one is not None and two is not None and three is not None
    await a.probe_queue.finish(one, [], BatchOutcome(done=3))
    ((read, _),) = await a.probe_queue.outcomes(fence, 0)
    await a.probe_queue.finish(two, [row(two.files[0], fence.job_id)], BatchOutcome(done=3))
    ((_, late),) = await a.probe_queue.drop(fence, read)
    assert (late.done, late.added) == (3, 1)
    with pytest.raises(LeaseLost, match="dropped"):
        await a.probe_queue.finish(three, [row(three.files[0], fence.job_id)], BatchOutcome())
    assert await video_paths(a) == [two.files[0].path]
    assert await batch_count(a, fence.job_id) == 0


async def test_job_claims_are_limited_to_the_allowed_roots(open_store: StoreFactory) -> None:
    """A server with allowed roots claims only the jobs below them; one without, any."""
    narrow = await open_store(node="narrow", roots=["/other"])
    wide = await open_store(node="wide")
    scan = spec("/shared/videos")
    await narrow.insert_job(scan.new_job(), scan)
    assert await narrow.claim_next(start_change) is None
    inside = spec("/other/films")
    await wide.insert_job(inside.new_job(), inside)
    claimed = await narrow.claim_next(start_change)
    assert claimed is not None and claimed.job.path == "/other/films"
    rest = await wide.claim_next(start_change)
    assert rest is not None and rest.job.path == "/shared/videos"


def test_device_keys_name_a_file_system_by_its_mount() -> None:
    """The key of a file system is its mount's (type, source, root, mount point), the same in
    every process that mounts it alike; a device no mount names gets a key of its own."""
    info = (
        "22 1 0:21 / /proc rw - proc proc rw\n"
        "30 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
        "40 30 0:50 / /mnt/nas rw - nfs4 nas:/export/media rw\n"
        "41 30 0:50 /films /srv/films rw - nfs4 nas:/export/media rw\n"
        "42 30 8:17 / /mnt/my\\040disk rw shared:5 - ext4 /dev/sdb1 rw\n"
    )
    keys = DeviceKeys(info)
    again = DeviceKeys(info)
    nas, root_fs, disk = os.makedev(0, 50), os.makedev(8, 1), os.makedev(8, 17)
    assert keys.key(nas, "/mnt/nas/a.mp4") == again.key(nas, "/mnt/nas/a.mp4") > 0
    assert keys.key(nas, "/mnt/nas/a.mp4") != keys.key(nas, "/srv/films/a.mp4")
    assert keys.key(disk, "/mnt/my disk/a.mp4") != keys.key(root_fs, "/mnt/my disk/a.mp4")
    assert keys.key(root_fs, "/x.mp4") != keys.key(nas, "/mnt/nas/x.mp4")
    unknown = keys.key(os.makedev(9, 9), "/x.mp4")
    assert unknown > 0 and unknown not in {keys.key(root_fs, "/x.mp4"), keys.key(disk, "/x")}


async def batch_count(store: PostgresStore, job_id: str) -> int:
    async with await psycopg.AsyncConnection.connect(store.database.url) as conn:
        cursor = await conn.execute(
            "SELECT count(*) FROM probe_batches WHERE job_id = %s", (job_id,)
        )
        found = await cursor.fetchone()
        assert found is not None
        return int(found[0])
