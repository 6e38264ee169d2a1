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

from .errors import FailedPrecondition, NotFound, PermissionDenied, Unavailable
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
#: Files of one scan open at once beyond its probe slots: opened by the walker, waiting for a
#: probe (each file is opened once, by the walker, and its descriptor is what the prober reads).
_OPEN_AHEAD = 64
#: A walker that found every descriptor of its scan in use waits until this many are free.
_REOPEN_AT = 16

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
#: O_NONBLOCK: a FIFO swapped in after the listing does not block the open; O_NOCTTY: a terminal
#: never becomes the server's.
_FILE_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
#: Out of descriptors: the server's limit (EMFILE) or the system's (ENFILE).
_TOO_MANY_FILES = frozenset({errno.EMFILE, errno.ENFILE})

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
    "unavailable": grpc.StatusCode.UNAVAILABLE,
}


class Prober(Protocol):
    """Probes one file (e.g. `ProbePool`): reads the open descriptor `fd` (kept open by the
    caller until the answer), never `path` (named in messages); raises ProbeError when it is not
    a usable video."""

    async def probe(self, fd: int, path: str) -> ProbeResult: ...


class ScanReporter(Protocol):
    """Where a scan reports to; the job runner turns it into progress and file-error events."""

    progress: scan_pb2.Progress

    def changed(self) -> None:
        """Progress was updated (events are coalesced by the reporter)."""

    def file_error(self, path: str, code: grpc.StatusCode, message: str) -> None:
        """A file or folder could not be handled."""


class FoundFile(NamedTuple):
    """A new or changed video file, opened by the walk (`fd`, a regular file) and handed over
    to be probed; size, time and device are those of the file opened."""

    path: str
    size: int
    mtime_ns: int
    dev: int
    fd: int


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
        root = _RootFolder(await asyncio.to_thread(_open_root, spec.path))
        try:
            run = _ScanRun(self, spec, job_id, reporter)
            await run.execute(root)
        finally:
            root.abandon()  # closed here unless the walker took it


def _open_root(path: str) -> int:
    """Open the scanned folder, which must still be what was accepted at submit time: the
    walk reads everything relative to this descriptor."""
    try:
        fd = os.open(path, _DIR_FLAGS)
    except FileNotFoundError:
        raise NotFound(f"{path} no longer exists") from None
    except NotADirectoryError:
        raise FailedPrecondition(f"{path} is no longer a folder") from None
    except OSError as exc:
        if exc.errno in _TOO_MANY_FILES:
            raise Unavailable(
                f"cannot open {path}: {exc.strerror} (the server is at its limit of open "
                "files); retry later",
                reason="TOO_MANY_OPEN_FILES",
            ) from None
        raise FailedPrecondition(f"cannot read {path}: {exc.strerror}") from None
    if _opened_path(fd) != path:
        os.close(fd)
        raise PermissionDenied(
            f"{path} changed into a symbolic link after the scan was accepted; submit the "
            "scan again with the real folder"
        )
    return fd


def _opened_path(fd: int) -> str:
    """The real path of what `fd` refers to, as the kernel names it."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


class _RootFolder:
    """The scanned folder's descriptor: taken by the walker thread (which closes it), or closed
    by the scan if the walker never started."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd
        self._lock = threading.Lock()

    def take(self) -> int | None:
        with self._lock:
            fd, self._fd = self._fd, None
            return fd

    def abandon(self) -> None:
        fd = self.take()
        if fd is not None:
            os.close(fd)


