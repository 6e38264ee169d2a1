"""Libraries on several `mediascan-server` processes sharing one PostgreSQL database: each library
is held (watched, scheduled) by exactly one node at a time, under a lease; another node takes it
over when its holder dies, and a node that loses the database stops keeping its libraries
before another can take them.

Killed holder (three nodes, a short `--lease`). A library watched with kernel events (EVENTS)
names its holder in `status.node`, every node says the same, only the holder's process has an
inotify watch on the root, and a file copied in becomes one WATCH job and one ADDED change.
`kill -9` of the holder, then at once a file written into a watched subfolder, while no node
keeps the library. Once the lease lapses, a survivor takes the library over and says so on the
feed followed on a survivor (a STATUS change, stored once its watch is in place: at that moment
its process, and only it, watches the root and the subfolder). The file written meanwhile is
ADDED by the new holder's first rescan, one WATCH job of the whole library (no `folders`, no
`trees`) run on a survivor: nothing is lost across the takeover. A file written after it is
ADDED too, the feed has no gap and each file ADDED once. A scheduled library (`rescan_interval`)
held by the dead node runs its next SCHEDULE job on a survivor.

Cut-off holder (two nodes). Node A reaches PostgreSQL through a TCP proxy (tests/_proxy.py) and
holds two libraries: "films", which B may hold too, and "mine", below a root that only A allows
(`--allow-root`), which B's lease round never takes. The proxy resets A's connections and every
new one: A's lease renewals fail, and once half the lease has passed since its last renewal A
logs that its keepers stop, which they do (its inotify watches of both roots go away) before B
takes "films" over (B's STATUS change on the feed is later than A's log line, and no sample of
/proc ever sees both processes watch the root); B then ADDs a new file. (A stays up and says
NOT_SERVING meanwhile: recorded, not asserted.) Once the proxy lets A through again, A's
first successful lease round starts the keeper of "mine" again (its STATUS change on the feed
says when), and that round did not take "films" back: B still holds it and only B's process
watches its root.

A takeover and a keeper's start are announced on the feed (the STATUS change does not name the
node: GetLibrary does); which process watches a folder has no event, so it is read from
/proc/PID/fdinfo of the servers, where the kernel lists each inotify watch with its folder's
device and inode, once the feed says the watch is in place, and sampled every POLL seconds while
A is cut off. Only the scheduled library is polled, as nothing signals it (WATCH_MODE_OFF
announces nothing): its holder and its SCHEDULE job. Every wait is bounded generously."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import os
import re
import shutil
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from _library_helpers import real, tiny_video
from _proxy import CuttableProxy
from _robust import (
    Launcher,
    ServerProcess,
    all_jobs,
    channel_to,
    launch_fixture,  # noqa: F401 - provides the `launch` fixture
    record_figures,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from psycopg import conninfo

from mediascan.server.testing import final_job
from mediascan.v1 import scan_pb2

pytestmark = pytest.mark.slow

#: The bound of every wait (generous: 2 cores, maybe two suites at once).
WAIT = 120.0
#: A short lease (renewed every third of it), so that a dead node's libraries move within seconds.
LEASE = "3s"
#: The cut-off node's --db-timeout: a lease round that cannot get a connection fails after it
#: (its keepers must stop within half the lease of the last renewal, before the lease lapses).
CUT_DB_TIMEOUT = "1s"
#: Between two polls of a state that no event announces (seconds).
POLL = 0.1
#: The quiet window of the watched library (its watch's settle time too).
QUIET = {"nanos": 200_000_000}
#: The rescan interval of the scheduled library.
RESCAN = {"seconds": 5}
NAMES = ("A", "B", "C")
#: A's log line when it stops its keepers for want of the database.
GIVE_UP = "cannot be renewed"

ADDED = scan_pb2.CHANGE_KIND_ADDED
RESYNC = scan_pb2.CHANGE_KIND_RESYNC
STATUS = scan_pb2.CHANGE_KIND_STATUS
EVENTS = scan_pb2.WATCH_MODE_EVENTS
SUCCEEDED = scan_pb2.JOB_STATE_SUCCEEDED
WATCH = scan_pb2.TRIGGER_WATCH
SCHEDULE = scan_pb2.TRIGGER_SCHEDULE
ACTIVE = (scan_pb2.JOB_STATE_QUEUED, scan_pb2.JOB_STATE_RUNNING)

#: One inotify watch in /proc/PID/fdinfo/FD: the watched inode and its device (both hex; the
#: device as the kernel encodes it, major << 20 | minor).
INOTIFY_WATCH = re.compile(
    r"^inotify wd:\S+ ino:(?P<ino>[0-9a-f]+) sdev:(?P<sdev>[0-9a-f]+) ", re.MULTILINE
)
#: The time at the start of a server's log line (local time).
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")

T = TypeVar("T")


class Feed:
    """A WatchLibrary stream read in the background, its changes kept in order."""

    def __init__(self, stub: Any, name: str) -> None:
        self.changes: list[scan_pb2.LibraryChange] = []
        self._new = asyncio.Event()
        self.call = stub.WatchLibrary(scan_pb2.WatchLibraryRequest(name=name))
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for change in self.call:
            self.changes.append(change)
            self._new.set()

    def mark(self) -> int:
        """Where the changes read from now on start (for `until(..., start=)`)."""
        return len(self.changes)

    async def until(
        self, predicate: Callable[[Any], bool], start: int = 0
    ) -> scan_pb2.LibraryChange:
        """The first change from index `start` on (already read or to come) that satisfies
        `predicate`."""
        seen = start
        try:
            async with asyncio.timeout(WAIT):
                while True:
                    for change in self.changes[seen:]:
                        if predicate(change):
                            return change
                    seen = max(seen, len(self.changes))
                    await self.news()
        except TimeoutError:
            raise AssertionError(f"no such change within {WAIT:g}s: {self.summary()}") from None

    async def kept(self) -> None:
        """Until the library's holder has announced that it keeps it (a STATUS change; made
        already if the stream began past sequence 0, the library being new)."""
        resync = await self.until(lambda c: c.kind == RESYNC)
        if resync.sequence == 0:
            await self.until(lambda c: c.kind == STATUS and c.status.watching == EVENTS)

    async def news(self) -> None:
        """Until a change arrives; fails if the stream ended."""
        if self.task.done():
            self.task.result()
            raise AssertionError(f"the feed ended: {self.summary()}")
        self._new.clear()
        arrived = asyncio.ensure_future(self._new.wait())
        try:
            await asyncio.wait({self.task, arrived}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            arrived.cancel()

    async def close(self) -> None:
        self.call.cancel()
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await self.task

    def summary(self) -> list[str]:
        return [f"{c.sequence}:{scan_pb2.ChangeKind.Name(c.kind)}:{c.path}" for c in self.changes]


async def polled(what: str, probe: Callable[[], Awaitable[T | None]]) -> T:
    """The first answer of `probe` that is not None, asked again every POLL seconds: for a
    state no event announces."""
    try:
        async with asyncio.timeout(WAIT):
            while (answer := await probe()) is None:
                await asyncio.sleep(POLL)
            return answer
    except TimeoutError:
        raise AssertionError(f"not within {WAIT:g}s: {what}") from None


def folder_key(path: Path) -> tuple[int, int]:
    """A folder's (device, inode) as /proc/PID/fdinfo shows those of an inotify watch."""
    stat = os.stat(path)
    return (os.major(stat.st_dev) << 20) | os.minor(stat.st_dev), stat.st_ino


