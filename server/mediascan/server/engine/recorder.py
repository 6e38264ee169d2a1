"""The one commit path of a job's changes: assign the next sequences, write the job and its
events to the store (a state change guarded by the state it expects), and only then replace the
in-memory job and publish the events. Also the typed event constructors and the changes that a
store applies inside its own transaction (`start_change`, `requeue_change`).

Invariants (tested in tests/test_engine_invariants.py): an event is stored before it is
published (event 1 of a new job is published, never stored: see `first_event`); a published
event or job is never changed afterwards (each commit works on a copy); sequences have no gaps
(a commit runs to its end under `asyncio.shield` once its sequences are assigned).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import cast

from mediascan.v1 import scan_pb2

from ..errors import Code, Unavailable, status_of
from ..jobs import JobState, check_transition, now_timestamp
from ..store import ChangedJob, FileErrorRows, JobChange, JobStore, LeaseLost
from ..store.waits import seen
from .running import RunningJob, StopReason

log = logging.getLogger(__package__)

#: What an event carries besides its state changes.
Payload = scan_pb2.Progress | scan_pb2.FileError
Mutation = Callable[[scan_pb2.Job], None]
StateListener = Callable[[int, scan_pb2.Job], None]


class JobChanged(Unavailable):
    """The stored job is not in the state this server expected: another change won (a claim
    beat a cancel, or the database was changed behind the server's back)."""


def new_event(
    job_id: str, sequence: int, payload: Payload | scan_pb2.StateChange
) -> scan_pb2.JobEvent:
    """A JobEvent carrying `payload` in the field of its type."""
    event = scan_pb2.JobEvent(job_id=job_id, sequence=sequence, event_time=now_timestamp())
    if isinstance(payload, scan_pb2.Progress):
        event.progress.CopyFrom(payload)
    elif isinstance(payload, scan_pb2.FileError):
        event.file_error.CopyFrom(payload)
    else:
        event.state_change.CopyFrom(payload)
    return event


def sequence_events(
    job: scan_pb2.Job, previous_state: int, payloads: Sequence[Payload] = ()
) -> list[scan_pb2.JobEvent]:
    """The events of a change `job` (already changed) went through: one per payload, then a
    state change if its state is not `previous_state`; each takes the job's next sequence."""
    events = []
    for payload in payloads:
        job.last_sequence += 1
        events.append(new_event(job.job_id, job.last_sequence, payload))
    if job.state != previous_state:
        job.last_sequence += 1
        change = scan_pb2.StateChange(
            from_state=cast(scan_pb2.JobState, previous_state), to_state=job.state, job=job
        )
        events.append(new_event(job.job_id, job.last_sequence, change))
    return events


def event_started(event: scan_pb2.JobEvent) -> bool:
    """True for the state change of a job's start (QUEUED -> RUNNING)."""
    return (
        event.WhichOneof("kind") == "state_change"
        and event.state_change.to_state == scan_pb2.JOB_STATE_RUNNING
    )


def first_event(job: scan_pb2.Job) -> scan_pb2.JobEvent:
    """Event 1 of a new job (UNSPECIFIED -> QUEUED), with `last_sequence` set to 1. Published
    but not stored: a resume asks for the events after one it received, so it never needs it,
    and a watch from the start begins with a snapshot."""
    (event,) = sequence_events(job, scan_pb2.JOB_STATE_UNSPECIFIED)
    return event


def _set_state(job: scan_pb2.Job, target: JobState) -> None:
    check_transition(job.state, target)
    job.state = cast(scan_pb2.JobState, int(target))


def started(job: scan_pb2.Job) -> None:
    """What a start sets besides the state: `start_time`, phase DISCOVERING."""
    job.start_time.CopyFrom(now_timestamp())
    job.ClearField("error")  # why an earlier attempt ended (`reclaimed`)
    job.progress.CopyFrom(scan_pb2.Progress(phase=scan_pb2.SCAN_PHASE_DISCOVERING))


def requeued(job: scan_pb2.Job) -> None:
    """What a re-queue sets besides the state: the next attempt, no start, no progress."""
    job.attempt += 1
    job.ClearField("start_time")
    job.progress.CopyFrom(scan_pb2.Progress())


def reclaimed(job: scan_pb2.Job) -> None:
    """What the re-queue of a job whose lease expired sets: `requeued`, and in `error` why
    its attempt ended (cleared when it starts again)."""
    why = f"attempt {job.attempt} ended: its node {job.node} stopped renewing its lease"
    requeued(job)
    job.error.CopyFrom(status_of(Code.UNAVAILABLE, why))


def change_to(target: JobState, mutate: Mutation) -> JobChange:
    """The change a store applies in its own transaction: to `target` (checked against the
    state machine) with `mutate`, and its state event."""

    def change(job: scan_pb2.Job) -> list[scan_pb2.JobEvent]:
        previous = job.state
        _set_state(job, target)
        mutate(job)
        return sequence_events(job, previous)

    return change


#: QUEUED -> RUNNING, as a claim applies it.
start_change = change_to(JobState.RUNNING, started)
#: RUNNING -> QUEUED with attempt + 1, as recovery applies it.
requeue_change = change_to(JobState.QUEUED, requeued)
#: RUNNING -> QUEUED with attempt + 1 and the reason, as a reclaim of an expired lease applies it.
reclaim_change = change_to(JobState.QUEUED, reclaimed)


def copy_job(job: scan_pb2.Job) -> scan_pb2.Job:
    copy = scan_pb2.Job()
    copy.CopyFrom(job)
    return copy


class Recorder:
    """Commits and publishes the changes of the active jobs."""

    def __init__(self, store: JobStore) -> None:
        self._store = store
        #: Called with (previous state, job) after each committed state change (e.g. metrics).
        self.state_listeners: list[StateListener] = []

    async def transition(
        self,
        running: RunningJob,
        target: JobState,
        *,
        mutate: Mutation | None = None,
        expect: JobState | None = None,
        file_errors: FileErrorRows | None = (),
    ) -> None:
        """Move the job to `target` (checked against the state machine; with `expect`, only
        from that state, else JobChanged), with a state event and `file_errors` (None: forget
        the job's stored ones)."""

        def change(job: scan_pb2.Job) -> None:
            if expect is not None and int(job.state) != int(expect):
                raise JobChanged(f"job {job.job_id} is no longer {expect.name}")
            _set_state(job, target)
            if mutate is not None:
                mutate(job)

        await self.commit(running, mutate=change, guard=True, file_errors=file_errors)

    async def commit(
        self,
        running: RunningJob,
        payloads: Sequence[Payload] = (),
        *,
        mutate: Mutation | None = None,
        guard: bool = False,
        file_errors: FileErrorRows | None = (),
    ) -> None:
        """Apply `mutate` to a copy of the job, add an event per payload (and one for a state
        change), commit both (with `file_errors`; None: forget the stored ones), then publish.
        Runs to the end even if the caller is cancelled."""
        commit = asyncio.ensure_future(
            self._commit_now(running, payloads, mutate, guard, file_errors)
        )
        # Seen even when the caller was cancelled before it failed (no "never retrieved").
        commit.add_done_callback(seen)
        await asyncio.shield(commit)

    async def _commit_now(
        self,
        running: RunningJob,
        payloads: Sequence[Payload],
        mutate: Mutation | None,
        guard: bool,
        file_errors: FileErrorRows | None,
    ) -> None:
        async with running.lock:
            before = running.job
            job = copy_job(before)
            if mutate is not None:
                mutate(job)
            events = sequence_events(job, before.state, payloads)
            if not events:
                return
            try:
                saved = await self._store.record(
                    job,
                    events,
                    expected_state=before.state if guard else None,
                    file_errors=file_errors if file_errors is not None else (),
                    clear_file_errors=file_errors is None,
                )
            except LeaseLost:  # fenced: another server runs the job now
                running.stop(StopReason.LEASE_LOST)
                raise
            if not saved:
                raise JobChanged(
                    f"job {job.job_id} changed in the database behind this server's back"
                )
            self._publish(running, before.state, job, events)

    async def first_start(self, job_id: str) -> float | None:
        """When the job first started (seconds since the epoch), as stored: the time of its
        event 2, which every job's first claim stores (QUEUED -> RUNNING). None if it is
        not there (trimmed, or the database does not answer)."""
        try:
            events = await self._store.bounded(self._store.events_after(job_id, 1, 1))
        except Unavailable as exc:
            log.warning("job %s: its first start is not known (%s)", job_id, exc)
            return None
        if events and events[0].sequence == 2 and event_started(events[0]):
            return events[0].event_time.ToNanoseconds() / 1e9
        return None

    def publish_stored(self, running: RunningJob, changed: ChangedJob) -> None:
        """Publish a change the store made and stored itself (a claim, a recovery). The
        channel may have been opened with the changed job, or be one that followed the job
        from the store (`EventHub.open`): it takes what it lacks (`JobChannel.catch_up`)."""
        running.job = changed.job
        running.channel.catch_up(copy_job(changed.job), changed.events)
        if changed.job.state != changed.previous_state:
            self.announce(changed.previous_state, changed.job)

    def publish_first(self, running: RunningJob, event: scan_pb2.JobEvent) -> None:
        """Publish event 1 of a job just committed (`first_event`: never stored)."""
        running.channel.publish(running.job, [event])
        self.announce(scan_pb2.JOB_STATE_UNSPECIFIED, running.job)

    def _publish(
        self,
        running: RunningJob,
        previous_state: int,
        job: scan_pb2.Job,
        events: list[scan_pb2.JobEvent],
    ) -> None:
        running.job = job
        running.channel.publish(copy_job(job), events)
        if job.state != previous_state:
            self.announce(previous_state, job)

    def announce(self, previous: int, job: scan_pb2.Job) -> None:
        """Tell the state listeners of a committed state change (also of a job that is not
        active here: queued for other servers, re-queued or cancelled in the database)."""
        for listener in self.state_listeners:
            try:
                listener(previous, job)
            except Exception:
                log.exception("a state listener failed on job %s", job.job_id)
