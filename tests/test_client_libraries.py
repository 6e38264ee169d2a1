"""The library side of `mediascan.client` against real servers over real gRPC: the library
methods of `ScanClient`, `follow_library` (RESYNC, resume, broken connections, a server
restart) and `LibraryMirror`, down to a consumer that disconnects at random while the library
changes and still ends with exactly the library's content."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from _library_helpers import real, tiny_video
from _proxy import CuttableProxy

from mediascan.client import MediascanError, ScanClient
from mediascan.v1 import scan_pb2

TIMEOUT = 60.0
#: A quiet window of 1 ns: the files a test has just written are probed at once.
QUIET = 1e-9
#: A library that only scans change: no watch, no schedule.
QUIET_LIBRARY: dict[str, Any] = {"quiet_window": QUIET, "watch_mode": scan_pb2.WATCH_MODE_OFF}

RESYNC = scan_pb2.CHANGE_KIND_RESYNC
ADDED = scan_pb2.CHANGE_KIND_ADDED
UPDATED = scan_pb2.CHANGE_KIND_UPDATED
MOVED = scan_pb2.CHANGE_KIND_MOVED
REMOVED = scan_pb2.CHANGE_KIND_REMOVED


@pytest.fixture
async def client(server: Any) -> AsyncIterator[ScanClient]:
    async with ScanClient(server.address) as client:
        yield client


async def scan(client: ScanClient, root: Path) -> scan_pb2.Job:
    """A scan of `root` (removals confirmed), to its end."""
    submitted = await client.submit_scan(str(root), force=True)
    job = await client.wait(submitted.job_id, timeout=TIMEOUT)
    assert job.state == scan_pb2.JOB_STATE_SUCCEEDED, job
    return job


class Follower:
    """`follow_library` read in a task of its own into a queue."""

    def __init__(self, client: ScanClient, name: str, **options: Any) -> None:
        self.queue: asyncio.Queue[scan_pb2.LibraryChange] = asyncio.Queue()
        self.task = asyncio.create_task(self._read(client.follow_library(name, **options)))

    async def _read(self, feed: Any) -> None:
        async with contextlib.aclosing(feed) as changes:
            async for change in changes:
                self.queue.put_nowait(change)

    async def next(self) -> scan_pb2.LibraryChange:
        """The next change; the follower's error if it failed first."""
        async with asyncio.timeout(TIMEOUT):
            getter = asyncio.ensure_future(self.queue.get())
            await asyncio.wait({getter, self.task}, return_when=asyncio.FIRST_COMPLETED)
        if getter.done():
            return getter.result()
        getter.cancel()
        self.task.result()
        raise AssertionError("the follower ended")

    async def take(self, count: int) -> list[scan_pb2.LibraryChange]:
        return [await self.next() for _ in range(count)]

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


def kinds(changes: list[scan_pb2.LibraryChange]) -> list[int]:
    return [change.kind for change in changes]


# -- the library methods ---------------------------------------------------------------------


