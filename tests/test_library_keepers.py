"""Libraries that keep themselves current (issue 15 §2, §3, §5), with a real server, real
inotify and real files: a change becomes one targeted WATCH job and its changes on the feed;
a file being written is added once, whole; polling; a root that goes missing makes the library
OFFLINE and removes nothing; a missed schedule runs once at start."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from _library_helpers import (
    HANG_MARK,
    LONG_PROBE_TIMEOUT,
    first_rescan,
    real,
    set_fault,
    start_hung_blocker,
    tiny_video,
)
from test_libraries import Feed, create

from mediascan.server.libraries import keeper
from mediascan.server.libraries import status as st
from mediascan.server.store import SqliteStore
from mediascan.server.testing import final_job
from mediascan.v1 import scan_pb2

WAIT = 60.0
QUIET = {"nanos": 300_000_000}


async def next_of(feed: Feed, kind: int) -> Any:
    """The next change of `kind` (STATUS changes on the way are skipped unless asked for)."""
    while True:
        change = await feed.next()
        if change.kind == kind:
            return change


async def watching(stub: Any, feed: Feed, name: str = "lib") -> int:
    """Once the library's keeper watches (after the RESYNC of a new feed) and its first whole
    rescan has ended: its mode."""
    resync = await feed.next()
    assert resync.kind == scan_pb2.CHANGE_KIND_RESYNC
    if resync.sequence == 0:  # the keeper has not said it yet
        await next_of(feed, scan_pb2.CHANGE_KIND_STATUS)
    first = await first_rescan(stub, name)
    assert first.state == scan_pb2.JOB_STATE_SUCCEEDED, first
    library = await stub.GetLibrary(scan_pb2.GetLibraryRequest(name=name))
    return int(library.status.watching)


async def wait_state(stub: Any, name: str, state: int) -> Any:
    async with asyncio.timeout(WAIT):
        feed = Feed(stub, name)
        try:
            library = await stub.GetLibrary(scan_pb2.GetLibraryRequest(name=name))
            while library.status.state != state:
                change = await feed.next()
                if change.kind == scan_pb2.CHANGE_KIND_STATUS:
                    library.status.CopyFrom(change.status)
            return library
        finally:
            feed.close()


async def test_a_new_file_reaches_the_feed_through_a_watch_job(stub: Any, tmp_path: Path) -> None:
    root = tmp_path / "lib"
    (root / "sub").mkdir(parents=True)
    library = await create(
        stub, "lib", root, watch_mode=scan_pb2.WATCH_MODE_EVENTS, quiet_window=QUIET
    )
    feed = Feed(stub, "lib")
    assert await watching(stub, feed) == scan_pb2.WATCH_MODE_EVENTS
    video = tiny_video(tmp_path / "staging" / "a.mp4")
    os.rename(video, root / "sub" / "a.mp4")
    added = await next_of(feed, scan_pb2.CHANGE_KIND_ADDED)
    assert added.path == real(root / "sub" / "a.mp4") and added.video.duration.ToNanoseconds()
    job = await stub.GetJob(scan_pb2.GetJobRequest(job_id=added.job_id))
    assert job.trigger == scan_pb2.TRIGGER_WATCH and job.library == library.name
    assert list(job.options.folders) == [real(root / "sub")], job.options
    os.rename(root / "sub" / "a.mp4", root / "b.mp4")
    moved = await next_of(feed, scan_pb2.CHANGE_KIND_MOVED)
    assert (moved.old_path, moved.path) == (real(root / "sub" / "a.mp4"), real(root / "b.mp4"))
    tiny_video(tmp_path / "staging" / "c.mp4")
    (root / "tree").mkdir()
    os.rename(tmp_path / "staging" / "c.mp4", root / "tree" / "c.mp4")
    await next_of(feed, scan_pb2.CHANGE_KIND_ADDED)
    shutil.rmtree(root / "tree")
    removed = await next_of(feed, scan_pb2.CHANGE_KIND_REMOVED)
    assert removed.path == real(root / "tree" / "c.mp4")
    feed.close()
    got = await stub.GetLibrary(scan_pb2.GetLibraryRequest(name="lib"))
    assert got.status.video_count == 1 and got.status.last_job_id


async def test_a_file_being_written_is_added_once_whole(stub: Any, tmp_path: Path) -> None:
    root = tmp_path / "lib"
    root.mkdir()
    await create(stub, "lib", root, watch_mode=scan_pb2.WATCH_MODE_EVENTS, quiet_window=QUIET)
    feed = Feed(stub, "lib")
    assert await watching(stub, feed) == scan_pb2.WATCH_MODE_EVENTS
    whole = tiny_video(tmp_path / "source.mp4", seconds=2.0).read_bytes()
    target = root / "film.mp4"
    with open(target, "wb") as out:  # a slow copy: a chunk, then quiet for less than the window
        for at in range(0, len(whole), 4096):
            out.write(whole[at : at + 4096])
            out.flush()
            await asyncio.sleep(0.05)
    added = await next_of(feed, scan_pb2.CHANGE_KIND_ADDED)
    assert added.video.size_bytes == len(whole)
    jobs = await stub.ListJobs(scan_pb2.ListJobsRequest())
    assert all(job.result.failed == 0 for job in jobs.jobs), jobs
    feed.close()


@pytest.mark.slow
async def test_polling_rescans_only_the_folders_that_changed(stub: Any, tmp_path: Path) -> None:
    """WATCH_MODE_POLL: each change is found by a poll and rescanned as a targeted job (the
    folder whose files changed, or the tree that appeared), and a poll that finds nothing makes
    no job."""
    root, staging = tmp_path / "lib", tmp_path / "staging"
    (root / "sub").mkdir(parents=True)
    tiny_video(root / "a.mp4", seconds=0.4)
    await create(
        stub,
        "lib",
        root,
        watch_mode=scan_pb2.WATCH_MODE_POLL,
        poll_interval={"seconds": 1},
        quiet_window=QUIET,
    )
    feed = Feed(stub, "lib")
    assert await watching(stub, feed) == scan_pb2.WATCH_MODE_POLL
    first = await first_rescan(stub)
    assert not first.options.folders and not first.options.trees, first
    added = await next_of(feed, scan_pb2.CHANGE_KIND_ADDED)  # once quiet, if put off
    assert added.path == real(root / "a.mp4")

    async def targets_of(kind: int, path: Path) -> list[str]:
        change = await next_of(feed, kind)
        assert change.path == real(path), change
        job = await stub.GetJob(scan_pb2.GetJobRequest(job_id=change.job_id))
        assert job.trigger == scan_pb2.TRIGGER_WATCH, job
        return [*job.options.folders, *(f"tree:{tree}" for tree in job.options.trees)]

    os.rename(tiny_video(staging / "b.mp4"), root / "sub" / "b.mp4")
    assert await targets_of(scan_pb2.CHANGE_KIND_ADDED, root / "sub" / "b.mp4") == [
        real(root / "sub")
    ]
    tiny_video(staging / "new" / "deeper" / "c.mp4")
    os.rename(staging / "new", root / "new")
    assert await targets_of(scan_pb2.CHANGE_KIND_ADDED, root / "new" / "deeper" / "c.mp4") == [
        f"tree:{real(root / 'new')}"
    ]
    os.rename(tiny_video(staging / "a.mp4", seconds=0.9), root / "a.mp4")
    assert await targets_of(scan_pb2.CHANGE_KIND_UPDATED, root / "a.mp4") == [real(root)]
    shutil.rmtree(root / "new")
    assert await targets_of(scan_pb2.CHANGE_KIND_REMOVED, root / "new" / "deeper" / "c.mp4") == [
        f"tree:{real(root / 'new')}"
    ]
    feed.close()
    jobs = (await stub.ListJobs(scan_pb2.ListJobsRequest())).jobs
    assert len(jobs) >= 5, jobs
    for listed in jobs:  # each found something, or put off a file still changing
        job = await final_job(stub, listed.job_id, timeout=WAIT)
        result = job.result
        found = result.added + result.updated + result.removed + result.moved + result.deferred
        assert job.job_id == first.job_id or found, job


async def test_a_root_that_goes_away_is_offline_and_nothing_is_removed(
    stub: Any, tmp_path: Path
) -> None:
    root = tmp_path / "lib"
    tiny_video(root / "a.mp4")
    tiny_video(root / "b.mp4")
    await create(stub, "lib", root, watch_mode=scan_pb2.WATCH_MODE_EVENTS)
    feed = Feed(stub, "lib")
    assert await watching(stub, feed) == scan_pb2.WATCH_MODE_EVENTS
    await stub.SubmitScan(scan_pb2.SubmitScanRequest(path=str(root)))
    await next_of(feed, scan_pb2.CHANGE_KIND_ADDED)
    await next_of(feed, scan_pb2.CHANGE_KIND_ADDED)
    assert (root / ".mediascan-library").exists()
    os.rename(root, tmp_path / "away")
    offline = await next_of(feed, scan_pb2.CHANGE_KIND_STATUS)
    assert offline.status.state == scan_pb2.LIBRARY_STATE_OFFLINE, offline
    assert "missing" in offline.status.reason or "moved" in offline.status.reason
    root.mkdir()  # an empty folder where the library was: still not the library
    library = await stub.GetLibrary(scan_pb2.GetLibraryRequest(name="lib"))
    assert library.status.video_count == 2
    root.rmdir()
    os.rename(tmp_path / "away", root)
    back = await next_of(feed, scan_pb2.CHANGE_KIND_STATUS)
    assert back.status.state == scan_pb2.LIBRARY_STATE_ACTIVE, back
    feed.close()
    library = await stub.GetLibrary(scan_pb2.GetLibraryRequest(name="lib"))
    assert library.status.video_count == 2


async def test_a_missed_schedule_runs_once_at_start(
    make_server: Any, connect: Any, tmp_path: Path
) -> None:
    db = tmp_path / "db.sqlite"
    root = tmp_path / "lib"
    tiny_video(root / "a.mp4")
    server = await make_server(db=db)
    stub = await connect(server.address)
    await create(
        stub, "lib", root, watch_mode=scan_pb2.WATCH_MODE_OFF, rescan_interval={"seconds": 3600}
    )
    await server.stop()
    store = SqliteStore(db)  # the server was down for ten intervals
    await store.open()
    ten_ago = (await store.get_library("lib")).create_time.ToNanoseconds() - 36_000 * 10**9
    await st.update_status(store, "lib", st.next_rescan(ten_ago, 0))
    await store.close()
    server = await make_server(db=db)
    stub = await connect(server.address)
    feed = Feed(stub, "lib")
    added = await next_of(feed, scan_pb2.CHANGE_KIND_ADDED)
    feed.close()
    job = await stub.GetJob(scan_pb2.GetJobRequest(job_id=added.job_id))
    assert job.trigger == scan_pb2.TRIGGER_SCHEDULE
    jobs = (await stub.ListJobs(scan_pb2.ListJobsRequest())).jobs
    assert [j.trigger for j in jobs].count(scan_pb2.TRIGGER_SCHEDULE) == 1
    library = await stub.GetLibrary(scan_pb2.GetLibraryRequest(name="lib"))
    assert library.status.scheduled_runs == 1
    assert library.status.next_rescan_time.ToNanoseconds() > job.create_time.ToNanoseconds()


@pytest.mark.slow
async def test_a_scheduled_rescan_waits_for_a_users_scan_of_the_library(
    make_server: Any, connect: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scheduled run that comes due while a user's scan of a folder holding the library is
    running is submitted only once that scan has ended."""
    set_fault(monkeypatch, "hang", HANG_MARK)
    server = await make_server(probe_timeout=LONG_PROBE_TIMEOUT)
    stub = await connect(server.address)
    outer = tmp_path / "outer"
    tiny_video(outer / "lib" / "a.mp4")
    user_job = await start_hung_blocker(stub, outer)  # a scan of outer, the library's parent
    every_second = {"seconds": 1}
    await create(stub, "lib", outer / "lib", rescan_interval=every_second)
    get = scan_pb2.GetLibraryRequest(name="lib")
    async with asyncio.timeout(WAIT):  # no stream says a run came due: read the status
        while (await stub.GetLibrary(get)).status.scheduled_runs < 1:
            await asyncio.sleep(0.1)
    jobs = (await stub.ListJobs(scan_pb2.ListJobsRequest())).jobs
    assert [j.trigger for j in jobs] == [scan_pb2.TRIGGER_USER], jobs
    cancelled = await stub.CancelJob(scan_pb2.CancelJobRequest(job_id=user_job))
    assert cancelled.state == scan_pb2.JOB_STATE_CANCELLED
    feed = Feed(stub, "lib")
    added = await next_of(feed, scan_pb2.CHANGE_KIND_ADDED)
    feed.close()
    scheduled = await final_job(stub, added.job_id, timeout=WAIT)
    assert scheduled.trigger == scan_pb2.TRIGGER_SCHEDULE, scheduled
    ended = cancelled.end_time.ToNanoseconds()
    assert scheduled.create_time.ToNanoseconds() >= ended, (scheduled, cancelled)


