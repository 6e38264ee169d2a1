"""Moved, renamed and duplicated files (issue 14, section 4), with real files made with PyAV:
content fingerprints, a rescan that reports moves (the video keeps its id and is not probed
again), copies, files that only look moved, the fingerprint filter and ListDuplicates."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import grpc
import pytest
from _library_helpers import SUCCEEDED, all_videos, counts, real, scan, tiny_video

from mediascan.server.fingerprint import EDGE, content_hash, fingerprint
from mediascan.server.moves import MoveIndex
from mediascan.server.store import library_key
from mediascan.server.testing import field_violations, make_video
from mediascan.v1 import scan_pb2

pytestmark = [pytest.mark.both_backends, pytest.mark.both_walks]


def fingerprint_of(path: Path) -> str:
    fd = os.open(path, os.O_RDONLY)
    try:
        return fingerprint(fd)
    finally:
        os.close(fd)


async def by_path(stub: Any, folder: Path) -> dict[str, Any]:
    return {v.path: v for v in await all_videos(stub, path_prefix=real(folder))}


def test_a_fingerprint_reads_the_ends_of_a_file_only(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 * EDGE))
    size = big.stat().st_size
    first = fingerprint_of(big)
    assert first.startswith(f"{size}-") and len(first.split("-")[1]) == 32
    data = bytearray(big.read_bytes())
    data[EDGE + 10] ^= 1  # the middle: not read
    big.write_bytes(bytes(data))
    assert fingerprint_of(big) == first
    data[-1] ^= 1  # the last 64 KiB: read
    big.write_bytes(bytes(data))
    assert fingerprint_of(big) != first
    small = tmp_path / "small.bin"
    small.write_bytes(b"x" * 1000)
    assert fingerprint_of(small).startswith("1000-")
    fd = os.open(big, os.O_RDONLY)
    try:
        import hashlib

        assert content_hash(fd) == hashlib.blake2b(big.read_bytes(), digest_size=32).hexdigest()
    finally:
        os.close(fd)


def test_the_move_index_finds_unmet_videos_by_size_and_time() -> None:
    keys = {library_key("/m/a.mp4", 10, 5): True, library_key("/m/b.mp4", 10, 5): False}
    keys[library_key("/m/c.mp4", 11, 5)] = True
    moves = MoveIndex()
    assert moves.candidate(10, 5, keys) == "/m/b.mp4"
    del keys[library_key("/m/b.mp4", 10, 5)]  # met by the walk: not a candidate any more
    assert moves.candidate(10, 5, keys) == "/m/a.mp4"
    del keys[library_key("/m/a.mp4", 10, 5)]
    assert moves.candidate(10, 5, keys) == ""
    assert moves.candidate(10, 6, keys) == ""
    assert moves.candidate(12, 5, keys) == ""


async def test_moved_and_renamed_files_keep_their_video_and_are_not_probed(
    stub: Any, tmp_path: Path
) -> None:
    folder = tmp_path / "lib"
    renamed = tiny_video(folder / "old-name.mp4")
    moved = make_video(folder / "a" / "clip.mkv", seconds=0.3, width=96, height=64).path
    stays = tiny_video(folder / "stays.mp4", seconds=0.4)
    first = await scan(stub, folder)
    assert counts(first)["added"] == 3
    before = await by_path(stub, folder)
    assert all(v.fingerprint == fingerprint_of(Path(v.path)) for v in before.values())

    (folder / "b").mkdir()
    os.rename(renamed, folder / "new-name.mp4")  # rename keeps size and modification time
    os.rename(moved, folder / "b" / "clip.mkv")
    job = await scan(stub, folder)
    assert job.state == SUCCEEDED
    assert (job.result.moved, job.result.added, job.result.removed) == (2, 0, 0)
    assert (job.result.unchanged, job.result.failed, job.result.files_total) == (1, 0, 3)
    assert job.progress.moved == 2
    after = await by_path(stub, folder)
    assert set(after) == {real(folder / "new-name.mp4"), real(folder / "b/clip.mkv"), real(stays)}
    for old, new in ((renamed, folder / "new-name.mp4"), (moved, folder / "b/clip.mkv")):
        was, now = before[real(old)], after[real(new)]
        assert now.video_id == was.video_id
        assert now.job_id == first.job_id  # not probed again: the row is the first scan's
        assert now.probe_time == was.probe_time and now.fingerprint == was.fingerprint


async def test_a_renamed_twin_moves_its_own_video(stub: Any, tmp_path: Path) -> None:
    folder = tmp_path / "lib"
    first = tiny_video(folder / "a.mp4")
    twin = folder / "b.mp4"
    shutil.copy2(first, twin)  # the same size, time and content
    await scan(stub, folder)
    before = await by_path(stub, folder)
    os.rename(twin, folder / "c.mp4")
    job = await scan(stub, folder)
    assert (job.result.moved, job.result.added, job.result.removed) == (1, 0, 0)
    after = await by_path(stub, folder)
    assert after[real(folder / "c.mp4")].video_id == before[real(twin)].video_id
    assert after[real(first)].video_id == before[real(first)].video_id


async def test_copies_and_look_alikes_are_not_moves(stub: Any, tmp_path: Path) -> None:
    folder = tmp_path / "lib"
    original = tiny_video(folder / "original.mp4")
    other = tiny_video(folder / "other.mp4", seconds=0.4)
    await scan(stub, folder)
    before = await by_path(stub, folder)

    # A copy with the same time (cp -p): the original is still there, so it is a new video
    # with the original's metadata (not probed), and the original keeps its id.
    shutil.copy2(original, folder / "copy.mp4")
    # A file renamed and changed inside, with its size and time put back: it only looks
    # moved (its fingerprint differs), so the old video is removed and the new file probed.
    info = other.stat()
    data = bytearray(other.read_bytes())
    data[len(data) // 2] ^= 0xFF
    other.unlink()
    lookalike = folder / "lookalike.mp4"
    lookalike.write_bytes(bytes(data))
    os.utime(lookalike, ns=(info.st_atime_ns, info.st_mtime_ns))
    job = await scan(stub, folder)
    assert (job.result.moved, job.result.added, job.result.removed) == (0, 2, 1), job.result
    after = await by_path(stub, folder)
    assert after[real(original)].video_id == before[real(original)].video_id
    copy = after[real(folder / "copy.mp4")]
    assert copy.video_id != before[real(original)].video_id
    assert copy.fingerprint == before[real(original)].fingerprint
    assert copy.duration == before[real(original)].duration
    assert after[real(lookalike)].fingerprint != before[real(other)].fingerprint


async def test_duplicates_are_listed_filtered_and_confirmed(stub: Any, tmp_path: Path) -> None:
    folder = tmp_path / "lib"
    one = tiny_video(folder / "one.mp4")
    (folder / "sub").mkdir()
    shutil.copyfile(one, folder / "sub" / "one-again.mp4")
    shutil.copyfile(one, folder / "one-more.mp4")
    two = tiny_video(folder / "two.mp4", seconds=0.4)
    shutil.copyfile(two, folder / "two-copy.mp4")
    tiny_video(folder / "single.mp4", seconds=0.6)
    await scan(stub, folder)

    response = await stub.ListDuplicates(
        scan_pb2.ListDuplicatesRequest(path_prefix=real(folder), page_size=1)
    )
    assert len(response.groups) == 1 and response.next_page_token
    rest = await stub.ListDuplicates(
        scan_pb2.ListDuplicatesRequest(
            path_prefix=real(folder), page_token=response.next_page_token
        )
    )
    groups = {g.fingerprint: g for g in [*response.groups, *rest.groups]}
    assert not rest.next_page_token
    assert {g.file_count for g in groups.values()} == {3, 2}
    three = next(g for g in groups.values() if g.file_count == 3)
    assert three.fingerprint == fingerprint_of(one)
    assert three.size_bytes == one.stat().st_size
    assert [f.path for f in three.files] == sorted(
        real(p) for p in (one, folder / "sub/one-again.mp4", folder / "one-more.mp4")
    )
    assert not three.confirmed and not three.files[0].content_hash  # not asked

    same = await all_videos(stub, fingerprint=three.fingerprint)
    assert sorted(v.path for v in same) == [f.path for f in three.files]

    confirmed = await stub.ListDuplicates(
        scan_pb2.ListDuplicatesRequest(path_prefix=real(folder), confirm=True)
    )
    assert all(g.confirmed for g in confirmed.groups) and len(confirmed.groups) == 2
    assert len({f.content_hash for f in confirmed.groups[0].files}) == 1

    # A file changed since: the confirmation says so instead of agreeing.
    with open(folder / "one-more.mp4", "ab") as out:
        out.write(b"\0")
    checked = await stub.ListDuplicates(
        scan_pb2.ListDuplicatesRequest(path_prefix=real(folder), confirm=True)
    )
    group = next(g for g in checked.groups if g.fingerprint == three.fingerprint)
    assert not group.confirmed
    (changed,) = [f for f in group.files if f.error]
    assert changed.path == real(folder / "one-more.mp4") and "changed" in changed.error


async def test_bad_fingerprints_and_tokens_name_the_field(stub: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListVideos(scan_pb2.ListVideosRequest(fingerprint="abc"))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "SIZE-HASH" in field_violations(raised.value)["fingerprint"]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListDuplicates(scan_pb2.ListDuplicatesRequest(page_token="nope"))
    assert "page_token" in field_violations(raised.value)
