"""Following jobs that run on other servers sharing the store (PostgreSQL): a `JobChannel` per
such job watched here, fed from the store's events table, so that WatchJob on any server takes
the same path through the event hub as for a job run here (snapshot, ring, resume, resync).

A followed job's channel is read again when a notification says that events up to a sequence
were committed (`JobFeed.add_event_listener`), when the notifications restart after a cut
(`add_resync_listener`: whatever they would have said is read again), and every RECHECK
seconds in any case (the safety net, e.g. behind a pooler that does not deliver them). However
many streams watch a job, and however many notifications come while a read is on its way,
the server makes one read at a time per job: notifications only mark the job to be read again.
The channel goes once its last watcher leaves; if this server claims the job meanwhile, the
event hub adopts the channel, which its own commits feed from then on."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging

from .events import JobChannel
from .jobs import is_terminal
from .store import JobFeed, JobStore, StorageError

log = logging.getLogger(__name__)

#: Seconds between two reads of a followed job without a notification.
RECHECK = 5.0


@dataclasses.dataclass(eq=False)
class _Followed:
    channel: JobChannel
    #: Set by a notification: read the job again.
    dirty: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    #: Streams (and CancelJob waits) holding the channel.
    holders: int = 0
    task: asyncio.Task[None] | None = None


class Followers:
    """The channels of the jobs run elsewhere that this server's watchers follow."""

    def __init__(self, store: JobStore, feed: JobFeed, *, ring_size: int) -> None:
        self._store = store
        self._feed = feed
        self._ring_size = ring_size
        self._followed: dict[str, _Followed] = {}
        self._opening: dict[str, asyncio.Future[_Followed | None]] = {}
        self.closed = False
        feed.add_event_listener(self.notified)
        feed.add_resync_listener(self.resync)

    async def attach(self, job_id: str) -> JobChannel | None:
        """The channel of an active job, followed from the store until `detach`; None when
        the job is finished or unknown (the store answers for those)."""
        while True:
            followed = self._followed.get(job_id)
            if followed is None:
                opening = self._opening.get(job_id)
                if opening is None:
                    opening = self._opening[job_id] = asyncio.ensure_future(self._open(job_id))
                    opening.add_done_callback(lambda _: self._opening.pop(job_id, None))
                followed = await asyncio.shield(opening)
                if followed is None:
                    return None
            if self._followed.get(job_id) is followed:  # not dropped while this one waited
                followed.holders += 1
                return followed.channel

    def detach(self, job_id: str, channel: JobChannel) -> None:
        followed = self._followed.get(job_id)
        if followed is None or followed.channel is not channel:  # adopted, or gone
            return
        followed.holders -= 1
        if followed.holders <= 0:
            self._drop(job_id, followed)

    def adopt(self, job_id: str) -> JobChannel | None:
        """This server claimed the job: its followed channel, if any, is fed by the server's own
        commits from now on (its watchers stay), and is no longer read from the store."""
        followed = self._followed.get(job_id)
        if followed is None:
            return None
        self._drop(job_id, followed)
        return followed.channel

    def notified(self, job_id: str, sequence: int) -> None:
        """Events of `job_id` up to `sequence` were committed (by any server)."""
        followed = self._followed.get(job_id)
        if followed is not None and sequence > followed.channel.last_sequence:
            followed.dirty.set()

    def resync(self) -> None:
        for followed in self._followed.values():
            followed.dirty.set()

    def close_all(self) -> None:
        """The server stops: every followed channel closes (its streams end UNAVAILABLE)."""
        self.closed = True
        for job_id, followed in list(self._followed.items()):
            self._drop(job_id, followed)
            followed.channel.close()

    async def _open(self, job_id: str) -> _Followed | None:
        job = await self._store.get_job(job_id)
        if job is None or is_terminal(job.state):
            return None
        followed = self._followed.get(job_id)  # opened meanwhile by another way in
        if followed is None:
            followed = self._followed[job_id] = _Followed(JobChannel(job, self._ring_size))
            # Events committed since the read above may have been notified before the job was
            # followed: read once more at once.
            followed.dirty.set()
            followed.task = asyncio.create_task(
                self._follow(job_id, followed), name=f"follow-{job_id}"
            )
        return followed

    def _drop(self, job_id: str, followed: _Followed) -> None:
        if self._followed.get(job_id) is followed:
            del self._followed[job_id]
        if followed.task is not None:
            followed.task.cancel()

    async def _follow(self, job_id: str, followed: _Followed) -> None:
        """Read the job's new events when told to (or every RECHECK) until its end. If this
        fails unexpectedly, the channel closes: its streams end UNAVAILABLE and reconnect."""
        try:
            await self._read_until_end(job_id, followed)
        except Exception:
            log.exception("following job %s failed", job_id)
            followed.channel.close()

    async def _read_until_end(self, job_id: str, followed: _Followed) -> None:
        channel = followed.channel
        while channel.end_sequence == 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RECHECK):
                    await followed.dirty.wait()
            followed.dirty.clear()
            try:
                job, events = await self._feed.follow_job(
                    job_id, channel.last_sequence, self._ring_size
                )
            except StorageError as exc:  # read again at the next notification or recheck
                log.warning("cannot read the events of job %s: %s", job_id, exc)
                continue
            if job is None:  # deleted: it had ended, and its end was missed
                channel.close()
                return
            channel.catch_up(job, events)
