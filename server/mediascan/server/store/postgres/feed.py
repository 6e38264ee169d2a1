"""What the servers sharing one PostgreSQL database tell each other (the `JobFeed` half of
`PostgresStore`): the notifications their LISTEN connection (`listener.py`) receives, handed
to the engine's and the event hub's listeners, and the reads and writes only a shared
database needs (following a job another server runs, CancelJob of a job another server runs
or has queued)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from mediascan.v1 import scan_pb2

from ..protocol import CancelOutcome, ChangedJob, JobChange
from .batches import PostgresProbeQueue
from .database import PgDatabase
from .jobs import apply_change
from .leases import LeaseKeeper
from .listener import PgListener
from .notify import BATCHES, CANCEL, EVENTS, LIBRARY, PROBE, QUEUE, notify
from .recorded import RecordedWrites
from .schema import QUEUED, RUNNING, Connection

log = logging.getLogger(__name__)


class PostgresFeed:
    """The notifications of one server, the listeners they go to, and the operations of
    `JobFeed`."""

    def __init__(
        self, db: PgDatabase, writes: RecordedWrites, *, node: str, lease: float = 15.0
    ) -> None:
        self._db = db
        self.leases = LeaseKeeper(db, node=node, lease=lease)
        #: The batches of files to probe that the servers share.
        self.batches = PostgresProbeQueue(db, writes, node=node, lease=lease)
        #: The library listeners, told of every server's library changes.
        self._libraries = writes
        self.leases.add_lost_listener(self.batches.claims_lost)
        self._node = node
        self._wakeup_listeners: list[Callable[[], None]] = []
        self._event_listeners: list[Callable[[str, int], None]] = []
        self._cancel_listeners: list[Callable[[str], None]] = []
        self._resync_listeners: list[Callable[[], None]] = []
        self.listener = PgListener(
            db.listen_conninfo,
            db.where,
            handlers={
                QUEUE: self._queued,
                EVENTS: self._events,
                CANCEL: self._cancel,
                BATCHES: self.batches.notified,
                LIBRARY: writes.notified,
            },
            on_connected=self._resync,
            send_probe=self._probe,
        )
        self._listening: asyncio.Task[None] | None = None
        self._leasing: asyncio.Task[None] | None = None

    # -- the life cycle of the LISTEN connection ---------------------------------------------

    def start_listening(self) -> list[asyncio.Task[None]]:
        """Start the LISTEN connection's task (`db-listener`) and the leases' (`db-leases`);
        the server supervises both."""
        if self._listening is None:
            self._listening = asyncio.create_task(self.listener.run(), name="db-listener")
        if self._leasing is None:
            self._leasing = asyncio.create_task(self.leases.run(), name="db-leases")
        return [self._listening, self._leasing]

    async def stop_listening(self) -> None:
        tasks = [t for t in (self._listening, self._leasing) if t is not None]
        self._listening = self._leasing = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- listeners ------------------------------------------------------------------------------

    def add_wakeup_listener(self, listener: Callable[[], None]) -> None:
        """Called when another server (or this one) queued a job, and after a reconnection."""
        self._wakeup_listeners.append(listener)

    def add_event_listener(self, listener: Callable[[str, int], None]) -> None:
        self._event_listeners.append(listener)

    def add_cancel_listener(self, listener: Callable[[str], None]) -> None:
        self._cancel_listeners.append(listener)

    def add_resync_listener(self, listener: Callable[[], None]) -> None:
        self._resync_listeners.append(listener)

    def add_lease_lost_listener(self, listener: Callable[[], None]) -> None:
        self.leases.add_lost_listener(listener)

    def set_reclaim(self, change: JobChange, announce: Callable[[ChangedJob], None]) -> None:
        self.leases.set_reclaim(change, announce)

    def _queued(self, payload: str) -> None:
        for listener in self._wakeup_listeners:
            listener()

    def _events(self, payload: str) -> None:
        job_id, _, sequence = payload.rpartition(":")
        if job_id and sequence.isdigit():
            for listener in self._event_listeners:
                listener(job_id, int(sequence))

    def _cancel(self, payload: str) -> None:
        for listener in self._cancel_listeners:
            listener(payload)

    def _resync(self) -> None:
        for listener in (*self._wakeup_listeners, *self._resync_listeners):
            listener()
        self.batches.resync()
        self._libraries.resync()

    async def _probe(self, token: str) -> None:
        async def op(conn: Connection) -> None:
            await notify(conn, PROBE, token)

        await self._db.bounded(self._db.write(op))

    # -- reads and writes of a shared database ------------------------------------------------

    async def follow_job(
        self, job_id: str, after_sequence: int, limit: int
    ) -> tuple[scan_pb2.Job | None, list[scan_pb2.JobEvent]]:
        """The job and its events after `after_sequence` (the newest `limit` at most), in one
        snapshot (REPEATABLE READ): the job's last_sequence is its last stored event's."""

        async def op(conn: Connection) -> tuple[scan_pb2.Job | None, list[scan_pb2.JobEvent]]:
            async with conn.transaction():
                await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                cursor = await conn.execute("SELECT job FROM jobs WHERE job_id = %s", (job_id,))
                row = await cursor.fetchone()
                if row is None:
                    return None, []
                job = scan_pb2.Job.FromString(row[0])
                start = max(after_sequence, job.last_sequence - limit)
                if start >= job.last_sequence:
                    return job, []
                cursor = await conn.execute(
                    "SELECT event FROM job_events WHERE job_id = %s AND sequence > %s "
                    "ORDER BY sequence",
                    (job_id, start),
                )
                events = [scan_pb2.JobEvent.FromString(r[0]) for r in await cursor.fetchall()]
                return job, events

        return await self._db.read(op)

    async def request_cancel(self, job_id: str, cancel: JobChange) -> CancelOutcome | None:
        """QUEUED: CANCELLED now (guarded by the row lock and the state); RUNNING: marked
        `cancel_requested` and its server notified; finished: unchanged. One transaction."""

        async def op(conn: Connection) -> CancelOutcome | None:
            cursor = await conn.execute(
                "SELECT job FROM jobs WHERE job_id = %s FOR UPDATE", (job_id,)
            )
            row = await cursor.fetchone()
            if row is None:
                return None
            job = scan_pb2.Job.FromString(row[0])
            if job.state == QUEUED:
                return await self._cancel_queued(conn, job, cancel)
            if job.state != RUNNING:
                return CancelOutcome(job=job)
            await conn.execute(
                "UPDATE jobs SET cancel_requested = true WHERE job_id = %s", (job_id,)
            )
            await notify(conn, CANCEL, job_id)
            return CancelOutcome(job=job, requested=True)

        return await self._db.bounded(self._db.write(op))

    async def _cancel_queued(
        self, conn: Connection, job: scan_pb2.Job, cancel: JobChange
    ) -> CancelOutcome:
        changed = await apply_change(conn, job, cancel, expected_state=QUEUED)
        await notify(conn, EVENTS, f"{job.job_id}:{job.last_sequence}")
        return CancelOutcome(
            job=changed.job, events=changed.events, previous_state=changed.previous_state
        )

    async def cancels_requested(self) -> list[str]:
        """The jobs RUNNING on this server whose cancel was asked for."""

        async def op(conn: Connection) -> list[str]:
            cursor = await conn.execute(
                f"SELECT job_id FROM jobs WHERE state = {RUNNING} AND node = %s "
                "AND cancel_requested",
                (self._node,),
            )
            return [row[0] for row in await cursor.fetchall()]

        return await self._db.read(op)
