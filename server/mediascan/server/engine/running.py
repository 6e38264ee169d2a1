"""One object per active job (`RunningJob`: its committed job, spec, channel, lock, phase, stop
reason, task), and the registry of the active jobs (`ActiveJobs`)."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Iterator

from mediascan.v1 import scan_pb2

from ..events import JobChannel
from ..jobs import ScanSpec


class Phase(enum.Enum):
    """Where an active job is on this server."""

    #: Committed QUEUED; waiting for the store to hand it to a worker (`claim_next`).
    QUEUED = "queued"
    #: Claimed: its task runs the scan (or is ending it).
    RUNNING = "running"
    #: Released: terminal, or left QUEUED in the store for the next start.
    ENDED = "ended"


class StopReason(enum.Enum):
    """Why a job is being stopped before its scan ends on its own."""

    #: CancelJob: it ends CANCELLED, with the counts so far.
    USER_CANCEL = "user"
    #: The server is stopping: it goes back to QUEUED (attempt + 1) for the next start.
    SHUTDOWN = "shutdown"
    #: Its lease is lost (not renewed in time, or another server reclaimed the job): it stops
    #: here without writing anything for the job, which another server runs again.
    LEASE_LOST = "lease"


class RunningJob:
    """An active job's whole state on this server."""

    def __init__(self, job: scan_pb2.Job, spec: ScanSpec, channel: JobChannel) -> None:
        #: The last committed job. Replaced on every commit, never changed in place: the one
        #: message may be shared with an answer or an event.
        self.job = job
        self.spec = spec
        self.channel = channel
        self.lock = asyncio.Lock()  # serializes commits: sequence order == commit order
        self.phase = Phase.QUEUED
        self.stop_reason: StopReason | None = None
        self.task: asyncio.Task[None] | None = None
        #: Set by the run's first step: a task cancelled before it never ran (see
        #: `JobRunner.never_started`); one cancelled later ends through its run.
        self.began = False
        #: Set once the job is released (its end stored, or left to the next start).
        self.done = asyncio.Event()

    @property
    def job_id(self) -> str:
        return self.job.job_id

    def stop(self, reason: StopReason) -> bool:
        """Stop a claimed job's run for `reason` (its task is cancelled, and the run ends it
        by its reason); False if it is already being stopped. A lost lease overrides any
        other reason: nothing may be written for the job any more."""
        already = self.stop_reason
        if already is StopReason.LEASE_LOST or (
            already is not None and reason is not StopReason.LEASE_LOST
        ):
            return False
        self.stop_reason = reason
        if self.task is not None:
            self.task.cancel()
        return True

    def lease_lost(self) -> None:
        """The run itself found its writes refused (fencing): it ends as a lost lease, with
        nothing written, without cancelling its own task."""
        self.stop_reason = StopReason.LEASE_LOST


class ActiveJobs:
    """The jobs active on this server, by id and by dedup key, counted by phase."""

    def __init__(self) -> None:
        self._by_id: dict[str, RunningJob] = {}
        self._by_key: dict[str, RunningJob] = {}
        self._counts = dict.fromkeys(Phase, 0)
        #: The jobs of libraries (WATCH, SCHEDULE) by phase: they do not count toward
        #: --max-queued (at most one of each is pending per library).
        self._library_counts = dict.fromkeys(Phase, 0)
        #: Set when the server stops: no job starts any more, a failing end is not retried.
        self.draining = False

    def add(self, running: RunningJob) -> RunningJob:
        self._by_id[running.job_id] = running
        self._by_key.setdefault(running.spec.dedup_key, running)
        self._counts[running.phase] += 1
        self._library_counts[running.phase] += _of_library(running)
        return running

    def get(self, job_id: str) -> RunningJob | None:
        return self._by_id.get(job_id)

    def by_key(self, dedup_key: str) -> RunningJob | None:
        return self._by_key.get(dedup_key)

    def set_phase(self, running: RunningJob, phase: Phase) -> None:
        if running.job_id in self._by_id:
            self._counts[running.phase] -= 1
            self._counts[phase] += 1
            self._library_counts[running.phase] -= _of_library(running)
            self._library_counts[phase] += _of_library(running)
        running.phase = phase

    def release(self, running: RunningJob) -> None:
        """The job leaves: out of the maps, phase ENDED, `done` set."""
        if self._by_id.get(running.job_id) is running:
            del self._by_id[running.job_id]
            self._counts[running.phase] -= 1
            self._library_counts[running.phase] -= _of_library(running)
        if self._by_key.get(running.spec.dedup_key) is running:
            del self._by_key[running.spec.dedup_key]
        running.phase = Phase.ENDED
        running.done.set()

    def count(self, phase: Phase) -> int:
        return self._counts[phase]

    def count_submitted(self, phase: Phase) -> int:
        """The jobs in `phase` that clients submitted (not a library's own)."""
        return self._counts[phase] - self._library_counts[phase]

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._by_id

    def __iter__(self) -> Iterator[RunningJob]:
        return iter(list(self._by_id.values()))


def _of_library(running: RunningJob) -> int:
    """1 for a job a library submitted (WATCH, SCHEDULE), else 0."""
    return int(running.spec.trigger in (scan_pb2.TRIGGER_WATCH, scan_pb2.TRIGGER_SCHEDULE))
