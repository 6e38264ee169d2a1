"""Incremental rescans (issue 3, sections 1 and 2): the size + mtime shortcut, full rescans, the
removal rule (only inside the scanned folder, only below folders listed completely, never on a
cancel or a timeout, never a row written after the scan began), deduplicated submits and
overlapping scans, and a scan of a large tree."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from _library_helpers import (
    CANCELLED,
    HANG_MARK,
    LONG_PROBE_TIMEOUT,
    QUICK_STOP,
    SUCCEEDED,
    TIMED_OUT,
    can_drop_file_permission_bypass,
    cancel,
    copies,
    counts,
    errors_by_path,
    get_job,
    library,
    progress_of,
    real,
    scan,
    scratch_folder,
    set_fault,
    start_hung_blocker,
    submit,
    tiny_video,
    unprivileged_server,
    walk_ended,
)

from mediascan.server import walker
from mediascan.server.jobs import ScanSpec
from mediascan.server.open_files import OpenFiles
from mediascan.server.roots import AllowedRoots
from mediascan.server.store import LibraryIndex, library_key
from mediascan.server.testing import (
    duration,
    final_job,
    make_many,
    make_video,
    wait_for_event,
)
from mediascan.v1 import scan_pb2

pytestmark = pytest.mark.both_walks


async def get_video(stub: Any, path: Path) -> Any:
    return await stub.GetVideo(scan_pb2.GetVideoRequest(path=real(path)))


def keep_mtime(path: Path, mtime_ns: int) -> None:
    info = path.stat()
    os.utime(path, ns=(info.st_atime_ns, mtime_ns))
    assert path.stat().st_mtime_ns == mtime_ns, "this file system rounds modification times"


# -- the size + mtime shortcut ---------------------------------------------------------------


async def test_unchanged_files_are_not_probed_again_but_a_full_rescan_probes_all(
    stub: Any, tmp_path: Path
) -> None:
    folder = tmp_path / "lib"
    first_file, *others = make_many(folder, 3)
    first = await scan(stub, folder)
    assert counts(first) == dict(
        files_total=3, added=3, updated=0, unchanged=0, removed=0, failed=0
    )
    before = await get_video(stub, first_file)

    # Same size, same mtime, different bytes (garbage): a rescan that probed the file would
    # fail it; one that trusts size + mtime keeps what the library knew.
    info = first_file.stat()
    first_file.write_bytes(b"\x00garbage" * (info.st_size // 8) + b"\x00" * (info.st_size % 8))
    keep_mtime(first_file, info.st_mtime_ns)
    assert first_file.stat().st_size == info.st_size

    quick = await scan(stub, folder)
    assert quick.state == SUCCEEDED
    assert counts(quick) == dict(
        files_total=3, added=0, updated=0, unchanged=3, removed=0, failed=0
    )
    assert await get_video(stub, first_file) == before  # not probed, not rewritten

    full = await scan(stub, folder, full=True)
    assert full.state == SUCCEEDED
    assert full.options.full is True
    # Every file was probed again: the garbage one now fails, the others count as updated.
    assert counts(full) == dict(files_total=3, added=0, updated=2, unchanged=0, removed=0, failed=1)
    assert set(errors_by_path(full)) == {real(first_file)}
    for path in others:
        video = await get_video(stub, path)
        assert video.job_id == full.job_id, path
        assert video.probe_time.ToNanoseconds() > before.probe_time.ToNanoseconds()


async def test_a_one_nanosecond_mtime_change_or_a_size_change_is_probed_again(
    stub: Any, tmp_path: Path
) -> None:
    folder = tmp_path / "lib"
    same = tiny_video(folder / "same.mp4")
    touched = tiny_video(folder / "touched.mp4")
    resized = tiny_video(folder / "resized.mp4")
    first = await scan(stub, folder)
    assert first.result.added == 3
    ids = {p: (await get_video(stub, p)).video_id for p in (same, touched, resized)}

    keep_mtime(touched, touched.stat().st_mtime_ns + 1)
    old_mtime = resized.stat().st_mtime_ns
    old_size = resized.stat().st_size
    make_video(resized, width=96, height=64, seconds=0.6)  # new content, another size
    keep_mtime(resized, old_mtime)
    assert resized.stat().st_size != old_size

    second = await scan(stub, folder)
    assert second.state == SUCCEEDED
    assert counts(second) == dict(
        files_total=3, added=0, updated=2, unchanged=1, removed=0, failed=0
    )
    assert (await get_video(stub, same)).job_id == first.job_id
    assert (await get_video(stub, touched)).job_id == second.job_id
    video = await get_video(stub, resized)
    assert (video.job_id, video.width, video.height) == (second.job_id, 96, 64)
    assert video.duration.ToNanoseconds() / 1e9 == pytest.approx(0.6, abs=0.1)
    # The id of a video stays the same while its file stays in the library.
    for path, video_id in ids.items():
        assert (await get_video(stub, path)).video_id == video_id, path


# -- what a rescan may remove ------------------------------------------------------------------


async def test_removal_stays_inside_the_scanned_folder(stub: Any, tmp_path: Path) -> None:
    root = tmp_path / "media"
    top = tiny_video(root / "lib" / "top.mp4")
    nested = tiny_video(root / "lib" / "sub" / "nested.mp4")
    sibling = tiny_video(root / "lib2" / "sibling.mp4")  # "lib2" starts with "lib"
    other = tiny_video(root / "other" / "other.mp4")
    keeper = tiny_video(root / "lib" / "keeper.mp4")
    assert (await scan(stub, root)).result.added == 5
    for path in (top, nested, sibling, other):
        path.unlink()

    flat = await scan(stub, root / "lib", recursive=False)
    assert flat.state == SUCCEEDED
    assert (flat.result.removed, flat.result.unchanged) == (1, 1)
    assert set(await library(stub, real(root))) == {
        real(p) for p in (keeper, nested, sibling, other)
    }

    sub = await scan(stub, root / "lib" / "sub")
    assert sub.result.removed == 1
    lib = await scan(stub, root / "lib")
    assert (lib.result.removed, lib.result.unchanged) == (0, 1)
    assert set(await library(stub, real(root))) == {real(p) for p in (keeper, sibling, other)}

    everything = await scan(stub, root)
    assert everything.result.removed == 2
    assert set(await library(stub, real(root))) == {real(keeper)}


async def test_a_vanished_subfolder_keeps_its_videos(stub: Any, tmp_path: Path) -> None:
    """An unmounted disk or a folder moved away: the walk cannot see it, so it must not wipe
    what the library knew about it. Files gone from folders that were listed are removed."""
    lib = tmp_path / "lib"
    top = tiny_video(lib / "top.mp4")
    gone = tiny_video(lib / "gone.mp4")
    on_disk = [tiny_video(lib / "disk" / "x.mp4"), tiny_video(lib / "disk" / "deeper" / "y.mp4")]
    assert (await scan(stub, lib)).result.added == 4
    gone.unlink()
    parked = tmp_path / "parked"
    (lib / "disk").rename(parked)

    second = await scan(stub, lib)
    assert second.state == SUCCEEDED
    assert counts(second) == dict(
        files_total=1, added=0, updated=0, unchanged=1, removed=1, failed=0
    )
    assert set(await library(stub, real(lib))) == {real(top), *map(real, on_disk)}

    parked.rename(lib / "disk")  # the disk is back: nothing to probe again
    third = await scan(stub, lib)
    assert counts(third) == dict(
        files_total=3, added=0, updated=0, unchanged=3, removed=0, failed=0
    )


@pytest.mark.skipif(
    not can_drop_file_permission_bypass(),
    reason="running as root without util-linux setpriv: chmod 000 cannot lock the server out "
    "(test_a_vanished_subfolder_keeps_its_videos covers the vanished case)",
)
async def test_an_unreadable_subfolder_keeps_its_videos(tmp_path: Path, walk: str) -> None:
    """A real permission error: the server runs without root's permission bypass. With the
    find walk, `find` meets the error and the Python walk reports it."""
    lib = tmp_path / "lib"
    top = tiny_video(lib / "top.mp4")
    gone = tiny_video(lib / "open" / "gone.mp4")
    locked_dir = lib / "locked"
    locked = [tiny_video(locked_dir / "a.mp4"), tiny_video(locked_dir / "deeper" / "b.mp4")]
    args = ("--find-walk-min", "1" if walk == "find" else "0")
    async with unprivileged_server(tmp_path / "mediascan.db", *args) as (stub, _):
        assert (await scan(stub, lib)).result.added == 4
        gone.unlink()
        unreadable_file = tiny_video(lib / "open" / "unreadable.mp4")
        unreadable_file.chmod(0)
        locked_dir.chmod(0)
        try:
            second = await scan(stub, lib)
        finally:
            locked_dir.chmod(0o755)
            unreadable_file.chmod(0o644)
        assert second.state == SUCCEEDED, second.error
        errors = errors_by_path(second)
        assert errors[real(locked_dir)][0] == grpc.StatusCode.PERMISSION_DENIED, errors
        assert errors[real(unreadable_file)][0] == grpc.StatusCode.PERMISSION_DENIED, errors
        assert (second.result.removed, second.result.unchanged) == (1, 1)
        assert second.result.failed == 1  # the unreadable file
        assert set(await library(stub, real(lib))) == {real(top), *map(real, locked)}


@pytest.mark.parametrize("how", ["cancel", "timeout"])
async def test_a_cancelled_or_timed_out_scan_removes_nothing(
    make_server: Any, connect: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, how: str
) -> None:
    set_fault(monkeypatch, "hang", HANG_MARK)
    server = await make_server(probe_timeout=LONG_PROBE_TIMEOUT, **QUICK_STOP)
    stub = await connect(server.address)
    lib = tmp_path / "lib"
    kept, *deleted = make_many(lib, 3)
    assert (await scan(stub, lib)).result.added == 3
    for path in deleted:
        path.unlink()
    hang = tiny_video(lib / "late" / f"{HANG_MARK}.mp4")  # holds the scan after its walk

    fields = {"timeout": duration(1.5)} if how == "timeout" else {}
    job_id = (await submit(stub, lib, **fields)).job_id
    # The walk is over and the unchanged file handled: only the hung probe is left.
    await wait_for_event(
        stub, job_id, lambda e: walk_ended(e) and progress_of(e).files_done >= 1, timeout=30
    )
    if how == "cancel":
        await cancel(stub, job_id)
    job = await final_job(stub, job_id, timeout=30)
    assert job.state == (CANCELLED if how == "cancel" else TIMED_OUT)
    assert job.result.removed == 0
    assert job.result.unchanged == 1
    assert set(await library(stub, real(lib))) == {real(p) for p in (kept, *deleted)}

    # The rows were removable: a scan that completes removes them.
    hang.unlink()
    clean = await scan(stub, lib)
    assert (clean.state, clean.result.removed) == (SUCCEEDED, 2)
    assert set(await library(stub, real(lib))) == {real(kept)}


async def test_a_non_recursive_rescan_counts_and_removes_only_the_top_folder(
    stub: Any, tmp_path: Path
) -> None:
    lib = tmp_path / "lib"
    kept, gone = tiny_video(lib / "a.mp4"), tiny_video(lib / "b.mp4")
    nested = [tiny_video(lib / "sub" / "c.mp4"), tiny_video(lib / "sub" / "deeper" / "d.mp4")]
    assert (await scan(stub, lib)).result.added == 4

    flat = await scan(stub, lib, recursive=False)
    assert counts(flat) == dict(files_total=2, added=0, updated=0, unchanged=2, removed=0, failed=0)
    gone.unlink()
    nested[0].unlink()
    flat = await scan(stub, lib, recursive=False)
    assert counts(flat) == dict(files_total=1, added=0, updated=0, unchanged=1, removed=1, failed=0)
    assert set(await library(stub, real(lib))) == {real(kept), *map(real, nested)}

    deep = await scan(stub, lib)
    assert counts(deep) == dict(files_total=2, added=0, updated=0, unchanged=2, removed=1, failed=0)
    assert set(await library(stub, real(lib))) == {real(kept), real(nested[1])}


async def test_each_rescan_compares_with_the_library_as_the_last_scan_left_it(
    stub: Any, tmp_path: Path
) -> None:
    """Rescans of an unchanged folder reuse what they read of the library; every library write
    must make the next rescan read it again. A file removed from the library and then put back
    as it was (same size and time) is added again; a file probed at a new time and then set back
    to its old time is probed again."""
    lib = tmp_path / "lib"
    back, touched = tiny_video(lib / "back.mp4"), tiny_video(lib / "touched.mp4")
    assert (await scan(stub, lib)).result.added == 2
    assert (await scan(stub, lib)).result.unchanged == 2

    saved, info = back.read_bytes(), back.stat()
    back.unlink()
    assert counts(await scan(stub, lib)) == dict(
        files_total=1, added=0, updated=0, unchanged=1, removed=1, failed=0
    )
    back.write_bytes(saved)
    keep_mtime(back, info.st_mtime_ns)
    assert counts(await scan(stub, lib)) == dict(
        files_total=2, added=1, updated=0, unchanged=1, removed=0, failed=0
    )

    old_mtime = touched.stat().st_mtime_ns
    keep_mtime(touched, old_mtime + 1)
    assert counts(await scan(stub, lib)) == dict(
        files_total=2, added=0, updated=1, unchanged=1, removed=0, failed=0
    )
    keep_mtime(touched, old_mtime)
    assert counts(await scan(stub, lib)) == dict(
        files_total=2, added=0, updated=1, unchanged=1, removed=0, failed=0
    )
    assert (await scan(stub, lib)).result.unchanged == 2


async def test_rows_without_a_device_get_one_and_removal_checks_the_device(
    stub: Any, tmp_path: Path
) -> None:
    """Rows written by schema version 1 have device 0 ("unknown"): an unchanged file's row gets
    its device at the next rescan. A missing file whose row names another device than its
    folder's is kept (its disk may be unmounted); with device 0 it is removed."""
    lib = tmp_path / "lib"
    files = make_many(lib, 3)
    assert (await scan(stub, lib)).result.added == 3
    device = lib.stat().st_dev
    with contextlib.closing(sqlite3.connect(tmp_path / "mediascan.db")) as db, db:
        db.execute("UPDATE videos SET dev = 0")

    rescan = await scan(stub, lib)
    assert counts(rescan) == dict(
        files_total=3, added=0, updated=0, unchanged=3, removed=0, failed=0
    )
    with contextlib.closing(sqlite3.connect(tmp_path / "mediascan.db")) as db:
        assert db.execute("SELECT DISTINCT dev FROM videos").fetchall() == [(device,)]

    other, unknown, kept = files
    other.unlink()
    unknown.unlink()
    with contextlib.closing(sqlite3.connect(tmp_path / "mediascan.db")) as db, db:
        db.execute("UPDATE videos SET dev = ? WHERE path = ?", (device + 1, real(other)))
        db.execute("UPDATE videos SET dev = 0 WHERE path = ?", (real(unknown),))
    last = await scan(stub, lib)
    assert counts(last) == dict(files_total=1, added=0, updated=0, unchanged=1, removed=1, failed=0)
    assert set(await library(stub, real(lib))) == {real(other), real(kept)}


