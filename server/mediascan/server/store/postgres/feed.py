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

from ..protocol import CancelOutcome, JobChange
from .database import PgDatabase
from .jobs import apply_change
from .listener import PgListener
from .notify import CANCEL, EVENTS, PROBE, QUEUE, notify
from .schema import QUEUED, RUNNING, Connection

log = logging.getLogger(__name__)


class PostgresFeed:
    """The notifications of one server, the listeners they go to, and the operations of
    `JobFeed`."""

    def __init__(self, db: PgDatabase, *, node: str) -> None:
        self._db = db
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
            },
            on_connected=self._resync,
            send_probe=self._probe,
        )
        self._listening: asyncio.Task[None] | None = None

    # -- the life cycle of the LISTEN connection ---------------------------------------------

    def start_listening(self) -> list[asyncio.Task[None]]:
        """Start the LISTEN connection's task (`db-listener`, the server supervises it)."""
        if self._listening is None:
            self._listening = asyncio.create_task(self.listener.run(), name="db-listener")
        return [self._listening]

    async def stop_listening(self) -> None:
        task, self._listening = self._listening, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

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
