"""The folder watcher (`mediascan.server.watching`) on real folders, real inotify and real
processes: settled changes, new and removed subtrees, symlinks, a lost root; the watch limit in a
user namespace of its own, a queue overflow forced by pausing the watcher's process, unmounts in
a private mount namespace; and which file systems `AUTO` polls."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from mediascan.server.watching import (
    Changed,
    FolderWatcher,
    RootLost,
    Signal,
    WatchMode,
    effective_mode,
    events_reach_here,
    mount_type,
    mounts_without_events,
)
from mediascan.server.watching import inotify as watcher_module

#: A short quiet window, so that the tests run quickly.
SETTLE = 0.2
#: The bound on any wait for a signal: generous, for a busy machine.
WAIT = 60.0
CHILD = Path(__file__).with_name("_watch_child.py")
HOST_LIMITS = [f"/proc/sys/fs/inotify/{n}" for n in ("max_user_watches", "max_queued_events")]


async def collect(
    watcher: FolderWatcher, done: Callable[[list[Signal]], bool], timeout: float = WAIT
) -> list[Signal]:
    """Signals until `done(signals)` (or the watcher ends), within `timeout`."""
    seen: list[Signal] = []
    async with asyncio.timeout(timeout):
        while not done(seen):
            signal = await watcher.next_signal()
            if signal is None:
                break
            seen.append(signal)
    return seen


def folders(signals: Sequence[Signal]) -> set[str]:
    return {f for s in signals if isinstance(s, Changed) for f in s.folders}


def trees(signals: Sequence[Signal]) -> set[str]:
    return {t for s in signals if isinstance(s, Changed) for t in s.trees}


def reported(*paths: Path) -> Callable[[list[Signal]], bool]:
    """Done once every path was reported, as a folder or a tree."""
    wanted = {str(p) for p in paths}
    return lambda signals: wanted <= folders(signals) | trees(signals)


@contextlib.asynccontextmanager
async def watching(root: Path, **options: Any) -> AsyncIterator[FolderWatcher]:
    options.setdefault("settle_s", SETTLE)
    async with FolderWatcher(str(root), **options) as watcher:
        yield watcher


def make_tree(root: Path, *folders: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for folder in folders:
        (root / folder).mkdir(parents=True, exist_ok=True)
    return root


# -- settled changes ---------------------------------------------------------------------------


async def test_files_created_written_and_deleted_report_their_folder(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "lib", "a")
    async with watching(root) as watcher:
        assert watcher.watched == 2
        (root / "a" / "new.mkv").write_bytes(b"x")
        got = await collect(watcher, reported(root / "a"))
        assert folders(got) == {str(root / "a")} and not trees(got)

        with open(root / "old.mkv", "ab") as file:
            file.write(b"more")
        assert folders(await collect(watcher, reported(root))) == {str(root)}

        (root / "a" / "new.mkv").unlink()
        assert folders(await collect(watcher, reported(root / "a"))) == {str(root / "a")}


async def test_renames_within_and_across_folders(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "lib", "a", "b")
    (root / "a" / "x.mkv").write_bytes(b"x")
    async with watching(root) as watcher:
        (root / "a" / "x.mkv").rename(root / "a" / "y.mkv")
        assert folders(await collect(watcher, reported(root / "a"))) == {str(root / "a")}

        (root / "a" / "y.mkv").rename(root / "b" / "y.mkv")
        got = await collect(watcher, reported(root / "a", root / "b"))
        assert folders(got) == {str(root / "a"), str(root / "b")}


async def test_a_file_written_in_chunks_keeps_only_its_own_folder_back(tmp_path: Path) -> None:
    """A file written for longer than the quiet window holds its folder back until it is
    quiet; another folder changed at the start is reported on time, on its own."""
    settle, interval, chunks = 1.0, 0.05, 60  # about 3 s of writing
    root = make_tree(tmp_path / "lib", "copying", "other")
    written: list[float] = []

    def copy() -> None:
        with open(root / "copying" / "film.mkv", "wb") as file:
            for _ in range(chunks):
                file.write(b"x" * 4096)
                file.flush()
                written.append(time.monotonic())
                time.sleep(interval)  # the pace of the copy, not a wait for the watcher

    async with watching(root, settle_s=settle) as watcher:
        loop = asyncio.get_running_loop()
        (root / "other" / "done.mkv").write_bytes(b"x")
        copier = asyncio.create_task(asyncio.to_thread(copy))
        when: dict[str, list[float]] = {}
        signals: list[Signal] = []
        async with asyncio.timeout(WAIT):
            while str(root / "copying") not in folders(signals):
                signal = await watcher.next_signal()
                assert signal is not None
                signals.append(signal)
                for folder in folders([signal]):
                    when.setdefault(folder, []).append(loop.time())
            await copier
    other, copying = when[str(root / "other")], when[str(root / "copying")]
    assert other[0] < written[-1], "the other folder waited for the copy"
    assert all(str(root / "copying") not in folders([s]) for s in signals[:1])
    for reported_at in copying:  # never less than the quiet window after a write
        last_write = max(t for t in written if t <= reported_at)
        assert reported_at - last_write >= settle
    assert copying[-1] >= written[-1] + settle


# -- folders that come and go ------------------------------------------------------------------


async def test_a_subtree_moved_in_is_a_tree_and_gets_watched(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "lib")
    outside = make_tree(tmp_path / "incoming", "show/s1/e1", "show/s2")
    (outside / "show" / "s1" / "e1" / "ep.mkv").write_bytes(b"x")
    async with watching(root) as watcher:
        (outside / "show").rename(root / "show")
        got = await collect(watcher, reported(root / "show"))
        assert trees(got) == {str(root / "show")} and folders(got) == {str(root)}
        assert watcher.watched == 5  # root, show, s1, e1, s2

        (root / "show" / "s1" / "e1" / "new.mkv").write_bytes(b"x")
        deep = root / "show" / "s1" / "e1"
        assert folders(await collect(watcher, reported(deep))) == {str(deep)}


async def test_a_new_folder_filled_in_is_one_tree(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "lib")
    async with watching(root) as watcher:
        make_tree(root, "new/deeper/deepest")
        (root / "new" / "deeper" / "a.mkv").write_bytes(b"x")
        (root / "new" / "deeper" / "deepest" / "b.mkv").write_bytes(b"x")
        got = await collect(watcher, reported(root / "new"))
        assert trees(got) == {str(root / "new")} and folders(got) == {str(root)}
        assert watcher.watched == 4


async def test_removed_and_moved_out_folders_drop_their_watches(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "lib", "gone/b/c", "away/d", "keep")
    elsewhere = make_tree(tmp_path / "elsewhere")
    async with watching(root) as watcher:
        assert watcher.watched == 7
        shutil.rmtree(root / "gone")
        await collect(watcher, reported(root))
        assert watcher.watched == 4

        (root / "away").rename(elsewhere / "away")
        await collect(watcher, reported(root))
        assert watcher.watched == 2  # root and keep
        (elsewhere / "away" / "d" / "f.mkv").write_bytes(b"x")  # no longer ours
        (root / "keep" / "f.mkv").write_bytes(b"x")
        got = await collect(watcher, reported(root / "keep"))
        assert folders(got) == {str(root / "keep")}


async def test_not_recursive_watches_the_root_alone(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "lib", "sub")
    async with watching(root, recursive=False) as watcher:
        assert watcher.watched == 1
        (root / "sub" / "f.mkv").write_bytes(b"x")
        make_tree(root, "newsub")
        (root / "f.mkv").write_bytes(b"x")
        got = await collect(watcher, reported(root))
        assert folders(got) == {str(root)} and not trees(got)


async def test_symlinked_folders_are_followed_only_when_asked(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "lib")
    outside = make_tree(tmp_path / "outside", "sub")
    (root / "link").symlink_to(outside, target_is_directory=True)
    (root / "loop").symlink_to(root, target_is_directory=True)
    async with watching(root) as watcher:
        assert watcher.watched == 1
        (outside / "sub" / "f.mkv").write_bytes(b"x")
        (root / "f.mkv").write_bytes(b"x")
        assert folders(await collect(watcher, reported(root))) == {str(root)}
    async with watching(root, follow_symlinks=True) as watcher:
        assert watcher.watched == 3  # root, link, link/sub; loop is root again: not entered
        (outside / "sub" / "g.mkv").write_bytes(b"x")
        sub = root / "link" / "sub"
        assert folders(await collect(watcher, reported(sub))) == {str(sub)}


# -- the root ----------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["deleted", "moved"])
async def test_a_lost_root_ends_the_watch(tmp_path: Path, how: str) -> None:
    root = make_tree(tmp_path / "lib", "a")
    async with watching(root) as watcher:
        if how == "deleted":
            shutil.rmtree(root)
        else:
            root.rename(tmp_path / "moved")
        got = await collect(watcher, lambda s: False)  # to the end of the iteration
        assert got[-1] == RootLost(reason=how)
        assert await watcher.next_signal() is None


async def test_a_missing_root_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await FolderWatcher(str(tmp_path / "nope")).start()
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(NotADirectoryError):
        await FolderWatcher(str(tmp_path / "file")).start()


# -- the pull loop -----------------------------------------------------------------------------


async def test_a_cancelled_wait_loses_nothing(tmp_path: Path) -> None:
    """next_signal() cut off by timeouts while events arrive: every folder still comes."""
    names = [f"f{i:02}" for i in range(20)]
    root = make_tree(tmp_path / "lib", *names)
    async with watching(root, settle_s=0.05) as watcher:
        early: list[Signal] = []
        for name in names:
            (root / name / "x.mkv").write_bytes(b"x")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.001):
                    signal = await watcher.next_signal()
                    assert signal is not None
                    early.append(signal)
        later = await collect(watcher, lambda s: reported(*(root / n for n in names))(early + s))
        assert folders(early + later) == {str(root / n) for n in names}


async def test_a_backlog_is_read_whole_before_a_folder_is_quiet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With 3 events a step, the 90-odd events of one folder take 30 steps, all read at once
    into asyncinotify's buffer: they are handled one step after the other, not one step per
    quiet window (which would take 60 s here), and the folder is reported once, after all."""
    monkeypatch.setattr(watcher_module, "MOST_EVENTS_A_STEP", 3)
    root = make_tree(tmp_path / "lib", "a", "b")
    async with watching(root, settle_s=2.0) as watcher:
        for i in range(30):
            (root / "a" / f"{i}.mkv").write_bytes(b"x")  # IN_CREATE, IN_MODIFY, IN_CLOSE_WRITE
        (root / "b" / "last.mkv").write_bytes(b"x")
        got = await collect(watcher, reported(root / "a", root / "b"))
        assert sum(str(root / "a") in folders([s]) for s in got) == 1


