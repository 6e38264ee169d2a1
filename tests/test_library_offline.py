"""Never silently blind (issue 15 §2) and shares that go offline (§3), for the whole server: real
`mediascan-server` processes, real inotify, real mounts. The watcher alone is tested in
tests/test_watching.py; here each case goes through the library's keeper to its status, its log
and its feed.

Machine-wide state is never touched: a server that mounts runs in a mount namespace of its own
(`unshare --mount --propagation private`, mounts made in it with `nsenter`), the watch limit is
lowered in a user namespace of the server's own (`unshare --user`: /proc/sys/user/
max_inotify_watches is per namespace), and the overflow is forced with the machine's own
fs.inotify.max_queued_events, which no namespace has a copy of: the server is paused (SIGSTOP)
through a burst of more events than that.

- OFFLINE by each rule of rootcheck.py, with nothing removed; back to ACTIVE and one rescan (a
  WATCH job of the whole library) when the root comes back: the root unmounted (an ext4 file
  system on a loop device, and a bind mount), unreadable (chmod 000, a server without root's
  permission bypass), emptied (an empty folder mounted over it), its marker file deleted or
  naming another library. Each rescan after the return finds a video added while the library
  was OFFLINE, so that its job can be awaited on the feed.
- Blind folders: the watch limit reached, DEGRADED with the reason, polled (a file in a folder
  below a blind one reaches the feed), ACTIVE again once the limit is raised or the folders go,
  or when a server starts with a higher limit.
- An overflow: DEGRADED, then a whole-library rescan brings every change in, then ACTIVE; and
  a server that stopped before that rescan leaves it to the next server.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from _library_helpers import (
    HANG_MARK,
    all_videos,
    can_drop_file_permission_bypass,
    first_rescan,
    real,
    scan,
    tiny_video,
    unprivileged_server,
)
from test_libraries import Feed, create

from mediascan.server.libraries import status as st
from mediascan.server.libraries.keeper import OVERFLOWED
from mediascan.server.libraries.rootcheck import MARKER
from mediascan.server.store import SqliteStore
from mediascan.server.testing import final_job
from mediascan.server.testing_prober import HANG_SIGNAL, MODULE
from mediascan.v1 import scan_pb2, scan_pb2_grpc

#: The bound on any wait for the server: generous, for a busy machine and two test runs at once.
WAIT = 60.0
BIN = Path(sys.executable).parent
LISTENING = "mediascan-server listening on "
ACTIVE = scan_pb2.LIBRARY_STATE_ACTIVE
OFFLINE = scan_pb2.LIBRARY_STATE_OFFLINE
DEGRADED = scan_pb2.LIBRARY_STATE_DEGRADED
EVENTS = scan_pb2.WATCH_MODE_EVENTS
ADDED = scan_pb2.CHANGE_KIND_ADDED
REMOVED = scan_pb2.CHANGE_KIND_REMOVED
HOST_LIMITS = [
    "/proc/sys/fs/inotify/max_user_watches",
    "/proc/sys/fs/inotify/max_queued_events",
    "/proc/sys/user/max_inotify_watches",
]
USER_LIMIT = "/proc/sys/user/max_inotify_watches"


# -- a server process in namespaces of its own -------------------------------------------------


@dataclasses.dataclass
class Server:
    """A `mediascan-server` process, a stub to it, and how to act in its namespaces."""

    process: asyncio.subprocess.Process
    stub: scan_pb2_grpc.ScanServiceStub
    stderr_path: Path
    #: nsenter's options for the server's namespaces (-U: its user namespace, -m: its mounts).
    namespaces: tuple[str, ...] = ()

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    async def inside(self, *argv: str) -> None:
        """Run a command in the server's namespaces; it must succeed."""
        assert self.namespaces, "the server has no namespaces of its own"
        await run("nsenter", "-t", str(self.pid), *self.namespaces, *argv)


