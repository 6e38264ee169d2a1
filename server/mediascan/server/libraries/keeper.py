"""`Keeper`: keeps one library current on this server. It checks the root (OFFLINE while it
cannot be trusted, then one rescan when it comes back), notices changes (kernel events, or
polling), runs the rescan schedule, and turns all of it into scans: at most one of the
library's own jobs is active at a time, and changes noticed meanwhile wait for the next one."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterable

from mediascan.v1 import scan_pb2

from ..engine import AsyncJobQueue
from ..errors import MediascanError, NotFound, Unavailable
from ..jobs import ScanSpec, is_terminal
from ..store.changes import LibraryCatalog
from ..videonames import VIDEO_SUFFIXES
from ..watching import FolderWatcher, WatchMode, effective_mode
from ..watching.signals import Blind, Changed, Overflowed, RootLost, Sighted
from . import status as st
from .polling import PollLoop, poll_loop
from .rootcheck import root_problem, write_marker
from .schedule import run_schedule
from .settings import seconds

log = logging.getLogger(__name__)

#: Seconds between checks of an OFFLINE library's root.
OFFLINE_CHECK = 5.0
#: Seconds between checks of the root of a library that is not OFFLINE: some ways of losing it
#: send no event (a bind mount unmounted, a folder mounted over it), and polling sends none.
ROOT_CHECK = 5.0
#: The start of the reason of a library DEGRADED because the kernel's event queue overflowed.
OVERFLOWED = "the kernel's event queue overflowed"
#: In the reason of a library DEGRADED because some of its folders have no watch.
BLIND = st.BLIND
#: At most this many folders in one targeted rescan; beyond, the whole library is rescanned.
MAX_TARGETS = 1000

_WATCHING = {
    WatchMode.OFF: scan_pb2.WATCH_MODE_OFF,
    WatchMode.EVENTS: scan_pb2.WATCH_MODE_EVENTS,
    WatchMode.POLL: scan_pb2.WATCH_MODE_POLL,
    WatchMode.AUTO: scan_pb2.WATCH_MODE_AUTO,
}
_MODES = {number: mode for mode, number in _WATCHING.items()}

#: Seconds before a scan that could not be submitted (storage failing) is tried again.
RETRY_SUBMIT = 30.0


class RootOffline(Exception):
    """The library's root cannot be trusted now (`root_problem`)."""


class LibraryGone(Exception):
    """The library was deleted: its keeper ends."""


