"""The job queries on PostgreSQL: jobs, their events, file errors and request ids, and the
claim (`FOR UPDATE SKIP LOCKED`: servers claiming at once each take a different job)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from typing import Any

from mediascan.v1 import scan_pb2

from ...jobs import ScanSpec
from ..protocol import ChangedJob, FileErrorRows, InsertOutcome, JobChange, LeaseLost
from . import submits
from .database import PgDatabase
from .notify import EVENTS, EVENTS_INTERVAL, QUEUE, QUEUE_INTERVAL, NotifyLimiter, notify
from .schema import QUEUED, RUNNING, TERMINAL_SQL, Connection

#: The next job to run: the QUEUED one of the highest priority, first queued first (the
#: partial index `jobs_queued`), skipping the rows other servers' claims hold locked. The
#: claim changes the job's message in Python (`JobChange`), so it is this SELECT, the change
#: and an UPDATE in one transaction rather than one UPDATE ... RETURNING.
#: The next job this server may claim: the oldest of the highest priority among the QUEUED
#: jobs whose folder is under its allowed roots (%s: their paths; none allows any folder).
NEXT_QUEUED = (
    f"SELECT job, cancel_requested FROM jobs WHERE state = {QUEUED} AND ("
    " cardinality(%s::text[]) = 0 OR EXISTS (SELECT 1 FROM unnest(%s::text[]) AS r(root)"
    "  WHERE path = r.root OR starts_with(path, rtrim(r.root, '/') || '/'))) "
    "ORDER BY priority DESC, created LIMIT 1 FOR UPDATE SKIP LOCKED"
)
#: `lease_until` of a job claimed or renewed now, for a lease of %s seconds.
LEASE_UNTIL = "now() + %s * interval '1 second'"
_SAVE = (
    "UPDATE jobs SET state = %s, end_ns = %s, last_sequence = %s, attempt = %s, node = %s, "
    "job = %s WHERE job_id = %s"
)


class PostgresJobs:
    """Jobs in the PostgreSQL database (the `JobStore` half of `PostgresStore`).

    Every write that other servers need to hear of notifies inside its transaction (`notify.py`):
    a queued or re-queued job on QUEUE, a job's committed events on EVENTS (`job_id:sequence`,
    at most EVENTS_INTERVAL apart per job unless the state changed)."""

    def __init__(
        self,
        db: PgDatabase,
        *,
        node: str,
        max_queued: int,
        lease: float,
        roots: Sequence[str] = (),
    ) -> None:
        self._db = db
        #: The allowed roots (`--allow-root`): this server claims only the jobs below them.
        self._roots = list(roots)
        self._node = node
        self._lease = lease
        self._max_queued = max_queued
        self.notices = NotifyLimiter(self._send_notify)

    async def _send_notify(self, channel: str, payload: str) -> None:
        async def op(conn: Connection) -> None:
            await notify(conn, channel, payload)

        await self._db.commit(op)

    def _events_now(self, job_id: str, *, urgent: bool) -> bool:
        return self.notices.now(EVENTS, job_id, interval=EVENTS_INTERVAL, urgent=urgent)

    @property
    def node(self) -> str:
        """The name this server claims jobs under (`Job.node`)."""
        return self._node

    def insert_job(self, job: scan_pb2.Job, spec: ScanSpec) -> asyncio.Future[InsertOutcome]:
        """Commit a new job (its event 1 is not stored, as on SQLite), unless its request_id
        or an identical active job names another (`submits.insert_job`)."""
        blob = job.SerializeToString()
        wake = self.notices.now(QUEUE, "", interval=QUEUE_INTERVAL)

        async def op(conn: Connection) -> InsertOutcome:
            outcome = await submits.insert_job(conn, job, spec, blob, max_queued=self._max_queued)
            if outcome.created and wake:
                await notify(conn, QUEUE, "")
            return outcome

        written = self._db.write(op)
        if not wake:
            written.add_done_callback(self._wake_later)
        return written

    def _wake_later(self, written: asyncio.Future[InsertOutcome]) -> None:
        """A job committed without its queue notification (too soon after the last one)."""
        if not written.cancelled() and written.exception() is None and written.result().created:
            self.notices.later(QUEUE, "", "", interval=QUEUE_INTERVAL)

    async def claim_next(self, start: JobChange) -> ChangedJob | None:
        """Move the next QUEUED job to RUNNING on this node with `start`, its events stored,
        its lease taken (`leases.py`) and the file errors of an earlier attempt dropped, in one
        transaction."""

        async def op(conn: Connection) -> ChangedJob | None:
            cursor = await conn.execute(NEXT_QUEUED.encode(), (self._roots, self._roots))
            row = await cursor.fetchone()
            if row is None:
                return None
            job = scan_pb2.Job.FromString(row[0])
            job.node = self._node
            claimed = await apply_change(conn, job, start, expected_state=QUEUED)
            await conn.execute(
                f"UPDATE jobs SET lease_until = {LEASE_UNTIL} WHERE job_id = %s".encode(),
                (self._lease, job.job_id),
            )
            await conn.execute("DELETE FROM file_errors WHERE job_id = %s", (job.job_id,))
            await self._notify_events(conn, claimed.job)
            if row[1]:
                return dataclasses.replace(claimed, cancel_requested=True)
            return claimed

        return await self._db.commit(op)

    async def recover(self, requeue: JobChange) -> list[ChangedJob]:
        """Every QUEUED job, and the jobs stored RUNNING on this node (cut off by its crash or
        shutdown) changed by `requeue`, oldest first, in one transaction. Jobs RUNNING on
        other nodes are theirs."""

        async def op(conn: Connection) -> list[ChangedJob]:
            cursor = await conn.execute(
                f"SELECT job FROM jobs WHERE state = {QUEUED} OR (state = {RUNNING} AND "
                "node IN ('', %s)) ORDER BY created FOR UPDATE",
                (self._node,),
            )
            found: list[ChangedJob] = []
            for (blob,) in await cursor.fetchall():
                job = scan_pb2.Job.FromString(blob)
                if job.state == RUNNING:
                    found.append(await apply_change(conn, job, requeue, expected_state=RUNNING))
                    await self._notify_events(conn, job)
                else:
                    found.append(ChangedJob(job=job, events=[], previous_state=job.state))
            if found:
                await notify(conn, QUEUE, "")
            return found

        return await self._db.commit(op)

    async def record(
        self,
        job: scan_pb2.Job,
        events: Sequence[scan_pb2.JobEvent],
        *,
        expected_state: int | None = None,
        file_errors: FileErrorRows = (),
        clear_file_errors: bool = False,
    ) -> bool:
        """Save `job`, append `events` and store `file_errors`, after dropping the job's
        earlier ones with `clear_file_errors`, in one transaction; with `expected_state`,
        only while the stored state is that one (False, nothing written, otherwise). Fenced:
        only while the stored attempt is the one this write is for (LeaseLost otherwise)."""
        blob = job.SerializeToString()
        errors = [(job.job_id, seq, error.SerializeToString()) for seq, error in file_errors]
        changed = any(event.WhichOneof("kind") == "state_change" for event in events)
        notice = bool(events) and self._events_now(job.job_id, urgent=changed)
        payload = f"{job.job_id}:{job.last_sequence}"

        # A re-queue (`requeued`) moved the job on: it is written for the attempt before.
        attempt = job.attempt - 1 if job.state == QUEUED else job.attempt

        async def op(conn: Connection) -> bool:
            if not await _save(conn, job, blob, expected_state, attempt=attempt):
                await _check_fence(conn, job.job_id, attempt)
                return False
            await _insert_events(conn, events)
            if notice:
                await notify(conn, EVENTS, payload)
            if changed and job.state == QUEUED:  # re-queued: any server may run it
                await notify(conn, QUEUE, "")
            if clear_file_errors:
                await conn.execute("DELETE FROM file_errors WHERE job_id = %s", (job.job_id,))
            if errors:
                async with conn.cursor() as cursor:
                    await cursor.executemany(
                        "INSERT INTO file_errors (job_id, seq, error) VALUES (%s, %s, %s) "
                        "ON CONFLICT (job_id, seq) DO UPDATE SET error = EXCLUDED.error",
                        errors,
                    )
            return True

        saved = await self._db.commit(op)
        if saved and events and not notice:
            self.notices.later(EVENTS, job.job_id, payload, interval=EVENTS_INTERVAL)
        return saved

    async def _notify_events(self, conn: Connection, job: scan_pb2.Job) -> None:
        """The notification of a state change this transaction stores (never held back)."""
        self._events_now(job.job_id, urgent=True)
        await notify(conn, EVENTS, f"{job.job_id}:{job.last_sequence}")

    async def trim_events(self, job_id: str, keep: int) -> None:
        """Keep only the newest `keep` events of a job."""

        async def op(conn: Connection) -> None:
            await conn.execute(
                "DELETE FROM job_events WHERE job_id = %s AND sequence <= "
                "(SELECT max(sequence) FROM job_events WHERE job_id = %s) - %s",
                (job_id, job_id, keep),
            )

        await self._db.commit(op)

    async def find_request(self, request_id: str) -> tuple[scan_pb2.Job, str] | None:
        """The job an earlier submit with this request_id created, and its fingerprint."""

        async def op(conn: Connection) -> tuple[scan_pb2.Job, str] | None:
            return await submits.find_request(conn, request_id)

        return await self._db.read(op)

    async def remember_request(self, request_id: str, fingerprint: str, job_id: str) -> None:
        """Let a retry of a submit that joined an active job find that job (AIP-155)."""

        async def op(conn: Connection) -> None:
            await submits.remember_request(conn, request_id, fingerprint, job_id)

        await self._db.bounded(self._db.write(op))

    async def get_job(self, job_id: str) -> scan_pb2.Job | None:
        async def op(conn: Connection) -> scan_pb2.Job | None:
            cursor = await conn.execute("SELECT job FROM jobs WHERE job_id = %s", (job_id,))
            row = await cursor.fetchone()
            return None if row is None else scan_pb2.Job.FromString(row[0])

        return await self._db.read(op)

    async def list_jobs(
        self, *, state: int, limit: int, after: tuple[int, str] | None
    ) -> list[scan_pb2.Job]:
        """Jobs newest first; `after` is the (create_ns, job_id) of the previous page's last."""

        async def op(conn: Connection) -> list[scan_pb2.Job]:
            where: list[str] = []
            params: list[Any] = []
            if state:
                where.append("state = %s")
                params.append(state)
            if after is not None:
                where.append("(create_ns, job_id) < (%s, %s)")
                params.extend(after)
            sql = "SELECT job FROM jobs"
            if where:
                sql += " WHERE " + " AND ".join(where)
            sql += " ORDER BY create_ns DESC, job_id DESC LIMIT %s"
            params.append(limit)
            cursor = await conn.execute(sql.encode(), params)
            return [scan_pb2.Job.FromString(row[0]) for row in await cursor.fetchall()]

        return await self._db.read(op)

    async def delete_job(self, job_id: str) -> bool:
        """Forget a finished job and its events; False if no finished job has that id."""

        async def op(conn: Connection) -> bool:
            cursor = await conn.execute(
                f"DELETE FROM jobs WHERE job_id = %s AND state IN ({TERMINAL_SQL})", (job_id,)
            )
            if cursor.rowcount == 0:
                return False
            await _forget(conn, [job_id])
            return True

        return await self._db.bounded(self._db.write(op))

    async def purge_finished(self, ended_before_ns: int) -> int:
        """Delete finished jobs that ended before the given time; returns how many."""

        async def op(conn: Connection) -> int:
            cursor = await conn.execute(
                f"DELETE FROM jobs WHERE state IN ({TERMINAL_SQL}) AND end_ns < %s "
                "RETURNING job_id",
                (ended_before_ns,),
            )
            ids = [row[0] for row in await cursor.fetchall()]
            await _forget(conn, ids)
            return len(ids)

        return await self._db.commit(op)

    async def job_state(self, job_id: str) -> tuple[int, int] | None:
        """(state, last_sequence) of a stored job, without reading the job itself."""

        async def op(conn: Connection) -> tuple[int, int] | None:
            cursor = await conn.execute(
                "SELECT state, last_sequence FROM jobs WHERE job_id = %s", (job_id,)
            )
            row = await cursor.fetchone()
            return None if row is None else (int(row[0]), int(row[1]))

        return await self._db.read(op)

    async def file_errors(
        self, job_id: str, *, after_seq: int, limit: int, max_bytes: int
    ) -> tuple[list[scan_pb2.FileError], int | None]:
        """Up to `limit` file errors of a job with seq > after_seq, and no more than `max_bytes`
        of them serialized (at least one); with the seq of the last one if more follow."""

        async def op(conn: Connection) -> tuple[list[scan_pb2.FileError], int | None]:
            cursor = await conn.execute(
                "SELECT seq, error FROM file_errors WHERE job_id = %s AND seq > %s "
                "ORDER BY seq LIMIT %s",
                (job_id, after_seq, limit + 1),
            )
            errors: list[scan_pb2.FileError] = []
            size, last = 0, after_seq
            for seq, blob in await cursor.fetchall():
                size += len(blob) + 8  # the field's tag and length, generously
                if len(errors) == limit or (errors and size > max_bytes):
                    return errors, last
                errors.append(scan_pb2.FileError.FromString(blob))
                last = seq
            return errors, None

        return await self._db.read(op)

    async def events_after(
        self, job_id: str, after_sequence: int, limit: int
    ) -> list[scan_pb2.JobEvent]:
        async def op(conn: Connection) -> list[scan_pb2.JobEvent]:
            cursor = await conn.execute(
                "SELECT event FROM job_events WHERE job_id = %s AND sequence > %s "
                "ORDER BY sequence LIMIT %s",
                (job_id, after_sequence, limit),
            )
            return [scan_pb2.JobEvent.FromString(row[0]) for row in await cursor.fetchall()]

        return await self._db.read(op)


