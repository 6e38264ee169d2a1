"""One scan: walk a folder, probe its video files, and write what they are into the library.

A scan first gets the library's index of its folder (`LibraryStore.library_index`: a key per video
made of its path, size and modification time). The walk runs in its own thread (os.scandir) and
looks up every video file there as it goes: a file whose key is found is unchanged since its last
probe and is only counted (unless the scan is `full`), so that an unchanged tree costs little more
than a bare walk. New and changed files go to the event loop in batches through a bounded queue, so
probing starts while the walk goes on and never more than a few batches wait in memory. Probes run
in the prober processes of `probe_pool.py`, at most `probe_concurrency` files of one scan at a time,
each with a time limit. Results are written to the library in batches (one transaction per batch).
The videos of the index the walk did not meet are the candidates for removal. Whatever is committed
stays committed when a scan is cancelled or times out.

A file that moved inside the folder is matched by its fingerprint instead of probed
(`moves.py`). A DECODE scan also decodes each file it probes, and each unchanged video never
verified, in the verification probers (`verify.py`), after the file's probe slot is given back.

The walk is `walker.py`, the descriptors it opens are `open_files.py`, what it may open is
`roots.py` (the path policy) and `mounts.py` (pseudo file systems it does not enter).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Protocol

from mediascan.v1 import scan_pb2

from . import find_walk
from .decode_check import DecodeReport
from .errors import Code
from .escaping import escaped
from .find_walk import LISTING_PART, FindWalk, ListingSource
from .jobs import ScanSpec
from .libraries.guard import within_removal_limits
from .moves import Fingerprinter, Moves
from .open_files import OpenFiles, RootFolder
from .probe import ProbeError, Prober
from .probed import ProbeResult
from .roots import AllowedRoots, open_root
from .shared_scan import SharedProbes
from .store import Fence, HealthUpdate, LibraryIndex, LibraryStore, VideoRow
from .store.probe_queue import BatchOutcome, ProbeQueue
from .targets import index_tops
from .verify import Verifier, health_update, verify_file, with_health
from .videonames import VIDEO_SUFFIXES, parse_extensions
from .walker import Batch, FoundFile, Item, Walker

Walk = Walker | FindWalk

_WALK_QUEUE = 8  # batches in flight between the walker and the loop
_WRITE_BATCH = 128  # probed files per library transaction
_WRITE_INTERVAL = 0.5  # seconds: a partial batch is written at least this often
#: Files of one scan open at once beyond its probe slots: opened by the walker, waiting for a
#: probe (each file is opened once, by the walker, and its descriptor is what the prober reads).
_OPEN_AHEAD = 64

#: The status code of each reason a probe fails for (`ProbeError.reason`).
REASON_CODES = {
    "not_video": Code.INVALID_ARGUMENT,
    "corrupt": Code.DATA_LOSS,
    "unreadable": Code.PERMISSION_DENIED,
    "vanished": Code.NOT_FOUND,
    "timeout": Code.DEADLINE_EXCEEDED,
    "crashed": Code.DATA_LOSS,
    "unsupported": Code.UNIMPLEMENTED,
    "unavailable": Code.UNAVAILABLE,
    "prober_killed": Code.UNAVAILABLE,
}


class ScanReporter(Protocol):
    """Where a scan reports to; the job runner turns it into progress and file-error events."""

    progress: scan_pb2.Progress

    def changed(self) -> None:
        """Progress was updated (events are coalesced by the reporter)."""

    def file_error(self, path: str, code: Code, message: str) -> None:
        """A file or folder could not be handled."""

    def withhold(self, count: int) -> None:
        """Removals of `count` videos were withheld (a library's `removal_limit`)."""


class Scanner:
    """Runs scans; one instance serves every job."""

    def __init__(
        self,
        store: LibraryStore,
        prober: Prober,
        walk_executor: concurrent.futures.Executor,
        *,
        probe_concurrency: int,
        roots: AllowedRoots | tuple[str, ...] = (),
        suffixes: frozenset[str] = VIDEO_SUFFIXES,
        queue: ProbeQueue | None = None,
        verifier: Verifier | None = None,
        fingerprinter: Fingerprinter | None = None,
        find_walk_min: int = 0,
    ) -> None:
        """`queue`: a shared store's batches, through which every server probes each scan
        (None: this server probes its scans itself)."""
        self._parts = _Parts(
            store=store,
            prober=prober,
            walk_executor=walk_executor,
            probe_concurrency=probe_concurrency,
            #: resolved allowed roots; empty allows any folder
            roots=roots if isinstance(roots, AllowedRoots) else AllowedRoots(roots),
            suffixes=suffixes,
            queue=queue,
            verifier=verifier,
            fingerprinter=fingerprinter,
            find_walk_min=find_walk_min,
        )

    @property
    def prober(self) -> Prober:
        """What probes the files (this server's prober processes)."""
        return self._parts.prober

    async def scan(
        self, spec: ScanSpec, job_id: str, reporter: ScanReporter, *, attempt: int = 1
    ) -> None:
        """Scan `spec` for this attempt of the job (a shared store refuses the library writes
        of an attempt that is over: LeaseLost)."""
        fence = Fence(job_id, attempt)
        await self._scan_folder(spec, fence, reporter)

    async def _scan_folder(self, spec: ScanSpec, fence: Fence, reporter: ScanReporter) -> None:
        root = RootFolder(await asyncio.to_thread(open_root, spec.path))
        try:
            run = _ScanRun(self._parts, spec, fence, reporter)
            await run.execute(root)
        finally:
            root.abandon()  # closed here unless the walker took it


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class _Parts:
    """What every scan works with: passed to each run, never read from the Scanner."""

    store: LibraryStore
    prober: Prober
    walk_executor: concurrent.futures.Executor
    probe_concurrency: int
    roots: AllowedRoots
    suffixes: frozenset[str]
    queue: ProbeQueue | None
    verifier: Verifier | None  #: DECODE verification; None: DECODE scans verify nothing
    fingerprinter: Fingerprinter | None  #: a prober's fingerprint of a file; None: no moves
    #: Videos in the library below a rescanned folder from which `find` lists it; 0: never.
    find_walk_min: int


class _ScanRun:
    """One scan: the walk in its thread, the probes and the library writes on the loop."""

    def __init__(self, parts: _Parts, spec: ScanSpec, fence: Fence, reporter: ScanReporter) -> None:
        self._store = parts.store
        self._prober = parts.prober
        self._walk_executor = parts.walk_executor
        self._roots = parts.roots
        self._suffixes = parse_extensions(spec.extensions, parts.suffixes)
        self._spec = spec
        self._fence = fence
        self._job_id = fence.job_id
        self._reporter = reporter
        self._progress = reporter.progress
        self._pending: list[VideoRow] = []
        self._health: list[HealthUpdate] = []  # verifications of unchanged videos, to write
        self._verifier = parts.verifier if spec.decode else None
        fingerprinter = parts.fingerprinter
        self._moves = None if fingerprinter is None else Moves(parts.store, fingerprinter, fence)
        self._last_write = time.monotonic()
        self._write_lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(parts.probe_concurrency)
        self._probes: set[asyncio.Task[None]] = set()
        self._failure: BaseException | None = None  # the first probe task that failed
        self._stop = threading.Event()
        self._find_walk_min = parts.find_walk_min
        self._started_ns = time.time_ns()
        #: A file that changed after this is still changing: deferred (`_defer`).
        self._quiet_after = self._started_ns - round(spec.quiet * 1e9) if spec.quiet else 1 << 62
        self._open = OpenFiles(parts.probe_concurrency + _OPEN_AHEAD)
        #: Probing by every server (a shared store), or None: probed here (also a DECODE scan:
        #: only this server verifies).
        self._shared = (
            None
            if parts.queue is None or self._verifier is not None
            else SharedProbes(
                parts.queue,
                fence,
                root=spec.path,
                follow_symlinks=spec.follow_symlinks,
                apply=self._add_outcome,
            )
        )

    async def execute(self, root: RootFolder) -> None:
        loop = asyncio.get_running_loop()
        items: asyncio.Queue[Item] = asyncio.Queue(_WALK_QUEUE)
        self._progress.phase = scan_pb2.SCAN_PHASE_DISCOVERING
        self._reporter.changed()
        walk = await self._walk(lambda item: self._hand_over(loop, items, item), root)
        walker = loop.run_in_executor(self._walk_executor, walk.run)
        try:
            while (batch := await items.get()) is not None:
                await self._handle(batch)
            await walker  # re-raises a walker crash
            self._progress.files_total = self._progress.files_found
            self._progress.phase = scan_pb2.SCAN_PHASE_PROBING
            self._update_fraction()
            self._reporter.changed()
            if self._shared is not None:
                await self._shared.finish()
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
                if self._shared is not None:
                    await asyncio.shield(self._shared.close())
                with contextlib.suppress(Exception):  # a walker crash was raised above already
                    await asyncio.shield(walker)
            finally:
                self._open.close_all()  # the files handed over and never probed

    async def _walk(self, hand_over: Callable[[Item], bool], root: RootFolder) -> Walk:
        """The walk of this scan: with `find` (`find_walk.py`) for a whole rescan of a folder
        with at least `find_walk_min` videos in the library, else the Python walk of
        `walker.py` with the library's index of the folder."""
        spec = self._spec
        store = self._store
        by_find = False
        if self._find_walk_min and find_walk.eligible(spec):
            count = await store.library_count(spec.path, limit=self._find_walk_min)
            by_find = count >= self._find_walk_min and await asyncio.to_thread(
                find_walk.usable, spec.path
            )
        index = None if by_find else await library_index(store, spec)
        if self._shared is not None:
            await self._shared.start()
        if index is None:
            return FindWalk(
                spec,
                self._roots,
                hand_over,
                self._stop,
                self._listing_source(asyncio.get_running_loop()),
                root=root.take,
                files=self._open,
                suffixes=self._suffixes,
            )
        return Walker(
            spec,
            self._roots,
            hand_over,
            self._stop,
            index,
            root=root.take,
            files=self._open,
            suffixes=self._suffixes,
        )

    def _listing_source(self, loop: asyncio.AbstractEventLoop) -> ListingSource:
        """The library's listing of the scanned folder, for a find walk's thread."""
        store, path = self._store, self._spec.path
        extensions = sorted(self._suffixes)  # a name with none of them is no video here

        def bounds() -> concurrent.futures.Future[list[str]]:
            read = store.library_bounds(path, every=LISTING_PART)
            return asyncio.run_coroutine_threadsafe(read, loop)

        def part(after: str, upto: str) -> find_walk.Part:
            read = store.library_listing(path, after=after, upto=upto, extensions=extensions)
            return asyncio.run_coroutine_threadsafe(read, loop)

        return ListingSource(bounds, part)

    def _hand_over(
        self, loop: asyncio.AbstractEventLoop, items: asyncio.Queue[Item], item: Item
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

    async def _handle(self, batch: Batch) -> None:
        if self._failure is not None:
            raise self._failure
        progress = self._progress
        for error in batch.errors:
            path, message = escaped(error.path, error.message)
            self._reporter.file_error(path, error.code, message)
            if not error.folder:  # a file that failed before it could be probed
                progress.files_found += 1
                progress.files_done += 1
                progress.failed += 1
        if batch.unchanged or batch.unchanged_bytes:
            progress.files_found += batch.unchanged
            progress.files_done += batch.unchanged
            progress.unchanged += batch.unchanged
            progress.bytes_done += batch.unchanged_bytes
            if batch.last_unchanged:
                progress.current_path = batch.last_unchanged
            self._update_fraction()
        progress.files_found += len(batch.files)
        if batch.undated:
            undated = [(self._device_key(dev, path), path) for dev, path in batch.undated]
            await self._store.set_devices(undated, fence=self._fence)
        for found in batch.files:
            if found.changed_ns > self._quiet_after and not (found.verify_only or found.moved_from):
                self._defer(found)
                continue
            if self._shared is not None and not found.moved_from:
                self._open.close(found.fd)  # probed by whichever server claims it
                await self._shared.add(found)
                continue
            if self._shared is not None:  # a move candidate: fingerprinted here
                found = found._replace(dev=self._device_key(found.dev, found.path))
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
        slot = True  # the probe slot, given back before a long decode
        result: ProbeResult | None = None
        try:
            if found.size == 0:
                raise ProbeError("corrupt", "the file is empty (0 bytes)")
            if self._moves is not None and await self._moves.match(found):
                self._done(found)  # moved (or copied): settled at the end of the walk
                return
            if not found.verify_only:
                result = await self._prober.probe(found.fd, found.path)
            self._slots.release()
            slot = False
            report = await self._verify(found, result)
        except ProbeError as exc:
            self._progress.failed += 1
            self._reporter.file_error(
                found.path, REASON_CODES.get(exc.reason, Code.UNKNOWN), exc.message
            )
            self._done(found)
            return
        finally:
            self._open.close(found.fd)
            if slot:
                self._slots.release()
        if result is None:  # an unchanged video, verified
            if report is not None:
                self._health.append(health_update(found.path, found.size, found.mtime_ns, report))
            self._progress.unchanged += 1
        else:
            row = video_row(found.path, found.size, found.mtime_ns, found.dev, result, self._job_id)
            self._pending.append(row if report is None else with_health(row, report))
        self._done(found)
        await self._write(force=False)

    async def _verify(self, found: FoundFile, result: ProbeResult | None) -> DecodeReport | None:
        if self._verifier is None:
            return None
        if result is None:
            stored = (await self._store.video_rows([found.path])).get(found.path)
            duration_ns = stored.duration_ns if stored is not None else 0
        else:
            duration_ns = result.duration_ns
        return await verify_file(self._verifier, found, duration_ns, self._reporter)

    async def _remove_missing(self, walk: Walk) -> None:
        """Settle the files held as moved (`moves.py`), then forget the library's videos under
        the scanned folder that the walk did not meet and that did not move (`Walker.missing`):
        only after a complete walk, never on cancel or timeout."""
        missing = [(path, self._device_key(dev, path)) for path, dev in walk.missing]
        if self._moves is not None:
            outcome = await self._moves.finish(missing, before_ns=self._started_ns)
            missing = outcome.missing
            self._progress.moved += outcome.moved
            if outcome.copies:
                self._pending.extend(outcome.copies)
                await self._write(force=True)
            self._reporter.changed()
        if missing and not self._spec.force:
            missing = await within_removal_limits(self._store, missing, self._spec, self._reporter)
        if missing:
            removed = await self._store.remove_videos(
                missing, before_ns=self._started_ns, fence=self._fence
            )
            self._progress.removed += removed
            self._reporter.changed()

    def _device_key(self, dev: int, path: str) -> int:
        """How the library names the file system (`st_dev`, or a shared store's key)."""
        return dev if self._shared is None else self._shared.device_key(dev, path)

    def _add_outcome(self, outcome: BatchOutcome) -> None:
        """A batch some server probed for this scan (`SharedProbes`)."""
        progress = self._progress
        for path, code, message in outcome.errors:
            self._reporter.file_error(path, Code(code), message)
        progress.files_done += outcome.done
        progress.bytes_done += outcome.bytes_done
        progress.added += outcome.added
        progress.updated += outcome.updated
        progress.failed += outcome.failed
        if outcome.last_path:
            progress.current_path = outcome.last_path
        self._update_fraction()
        self._reporter.changed()

    def _defer(self, found: FoundFile) -> None:
        """A file still changing (within the quiet window): not probed now, nor removed."""
        self._open.close(found.fd)
        self._progress.deferred += 1
        self._done(found)

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
        held = len(self._pending) + len(self._health)
        due = held >= _WRITE_BATCH or (time.monotonic() - self._last_write >= _WRITE_INTERVAL)
        if not held or not (force or due):
            return
        # Shielded: a cancel must not separate a committed batch from its counts.
        await asyncio.shield(self._write_pending())

    async def _write_pending(self) -> None:
        async with self._write_lock:
            rows, self._pending = self._pending, []
            health, self._health = self._health, []
            if health:
                self._last_write = time.monotonic()
                await self._store.set_health(health, fence=self._fence)
            if not rows:
                return
            self._last_write = time.monotonic()
            added, updated = await self._store.upsert_videos(rows, fence=self._fence)
            self._progress.added += added
            self._progress.updated += updated
            self._reporter.changed()


def video_row(
    path: str, size: int, mtime_ns: int, dev: int, result: ProbeResult, job_id: str
) -> VideoRow:
    """The library's row of a file probed for a job; `dev` names its file system."""
    return VideoRow(
        path=path,
        size_bytes=size,
        mtime_ns=mtime_ns,
        **dataclasses.asdict(result),  # the probed metadata, field for field
        probe_ns=time.time_ns(),
        job_id=job_id,
        dev=dev,
    )


async def library_index(store: LibraryStore, spec: ScanSpec) -> LibraryIndex:
    """The library's index of what the scan compares: for a targeted rescan, the videos below
    its target folders and trees only (a watch's rescan of one folder does not read the whole
    library's); else everything below the scanned folder."""
    tops = index_tops(spec.path, spec.folders, spec.trees) if spec.recursive else None
    if tops is None:
        return await store.library_index(spec.path, recursive=spec.recursive)
    parts = [await store.library_index(top, recursive=True) for top in tops]
    if len(parts) == 1:
        return parts[0]  # shared, as the store's: the walk copies it
    keys: dict[str, bool] = {}
    undated: set[str] = set()
    for part in parts:
        keys.update(part.keys)
        undated.update(part.undated)
    return LibraryIndex(keys, undated)