def test_the_walker_hands_over_its_counts_as_it_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unchanged files are only counted in the walker thread, and the counts reach the loop in
    batches while the walk goes on (so progress moves during a big unchanged rescan), also from
    a folder bigger than the walker's chunk. Every key met is taken out of the walker's copy of
    the index."""
    lib = tmp_path / "lib"
    (lib / "sub").mkdir(parents=True)
    videos = [lib / f"v{i:03d}.mp4" for i in range(100)] + [lib / "sub" / "w.MKV"]
    for path in [*videos, lib / "notes.txt", lib / "sub" / "cover.jpg"]:
        path.write_bytes(b"x" * 10)
    index = LibraryIndex(
        {library_key(str(p), p.stat().st_size, p.stat().st_mtime_ns): True for p in videos},
        set(),
    )
    monkeypatch.setattr(walker, "COMPARE_CHUNK", 10)
    monkeypatch.setattr(walker, "TALLY_BATCH", 25)
    monkeypatch.setattr(walker, "HAND_OVER_INTERVAL", 3600.0)
    spec = ScanSpec(
        path=str(lib), recursive=True, follow_symlinks=False, timeout=60.0, priority=0, full=False
    )
    batches: list[Any] = []
    files = OpenFiles(16)
    walk = walker.Walker(
        spec,
        AllowedRoots(),
        lambda b: batches.append(b) or True,
        threading.Event(),
        index,
        root=lambda: os.open(lib, os.O_RDONLY | os.O_DIRECTORY),
        files=files,
    )
    walk.run()
    files.close_all()

    assert batches.pop() is None
    counted = [b.unchanged for b in batches]  # hand-overs after 25 or more (chunks of 10 entries)
    assert sum(counted) == len(videos)
    assert len(counted) >= 4
    assert all(25 <= n <= 30 for n in counted[:-1]), counted
    assert not any(b.files or b.errors or b.undated for b in batches)
    assert sum(b.unchanged_bytes for b in batches) == 10 * len(videos)
    assert all(b.last_unchanged in map(str, videos) for b in batches)
    assert not walk.index.keys  # its copy: the index itself may be shared
    assert len(index.keys) == len(videos)
    assert walk.listed == {str(lib): lib.stat().st_dev, str(lib / "sub"): lib.stat().st_dev}


# -- overlapping scans and deduplication --------------------------------------------------------


async def test_a_scan_never_removes_a_video_written_after_it_began(
    make_server: Any, connect: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Scan P walks P/c before P/c/new.mp4 exists; a scan of P/c then adds new.mp4 while P is
    still probing. P's removal pass must not take new.mp4 for a file gone from P/c."""
    set_fault(monkeypatch, "hang", HANG_MARK)
    # P holds for the probe timeout: time enough for a whole scan of P/c meanwhile.
    server = await make_server(probe_timeout=3.0, **QUICK_STOP)
    stub = await connect(server.address)
    parent = tmp_path / "p"
    child = parent / "c"
    old = tiny_video(child / "old.mp4")
    hang = tiny_video(parent / "hold" / f"{HANG_MARK}.mp4")  # P waits on it for the timeout

    p_id = (await submit(stub, parent)).job_id
    await wait_for_event(stub, p_id, walk_ended, timeout=30)
    assert (await get_job(stub, p_id)).state == scan_pb2.JOB_STATE_RUNNING
    new = copies(old, [child / "new.mp4"])[0]
    c_job = await scan(stub, child)
    assert c_job.state == SUCCEEDED
    assert real(new) in await library(stub, real(child))

    p_job = await final_job(stub, p_id, timeout=30)
    assert p_job.state == SUCCEEDED
    assert p_job.end_time.ToNanoseconds() > c_job.end_time.ToNanoseconds()  # P finished last
    assert p_job.result.removed == 0
    assert errors_by_path(p_job)[real(hang)][0] == grpc.StatusCode.DEADLINE_EXCEEDED
    assert set(await library(stub, real(parent))) == {real(old), real(new)}