async def test_close_wakes_a_waiting_next_signal(tmp_path: Path) -> None:
    async with watching(tmp_path) as watcher:
        waiting = asyncio.create_task(watcher.next_signal())
        await asyncio.sleep(0)  # one turn of the loop: with no event, it is then in its wait
        watcher.close()
        async with asyncio.timeout(WAIT):
            assert await waiting is None


async def test_memory_per_watched_folder(tmp_path: Path) -> None:
    """What the watcher keeps per watched folder (measured with tracemalloc, this test's
    one-time costs included): printed, and bounded so that 100,000 folders stay well under
    100 MB (docs/operations.md gives the figure measured over 20,401 folders)."""
    root = tmp_path / "lib"
    for show in range(40):
        make_tree(root, *(f"show {show:03}/season {season:02}" for season in range(50)))
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        async with watching(root) as watcher:
            gc.collect()
            used = tracemalloc.get_traced_memory()[0] - before
            count = watcher.watched
    finally:
        tracemalloc.stop()
    assert count == 1 + 40 + 40 * 50
    per_watch = used / count
    print(f"\nwatcher memory: {used} bytes for {count} folders, {per_watch:.0f} bytes a folder")
    assert per_watch < 800


# -- fstypes -----------------------------------------------------------------------------------

MOUNTINFO = (
    "21 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
    "25 21 0:23 / /dev/shm rw shared:4 - tmpfs tmpfs rw\n"
    "40 21 0:50 / /mnt/nas rw,relatime shared:7 - nfs4 nas:/export/media rw,vers=4.2\n"
    "41 21 0:51 / /mnt/smb rw - cifs //server/films rw,vers=3.1.1\n"
    "42 21 0:52 / /home/u/remote rw,nosuid - fuse.sshfs u@host:/srv rw,user_id=1000\n"
    "43 21 8:17 / /media/my\\040win rw - fuseblk /dev/sdb1 rw\n"
    "44 40 8:33 / /mnt/nas/local rw - ext4 /dev/sdc1 rw\n"
    "45 21 0:53 / /mnt/swap rw - nfs srv:/x rw\n"
    "46 21 0:54 / /mnt/swap rw - xfs /dev/sdd1 rw\n"
)