class Keeper:
    """One library, on the server that holds it. `jobs` submits a scan and waits for its end
    (`LibraryJobs`); `timeout` is the scans' time limit."""

    def __init__(
        self, library: scan_pb2.Library, catalog: LibraryCatalog, jobs: LibraryJobs
    ) -> None:
        self.library = library
        self.library_id = library.name.removeprefix("libraries/")
        self._catalog = catalog
        self._jobs = jobs
        self._wake = asyncio.Event()
        self._folders: set[str] = set()
        self._trees: set[str] = set()
        self._whole = False  #: rescan the whole library
        self._scheduled: bool | None = None  #: a scheduled rescan is due (True: full)
        self._blind: tuple[str, ...] = ()
        self._blind_reason = ""
        #: A whole rescan is owed to an overflow: the library is DEGRADED until one has run.
        self._overflowed = False
        self._active: asyncio.Task[None] | None = None
        self._group: asyncio.TaskGroup | None = None

    async def run(self) -> None:
        while True:
            try:
                await self._keep()
            except* RootOffline as group:
                await self._offline(str(group.exceptions[0]))

    async def _keep(self) -> None:
        library = await self._fresh()
        problem = await asyncio.to_thread(root_problem, library)
        if problem is not None:
            raise RootOffline(problem)
        await self._mark(library)
        status = library.status
        degraded = status.state == scan_pb2.LIBRARY_STATE_DEGRADED
        if degraded and status.reason.startswith(OVERFLOWED):  # its rescan may never have run
            self._overflowed = True
        mode = await asyncio.to_thread(
            effective_mode, _MODES.get(library.watch_mode, WatchMode.AUTO), library.root
        )
        watcher, problem = None, ""
        if mode is WatchMode.EVENTS:
            watcher, problem = await self._start_watcher(library)
            if watcher is None:  # no inotify instance: polled instead, and said so
                mode = WatchMode.POLL
        try:
            poll = None
            if mode is WatchMode.POLL:
                poll = self._poll_loop((library.root,))
                await poll.baseline()
            # What changed while no server kept the library (it was down, the root was offline,
            # another server held it, the settings changed) is found by one whole rescan,
            # submitted once watching or polling has begun (no change falls between the two)
            # and before the status says so.
            first = None
            if mode is not WatchMode.OFF or self._overflowed:
                first = await self._submit_first()
            await self._say_kept(status, mode, problem, watcher)
            async with asyncio.TaskGroup() as group:
                self._group = group
                group.create_task(self._submitter())
                group.create_task(self._schedule())
                group.create_task(self._check_root())
                if first is not None:
                    self._launch(*first)
                if watcher is not None:
                    group.create_task(self._watch(watcher))
                elif poll is not None:
                    group.create_task(poll.run())
        finally:
            if watcher is not None:
                watcher.close()

    async def _say_kept(
        self,
        status: scan_pb2.LibraryStatus,
        mode: WatchMode,
        problem: str,
        watcher: FolderWatcher | None,
    ) -> None:
        """Said once watching has begun: a change made after this is seen."""
        if problem:
            log.warning("library %s: %s", self.library.name, problem)
        still_blind = bool(watcher and watcher.blind)
        said = st.kept(status, _WATCHING[mode], problem, still_blind, mode is not WatchMode.OFF)
        if said is not None:
            state, reason, announce = said
            await self._set(state, reason, watching=_WATCHING[mode], announce=announce)

    # -- noticing ------------------------------------------------------------------------------

    async def _start_watcher(self, library: scan_pb2.Library) -> tuple[FolderWatcher | None, str]:
        """A started watcher; or None and why it cannot watch (the library is polled)."""
        watcher = FolderWatcher(
            library.root,
            recursive=library.recursive,
            follow_symlinks=library.follow_symlinks,
            settle_s=max(seconds(library, "quiet_window"), 0.05),
        )
        try:
            await watcher.start()
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise RootOffline(f"cannot watch the root {library.root}: {exc}") from None
        except OSError as exc:  # e.g. EMFILE: fs.inotify.max_user_instances
            return None, f"cannot watch the root ({exc}): polled every " + (
                f"{seconds(library, 'poll_interval'):g}s instead"
            )
        return watcher, ""

    async def _watch(self, watcher: FolderWatcher) -> None:
        library = self.library
        blind_poll: asyncio.Task[None] | None = None
        try:
            async for signal in watcher:
                if isinstance(signal, Changed):
                    self._add(signal.folders, signal.trees)
                elif isinstance(signal, Overflowed):
                    log.warning("library %s: %s", library.name, OVERFLOWED)
                    await self._set(
                        scan_pb2.LIBRARY_STATE_DEGRADED,
                        f"{OVERFLOWED} (fs.inotify.max_queued_events): changes were missed, so "
                        "the whole library is rescanned",
                    )
                    self._overflowed = True
                    self._rescan_whole()
                elif isinstance(signal, Blind):
                    blind_poll = await self._go_blind(signal, blind_poll)
                elif isinstance(signal, Sighted):
                    if blind_poll is not None:
                        blind_poll.cancel()
                        blind_poll = None
                    self._blind = ()
                    await self._recover(BLIND)
                elif isinstance(signal, RootLost):
                    raise RootOffline(f"the root {library.root} was {signal.reason}")
        finally:
            if blind_poll is not None:
                blind_poll.cancel()

    async def _go_blind(
        self, signal: Blind, poller: asyncio.Task[None] | None
    ) -> asyncio.Task[None]:
        reason = (
            f"{len(signal.folders)} folders {BLIND} ({signal.reason}): they are "
            f"polled every {seconds(self.library, 'poll_interval'):g}s instead"
        )
        log.warning("library %s: %s", self.library.name, reason)
        await self._set(scan_pb2.LIBRARY_STATE_DEGRADED, reason)
        self._blind, self._blind_reason = signal.folders, reason
        if poller is not None:
            poller.cancel()
        return asyncio.create_task(self._poll_blind(signal.folders))

    async def _poll_blind(self, tops: tuple[str, ...]) -> None:
        """Each blind folder tops a part of the tree that no watch covers: walked whole once
        (after the baseline of its polls, taken here, off the watch's loop), then polled."""
        poll = self._poll_loop(tops)
        await poll.baseline()
        self._add((), tops)
        await poll.run()

    def _poll_loop(self, tops: Iterable[str]) -> PollLoop:
        return poll_loop(self.library, tops, self._jobs.suffixes, self._add)

    async def _check_root(self) -> None:
        while True:
            await asyncio.sleep(ROOT_CHECK)
            problem = await asyncio.to_thread(root_problem, await self._fresh())
            if problem is not None:
                raise RootOffline(problem)

    async def _schedule(self) -> None:
        await run_schedule(self.library, self._catalog, self._due)

    def _due(self, full: bool) -> None:
        self._scheduled = full
        self._wake.set()

    # -- scanning ------------------------------------------------------------------------------

    def _add(self, folders: Iterable[str], trees: Iterable[str]) -> None:
        self._folders.update(folders)
        self._trees.update(trees)
        if len(self._folders) + len(self._trees) > MAX_TARGETS:
            self._rescan_whole()
        self._wake.set()

    def _rescan_whole(self) -> None:
        self._whole = True
        self._wake.set()

    async def _submitter(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._active is not None and not self._active.done():
                continue  # the next scan starts when this one ends (it wakes us)
            spec = self._next_spec()
            if spec is None:
                continue
            library = await self._fresh()
            problem = await asyncio.to_thread(root_problem, library)
            if problem is not None:
                raise RootOffline(problem)
            self._launch(spec)

    async def _submit_first(self) -> tuple[ScanSpec, str] | None:
        """The whole rescan that starts keeping the library, submitted: its spec and job id.
        A scheduled run still owed stays owed (it waits for other scans; this does not)."""
        self._clear()  # this rescan covers whatever was noticed so far
        spec = self._spec()
        try:
            # "" if an identical rescan is running: a new one is submitted once it has ended.
            return spec, await self._jobs.submit(spec, follow_running=False)
        except MediascanError as exc:  # the store fails, the queue refuses: later
            self._retry_later(spec, f"it could not be submitted: {exc}")
            return None

    def _launch(self, spec: ScanSpec, job_id: str = "") -> None:
        """Run `spec` (already submitted as `job_id`, if given) as the library's active job."""
        assert self._group is not None
        recovers = self._overflowed and not spec.folders and not spec.trees
        if recovers:
            self._overflowed = False  # another overflow from now on owes another
        self._active = self._group.create_task(self._run_job(spec, recovers, job_id))

    def _spec(self) -> ScanSpec:
        return self._jobs.whole_rescan(self.library)

    def _next_spec(self) -> ScanSpec | None:
        spec = self._spec()
        if self._scheduled is not None:
            full, self._scheduled = self._scheduled, None
            self._clear()
            return dataclasses.replace(spec, trigger=scan_pb2.TRIGGER_SCHEDULE, full=full)
        if self._whole:
            self._clear()
            return spec
        if self._folders or self._trees:
            folders, trees = tuple(sorted(self._folders)), tuple(sorted(self._trees))
            self._clear()
            return dataclasses.replace(spec, folders=folders, trees=trees)
        return None

    def _clear(self) -> None:
        self._whole = False
        self._folders.clear()
        self._trees.clear()

    async def _run_job(self, spec: ScanSpec, recovers: bool, job_id: str) -> None:
        """Run one scan (submitted as `job_id`, or now); `recovers`: it is the whole rescan
        owed to an overflow."""
        loop = asyncio.get_running_loop()
        try:
            if spec.trigger == scan_pb2.TRIGGER_SCHEDULE:
                await self._jobs.wait_for_others(self.library.root)
            job = await self._jobs.run(spec, job_id)
        except MediascanError as exc:  # the store fails, the queue refuses: later
            self._retry_later(spec, f"it could not run: {exc}", recovers=recovers)
            return
        finally:
            self._wake.set()  # whatever was noticed meanwhile goes next
        if job.result.deferred:  # files still changing: look again once they may be quiet
            loop.call_later(spec.quiet, self._again, spec)
        if recovers and job.state == scan_pb2.JOB_STATE_SUCCEEDED:
            await self._recover(OVERFLOWED)
        elif job.state != scan_pb2.JOB_STATE_SUCCEEDED:
            # Failed, timed out or cancelled: what it was to look at may still be unseen (a
            # poll or a watch reports a change once), so it is looked at again, later.
            state = scan_pb2.JobState.Name(job.state)  # type: ignore[arg-type]
            self._retry_later(spec, f"job {job.job_id} ended {state}", recovers=recovers)

    def _retry_later(self, spec: ScanSpec, why: str, *, recovers: bool = False) -> None:
        """Look at what `spec` was to scan again in RETRY_SUBMIT seconds; `recovers`: it was
        the whole rescan owed to an overflow, still owed."""
        self._overflowed |= recovers
        log.warning(
            "library %s: a %s scan runs again in %gs (%s)",
            self.library.name,
            scan_pb2.Trigger.Name(spec.trigger),  # type: ignore[arg-type]
            RETRY_SUBMIT,
            why,
        )
        asyncio.get_running_loop().call_later(RETRY_SUBMIT, self._again, spec)

    def _again(self, spec: ScanSpec) -> None:
        if spec.trigger == scan_pb2.TRIGGER_SCHEDULE:  # still scheduled: waits, and may be full
            self._scheduled = spec.full or bool(self._scheduled)
            self._wake.set()
        elif spec.folders or spec.trees:
            self._add(frozenset(spec.folders), frozenset(spec.trees))
        else:
            self._rescan_whole()

    # -- status --------------------------------------------------------------------------------

    async def _offline(self, reason: str) -> None:
        log.warning("library %s is OFFLINE: %s; nothing is removed", self.library.name, reason)
        await self._set(scan_pb2.LIBRARY_STATE_OFFLINE, reason)
        while True:
            await asyncio.sleep(OFFLINE_CHECK)
            library = await self._fresh()
            if await asyncio.to_thread(root_problem, library) is None:
                break
        log.info("library %s: its root is back; rescanning it", self.library.name)
        self._rescan_whole()

    async def _recover(self, cause: str) -> None:
        """The library is DEGRADED no more for `cause` (OVERFLOWED, BLIND): ACTIVE, or still
        DEGRADED for the folders that have no watch; unchanged if it is DEGRADED for another
        reason, or a whole rescan is still owed to an overflow."""
        if self._overflowed:
            return
        status = (await self._fresh()).status
        if status.state != scan_pb2.LIBRARY_STATE_DEGRADED or cause not in status.reason:
            return
        if self._blind:
            await self._set(scan_pb2.LIBRARY_STATE_DEGRADED, self._blind_reason)
        else:
            await self._set(scan_pb2.LIBRARY_STATE_ACTIVE)

    async def _set(
        self, state: int, reason: str = "", *, watching: int | None = None, announce: bool = False
    ) -> None:
        edit = st.set_state(state, reason, watching=watching)
        await st.update_status(self._catalog, self.library_id, edit, announce=announce)
        self.library.status.state = state  # type: ignore[assignment]

    async def _mark(self, library: scan_pb2.Library) -> None:
        if library.status.marker:
            return
        problem = await asyncio.to_thread(write_marker, library)
        if problem is None:
            await st.update_status(self._catalog, self.library_id, st.marked)
        else:
            log.info("library %s: %s (the marker rule does not apply)", library.name, problem)

    async def _fresh(self) -> scan_pb2.Library:
        library = await self._catalog.get_library(self.library_id)
        if library is None:
            raise LibraryGone(self.library_id)
        return library


class LibraryJobs:
    """How keepers run scans: submitted through the engine, followed to their end (on any
    server: the job's events reach every server)."""

    def __init__(
        self, queue: AsyncJobQueue, timeout: float, suffixes: frozenset[str] = VIDEO_SUFFIXES
    ) -> None:
        self._queue = queue
        #: The time limit of the libraries' scans (the server's default).
        self.timeout = timeout
        #: The server's video names (--extensions), which a library's `extensions` start from.
        self.suffixes = suffixes

    def whole_rescan(self, library: scan_pb2.Library) -> ScanSpec:
        """A whole rescan of `library` (TRIGGER_WATCH), with its settings."""
        return ScanSpec(
            path=library.root,
            recursive=library.recursive,
            follow_symlinks=library.follow_symlinks,
            timeout=self.timeout,
            priority=0,
            full=False,
            library=library.name,
            quiet=seconds(library, "quiet_window"),
            trigger=scan_pb2.TRIGGER_WATCH,
            extensions=library.extensions,
        )

    async def submit(self, spec: ScanSpec, *, follow_running: bool = True) -> str:
        """The id of the job submitted for `spec`: a new one, or an identical one still
        queued. An identical job already running is not joined (its walk may have passed what
        the keeper saw change): it is followed to its end and then a new one submitted; or,
        without `follow_running`, "" is returned at once."""
        while True:
            outcome = await self._queue.submit(spec)
            job = outcome.job
            if not outcome.deduplicated or job.state == scan_pb2.JOB_STATE_QUEUED:
                return job.job_id
            if not follow_running:
                return ""
            if is_terminal(job.state):  # just ended: the engine lets go of it in a moment
                await asyncio.sleep(0.05)
                continue
            async for _event in self._queue.watch(job.job_id, job.last_sequence):
                pass

    async def run(self, spec: ScanSpec, job_id: str = "") -> scan_pb2.Job:
        """The end of `spec`'s job: `job_id`, or one submitted now."""
        job_id = job_id or await self.submit(spec)
        async for _event in self._queue.watch(job_id, 0):
            pass  # the stream ends after the event that makes the job terminal
        job = await self._queue.get(job_id)
        if not is_terminal(job.state):
            raise Unavailable(f"job {job_id} did not end")
        return job

    async def wait_for_others(self, root: str) -> None:
        """Until no job is queued or running, on any server, that scans `root`, a folder below
        it, or a tree that holds it: a scheduled rescan does not start meanwhile."""
        while others := await self._others(root):
            for job in others:
                try:
                    async for _event in self._queue.watch(job.job_id, job.last_sequence):
                        pass
                except NotFound:  # deleted meanwhile: it ended
                    pass

    async def _others(self, root: str) -> list[scan_pb2.Job]:
        found: list[scan_pb2.Job] = []
        for state in (scan_pb2.JOB_STATE_QUEUED, scan_pb2.JOB_STATE_RUNNING):
            token = ""
            while True:
                jobs, token = await self._queue.list_jobs(
                    state=state, page_size=500, page_token=token
                )
                found.extend(job for job in jobs if _overlaps(job, root))
                if not token:
                    break
        return found


def _overlaps(job: scan_pb2.Job, root: str) -> bool:
    """Whether `job` scans files of the library at `root`."""
    inside = job.path == root or job.path.startswith(root.rstrip("/") + "/")
    holds = root.startswith(job.path.rstrip("/") + "/") and job.options.recursive
    return inside or holds
