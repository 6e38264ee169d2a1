"""The job queue protocol and its asyncio implementation: a bounded priority queue in front of a
pool of workers, every change committed to the store before it is acknowledged or published.

Concurrency comes from a semaphore of `workers` slots and a dict of running tasks; each job runs
in its own named task under `asyncio.timeout`. A job's timeout, a user's cancel, a shutdown and a
failure are four separate outcomes. Every state change goes through `_commit`, which checks the
transition against the state machine, assigns the next event sequence and saves the row guarded
by the expected current state, so a race can never revive a finished job.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import functools
import heapq
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Protocol, cast

import grpc
from google.rpc import status_pb2

from mediascan.v1 import scan_pb2

from .config import Config, format_duration
from .errors import (
    FailedPrecondition,
    InvalidArgument,
    MediascanError,
    ResourceExhausted,
    Unavailable,
    job_not_found,
    status_of,
    to_rpc_status,
)
from .events import EventHub, JobChannel
from .jobs import (
    SAMPLE_BYTES,
    SAMPLE_ERRORS,
    JobState,
    ScanSpec,
    bounded_error_message,
    bounded_error_path,
    check_transition,
    now_timestamp,
    spec_of,
)
from .logs import job_fields
from .scanner import Scanner
from .store import (
    DatabaseLost,
    DatabaseTimeout,
    FileErrorRows,
    InsertOutcome,
    RequestIdReused,
    StorageError,
    Store,
)

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SubmitOutcome:
    job: scan_pb2.Job
    #: True when an active job with the same path and options was returned instead.
    deduplicated: bool = False


class AsyncJobQueue(Protocol):
    """What the service needs from a job queue. `LocalJobQueue` is the in-process one; a shared
    backend (PostgreSQL with SKIP LOCKED and LISTEN/NOTIFY) can implement the same protocol."""

    async def submit(self, spec: ScanSpec) -> SubmitOutcome: ...

    async def get(self, job_id: str) -> scan_pb2.Job: ...

    async def cancel(self, job_id: str) -> scan_pb2.Job: ...

    async def list_jobs(
        self, *, state: int, page_size: int, page_token: str
    ) -> tuple[list[scan_pb2.Job], str]: ...

    async def list_file_errors(
        self, job_id: str, *, page_size: int, page_token: str
    ) -> tuple[list[scan_pb2.FileError], str]: ...

    async def delete(self, job_id: str) -> None: ...

    def watch(self, job_id: str, after_sequence: int) -> AsyncIterator[scan_pb2.JobEvent]: ...


#: Seconds CancelJob waits for the job to end; longer only when the database fails (a stopped
#: scan ends in milliseconds), and then the caller hears so instead of waiting for ever.
_CANCEL_WAIT = 8.0
#: Seconds before a job whose start could not be committed is tried again.
_RESTART_DELAY = 1.0
#: Longest time between two progress events of a running scan, however many watch it (unless
#: --progress-rate asks for fewer).
MAX_PROGRESS_INTERVAL = 5.0

#: Most bytes of jobs or file errors in one page (a default client accepts 4 MiB).
MAX_PAGE_BYTES = 2 * 1024 * 1024

USER_CANCEL = "user"
SHUTDOWN = "shutdown"


class _ActiveJob:
    """A queued or running job: its authoritative in-memory copy and what runs it."""

    def __init__(self, job: scan_pb2.Job, spec: ScanSpec, channel: JobChannel) -> None:
        self.job = job
        self.spec = spec
        self.channel = channel
        self.lock = asyncio.Lock()  # serializes commits: sequence order == commit order
        self.task: asyncio.Task[None] | None = None
        self.stop_reason: str | None = None
        self.done = asyncio.Event()


class _Reporter:
    """Collects a running scan's progress and file errors and publishes them, coalesced."""

    def __init__(self, queue: LocalJobQueue, active: _ActiveJob) -> None:
        self._queue = queue
        self._active = active
        self.progress = scan_pb2.Progress()
        self.progress.CopyFrom(active.job.progress)
        #: The first errors, for the result (at most SAMPLE_ERRORS and SAMPLE_BYTES).
        self.sample: list[scan_pb2.FileError] = []
        self._sample_bytes = 0
        self.file_errors_total = 0
        #: Errors kept for ListFileErrors so far (at most --max-file-errors).
        self.stored = 0
        #: (seq, error) not yet in the store: written with the next progress commit.
        self.unstored: list[tuple[int, scan_pb2.FileError]] = []
        self._unpublished_errors: list[scan_pb2.FileError] = []
        self._dirty = asyncio.Event()
        self._interval = 1.0 / queue.config.progress_rate

    def changed(self) -> None:
        self._dirty.set()

    def file_error(self, path: str, code: grpc.StatusCode, message: str) -> None:
        error = scan_pb2.FileError(
            path=bounded_error_path(path), status=status_of(code, bounded_error_message(message))
        )
        self.file_errors_total += 1
        if self.stored < self._queue.config.max_file_errors:
            self.unstored.append((self.stored, error))
            self.stored += 1
            size = error.ByteSize() + 4
            if len(self.sample) < SAMPLE_ERRORS and self._sample_bytes + size <= SAMPLE_BYTES:
                self.sample.append(error)
                self._sample_bytes += size
        self._unpublished_errors.append(error)
        self._dirty.set()

    def interval(self) -> float:
        """The time between two progress events: 1 / progress_rate, longer when so many watch
        that the job would send them more than progress_fanout messages a second (at most
        MAX_PROGRESS_INTERVAL). Every message costs the server tens of microseconds of CPU,
        which the scan's probers would otherwise have."""
        crowd = self._active.channel.subscribers / self._queue.config.progress_fanout
        return min(max(self._interval, crowd), max(self._interval, MAX_PROGRESS_INTERVAL))

    async def run(self) -> None:
        """Publish progress events, coalesced, while the scan changes (see `interval`)."""
        loop = asyncio.get_running_loop()
        started = loop.time()  # the RUNNING event just sent carries the first progress
        while True:
            await self._dirty.wait()
            # A window counts from the start of the last flush (a flush slowed down by a burst
            # of writes to many watchers must not lower the rate below what interval() allows),
            # and is measured again every 1 / progress_rate seconds: watchers come and go.
            while (wait := started + self.interval() - loop.time()) > 0:
                await asyncio.sleep(min(wait, self._interval))
            started = loop.time()
            await self.flush()

    async def flush(self) -> None:
        """Commit and publish what changed. A database failure costs these progress events
        (the final state carries the counts and the file errors), never the scan."""
        try:
            await self._flush()
        except StorageError as exc:
            log.warning("job %s: progress not stored: %s", self._active.job.job_id, exc)

    async def _flush(self) -> None:
        if not self._dirty.is_set():
            return
        self._dirty.clear()
        errors, self._unpublished_errors = self._unpublished_errors, []
        rows, self.unstored = self.unstored, []
        progress = scan_pb2.Progress()
        progress.CopyFrom(self.progress)
        kinds: list[dict[str, object]] = [{"file_error": e} for e in errors]
        kinds.append({"progress": progress})

        def mutate(job: scan_pb2.Job) -> None:
            job.progress.CopyFrom(progress)

        try:
            await self._queue._commit(self._active, kinds, mutate=mutate, file_errors=rows)
        except BaseException:
            self.unstored[:0] = rows  # stored with the next commit, or with the job's end
            raise

    def result(self) -> scan_pb2.ScanResult:
        p = self.progress
        return scan_pb2.ScanResult(
            files_total=p.files_done,
            added=p.added,
            updated=p.updated,
            unchanged=p.unchanged,
            removed=p.removed,
            failed=p.failed,
            bytes_total=p.bytes_done,
            file_errors=self.sample,
            file_errors_truncated=self.file_errors_total > len(self.sample),
            file_error_count=self.stored,
        )


