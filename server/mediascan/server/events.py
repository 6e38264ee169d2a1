"""Job event logs and their subscribers (WatchJob).

Every change to a job is an event with the next per-job sequence number, committed to the store
before anyone sees it. Each active job has a `JobChannel`: the latest committed snapshot of the
job plus a bounded ring of its recent events. A subscriber is only a cursor into that ring, so it
costs the same few hundred bytes whether it keeps up or not, and a slow one never holds up the
scan. A subscriber that falls behind the ring gets a fresh snapshot (`resync`) and goes on from
there: it receives coalesced state instead of an unbounded backlog. Resumes (`after_sequence`)
read events older than the ring from the store, which keeps `event_log_size` events per job.

Fan-out is the hot path (1,000 watchers of one job make 10,000 messages a second), so the work
per event and subscriber is kept to the minimum: one wake-up per publish, a cursor comparison,
and the send. What is the same for every subscriber is done once per event: an event in the
ring is serialized once for all of them (`serialize_event`, WatchJob's response serializer), and
subscribers attaching to the same state share one snapshot.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from mediascan.v1 import scan_pb2

from .errors import ResourceExhausted, Unavailable, job_not_found
from .jobs import is_terminal, now_timestamp
from .store import JobStore
from .streams import StreamBudget

if TYPE_CHECKING:
    from .follow import Followers

#: Events handed to a subscriber per wake-up; bounds what one slow stream holds.
_BATCH = 64

#: id(event) -> (event, its serialized bytes), for the events in the rings of channels that have
#: subscribers. The entry holds the event itself, so that its id cannot be reused while the
#: entry exists; it goes when the event leaves its ring or its channel is gone.
_WIRE: dict[int, tuple[scan_pb2.JobEvent, bytes]] = {}


def serialize_event(event: scan_pb2.JobEvent) -> bytes:
    """WatchJob's response serializer: the bytes serialized once for every subscriber of a ring
    event (or shared snapshot), or the event serialized now. Either way the same bytes as
    `event.SerializeToString()`."""
    cached = _WIRE.get(id(event))
    if cached is not None and cached[0] is event:
        return cached[1]
    return event.SerializeToString()


def wire_size(event: scan_pb2.JobEvent) -> int:
    """The bytes `serialize_event` sends for `event` (free for a shared event)."""
    cached = _WIRE.get(id(event))
    if cached is not None and cached[0] is event:
        return len(cached[1])
    return event.ByteSize()


#: Final snapshots of finished jobs kept to be shared by the streams that watch them.
_FINALS = 64


def _forget(keys: set[int]) -> None:
    for key in keys:
        _WIRE.pop(key, None)


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
        #: The job's last_sequence, kept as a plain int: every subscriber reads it per event.
        self.last_sequence = job.last_sequence
        self._ring: collections.deque[scan_pb2.JobEvent] = collections.deque(maxlen=ring_size)
        self._changed = asyncio.Event()
        self.closed = False
        #: The sequence of the job's terminal event once published (0 before): a stream ends
        #: after sending it. Only the last event of a job can be terminal.
        self.end_sequence = 0
        #: Subscribers following the channel now; while there are none, nothing is serialized
        #: in advance.
        self.subscribers = 0
        #: The snapshots of the current state, shared by the subscribers that ask for one
        #: before the next publish ({resync: event}).
        self._snapshots: dict[bool, scan_pb2.JobEvent] = {}
        #: The keys this channel put in _WIRE, removed with the channel (made at the first).
        self._wired: set[int] | None = None

    def publish(self, job: scan_pb2.Job, events: Sequence[scan_pb2.JobEvent]) -> None:
        """Make committed events visible. Callers publish in sequence order, without gaps."""
        ring = self._ring
        assert ring.maxlen is not None
        for _ in range(min(len(ring), len(ring) + len(events) - ring.maxlen)):
            self._unwire(ring.popleft())
        ring.extend(events)  # more than the ring holds: it keeps the last ones
        if self.subscribers:
            for event in events[-ring.maxlen :]:
                self._wire(event)
        if events and ends_stream(events[-1]):
            self.end_sequence = events[-1].sequence
        self.job = job
        self.last_sequence = job.last_sequence
        for snapshot in self._snapshots.values():
            self._unwire(snapshot)  # already sent: a stream serializes what it yields at once
        self._snapshots.clear()
        self._wake()

    def catch_up(self, job: scan_pb2.Job, events: Sequence[scan_pb2.JobEvent]) -> None:
        """Publish what `job` and its stored `events` hold past the channel's last sequence:
        the events it lacks, in order, if they follow on from the ring; else (some are gone,
        or were never read) the newest ones in a fresh ring (`restart`). For a channel fed
        from the store, or one opened with a job whose change is published afterwards."""
        last = self.last_sequence
        if job.last_sequence <= last:
            return
        fresh = [event for event in events if event.sequence > last]
        if fresh and fresh[0].sequence == last + 1 and fresh[-1].sequence == job.last_sequence:
            self.publish(job, fresh)
        else:
            self.restart(job, fresh)

    def restart(self, job: scan_pb2.Job, events: Sequence[scan_pb2.JobEvent]) -> None:
        """Publish `job` with the newest of its events that do not follow on from the ring's
        (the events between are gone): the ring starts again from them, and a subscriber
        behind it gets a resync snapshot."""
        while self._ring:
            self._unwire(self._ring.popleft())
        self.publish(job, events)
        if is_terminal(job.state):
            self.end_sequence = job.last_sequence

    def snapshot(self, *, resync: bool) -> scan_pb2.JobEvent:
        """A snapshot of the current state, the same event for every subscriber until the next
        publish (copying a job with many file errors is the costliest step of a watch)."""
        event = self._snapshots.get(resync)
        if event is None:
            event = self._snapshots[resync] = snapshot_event(self.job, resync=resync)
            self._wire(event)
        return event

    def _wire(self, event: scan_pb2.JobEvent) -> None:
        if self._wired is None:  # most channels are never watched: no set, no finalizer
            self._wired = set()
            weakref.finalize(self, _forget, self._wired)
        key = id(event)
        if key not in self._wired:
            _WIRE[key] = (event, event.SerializeToString())
            self._wired.add(key)

    def _unwire(self, event: scan_pb2.JobEvent) -> None:
        key = id(event)
        if self._wired is not None and key in self._wired:
            self._wired.discard(key)
            del _WIRE[key]

    def close(self) -> None:
        """The server is going away: wake every subscriber so that it ends with UNAVAILABLE."""
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def changed(self) -> Coroutine[Any, Any, bool]:
        """Await it: until the next publish or close."""
        return self._changed.wait()

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

    def subscribe(self) -> None:
        """A stream starts following the channel (`unsubscribe` when it ends)."""
        if not self.subscribers:  # the first one: serialize what it is about to send
            for event in self._ring:
                self._wire(event)
        self.subscribers += 1

    def unsubscribe(self) -> None:
        self.subscribers -= 1


class EventHub:
    """Channels of the active jobs, and the WatchJob logic on top of them and the store."""

    def __init__(
        self,
        store: JobStore,
        *,
        ring_size: int,
        log_size: int,
        budget: StreamBudget,
        followers: Followers | None = None,
    ) -> None:
        """`followers`: the store is shared with other servers, whose jobs are followed from
        the store for the watchers here."""
        self._store = store
        self.budget = budget
        self._followers = followers
        #: (job_id, resync) -> final snapshot of a finished job, serialized once (in _WIRE) and
        #: sent to every stream that watches it; the newest _FINALS are kept.
        self._finals: collections.OrderedDict[tuple[str, bool], scan_pb2.JobEvent] = (
            collections.OrderedDict()
        )
        self._ring_size = ring_size
        self._log_size = log_size  # events per job the store keeps (--event-log-size)
        self._channels: dict[str, JobChannel] = {}
        self.closed = False
        self._shutting_down = False
        self._all_closed = asyncio.Event()

    @property
    def watched_jobs(self) -> int:
        return len(self._channels)

    def open(self, job: scan_pb2.Job) -> JobChannel:
        """The channel of a job that becomes active here: a new one, or on a shared store the
        one its watchers here followed while another server had it (or nobody had claimed it),
        fed from now on by this server's commits."""
        channel = None if self._followers is None else self._followers.adopt(job.job_id)
        if channel is None:
            channel = JobChannel(job, self._ring_size)
        self._channels[job.job_id] = channel
        return channel

    def release(self, job_id: str) -> None:
        """The job is terminal: new watchers read it from the store. Current ones drain."""
        self._channels.pop(job_id, None)

    def begin_shutdown(self) -> None:
        """The server is stopping. Until `close_all()`, a stream that would end for that reason
        (its job was interrupted and re-queued, or is not run here any more) waits, and ends
        with UNAVAILABLE at `close_all()`, which comes once gRPC takes no new calls: its client
        then reconnects to the next server, not to this one while it stops (a call that reaches
        gRPC as its shutdown begins is cancelled, which a client must not take for an answer)."""
        self._shutting_down = True

    def close_all(self) -> None:
        self.closed = True
        self._all_closed.set()
        for channel in self._channels.values():
            channel.close()
        if self._followers is not None:
            self._followers.close_all()

    async def wait_ended(self, job_id: str, timeout: float) -> bool:
        """Wait at most `timeout` seconds for the end of a job run on another server (a
        shared store); True once it ended (or is gone)."""
        if self._followers is None or self.closed:
            raise Unavailable("the server is shutting down: ask again on another server")
        channel = await self._followers.attach(job_id)
        if channel is None:
            return True
        try:
            async with asyncio.timeout(timeout):
                while not channel.end_sequence:
                    if channel.closed:
                        raise Unavailable("the server is shutting down: ask again")
                    await channel.changed()
        except TimeoutError:
            return False
        finally:
            self._followers.detach(job_id, channel)
        return True

    async def _until_closed(self) -> None:
        """During a shutdown, until close_all(); else at once."""
        if self._shutting_down:
            await self._all_closed.wait()

    async def watch(
        self, job_id: str, after_sequence: int
    ) -> AsyncGenerator[scan_pb2.JobEvent, None]:
        """The event stream of WatchJob, each message's bytes held in the stream budget from
        before it is handed to gRPC until gRPC has sent it (`streams.py`). A stream that cannot
        get its next message into the budget ends with RESOURCE_EXHAUSTED."""
        budget = self.budget
        sent = max(after_sequence, 0)
        async with contextlib.aclosing(self._events(job_id, after_sequence)) as events:
            async for event in events:
                size = wire_size(event)
                if not budget.take(size) and not await budget.wait_take(size):
                    raise ResourceExhausted(
                        f"the server holds {budget.limit} bytes for streams that do not read "
                        "(--stream-buffer-budget) and they are in use: read faster, or resume "
                        f"with after_sequence={sent}",
                        1.0,
                        reason="STREAM_BUFFER_BUDGET",
                    )
                try:
                    yield event  # returns once gRPC has sent it
                finally:
                    budget.release(size)
                sent = event.sequence

    async def _events(
        self, job_id: str, after_sequence: int
    ) -> AsyncGenerator[scan_pb2.JobEvent, None]:
        """Snapshot (or resume), then events until terminal."""
        if self.closed:
            raise Unavailable("the server is shutting down: reconnect and resume")
        channel, followers = await self._channel(job_id)
        if channel is None:
            async for event in self._watch_stored(job_id, after_sequence):
                yield event
            return
        channel.subscribe()
        try:
            cursor = after_sequence
            if after_sequence <= 0 or after_sequence > channel.last_sequence:
                snapshot = channel.snapshot(resync=after_sequence > 0)
                cursor = snapshot.sequence  # before yielding: events may arrive meanwhile
                yield snapshot
                if ends_stream(snapshot):
                    return
            elif after_sequence + 1 < channel.first_sequence():
                replayed = await self._replay(job_id, after_sequence, channel.first_sequence() - 1)
                if replayed is None:
                    snapshot = channel.snapshot(resync=True)
                    cursor = snapshot.sequence
                    yield snapshot
                    if ends_stream(snapshot):
                        return
                else:
                    for event in replayed:
                        yield event
                        cursor = event.sequence
            # Follow the ring: per event, a comparison and the send; one wake-up per publish.
            while True:
                if channel.end_sequence and cursor >= channel.end_sequence:
                    return  # resumed at (or after) the terminal event: nothing follows it
                if channel.last_sequence <= cursor:
                    if channel.closed:
                        await self._shut_down(cursor)
                    await channel.changed()
                    continue
                batch = channel.events_after(cursor)
                if batch is None:  # fell behind the ring: coalesce into a fresh snapshot
                    snapshot = channel.snapshot(resync=True)
                    cursor = snapshot.sequence
                    yield snapshot
                    if ends_stream(snapshot):
                        return
                elif not batch:  # never (the ring ends at last_sequence); no spinning if so
                    await channel.changed()
                for event in batch or ():
                    yield event
                    cursor = event.sequence
                    if cursor == channel.end_sequence:
                        return
        finally:
            channel.unsubscribe()
            if followers is not None:
                followers.detach(job_id, channel)

    async def _shut_down(self, cursor: int) -> NoReturn:
        """A stream whose channel a shutdown closed: UNAVAILABLE, with where to resume."""
        await self._until_closed()
        raise Unavailable(
            f"the server is shutting down: reconnect and resume with after_sequence={cursor}"
        )

    async def _channel(self, job_id: str) -> tuple[JobChannel | None, Followers | None]:
        """The channel of an active job run here; else on a shared store the channel of a job
        queued or run elsewhere, with the followers to `detach` it from; else None."""
        channel = self._channels.get(job_id)
        if channel is not None or self._followers is None:
            return channel, None
        return await self._followers.attach(job_id), self._followers

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
        found = await self._store.job_state(job_id)
        if found is None:
            raise job_not_found(job_id)
        state, last_sequence = found
        if not is_terminal(state):
            # Active, but not run by this server (it is shutting down, or another server runs
            # it): an OK end here would wrongly tell the client the stream is complete.
            await self._until_closed()
            raise Unavailable(
                f"job {job_id} is not running on this server right now: reconnect and resume "
                f"with after_sequence={max(after_sequence, 0)}"
            )
        if 0 < after_sequence <= last_sequence:
            replayed = await self._replay(job_id, after_sequence, last_sequence)
            if replayed is not None:
                for event in replayed:
                    yield event
                return
        snapshot = await self._final_snapshot(job_id, resync=after_sequence > 0)
        if snapshot is None:
            raise job_not_found(job_id)  # deleted meanwhile
        yield snapshot

    async def _final_snapshot(self, job_id: str, *, resync: bool) -> scan_pb2.JobEvent | None:
        """The final snapshot of a finished job, read and serialized once for all its
        watchers (a finished job never changes; a deleted one is found missing first)."""
        key = (job_id, resync)
        event = self._finals.get(key)
        if event is not None:
            self._finals.move_to_end(key)
            return event
        job = await self._store.get_job(job_id)
        if job is None:
            return None
        event = self._finals.get(key)  # another stream read it meanwhile
        if event is None:
            event = snapshot_event(job, resync=resync)
            _WIRE[id(event)] = (event, event.SerializeToString())
            self._finals[key] = event
            while len(self._finals) > _FINALS:
                _WIRE.pop(id(self._finals.popitem(last=False)[1]), None)
        return event
