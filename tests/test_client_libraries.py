"""The library side of `mediascan.client` against real servers over real gRPC: the library
methods of `ScanClient`, `follow_library` (RESYNC, resume, broken connections, a server
restart) and `LibraryMirror`, down to a consumer that disconnects at random while the library
changes and still ends with exactly the library's content."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from _library_helpers import real, tiny_video
from _proxy import CuttableProxy

from mediascan.client import LibraryMirror, MediascanError, ScanClient
from mediascan.v1 import scan_pb2

pytestmark = pytest.mark.both_backends

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


# -- LibraryMirror -----------------------------------------------------------------------------

#: Video fields a rescan may write again without a change to the video (no UPDATED names them).
UNCHANGED_BY_FEED = ("probe_time", "job_id", "prober_version")


def content(videos: Any) -> dict[str, bytes]:
    """{video id: the video without UNCHANGED_BY_FEED}, comparable as bytes."""
    found = {}
    for video_id, video in dict(videos).items():
        copy = scan_pb2.Video()
        copy.CopyFrom(video)
        for name in UNCHANGED_BY_FEED:
            copy.ClearField(name)  # type: ignore[arg-type]
        found[video_id] = copy.SerializeToString(deterministic=True)
    return found


async def library_content(client: ScanClient, name: str) -> dict[str, bytes]:
    return content({v.video_id: v async for v in client.list_videos(library=name)})


async def changes_until(mirror: LibraryMirror, sequence: int) -> list[scan_pb2.LibraryChange]:
    """Follow with `mirror` until it has applied change `sequence`."""
    seen: list[scan_pb2.LibraryChange] = []
    async with asyncio.timeout(TIMEOUT), contextlib.aclosing(mirror.changes()) as changes:
        async for change in changes:
            seen.append(change)
            if mirror.sequence >= sequence:
                break
    return seen


async def test_a_mirror_lists_the_library_then_applies_its_changes(
    client: ScanClient, tmp_path: Path
) -> None:
    root = tmp_path / "lib"
    for index in range(7):
        tiny_video(root / f"v{index}.mp4", seconds=0.2 + index / 10)
    tiny_video(tmp_path / "outside.mp4")
    library = await client.create_library("lib", str(root), **QUIET_LIBRARY)
    await scan(client, tmp_path)  # changes 1 to 7
    mirror = LibraryMirror(client, "lib", page_size=2)  # the listing takes four pages
    assert kinds(await changes_until(mirror, 7)) == [RESYNC]
    assert (mirror.sequence, mirror.uid, mirror.resyncs) == (7, library.uid, 1)
    assert len(mirror.videos) == 7
    assert content(mirror.videos) == await library_content(client, "lib")

    os.rename(root / "v0.mp4", root / "moved.mp4")
    tiny_video(root / "v1.mp4", seconds=1.5)
    os.unlink(root / "v2.mp4")
    tiny_video(root / "new.mp4")
    await scan(client, root)
    seen = await changes_until(mirror, 11)
    assert sorted(kinds(seen)) == [ADDED, UPDATED, MOVED, REMOVED]
    assert mirror.resyncs == 1 and len(mirror.videos) == 7
    assert content(mirror.videos) == await library_content(client, "lib")
    assert {v.path for v in mirror.videos.values()} == {real(p) for p in root.glob("*.mp4")}

    with pytest.raises(ValueError, match="does not follow change 11"):
        mirror.apply(scan_pb2.LibraryChange(sequence=13, kind=ADDED))
    with pytest.raises(ValueError, match="RESYNC"):
        mirror.apply(scan_pb2.LibraryChange(sequence=12, kind=RESYNC))
    assert mirror.sequence == 11


async def test_a_mirror_carried_over_resumes_or_resyncs(client: ScanClient, tmp_path: Path) -> None:
    """A mirror made from a saved copy resumes after its change; after the library was deleted
    and created again (another uid), it lists it again."""
    root = tmp_path / "lib"
    tiny_video(root / "a.mp4")
    await client.create_library("lib", str(root), **QUIET_LIBRARY)
    await scan(client, root)
    first = LibraryMirror(client, "lib")
    await changes_until(first, 1)
    saved = (list(first.videos.values()), first.sequence, first.uid)

    tiny_video(root / "b.mp4", seconds=0.4)
    await scan(client, root)
    second = LibraryMirror(client, "lib", videos=saved[0], sequence=saved[1], uid=saved[2])
    assert kinds(await changes_until(second, 2)) == [ADDED]
    assert second.resyncs == 0 and len(second.videos) == 2

    await client.delete_library("lib")
    created = await client.create_library("lib", str(root), **QUIET_LIBRARY)
    third = LibraryMirror(client, "lib", videos=second.videos.values(), sequence=2, uid=first.uid)
    assert kinds(await changes_until(third, 0)) == [RESYNC]
    assert third.uid == created.uid and third.resyncs == 1
    assert content(third.videos) == await library_content(client, "lib")


# -- the consumer test: random disconnects while the library changes ---------------------------

#: The seeds of the runs: each makes other choices.
SEEDS = (15, 16, 17)
ROUNDS = 20


@dataclasses.dataclass
class Saved:
    """What a consumer keeps over its restarts: its copy, and the change it is up to."""

    videos: dict[str, scan_pb2.Video] = dataclasses.field(default_factory=dict)
    sequence: int = 0
    uid: str = ""


class Consumer:
    """A program that keeps a `LibraryMirror` of the library "lib" and saves its copy after each
    change. The test stops it (cancels its task) at random moments and starts it again: in
    the same mirror, or as a restarted program, in a new mirror made from what it saved (and
    now and then from nothing, as if that had been lost)."""

    def __init__(self, client: ScanClient, rng: random.Random) -> None:
        self._client = client
        self._rng = rng
        self.saved = Saved()
        self._mirror: LibraryMirror | None = None
        self._task: asyncio.Task[None] | None = None
        #: Set after each change saved.
        self._progressed = asyncio.Event()
        self.starts = self.restarts = self.forgotten = self.resyncs = self.changes = 0
        #: Stops before a start's first change: while connecting, listing the library, or
        #: waiting for the next change.
        self.early_stops = 0
        self._began = 0

    def start(self) -> None:
        choice = self._rng.random()
        if self._mirror is None or choice < 0.4:
            if choice < 0.08:
                self.saved = Saved()
                self.forgotten += 1
            saved = self.saved
            self._mirror = LibraryMirror(
                self._client,
                "lib",
                videos=saved.videos.values(),
                sequence=saved.sequence,
                uid=saved.uid,
                page_size=self._rng.choice((2, 3, 1000)),
                reconnect_timeout=TIMEOUT,
            )
            self.restarts += 1
        self.starts += 1
        self._began = self.changes
        self._task = asyncio.create_task(self._follow(self._mirror))

    async def _follow(self, mirror: LibraryMirror) -> None:
        before = mirror.sequence
        async with contextlib.aclosing(mirror.changes()) as changes:
            async for change in changes:
                if change.kind == RESYNC:
                    # Only a copy without a sequence is listed again (after_sequence 0 asks
                    # for a RESYNC): the others resume, even across a server restart.
                    assert before == 0, (before, change)
                    self.resyncs += 1
                before = mirror.sequence
                self.changes += 1
                self.saved = Saved(dict(mirror.videos), mirror.sequence, mirror.uid)
                self._progressed.set()

    async def stop(self) -> None:
        """Cancel the task wherever it is; raise what made it fail, if something did."""
        assert self._task is not None
        self.early_stops += self.changes == self._began
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def caught_up(self, sequence: int) -> None:
        """Until the saved copy is up to change `sequence`."""
        assert self._task is not None
        async with asyncio.timeout(TIMEOUT):
            while True:
                self._progressed.clear()
                if self.saved.sequence >= sequence:
                    return
                progressed = asyncio.ensure_future(self._progressed.wait())
                await asyncio.wait({progressed, self._task}, return_when=asyncio.FIRST_COMPLETED)
                progressed.cancel()
                if self._task.done():
                    self._task.result()
                    raise AssertionError("the consumer stopped following")


_CHANGES, _WEIGHTS = ("add", "rewrite", "rename", "delete"), (4, 2, 2, 3)


class Files:
    """The videos in the library's root, changed at random: added, rewritten (another size),
    renamed and deleted."""

    def __init__(self, root: Path, rng: random.Random) -> None:
        self.root = root
        self._rng = rng
        self._made = 0
        self.counts = {"add": 0, "rewrite": 0, "rename": 0, "delete": 0}

    def names(self) -> list[str]:
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*.mp4"))

    def add(self) -> None:
        self._made += 1
        folder = self._rng.choice(("", "a", "a/b", "c"))
        seconds = self._rng.choice((0.2, 0.3, 0.4, 0.5))
        tiny_video(self.root / folder / f"n{self._made}.mp4", seconds=seconds)

    def change(self) -> None:
        names = self.names()
        kind = self._rng.choices(_CHANGES, _WEIGHTS)[0] if names else "add"
        self.counts[kind] += 1
        if kind == "add":
            self.add()
            return
        path = self.root / self._rng.choice(names)
        if kind == "rewrite":
            tiny_video(path, seconds=self._rng.choice((0.6, 0.7, 0.8)))
        elif kind == "rename":
            self._made += 1
            path.rename(path.with_name(f"r{self._made}.mp4"))
        else:
            path.unlink()


class Disruptions:
    """What the test does to the consumer between two steps of the library's changes, at
    random: stop it and start it again, or cut its connection, or nothing."""

    def __init__(self, consumer: Consumer, proxy: CuttableProxy, rng: random.Random) -> None:
        self._consumer = consumer
        self._proxy = proxy
        self._rng = rng
        self.cuts = 0

    async def __call__(self) -> None:
        chance = self._rng.random()
        if chance < 0.35:
            await self._consumer.stop()
            self._consumer.start()
        elif chance < 0.5:
            self._proxy.cut()
            self.cuts += 1


async def change_at_random(
    producer: ScanClient,
    files: Files,
    disrupt: Disruptions,
    restart_server: Callable[[], Awaitable[None]],
    rng: random.Random,
) -> None:
    """ROUNDS rounds of a few file changes and a scan of the root to its end, the consumer
    disrupted between any two steps; in two rounds the server restarts while the scan runs."""
    restarts = set(rng.sample(range(2, ROUNDS - 1), 2))
    for round_ in range(ROUNDS):
        for _ in range(rng.randint(1, 4)):
            files.change()
            await disrupt()
        submitted = await producer.submit_scan(str(files.root), force=True)
        await disrupt()
        if round_ in restarts:
            await restart_server()
        job = await producer.wait(submitted.job_id, timeout=TIMEOUT)
        assert job.state == scan_pb2.JOB_STATE_SUCCEEDED, job
        await disrupt()
    final = await producer.wait((await producer.submit_scan(str(files.root))).job_id)
    assert final.state == scan_pb2.JOB_STATE_SUCCEEDED, final


@pytest.mark.parametrize("seed", SEEDS)
async def test_a_consumer_that_disconnects_at_random_ends_with_the_librarys_content(
    make_server: Any, tmp_path: Path, seed: int
) -> None:
    """Files are added, rewritten, renamed and deleted in the root, and scans of it submitted,
    while a consumer following the library with a LibraryMirror is stopped and started again
    at random moments, its connection is cut, and the server restarts twice (on the same
    address and database). At the end the consumer's copy is exactly what ListVideos of the
    library lists, and the library is exactly the files in the root."""
    rng = random.Random(seed)
    servers = [await make_server(shutdown_grace=0)]
    address = servers[0].address

    async def restart_server() -> None:
        await servers[-1].stop()
        servers.append(await make_server(listen=address, shutdown_grace=0))

    proxy = CuttableProxy(address)
    await proxy.start()
    files = Files(tmp_path / "lib", rng)
    for _ in range(20):
        files.add()
    async with ScanClient(address) as producer, ScanClient(proxy.address) as client:
        library = await producer.create_library("lib", str(files.root), **QUIET_LIBRARY)
        consumer = Consumer(client, rng)
        consumer.start()
        disrupt = Disruptions(consumer, proxy, rng)
        try:
            await change_at_random(producer, files, disrupt, restart_server, rng)
            last = (await producer.get_library("lib")).status.last_sequence
            await consumer.caught_up(last)
            await consumer.stop()
            listed = await library_content(producer, "lib")
            paths = sorted([v.path async for v in producer.list_videos(library="lib")])
        finally:
            await proxy.close()

    assert content(consumer.saved.videos) == listed
    assert (consumer.saved.sequence, consumer.saved.uid) == (last, library.uid)
    assert paths == [real(files.root / name) for name in files.names()]
    # What the run went through (the seed makes the choices; a run's timing, where they land).
    assert min(files.counts.values()) >= 3, files.counts
    assert consumer.starts >= 15 and consumer.restarts >= 5 and disrupt.cuts >= 3
    assert consumer.early_stops >= 1 and consumer.resyncs >= 1
    assert last >= 40 and consumer.changes >= 20 and len(servers) == 3


async def test_a_feed_goes_on_at_the_next_server_of_the_database(
    backend: str, make_server: Any, tmp_path: Path
) -> None:
    """Two servers on one PostgreSQL database: the follower, given both, follows on the first;
    when it stops, the follower resumes on the second after the last change it had, and gets
    the changes the second makes, with no gap or repeat and no second RESYNC."""
    if backend != "postgres":
        pytest.skip("several servers share a PostgreSQL database only")
    first, second = await make_server(shutdown_grace=0), await make_server(shutdown_grace=0)
    root = tmp_path / "lib"
    root.mkdir()
    async with ScanClient([first.address, second.address]) as client:
        await client.create_library("lib", str(root), **QUIET_LIBRARY)
        follower = Follower(client, "lib", reconnect_timeout=TIMEOUT)
        changes = [await follower.next()]
        tiny_video(root / "a.mp4")
        await scan(client, root)
        changes.append(await follower.next())
        await first.stop()
        tiny_video(root / "b.mp4", seconds=0.4)
        await scan(client, root)  # on the second server: the first is gone
        changes.append(await follower.next())
        assert client.target == second.address
        await follower.close()
    assert [(c.kind, c.sequence) for c in changes] == [(RESYNC, 0), (ADDED, 1), (ADDED, 2)]
    assert changes[2].path == real(root / "b.mp4")