async def run(*argv: str) -> None:
    done = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(WAIT):
        output, _ = await done.communicate()
    assert done.returncode == 0, f"{argv}: exit {done.returncode}: {output.decode()}"


@contextlib.asynccontextmanager
async def spawned(
    tmp_path: Path,
    *,
    prefix: Sequence[str] = (),
    namespaces: Sequence[str] = (),
    name: str = "server",
    hang: Path | None = None,
    args: Sequence[str] = (),
) -> AsyncIterator[Server]:
    """`mediascan-server` started through `prefix` (e.g. unshare): stopped (and continued, if
    paused) at the end, which ends its namespaces and whatever was mounted in them. `hang`: a
    FIFO; the server's probers hang on files named HANG_MARK, and say so there first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIASCAN_")}
    stderr_path = tmp_path / f"{name}.stderr"
    command = [str(BIN / "mediascan-server")]
    if hang is not None:  # the server's own main(), with the test prober (same process)
        command = [sys.executable, "-m", MODULE, "server", f"hang:{HANG_MARK}", "--"]
        env[HANG_SIGNAL] = str(hang)
    command += ["--listen", "127.0.0.1:0", *args]
    with stderr_path.open("w") as stderr:
        process = await asyncio.create_subprocess_exec(
            *prefix,
            *command,
            "--db",
            str(tmp_path / "mediascan.db"),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            env=env,
        )
    assert process.stdout is not None
    channel: grpc.aio.Channel | None = None
    drain: asyncio.Task[bytes] | None = None
    try:
        async with asyncio.timeout(WAIT):
            line = (await process.stdout.readline()).decode()
        assert line.startswith(LISTENING), f"first line {line!r}; {stderr_path.read_text()}"
        drain = asyncio.create_task(process.stdout.read())  # never a full pipe
        channel = grpc.aio.insecure_channel(line.removeprefix(LISTENING).strip())
        async with asyncio.timeout(WAIT):
            await channel.channel_ready()
        stub = scan_pb2_grpc.ScanServiceStub(channel)
        yield Server(process, stub, stderr_path, tuple(namespaces))
    finally:
        if channel is not None:
            await channel.close()
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGCONT)
                process.terminate()
            try:
                async with asyncio.timeout(WAIT):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        if drain is not None:
            async with asyncio.timeout(WAIT):
                await drain


async def stopped(pid: int) -> None:
    """Until child `pid` is stopped (SIGSTOP takes effect once each of its threads stops)."""
    flags = os.WSTOPPED | os.WEXITED | os.WNOWAIT  # the state stays for the child's reaper
    async with asyncio.timeout(WAIT):
        await asyncio.to_thread(os.waitid, os.P_PID, pid, flags)


def root_or_skip() -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting needs root (a user namespace cannot mount ext4 or loop devices)")
    for tool in ("unshare", "nsenter", "mount", "umount"):
        if shutil.which(tool) is None:
            pytest.skip(f"no {tool}(8) here")


#: A server in a mount namespace of its own: what it mounts, nobody else sees.
MOUNT_NS = ("unshare", "--mount", "--propagation", "private")


def host_limits() -> list[str]:
    return [Path(name).read_text() for name in HOST_LIMITS]


# -- following a library ------------------------------------------------------------------------


class Follower:
    """A library's feed from its start, read in order: every change is kept (`changes`), and
    the status as of the last change read (`status`)."""

    def __init__(self, stub: Any, name: str = "lib") -> None:
        self.stub, self.name = stub, name
        self.feed = Feed(stub, name)
        self.changes: list[Any] = []
        self.status: Any = None
        self._known = 0  # a STATUS change up to this sequence is in `status` already

    async def _next(self) -> Any:
        change = await self.feed.next()
        self.changes.append(change)
        if change.kind == scan_pb2.CHANGE_KIND_RESYNC:  # read after it: at least as new
            library = await self.stub.GetLibrary(scan_pb2.GetLibraryRequest(name=self.name))
            self.status, self._known = library.status, library.status.last_sequence
        elif change.kind == scan_pb2.CHANGE_KIND_STATUS and change.sequence > self._known:
            self.status = change.status
        return change

    async def until(self, test: Callable[[Any], bool]) -> Any:
        """The status, once `test(status)` holds (at once if it does now)."""
        async with asyncio.timeout(WAIT):
            while self.status is None or not test(self.status):
                await self._next()
        return self.status

    async def state(self, state: int, *words: str) -> Any:
        """Until the library is in `state` with a reason that holds each of `words`."""
        status = await self.until(
            lambda s: s.state == state and all(word in s.reason for word in words)
        )
        return status

    def last_status_change(self) -> Any:
        """The last STATUS change read from the feed."""
        return next(c for c in reversed(self.changes) if c.kind == scan_pb2.CHANGE_KIND_STATUS)

    async def change(self, test: Callable[[Any], bool]) -> Any:
        """The next change (from here) that passes `test`."""
        async with asyncio.timeout(WAIT):
            while True:
                change = await self._next()
                if test(change):
                    return change

    async def seen(self, test: Callable[[list[Any]], bool]) -> None:
        """Until `test(changes)` holds for the changes read so far."""
        async with asyncio.timeout(WAIT):
            while not test(self.changes):
                await self._next()

    async def added(self, path: Path) -> Any:
        return await self.change(lambda c: c.kind == ADDED and c.path == real(path))

    def removed(self) -> list[str]:
        return [c.path for c in self.changes if c.kind == REMOVED]

    def close(self) -> None:
        self.feed.close()


async def watched(stub: Any, root: Path, **fields: Any) -> Follower:
    """A library "lib" of `root` watched with events; its follower, once the keeper watches."""
    await create(stub, "lib", root, watch_mode=EVENTS, **fields)
    follower = Follower(stub)
    await follower.until(lambda s: s.watching == EVENTS)
    first = await first_rescan(stub, timeout=WAIT)
    assert first.state == scan_pb2.JOB_STATE_SUCCEEDED, first
    return follower


async def scanned(stub: Any, root: Path, count: int) -> None:
    """A user's scan of the root, after which the library holds `count` videos."""
    job = await scan(stub, root, timeout=WAIT)
    assert job.state == scan_pb2.JOB_STATE_SUCCEEDED, job
    library = await stub.GetLibrary(scan_pb2.GetLibraryRequest(name="lib"))
    assert library.status.video_count == count


