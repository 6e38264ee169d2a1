"""One scan: walk a folder, probe its video files, and write what they are into the library.

The walk runs in its own thread (os.scandir) and hands batches of files to the event loop through
a bounded queue, so probing starts while the walk goes on and a huge tree is never held in memory
at once. Probes run in the prober processes of `probe_pool.py`, at most `probe_concurrency` files
of one scan at a time, each with a time limit. Results are written to the library in batches (one
transaction per batch). A file whose size and modification time are unchanged since the last
probe is not probed again unless the scan is `full`. Whatever is committed stays committed when a
scan is cancelled or times out.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import os
import stat
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Protocol

import grpc

from mediascan.v1 import scan_pb2

from .errors import FailedPrecondition, NotFound, PermissionDenied
from .jobs import ScanSpec, is_within
from .probe import ProbeError, ProbeResult, is_video_name
from .store import Store, VideoRow

_WALK_BATCH = 256  # files per hand-over from the walker thread
_WALK_QUEUE = 8  # batches in flight between the walker and the loop
_WRITE_BATCH = 128  # probed files per library transaction
_WRITE_INTERVAL = 0.5  # seconds: a partial batch is written at least this often

_REASON_CODES = {
    "not_video": grpc.StatusCode.INVALID_ARGUMENT,
    "corrupt": grpc.StatusCode.DATA_LOSS,
    "unreadable": grpc.StatusCode.PERMISSION_DENIED,
    "vanished": grpc.StatusCode.NOT_FOUND,
    "timeout": grpc.StatusCode.DEADLINE_EXCEEDED,
    "crashed": grpc.StatusCode.DATA_LOSS,
    "unsupported": grpc.StatusCode.UNIMPLEMENTED,
}


class Prober(Protocol):
    """Probes one file (e.g. `ProbePool`); raises ProbeError when it is not a usable video."""

    async def probe(self, path: str) -> ProbeResult: ...


class ScanReporter(Protocol):
    """Where a scan reports to; the job runner turns it into progress and file-error events."""

    progress: scan_pb2.Progress

    def changed(self) -> None:
        """Progress was updated (events are coalesced by the reporter)."""

    def file_error(self, path: str, code: grpc.StatusCode, message: str) -> None:
        """A file or folder could not be handled."""


@dataclasses.dataclass(frozen=True, slots=True)
class FoundFile:
    path: str
    size: int
    mtime_ns: int
    dev: int


@dataclasses.dataclass(frozen=True, slots=True)
class WalkError:
    """An entry the walk could not handle. `complete`: the folder's listing is still complete
    (the entry is surely not a video the library could hold), so removals there stay safe."""

    path: str
    code: grpc.StatusCode
    message: str
    complete: bool = False
    #: A folder (unreadable, or skipped as already scanned), not a file: not counted as failed.
    folder: bool = False


_Item = list[FoundFile | WalkError] | None  # None ends the walk


class Scanner:
    """Runs scans; one instance serves every job."""

    def __init__(
        self,
        store: Store,
        prober: Prober,
        walk_executor: Executor,
        *,
        probe_concurrency: int,
        roots: tuple[str, ...] = (),
    ) -> None:
        self._store = store
        self._roots = roots  #: resolved allowed roots; empty allows any folder
        self._prober = prober
        self._walk_executor = walk_executor
        self._probe_concurrency = probe_concurrency

    async def scan(self, spec: ScanSpec, job_id: str, reporter: ScanReporter) -> None:
        await asyncio.to_thread(_check_root, spec.path)
        run = _ScanRun(self, spec, job_id, reporter)
        await run.execute()


def _check_root(path: str) -> None:
    """The folder must still be what was accepted at submit time."""
    if os.path.realpath(path) != path:
        raise PermissionDenied(
            f"{path} changed into a symbolic link after the scan was accepted; submit the "
            "scan again with the real folder"
        )
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise NotFound(f"{path} no longer exists") from None
    except OSError as exc:
        raise FailedPrecondition(f"cannot read {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(mode):
        raise FailedPrecondition(f"{path} is no longer a folder")


class _ScanRun:
    def __init__(
        self, scanner: Scanner, spec: ScanSpec, job_id: str, reporter: ScanReporter
    ) -> None:
        self._scanner = scanner
        self._spec = spec
        self._job_id = job_id
        self._reporter = reporter
        self._progress = reporter.progress
        self._pending: list[VideoRow] = []
        self._last_write = time.monotonic()
        self._write_lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(scanner._probe_concurrency)
        self._probes: set[asyncio.Task[None]] = set()
        self._failure: BaseException | None = None  # the first probe task that failed
        self._stop = threading.Event()
        self._started_ns = time.time_ns()
        self._seen: set[str] = set()  # video paths met by the walk
        self._listed: dict[str, int] = {}  # folders listed completely: their device

    async def execute(self) -> None:
        loop = asyncio.get_running_loop()
        items: asyncio.Queue[_Item] = asyncio.Queue(_WALK_QUEUE)
        self._progress.phase = scan_pb2.SCAN_PHASE_DISCOVERING
        self._reporter.changed()
        walk = _Walker(
            self._spec,
            self._scanner._roots,
            lambda item: self._hand_over(loop, items, item),
            self._stop,
            self._listed,
        )
        walker = loop.run_in_executor(self._scanner._walk_executor, walk.run)
        try:
            while (batch := await items.get()) is not None:
                await self._handle(batch)
            await walker  # re-raises a walker crash
            self._progress.files_total = self._progress.files_found
            self._progress.phase = scan_pb2.SCAN_PHASE_PROBING
            self._update_fraction()
            self._reporter.changed()
            if self._probes:
                await asyncio.gather(*self._probes)
            if self._failure is not None:  # e.g. a library write failed: the scan fails with it
                raise self._failure
            self._progress.phase = scan_pb2.SCAN_PHASE_FINALIZING
            self._reporter.changed()
            await self._write(force=True)
            await self._remove_missing()
        finally:
            self._stop.set()
            for task in self._probes:
                task.cancel()
            if self._probes:
                await asyncio.gather(*self._probes, return_exceptions=True)
            # Keep what was probed, even when cancelled or timed out; through the lock, so that
            # a write a cancelled probe left in flight is counted before the scan returns.
            await asyncio.shield(self._write_pending())
            with contextlib.suppress(Exception):  # a walker crash was raised above already
                await asyncio.shield(walker)

    def _hand_over(
        self, loop: asyncio.AbstractEventLoop, items: asyncio.Queue[_Item], item: _Item
    ) -> bool:
        """Called in the walker thread: put `item` on the queue, blocking while it is full.

        Returns False when the scan is over and the walker should stop."""
        future = asyncio.run_coroutine_threadsafe(items.put(item), loop)
        while not self._stop.is_set():
            try:
                future.result(timeout=0.2)
                return True
            except TimeoutError:
                continue
        future.cancel()
        return False

    async def _handle(self, batch: list[FoundFile | WalkError]) -> None:
        files = [item for item in batch if isinstance(item, FoundFile)]
        for item in batch:
            if isinstance(item, WalkError):
                self._reporter.file_error(item.path, item.code, item.message)
                if not item.folder:  # a file that failed before it could be probed
                    self._progress.files_found += 1
                    self._progress.files_done += 1
                    self._progress.failed += 1
        self._progress.files_found += len(files)
        self._seen.update(f.path for f in files)
        known: dict[str, tuple[int, int, int]] = {}
        if not self._spec.full and files:
            known = await self._scanner._store.known_files([f.path for f in files])
        undated: list[tuple[int, str]] = []  # unchanged rows that do not know their device yet
        for found in files:
            if self._failure is not None:
                raise self._failure
            size, mtime, dev = known.get(found.path, (-1, -1, -1))
            if (size, mtime) == (found.size, found.mtime_ns):
                if dev == 0:
                    undated.append((found.dev, found.path))
                self._progress.unchanged += 1
                self._done(found)
                continue
            await self._slots.acquire()
            task = asyncio.create_task(self._probe_one(found))
            self._probes.add(task)
            task.add_done_callback(self._probe_done)
        if undated:
            await self._scanner._store.set_devices(undated)
        self._reporter.changed()

    def _probe_done(self, task: asyncio.Task[None]) -> None:
        self._probes.discard(task)
        if not task.cancelled() and task.exception() is not None and self._failure is None:
            self._failure = task.exception()

    async def _probe_one(self, found: FoundFile) -> None:
        try:
            if found.size == 0:
                raise ProbeError("corrupt", "the file is empty (0 bytes)")
            result = await self._scanner._prober.probe(found.path)
        except ProbeError as exc:
            self._progress.failed += 1
            self._reporter.file_error(
                found.path, _REASON_CODES.get(exc.reason, grpc.StatusCode.UNKNOWN), exc.message
            )
            self._done(found)
            return
        finally:
            self._slots.release()
        self._pending.append(_row(found, result, self._job_id))
        self._done(found)
        await self._write(force=False)

    async def _remove_missing(self) -> None:
        """Forget library videos under the scanned folder that the walk did not meet.

        Only after a complete walk (never on cancel or timeout); only files whose own folder was
        listed without an error (an unreadable or vanished folder wipes nothing) and is still on
        the device the file was on (an unmounted disk leaves its mount point, an empty folder on
        another device: that wipes nothing either); and never a row written after this scan
        began (an overlapping scan may have just added it)."""
        root = self._spec.path
        known = await self._scanner._store.paths_under(root, before_ns=self._started_ns)
        gone = []
        for path, dev in known:
            folder = os.path.dirname(path)
            listed_on = self._listed.get(folder)
            if (
                path not in self._seen
                and listed_on is not None
                and dev in (0, listed_on)
                and (self._spec.recursive or folder == root)
            ):
                gone.append(path)
        if gone:
            removed = await self._scanner._store.remove_videos(gone, before_ns=self._started_ns)
            self._progress.removed += removed
            self._reporter.changed()

    def _done(self, found: FoundFile) -> None:
        self._progress.files_done += 1
        self._progress.bytes_done += found.size
        self._progress.current_path = found.path
        self._update_fraction()
        self._reporter.changed()

    def _update_fraction(self) -> None:
        if self._progress.HasField("files_total") and self._progress.files_total:
            self._progress.fraction = min(
                1.0, self._progress.files_done / self._progress.files_total
            )
        elif self._progress.HasField("files_total"):
            self._progress.fraction = 1.0

    async def _write(self, *, force: bool) -> None:
        due = len(self._pending) >= _WRITE_BATCH or (
            time.monotonic() - self._last_write >= _WRITE_INTERVAL
        )
        if not self._pending or not (force or due):
            return
        # Shielded: a cancel must not separate a committed batch from its counts.
        await asyncio.shield(self._write_pending())

    async def _write_pending(self) -> None:
        async with self._write_lock:
            rows, self._pending = self._pending, []
            if not rows:
                return
            self._last_write = time.monotonic()
            added, updated = await self._scanner._store.upsert_videos(rows)
            self._progress.added += added
            self._progress.updated += updated
            self._reporter.changed()


def _row(found: FoundFile, result: ProbeResult, job_id: str) -> VideoRow:
    return VideoRow(
        path=found.path,
        size_bytes=found.size,
        mtime_ns=found.mtime_ns,
        **dataclasses.asdict(result),  # the probed metadata, field for field
        probe_ns=time.time_ns(),
        job_id=job_id,
        dev=found.dev,
    )


class _Walker:
    """Depth-first walk of a scan's folder, run in a worker thread.

    Hands batches of files (and of entries it could not handle) to `hand_over`, and records in
    `listed` the device of every folder whose entries were all read without an error. With
    `follow_symlinks`, a link that leads outside the allowed roots is reported and not
    followed."""

    def __init__(
        self,
        spec: ScanSpec,
        roots: tuple[str, ...],
        hand_over: Callable[[_Item], bool],
        stop: threading.Event,
        listed: dict[str, int],
    ) -> None:
        self._spec = spec
        self._roots = roots
        self._hand_over = hand_over
        self._stop = stop
        self._listed = listed
        self._seen: set[tuple[int, int]] = set()  # folders entered, when following links
        self._stack = [spec.path]

    def run(self) -> None:
        if self._spec.follow_symlinks:
            root = os.stat(self._spec.path)
            self._seen.add((root.st_dev, root.st_ino))
        batch: list[FoundFile | WalkError] = []
        try:
            while self._stack and not self._stop.is_set():
                folder = self._stack.pop()
                complete = True
                try:
                    device = os.stat(folder).st_dev
                    with os.scandir(folder) as listing:
                        for entry in listing:
                            item = self._visit(entry)
                            if item is None:
                                continue
                            complete = complete and (isinstance(item, FoundFile) or item.complete)
                            batch.append(item)
                            if len(batch) >= _WALK_BATCH:
                                if not self._hand_over(batch):
                                    return
                                batch = []
                except OSError as exc:
                    batch.append(_folder_error(folder, exc))
                else:
                    if complete:
                        self._listed[folder] = device
            if batch and not self._stop.is_set():
                self._hand_over(batch)
        finally:
            if not self._stop.is_set():
                self._hand_over(None)

    def _visit(self, entry: os.DirEntry[str]) -> FoundFile | WalkError | None:
        """One folder entry: descend, a video file, a reported oddity, or None (not ours)."""
        follow = self._spec.follow_symlinks
        try:
            if follow and self._roots and entry.is_symlink() and self._leaves_roots(entry):
                if not (entry.is_dir() or is_video_name(entry.name)):
                    return None
                return WalkError(
                    entry.path,
                    grpc.StatusCode.PERMISSION_DENIED,
                    "not followed: the symbolic link leads outside the allowed roots",
                    complete=True,
                    folder=entry.is_dir(),
                )
            if entry.is_dir(follow_symlinks=follow):
                return self._enter(entry)
            if not is_video_name(entry.name):
                return None
            if entry.is_file(follow_symlinks=follow):
                info = entry.stat(follow_symlinks=follow)
            elif entry.is_symlink() and not follow:
                return None  # links are followed only when the scan asks for it
            else:
                return WalkError(
                    entry.path,
                    grpc.StatusCode.FAILED_PRECONDITION,
                    _oddity(entry.path),
                    complete=True,
                )
        except OSError as exc:
            if not is_video_name(entry.name):
                return None
            if exc.errno == errno.ELOOP:
                return WalkError(
                    entry.path,
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "a symbolic link loop",
                    complete=True,
                )
            return WalkError(entry.path, grpc.StatusCode.NOT_FOUND, f"cannot stat: {exc.strerror}")
        try:
            entry.path.encode("utf-8")
        except UnicodeEncodeError:
            return WalkError(
                entry.path.encode("utf-8", "backslashreplace").decode(),
                grpc.StatusCode.INVALID_ARGUMENT,
                "the file name is not valid UTF-8; rename it to scan it",
                complete=True,
            )
        return FoundFile(entry.path, info.st_size, info.st_mtime_ns, info.st_dev)

    def _enter(self, entry: os.DirEntry[str]) -> WalkError | None:
        if not self._spec.recursive:
            return None
        if self._spec.follow_symlinks:
            info = entry.stat(follow_symlinks=True)
            key = (info.st_dev, info.st_ino)
            if key in self._seen:
                return WalkError(
                    entry.path,
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "skipped: this folder was already scanned (a symbolic link loop, or a "
                    "second link to the same folder)",
                    complete=True,
                    folder=True,
                )
            self._seen.add(key)
        self._stack.append(entry.path)
        return None

    def _leaves_roots(self, entry: os.DirEntry[str]) -> bool:
        real = os.path.realpath(entry.path)
        return not any(is_within(real, root) for root in self._roots)


def _oddity(path: str) -> str:
    """Why a name with a video extension is not a file to probe."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "a dangling symbolic link: its target does not exist"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link loop"
        return f"cannot stat: {exc.strerror}"
    for test, kind in (
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return f"not a regular file: {kind}"
    return "not a regular file"


def _folder_error(folder: str, exc: OSError) -> WalkError:
    code = (
        grpc.StatusCode.PERMISSION_DENIED
        if isinstance(exc, PermissionError)
        else grpc.StatusCode.UNAVAILABLE
    )
    return WalkError(folder, code, f"cannot read folder: {exc.strerror or exc}", folder=True)