async def apply_change(
    conn: Connection, job: scan_pb2.Job, change: JobChange, *, expected_state: int
) -> ChangedJob:
    """Apply `change` to a job whose row this transaction holds locked, and store it."""
    previous = job.state
    events = change(job)
    if not await _save(conn, job, job.SerializeToString(), expected_state):
        raise RuntimeError(f"job {job.job_id} changed inside its own transaction")
    await _insert_events(conn, events)
    return ChangedJob(job=job, events=events, previous_state=previous)


async def _check_fence(conn: Connection, job_id: str, attempt: int) -> None:
    """LeaseLost if the job's stored attempt is no longer `attempt` (a reclaim moved it on)."""
    cursor = await conn.execute("SELECT attempt FROM jobs WHERE job_id = %s", (job_id,))
    row = await cursor.fetchone()
    if row is not None and int(row[0]) != attempt:
        raise LeaseLost(
            f"job {job_id}: attempt {attempt} is over (the job is at attempt {row[0]}: its lease "
            "expired and another server reclaimed it)"
        )


async def _save(
    conn: Connection,
    job: scan_pb2.Job,
    blob: bytes,
    expected_state: int | None,
    *,
    attempt: int | None = None,
) -> bool:
    end_ns = job.end_time.ToNanoseconds() if job.HasField("end_time") else None
    sql = _SAVE
    params: tuple[Any, ...] = (
        job.state,
        end_ns,
        job.last_sequence,
        job.attempt,
        job.node,
        blob,
        job.job_id,
    )
    if expected_state is not None:
        sql += " AND state = %s"
        params += (expected_state,)
    if attempt is not None:  # fencing: only the attempt this write is for
        sql += " AND attempt = %s"
        params += (attempt,)
    cursor = await conn.execute(sql.encode(), params)
    return cursor.rowcount == 1


async def _insert_events(conn: Connection, events: Sequence[scan_pb2.JobEvent]) -> None:
    if not events:
        return
    async with conn.cursor() as cursor:
        await cursor.executemany(
            "INSERT INTO job_events (job_id, sequence, event) VALUES (%s, %s, %s)",
            [(e.job_id, e.sequence, e.SerializeToString()) for e in events],
        )


async def _forget(conn: Connection, ids: list[str]) -> None:
    """Delete what belongs to these jobs besides their rows."""
    if not ids:
        return
    for table in ("job_events", "requests", "file_errors"):
        await conn.execute(f"DELETE FROM {table} WHERE job_id = ANY(%s)".encode(), (ids,))