async def test_create_get_list_update_delete(client: ScanClient, tmp_path: Path) -> None:
    (tmp_path / "films").mkdir()
    (tmp_path / "shows").mkdir()
    made = await client.create_library(
        "films",
        str(tmp_path / "films"),
        recursive=False,
        watch_mode=scan_pb2.WATCH_MODE_POLL,
        poll_interval=datetime.timedelta(minutes=2),
        quiet_window=3,
        rescan_interval=3600,
        full_rescan_every=4,
        removal_limit=0.25,
    )
    assert (made.name, made.root) == ("libraries/films", real(tmp_path / "films"))
    assert not made.recursive and made.watch_mode == scan_pb2.WATCH_MODE_POLL
    assert (made.poll_interval.seconds, made.quiet_window.seconds) == (120, 3)
    assert (made.rescan_interval.seconds, made.full_rescan_every) == (3600, 4)
    assert made.removal_limit == 0.25 and made.uid
    shows = await client.create_library("shows", str(tmp_path / "shows"))
    assert shows.recursive and shows.watch_mode == scan_pb2.WATCH_MODE_AUTO  # the defaults
    assert (await client.get_library("films")).uid == made.uid
    assert (await client.get_library("libraries/films")).uid == made.uid
    listed = [library.name async for library in client.list_libraries(page_size=1)]
    assert listed == ["libraries/films", "libraries/shows"]

    # Only the settings given change.
    updated = await client.update_library("films", quiet_window=5)
    assert updated.quiet_window.seconds == 5
    assert not updated.recursive and updated.watch_mode == scan_pb2.WATCH_MODE_POLL
    assert updated.rescan_interval.seconds == 3600 and updated.removal_limit == 0.25
    updated = await client.update_library("libraries/films", recursive=True, rescan_interval=0)
    assert updated.recursive and updated.rescan_interval.ToNanoseconds() == 0
    assert updated.quiet_window.seconds == 5 and updated.full_rescan_every == 4
    with pytest.raises(ValueError, match="at least one setting"):
        await client.update_library("films")
    with pytest.raises(TypeError, match="unknown library settings: root"):
        await client.update_library("films", root="/elsewhere")  # type: ignore[call-arg]

    await client.delete_library("films")
    with pytest.raises(MediascanError) as caught:
        await client.get_library("films")
    assert caught.value.code == grpc.StatusCode.NOT_FOUND
    assert [field for field, _ in caught.value.field_violations] == ["name"]
    assert [library.name async for library in client.list_libraries()] == ["libraries/shows"]