async def test_overlapping_scans_leave_the_library_a_clean_scan_would(
    make_server: Any, connect: Any, tmp_path: Path
) -> None:
    parent = tmp_path / "p"
    seed = tiny_video(tmp_path / "seed.mp4")
    copies(seed, [parent / f"top{i:03d}.mp4" for i in range(100)])
    copies(seed, [parent / "c" / f"mid{i:03d}.mp4" for i in range(100)])
    copies(seed, [parent / "c" / "d" / f"low{i:03d}.mp4" for i in range(60)])
    make_video(parent / "c" / "other.mkv", width=80, height=60, seconds=0.4)
    total = 261
    child = parent / "c"

    reference_server = await make_server(db=tmp_path / "reference.db")
    reference_stub = await connect(reference_server.address)
    assert (await scan(reference_stub, parent)).result.added == total
    reference = await library(reference_stub, real(parent))
    assert len(reference) == total

    server = await make_server(workers=2)
    stub = await connect(server.address)

    async def both(**fields: Any) -> tuple[Any, Any]:
        p_id = (await submit(stub, parent, **fields)).job_id
        c_id = (await submit(stub, child, **fields)).job_id
        p_job, c_job = await asyncio.gather(final_job(stub, p_id), final_job(stub, c_id))
        assert (p_job.state, c_job.state) == (SUCCEEDED, SUCCEEDED), (p_job.error, c_job.error)
        assert p_job.result.failed == c_job.result.failed == 0
        return p_job, c_job

    # Fresh library: every video is added exactly once, by one scan or the other.
    p_job, c_job = await both()
    assert p_job.result.added + c_job.result.added == total
    assert await library(stub, real(parent)) == reference

    # Both probe everything again: nothing is added or removed.
    p_job, c_job = await both(full=True)
    assert (p_job.result.added, c_job.result.added) == (0, 0)
    assert (p_job.result.removed, c_job.result.removed) == (0, 0)
    assert p_job.result.updated == total
    assert await library(stub, real(parent)) == reference

    # Files deleted below the child: removed once in all, whichever scan gets there first.
    deleted = sorted(child.glob("mid0[0-1]?.mp4"))
    assert len(deleted) == 20
    for path in deleted:
        path.unlink()
    p_job, c_job = await both()
    assert p_job.result.removed + c_job.result.removed == len(deleted)
    expected = {k: v for k, v in reference.items() if k not in {real(p) for p in deleted}}
    assert await library(stub, real(parent)) == expected


