"""How an active job leaves: its final state stored (retried until the database takes it), or
its re-queue, then its release from the server."""

from __future__ import annotations

import asyncio
import logging

from google.rpc import status_pb2

from mediascan.v1 import scan_pb2

from ..errors import MediascanError
from ..events import EventHub
from ..jobs import JobState, now_timestamp
from ..logs import job_fields
from ..store import FileErrorRows, JobStore, LeaseLost, StorageError
from .recorder import JobChanged, Mutation, Recorder, requeued
from .running import ActiveJobs, RunningJob

log = logging.getLogger(__package__)


def ended(error: status_pb2.Status | None, result: scan_pb2.ScanResult) -> Mutation:
    """What an end sets besides the state: the end time, the result, the error if any."""

    def mutate(job: scan_pb2.Job) -> None:
        job.end_time.CopyFrom(now_timestamp())
        job.result.CopyFrom(result)
        job.progress.phase = scan_pb2.SCAN_PHASE_UNSPECIFIED
        job.progress.current_path = ""
        if error is not None:
            job.error.CopyFrom(error)

    return mutate


class JobEnds:
    """Finishes, re-queues and releases active jobs."""

    def __init__(
        self,
        store: JobStore,
        recorder: Recorder,
        jobs: ActiveJobs,
        hub: EventHub,
        *,
        event_log_size: int,
    ) -> None:
        self._store = store
        self._recorder = recorder
        self._jobs = jobs
        self._hub = hub
        self._event_log_size = event_log_size

    async def finish(
        self,
        running: RunningJob,
        state: JobState,
        error: status_pb2.Status | None,
        result: scan_pb2.ScanResult,
        *,
        file_errors: FileErrorRows = (),
        expect: JobState | None = None,
    ) -> None:
        """Store the job's terminal `state` (only from `expect`, if given), release it, log its
        counts and trim its stored event log."""
        mutate = ended(error, result)
        try:
            await self._commit_until_stored(running, state, mutate, file_errors, expect)
        except JobChanged:  # not from `expect`: another change won, and the job goes on
            raise
        except LeaseLost as exc:  # fenced: another server runs the job now
            log.warning("job %s: its end refused: %s", running.job_id, exc)
            self.abandon(running)
            return
        except BaseException:
            self.release(running)
            raise
        self.release(running)
        job = running.job
        log.info(
            "job %s %s: %d added, %d updated, %d unchanged, %d moved, %d removed, %d failed",
            job.job_id,
            state.name,
            result.added,
            result.updated,
            result.unchanged,
            result.moved,
            result.removed,
            result.failed,
            extra=job_fields(job),
        )
        try:
            await self._store.trim_events(job.job_id, self._event_log_size)
        except MediascanError as exc:
            log.warning("could not trim the events of job %s: %s", job.job_id, exc)

    async def requeue(self, running: RunningJob, why: str) -> None:
        """RUNNING -> QUEUED with attempt + 1 (the job runs again at the next start); its
        watchers get UNAVAILABLE and resume after the restart; the job is released."""
        try:
            async with running.lock:  # let a commit in flight land first
                if JobState(running.job.state) is not JobState.RUNNING:
                    return
            try:
                await self._recorder.transition(running, JobState.QUEUED, mutate=requeued)
            except LeaseLost as exc:  # fenced: another server runs the job now
                log.warning("job %s not re-queued: %s", running.job_id, exc)
                return
            log.info(
                "job %s re-queued (%s); next attempt %d",
                running.job_id,
                why,
                running.job.attempt,
                extra=job_fields(running.job),
            )
        finally:
            running.channel.close()
            self.release(running)

    def abandon(self, running: RunningJob) -> None:
        """Let go of a job whose lease is lost, storing nothing: another server runs it (its
        watchers here get UNAVAILABLE and resume, following it from the database)."""
        log.warning(
            "job %s abandoned here (attempt %d): its lease is lost",
            running.job_id,
            running.job.attempt,
            extra=job_fields(running.job),
        )
        running.channel.close()
        self.release(running)

    def release(self, running: RunningJob) -> None:
        self._jobs.release(running)
        self._hub.release(running.job_id)

    async def _commit_until_stored(
        self,
        running: RunningJob,
        state: JobState,
        mutate: Mutation,
        file_errors: FileErrorRows,
        expect: JobState | None,
    ) -> None:
        """A job's final state must reach the store: while the database fails (locked, disk
        full), try again with backoff, keeping the job (and its watchers) until it does. A
        shutdown ends the attempts: the job is still active in the store and runs again at the
        next start."""
        delay = 0.1
        while True:
            try:
                await self._recorder.transition(
                    running, state, mutate=mutate, expect=expect, file_errors=file_errors
                )
                return
            except StorageError as exc:
                if self._jobs.draining:
                    running.channel.close()  # its watchers reconnect after the restart
                    raise
                log.error(
                    "cannot store the end of job %s (%s); trying again in %gs",
                    running.job_id,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
