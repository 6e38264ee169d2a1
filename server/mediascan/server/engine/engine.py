"""`JobEngine`: the facade the service uses (`AsyncJobQueue`), wiring admission, the
dispatcher, the runner, the recorder, recovery and drain over a `JobStore` and the event hub."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Protocol

from mediascan.v1 import scan_pb2

from ..config import Config
from ..errors import Code, FailedPrecondition, Unavailable, job_not_found, status_of
from ..events import EventHub
from ..jobs import JobState, ScanSpec, is_terminal
from ..logs import job_fields
from ..store import JobFeed, JobStore
from . import recovery, tokens
from .admission import Admission, SubmitOutcome
from .attempts import recovery_change_for
from .cluster import Cluster
from .ends import JobEnds
from .recorder import JobChanged, Recorder, StateListener, copy_job
from .runner import JobRunner, ScanRunner, WatchTask
from .running import ActiveJobs, Phase, RunningJob, StopReason
from .worker import Dispatcher

log = logging.getLogger(__package__)

#: Seconds CancelJob waits for the job to end; longer only when the database fails (a stopped
#: scan ends in milliseconds), and then the caller hears so instead of waiting for ever.
_CANCEL_WAIT = 8.0

#: Most bytes of jobs or file errors in one page (a default client accepts 4 MiB).
MAX_PAGE_BYTES = 2 * 1024 * 1024


class AsyncJobQueue(Protocol):
    """What the service needs from a job queue: `JobEngine` over any `JobStore`."""

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


class JobEngine:
    """The job engine of one server process."""

    def __init__(
        self,
        store: JobStore,
        hub: EventHub,
        scanner: ScanRunner,
        config: Config,
        watch_task: WatchTask | None = None,
        feed: JobFeed | None = None,
    ) -> None:
        """`feed`: the store is shared with other servers (PostgreSQL): this one holds in
        memory only the jobs it runs, and reads or asks the database for the others."""
        self.store = store
        self.hub = hub
        self.config = config
        self.jobs = ActiveJobs()
        self.recorder = Recorder(store)
        self.ends = JobEnds(
            store, self.recorder, self.jobs, hub, event_log_size=config.event_log_size
        )
        self.runner = JobRunner(self.recorder, self.ends, scanner, config, watch_task)
        self._dispatcher = Dispatcher(
            store,
            self.jobs,
            hub,
            self.recorder,
            self.runner,
            workers=config.workers,
            recheck=config.claim_recheck,
            shared=feed is not None,
        )
        self.cluster = (
            None
            if feed is None
            else Cluster(feed, self.jobs, hub, self.recorder, max_attempts=config.max_attempts)
        )
        self.admission = Admission(
            store,
            self.jobs,
            max_queued=config.max_queued,
            admit=self._admit,
            retry_delay=self.runner.retry_delay,
        )

    # -- life cycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Re-queue the jobs a previous process left unfinished, then start dispatching."""
        await recovery.recover(
            self.store,
            self.jobs,
            self.hub,
            self.recorder,
            shared=self.cluster is not None,
            requeue=recovery_change_for(self.config.max_attempts),
        )
        self._dispatcher.start()

    @property
    def dispatcher(self) -> asyncio.Task[None] | None:
        """The dispatcher's task, once started (the server watches it)."""
        return self._dispatcher.task

    @property
    def state_listeners(self) -> list[StateListener]:
        """Called with (previous state, job) after each committed state change."""
        return self.recorder.state_listeners

    @property
    def queued_count(self) -> int:
        return self.jobs.count(Phase.QUEUED)

    @property
    def running_count(self) -> int:
        """Jobs running here: their phase leaves RUNNING when they are released, in the same
        step as their terminal event is published (so a scrape after that event never counts
        them), and also when a job whose lease is lost is abandoned."""
        return self.jobs.count(Phase.RUNNING)

    def stop_accepting(self) -> None:
        self.jobs.draining = True

    async def drain(self, grace: float) -> None:
        """Shutdown: stop dispatching, let running jobs finish for `grace` seconds, then
        interrupt the rest, which are saved as QUEUED (attempt + 1) for the next start."""
        self.jobs.draining = True
        await recovery.drain(self._dispatcher, grace)

    # -- the protocol -----------------------------------------------------------------------------

    async def submit(self, spec: ScanSpec) -> SubmitOutcome:
        return await self.admission.submit(spec)

    def _admit(self, job: scan_pb2.Job, spec: ScanSpec, event: scan_pb2.JobEvent) -> None:
        """A new job is committed: make it active, publish its event 1, wake the dispatcher.
        On a shared store it stays in the database only, where any server may claim it (the
        insert notified them all)."""
        if self.cluster is not None:
            self.recorder.announce(scan_pb2.JOB_STATE_UNSPECIFIED, job)
            self._dispatcher.wake()
            return
        running = self.jobs.add(RunningJob(job, spec, self.hub.open(job)))
        self.recorder.publish_first(running, event)
        self._dispatcher.wake()
        if log.isEnabledFor(logging.DEBUG):  # not INFO: a busy server queues thousands a second
            log.debug("job %s queued: %s", job.job_id, spec.path, extra=job_fields(job))

    async def get(self, job_id: str) -> scan_pb2.Job:
        running = self.jobs.get(job_id)
        if running is not None:
            return copy_job(running.channel.job)
        job = await self.store.get_job(job_id)
        if job is None:
            raise job_not_found(job_id)
        return job

    async def cancel(self, job_id: str) -> scan_pb2.Job:
        running = self.jobs.get(job_id)
        if running is None and self.cluster is not None:  # not run here: ask the database
            job = await self.cluster.cancel(job_id, _CANCEL_WAIT)
            if job is None:
                raise job_not_found(job_id)
            return job
        if running is None:
            return await self.get(job_id)  # finished: unchanged (or NOT_FOUND)
        if running.phase is Phase.QUEUED:
            if running.stop_reason is None:
                running.stop_reason = StopReason.USER_CANCEL
                await self._cancel_queued(running)
        else:
            running.stop(StopReason.USER_CANCEL)
        try:
            async with asyncio.timeout(_CANCEL_WAIT):
                await running.done.wait()
        except TimeoutError:
            raise Unavailable(
                f"job {job_id} was told to stop, but its end cannot be stored yet (the database "
                "is failing); it ends as soon as the database recovers: watch it or GetJob it"
            ) from None
        return await self.get(job_id)

    async def _cancel_queued(self, running: RunningJob) -> None:
        """CANCELLED in the store while still QUEUED there, so no claim can take it. If a claim
        took it first, its run stops it: the phase is RUNNING before the run is launched, so a
        job seen QUEUED here has not begun its run, and the run checks the stop reason first.
        (Cancelling its task instead could interrupt the run while it stores the CANCELLED
        end, and that end would then be stored twice.)"""
        with contextlib.suppress(JobChanged):  # claimed meanwhile: its run stops it
            await self.ends.finish(
                running,
                JobState.CANCELLED,
                status_of(Code.CANCELLED, "cancelled by CancelJob before it started"),
                scan_pb2.ScanResult(),
                expect=JobState.QUEUED,
            )

    async def list_jobs(
        self, *, state: int, page_size: int, page_token: str
    ) -> tuple[list[scan_pb2.Job], str]:
        """A page of jobs: at most `page_size`, and at most MAX_PAGE_BYTES serialized (at least
        one job; a Job is far smaller by construction), so a page fits any client (AIP-158)."""
        after = tokens.decode_jobs_token(page_token, state)
        jobs = await self.store.list_jobs(state=state, limit=page_size + 1, after=after)
        more = len(jobs) > page_size
        page: list[scan_pb2.Job] = []
        size = 0
        for stored in jobs[:page_size]:
            running = self.jobs.get(stored.job_id)
            # Active jobs: the live copy is fresher than the row (same sequence, or newer).
            job = copy_job(running.channel.job) if running is not None else stored
            size += job.ByteSize() + 8
            if page and size > MAX_PAGE_BYTES:
                more = True
                break
            page.append(job)
        token = tokens.encode_jobs_token(page[-1], state) if more and page else ""
        return page, token

    async def list_file_errors(
        self, job_id: str, *, page_size: int, page_token: str
    ) -> tuple[list[scan_pb2.FileError], str]:
        """A page of a job's file errors: at most `page_size` and MAX_PAGE_BYTES."""
        after = tokens.decode_errors_token(page_token, job_id)
        if job_id not in self.jobs and await self.store.job_state(job_id) is None:
            raise job_not_found(job_id)
        errors, last = await self.store.file_errors(
            job_id, after_seq=after, limit=page_size, max_bytes=MAX_PAGE_BYTES
        )
        return errors, "" if last is None else tokens.encode_errors_token(job_id, last)

    async def delete(self, job_id: str) -> None:
        running = self.jobs.get(job_id)
        if running is not None:
            state = JobState(running.job.state).name
            raise FailedPrecondition(
                f"job {job_id} is {state}: cancel it with CancelJob, then delete it",
                reason="JOB_ACTIVE",
            )
        if not await self.store.delete_job(job_id):
            found = await self.store.job_state(job_id)
            if found is not None and not is_terminal(found[0]):  # another server's
                state = JobState(found[0]).name
                raise FailedPrecondition(
                    f"job {job_id} is {state}: cancel it with CancelJob, then delete it",
                    reason="JOB_ACTIVE",
                )
            raise job_not_found(job_id)

    def watch(self, job_id: str, after_sequence: int) -> AsyncIterator[scan_pb2.JobEvent]:
        return self.hub.watch(job_id, after_sequence)
