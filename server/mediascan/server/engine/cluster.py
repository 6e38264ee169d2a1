"""The engine among several servers sharing one store (a `JobFeed`): it stops the jobs it runs
when CancelJob on another server asks, and cancels the jobs it does not run through the store.

A job QUEUED in the database is cancelled there, guarded by its state (`JobFeed.request_cancel`:
no claim can take it meanwhile). A job RUNNING on another server is marked `cancel_requested`,
and that server, notified, stops it through its normal user-cancel path; the caller waits for
the job's end, following it like a watcher (`EventHub.wait_ended`), and asks again every
RENOTIFY seconds, so that a notification lost on the way (the other server's LISTEN connection
was down, or its claim of the job was still committing) costs at most that much."""

from __future__ import annotations

import asyncio
import logging

from mediascan.v1 import scan_pb2

from ..errors import Code, Unavailable, status_of
from ..events import EventHub
from ..jobs import JobState
from ..logs import job_fields
from ..store import ChangedJob, JobFeed, StorageError
from .attempts import reclaim_change_for
from .ends import ended
from .recorder import Recorder, change_to
from .running import ActiveJobs, Phase, StopReason

log = logging.getLogger(__package__)

#: QUEUED -> CANCELLED, as the store applies it to a job no server has claimed.
cancel_queued = change_to(
    JobState.CANCELLED,
    ended(status_of(Code.CANCELLED, "cancelled by CancelJob before it started"),
          scan_pb2.ScanResult()),
)  # fmt: skip
#: Seconds between two requests to stop a job running on another server.
RENOTIFY = 1.0


class Cluster:
    """What one server's engine does for and with the other servers sharing its store."""

    def __init__(
        self,
        feed: JobFeed,
        jobs: ActiveJobs,
        hub: EventHub,
        recorder: Recorder,
        *,
        max_attempts: int = 3,
    ) -> None:
        self._feed = feed
        self._jobs = jobs
        self._hub = hub
        self._recorder = recorder
        self._side_tasks: set[asyncio.Task[None]] = set()
        feed.add_cancel_listener(self.cancel_asked)
        feed.add_resync_listener(self._resync)
        feed.add_lease_lost_listener(self.leases_lost)
        feed.set_reclaim(reclaim_change_for(max_attempts), self._reclaimed)

    def leases_lost(self) -> None:
        """This server could not renew its leases in time: another server may run its jobs
        now. Stop every one of them at once, writing nothing for them."""
        for running in self._jobs:
            if running.phase is Phase.RUNNING and running.stop(StopReason.LEASE_LOST):
                log.error(
                    "job %s stopped: its lease expired", running.job_id,
                    extra=job_fields(running.job),
                )  # fmt: skip

    def _reclaimed(self, changed: ChangedJob) -> None:
        """This server re-queued a job whose lease expired (its node stopped renewing it)."""
        job = changed.job
        self._recorder.announce(changed.previous_state, job)
        log.warning(
            "job %s reclaimed: %s; now %s, attempt %d",
            job.job_id,
            job.error.message,
            JobState(job.state).name,
            job.attempt,
            extra=job_fields(job),
        )
        running = self._jobs.get(job.job_id)  # this server's own lease, expired while it ran
        if running is not None and running.stop(StopReason.LEASE_LOST):
            log.error("job %s stopped here: its lease expired", job.job_id)

    def cancel_asked(self, job_id: str) -> None:
        """CancelJob, on some server, asked to stop `job_id`: stop it if it runs here."""
        running = self._jobs.get(job_id)
        if running is None or running.phase is not Phase.RUNNING:
            return  # another server's, or already ending
        if running.stop(StopReason.USER_CANCEL):
            log.info("job %s: cancel asked", job_id, extra=job_fields(running.job))

    async def cancel(self, job_id: str, wait: float) -> scan_pb2.Job | None:
        """Cancel a job this server does not run, and return it once it ended (None: no such
        job); Unavailable if it did not end within `wait` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            outcome = await self._feed.request_cancel(job_id, cancel_queued)
            if outcome is None:
                return None
            if outcome.events:  # it was QUEUED: cancelled now, in the database
                self._recorder.announce(outcome.previous_state, outcome.job)
                log.info(
                    "job %s CANCELLED before it started", job_id, extra=job_fields(outcome.job)
                )
                return outcome.job
            if not outcome.requested:  # finished
                return outcome.job
            left = deadline - loop.time()
            if left <= 0:
                raise Unavailable(
                    f"job {job_id} runs on the server {outcome.job.node}, which was told to stop "
                    f"it but has not stored its end within {wait:g}s (that server or its "
                    "database connection is failing); it stops as soon as it hears: watch it or "
                    "GetJob it"
                )
            await self._hub.wait_ended(job_id, min(RENOTIFY, left))

    def _resync(self) -> None:
        """The notifications were cut off: read again which of this server's jobs to stop."""
        task = asyncio.ensure_future(self._recheck_cancels())
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def _recheck_cancels(self) -> None:
        if not self._jobs.count(Phase.RUNNING):
            return
        try:
            asked = await self._feed.cancels_requested()
        except StorageError as exc:  # the next reconnection reads them again
            log.warning("cannot read the cancels asked for meanwhile: %s", exc)
            return
        for job_id in asked:
            self.cancel_asked(job_id)
