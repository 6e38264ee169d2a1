"""The find walk of a large rescan (`find_walk.py`, `find_match.py`): `find` lists the folder,
the library's listing comes from the database in the same form, and only the folders where
something changed are walked in Python. Its results must be those of the Python walk; the
modules marked `both_walks` (test_rescan, test_moves, test_filesystem, test_library_changes)
run every case both ways, and these tests check what is the find walk's own."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from _library_helpers import (
    CANCELLED,
    SUCCEEDED,
    cancel,
    counts,
    library,
    real,
    scan,
    submit,
    tiny_video,
)

from mediascan.server import find_match
from mediascan.server.find_match import FindMatch, time_text
from mediascan.server.find_walk import error_paths, gnu_find, pseudo_mount_below
from mediascan.server.store import LibraryListing
from mediascan.server.store.protocol import stale_key
from mediascan.server.testing import final_job, make_many
from mediascan.server.walker import Batch, Item, Outbox

FIND_LOG = "mediascan.server.find_walk"


def _left_to_python(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What each find walk logged it left to the Python walk ("of 2 folders", ...)."""
    return [
        record.getMessage().rpartition("then the Python walk ")[2]
        for record in caplog.records
        if record.name == FIND_LOG and "then the Python walk" in record.getMessage()
    ]


def _videos_of_sizes(folder: Path, count: int) -> list[Path]:
    """`count` tiny videos of different sizes (different lengths)."""
    return [tiny_video(folder / f"v{i}.mp4", seconds=0.2 + 0.1 * i) for i in range(count)]