def watched_folders(pid: int) -> set[tuple[int, int]]:
    """(device, inode) of each folder an inotify instance of process `pid` watches; none once
    the process is gone."""
    found: set[tuple[int, int]] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return found
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:inotify":
                continue
            info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:  # closed meanwhile
            continue
        for watch in INOTIFY_WATCH.finditer(info):
            found.add((int(watch["sdev"], 16), int(watch["ino"], 16)))
    return found


def watchers(by_name: dict[str, ServerProcess], folder: Path) -> list[str]:
    """The nodes whose process has an inotify watch on `folder`."""
    key = folder_key(folder)
    return sorted(name for name, node in by_name.items() if key in watched_folders(node.pid))


class WatcherSamples:
    """/proc read every POLL seconds in the background: each sample in which more than one
    process watched one of the folders (none, if the library always had one keeper)."""

    def __init__(self, by_name: dict[str, ServerProcess], folders: Iterable[Path]) -> None:
        self.samples = 0
        self.overlaps: list[tuple[str, list[str]]] = []
        self._by_name = by_name
        self._folders = list(folders)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            for folder in self._folders:
                seen = watchers(self._by_name, folder)
                if len(seen) > 1:
                    self.overlaps.append((folder.name, seen))
            self.samples += 1
            await asyncio.sleep(POLL)

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def logged_at(server: ServerProcess, text: str) -> float | None:
    """When (seconds since the epoch) the server first logged a line holding `text`."""
    for line in server.stderr_text().splitlines():
        if text in line and (found := LOG_TIME.match(line)):
            stamp = datetime.datetime.strptime(found[1], "%Y-%m-%d %H:%M:%S,%f")
            return stamp.timestamp()
    return None


