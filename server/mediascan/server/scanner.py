"""One scan: walk a folder, probe its video files, and write what they are into the library.

A scan first gets the library's index of its folder (`Store.library_index`: a key per video made
of its path, size and modification time). The walk runs in its own thread (os.scandir) and looks
up every video file there as it goes: a file whose key is found is unchanged since its last probe
and is only counted (unless the scan is `full`), so that an unchanged tree costs little more than a
bare walk. New and changed files go to the event loop in batches through a bounded queue, so
probing starts while the walk goes on and never more than a few batches wait in memory. Probes run
in the prober processes of `probe_pool.py`, at most `probe_concurrency` files of one scan at a
time, each with a time limit. Results are written to the library in batches (one transaction per
batch). The videos of the index the walk did not meet are the candidates for removal. Whatever is
committed stays committed when a scan is cancelled or times out.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import errno
import itertools
import os
import stat
import threading
import time
from collections.abc import Callable
from typing import NamedTuple, Protocol

import grpc

from mediascan.v1 import scan_pb2

from .errors import FailedPrecondition, NotFound, PermissionDenied
from .jobs import ScanSpec, is_within
from .probe import VIDEO_EXTENSIONS, ProbeError, ProbeResult, is_video_name
from .store import LibraryIndex, Store, VideoRow, library_key_path

_WALK_BATCH = 256  # files to probe (or entries in error) per hand-over from the walker thread
_WALK_QUEUE = 8  # batches in flight between the walker and the loop
_COMPARE_CHUNK = 1024  # entries of one folder the walker reads before comparing their files
_TALLY_BATCH = 8192  # unchanged files that make a hand-over due
_HAND_OVER_INTERVAL = 0.05  # seconds: what the walker holds reaches the loop at least this often
_WRITE_BATCH = 128  # probed files per library transaction
_WRITE_INTERVAL = 0.5  # seconds: a partial batch is written at least this often

#: ".mp4", ...: `name[name.rfind("."):].lower() in _VIDEO_SUFFIXES` is `is_video_name(name)` in
#: one slice (without a dot, the slice is the name's last character, never a suffix).
_VIDEO_SUFFIXES = frozenset("." + extension for extension in VIDEO_EXTENSIONS)

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


class FoundFile(NamedTuple):
    """A new or changed video file: the walk hands it over to be probed."""

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


@dataclasses.dataclass(slots=True)
class _Batch:
    """One hand-over from the walker: files to probe, entries in error, and the tally of the
    unchanged files met since the previous hand-over (counted, never handed over one by one)."""

    files: list[FoundFile]
    errors: list[WalkError]
    unchanged: int
    unchanged_bytes: int
    last_unchanged: str  #: the newest of them, for `current_path`
    undated: list[tuple[int, str]]  #: (dev, path) of unchanged rows stored without a device


_Item = _Batch | None  # None ends the walk
_Stat = tuple[str, int, int, int]  # a regular video file in a folder: name, size, mtime_ns, dev


class Scanner:
    """Runs scans; one instance serves every job."""

    def __init__(
        self,
        store: Store,
        prober: Prober,
        walk_executor: concurrent.futures.Executor,
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
    try:
        real = os.path.realpath(path)
    except OSError as exc:  # a part became unreadable (EACCES in readlink)
        raise FailedPrecondition(f"cannot resolve {path}: {exc.strerror}") from None
    if real != path:
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

    async def execute(self) -> None:
        loop = asyncio.get_running_loop()
        items: asyncio.Queue[_Item] = asyncio.Queue(_WALK_QUEUE)
        self._progress.phase = scan_pb2.SCAN_PHASE_DISCOVERING
        self._reporter.changed()
        index = await self._scanner._store.library_index(
            self._spec.path, recursive=self._spec.recursive
        )
        walk = _Walker(
            self._spec,
            self._scanner._roots,
            lambda item: self._hand_over(loop, items, item),
            self._stop,
            index,
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
            await self._remove_missing(walk)
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

    async def _handle(self, batch: _Batch) -> None:
        if self._failure is not None:
            raise self._failure
        progress = self._progress
        for error in batch.errors:
            self._reporter.file_error(error.path, error.code, error.message)
            if not error.folder:  # a file that failed before it could be probed
                progress.files_found += 1
                progress.files_done += 1
                progress.failed += 1
        if batch.unchanged:
            progress.files_found += batch.unchanged
            progress.files_done += batch.unchanged
            progress.unchanged += batch.unchanged
            progress.bytes_done += batch.unchanged_bytes
            progress.current_path = batch.last_unchanged
            self._update_fraction()
        progress.files_found += len(batch.files)
        if batch.undated:
            await self._scanner._store.set_devices(batch.undated)
        for found in batch.files:
            if self._failure is not None:
                raise self._failure
            await self._slots.acquire()
            task = asyncio.create_task(self._probe_one(found))
            self._probes.add(task)
            task.add_done_callback(self._probe_done)
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

    async def _remove_missing(self, walk: _Walker) -> None:
        """Forget the library's videos under the scanned folder that the walk did not meet
        (`_Walker.missing`): only after a complete walk, never on cancel or timeout."""
        if walk.missing:
            removed = await self._scanner._store.remove_videos(
                walk.missing, before_ns=self._started_ns
            )
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

    Compares every video file it finds with `index`, the library's index of the folder: a file
    whose key is there is unchanged, and its key is taken out; such a file is only counted
    (unless the scan is `full`). The path of any other file goes into `met`. Hands over batches
    of new and changed files, of entries it could not handle and of those counts to
    `hand_over`, and records in `listed` the device of every folder whose entries were all read
    without an error. With `follow_symlinks`, a link that leads outside the allowed roots is
    reported and not followed.

    Each folder is opened once and its entries are examined relative to that descriptor
    (`fstatat`), which spares the kernel a lookup of the whole path per file."""

    def __init__(
        self,
        spec: ScanSpec,
        roots: tuple[str, ...],
        hand_over: Callable[[_Item], bool],
        stop: threading.Event,
        index: LibraryIndex,
    ) -> None:
        self._spec = spec
        self._roots = roots
        self._hand_over = hand_over
        self._stop = stop
        self.index = index  # shared (a server keeps it): copied before the walk takes keys out
        self.met: set[str] = set()  # paths of the files found that the index did not match
        self.listed: dict[str, int] = {}  # folders listed completely: their device
        #: Once the walk is over: (path, device of its folder) of the videos to remove.
        self.missing: list[tuple[str, int]] = []
        self._seen: set[tuple[int, int]] = set()  # folders entered, when following links
        self._stack = [spec.path]
        # What the next hand-over carries.
        self._files: list[FoundFile] = []
        self._errors: list[WalkError] = []
        self._undated: list[tuple[int, str]] = []
        self._unchanged = 0
        self._unchanged_bytes = 0
        self._last_unchanged = ""
        self._handed_at = time.monotonic()

    def run(self) -> None:
        self.index = self.index.copy()
        if self._spec.follow_symlinks:
            root = os.stat(self._spec.path)
            self._seen.add((root.st_dev, root.st_ino))
        try:
            while self._stack:
                if self._stop.is_set() or not self._list(self._stack.pop()):
                    return
            self._find_missing()  # the walk is complete
            if self._files or self._errors or self._unchanged:
                self._send()
        finally:
            if not self._stop.is_set():
                self._hand_over(None)

    def _find_missing(self) -> None:
        """The videos of the index the walk did not meet, that may be removed: only those whose
        own folder was listed without an error (an unreadable or vanished folder wipes nothing),
        directly in the scanned folder unless the scan is recursive. The delete also checks, in
        SQL against the row as it is then, that the row's device is its folder's (an unmounted
        disk leaves its mount point, an empty folder on another device: that wipes nothing) and
        that the row was written before the scan began (an overlapping scan may have just added
        or rewritten it)."""
        root = self._spec.path
        for key in self.index.keys:  # the videos the walk did not find unchanged
            path = library_key_path(key)
            folder = os.path.dirname(path)
            listed_on = self.listed.get(folder)
            if (
                listed_on is not None
                and path not in self.met
                and (self._spec.recursive or folder == root)
            ):
                self.missing.append((path, listed_on))

    def _list(self, folder: str) -> bool:
        """Read one folder's entries, then compare its video files with the index; False when
        the scan is over and the walk must stop.

        The loop is the hot path of a rescan: a video file that is a regular file is handled
        inline, with locals only; everything else goes through `_visit`."""
        prefix = folder if folder.endswith("/") else folder + "/"
        follow = self._spec.follow_symlinks
        quick = not (follow and self._roots)  # links need no check against the roots
        suffixes = _VIDEO_SUFFIXES
        found: list[_Stat] = []
        add = found.append
        complete = True
        try:
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            try:
                device = os.fstat(fd).st_dev
                with os.scandir(fd) as listing:
                    # In chunks, so that a huge folder is compared (and reported) as it goes.
                    while True:
                        read = 0
                        for entry in itertools.islice(listing, _COMPARE_CHUNK):
                            read += 1
                            name = entry.name
                            if quick:
                                try:
                                    if name[name.rfind(".") :].lower() in suffixes:
                                        if entry.is_file(follow_symlinks=follow):
                                            info = entry.stat(follow_symlinks=follow)
                                            add((name, info.st_size, info.st_mtime_ns, info.st_dev))
                                            continue
                                    elif not entry.is_dir(follow_symlinks=follow):
                                        continue  # neither a folder nor a video
                                except OSError:
                                    pass  # _visit reports it
                            item = self._visit(entry, prefix + name)
                            if item is None:
                                continue
                            if isinstance(item, WalkError):
                                complete = complete and item.complete
                                if not self._error(item):
                                    return False
                            else:
                                add((name, item.st_size, item.st_mtime_ns, item.st_dev))
                        if read < _COMPARE_CHUNK:  # the end of the folder
                            break
                        if not self._compare(prefix, found):
                            return False
                        found = []
                        add = found.append
            finally:
                os.close(fd)
        except OSError as exc:
            self._errors.append(_folder_error(folder, exc))
        else:
            if complete:
                self.listed[folder] = device
        return self._compare(prefix, found)  # what was read, even if the listing then failed

    def _compare(self, prefix: str, found: list[_Stat]) -> bool:
        """Look up files of the folder `prefix` in the index: count the unchanged ones, collect
        the others for probing; False when the scan is over."""
        take = self.index.keys.pop
        compare = not self._spec.full
        undated = self.index.undated
        # Paths met need keeping only if the library has videos here that could be removed.
        met = self.met if self.index.keys else None
        unchanged = unchanged_bytes = 0
        last = ""
        for name, size, mtime_ns, dev in found:
            # library_key(path, size, mtime), inline: the index holds it if the file is unchanged
            if take(f"{prefix}{name}/{size}/{mtime_ns}", False):
                if compare:
                    unchanged += 1
                    unchanged_bytes += size
                    last = name
                    if undated and prefix + name in undated:  # stored without its device
                        self._undated.append((dev, prefix + name))
                    continue
            elif not _encodes(prefix + name):  # never in the library: its paths are UTF-8
                if not self._error(_not_utf8(prefix + name)):
                    return False
                continue
            elif met is not None:
                met.add(prefix + name)
            self._files.append(FoundFile(prefix + name, size, mtime_ns, dev))
            if len(self._files) >= _WALK_BATCH and not self._send():
                return False
        if unchanged:
            self._unchanged += unchanged
            self._unchanged_bytes += unchanged_bytes
            self._last_unchanged = prefix + last
        return self._send_if_due()

    def _visit(self, entry: os.DirEntry[str], path: str) -> os.stat_result | WalkError | None:
        """One folder entry at `path`: descend (None), a video file (its stat), a reported
        oddity, or None (not ours)."""
        follow = self._spec.follow_symlinks
        try:
            if follow and self._roots and entry.is_symlink() and self._leaves_roots(path):
                if not (entry.is_dir() or is_video_name(entry.name)):
                    return None
                return WalkError(
                    path,
                    grpc.StatusCode.PERMISSION_DENIED,
                    "not followed: the symbolic link leads outside the allowed roots",
                    complete=True,
                    folder=entry.is_dir(),
                )
            if entry.is_dir(follow_symlinks=follow):
                return self._enter(entry, path)
            if not is_video_name(entry.name):
                return None
            if entry.is_file(follow_symlinks=follow):
                return entry.stat(follow_symlinks=follow)
            if entry.is_symlink() and not follow:
                return None  # links are followed only when the scan asks for it
            return WalkError(
                path, grpc.StatusCode.FAILED_PRECONDITION, _oddity(path), complete=True
            )
        except OSError as exc:
            if not is_video_name(entry.name):
                return None
            if exc.errno == errno.ELOOP:
                return WalkError(
                    path, grpc.StatusCode.FAILED_PRECONDITION, "a symbolic link loop", complete=True
                )
            return WalkError(path, grpc.StatusCode.NOT_FOUND, f"cannot stat: {exc.strerror}")

    def _enter(self, entry: os.DirEntry[str], path: str) -> WalkError | None:
        if not self._spec.recursive:
            return None
        if self._spec.follow_symlinks:
            info = entry.stat(follow_symlinks=True)
            key = (info.st_dev, info.st_ino)
            if key in self._seen:
                return WalkError(
                    path,
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "skipped: this folder was already scanned (a symbolic link loop, or a "
                    "second link to the same folder)",
                    complete=True,
                    folder=True,
                )
            self._seen.add(key)
        self._stack.append(path)
        return None

    def _leaves_roots(self, path: str) -> bool:
        real = os.path.realpath(path)
        return not any(is_within(real, root) for root in self._roots)

    def _error(self, error: WalkError) -> bool:
        self._errors.append(error)
        return len(self._errors) < _WALK_BATCH or self._send()

    def _send_if_due(self) -> bool:
        """Hand over what is held if enough was counted or enough time went by since the last
        hand-over, so that progress moves during a long unchanged walk and probing starts
        early; False when the scan is over."""
        if not (self._files or self._errors or self._unchanged):
            return True
        if (
            self._unchanged >= _TALLY_BATCH
            or time.monotonic() - self._handed_at >= _HAND_OVER_INTERVAL
        ):
            return self._send()
        return True

    def _send(self) -> bool:
        batch = _Batch(
            self._files,
            self._errors,
            self._unchanged,
            self._unchanged_bytes,
            self._last_unchanged,
            self._undated,
        )
        self._files, self._errors, self._undated = [], [], []
        self._unchanged = self._unchanged_bytes = 0
        ok = self._hand_over(batch)
        self._handed_at = time.monotonic()
        return ok


def _encodes(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _not_utf8(path: str) -> WalkError:
    return WalkError(
        path.encode("utf-8", "backslashreplace").decode(),
        grpc.StatusCode.INVALID_ARGUMENT,
        "the file name is not valid UTF-8; rename it to scan it",
        complete=True,
    )


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