async def paths_of(stub: Any) -> dict[str, int]:
    return {v.path: v.size_bytes for v in await all_videos(stub, library="libraries/lib")}


def on_disk(root: Path) -> dict[str, int]:
    return {real(p): p.stat().st_size for p in root.rglob("*.mp4")}


Step = Callable[[], Awaitable[None]]


async def offline_then_back(
    server_log: Callable[[], str],
    stub: Any,
    follower: Follower,
    *,
    reason: Sequence[str],
    take_away: Step,
    meanwhile: Callable[[Path], Awaitable[None]],
    bring_back: Step,
    later: Path,
    staging: Path,
) -> None:
    """`take_away()`: the library goes OFFLINE with a reason that holds each of `reason`, and
    keeps every video. `meanwhile(video)` puts a new video where the server will see it at
    `later` once `bring_back()` has run: then the library is ACTIVE and one WATCH job of the
    whole library finds that video and removes nothing."""
    before = await paths_of(stub)
    first = await first_rescan(stub)  # the one the keeper began with
    await take_away()
    status = await follower.state(OFFLINE, *reason)
    assert follower.last_status_change().status == status  # a change on the feed
    assert f"library libraries/lib is OFFLINE: {status.reason}; nothing is removed" in server_log()
    library = await stub.GetLibrary(scan_pb2.GetLibraryRequest(name="lib"))
    assert library.status.state == OFFLINE and library.status.video_count == len(before)
    assert await paths_of(stub) == before
    video = tiny_video(staging / later.name, seconds=0.7)
    await meanwhile(video)
    await bring_back()
    await follower.state(ACTIVE)
    added = await follower.added(later)
    job = await final_job(stub, added.job_id, timeout=WAIT)
    assert job.trigger == scan_pb2.TRIGGER_WATCH and job.library == "libraries/lib"
    assert not job.options.folders and not job.options.trees, job.options  # the whole library
    assert job.state == scan_pb2.JOB_STATE_SUCCEEDED, job
    assert (job.result.added, job.result.removed, job.result.removals_withheld) == (1, 0, 0)
    jobs = (await stub.ListJobs(scan_pb2.ListJobsRequest())).jobs
    watch_jobs = [j.job_id for j in jobs if j.trigger == scan_pb2.TRIGGER_WATCH]
    assert watch_jobs == [job.job_id, first.job_id]  # newest first; no other rescan
    assert follower.removed() == []
    assert await paths_of(stub) == {**before, real(later): video.stat().st_size}
    library = await stub.GetLibrary(scan_pb2.GetLibraryRequest(name="lib"))
    assert library.status.state == ACTIVE and library.status.video_count == len(before) + 1