async def test_refusals_are_mediascan_errors(client: ScanClient, tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    await client.create_library("a", str(tmp_path / "a"))
    refusals = [
        (client.create_library("Bad!", str(tmp_path / "a")), "INVALID_ARGUMENT", "library_id"),
        (client.create_library("b", str(tmp_path / "a" / "b")), "FAILED_PRECONDITION", None),
        (client.create_library("a", str(tmp_path / "a")), "ALREADY_EXISTS", "library_id"),
        (
            client.update_library("a", removal_limit=2),
            "INVALID_ARGUMENT",
            "library.removal_limit",
        ),
        (client.delete_library("nope"), "NOT_FOUND", "name"),
    ]
    for call, code, field in refusals:
        with pytest.raises(MediascanError) as caught:
            await call
        assert caught.value.code.name == code, caught.value
        if field is not None:
            assert field in dict(caught.value.field_violations), caught.value.field_violations
    with pytest.raises(MediascanError) as caught:
        await client.create_library("b", str(tmp_path / "a" / "b"))
    assert "overlaps" in caught.value.message


async def test_delete_keeps_or_drops_the_videos(client: ScanClient, tmp_path: Path) -> None:
    tiny_video(tmp_path / "keep" / "a.mp4")
    tiny_video(tmp_path / "drop" / "b.mp4")
    await scan(client, tmp_path)
    await client.create_library("keep", str(tmp_path / "keep"))
    await client.create_library("drop", str(tmp_path / "drop"))
    assert [v.path async for v in client.list_videos(library="drop")] == [
        real(tmp_path / "drop" / "b.mp4")
    ]
    await client.delete_library("keep")
    await client.delete_library("drop", drop_videos=True)
    assert [v.path async for v in client.list_videos()] == [real(tmp_path / "keep" / "a.mp4")]


# -- follow_library ----------------------------------------------------------------------------


async def test_a_feed_starts_with_a_resync_and_resumes_exactly(
    client: ScanClient, tmp_path: Path
) -> None:
    root = tmp_path / "lib"
    tiny_video(root / "a.mp4")
    library = await client.create_library("lib", str(root), **QUIET_LIBRARY)
    follower = Follower(client, "lib")
    resync = await follower.next()
    assert (resync.kind, resync.sequence, resync.library_uid) == (RESYNC, 0, library.uid)
    await scan(client, root)
    tiny_video(root / "b.mp4", seconds=0.4)
    await scan(client, root)
    added = await follower.take(2)
    assert [(c.kind, c.sequence) for c in added] == [(ADDED, 1), (ADDED, 2)]
    assert [c.video.path for c in added] == [real(root / "a.mp4"), real(root / "b.mp4")]
    await follower.close()

    resumed = Follower(client, "lib", after_sequence=1, library_uid=library.uid)
    assert (await resumed.next()).sequence == 2  # exactly what followed 1
    os.unlink(root / "a.mp4")
    await scan(client, root)
    removed = await resumed.next()
    assert (removed.kind, removed.sequence, removed.video_id) == (REMOVED, 3, added[0].video_id)
    await resumed.close()

    # Another library's uid, or a sequence past the last change: a RESYNC at the last change.
    for after, uid in ((2, "0123456789abcdef"), (99, library.uid)):
        stale = Follower(client, "lib", after_sequence=after, library_uid=uid)
        first = await stale.next()
        assert (first.kind, first.sequence, first.library_uid) == (RESYNC, 3, library.uid)
        await stale.close()


async def test_a_deleted_library_ends_the_feed_with_not_found(
    client: ScanClient, tmp_path: Path
) -> None:
    (tmp_path / "lib").mkdir()
    await client.create_library("lib", str(tmp_path / "lib"), **QUIET_LIBRARY)
    follower = Follower(client, "lib")
    assert (await follower.next()).kind == RESYNC
    await client.delete_library("lib")
    with pytest.raises(MediascanError) as caught:
        await follower.next()
    assert caught.value.code == grpc.StatusCode.NOT_FOUND
    with pytest.raises(MediascanError) as caught:
        await anext(client.follow_library("nope"))
    assert caught.value.code == grpc.StatusCode.NOT_FOUND


async def test_a_feed_rides_out_broken_connections(server: Any, tmp_path: Path) -> None:
    proxy = CuttableProxy(server.address)
    await proxy.start()
    root = tmp_path / "lib"
    root.mkdir()
    try:
        async with ScanClient(server.address) as direct, ScanClient(proxy.address) as client:
            await direct.create_library("lib", str(root), **QUIET_LIBRARY)
            follower = Follower(client, "lib")
            changes = [await follower.next()]
            for round_ in range(4):
                tiny_video(root / f"v{round_}.mp4")
                await scan(direct, root)
                changes.append(await follower.next())
                proxy.cut()  # the change just received was the last of this connection
            await follower.close()
    finally:
        await proxy.close()
    assert proxy.connections >= 4  # one, then one after each of the first three cuts
    assert kinds(changes) == [RESYNC, ADDED, ADDED, ADDED, ADDED]
    assert [c.sequence for c in changes] == [0, 1, 2, 3, 4]


async def test_a_feed_resumes_across_a_server_restart(make_server: Any, tmp_path: Path) -> None:
    """The server stops (its streams end UNAVAILABLE); another starts on the same address and
    database, and changes are made there before and after the follower is back: the follower
    gets each change once, in order, with no second RESYNC."""
    first = await make_server(shutdown_grace=0)
    root = tmp_path / "lib"
    root.mkdir()
    async with ScanClient(first.address) as client:
        library = await client.create_library("lib", str(root), **QUIET_LIBRARY)
        follower = Follower(client, "lib", reconnect_timeout=TIMEOUT)
        changes = [await follower.next()]
        tiny_video(root / "a.mp4")
        tiny_video(root / "b.mp4", seconds=0.4)
        await scan(client, root)
        changes += await follower.take(2)
        await first.stop()
        await make_server(listen=first.address, shutdown_grace=0)
        tiny_video(root / "c.mp4", seconds=0.6)
        os.unlink(root / "a.mp4")
        await scan(client, root)
        changes += await follower.take(2)
        tiny_video(root / "b.mp4", seconds=0.8)
        await scan(client, root)
        changes.append(await follower.next())
        await follower.close()
    assert [c.sequence for c in changes] == [0, 1, 2, 3, 4, 5]
    assert kinds(changes)[:3] == [RESYNC, ADDED, ADDED]
    assert sorted(kinds(changes)[3:5]) == [ADDED, REMOVED] and changes[5].kind == UPDATED
    assert {c.library_uid for c in changes} == {library.uid}
    assert "size_bytes" in changes[5].changed_fields
