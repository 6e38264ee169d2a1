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
from _library_helpers import real, tiny_video
from test_libraries import Feed, create

from mediascan.server.libraries import status as st
from mediascan.server.store import SqliteStore
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
    """Once the library's keeper watches (after the RESYNC of a new feed): its mode."""
    resync = await feed.next()
    assert resync.kind == scan_pb2.CHANGE_KIND_RESYNC
    if resync.sequence == 0:  # the keeper has not said it yet
        await next_of(feed, scan_pb2.CHANGE_KIND_STATUS)
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
async def test_polling_finds_what_changed(stub: Any, tmp_path: Path) -> None:
    root = tmp_path / "lib"
    root.mkdir()
    await create(
        stub,
        "lib",
        root,
        watch_mode=scan_pb2.WATCH_MODE_POLL,
        poll_interval={"seconds": 1},
    )
    feed = Feed(stub, "lib")
    assert await watching(stub, feed) == scan_pb2.WATCH_MODE_POLL
    tiny_video(root / "a.mp4")
    added = await next_of(feed, scan_pb2.CHANGE_KIND_ADDED)
    job = await stub.GetJob(scan_pb2.GetJobRequest(job_id=added.job_id))
    assert job.trigger == scan_pb2.TRIGGER_WATCH and not job.options.folders
    feed.close()


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