@pytest.mark.both_backends
async def test_an_unchanged_rescan_is_counted_by_find_alone_with_its_exact_bytes(
    make_server: Any, connect: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lib = tmp_path / "lib"
    files = [*_videos_of_sizes(lib / "a", 3), *_videos_of_sizes(lib / "b" / "c", 2)]
    os.utime(files[0], ns=(1_700_000_000_000_000_001, 1_700_000_000_000_000_001))
    server = await make_server(find_walk_min=1)
    stub = await connect(server.address)
    assert (await scan(stub, lib)).result.added == 5
    caplog.set_level(logging.DEBUG, logger=FIND_LOG)

    again = await scan(stub, lib)

    assert again.state == SUCCEEDED, again.error
    assert counts(again) == dict(
        files_total=5, added=0, updated=0, unchanged=5, removed=0, failed=0
    )
    # Every key of the listing is a line of find (nothing was left to compare in Python) ...
    assert _left_to_python(caplog) == ["of 0 folders"]
    # ... and the bytes counted from the listing's sizes are exact.
    assert again.progress.bytes_done == sum(path.stat().st_size for path in files)
    assert again.progress.files_done == 5


async def test_changes_are_found_by_the_find_walk_as_by_the_python_walk(
    make_server: Any, connect: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two servers with a database each, one of each walk, scan the same tree before and after
    the same changes: the same counts, the same library; the find walk lists in Python only
    the folders where something changed."""
    lib = tmp_path / "lib"
    _, b, c, d = (make_many(lib / name, 3) for name in ("a", "b", "c", "d"))
    make_many(lib / "e" / "f", 2)
    make_many(lib / "g", 2)
    stubs = {}
    for walk, minimum in (("find", 1), ("python", 0)):
        server = await make_server(db=tmp_path / f"{walk}.db", find_walk_min=minimum)
        stubs[walk] = await connect(server.address)
        assert (await scan(stubs[walk], lib)).result.added == 16

    tiny_video(lib / "a" / "new.mp4", seconds=0.4)  # added
    shutil.copyfile(tiny_video(tmp_path / "longer.mp4", seconds=0.5), b[0])  # updated
    c[0].unlink()  # removed
    d[0].rename(lib / "e" / "f" / "moved.mp4")  # moved
    (lib / "g" / "notes.nfo").write_text("not a video")  # nothing to compare
    caplog.set_level(logging.DEBUG, logger=FIND_LOG)
    jobs = {walk: await scan(stub, lib) for walk, stub in stubs.items()}

    for job in jobs.values():
        assert job.state == SUCCEEDED, job.error
        assert counts(job) == dict(
            files_total=16, added=1, updated=1, unchanged=13, removed=1, failed=0
        )
        assert job.result.moved == 1
    assert await library(stubs["find"], real(lib)) == await library(stubs["python"], real(lib))
    # a (added), b (updated), c (removed), d (moved from), e/f (moved to); not g
    assert _left_to_python(caplog) == ["of 5 folders"]


async def test_past_the_limit_of_folders_the_python_walk_covers_everything(
    make_server: Any,
    connect: Any,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(find_match, "MAX_TARGETS", 2)
    lib = tmp_path / "lib"
    folders = [make_many(lib / name, 2) for name in ("a", "b", "c", "d")]
    server = await make_server(find_walk_min=1)
    stub = await connect(server.address)
    assert (await scan(stub, lib)).result.added == 8
    for files in folders[:3]:
        files[0].unlink()
    caplog.set_level(logging.DEBUG, logger=FIND_LOG)

    again = await scan(stub, lib)

    assert counts(again) == dict(
        files_total=5, added=0, updated=0, unchanged=5, removed=3, failed=0
    )
    assert _left_to_python(caplog) == ["of everything"]
    assert set(await library(stub, real(lib))) == {
        real(path) for files in folders for path in files[1:]
    } | {real(folders[3][0])}


async def test_a_video_dated_before_1970_is_compared_by_the_python_walk(
    make_server: Any, connect: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`find` and the listing write such a time differently: the listing marks it as one no
    line matches, so its folder is compared in Python, where it is unchanged."""
    lib = tmp_path / "lib"
    old = tiny_video(lib / "old" / "1969.mp4")
    make_many(lib / "new", 2)
    os.utime(old, ns=(-1_500_000_000, -1_500_000_000))
    server = await make_server(find_walk_min=1)
    stub = await connect(server.address)
    assert (await scan(stub, lib)).result.added == 3
    caplog.set_level(logging.DEBUG, logger=FIND_LOG)

    again = await scan(stub, lib)

    assert counts(again) == dict(
        files_total=3, added=0, updated=0, unchanged=3, removed=0, failed=0
    )
    assert _left_to_python(caplog) == ["of 1 folders"]


async def test_videos_no_longer_named_as_videos_are_removed(
    make_server: Any, connect: Any, tmp_path: Path
) -> None:
    """A server whose --extensions leave out names the library holds: the find walk must not
    count those as unchanged (a line of find matches their keys), it must remove them as the
    Python walk does."""
    lib = tmp_path / "lib"
    kept = make_many(lib / "a", 2)
    dropped = make_many(lib / "b", 2, suffix=".mkv")
    first = await make_server(find_walk_min=1)
    assert (await scan(await connect(first.address), lib)).result.added == 4
    await first.stop()
    narrow = await make_server(find_walk_min=1, extensions="mp4")
    stub = await connect(narrow.address)

    again = await scan(stub, lib)

    assert counts(again) == dict(
        files_total=2, added=0, updated=0, unchanged=2, removed=2, failed=0
    )
    assert set(await library(stub, real(lib))) == set(map(real, kept))
    assert all(path.exists() for path in dropped)


async def test_a_folder_replaced_by_a_file_or_a_link_is_passed_over_as_by_the_python_walk(
    make_server: Any, connect: Any, tmp_path: Path
) -> None:
    lib = tmp_path / "lib"
    make_many(lib / "a", 2)
    make_many(lib / "s", 1)
    make_many(lib / "k", 1)
    stubs = {}
    for walk, minimum in (("find", 1), ("python", 0)):
        server = await make_server(db=tmp_path / f"{walk}.db", find_walk_min=minimum)
        stubs[walk] = await connect(server.address)
        assert (await scan(stubs[walk], lib)).result.added == 4
    shutil.rmtree(lib / "s")
    (lib / "s").write_text("a file now")
    (lib / "k").rename(tmp_path / "moved")
    (lib / "k").symlink_to(tmp_path / "moved")

    for walk, stub in stubs.items():
        again = await scan(stub, lib)
        assert again.state == SUCCEEDED, (walk, again.error)
        assert (again.result.unchanged, again.result.removed) == (2, 0), walk
        assert list(again.result.file_errors) == [], walk


async def test_a_video_dated_one_nanosecond_before_1970_is_unchanged(
    make_server: Any, connect: Any, tmp_path: Path
) -> None:
    lib = tmp_path / "lib"
    video = tiny_video(lib / "a" / "v.mp4")
    os.utime(video, ns=(-1, -1))
    server = await make_server(find_walk_min=1)
    stub = await connect(server.address)
    assert (await scan(stub, lib)).result.added == 1
    for _ in range(2):
        again = await scan(stub, lib)
        assert (again.result.unchanged, again.result.updated) == (1, 0)


async def test_a_find_walk_with_descriptors_above_1023(
    make_server: Any, connect: Any, tmp_path: Path
) -> None:
    """The server holds many descriptors (scans, clients): find's pipe is one above 1023,
    which select() cannot wait on."""
    lib = tmp_path / "lib"
    make_many(lib / "a", 2)
    server = await make_server(find_walk_min=1)
    stub = await connect(server.address)
    assert (await scan(stub, lib)).result.added == 2
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        assert max(held) > 1024
        again = await scan(stub, lib)
    finally:
        for fd in held:
            os.close(fd)
    assert again.state == SUCCEEDED, again.error
    assert again.result.unchanged == 2


async def test_a_cancelled_find_walk_kills_its_find_and_keeps_the_library(
    make_server: Any, connect: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `find` that never ends (a hung file system): the cancel reaches the walk, which kills
    and reaps `find`, and the scan ends CANCELLED, the library as it was."""
    lib = tmp_path / "lib"
    videos = make_many(lib / "a", 2)
    server = await make_server(find_walk_min=1)
    stub = await connect(server.address)
    assert (await scan(stub, lib)).result.added == 2
    started = tmp_path / "started"  # a FIFO: the fake find writes its pid into it
    os.mkfifo(started)
    fake = tmp_path / "bin" / "find"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = --version ]; then echo "find (GNU findutils) 4.9.0"; exit 0; fi\n'
        f"echo $$ > {started}\n"
        "exec sleep 600\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    gnu_find.cache_clear()
    try:
        job_id = (await submit(stub, lib)).job_id
        async with asyncio.timeout(30):
            pid = int(await asyncio.to_thread(started.read_text))
        assert Path(f"/proc/{pid}").exists()
        await cancel(stub, job_id)
        ended = await final_job(stub, job_id, timeout=30)
    finally:
        gnu_find.cache_clear()
    assert ended.state == CANCELLED
    assert not Path(f"/proc/{pid}").exists(), "find was left running (or unreaped)"
    assert set(await library(stub, real(lib))) == set(map(real, videos))


# -- the comparison ----------------------------------------------------------------------------


def _outbox() -> tuple[Outbox, list[Batch]]:
    batches: list[Batch] = []

    def hand_over(item: Item) -> bool:
        assert item is not None
        batches.append(item)
        return True

    return Outbox(hand_over), batches


def test_lines_and_keys_match_in_either_order_and_the_rest_is_planned() -> None:
    outbox, batches = _outbox()
    match = FindMatch("/lib/", frozenset({".mp4"}))
    same = b"a/x.mp4/10/1.0000000010"
    match.lines([same, b"a/new.mp4/5/2.0000000000", b"b/notes.txt/3/2.0000000000"], outbox)
    listing = LibraryListing(
        [same, b"c/gone.mp4/7/3.0000000000", b"d/old.mp4/4/s", b"e/undated.mp4/6/u5"], 27
    )
    match.keys(listing, outbox)
    match.lines([b"f/late.mp4/2/4.0000000000"], outbox)
    match.finish(outbox)
    outbox.send()

    assert sum(batch.unchanged for batch in batches) == 1
    assert sum(batch.unchanged_bytes for batch in batches) == 10  # exact: 27 - 7 - 4 - 6
    assert match.plan.folders == {"/lib/a", "/lib/c", "/lib/d", "/lib/e", "/lib/f"}  # not b
    index = match.left_index()
    assert index.keys == {
        "/lib/c/gone.mp4/7/3000000000": False,
        stale_key("/lib/d/old.mp4"): False,
        "/lib/e/undated.mp4/6/5": False,
    }
    assert index.undated == {"/lib/e/undated.mp4"}
    assert match.counted("/lib/a/x.mp4", 10, 1_000_000_001)
    # Changed after find counted it: counted as it was then, not again (nor probed).
    assert match.counted("/lib/a/x.mp4", 11, 9_000_000_000)
    assert not match.counted("/lib/a/new.mp4", 5, 2_000_000_000)  # a line, no key
    assert not match.counted("/lib/c/gone.mp4", 7, 3_000_000_000)  # a key, no line
    assert not match.counted("/lib/a/later.mp4", 1, 1)  # neither: came after find


def test_times_are_written_as_find_writes_them() -> None:
    assert time_text(1_600_000_000_123_456_789) == "1600000000.1234567890"
    assert time_text(5) == "0.0000000050"


def test_error_lines_name_paths_below_the_folder_or_nothing() -> None:
    start = b"/proc/self/fd/7"
    output = (
        b"find: '/proc/self/fd/7/\\303\\251t\\303\\251': Permission denied\n"
        b"find: '/proc/self/fd/7/a\\'b\\nc d/e': Input/output error\n"
    )
    assert error_paths(output, start) == ["été".encode(), b"a'b\nc d/e"]
    assert error_paths(b"find: '/elsewhere': Permission denied\n", start) is None
    assert error_paths(b"find: '/proc/self/fd/7': Permission denied\n", start) is None
    assert error_paths(b"find: warning: something else\n", start) is None
    assert error_paths(b"", start) is None


def test_a_pseudo_file_system_mounted_below_the_folder_is_found() -> None:
    mountinfo = (
        "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
        "40 22 0:5 / /media/lib/disk rw - ext4 /dev/sdb1 rw\n"
        "41 22 0:6 / /media/lib/sub/proc rw - proc proc rw\n"
        "42 22 0:7 / /media/library2/sys rw - sysfs sysfs rw\n"
    )
    assert pseudo_mount_below("/media/lib", mountinfo) == "/media/lib/sub/proc"
    assert pseudo_mount_below("/media/lib/disk", mountinfo) == ""
    assert pseudo_mount_below("/media/library2", mountinfo) == "/media/library2/sys"