@pytest.mark.slow
async def test_a_watch_job_that_fails_is_run_again(
    make_server: Any, connect: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A watch reports a change once: a WATCH job that fails (here, its time limit passes on
    a probe that hangs) is submitted again for the same folders, with no new change."""
    monkeypatch.setattr(keeper, "RETRY_SUBMIT", 0.5)
    set_fault(monkeypatch, "hang", HANG_MARK)
    server = await make_server(probe_timeout=LONG_PROBE_TIMEOUT, default_timeout=2.0)
    stub = await connect(server.address)
    root = tmp_path / "lib"
    (root / "sub").mkdir(parents=True)
    await create(stub, "lib", root, watch_mode=scan_pb2.WATCH_MODE_EVENTS, quiet_window=QUIET)
    feed = Feed(stub, "lib")
    assert await watching(stub, feed) == scan_pb2.WATCH_MODE_EVENTS
    feed.close()
    hangs = tiny_video(tmp_path / "staging" / f"{HANG_MARK}.mp4")
    os.rename(hangs, root / "sub" / hangs.name)

    async def targeted() -> list[Any]:
        jobs = (await stub.ListJobs(scan_pb2.ListJobsRequest())).jobs
        return [j for j in jobs if list(j.options.folders) == [real(root / "sub")]]

    async with asyncio.timeout(WAIT):  # no stream lists new jobs: ListJobs, read again
        while len(found := await targeted()) < 2:
            await asyncio.sleep(0.1)
    again, failed = found[:2]  # newest first
    failed = await final_job(stub, failed.job_id, timeout=WAIT)
    assert failed.state == scan_pb2.JOB_STATE_TIMED_OUT, failed
    assert again.create_time.ToNanoseconds() >= failed.end_time.ToNanoseconds(), (again, failed)


@pytest.mark.slow
async def test_a_restarted_keeper_does_not_take_a_running_rescan_for_its_first(
    make_server: Any, connect: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A keeper that starts again (here, its settings changed) while a whole rescan of the
    library is running does not count that rescan as its first (its walk may have passed what
    changed meanwhile): once it ends, a new one runs at once."""
    set_fault(monkeypatch, "hang", HANG_MARK)
    server = await make_server(probe_timeout=LONG_PROBE_TIMEOUT)
    stub = await connect(server.address)
    root = tmp_path / "lib"
    tiny_video(root / f"{HANG_MARK}.mp4")  # a whole rescan hangs on it until cancelled
    await create(stub, "lib", root, watch_mode=scan_pb2.WATCH_MODE_EVENTS, quiet_window=QUIET)

    async def whole() -> list[Any]:
        jobs = (await stub.ListJobs(scan_pb2.ListJobsRequest())).jobs
        return [j for j in jobs if j.trigger == scan_pb2.TRIGGER_WATCH and not j.options.folders]

    async with asyncio.timeout(WAIT):  # no stream lists new jobs: ListJobs, read again
        while not (running := await whole()) or running[0].state != scan_pb2.JOB_STATE_RUNNING:
            await asyncio.sleep(0.1)
    first = running[0]
    feed = Feed(stub, "lib")
    await feed.next()  # RESYNC
    await stub.UpdateLibrary(
        scan_pb2.UpdateLibraryRequest(
            library=scan_pb2.Library(name="libraries/lib", quiet_window={"nanos": 400_000_000}),
            update_mask={"paths": ["quiet_window"]},
        )
    )
    await next_of(feed, scan_pb2.CHANGE_KIND_STATUS)  # the new keeper watches
    feed.close()
    before = len(await whole())
    cancelled = await stub.CancelJob(scan_pb2.CancelJobRequest(job_id=first.job_id))
    async with asyncio.timeout(keeper.RETRY_SUBMIT / 2):  # not the retry of a failed job
        while len(found := await whole()) <= before:
            await asyncio.sleep(0.1)
    assert found[0].create_time.ToNanoseconds() >= cancelled.end_time.ToNanoseconds(), found
