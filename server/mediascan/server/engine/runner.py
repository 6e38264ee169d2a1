"""Running one claimed job: its scan under `asyncio.timeout`, and the four ways it ends (done,
timed out, stopped by a user's cancel or a shutdown, failed), each with its own outcome."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from google.rpc import status_pb2

from mediascan.v1 import scan_pb2

from ..config import Config, format_duration
from ..errors import Code, MediascanError, status_of, to_rpc_status
from ..jobs import JobState, ScanSpec
from ..logs import job_fields
from ..store import LeaseLost
from ..store.waits import seen
from .ends import JobEnds
from .recorder import Recorder
from .reporter import Reporter
from .running import RunningJob, StopReason

log = logging.getLogger(__package__)

#: Watches a task of one job (`Supervisor.watch_task(task, may_end=True)`): an exception
#: it raises is reported, so that a progress reporter never dies silently.
WatchTask = Callable[["asyncio.Task[Any]"], object]

Outcome = tuple[JobState, status_pb2.Status | None]


class ScanRunner(Protocol):
    """What runs a job's scan (`scanner.Scanner`)."""

    async def scan(
        self, spec: ScanSpec, job_id: str, reporter: Reporter, *, attempt: int = 1
    ) -> None:
        """Run the scan of `spec` for this attempt of the job (a shared store refuses its
        library writes once the attempt is over: LeaseLost)."""
        ...


#: Jobs whose durations make the RetryInfo delay of a full queue.
_RECENT = 20


class JobRunner:
    """Runs claimed jobs to their end."""

    def __init__(
        self,
        recorder: Recorder,
        ends: JobEnds,
        scanner: ScanRunner,
        config: Config,
        watch_task: WatchTask | None = None,
    ) -> None:
        self._watch_task = watch_task
        self._recorder = recorder
        self._ends = ends
        self._scanner = scanner
        self._config = config
        self._recent_durations: list[float] = []

    def retry_delay(self) -> float:
        """A guess at when a queue slot frees up: the recent mean job time per worker."""
        if not self._recent_durations:
            return 1.0
        mean = sum(self._recent_durations) / len(self._recent_durations)
        return max(0.5, min(60.0, mean / max(1, self._config.workers)))

    async def run(self, running: RunningJob) -> None:
        """Run a job the store handed over (RUNNING) until it is stored terminal or re-queued."""
        running.began = True
        log.info(
            "job %s running (attempt %d): %s",
            running.job_id,
            running.job.attempt,
            running.spec.path,
            extra=job_fields(running.job),
        )
        reporter = Reporter(self._recorder, running, self._config)
        started = time.monotonic()
        try:
            if running.stop_reason is not None:  # stopped between its claim and now
                state, error = self._stopped_outcome(running)
            else:
                state, error = await self._execute(running, reporter)
        except asyncio.CancelledError:
            if running.stop_reason is None:
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            state, error = self._stopped_outcome(running)
        await _to_the_end(self._end(running, reporter, state, error, time.monotonic() - started))

    async def _end(
        self,
        running: RunningJob,
        reporter: Reporter,
        state: JobState,
        error: status_pb2.Status | None,
        duration: float,
    ) -> None:
        """The last progress, then the job's end (or its re-queue), stored once; nothing for
        a job whose lease is lost (another server runs it)."""
        if running.stop_reason is StopReason.LEASE_LOST:
            self._ends.abandon(running)
            return
        await reporter.flush()
        if state is JobState.QUEUED:
            await self._ends.requeue(running, "the server shut down while the job ran")
            return
        self._recent_durations = [*self._recent_durations[1 - _RECENT :], duration]
        await self._ends.finish(
            running, state, error, reporter.result(), file_errors=reporter.unstored
        )

    async def never_started(self, running: RunningJob) -> None:
        """Its task was cancelled before its first step: `run` never saw the cancel."""
        if running.stop_reason is StopReason.LEASE_LOST:
            self._ends.abandon(running)
        elif running.stop_reason is StopReason.USER_CANCEL:
            await self._ends.finish(
                running,
                JobState.CANCELLED,
                status_of(Code.CANCELLED, "cancelled by CancelJob before it started"),
                scan_pb2.ScanResult(),
            )
        else:
            await self._ends.requeue(running, "the server shut down before the job started")

    async def _execute(self, running: RunningJob, reporter: Reporter) -> Outcome:
        publisher = asyncio.create_task(reporter.run(), name=f"progress-{running.job_id}")
        if self._watch_task is not None:
            self._watch_task(publisher)  # its exception is a death; its cancel is its end
        limit = running.spec.timeout
        left = await self._time_left(running)
        try:
            async with asyncio.timeout(left) as deadline:
                await self._scanner.scan(
                    running.spec, running.job_id, reporter, attempt=running.job.attempt
                )
            return JobState.SUCCEEDED, None
        except TimeoutError:
            if not deadline.expired():
                raise
            return JobState.TIMED_OUT, status_of(
                Code.DEADLINE_EXCEEDED,
                f"the scan ran longer than its time limit of {format_duration(limit)} "
                f"(server maximum {format_duration(self._config.max_timeout)}); the counts so "
                "far are kept: submit it again with a longer timeout to finish it",
            )
        except LeaseLost as exc:  # a library write was fenced: another server runs the job now
            log.warning("job %s: its scan's writes refused: %s", running.job_id, exc)
            running.lease_lost()
            return JobState.FAILED, None  # not stored: the run ends by its stop reason
        except MediascanError as exc:
            return JobState.FAILED, to_rpc_status(exc)
        except Exception:
            log.exception("job %s failed unexpectedly", running.job_id)
            return JobState.FAILED, status_of(
                Code.INTERNAL, "the scan failed on an internal error; see the server log"
            )
        finally:
            publisher.cancel()
            await asyncio.gather(publisher, return_exceptions=True)

    async def _time_left(self, running: RunningJob) -> float:
        """The job's time limit, less the time since its first start when an earlier attempt
        ran (the deadline holds across restarts and moves to another server)."""
        limit = running.spec.timeout
        if running.job.attempt <= 1:
            return limit
        first = await self._recorder.first_start(running.job_id)
        if first is None:
            return limit
        return max(0.0, limit - (time.time() - first))

    @staticmethod
    def _stopped_outcome(running: RunningJob) -> Outcome:
        if running.stop_reason is StopReason.USER_CANCEL:
            return JobState.CANCELLED, status_of(
                Code.CANCELLED, "cancelled by CancelJob; the counts so far are kept"
            )
        return JobState.QUEUED, None


async def _to_the_end(work: Coroutine[Any, Any, None]) -> None:
    """Run `work` (a job's end) to its end, and wait for it even if cancelled meanwhile (a
    CancelJob or a shutdown arriving as the job ends): the end is stored once, by this run,
    and the run ends after it. Its failure is raised (and seen if nobody waits any more)."""
    task = asyncio.ensure_future(work)
    task.add_done_callback(seen)
    current = asyncio.current_task()
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if current is None:
                raise
            current.uncancel()
    task.result()