async def test_a_submit_like_an_active_job_returns_that_job(
    make_server: Any, connect: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    set_fault(monkeypatch, "hang", HANG_MARK)
    server = await make_server(workers=1, probe_timeout=LONG_PROBE_TIMEOUT, **QUICK_STOP)
    stub = await connect(server.address)
    blocker = await start_hung_blocker(stub, tmp_path / "blocker")
    folder = tmp_path / "lib"
    make_many(folder, 2)
    (tmp_path / "alias").symlink_to(folder, target_is_directory=True)

    first = await submit(stub, folder)
    assert not first.deduplicated
    # The same folder spelled differently is the same scan.
    for spelling in (folder, tmp_path / "alias", f"{tmp_path}/blocker/../lib/"):
        again = await submit(stub, spelling)
        assert (again.job_id, again.deduplicated) == (first.job_id, True), spelling
        assert again.job.state == scan_pb2.JOB_STATE_QUEUED
    # Other options are other work.
    others = [
        await submit(stub, folder, full=True),
        await submit(stub, folder, follow_symlinks=True),
        await submit(stub, folder, recursive=False),
    ]
    assert len({o.job_id for o in others} | {first.job_id}) == 4
    assert not any(o.deduplicated for o in others)
    listed = await stub.ListJobs(scan_pb2.ListJobsRequest())
    assert len(listed.jobs) == 5  # the blocker, first, and the three others

    assert (await cancel(stub, blocker)).state == CANCELLED
    done = await final_job(stub, first.job_id)
    assert (done.state, done.result.added) == (SUCCEEDED, 2)
    for other in others:
        assert (await final_job(stub, other.job_id)).state == SUCCEEDED
    # A finished job is not joined: the same submit starts a new scan.
    fresh = await submit(stub, folder)
    assert fresh.job_id != first.job_id
    assert not fresh.deduplicated
    assert (await final_job(stub, fresh.job_id)).result.unchanged == 2


# -- a large tree ------------------------------------------------------------------------------


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    with scratch_folder(tmp_path) as folder:
        yield folder


@pytest.mark.slow
@pytest.mark.xdist_group("heavy")
async def test_a_scan_of_a_20000_file_tree_finishes_and_rescans_cheaply(
    spawn_server: Any, connect: Any, scratch: Path
) -> None:
    """20,000 entries in 100 folders: 19,600 empty text files and 400 videos (hard links of one
    clip). Only videos count; the rescan probes nothing; a folder emptied on disk is removed.
    (A 100,000-file memory measurement belongs to the benchmarks.)"""
    started = time.monotonic()
    root = scratch / "tree"
    seed = tiny_video(scratch / "seed.mp4")
    videos: list[Path] = []
    for folder_index in range(100):
        folder = root / f"f{folder_index // 10:02d}" / f"g{folder_index:03d}"
        folder.mkdir(parents=True)
        for file_index in range(196):
            os.mknod(folder / f"note{file_index:03d}.txt")  # an empty file, in one call
        for file_index in range(4):
            link = folder / f"clip{file_index}.mp4"
            os.link(seed, link)
            videos.append(link)
    build_seconds = time.monotonic() - started

    spawned = await spawn_server("--probe-workers", "2")
    stub = await connect(spawned.address)
    started = time.monotonic()
    first = await scan(stub, root, timeout=60)
    first_seconds = time.monotonic() - started
    assert first.state == SUCCEEDED, first.error
    assert counts(first) == dict(
        files_total=400, added=400, updated=0, unchanged=0, removed=0, failed=0
    )

    for path in videos[:4]:  # one folder's videos
        path.unlink()
    started = time.monotonic()
    second = await scan(stub, root, timeout=60)
    second_seconds = time.monotonic() - started
    assert counts(second) == dict(
        files_total=396, added=0, updated=0, unchanged=396, removed=4, failed=0
    )
    assert len(await library(stub, real(root))) == 396
    peak_kib = _peak_rss_kib(spawned.pid)
    print(
        f"\n20k tree: built in {build_seconds:.2f}s, first scan {first_seconds:.2f}s, "
        f"rescan {second_seconds:.2f}s, server peak RSS {peak_kib / 1024:.0f} MiB"
    )
    assert peak_kib < 512 * 1024, f"the server peaked at {peak_kib / 1024:.0f} MiB"


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/PID/status")