class _OpenFiles:
    """The files of one scan the walker opened and nobody closed yet: at most `limit` at once.
    The walker thread reserves a place, opens the file and adds it; the loop closes each once
    its probe is answered; `close_all` closes the rest when the scan ends, however it ends."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._fds: set[int] = set()
        self._reserved = 0
        self._closed = False
        self._change = threading.Condition()

    def reserve(self, stop: threading.Event, *, wait: bool) -> bool:
        """Reserve the place of one more open file; without `wait`, False if none is free.
        With it, wait until `_REOPEN_AT` are free (so that the walker hands files over in
        batches), or until the scan is over (False)."""
        with self._change:
            while not (self._closed or stop.is_set()):
                used = len(self._fds) + self._reserved
                if used + (min(_REOPEN_AT, self._limit) if wait else 1) <= self._limit:
                    self._reserved += 1
                    return True
                if not wait:
                    return False
                self._change.wait(0.2)
            return False

    def add(self, fd: int) -> bool:
        """Turn a reservation into the open file `fd`; False (and `fd` closed) when the scan is
        over."""
        with self._change:
            self._reserved -= 1
            if not self._closed:
                self._fds.add(fd)
                return True
        os.close(fd)
        return False

    def release(self) -> None:
        """Give a reservation back (the open failed)."""
        with self._change:
            self._reserved -= 1
            self._change.notify()

    def close(self, fd: int) -> None:
        with self._change:
            if fd in self._fds:
                self._fds.discard(fd)
                os.close(fd)
                self._change.notify()

    def close_all(self) -> None:
        with self._change:
            self._closed = True
            for fd in self._fds:
                os.close(fd)
            self._fds.clear()
            self._change.notify_all()


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
        self._open = _OpenFiles(scanner._probe_concurrency + _OPEN_AHEAD)

    async def execute(self, root: _RootFolder) -> None:
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
            root=root.take,
            files=self._open,
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
            try:
                await asyncio.shield(self._write_pending())
                with contextlib.suppress(Exception):  # a walker crash was raised above already
                    await asyncio.shield(walker)
            finally:
                self._open.close_all()  # the files handed over and never probed

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
            self._reporter.file_error(*_shown(error))
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
            result = await self._scanner._prober.probe(found.fd, found.path)
        except ProbeError as exc:
            self._progress.failed += 1
            self._reporter.file_error(
                found.path, _REASON_CODES.get(exc.reason, grpc.StatusCode.UNKNOWN), exc.message
            )
            self._done(found)
            return
        finally:
            self._open.close(found.fd)
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


class _Folder:
    """A folder the walker opened: its descriptor stays open while it is listed and while
    subfolders found in it wait to be opened relative to it."""

    __slots__ = ("fd", "path", "prefix", "users")

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path
        self.prefix = path if path.endswith("/") else path + "/"
        self.users = 1  # its listing, then one per subfolder still to open


class _Walker:
    """Depth-first walk of a scan's folder, run in a worker thread.

    Compares every video file it finds with `index`, the library's index of the folder: a file
    whose key is there is unchanged, and its key is taken out; such a file is only counted
    (unless the scan is `full`). The path of any other file goes into `met`. Hands over batches
    of new and changed files, of entries it could not handle and of those counts to
    `hand_over`, and records in `listed` the device of every folder whose entries were all read
    without an error.

    Nothing is ever looked up by its whole path: the scanned folder is the open descriptor
    `root` returns, each subfolder is opened relative to its parent's descriptor and each file
    to probe relative to its folder's, without following a symbolic link (`O_NOFOLLOW`) unless
    the scan follows links. A file is opened here, once, checked to be a regular file with
    `fstat`, and its descriptor is what the prober reads, so an entry swapped for a link during
    the scan is reported, never followed out of the allowed roots. With `follow_symlinks`, what
    a link led to is checked against the allowed roots once opened, before anything is read."""

    def __init__(
        self,
        spec: ScanSpec,
        roots: tuple[str, ...],
        hand_over: Callable[[_Item], bool],
        stop: threading.Event,
        index: LibraryIndex,
        *,
        root: Callable[[], int | None],
        files: _OpenFiles,
    ) -> None:
        self._spec = spec
        self._roots = roots
        self._hand_over = hand_over
        self._stop = stop
        self._root = root
        self._open = files
        self.index = index  # shared (a server keeps it): copied before the walk takes keys out
        self.met: set[str] = set()  # paths of the files found that the index did not match
        self.listed: dict[str, int] = {}  # folders listed completely: their device
        #: Once the walk is over: (path, device of its folder) of the videos to remove.
        self.missing: list[tuple[str, int]] = []
        self._seen: set[tuple[int, int]] = set()  # folders entered, when following links
        self._stack: list[tuple[_Folder, str]] = []  # (parent, name) of folders to open
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
        fd = self._root()
        try:
            if fd is None or not self._walk(_Folder(fd, self._spec.path)):
                return
            self._find_missing()  # the walk is complete
            if self._files or self._errors or self._unchanged:
                self._send()
        finally:
            while self._stack:  # the walk stopped early: close the folders still held open
                self._leave(self._stack.pop()[0])
            for found in self._files:  # opened, never handed over
                self._open.close(found.fd)
            if not self._stop.is_set():
                self._hand_over(None)

    def _walk(self, root: _Folder) -> bool:
        if self._spec.follow_symlinks:
            info = os.fstat(root.fd)
            self._seen.add((info.st_dev, info.st_ino))
        if not self._list(root):
            return False
        while self._stack:
            if self._stop.is_set():
                return False
            parent, name = self._stack.pop()
            folder = self._open_folder(parent, name)
            self._leave(parent)
            if folder is not None and not self._list(folder):
                return False
        return True

    def _leave(self, folder: _Folder) -> None:
        folder.users -= 1
        if folder.users == 0:
            os.close(folder.fd)

    def _open_folder(self, parent: _Folder, name: str) -> _Folder | None:
        """Open a subfolder relative to its parent; None (reported) if it cannot be walked."""
        path = parent.prefix + name
        follow = self._spec.follow_symlinks
        try:
            fd = os.open(name, _DIR_FLAGS | (0 if follow else os.O_NOFOLLOW), dir_fd=parent.fd)
        except OSError as exc:
            self._error(_folder_error(path, exc, follow=follow))
            return None
        try:
            problem = self._check_folder(fd, path) if follow else None
        except OSError as exc:
            problem = _folder_error(path, exc, follow=follow)
        if problem is not None:
            os.close(fd)
            self._error(problem)
            return None
        return _Folder(fd, path)

    def _check_folder(self, fd: int, path: str) -> WalkError | None:
        """With `follow_symlinks`: what a link led to must lie inside the allowed roots and must
        not have been walked already."""
        if self._roots and not self._inside_roots(fd):
            return WalkError(
                path, grpc.StatusCode.PERMISSION_DENIED, _OUTSIDE, complete=True, folder=True
            )
        info = os.fstat(fd)
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
        return None

    def _inside_roots(self, fd: int) -> bool:
        real = _opened_path(fd)
        return any(is_within(real, root) for root in self._roots)

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

    def _list(self, folder: _Folder) -> bool:
        """Read one folder's entries, compare its video files with the index and open those to
        probe; False when the scan is over and the walk must stop. Leaves the folder."""
        try:
            return self._read(folder)
        finally:
            self._leave(folder)

    def _read(self, folder: _Folder) -> bool:
        """The loop is the hot path of a rescan: a video file that is a regular file is handled
        inline, with locals only; everything else goes through `_visit`."""
        follow = self._spec.follow_symlinks
        quick = not (follow and self._roots)  # links need no check against the roots
        suffixes = _VIDEO_SUFFIXES
        found: list[_Stat] = []
        add = found.append
        complete = True
        try:
            device = os.fstat(folder.fd).st_dev
            with os.scandir(folder.fd) as listing:
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
                        item = self._visit(entry, folder)
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
                    if not self._compare(folder, found):
                        return False
                    found = []
                    add = found.append
        except OSError as exc:
            self._errors.append(_folder_error(folder.path, exc))
        else:
            if complete:
                self.listed[folder.path] = device
        return self._compare(folder, found)  # what was read, even if the listing then failed

    def _compare(self, folder: _Folder, found: list[_Stat]) -> bool:
        """Look up files of `folder` in the index: count the unchanged ones, open the others
        for probing; False when the scan is over."""
        prefix = folder.prefix
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
            if not self._open_file(folder, name):
                return False
        if unchanged:
            self._unchanged += unchanged
            self._unchanged_bytes += unchanged_bytes
            self._last_unchanged = prefix + last
        return self._send_if_due()

    def _open_file(self, folder: _Folder, name: str) -> bool:
        """Open a file to probe relative to its folder and keep it for the next hand-over, or
        report why it cannot be probed; False when the scan is over."""
        if not self._open.reserve(self._stop, wait=False):
            # Every descriptor of the scan is taken: hand over what is held, so that probes
            # can go on and close theirs, and wait for some.
            if self._files and not self._send():
                return False
            if not self._open.reserve(self._stop, wait=True):
                return False
        path = folder.prefix + name
        follow = self._spec.follow_symlinks
        try:
            fd = os.open(name, _FILE_FLAGS | (0 if follow else os.O_NOFOLLOW), dir_fd=folder.fd)
        except OSError as exc:
            self._open.release()
            return self._error(_file_error(path, exc, follow=follow))
        try:
            info = os.fstat(fd)
            problem = _not_regular(path, info.st_mode)
            if problem is None and follow and self._roots and not self._inside_roots(fd):
                problem = WalkError(
                    path, grpc.StatusCode.PERMISSION_DENIED, _OUTSIDE, complete=True
                )
        except OSError as exc:
            problem = _file_error(path, exc, follow=follow)
        if problem is not None:
            os.close(fd)
            self._open.release()
            return self._error(problem)
        if not self._open.add(fd):
            return False
        self._files.append(FoundFile(path, info.st_size, info.st_mtime_ns, info.st_dev, fd))
        return len(self._files) < _WALK_BATCH or self._send()

    def _visit(self, entry: os.DirEntry[str], folder: _Folder) -> os.stat_result | WalkError | None:
        """One folder entry: descend (None), a video file (its stat), a reported oddity, or
        None (not ours). A link is followed only when the scan asks for it, and then what it
        leads to is checked when it is opened (`_open_folder`, `_open_file`)."""
        follow = self._spec.follow_symlinks
        path = folder.prefix + entry.name
        try:
            if entry.is_dir(follow_symlinks=follow):
                return self._enter(entry, folder)
            if not is_video_name(entry.name):
                return None
            if entry.is_file(follow_symlinks=follow):
                return entry.stat(follow_symlinks=follow)
            if entry.is_symlink() and not follow:
                return None  # links are followed only when the scan asks for it
            mode = entry.stat(follow_symlinks=follow).st_mode
            return WalkError(
                path, grpc.StatusCode.FAILED_PRECONDITION, _kind_of(mode), complete=True
            )
        except OSError as exc:
            if not is_video_name(entry.name):
                return None
            if exc.errno == errno.ELOOP:
                return WalkError(
                    path, grpc.StatusCode.FAILED_PRECONDITION, "a symbolic link loop", complete=True
                )
            if follow and isinstance(exc, FileNotFoundError) and entry.is_symlink():
                return WalkError(
                    path,
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "a dangling symbolic link: its target does not exist",
                    complete=True,
                )
            return WalkError(path, grpc.StatusCode.NOT_FOUND, f"cannot stat: {exc.strerror}")

    def _enter(self, entry: os.DirEntry[str], folder: _Folder) -> WalkError | None:
        if self._spec.recursive:
            folder.users += 1
            self._stack.append((folder, entry.name))
        return None

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


_OUTSIDE = "not followed: the symbolic link leads outside the allowed roots"
_SWAPPED = "was replaced by a symbolic link during the scan; not followed"


def _encodes(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def escape_path(path: str) -> str:
    """A path as valid UTF-8, losslessly: a name that is not UTF-8 (Python keeps its bytes as
    surrogate escapes) has each undecodable byte written `\\xHH` and each backslash doubled;
    a path that is UTF-8 is returned as it is."""
    if _encodes(path):
        return path
    raw = os.fsencode(path).replace(b"\\", b"\\\\")
    return raw.decode("utf-8", "backslashreplace")


def _shown(error: WalkError) -> tuple[str, grpc.StatusCode, str]:
    """What the job reports for a walk error: a path that is not UTF-8 is escaped (gRPC strings
    must be UTF-8), and the message says so."""
    if _encodes(error.path):
        return error.path, error.code, error.message
    return (
        escape_path(error.path),
        error.code,
        f"{error.message} (the path is not valid UTF-8: shown with \\xHH for each "
        "undecodable byte and \\\\ for each backslash)",
    )


def _not_utf8(path: str) -> WalkError:
    return WalkError(
        path,
        grpc.StatusCode.INVALID_ARGUMENT,
        "a video whose name is not valid UTF-8 is not scanned; rename it to scan it",
        complete=True,
    )


def _kind_of(mode: int) -> str:
    """Why an entry with a video extension is not a file to probe."""
    for test, kind in (
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a folder"),
    ):
        if test(mode):
            return f"not a regular file: {kind}"
    return "not a regular file"


def _not_regular(path: str, mode: int) -> WalkError | None:
    """A file opened to probe that is not a regular file: it was swapped during the scan."""
    if stat.S_ISREG(mode):
        return None
    return WalkError(
        path,
        grpc.StatusCode.FAILED_PRECONDITION,
        f"was replaced during the scan by something that is {_kind_of(mode)[4:]}; not probed",
        complete=True,
    )


def _file_error(path: str, exc: OSError, *, follow: bool) -> WalkError:
    """Why a file the walk listed could not be opened to probe."""
    if exc.errno == errno.ELOOP:
        message = "a symbolic link loop" if follow else _SWAPPED
        return WalkError(path, grpc.StatusCode.FAILED_PRECONDITION, message, complete=True)
    if isinstance(exc, FileNotFoundError):
        return WalkError(
            path, grpc.StatusCode.NOT_FOUND, "the file vanished before it could be probed"
        )
    if isinstance(exc, PermissionError):
        code = grpc.StatusCode.PERMISSION_DENIED
    elif exc.errno in _TOO_MANY_FILES:
        code = grpc.StatusCode.RESOURCE_EXHAUSTED
    else:
        code = grpc.StatusCode.UNAVAILABLE
    return WalkError(path, code, f"cannot open the file: {exc.strerror or exc}")


def _folder_error(folder: str, exc: OSError, *, follow: bool = True) -> WalkError:
    if not follow and exc.errno == errno.ELOOP:
        return WalkError(
            folder, grpc.StatusCode.FAILED_PRECONDITION, f"the folder {_SWAPPED}", folder=True
        )
    if exc.errno == errno.ENOTDIR:
        return WalkError(
            folder,
            grpc.StatusCode.FAILED_PRECONDITION,
            "the folder was replaced by a file during the scan; not scanned",
            folder=True,
        )
    if isinstance(exc, FileNotFoundError):
        return WalkError(
            folder, grpc.StatusCode.NOT_FOUND, "the folder vanished during the scan", folder=True
        )
    if isinstance(exc, PermissionError):
        code = grpc.StatusCode.PERMISSION_DENIED
    elif exc.errno in _TOO_MANY_FILES:
        code = grpc.StatusCode.RESOURCE_EXHAUSTED
    else:
        code = grpc.StatusCode.UNAVAILABLE
    return WalkError(folder, code, f"cannot read folder: {exc.strerror or exc}", folder=True)