class LocalJobQueue:
    """The asyncio job queue and worker pool of one server process."""

    def __init__(self, store: Store, hub: EventHub, scanner: Scanner, config: Config) -> None:
        self.store = store
        self.hub = hub
        self.scanner = scanner
        self.config = config
        self._active: dict[str, _ActiveJob] = {}
        self._by_dedup_key: dict[str, _ActiveJob] = {}
        #: Submits whose insert is being committed, by dedup key: an identical submit waits.
        self._submitting: dict[str, asyncio.Future[SubmitOutcome]] = {}
        self._heap: list[tuple[int, int, str]] = []
        self._queued: dict[str, _ActiveJob] = {}
        self._order = itertools.count()
        self._pending_submits = 0
        self._has_queued = asyncio.Event()
        self._slots = asyncio.Semaphore(config.workers)
        self._running: dict[asyncio.Task[None], _ActiveJob] = {}
        self._dispatcher: asyncio.Task[None] | None = None
        self._draining = False
        self._recent_durations: list[float] = []
        self._side_tasks: set[asyncio.Task[None]] = set()
        #: Called with (previous state, job) after each committed state change (e.g. metrics).
        self.state_listeners: list[Callable[[int, scan_pb2.Job], None]] = []

    # -- life cycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Re-queue the jobs a previous process left unfinished, then start dispatching."""
        for job in await self.store.active_jobs():
            spec = spec_of(job)
            active = self._register(job, spec)
            if JobState(job.state) is JobState.RUNNING:
                # Cut off by a crash: run it again (scans are idempotent).
                await self._requeue(active, "the server stopped while the job ran")
            self._enqueue(active)
            log.info(
                "recovered job %s (attempt %d) for %s",
                job.job_id,
                active.job.attempt,
                job.path,
                extra=job_fields(active.job),
            )
        self._dispatcher = asyncio.create_task(self._dispatch(), name="job-dispatcher")

    @property
    def dispatcher(self) -> asyncio.Task[None] | None:
        return self._dispatcher

    @property
    def queued_count(self) -> int:
        return len(self._queued)

    @property
    def running_count(self) -> int:
        return len(self._running)

    def stop_accepting(self) -> None:
        self._draining = True

    async def drain(self, grace: float) -> None:
        """Shutdown: stop dispatching, let running jobs finish for `grace` seconds, then interrupt
        the rest, which are saved as QUEUED (attempt + 1) for the next start."""
        self._draining = True
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            await asyncio.gather(self._dispatcher, return_exceptions=True)
        running = set(self._running)
        if running:
            log.info("waiting up to %s for %d running job(s)", format_duration(grace), len(running))
            _, still_running = await asyncio.wait(running, timeout=grace)
            for task in still_running:
                active = self._running[task]
                if active.stop_reason is None:  # else: already stopping (a user cancel)
                    active.stop_reason = SHUTDOWN
                    task.cancel()
            if still_running:
                log.info(
                    "interrupted %d job(s); they run again at the next start", len(still_running)
                )
                await asyncio.wait(still_running)

    # -- the protocol -----------------------------------------------------------------------------

    async def submit(self, spec: ScanSpec) -> SubmitOutcome:
        if self._draining:
            raise Unavailable("the server is shutting down and accepts no new scans; retry later")
        key = spec.dedup_key
        same = self._by_dedup_key.get(key)
        joined = self._submitting.get(key)
        if same is not None or joined is not None:
            if spec.request_id:
                retried = await self._earlier_request(spec)
                if retried is not None:
                    return retried
            if same is not None:
                job = same.job
            else:
                assert joined is not None
                job = (await self._await_insert(joined)).job
            if spec.request_id:
                await self.store.remember_request(spec.request_id, spec.fingerprint, job.job_id)
            return SubmitOutcome(job=job, deduplicated=True)
        if len(self._queued) + self._pending_submits >= self.config.max_queued:
            # A retry of an earlier submit returns that job (AIP-155), even when the queue is
            # full. Otherwise the insert looks the request_id up itself, in its transaction.
            retried = await self._earlier_request(spec) if spec.request_id else None
            if retried is not None:
                return retried
            raise ResourceExhausted(
                f"the queue is full ({self.config.max_queued} queued scans): retry after the "
                "delay in the RetryInfo detail",
                retry_after=self._retry_delay(),
            )
        inserted = self._insert(spec)
        self._submitting[key] = inserted
        inserted.add_done_callback(functools.partial(self._submitted, key))
        # Shielded: a client that gives up mid-insert does not stop it; the store's callback
        # registers and queues the job whether anyone still waits or not.
        return await self._await_insert(inserted)

    async def _await_insert(self, inserted: asyncio.Future[SubmitOutcome]) -> SubmitOutcome:
        """The insert's outcome, waited for at most the store's time limit: past it the insert
        may still commit, and the caller is told so."""
        try:
            return await self.store.bounded(inserted)
        except DatabaseTimeout as exc:
            raise Unavailable(
                f"{exc}: this submit may or may not have created its job; retry with the same "
                "request_id to get the job it created, if any (without a request_id a retry may "
                "create a second job)",
                reason="SUBMIT_OUTCOME_UNKNOWN",
            ) from None

    async def _earlier_request(self, spec: ScanSpec) -> SubmitOutcome | None:
        """The job an earlier submit with this request_id made (AIP-155), or None."""
        found = await self.store.find_request(spec.request_id)
        if found is None:
            return None
        job, fingerprint = found
        if fingerprint != spec.fingerprint:
            raise _request_id_reused(job.job_id)
        return self._retried(job)

    def _submitted(self, key: str, inserted: asyncio.Future[SubmitOutcome]) -> None:
        del self._submitting[key]
        _seen(inserted)  # the submit that made it raised its exception already

    def _insert(self, spec: ScanSpec) -> asyncio.Future[SubmitOutcome]:
        """Commit a new job and queue it. No task runs this: the store's future calls back.

        The returned future resolves once the job is committed and queued, or the insert
        failed; cancelling it undoes neither."""
        job = spec.new_job()
        job.last_sequence = 1
        event = _event(job.job_id, 1, state_change=_state_change(0, job))
        outcome: asyncio.Future[SubmitOutcome] = asyncio.get_running_loop().create_future()

        def stored(future: asyncio.Future[InsertOutcome]) -> None:
            self._pending_submits -= 1
            try:
                result = self._inserted(future, job, spec, event)
            except Exception as exc:
                outcome.set_exception(exc)
            else:
                outcome.set_result(result)

        self.store.insert_job(job, spec).add_done_callback(stored)
        self._pending_submits += 1
        return outcome

    def _inserted(
        self,
        future: asyncio.Future[InsertOutcome],
        job: scan_pb2.Job,
        spec: ScanSpec,
        event: scan_pb2.JobEvent,
    ) -> SubmitOutcome:
        """Queue a committed job. Job messages in `_active` and the channels are replaced,
        never changed in place, so the one `job` is shared by all three and the answer."""
        try:
            result = future.result()
        except RequestIdReused as exc:
            raise _request_id_reused(exc.job_id) from None
        if not result.created:
            return self._retried(result.job)
        if self._draining:  # shut down while the insert was committing: it runs next start
            return SubmitOutcome(job=job)
        active = self._register(job, spec)
        active.channel.publish(job, [event])
        self._changed(0, job)
        self._enqueue(active)
        if log.isEnabledFor(logging.DEBUG):  # not INFO: a busy server queues thousands a second
            log.debug("job %s queued: %s", job.job_id, spec.path, extra=job_fields(job))
        return SubmitOutcome(job=job)

    def _retried(self, job: scan_pb2.Job) -> SubmitOutcome:
        active = self._active.get(job.job_id)
        return SubmitOutcome(job=self._copy(active.job if active else job))

    async def get(self, job_id: str) -> scan_pb2.Job:
        active = self._active.get(job_id)
        if active is not None:
            return self._copy(active.channel.job)
        job = await self.store.get_job(job_id)
        if job is None:
            raise job_not_found(job_id)
        return job

    async def cancel(self, job_id: str) -> scan_pb2.Job:
        active = self._active.get(job_id)
        if active is None:
            return await self.get(job_id)  # finished: unchanged (or NOT_FOUND)
        if active.stop_reason is None:
            active.stop_reason = USER_CANCEL
            if active.task is None:
                # Still queued: cancelled at once, never started.
                self._queued.pop(job_id, None)
                await self._finish(
                    active,
                    JobState.CANCELLED,
                    status_of(
                        grpc.StatusCode.CANCELLED, "cancelled by CancelJob before it started"
                    ),
                    scan_pb2.ScanResult(),
                )
            else:
                active.task.cancel()
        try:
            await asyncio.wait_for(asyncio.shield(active.done.wait()), _CANCEL_WAIT)
        except TimeoutError:
            raise Unavailable(
                f"job {job_id} was told to stop, but its end cannot be stored yet (the database "
                "is failing); it ends as soon as the database recovers: watch it or GetJob it"
            ) from None
        return await self.get(job_id)

    async def list_jobs(
        self, *, state: int, page_size: int, page_token: str
    ) -> tuple[list[scan_pb2.Job], str]:
        """A page of jobs: at most `page_size`, and at most MAX_PAGE_BYTES serialized (at least
        one job; a Job is far smaller by construction), so a page fits any client (AIP-158)."""
        after = _decode_jobs_token(page_token, state)
        jobs = await self.store.list_jobs(state=state, limit=page_size + 1, after=after)
        more = len(jobs) > page_size
        page: list[scan_pb2.Job] = []
        size = 0
        for stored in jobs[:page_size]:
            active = self._active.get(stored.job_id)
            # Active jobs: the live copy is fresher than the row (same sequence, or newer).
            job = self._copy(active.channel.job) if active is not None else stored
            size += job.ByteSize() + 8
            if page and size > MAX_PAGE_BYTES:
                more = True
                break
            page.append(job)
        token = _encode_jobs_token(page[-1], state) if more and page else ""
        return page, token

    async def list_file_errors(
        self, job_id: str, *, page_size: int, page_token: str
    ) -> tuple[list[scan_pb2.FileError], str]:
        """A page of a job's file errors: at most `page_size` and MAX_PAGE_BYTES."""
        after = _decode_errors_token(page_token, job_id)
        if job_id not in self._active and await self.store.job_state(job_id) is None:
            raise job_not_found(job_id)
        errors, last = await self.store.file_errors(
            job_id, after_seq=after, limit=page_size, max_bytes=MAX_PAGE_BYTES
        )
        return errors, "" if last is None else _encode_errors_token(job_id, last)

    async def delete(self, job_id: str) -> None:
        active = self._active.get(job_id)
        if active is not None:
            state = JobState(active.job.state).name
            raise FailedPrecondition(
                f"job {job_id} is {state}: cancel it with CancelJob, then delete it",
                reason="JOB_ACTIVE",
            )
        if not await self.store.delete_job(job_id):
            raise job_not_found(job_id)

    def watch(self, job_id: str, after_sequence: int) -> AsyncIterator[scan_pb2.JobEvent]:
        return self.hub.watch(job_id, after_sequence)

    # -- dispatching and running -------------------------------------------------------------

    def _register(self, job: scan_pb2.Job, spec: ScanSpec) -> _ActiveJob:
        active = _ActiveJob(job, spec, self.hub.open(job))
        self._active[job.job_id] = active
        self._by_dedup_key.setdefault(spec.dedup_key, active)
        return active

    def _enqueue_again(self, active: _ActiveJob) -> None:
        """A job that could not start goes back in line, unless it ended meanwhile."""
        if active.job.job_id in self._active and active.stop_reason is None and not self._draining:
            self._enqueue(active)
        elif active.stop_reason is not None and active.job.job_id in self._active:
            self._release(active)  # cancelled or shut down while waiting: still QUEUED in the store

    def _enqueue(self, active: _ActiveJob) -> None:
        job_id = active.job.job_id
        self._queued[job_id] = active
        heapq.heappush(self._heap, (-active.spec.priority, next(self._order), job_id))
        self._has_queued.set()

    async def _next(self) -> _ActiveJob:
        while True:
            while not self._heap:
                self._has_queued.clear()
                await self._has_queued.wait()
            _, _, job_id = heapq.heappop(self._heap)
            active = self._queued.pop(job_id, None)
            if active is not None:  # else: cancelled while queued
                return active

    async def _dispatch(self) -> None:
        while True:
            await self._slots.acquire()
            try:
                active = await self._next()
            except BaseException:
                self._slots.release()
                raise
            task = asyncio.create_task(self._run(active), name=f"job-{active.job.job_id}")
            active.task = task
            self._running[task] = active
            task.add_done_callback(self._job_done)

    def _job_done(self, task: asyncio.Task[None]) -> None:
        active = self._running.pop(task, None)
        self._slots.release()
        if task.cancelled():
            if active is not None and active.job.job_id in self._active:
                # Cancelled before its first step ran: _run never saw the cancel.
                cleanup = asyncio.create_task(self._never_started(active))
                self._side_tasks.add(cleanup)
                cleanup.add_done_callback(self._side_tasks.discard)
        elif isinstance(task.exception(), DatabaseLost):  # stopped: nothing can be stored
            log.error("job task %s stopped: the database is lost", task.get_name())
        elif task.exception() is not None:
            log.error("job task %s crashed", task.get_name(), exc_info=task.exception())

    async def _never_started(self, active: _ActiveJob) -> None:
        if active.stop_reason == USER_CANCEL:
            await self._finish(
                active,
                JobState.CANCELLED,
                status_of(grpc.StatusCode.CANCELLED, "cancelled by CancelJob before it started"),
                scan_pb2.ScanResult(),
            )
        else:  # shutdown: it is still QUEUED in the store and runs at the next start
            active.channel.close()  # its watchers get UNAVAILABLE and resume after the restart
            self._release(active)

    async def _run(self, active: _ActiveJob) -> None:
        reporter = _Reporter(self, active)
        started = time.monotonic()
        try:
            try:
                await self._start(active)
            except MediascanError as exc:  # e.g. the database failed: try again later
                log.error(
                    "job %s could not start (%s); retrying in %gs",
                    active.job.job_id,
                    exc,
                    _RESTART_DELAY,
                )
                asyncio.get_running_loop().call_later(_RESTART_DELAY, self._enqueue_again, active)
                active.task = None
                return
            state, error = await self._execute(active, reporter)
        except asyncio.CancelledError:
            if active.stop_reason is None:
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            state, error = self._stopped_outcome(active)
        await asyncio.shield(reporter.flush())
        if state is JobState.QUEUED:
            await asyncio.shield(self._requeue(active, "the server shut down while the job ran"))
            active.channel.close()  # its watchers get UNAVAILABLE and resume after the restart
            self._release(active)
            return
        self._recent_durations = [*self._recent_durations[-19:], time.monotonic() - started]
        await asyncio.shield(
            self._finish(active, state, error, reporter.result(), file_errors=reporter.unstored)
        )

    async def _start(self, active: _ActiveJob) -> None:
        def mutate(job: scan_pb2.Job) -> None:
            job.start_time.CopyFrom(now_timestamp())
            job.progress.CopyFrom(scan_pb2.Progress(phase=scan_pb2.SCAN_PHASE_DISCOVERING))

        # A new attempt starts a new list of file errors.
        await self._transition(active, JobState.RUNNING, mutate=mutate, file_errors=None)
        log.info(
            "job %s running (attempt %d): %s",
            active.job.job_id,
            active.job.attempt,
            active.spec.path,
            extra=job_fields(active.job),
        )

    async def _execute(
        self, active: _ActiveJob, reporter: _Reporter
    ) -> tuple[JobState, status_pb2.Status | None]:
        publisher = asyncio.create_task(reporter.run(), name=f"progress-{active.job.job_id}")
        limit = active.spec.timeout
        try:
            async with asyncio.timeout(limit) as deadline:
                await self.scanner.scan(active.spec, active.job.job_id, reporter)
            return JobState.SUCCEEDED, None
        except TimeoutError:
            if not deadline.expired():
                raise
            return JobState.TIMED_OUT, status_of(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"the scan ran longer than its time limit of {format_duration(limit)} "
                f"(server maximum {format_duration(self.config.max_timeout)}); the counts so far "
                "are kept: submit it again with a longer timeout to finish it",
            )
        except MediascanError as exc:
            return JobState.FAILED, to_rpc_status(exc)
        except Exception:
            log.exception("job %s failed unexpectedly", active.job.job_id)
            return JobState.FAILED, status_of(
                grpc.StatusCode.INTERNAL, "the scan failed on an internal error; see the server log"
            )
        finally:
            publisher.cancel()
            await asyncio.gather(publisher, return_exceptions=True)

    def _stopped_outcome(self, active: _ActiveJob) -> tuple[JobState, status_pb2.Status | None]:
        if active.stop_reason == USER_CANCEL:
            return JobState.CANCELLED, status_of(
                grpc.StatusCode.CANCELLED, "cancelled by CancelJob; the counts so far are kept"
            )
        return JobState.QUEUED, None

    async def _requeue(self, active: _ActiveJob, why: str) -> None:
        async with active.lock:  # let a commit in flight (e.g. QUEUED -> RUNNING) land first
            if JobState(active.job.state) is not JobState.RUNNING:
                return

        def mutate(job: scan_pb2.Job) -> None:
            job.attempt += 1
            job.ClearField("start_time")
            job.progress.CopyFrom(scan_pb2.Progress())

        await self._transition(active, JobState.QUEUED, mutate=mutate)
        log.info(
            "job %s re-queued (%s); next attempt %d",
            active.job.job_id,
            why,
            active.job.attempt,
            extra=job_fields(active.job),
        )

    async def _finish(
        self,
        active: _ActiveJob,
        state: JobState,
        error: status_pb2.Status | None,
        result: scan_pb2.ScanResult,
        *,
        file_errors: FileErrorRows = (),
    ) -> None:
        def mutate(job: scan_pb2.Job) -> None:
            job.end_time.CopyFrom(now_timestamp())
            job.result.CopyFrom(result)
            job.progress.phase = scan_pb2.SCAN_PHASE_UNSPECIFIED
            job.progress.current_path = ""
            if error is not None:
                job.error.CopyFrom(error)

        try:
            await self._commit_until_stored(active, state, mutate, file_errors)
        finally:
            self._release(active)
        job = active.job
        log.info(
            "job %s %s: %d added, %d updated, %d unchanged, %d removed, %d failed",
            job.job_id,
            state.name,
            result.added,
            result.updated,
            result.unchanged,
            result.removed,
            result.failed,
            extra=job_fields(job),
        )
        try:
            await self.store.trim_events(job.job_id, self.config.event_log_size)
        except MediascanError as exc:
            log.warning("could not trim the events of job %s: %s", job.job_id, exc)

    async def _commit_until_stored(
        self,
        active: _ActiveJob,
        state: JobState,
        mutate: Callable[[scan_pb2.Job], None],
        file_errors: FileErrorRows,
    ) -> None:
        """A job's final state must reach the store: while the database fails (locked, disk
        full), try again with backoff, keeping the job (and its watchers) until it does. A
        shutdown ends the attempts: the job is still active in the store and runs again at the
        next start."""
        delay = 0.1
        while True:
            try:
                await self._transition(active, state, mutate=mutate, file_errors=file_errors)
                return
            except StorageError as exc:
                if self._draining:
                    active.channel.close()  # its watchers reconnect after the restart
                    raise
                log.error(
                    "cannot store the end of job %s (%s); trying again in %gs",
                    active.job.job_id,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _release(self, active: _ActiveJob) -> None:
        job_id = active.job.job_id
        self._active.pop(job_id, None)
        self._queued.pop(job_id, None)
        if self._by_dedup_key.get(active.spec.dedup_key) is active:
            del self._by_dedup_key[active.spec.dedup_key]
        self.hub.release(job_id)
        active.done.set()

    # -- committing changes ------------------------------------------------------------------

    async def _transition(
        self,
        active: _ActiveJob,
        target: JobState,
        *,
        mutate: Callable[[scan_pb2.Job], None] | None = None,
        file_errors: FileErrorRows | None = (),
    ) -> None:
        """Move the job to `target` (checked against the state machine), with a state event
        (and `file_errors` to store with it; None: forget the job's stored ones)."""

        def change(job: scan_pb2.Job) -> None:
            check_transition(job.state, target)
            job.state = cast(scan_pb2.JobState, int(target))
            if mutate is not None:
                mutate(job)

        await self._commit(
            active, [{"state_change": None}], mutate=change, guard=True, file_errors=file_errors
        )

    async def _commit(
        self,
        active: _ActiveJob,
        kinds: Iterable[dict[str, object]],
        *,
        mutate: Callable[[scan_pb2.Job], None] | None = None,
        guard: bool = False,
        file_errors: FileErrorRows | None = (),
    ) -> None:
        """Apply `mutate` to a copy of the job, append one event per entry of `kinds`, commit
        both (with `file_errors`; None: forget the stored ones), then publish. Runs to the end
        even if the caller is cancelled."""
        commit = asyncio.ensure_future(
            self._commit_now(active, list(kinds), mutate, guard, file_errors)
        )
        # Seen even when the caller was cancelled before it failed (no "never retrieved").
        commit.add_done_callback(_seen)
        await asyncio.shield(commit)

    async def _commit_now(
        self,
        active: _ActiveJob,
        kinds: list[dict[str, object]],
        mutate: Callable[[scan_pb2.Job], None] | None,
        guard: bool,
        file_errors: FileErrorRows | None,
    ) -> None:
        async with active.lock:
            before = active.job
            job = self._copy(before)
            if mutate is not None:
                mutate(job)
            events = []
            for kind in kinds:
                job.last_sequence += 1
                if "state_change" in kind:
                    kind = {"state_change": _state_change(before.state, job)}
                events.append(_event(job.job_id, job.last_sequence, **kind))
            if not events:
                return
            saved = await self.store.record(
                job,
                events,
                expected_state=before.state if guard else None,
                file_errors=file_errors if file_errors is not None else (),
                clear_file_errors=file_errors is None,
            )
            if not saved:
                raise Unavailable(
                    f"job {job.job_id} changed in the database behind this server's back"
                )
            active.job = job
            active.channel.publish(self._copy(job), events)
            if job.state != before.state:
                self._changed(before.state, job)

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _copy(job: scan_pb2.Job) -> scan_pb2.Job:
        copy = scan_pb2.Job()
        copy.CopyFrom(job)
        return copy

    def _changed(self, previous: int, job: scan_pb2.Job) -> None:
        for listener in self.state_listeners:
            try:
                listener(previous, job)
            except Exception:
                log.exception("a state listener failed on job %s", job.job_id)

    def _retry_delay(self) -> float:
        """A guess at when a queue slot frees up: the recent mean job time per worker."""
        if not self._recent_durations:
            return 1.0
        mean = sum(self._recent_durations) / len(self._recent_durations)
        return max(0.5, min(60.0, mean / self.config.workers))


def _seen(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception as retrieved (its caller raised it, or is gone)."""
    if not future.cancelled():
        future.exception()


def _state_change(from_state: int, job: scan_pb2.Job) -> scan_pb2.StateChange:
    return scan_pb2.StateChange(from_state=from_state, to_state=job.state, job=job)  # type: ignore[arg-type]


def _event(job_id: str, sequence: int, **kind: object) -> scan_pb2.JobEvent:
    return scan_pb2.JobEvent(
        job_id=job_id,
        sequence=sequence,
        event_time=now_timestamp(),
        **kind,  # type: ignore[arg-type]
    )


def _request_id_reused(job_id: str) -> InvalidArgument:
    return InvalidArgument(
        "request_id",
        f"already used by job {job_id} for a different request; use a new request_id for a "
        "new scan",
    )


def _encode_jobs_token(last: scan_pb2.Job, state: int) -> str:
    raw = json.dumps(
        {"c": last.create_time.ToNanoseconds(), "j": last.job_id, "s": state}, separators=(",", ":")
    )
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _encode_errors_token(job_id: str, last_seq: int) -> str:
    raw = json.dumps({"j": job_id, "n": last_seq}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_errors_token(token: str, job_id: str) -> int:
    """The seq after which the page starts (-1: the first page)."""
    if not token:
        return -1
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        token_job, last_seq = str(data["j"]), int(data["n"])
        if not 0 <= last_seq < 2**62:
            raise ValueError("out of range")
    except (ValueError, TypeError, KeyError, OverflowError):
        raise InvalidArgument(
            "page_token",
            "not a token this server issued: pass the next_page_token of the previous "
            "ListFileErrors response unchanged, or leave it empty for the first page",
        ) from None
    if token_job != job_id:
        raise InvalidArgument("page_token", "the token belongs to another job's file errors")
    return last_seq


def _decode_jobs_token(token: str, state: int) -> tuple[int, str] | None:
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        create_ns, job_id, token_state = int(data["c"]), str(data["j"]), int(data["s"])
        if not 0 <= create_ns < 2**63:
            raise ValueError("out of range")
        job_id.encode("utf-8")  # a lone surrogate from a forged token: not ours
    except (ValueError, TypeError, KeyError, OverflowError):
        raise InvalidArgument(
            "page_token",
            "not a token this server issued: pass the next_page_token of the previous "
            "ListJobs response unchanged, or leave it empty for the first page",
        ) from None
    if token_state != state:
        raise InvalidArgument(
            "page_token", "the token belongs to a listing with another state filter"
        )
    return create_ns, job_id