def copy_into(folder: Path) -> Callable[[Path], Awaitable[None]]:
    """`meanwhile` for a root this process sees: the video is copied into `folder`."""

    async def put(video: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(video, folder / video.name)

    return put


def some_videos(root: Path) -> int:
    """Three videos in three folders: how many."""
    tiny_video(root / "a.mp4")
    tiny_video(root / "films" / "b.mp4", seconds=0.3)
    tiny_video(root / "films" / "old" / "c.mp4", seconds=0.4)
    return 3


# -- §3: OFFLINE by each rule, nothing removed, one rescan when the root is back ----------------


@pytest.mark.slow
@pytest.mark.parametrize("disk", ["ext4 on a loop device", "bind mount"])
async def test_an_unmounted_root_is_offline_until_it_is_mounted_again(
    tmp_path: Path, disk: str
) -> None:
    """The root is a mount point in the server's mount namespace, unmounted under the running
    server: an ext4 file system's unmount ends the watch of the root (IN_UNMOUNT); a bind
    mount's sends no event at all, and the root's checks find the empty mount point."""
    root_or_skip()
    root, disk_folder, side = tmp_path / "lib", tmp_path / "disk", tmp_path / "side"
    root.mkdir()
    side.mkdir()
    count = some_videos(disk_folder)
    loop = disk.startswith("ext4")
    if loop:
        if shutil.which("mkfs.ext4") is None:
            pytest.skip("no mkfs.ext4 here")
        image = tmp_path / "disk.ext4"
        await run("mkfs.ext4", "-q", "-F", "-d", str(disk_folder), str(image), "16M")
        mount = ["mount", "-o", "loop", str(image)]
    else:
        mount = ["mount", "--bind", str(disk_folder)]
    async with spawned(tmp_path, prefix=MOUNT_NS, namespaces=("-m",)) as server:
        try:
            await server.inside(*mount, str(root))
        except AssertionError as error:
            if loop:
                pytest.skip(f"cannot mount a loop device here: {error}")
            raise
        follower = await watched(server.stub, root)
        await scanned(server.stub, root, count)

        async def take_away() -> None:
            await server.inside("umount", str(root))

        async def meanwhile(video: Path) -> None:
            if not loop:  # the bind mount's folder: this process sees it
                await copy_into(disk_folder / "later")(video)
                return
            await server.inside(*mount, str(side))  # the disk, elsewhere for a moment
            await server.inside("mkdir", str(side / "later"))
            await server.inside("cp", str(video), str(side / "later"))
            await server.inside("umount", str(side))

        async def bring_back() -> None:
            await server.inside(*mount, str(root))

        try:
            await offline_then_back(
                server.log,
                server.stub,
                follower,
                reason=["unmounted"] if loop else ["is empty", f"holds {count} videos"],
                take_away=take_away,
                meanwhile=meanwhile,
                bring_back=bring_back,
                later=root / "later" / "while-away.mp4",
                staging=tmp_path / "staged",
            )
        finally:
            follower.close()
            await server.inside("umount", "-R", str(root))  # as it was before the test
    assert not (root / MARKER).exists()  # the mounts were the server's alone


@pytest.mark.slow
async def test_an_unreadable_root_is_offline_until_it_can_be_read(tmp_path: Path) -> None:
    """chmod 000 on the root, under a server that file permissions apply to."""
    if not can_drop_file_permission_bypass():
        pytest.skip("cannot run the server without root's file permission bypass here")
    root = tmp_path / "lib"
    count = some_videos(root)

    async def meanwhile(video: Path) -> None:
        root.chmod(0o300)  # writable, still not readable: this process may not be root
        await copy_into(root / "later")(video)
        root.chmod(0)

    async def take_away() -> None:
        root.chmod(0)

    async def bring_back() -> None:
        root.chmod(0o755)

    async with unprivileged_server(tmp_path / "mediascan.db") as (stub, _process):
        follower = await watched(stub, root)
        await scanned(stub, root, count)
        try:
            await offline_then_back(
                (tmp_path / "mediascan.stderr").read_text,
                stub,
                follower,
                reason=["cannot read the root", "Permission denied"],
                take_away=take_away,
                meanwhile=meanwhile,
                bring_back=bring_back,
                later=root / "later" / "while-away.mp4",
                staging=tmp_path / "staged",
            )
        finally:
            root.chmod(0o755)
            follower.close()


@pytest.mark.slow
async def test_an_emptied_root_is_offline_until_its_entries_are_back(tmp_path: Path) -> None:
    """An empty folder mounted over the root in the server's mount namespace (no event: the
    watches are on the folder underneath): every entry is gone while the library holds
    videos, the rule of a disk that is not mounted."""
    root_or_skip()
    root, empty = tmp_path / "lib", tmp_path / "empty"
    empty.mkdir()
    count = some_videos(root)
    async with spawned(tmp_path, prefix=MOUNT_NS, namespaces=("-m",)) as server:
        follower = await watched(server.stub, root)
        await scanned(server.stub, root, count)

        async def take_away() -> None:
            await server.inside("mount", "--bind", str(empty), str(root))

        async def bring_back() -> None:
            await server.inside("umount", str(root))

        try:
            await offline_then_back(
                server.log,
                server.stub,
                follower,
                reason=["is empty", f"holds {count} videos"],
                take_away=take_away,
                meanwhile=copy_into(root / "later"),  # underneath, where this process looks
                bring_back=bring_back,
                later=root / "later" / "while-away.mp4",
                staging=tmp_path / "staged",
            )
        finally:
            follower.close()
    assert list(empty.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("marker", ["deleted", "another library's"])
async def test_a_root_without_its_marker_is_offline_until_the_marker_is_back(
    tmp_path: Path, marker: str
) -> None:
    """The marker file at the root is deleted, or names another library (another disk with a
    library of its own): the marker rule."""
    root = tmp_path / "lib"
    count = some_videos(root)
    async with spawned(tmp_path) as server:
        follower = await watched(server.stub, root)
        await scanned(server.stub, root, count)
        library = await server.stub.GetLibrary(scan_pb2.GetLibraryRequest(name="lib"))
        assert library.status.marker
        assert (root / MARKER).read_text().strip() == library.uid

        async def take_away() -> None:
            if marker == "deleted":
                (root / MARKER).unlink()
            else:
                (root / MARKER).write_text("0123456789abcdef0123456789abcdef\n")

        async def bring_back() -> None:
            (root / MARKER).write_text(library.uid + "\n")

        try:
            await offline_then_back(
                server.log,
                server.stub,
                follower,
                reason=[MARKER, "is gone" if marker == "deleted" else "another library"],
                take_away=take_away,
                meanwhile=copy_into(root / "later"),
                bring_back=bring_back,
                later=root / "later" / "while-away.mp4",
                staging=tmp_path / "staged",
            )
        finally:
            follower.close()


# -- §2: never silently blind ---------------------------------------------------------------------

#: Run in a user namespace: sets its watch limit to $2 (never that of this process's namespace,
#: $1), then runs the rest of its arguments.
SET_LIMIT = (
    '[ "$(readlink /proc/self/ns/user)" != "$1" ] || '
    '{ echo "refusing to set the watch limit of the machine\'s own namespace" >&2; exit 1; }; '
    f'echo "$2" > {USER_LIMIT}; shift 2; exec "$@"'
)


def user_namespace_or_skip() -> None:
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        pytest.skip("no unshare(1) or nsenter(1) here")
    done = subprocess.run(
        ["unshare", "--user", "--map-root-user", "sh", "-c", f"echo 100 > {USER_LIMIT}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=WAIT,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot set a user namespace's watch limit here: {done.stderr.strip()}")


@pytest.mark.slow
@pytest.mark.parametrize("recovery", ["limit raised", "folders removed", "server restarted"])
async def test_folders_beyond_the_watch_limit_are_polled_until_they_are_watched(
    tmp_path: Path, recovery: str
) -> None:
    """A server whose user namespace allows 2 inotify watches, a library of 4 folders: the
    root and films are watched, films/more is blind and films/more/deeper not even tried. The
    library is DEGRADED saying why (status, feed and log); a video put in films/more/deeper
    reaches the feed by the polling of the blind folder, every poll_interval (1 s). It is
    ACTIVE again once the limit is raised under the running server, or the blind folders are
    removed, or the server is started again with a higher limit."""
    user_namespace_or_skip()
    before = host_limits()
    own_namespace = os.readlink("/proc/self/ns/user")
    root = tmp_path / "lib"
    tiny_video(root / "a.mp4")
    tiny_video(root / "b.mp4", seconds=0.3)
    tiny_video(root / "films" / "one.mp4", seconds=0.4)
    tiny_video(root / "films" / "more" / "two.mp4", seconds=0.5)
    more, deeper = root / "films" / "more", root / "films" / "more" / "deeper"
    deeper.mkdir()
    staged = tmp_path / "staged"
    prefix = ("unshare", "--user", "--map-root-user", "sh", "-ec", SET_LIMIT, "sh", own_namespace)
    async with spawned(tmp_path, prefix=(*prefix, "2"), namespaces=("-U",)) as server:
        stub = server.stub
        await scanned_before(stub, root, 4)
        follower = await watched(stub, root, poll_interval={"seconds": 1})
        status = await follower.state(DEGRADED, "cannot be watched", "max_user_watches")
        assert status.reason.startswith("1 folders") and "every 1s" in status.reason
        assert status.watching == EVENTS
        assert f"library libraries/lib: {status.reason}" in server.log()
        library = await stub.GetLibrary(scan_pb2.GetLibraryRequest(name="lib"))
        replay = Feed(stub, "lib", after=1, uid=library.uid)  # 1: the keeper watches
        change = await replay.next()
        replay.close()
        assert (change.kind, change.sequence) == (scan_pb2.CHANGE_KIND_STATUS, 2)
        said = (change.status.state, change.status.reason)
        assert said == (DEGRADED, status.reason)  # a change on the feed

        deep = tiny_video(staged / "deep.mp4", seconds=0.6)
        os.rename(deep, deeper / "deep.mp4")
        added = await follower.added(deeper / "deep.mp4")
        job = await stub.GetJob(scan_pb2.GetJobRequest(job_id=added.job_id))
        assert job.trigger == scan_pb2.TRIGGER_WATCH
        # The blind folder walked once, or the folder below it that a poll found changed.
        targets = [*job.options.folders, *job.options.trees]
        assert targets in ([real(more)], [real(deeper)]), job.options

        if recovery == "limit raised":
            await server.inside("sh", "-ec", SET_LIMIT, "sh", own_namespace, "100", "true")
        elif recovery == "folders removed":
            shutil.rmtree(more)
            gone = {real(more / "two.mp4"), real(deeper / "deep.mp4")}
            await follower.seen(lambda changes: set(follower.removed()) == gone)
        if recovery != "server restarted":
            status = await follower.state(ACTIVE)
            assert status.reason == "" and status.watching == EVENTS
        follower.close()
        if recovery != "server restarted":
            await still_watched(
                stub, root, root if recovery == "folders removed" else deeper, staged
            )
    if recovery == "server restarted":
        async with spawned(
            tmp_path, prefix=(*prefix, "100"), namespaces=("-U",), name="restarted"
        ) as server:
            status = await Follower(server.stub).state(ACTIVE)
            assert status.reason == "" and status.watching == EVENTS
            await still_watched(server.stub, root, deeper, staged)
    assert host_limits() == before


async def still_watched(stub: Any, root: Path, folder: Path, staged: Path) -> None:
    """A video moved into `folder` reaches the feed; the library holds what `root` holds."""
    follower = Follower(stub)
    await follower.until(lambda s: s.state == ACTIVE)
    after = tiny_video(staged / "after.mp4", seconds=0.8)
    os.rename(after, folder / "after.mp4")
    await follower.added(folder / "after.mp4")
    follower.close()
    assert await paths_of(stub) == on_disk(root)


async def scanned_before(stub: Any, root: Path, count: int) -> None:
    """A user's scan of `root` before it is a library's, which finds `count` videos."""
    job = await scan(stub, root, timeout=WAIT)
    assert job.state == scan_pb2.JOB_STATE_SUCCEEDED and job.result.added == count, job


async def hanging(fifo: Path) -> str:
    """The path of the file whose probe hangs, once the test prober says so on `fifo`."""

    def read() -> str:
        with open(fifo) as said:
            return said.readline().strip().partition(" ")[2]

    async with asyncio.timeout(WAIT):
        return await asyncio.to_thread(read)


@pytest.mark.slow
async def test_an_overflow_degrades_the_library_until_a_whole_rescan_brings_every_change(
    tmp_path: Path,
) -> None:
    """The server is paused (SIGSTOP) while videos are added, deleted, replaced and moved and
    a burst of more events than the kernel queues (fs.inotify.max_queued_events, the
    machine's own: no namespace has a copy) follows; continued (SIGCONT), the library is
    DEGRADED for the overflow, one WATCH job of the whole library brings every change in, and
    only then is it ACTIVE again: not when a WATCH job that was running before the overflow
    ends (its probe hangs until it is cancelled)."""
    queued = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    if queued > 1_000_000:
        pytest.skip(f"max_queued_events is {queued}: too long a burst")
    before = host_limits()
    root, staged = tmp_path / "lib", tmp_path / "staged"
    for index, name in enumerate(("gone", "replaced", "moved", "kept", "also-kept")):
        tiny_video(root / f"{name}.mp4", seconds=0.2 + index / 10)
    for folder in ("sub", "burst", "slow"):
        (root / folder).mkdir()
    new = [tiny_video(staged / f"new-{i}.mp4", seconds=0.8 + i / 10) for i in range(2)]
    replacement = tiny_video(staged / "replacement.mp4", seconds=1.2)
    held = tiny_video(staged / f"{HANG_MARK}.mp4")
    fifo = tmp_path / "hanging"
    os.mkfifo(fifo)

    def changes_and_burst() -> None:
        os.rename(new[0], root / "new-0.mp4")
        os.rename(new[1], root / "sub" / "new-1.mp4")
        (root / "gone.mp4").unlink()
        os.rename(replacement, root / "replaced.mp4")
        os.rename(root / "moved.mp4", root / "sub" / "moved.mp4")
        os.rename(root / "slow" / held.name, held)  # not to hang the whole rescan too
        for i in range(queued):  # each: IN_CREATE, IN_CLOSE_WRITE, IN_DELETE
            path = root / "burst" / f"{i}.tmp"
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
            path.unlink()

    args = ("--probe-timeout", "120")
    async with spawned(tmp_path, hang=fifo, args=args) as server:
        stub = server.stub
        follower = await watched(stub, root)
        await scanned(stub, root, 5)
        os.rename(held, root / "slow" / held.name)
        assert await hanging(fifo) == real(root / "slow" / held.name)
        [running] = (await stub.ListJobs(scan_pb2.ListJobsRequest())).jobs[:1]
        assert running.trigger == scan_pb2.TRIGGER_WATCH and running.options.folders, running
        assert running.state == scan_pb2.JOB_STATE_RUNNING, running
        server.process.send_signal(signal.SIGSTOP)
        try:
            await stopped(server.pid)  # else it may read the first events of the burst
            await asyncio.to_thread(changes_and_burst)
        finally:
            server.process.send_signal(signal.SIGCONT)
        status = await follower.state(DEGRADED, "overflowed", "max_queued_events")
        assert follower.last_status_change().status == status
        assert "library libraries/lib: the kernel's event queue overflowed" in server.log()
        cancelled = await stub.CancelJob(scan_pb2.CancelJobRequest(job_id=running.job_id))
        assert cancelled.state == scan_pb2.JOB_STATE_CANCELLED, cancelled
        active = await follower.state(ACTIVE)
        jobs = (await stub.ListJobs(scan_pb2.ListJobsRequest())).jobs
        whole = [
            j
            for j in jobs
            if j.trigger == scan_pb2.TRIGGER_WATCH and not j.options.folders and not j.options.trees
        ]
        # The keeper's first rescan, and the one the overflow called for (newest first).
        assert len(whole) == 2, whole
        assert whole[0].state == scan_pb2.JOB_STATE_SUCCEEDED, whole[0]
        assert whole[0].create_time.ToNanoseconds() >= status.since.ToNanoseconds()
        assert active.since.ToNanoseconds() >= whole[0].end_time.ToNanoseconds()
        assert await paths_of(stub) == on_disk(root)
        assert follower.removed() == [real(root / "gone.mp4")]
        follower.close()
    assert host_limits() == before


@pytest.mark.slow
async def test_the_rescan_an_overflow_called_for_runs_when_the_server_starts(
    tmp_path: Path,
) -> None:
    """A server stopped between an overflow and the whole rescan it called for (its status as
    that server left it, written into the database while no server runs): the next server
    rescans the whole library, finding what the lost events told of, and only then is the
    library ACTIVE."""
    root = tmp_path / "lib"
    tiny_video(root / "a.mp4")
    async with spawned(tmp_path) as server:
        follower = await watched(server.stub, root)
        await scanned(server.stub, root, 1)
        follower.close()
    store = SqliteStore(tmp_path / "mediascan.db")
    await store.open()
    reason = f"{OVERFLOWED} (fs.inotify.max_queued_events): changes were missed"
    assert await st.update_status(store, "lib", st.set_state(DEGRADED, reason))
    await store.close()
    missed = tiny_video(root / "sub" / "missed.mp4", seconds=0.5)
    async with spawned(tmp_path, name="restarted") as server:
        follower = Follower(server.stub)
        active = await follower.state(ACTIVE)
        follower.close()
        jobs = (await server.stub.ListJobs(scan_pb2.ListJobsRequest())).jobs
        # Newest first: the next server's first rescan (the one owed), then the first one's.
        job, _ = [j for j in jobs if j.trigger == scan_pb2.TRIGGER_WATCH]
        assert not job.options.folders and not job.options.trees, job.options
        assert job.state == scan_pb2.JOB_STATE_SUCCEEDED and job.result.added == 1, job
        assert active.since.ToNanoseconds() >= job.end_time.ToNanoseconds()
        assert await paths_of(server.stub) == on_disk(root)
        assert real(missed) in await paths_of(server.stub)