@pytest.mark.parametrize(
    ("path", "fstype", "mode"),
    [
        ("/mnt/nas/films/a.mkv", "nfs4", WatchMode.POLL),
        ("/mnt/nas", "nfs4", WatchMode.POLL),
        ("/mnt/nasty", "ext4", WatchMode.EVENTS),  # not below /mnt/nas
        ("/mnt/nas/local/films", "ext4", WatchMode.EVENTS),  # a local disk inside the share
        ("/mnt/smb/films", "cifs", WatchMode.POLL),
        ("/home/u/remote/films", "fuse.sshfs", WatchMode.POLL),
        ("/media/my win/films", "fuseblk", WatchMode.EVENTS),  # a local disk through FUSE
        ("/dev/shm/x", "tmpfs", WatchMode.EVENTS),
        ("/mnt/swap/x", "xfs", WatchMode.EVENTS),  # the last mount on a point hides the first
        ("/srv/media", "ext4", WatchMode.EVENTS),
    ],
)
def test_mount_types_from_mountinfo(path: str, fstype: str, mode: WatchMode) -> None:
    assert mount_type(path, MOUNTINFO) == fstype
    assert events_reach_here(path, MOUNTINFO) is (mode is WatchMode.EVENTS)
    assert effective_mode(WatchMode.AUTO, path, MOUNTINFO) is mode
    assert effective_mode(WatchMode.EVENTS, path, MOUNTINFO) is WatchMode.EVENTS


