"""Start-up recovery and shutdown drain.

Recovery: every job stored QUEUED or RUNNING is made active again; the RUNNING ones (cut off by
a crash) go back to QUEUED with attempt + 1, in the store's one transaction (`JobStore.recover`).
Drain: no new claims, the running jobs get `grace` seconds, the rest are stopped with the reason
SHUTDOWN and re-queued for the next start."""

from __future__ import annotations

import asyncio
import logging

from mediascan.v1 import scan_pb2

from ..config import format_duration
from ..events import EventHub
from ..jobs import TERMINAL, JobState, spec_of
from ..logs import job_fields
from ..store import JobChange, JobStore
from .recorder import Recorder, requeue_change
from .running import ActiveJobs, RunningJob, StopReason
from .worker import Dispatcher

log = logging.getLogger(__package__)


async def recover(
    store: JobStore,
    jobs: ActiveJobs,
    hub: EventHub,
    recorder: Recorder,
    *,
    shared: bool,
    requeue: JobChange = requeue_change,
) -> None:
    """Make the unfinished jobs of a previous process active again, oldest first, each one
    cut off RUNNING changed by `requeue` (re-queued, or FAILED after `--max-attempts`). On a
    shared store (`shared`) they stay in the database, where any server may claim them: a
    server holds in memory only the jobs it runs."""
    for changed in await store.recover(requeue):
        job = changed.job
        if JobState(job.state) in TERMINAL:  # its runs kept dying: given up
            recorder.announce(changed.previous_state, job)
            log.warning("job %s FAILED: %s", job.job_id, job.error.message, extra=job_fields(job))
            continue
        if shared:
            if changed.events:
                recorder.announce(changed.previous_state, job)
                _requeued(job)
            continue
        running = jobs.add(RunningJob(job, spec_of(job), hub.open(job)))
        if changed.events:  # it was RUNNING: cut off by a crash, it runs again
            recorder.publish_stored(running, changed)
            _requeued(job)
        log.info(
            "recovered job %s (attempt %d) for %s",
            job.job_id,
            job.attempt,
            job.path,
            extra=job_fields(job),
        )


def _requeued(job: scan_pb2.Job) -> None:
    log.info(
        "job %s re-queued (the server stopped while the job ran); next attempt %d",
        job.job_id,
        job.attempt,
        extra=job_fields(job),
    )


async def drain(dispatcher: Dispatcher, grace: float) -> None:
    """Stop claiming, let running jobs finish for `grace` seconds, then interrupt the rest,
    which are saved as QUEUED (attempt + 1) for the next start."""
    await dispatcher.stop()
    running = set(dispatcher.running)
    if not running:
        return
    log.info("waiting up to %s for %d running job(s)", format_duration(grace), len(running))
    _, still_running = await asyncio.wait(running, timeout=grace)
    for task in still_running:
        job = dispatcher.running.get(task)
        if job is not None and job.stop_reason is None:  # else: already stopping (a cancel)
            job.stop_reason = StopReason.SHUTDOWN
            task.cancel()
    if still_running:
        log.info("interrupted %d job(s); they run again at the next start", len(still_running))
        await asyncio.wait(still_running)