async def get_library(stub: Any, name: str) -> scan_pb2.Library:
    library: scan_pb2.Library = await stub.GetLibrary(scan_pb2.GetLibraryRequest(name=name))
    return library


async def holder(stub: Any, name: str) -> str:
    """`status.node` of library `name`, as this node reads it."""
    return (await get_library(stub, name)).status.node


async def library_jobs(stub: Any, name: str, trigger: int) -> list[scan_pb2.Job]:
    """The jobs of library `name` ("libraries/ID") with this trigger, oldest first."""
    jobs = [j for j in await all_jobs(stub) if j.library == name and j.trigger == trigger]
    return sorted(jobs, key=lambda j: j.create_time.ToNanoseconds())


async def quiet_library(stub: Any, name: str) -> None:
    """Until none of the library's jobs is queued or running (a keeper begins with a rescan
    of its own)."""
    for job in await all_jobs(stub):
        if job.library == name and job.state in ACTIVE:
            await final_job(stub, job.job_id, timeout=WAIT)


def assert_gapless(changes: list[scan_pb2.LibraryChange]) -> None:
    """A RESYNC first, then each sequence after it once, in order."""
    assert changes and changes[0].kind == RESYNC, changes[:1]
    sequences = [c.sequence for c in changes]
    first = sequences[0]
    assert sequences[1:] == list(range(first + 1, first + len(changes))), sequences


def assert_whole_rescan(job: scan_pb2.Job, library: str) -> None:
    """A keeper's first scan: the whole library, TRIGGER_WATCH, no targets, done."""
    assert (job.trigger, job.library, job.state) == (WATCH, library, SUCCEEDED), job
    assert not job.options.folders and not job.options.trees, job.options