def test_mounts_without_events_below_a_root() -> None:
    assert mounts_without_events("/mnt", MOUNTINFO) == ["/mnt/nas", "/mnt/smb"]
    assert mounts_without_events("/mnt/nas", MOUNTINFO) == []  # itself: effective_mode's
    assert mounts_without_events("/", MOUNTINFO) == ["/home/u/remote", "/mnt/nas", "/mnt/smb"]


CLASSIFY = (
    "import sys; from mediascan.server.watching import WatchMode, effective_mode, mount_type;"
    "print(mount_type(sys.argv[1]), effective_mode(WatchMode.AUTO, sys.argv[1]).value)"
)


def in_private_mounts(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`script` (sh) in a user and mount namespace of its own: its mounts vanish with it."""
    command = ["unshare", "--user", "--map-root-user", "--mount", "--propagation", "private"]
    return subprocess.run(
        [*command, "sh", "-ec", script, "sh", *args],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )


def namespaces_or_skip() -> None:
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1) here")
    done = in_private_mounts("true")
    if done.returncode != 0:
        pytest.skip(f"no user and mount namespaces here: {done.stderr.strip()}")


def test_a_tmpfs_is_watched_with_events(tmp_path: Path) -> None:
    namespaces_or_skip()
    done = in_private_mounts(
        'mount -t tmpfs mediascan-test "$1"; exec "$2" -c "$3" "$1/films"',
        str(tmp_path),
        sys.executable,
        CLASSIFY,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["tmpfs", "EVENTS"]


def test_a_fuse_mount_is_polled(tmp_path: Path) -> None:
    """A real FUSE mount with no daemon behind it (the kernel's side of FUSE is all the type
    needs): mounted from an open /dev/fuse, whose closing leaves the mount unanswered."""
    namespaces_or_skip()
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        pytest.skip("no /dev/fuse to open here")
    done = in_private_mounts(
        "mount -i -t fuse.mediascan-test -o fd=3,rootmode=40000,user_id=0,group_id=0 "
        'mediascan-test "$1" 3<>/dev/fuse; exec "$2" -c "$3" "$1/films"',
        str(tmp_path),
        sys.executable,
        CLASSIFY,
    )
    if "mount" in done.stderr and done.returncode != 0:
        pytest.skip(f"cannot mount FUSE here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["fuse.mediascan-test", "POLL"]


# -- the kernel's limits, for real, in a process of its own -------------------------------------


class Child:
    """A watcher in a child process (tests/_watch_child.py): its JSON lines, and commands."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[dict[str, Any]] = []

    @classmethod
    async def start(cls, root: Path, *options: str, prefix: Sequence[str] = ()) -> Child:
        process = await asyncio.create_subprocess_exec(
            *prefix,
            sys.executable,
            str(CHILD),
            str(root),
            *options,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def expect(self, test: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The next line that passes `test` (within WAIT)."""
        assert self.process.stdout is not None
        try:
            async with asyncio.timeout(WAIT):
                while True:
                    line = await self.process.stdout.readline()
                    if not line:
                        assert self.process.stderr is not None
                        error = await self.process.stderr.read()
                        raise AssertionError(f"the child ended: {error.decode()}; {self.lines}")
                    self.lines.append(json.loads(line))
                    if test(self.lines[-1]):
                        return self.lines[-1]
        except TimeoutError:
            state = Path(f"/proc/{self.process.pid}/status").read_text().splitlines()[2]
            raise AssertionError(f"no such line in {WAIT} s ({state}): {self.lines}") from None

    async def signal(self, name: str) -> dict[str, Any]:
        return await self.expect(lambda line: line.get("signal") == name)

    async def send(self, **command: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(command) + "\n").encode())
        await self.process.stdin.drain()

    async def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
        async with asyncio.timeout(WAIT):
            await self.process.communicate()


@contextlib.asynccontextmanager
async def child(root: Path, *options: str, prefix: Sequence[str] = ()) -> AsyncIterator[Child]:
    started = await Child.start(root, *options, prefix=prefix)
    try:
        yield started
    finally:
        await started.stop()


def host_limits() -> list[str]:
    return [Path(name).read_text() for name in HOST_LIMITS]


USER_NS = ("unshare", "--user", "--map-root-user")


def user_namespace_limits_or_skip() -> None:
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1) here")
    done = subprocess.run(
        [*USER_NS, "sh", "-c", "echo 100 > /proc/sys/user/max_inotify_watches"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot set a user namespace's watch limit here: {done.stderr.strip()}")


@pytest.mark.parametrize("recovery", ["limit raised", "folders removed"])
async def test_the_watch_limit_makes_folders_blind_until_it_is_lifted(
    tmp_path: Path, recovery: str
) -> None:
    """In a user namespace whose watch limit is 4: 4 of 10 folders are watched and the other 6
    are Blind; raising the limit, or removing those 6, gives Sighted. The machine's own limits
    are the same before and after."""
    user_namespace_limits_or_skip()
    before = host_limits()
    root = make_tree(tmp_path / "lib", *(f"s{i}" for i in range(9)))
    async with child(root, "--limit", "4", prefix=USER_NS) as watcher:
        ready = (await watcher.expect(lambda line: "ready" in line))["ready"]
        assert ready["watched"] == 4 and len(ready["blind"]) == 6
        blind = await watcher.signal("Blind")
        assert blind["folders"] == ready["blind"]
        assert "max_user_watches" in blind["reason"]
        if recovery == "limit raised":
            await watcher.send(limit=100)
            await watcher.signal("Sighted")
            changed = await watcher.expect(
                lambda line: set(line.get("trees", ())) == set(blind["folders"])
            )
            assert changed["signal"] == "Changed"
        else:
            for folder in blind["folders"]:
                os.rmdir(folder)
            await watcher.signal("Sighted")
        kept = next(str(f) for f in sorted(root.iterdir()) if str(f) not in blind["folders"])
        Path(kept, "after.mkv").write_bytes(b"x")  # watched, whichever it was
        await watcher.expect(lambda line: kept in line.get("folders", ()))
    assert host_limits() == before


@pytest.mark.parametrize("settle", ["0.2", "0.001"])
async def test_a_queue_overflow_is_reported_and_watching_goes_on(
    tmp_path: Path, settle: str
) -> None:
    """The watcher's process is paused (SIGSTOP) through a burst of more events than the kernel
    queues (fs.inotify.max_queued_events): it reports Overflowed, then watches on. The child is
    waited for until it is stopped (SIGSTOP takes effect once each thread stops; one still
    running reads the first events, and the queue is not full). With a settle time shorter
    than reading the full queue takes, no quiet deadline wakes the watcher after the backlog:
    the overflow record, the last one and read ahead into asyncinotify's buffer, still comes
    without a later event (it did not before the backlog was read step after step)."""
    queued = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    if queued > 1_000_000:
        pytest.skip(f"max_queued_events is {queued}: too long a burst")
    root = make_tree(tmp_path / "lib", "burst", "sub")
    async with child(root, "--settle", settle) as watcher:
        await watcher.expect(lambda line: "ready" in line)
        watcher.process.send_signal(signal.SIGSTOP)
        # Stopped before the burst: a full queue, not one read in part while the stop spreads.
        await asyncio.to_thread(
            os.waitid, os.P_PID, watcher.process.pid, os.WSTOPPED | os.WEXITED | os.WNOWAIT
        )
        try:
            burst = str(root / "burst")
            for i in range(queued):  # each: IN_CREATE, IN_CLOSE_WRITE, IN_DELETE at least
                path = f"{burst}/{i}.tmp"
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
                os.unlink(path)
        finally:
            watcher.process.send_signal(signal.SIGCONT)
        await watcher.signal("Overflowed")
        (root / "sub" / "after.mkv").write_bytes(b"x")
        await watcher.expect(lambda line: str(root / "sub") in line.get("folders", ()))


async def test_unmounts_uncover_a_tree_and_lose_the_root(tmp_path: Path) -> None:
    """In a private mount namespace: the root is a tmpfs with another tmpfs on root/disk.
    Unmounting the disk reports root/disk as a tree (what it covered); unmounting the root
    loses it."""
    namespaces_or_skip()
    root = tmp_path / "lib"
    root.mkdir()
    script = (
        'mount -t tmpfs mediascan-root "$1"; mkdir "$1/disk"; '
        'mount -t tmpfs mediascan-disk "$1/disk"; mkdir "$1/disk/films"; shift; exec "$@"'
    )
    prefix = [
        *("unshare", "--user", "--map-root-user", "--mount", "--propagation", "private"),
        *("sh", "-ec", script, "sh", str(root)),
    ]
    async with child(root, prefix=prefix) as watcher:
        # the child runs as: sh -ec SCRIPT sh ROOT python CHILD ROOT
        ready = await watcher.expect(lambda line: "ready" in line)
        assert ready["ready"]["watched"] == 3
        await watcher.send(run=["umount", str(root / "disk")])
        assert (await watcher.expect(lambda line: "ran" in line))["ran"] == 0
        changed = await watcher.expect(lambda line: str(root / "disk") in line.get("trees", ()))
        assert changed["signal"] == "Changed"
        await watcher.send(run=["umount", str(root)])
        lost = await watcher.signal("RootLost")
        assert lost["reason"] == "unmounted"
        await watcher.expect(lambda line: line.get("end") is True)
