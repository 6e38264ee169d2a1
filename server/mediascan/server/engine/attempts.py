"""`--max-attempts`: a job whose runs keep dying with their server (a file that crashes the
prober and the server with it, say) ends FAILED with the reason instead of moving from start to
start, or from node to node, for ever. Applied where a dead run is found: at recovery (a
RUNNING job left by a crash) and at the reclaim of an expired lease (PostgreSQL)."""

from __future__ import annotations

from mediascan.v1 import scan_pb2

from ..errors import Code, status_of
from ..jobs import JobState
from ..store import JobChange
from .ends import ended
from .recorder import Mutation, change_to, reclaimed, requeued


def gave_up(attempts: int) -> str:
    return f"gave up after {attempts} attempts: its node died each time"


def dead_run_change(mutate: Mutation, max_attempts: int) -> JobChange:
    """The change of a RUNNING job whose run died: to QUEUED with `mutate` (the next attempt),
    or to FAILED once it ran `max_attempts` times."""
    again = change_to(JobState.QUEUED, mutate)

    def change(job: scan_pb2.Job) -> list[scan_pb2.JobEvent]:
        if job.attempt >= max_attempts:
            error = status_of(Code.ABORTED, gave_up(job.attempt))
            return change_to(JobState.FAILED, ended(error, scan_pb2.ScanResult()))(job)
        return again(job)

    return change


def recovery_change_for(max_attempts: int) -> JobChange:
    """What recovery applies to a job a crash left RUNNING."""
    return dead_run_change(requeued, max_attempts)


def reclaim_change_for(max_attempts: int) -> JobChange:
    """What the reclaim of an expired lease applies (the reason in the job's error)."""
    return dead_run_change(reclaimed, max_attempts)