@pytest.mark.timeout(4 * WAIT)
async def test_a_library_whose_node_is_killed_is_taken_over(
    launch: Launcher, pg_url: str, tmp_path: Path
) -> None:
    """kill -9 of the holder of two libraries: a survivor announces on the feed that it keeps
    watching one (and ADDs what was written while no node watched), keeps scheduling the
    other, and the feed followed on a survivor has every change once, with no gap."""
    staging = tmp_path / "staging"
    first = tiny_video(staging / "first.mp4")
    second = tiny_video(staging / "second.mp4", seconds=0.4)
    unwatched = tiny_video(staging / "late.mp4", seconds=0.3)
    films = tmp_path / "films"
    season = films / "season"
    season.mkdir(parents=True)
    shows = tmp_path / "shows"
    tiny_video(shows / "s0.mp4")
    flags = ("--lease", LEASE, "--workers", "1", "--probe-workers", "1")
    by_name = dict(
        zip(
            NAMES,
            await asyncio.gather(
                *(launch("--node-name", name, *flags, db=pg_url) for name in NAMES)
            ),
            strict=True,
        )
    )
    async with contextlib.AsyncExitStack() as stack:
        stubs = {}
        for name, node in by_name.items():
            stubs[name] = (await stack.enter_async_context(channel_to(node.address)))[1]

        # -- two libraries, created on A: one watched with inotify, one on a schedule --------
        made = await stubs["A"].CreateLibrary(
            scan_pb2.CreateLibraryRequest(
                library_id="films",
                library=scan_pb2.Library(root=str(films), watch_mode=EVENTS, quiet_window=QUIET),
            )
        )
        feeds = {name: Feed(stub, "films") for name, stub in stubs.items()}
        await stubs["A"].CreateLibrary(
            scan_pb2.CreateLibraryRequest(
                library_id="shows",
                library=scan_pb2.Library(
                    root=str(shows),
                    watch_mode=scan_pb2.WATCH_MODE_OFF,
                    quiet_window={"nanos": 1},
                    rescan_interval=RESCAN,
                ),
            )
        )
        await feeds["A"].kept()  # the holder of "films" says once it watches
        held = await get_library(stubs["A"], "films")
        first_holder = held.status.node
        assert held.status.watching == EVENTS and first_holder in NAMES, held.status
        for stub in stubs.values():  # every node names the same holder
            assert await holder(stub, "films") == first_holder
        # Only the holder's process watches the root and its subfolder.
        assert watchers(by_name, films) == watchers(by_name, season) == [first_holder]

        async def shows_holder() -> str | None:
            return await holder(stubs["A"], "shows") or None

        scheduler = await polled("a node holds the scheduled library", shows_holder)
        assert scheduler in NAMES
        doomed = sorted({first_holder, scheduler})
        survivors = [name for name in NAMES if name not in doomed]
        observer = survivors[0]
        on_o = stubs[observer]
        feed = feeds.pop(observer)  # followed through it all, on a node that lives
        for other in feeds.values():
            await other.close()

        # -- a file copied in: one WATCH job, one ADDED change ------------------------------
        await quiet_library(on_o, made.name)
        copied_ns = time.time_ns()
        shutil.copyfile(first, films / "first.mp4")
        added = await feed.until(lambda c: c.kind == ADDED)
        assert added.path == real(films / "first.mp4"), feed.summary()
        job = await final_job(on_o, added.job_id, timeout=WAIT)
        assert (job.trigger, job.library, job.state) == (WATCH, made.name, SUCCEEDED), job
        assert job.node in NAMES
        after_copy = [
            j
            for j in await library_jobs(on_o, made.name, WATCH)
            if j.create_time.ToNanoseconds() >= copied_ns
        ]
        assert [j.job_id for j in after_copy] == [job.job_id], after_copy
        runs_before = (await get_library(on_o, "shows")).status.scheduled_runs

        # -- kill -9 of the holder (and of the scheduled library's, if another) -------------
        killed_ns = time.time_ns()
        killed_at = time.monotonic()
        for name in doomed:
            by_name[name].kill()
        for name in doomed:
            await by_name[name].wait(WAIT)
        since_kill = feed.mark()
        alive = {name: by_name[name] for name in survivors}

        # -- a file written while no node keeps the library --------------------------------
        shutil.copyfile(unwatched, season / "late.mp4")
        written_at = time.monotonic()
        # Nobody watched when it was written: no survivor's watch yet, no announcement yet (the
        # dead holder's lease lasts at least two thirds of LEASE more).
        assert watchers(alive, films) == watchers(alive, season) == [], "taken over too soon"
        assert STATUS not in [c.kind for c in feed.changes[since_kill:]], feed.summary()

        # -- the takeover, announced on the feed --------------------------------------------
        announced = await feed.until(lambda c: c.kind == STATUS, since_kill)
        announced_at = time.monotonic()
        assert announced.status.watching == EVENTS, announced.status
        taker = announced.status.node  # the change names the new holder
        assert taker in survivors, announced.status
        assert await holder(on_o, "films") == taker
        # Stored once its watch was in place: the new holder watches, and only it.
        assert watchers(alive, films) == watchers(alive, season) == [taker]
        for name in survivors:
            assert await holder(stubs[name], "films") == taker

        # -- nothing lost: the new holder's whole first rescan ADDs the file ----------------
        late = await feed.until(lambda c: c.kind == ADDED and c.path == real(season / "late.mp4"))
        late_at = time.monotonic()
        rescan = await final_job(on_o, late.job_id, timeout=WAIT)
        assert_whole_rescan(rescan, made.name)
        assert rescan.node in survivors and rescan.attempt == 1, rescan
        assert rescan.create_time.ToNanoseconds() > killed_ns  # submitted by the new holder

        # -- a file written now: ADDED by a WATCH job run on a survivor ---------------------
        shutil.copyfile(second, films / "second.mp4")
        later = await feed.until(lambda c: c.kind == ADDED and c.path == real(films / "second.mp4"))
        added_at = time.monotonic()
        rerun = await final_job(on_o, later.job_id, timeout=WAIT)
        assert (rerun.trigger, rerun.library, rerun.state) == (WATCH, made.name, SUCCEEDED)
        assert rerun.node in survivors and rerun.attempt == 1, rerun
        assert rerun.create_time.ToNanoseconds() > killed_ns  # submitted by the new holder
        for j in await library_jobs(on_o, made.name, WATCH):
            if j.create_time.ToNanoseconds() > killed_ns:
                assert j.node in survivors and j.attempt == 1, j

        # -- the feed went on with no gap, each file ADDED once ------------------------------
        assert_gapless(feed.changes)
        paths = [c.path for c in feed.changes if c.kind == ADDED]
        assert paths[0] == real(films / "first.mp4"), feed.summary()
        assert collections.Counter(paths) == {
            real(films / "first.mp4"): 1,
            real(season / "late.mp4"): 1,
            real(films / "second.mp4"): 1,
        }, feed.summary()
        assert {c.library_uid for c in feed.changes} == {made.uid}
        assert watchers(alive, films) == [taker]

        # -- the scheduled library: its next SCHEDULE job runs on a survivor ----------------
        async def scheduled_here() -> scan_pb2.Job | None:
            for j in await library_jobs(on_o, "libraries/shows", SCHEDULE):
                if j.create_time.ToNanoseconds() > killed_ns and j.state == SUCCEEDED:
                    return j
            return None

        scheduled = await polled("a SCHEDULE job after the kill", scheduled_here)
        scheduled_at = time.monotonic()
        assert scheduled.node in survivors and scheduled.attempt == 1, scheduled
        shows_now = await get_library(on_o, "shows")
        assert shows_now.status.node in survivors, shows_now.status
        assert shows_now.status.scheduled_runs > runs_before
        assert all(node.alive() for node in alive.values())
        await feed.close()

    record_figures(
        "library takeover",
        killed=doomed,
        taker=taker,
        written_s=round(written_at - killed_at, 3),
        announced_s=round(announced_at - killed_at, 3),
        unwatched_added_s=round(late_at - killed_at, 3),
        added_s=round(added_at - killed_at, 3),
        schedule_s=round(scheduled_at - killed_at, 3),
    )


