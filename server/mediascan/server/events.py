"""Job event logs and their subscribers (WatchJob).

Every change to a job is an event with the next per-job sequence number, committed to the store
before anyone sees it. Each active job has a `JobChannel`: the latest committed snapshot of the
job plus a bounded ring of its recent events. A subscriber is only a cursor into that ring, so it
costs the same few hundred bytes whether it keeps up or not, and a slow one never holds up the
scan. A subscriber that falls behind the ring gets a fresh snapshot (`resync`) and goes on from
there: it receives coalesced state instead of an unbounded backlog. Resumes (`after_sequence`)
read events older than the ring from the store, which keeps `event_log_size` events per job.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Sequence

from mediascan.v1 import scan_pb2

from .errors import Unavailable, job_not_found
from .jobs import is_terminal, now_timestamp
from .store import Store

#: Events handed to a subscriber per wake-up; bounds what one slow stream holds.
_BATCH = 64


def snapshot_event(job: scan_pb2.Job, *, resync: bool) -> scan_pb2.JobEvent:
    return scan_pb2.JobEvent(
        job_id=job.job_id,
        sequence=job.last_sequence,
        event_time=now_timestamp(),
        snapshot=scan_pb2.JobSnapshot(job=job, resync=resync),
    )


def ends_stream(event: scan_pb2.JobEvent) -> bool:
    """True for the event after which a job's stream closes (its terminal state)."""
    kind = event.WhichOneof("kind")
    if kind == "state_change":
        return is_terminal(event.state_change.to_state)
    if kind == "snapshot":
        return is_terminal(event.snapshot.job.state)
    return False


class JobChannel:
    """The committed state and recent events of one active job."""

    def __init__(self, job: scan_pb2.Job, ring_size: int) -> None:
        self.job = job
        self._ring: collections.deque[scan_pb2.JobEvent] = collections.deque(maxlen=ring_size)
        self._changed = asyncio.Event()
        self.closed = False

    @property
    def last_sequence(self) -> int:
        return self.job.last_sequence

    def publish(self, job: scan_pb2.Job, events: Sequence[scan_pb2.JobEvent]) -> None:
        """Make committed events visible. Callers publish in sequence order, without gaps."""
        self._ring.extend(events)
        self.job = job
        self._wake()

    def close(self) -> None:
        """The server is going away: wake every subscriber so that it ends with UNAVAILABLE."""
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def first_sequence(self) -> int:
        """The oldest sequence the ring holds (last + 1 when it is empty)."""
        return self._ring[0].sequence if self._ring else self.last_sequence + 1

    def events_after(self, cursor: int) -> list[scan_pb2.JobEvent] | None:
        """Up to a batch of events after `cursor`; None if the ring no longer holds cursor + 1."""
        first = self.first_sequence()
        if cursor + 1 < first:
            return None
        start = cursor + 1 - first
        end = min(len(self._ring), start + _BATCH)
        return [self._ring[i] for i in range(start, end)]

    async def wait_beyond(self, cursor: int) -> None:
        while self.last_sequence <= cursor and not self.closed:
            await self._changed.wait()


class EventHub:
    """Channels of the active jobs, and the WatchJob logic on top of them and the store."""

    def __init__(self, store: Store, *, ring_size: int, log_size: int) -> None:
        self._store = store
        self._ring_size = ring_size
        self._log_size = log_size  # events per job the store keeps (--event-log-size)
        self._channels: dict[str, JobChannel] = {}
        self.closed = False

    @property
    def watched_jobs(self) -> int:
        return len(self._channels)

    def open(self, job: scan_pb2.Job) -> JobChannel:
        channel = JobChannel(job, self._ring_size)
        self._channels[job.job_id] = channel
        return channel

    def release(self, job_id: str) -> None:
        """The job is terminal: new watchers read it from the store. Current ones drain."""
        self._channels.pop(job_id, None)

    def close_all(self) -> None:
        self.closed = True
        for channel in self._channels.values():
            channel.close()

    async def watch(self, job_id: str, after_sequence: int) -> AsyncIterator[scan_pb2.JobEvent]:
        """The event stream of WatchJob: snapshot (or resume), then events until terminal."""
        if self.closed:
            raise Unavailable("the server is shutting down: reconnect and resume")
        channel = self._channels.get(job_id)
        if channel is None:
            async for event in self._watch_stored(job_id, after_sequence):
                yield event
            return
        cursor = after_sequence
        if after_sequence <= 0 or after_sequence > channel.last_sequence:
            snapshot = snapshot_event(channel.job, resync=after_sequence > 0)
            cursor = snapshot.sequence  # before yielding: events may arrive meanwhile
            yield snapshot
            if ends_stream(snapshot):
                return
        elif after_sequence + 1 < channel.first_sequence():
            replayed = await self._replay(job_id, after_sequence, channel.first_sequence() - 1)
            if replayed is None:
                snapshot = snapshot_event(channel.job, resync=True)
                cursor = snapshot.sequence
                yield snapshot
                if ends_stream(snapshot):
                    return
            else:
                for event in replayed:
                    yield event
                    cursor = event.sequence
        async for event in self._follow(channel, cursor):
            yield event

    async def _follow(self, channel: JobChannel, cursor: int) -> AsyncIterator[scan_pb2.JobEvent]:
        while True:
            batch = channel.events_after(cursor)
            if batch is None:  # fell behind the ring: coalesce into a fresh snapshot
                snapshot = snapshot_event(channel.job, resync=True)
                cursor = snapshot.sequence
                yield snapshot
                if ends_stream(snapshot):
                    return
                continue
            for event in batch:
                yield event
                cursor = event.sequence
                if ends_stream(event):
                    return
            if not batch:
                if channel.closed:
                    raise Unavailable(
                        "the server is shutting down: reconnect and resume with "
                        f"after_sequence={cursor}"
                    )
                await channel.wait_beyond(cursor)

    async def _replay(
        self, job_id: str, after_sequence: int, up_to: int
    ) -> list[scan_pb2.JobEvent] | None:
        """Stored events after_sequence+1 .. up_to, or None if the store no longer has them."""
        wanted = up_to - after_sequence
        if wanted > self._log_size:
            return None  # older than what the store keeps
        events = await self._store.events_after(job_id, after_sequence, wanted)
        if len(events) != wanted or (events and events[0].sequence != after_sequence + 1):
            return None
        return events

    async def _watch_stored(
        self, job_id: str, after_sequence: int
    ) -> AsyncIterator[scan_pb2.JobEvent]:
        """A job without a channel: finished (or unknown). Replay, or send the final snapshot."""
        job = await self._store.get_job(job_id)
        if job is None:
            raise job_not_found(job_id)
        if not is_terminal(job.state):
            # Active, but not run by this server (it is shutting down, or another server runs
            # it): an OK end here would wrongly tell the client the stream is complete.
            raise Unavailable(
                f"job {job_id} is not running on this server right now: reconnect and resume "
                f"with after_sequence={max(after_sequence, 0)}"
            )
        if 0 < after_sequence <= job.last_sequence:
            replayed = await self._replay(job_id, after_sequence, job.last_sequence)
            if replayed is not None:
                for event in replayed:
                    yield event
                return
        yield snapshot_event(job, resync=after_sequence > 0)
