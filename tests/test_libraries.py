"""Libraries as resources (issue 15 §1) and their change feed (§4) over real gRPC: the
standard methods and their errors, ListVideos of a library, and WatchLibrary's RESYNC, order,
resume and the changes a scan's writes record."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import grpc
import pytest
from _library_helpers import SUCCEEDED, all_videos, real, scan, tiny_video

from mediascan.server.testing import field_violations
from mediascan.v1 import scan_pb2

FEED_TIMEOUT = 60.0


async def create(stub: Any, library_id: str, root: Path | str, **fields: Any) -> Any:
    """CreateLibrary; with a quiet window of 1 ns unless given, so that the files a test has
    just written are probed at once, and not watched unless asked for (only the scans a test
    submits change the library)."""
    fields.setdefault("quiet_window", {"nanos": 1})
    fields.setdefault("watch_mode", scan_pb2.WATCH_MODE_OFF)
    return await stub.CreateLibrary(
        scan_pb2.CreateLibraryRequest(
            library_id=library_id, library=scan_pb2.Library(root=str(root), **fields)
        )
    )


async def expect_error(call: Any, code: grpc.StatusCode, field: str | None = None) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, (info.value.code(), info.value.details())
    if field is not None:
        assert field in field_violations(info.value), info.value.details()
    return str(info.value.details())


class Feed:
    """A WatchLibrary stream read in the background into a queue of changes."""

    def __init__(self, stub: Any, name: str, after: int = 0, uid: str = "") -> None:
        self.call = stub.WatchLibrary(
            scan_pb2.WatchLibraryRequest(name=name, after_sequence=after, library_uid=uid)
        )
        self.changes: asyncio.Queue[Any] = asyncio.Queue()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for change in self.call:
            await self.changes.put(change)

    async def next(self) -> Any:
        async with asyncio.timeout(FEED_TIMEOUT):
            return await self.changes.get()

    async def take(self, count: int) -> list[Any]:
        return [await self.next() for _ in range(count)]

    def close(self) -> None:
        self.call.cancel()
        self.task.cancel()


async def test_create_get_list_update_delete(stub: Any, tmp_path: Path) -> None:
    (tmp_path / "films").mkdir()
    (tmp_path / "shows").mkdir()
    made = await create(stub, "films", tmp_path / "films", quiet_window={"seconds": 3})
    assert made.name == "libraries/films" and made.root == real(tmp_path / "films")
    assert made.recursive and made.watch_mode == scan_pb2.WATCH_MODE_OFF
    assert made.quiet_window.seconds == 3 and made.poll_interval.seconds == 300
    assert made.removal_limit == 0.5 and made.uid and made.create_time.seconds > 0
    assert made.status.state == scan_pb2.LIBRARY_STATE_ACTIVE
    shows = await create(
        stub, "shows", tmp_path / "shows", watch_mode=scan_pb2.WATCH_MODE_UNSPECIFIED
    )
    assert shows.watch_mode == scan_pb2.WATCH_MODE_AUTO  # the default
    got = await stub.GetLibrary(scan_pb2.GetLibraryRequest(name="libraries/films"))
    assert got.uid == made.uid
    assert (await stub.GetLibrary(scan_pb2.GetLibraryRequest(name="films"))).uid == made.uid
    page = await stub.ListLibraries(scan_pb2.ListLibrariesRequest(page_size=1))
    assert [lib.name for lib in page.libraries] == ["libraries/films"] and page.next_page_token
    rest = await stub.ListLibraries(
        scan_pb2.ListLibrariesRequest(page_size=1, page_token=page.next_page_token)
    )
    assert [lib.name for lib in rest.libraries] == ["libraries/shows"]
    assert not rest.next_page_token
    updated = await stub.UpdateLibrary(
        scan_pb2.UpdateLibraryRequest(
            library=scan_pb2.Library(name="libraries/films", watch_mode=scan_pb2.WATCH_MODE_POLL),
            update_mask={"paths": ["watch_mode"]},
        )
    )
    assert updated.watch_mode == scan_pb2.WATCH_MODE_POLL and updated.quiet_window.seconds == 3
    await stub.DeleteLibrary(scan_pb2.DeleteLibraryRequest(name="libraries/films"))
    await expect_error(
        stub.GetLibrary(scan_pb2.GetLibraryRequest(name="libraries/films")),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_bad_requests_get_clear_errors(stub: Any, tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    bad = grpc.StatusCode.INVALID_ARGUMENT
    await expect_error(create(stub, "Films!", tmp_path / "a"), bad, "library_id")
    await expect_error(create(stub, "films", ""), bad, "library.root")
    await expect_error(create(stub, "films", "relative/path"), bad, "library.root")
    await expect_error(
        create(stub, "films", tmp_path / "a", removal_limit=2.0), bad, "library.removal_limit"
    )
    await expect_error(
        create(stub, "films", tmp_path / "a", poll_interval={"nanos": 500_000_000}),
        bad,
        "library.poll_interval",
    )
    await expect_error(create(stub, "films", tmp_path / "missing"), grpc.StatusCode.NOT_FOUND)
    for extensions in ("mp4,+mkv", "m p4", "x" * 2000):
        details = await expect_error(
            create(stub, "films", tmp_path / "a", extensions=extensions), bad, "library.extensions"
        )
        assert "extension" in details, details
    await create(stub, "films", tmp_path / "a")
    await expect_error(
        create(stub, "films", tmp_path / "a" / "b"), grpc.StatusCode.ALREADY_EXISTS, "library_id"
    )
    for root in (tmp_path / "a" / "b", tmp_path / "a", tmp_path):
        details = await expect_error(
            create(stub, "other", root), grpc.StatusCode.FAILED_PRECONDITION, "library.root"
        )
        assert "overlaps" in details and "films" in details
    await expect_error(
        stub.UpdateLibrary(
            scan_pb2.UpdateLibraryRequest(
                library=scan_pb2.Library(name="libraries/films", root="/elsewhere")
            )
        ),
        bad,
        "library.root",
    )
    await expect_error(
        stub.UpdateLibrary(
            scan_pb2.UpdateLibraryRequest(
                library=scan_pb2.Library(name="libraries/films"), update_mask={"paths": ["uid"]}
            )
        ),
        bad,
        "update_mask",
    )
    await expect_error(
        stub.DeleteLibrary(scan_pb2.DeleteLibraryRequest(name="libraries/nope")),
        grpc.StatusCode.NOT_FOUND,
    )
    await expect_error(
        stub.ListVideos(scan_pb2.ListVideosRequest(library="libraries/nope")),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_root_outside_the_allowed_roots_is_refused(
    make_server: Any, connect: Any, tmp_path: Path
) -> None:
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    server = await make_server(allow_roots=(str(allowed),))
    stub = await connect(server.address)
    await expect_error(create(stub, "x", outside), grpc.StatusCode.PERMISSION_DENIED)
    assert (await create(stub, "x", allowed)).root == real(allowed)


async def test_the_feed_reports_a_scans_changes_in_order(stub: Any, tmp_path: Path) -> None:
    root = tmp_path / "lib"
    first = tiny_video(root / "one.mp4")
    tiny_video(tmp_path / "elsewhere" / "x.mp4")  # not in the library
    await scan(stub, root)  # before the library: part of its listing, not of its feed
    library = await create(stub, "lib", root)
    assert library.status.video_count == 1
    feed = Feed(stub, "libraries/lib")
    resync = await feed.next()
    assert resync.kind == scan_pb2.CHANGE_KIND_RESYNC and resync.sequence == 0
    assert resync.library_uid == library.uid
    second = tiny_video(root / "sub" / "two.mp4")
    job = await scan(stub, tmp_path)
    assert job.state == SUCCEEDED and job.result.added == 2  # two.mp4 and elsewhere/x.mp4
    added = await feed.next()
    assert (added.kind, added.sequence, added.path) == (
        scan_pb2.CHANGE_KIND_ADDED,
        1,
        real(second),
    )
    assert added.video.path == real(second) and added.job_id == job.job_id
    os.rename(second, root / "sub" / "renamed.mp4")
    tiny_video(first, seconds=0.6)  # rewritten: another size and time
    job = await scan(stub, root)
    assert (job.result.moved, job.result.updated) == (1, 1), job.result
    changes = await feed.take(2)
    kinds = {c.kind: c for c in changes}
    assert [c.sequence for c in changes] == [2, 3]
    moved = kinds[scan_pb2.CHANGE_KIND_MOVED]
    assert (moved.old_path, moved.path) == (real(second), real(root / "sub" / "renamed.mp4"))
    assert moved.video_id == added.video_id
    updated = kinds[scan_pb2.CHANGE_KIND_UPDATED]
    assert "size_bytes" in updated.changed_fields and "duration" in updated.changed_fields
    os.unlink(root / "sub" / "renamed.mp4")
    await scan(stub, root, force=True)
    removed = await feed.next()
    assert (removed.kind, removed.sequence) == (scan_pb2.CHANGE_KIND_REMOVED, 4)
    assert removed.video_id == added.video_id and not removed.HasField("video")
    feed.close()
    got = await stub.GetLibrary(scan_pb2.GetLibraryRequest(name="lib"))
    assert (got.status.video_count, got.status.last_sequence) == (1, 4)
    assert got.status.total_size_bytes == os.stat(first).st_size

    # A resume sends exactly what followed; another uid gets a RESYNC.
    resumed = Feed(stub, "lib", after=2, uid=library.uid)
    assert [c.sequence for c in await resumed.take(2)] == [3, 4]
    resumed.close()
    other = Feed(stub, "lib", after=2, uid="0123456789abcdef")
    first_change = await other.next()
    assert (first_change.kind, first_change.sequence) == (scan_pb2.CHANGE_KIND_RESYNC, 4)
    other.close()


async def test_list_videos_of_a_library(stub: Any, tmp_path: Path) -> None:
    tiny_video(tmp_path / "lib" / "a.mp4")
    tiny_video(tmp_path / "lib" / "sub" / "b.mp4")
    tiny_video(tmp_path / "other" / "c.mp4")
    await scan(stub, tmp_path)
    await create(stub, "lib", tmp_path / "lib")
    videos = await all_videos(stub, library="libraries/lib")
    assert sorted(v.path for v in videos) == [
        real(tmp_path / "lib" / "a.mp4"),
        real(tmp_path / "lib" / "sub" / "b.mp4"),
    ]
    page = await stub.ListVideos(
        scan_pb2.ListVideosRequest(library="lib", path_prefix=real(tmp_path / "lib" / "sub"))
    )
    assert [v.path for v in page.videos] == [real(tmp_path / "lib" / "sub" / "b.mp4")]
    assert page.library_sequence == 0
    await expect_error(
        stub.ListVideos(
            scan_pb2.ListVideosRequest(library="lib", path_prefix=real(tmp_path / "other"))
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "path_prefix",
    )


async def test_delete_keeps_or_drops_the_videos(stub: Any, tmp_path: Path) -> None:
    tiny_video(tmp_path / "keep" / "a.mp4")
    tiny_video(tmp_path / "drop" / "b.mp4")
    await scan(stub, tmp_path)
    await create(stub, "keep", tmp_path / "keep")
    await create(stub, "drop", tmp_path / "drop")
    await stub.DeleteLibrary(scan_pb2.DeleteLibraryRequest(name="keep"))
    await stub.DeleteLibrary(scan_pb2.DeleteLibraryRequest(name="drop", drop_videos=True))
    assert [v.path for v in await all_videos(stub)] == [real(tmp_path / "keep" / "a.mp4")]


async def test_a_scan_never_removes_more_than_the_removal_limit(stub: Any, tmp_path: Path) -> None:
    root = tmp_path / "lib"
    videos = [tiny_video(root / f"v{i}.mp4", seconds=0.2 + i / 10) for i in range(4)]
    await scan(stub, root)
    await create(stub, "lib", root)
    feed = Feed(stub, "lib")
    assert (await feed.next()).kind == scan_pb2.CHANGE_KIND_RESYNC
    for video in videos[:3]:
        video.unlink()
    job = await scan(stub, root)
    assert (job.result.removed, job.result.removals_withheld) == (0, 3), job.result
    status = await feed.next()
    assert status.kind == scan_pb2.CHANGE_KIND_STATUS
    assert status.status.state == scan_pb2.LIBRARY_STATE_DEGRADED
    assert "3 of the library's 4 videos" in status.status.reason and "force" in status.status.reason
    got = await stub.GetLibrary(scan_pb2.GetLibraryRequest(name="lib"))
    assert got.status.state == scan_pb2.LIBRARY_STATE_DEGRADED and got.status.video_count == 4
    job = await scan(stub, root, force=True)
    assert (job.result.removed, job.result.removals_withheld) == (3, 0), job.result
    assert [c.kind for c in await feed.take(3)] == [scan_pb2.CHANGE_KIND_REMOVED] * 3
    feed.close()


async def test_files_still_changing_are_deferred(stub: Any, tmp_path: Path) -> None:
    root = tmp_path / "lib"
    root.mkdir()
    await create(stub, "lib", root, quiet_window={"seconds": 3600})
    fresh = tiny_video(root / "copying.mp4")
    os.utime(fresh, (1_000_000_000, 1_000_000_000))  # an old mtime: the ctime is still new
    job = await scan(stub, root)
    assert (job.result.deferred, job.result.added) == (1, 0), job.result
    assert job.options.quiet_window.seconds == 3600 and job.library == "libraries/lib"
    await stub.UpdateLibrary(
        scan_pb2.UpdateLibraryRequest(
            library=scan_pb2.Library(name="lib", quiet_window={"nanos": 1}),
            update_mask={"paths": ["quiet_window"]},
        )
    )
    job = await scan(stub, root)
    assert (job.result.deferred, job.result.added) == (0, 1), job.result


async def test_a_library_takes_its_own_extensions_in_every_scan(stub: Any, tmp_path: Path) -> None:
    """`extensions` replaces the server's set or adds to it, for the library's scans and for a
    user's scan of a folder under its root alike; the job says what it took."""
    root = tmp_path / "lib"
    tiny_video(root / "a.mp4")
    tiny_video(root / "sub" / "b.mkv", container_format="matroska")
    tiny_video(root / "c.vid", container_format="mp4")
    await create(stub, "lib", root, extensions="MKV")
    job = await scan(stub, root / "sub")
    assert job.state == SUCCEEDED and job.options.extensions == "MKV", job
    job = await scan(stub, root)
    assert job.state == SUCCEEDED and job.options.extensions == "MKV", job
    listed = await all_videos(stub, library="libraries/lib")
    assert [v.path for v in listed] == [real(root / "sub" / "b.mkv")]
    updated = await stub.UpdateLibrary(
        scan_pb2.UpdateLibraryRequest(
            library=scan_pb2.Library(name="libraries/lib", extensions="+vid"),
            update_mask={"paths": ["extensions"]},
        )
    )
    assert updated.extensions == "+vid"
    job = await scan(stub, root)
    assert job.state == SUCCEEDED and job.result.added == 2, job
    listed = await all_videos(stub, library="libraries/lib")
    assert sorted(v.path for v in listed) == [
        real(root / "a.mp4"),
        real(root / "c.vid"),
        real(root / "sub" / "b.mkv"),
    ]
    outside = tmp_path / "outside"
    tiny_video(outside / "d.vid", container_format="mp4")
    job = await scan(stub, outside)  # no library: the server's set, which has no .vid
    assert job.state == SUCCEEDED and job.options.extensions == "", job
    assert job.result.files_total == 0, job