@pytest.mark.timeout(4 * WAIT)
@pytest.mark.parametrize("cut", ["refused", "stalled"])
async def test_a_node_cut_off_from_the_database_stops_keeping_its_libraries(
    launch: Launcher, pg_url: str, tmp_path: Path, cut: str
) -> None:
    """A holder whose database connections are cut stops its keepers before its leases lapse;
    the other node takes the shared library over; reconnected, the cut node takes back only
    the library nobody else may hold."""
    staging = tmp_path / "staging"
    fresh = tiny_video(staging / "fresh.mp4")
    shared = tmp_path / "shared"  # B's only allowed root
    films = shared / "films"
    films.mkdir(parents=True)
    mine = tmp_path / "own" / "mine"  # below A's allowed root, not B's
    mine.mkdir(parents=True)
    params = conninfo.conninfo_to_dict(pg_url)
    proxy = CuttableProxy(f"{params.get('host') or '127.0.0.1'}:{params['port']}")
    await proxy.start()
    flags = ("--lease", LEASE, "--workers", "1", "--probe-workers", "1")
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(proxy.close)
        # -- A alone, through the proxy, creates and holds both libraries -------------------
        a = await launch(
            "--node-name", "A", *flags, "--db-timeout", CUT_DB_TIMEOUT,
            "--allow-root", str(tmp_path),
            db=f"postgresql://{params['user']}@{proxy.address}/{params['dbname']}",
        )  # fmt: skip
        on_a = (await stack.enter_async_context(channel_to(a.address)))[1]
        made = {}
        for library_id, root in (("films", films), ("mine", mine)):
            made[library_id] = await on_a.CreateLibrary(
                scan_pb2.CreateLibraryRequest(
                    library_id=library_id,
                    library=scan_pb2.Library(root=str(root), watch_mode=EVENTS, quiet_window=QUIET),
                )
            )
            announced_on_a = Feed(on_a, library_id)
            await announced_on_a.kept()
            await announced_on_a.close()
            await quiet_library(on_a, made[library_id].name)
        # -- B joins: it may hold "films" only, and A's lease on it is live -----------------
        b = await launch("--node-name", "B", *flags, "--allow-root", str(shared), db=pg_url)
        on_b = (await stack.enter_async_context(channel_to(b.address)))[1]
        nodes = {"A": a, "B": b}
        feed = Feed(on_b, "films")
        mine_feed = Feed(on_b, "mine")
        stack.push_async_callback(feed.close)
        stack.push_async_callback(mine_feed.close)
        await feed.until(lambda c: c.kind == RESYNC)
        await mine_feed.until(lambda c: c.kind == RESYNC)
        for stub in (on_a, on_b):
            assert await holder(stub, "films") == await holder(stub, "mine") == "A"
        assert watchers(nodes, films) == watchers(nodes, mine) == ["A"]

        # -- A cut off from PostgreSQL ------------------------------------------------------
        samples = WatcherSamples(nodes, (films, mine))
        stack.push_async_callback(samples.stop)
        cut_mark = feed.mark()
        cut_at, cut_wall = time.monotonic(), time.time()
        # Refused: every connection reset at once. Stalled: the connections stay open and
        # nothing comes back, as in a network partition.
        proxy.refuse() if cut == "refused" else proxy.stall()
        # B takes "films" over once A's lease lapses, and says so.
        taken = await feed.until(lambda c: c.kind == STATUS, cut_mark)
        taken_at = time.monotonic()
        assert taken.status.watching == EVENTS, taken.status
        assert taken.status.node == "B", taken.status
        assert await holder(on_b, "films") == "B"
        # A had stopped its keepers by then: it said so earlier, and neither root is its own.
        gave_up = logged_at(a, GIVE_UP)
        assert gave_up is not None, f"A did not stop its keepers:\n{a.tail()}"
        assert gave_up < taken.time.ToNanoseconds() / 1e9, (gave_up, taken.time)
        assert watchers(nodes, films) == ["B"]
        assert watchers(nodes, mine) == []
        assert not samples.overlaps, samples.overlaps
        # Nobody else may hold "mine": it stays unkept while A is cut off.
        assert await holder(on_b, "mine") == ""
        # What A itself says meanwhile (reported, not required).
        health = health_pb2_grpc.HealthStub(
            (await stack.enter_async_context(channel_to(a.address)))[0]
        )
        a_health = health_pb2.HealthCheckResponse.ServingStatus.Name(
            (await health.Check(health_pb2.HealthCheckRequest(), timeout=WAIT)).status
        )

        # -- a new file: ADDED by B (A cannot run jobs either) ------------------------------
        shutil.copyfile(fresh, films / "fresh.mp4")
        added = await feed.until(lambda c: c.kind == ADDED and c.path == real(films / "fresh.mp4"))
        added_at = time.monotonic()
        job = await final_job(on_b, added.job_id, timeout=WAIT)
        assert (job.trigger, job.library, job.state) == (WATCH, made["films"].name, SUCCEEDED)
        assert job.node == "B", job

        # -- A reconnected: back with "mine" only -------------------------------------------
        back_mark = mine_feed.mark()
        proxy.admit()
        admitted_at = time.monotonic()
        # A's first successful lease round renews "mine" and starts its keeper, which says so.
        await mine_feed.until(lambda c: c.kind == STATUS, back_mark)
        back_at = time.monotonic()
        assert await holder(on_b, "mine") == "A"
        # That round left "films" to B, whose lease it found live.
        assert watchers(nodes, mine) == ["A"]
        assert watchers(nodes, films) == ["B"]
        for stub in (on_a, on_b):
            assert await holder(stub, "films") == "B"
        await samples.stop()
        assert not samples.overlaps, samples.overlaps
        assert STATUS not in [c.kind for c in feed.changes[feed.changes.index(taken) + 1 :]]
        assert_gapless(feed.changes)
        assert a.alive() and b.alive(), (a.tail(), b.tail())

    record_figures(
        "library keepers cut off",
        gave_up_s=round(gave_up - cut_wall, 3),
        taken_s=round(taken_at - cut_at, 3),
        added_s=round(added_at - cut_at, 3),
        back_s=round(back_at - admitted_at, 3),
        samples=samples.samples,
        cut_node_health=a_health,
        cut_node_alive=a.alive(),
        cut_node_keeper_failures=a.stderr_text().count("the keeper of library"),
    )
