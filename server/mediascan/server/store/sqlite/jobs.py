"""The job queries: jobs, their events, file errors and request ids, and the claim."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from typing import Any

from mediascan.v1 import scan_pb2

from ...jobs import ScanSpec
from ..protocol import (
    ChangedJob,
    FileErrorRows,
    InsertOutcome,
    JobChange,
    RequestIdReused,
)
from .database import Database
from .schema import QUEUED, RUNNING, TERMINAL_SQL

#: The next job to run: the QUEUED one of the highest priority, oldest first. The partial
#: index `jobs_queued` holds exactly these, in this order, so a claim reads one index entry
#: (3 µs with 20,000 jobs queued); left to itself, the planner would take `jobs_by_state` and
#: sort every queued job (7 ms), hence INDEXED BY.
NEXT_QUEUED = (
    f"SELECT job_id, job FROM jobs INDEXED BY jobs_queued WHERE state = {QUEUED} "
    "ORDER BY priority DESC, create_ns, job_id LIMIT 1"
)
_SAVE = "UPDATE jobs SET state = ?, end_ns = ?, last_sequence = ?, job = ? WHERE job_id = ?"


class SqliteJobs:
    """Jobs in the SQLite database (the `JobStore` half of `SqliteStore`)."""

    def __init__(self, db: Database, *, node: str = "") -> None:
        self._db = db
        self._node = node  #: `Job.node` of the jobs this server claims

    @property
    def node(self) -> str:
        """The name this server claims jobs under (`Job.node`)."""
        return self._node

    def insert_job(self, job: scan_pb2.Job, spec: ScanSpec) -> asyncio.Future[InsertOutcome]:
        """Commit a new job, unless its request_id names an existing job.

        Its first event (sequence 1, the state change to QUEUED) is not stored: a resume asks
        for the events after one it received, so it never needs event 1, and a watch from the
        start begins with a snapshot. That halves a submit's statements.

        The future fails with RequestIdReused when the request_id exists with a different
        request. The job is serialized here, on the loop, so that the writer thread holds the
        GIL for as little as it can.
        """
        job_row = (
            job.job_id,
            job.state,
            job.create_time.ToNanoseconds(),
            spec.request_id or None,
            spec.fingerprint or None,
            job.last_sequence,
            job.SerializeToString(),
            spec.priority,
        )

        def op(conn: sqlite3.Connection) -> InsertOutcome:
            if spec.request_id:
                found = _find_request(conn, spec.request_id)
                if found is not None:
                    existing, fingerprint = found
                    if fingerprint != spec.fingerprint:
                        raise RequestIdReused(existing.job_id)
                    return InsertOutcome(job=existing, created=False)
                _remember_request(conn, spec.request_id, spec.fingerprint, job.job_id)
            conn.execute(
                "INSERT INTO jobs (job_id, state, create_ns, request_id, fingerprint, "
                "last_sequence, job, priority) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                job_row,
            )
            return InsertOutcome(job=job, created=True)

        return self._db.queue_write(op)

    async def claim_next(self, start: JobChange) -> ChangedJob | None:
        """Move the next QUEUED job to RUNNING with `start`, its events stored and the file
        errors of an earlier attempt dropped, in one transaction of the writer thread (the
        only writer, so no other claim can interleave)."""

        def op(conn: sqlite3.Connection) -> ChangedJob | None:
            row = conn.execute(NEXT_QUEUED).fetchone()
            if row is None:
                return None
            job = scan_pb2.Job.FromString(row[1])
            job.node = self._node
            claimed = _apply(conn, job, start, expected_state=QUEUED)
            conn.execute("DELETE FROM file_errors WHERE job_id = ?", (job.job_id,))
            return claimed

        return await self._db.write(op)

    async def recover(self, requeue: JobChange) -> list[ChangedJob]:
        """Every job stored QUEUED or RUNNING, oldest first; RUNNING ones changed by `requeue`
        (back to QUEUED) and stored, in one transaction."""

        def op(conn: sqlite3.Connection) -> list[ChangedJob]:
            rows = conn.execute(
                f"SELECT job FROM jobs WHERE state NOT IN ({TERMINAL_SQL}) "
                "ORDER BY create_ns, job_id"
            ).fetchall()
            found: list[ChangedJob] = []
            for (blob,) in rows:
                job = scan_pb2.Job.FromString(blob)
                if job.state == RUNNING:
                    found.append(_apply(conn, job, requeue, expected_state=RUNNING))
                else:
                    found.append(ChangedJob(job=job, events=[], previous_state=job.state))
            return found

        return await self._db.write(op)

    async def record(
        self,
        job: scan_pb2.Job,
        events: Sequence[scan_pb2.JobEvent],
        *,
        expected_state: int | None = None,
        file_errors: FileErrorRows = (),
        clear_file_errors: bool = False,
    ) -> bool:
        """Save `job` (its row), append `events` and store `file_errors` ((seq, error) pairs),
        after dropping the job's earlier ones with `clear_file_errors` (a new attempt), in one
        transaction.

        With `expected_state`, the row is only written while its stored state is that one (the
        guarded transition): returns False, writing nothing, when another change won.
        """
        blob = job.SerializeToString()
        errors = [(job.job_id, seq, error.SerializeToString()) for seq, error in file_errors]

        def op(conn: sqlite3.Connection) -> bool:
            if not _save(conn, job, blob, expected_state):
                return False
            _insert_events(conn, events)
            if clear_file_errors:
                conn.execute("DELETE FROM file_errors WHERE job_id = ?", (job.job_id,))
            if errors:
                conn.executemany(
                    "INSERT OR REPLACE INTO file_errors (job_id, seq, error) VALUES (?, ?, ?)",
                    errors,
                )
            return True

        return await self._db.write(op)

    async def trim_events(self, job_id: str, keep: int) -> None:
        """Keep only the newest `keep` events of a job."""

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "DELETE FROM job_events WHERE job_id = ? AND sequence <= "
                "(SELECT MAX(sequence) FROM job_events WHERE job_id = ?) - ?",
                (job_id, job_id, keep),
            )

        await self._db.write(op)

    async def find_request(self, request_id: str) -> tuple[scan_pb2.Job, str] | None:
        """The job an earlier submit with this request_id created, if it is still kept, and
        that submit's fingerprint."""
        return await self._db.read(lambda conn: _find_request(conn, request_id))

    async def remember_request(self, request_id: str, fingerprint: str, job_id: str) -> None:
        """Let a retry of a submit that joined an active job find that job (AIP-155)."""

        def op(conn: sqlite3.Connection) -> None:
            _remember_request(conn, request_id, fingerprint, job_id)

        await self._db.bounded(self._db.queue_write(op))

    async def get_job(self, job_id: str) -> scan_pb2.Job | None:
        def op(conn: sqlite3.Connection) -> scan_pb2.Job | None:
            row = conn.execute("SELECT job FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            return None if row is None else scan_pb2.Job.FromString(row[0])

        return await self._db.read(op)

    async def list_jobs(
        self, *, state: int, limit: int, after: tuple[int, str] | None
    ) -> list[scan_pb2.Job]:
        """Jobs newest first; `after` is the (create_ns, job_id) of the previous page's last."""

        def op(conn: sqlite3.Connection) -> list[scan_pb2.Job]:
            where: list[str] = []
            params: list[Any] = []
            if state:
                where.append("state = ?")
                params.append(state)
            if after is not None:
                where.append("(create_ns, job_id) < (?, ?)")
                params.extend(after)
            sql = "SELECT job FROM jobs"
            if where:
                sql += " WHERE " + " AND ".join(where)
            sql += " ORDER BY create_ns DESC, job_id DESC LIMIT ?"
            params.append(limit)
            return [scan_pb2.Job.FromString(row[0]) for row in conn.execute(sql, params)]

        return await self._db.read(op)

    async def delete_job(self, job_id: str) -> bool:
        """Forget a finished job and its events; False if no finished job has that id."""

        def op(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                f"DELETE FROM jobs WHERE job_id = ? AND state IN ({TERMINAL_SQL})", (job_id,)
            )
            if cursor.rowcount == 0:
                return False
            _forget(conn, [job_id])
            return True

        return await self._db.bounded(self._db.queue_write(op))

    async def purge_finished(self, ended_before_ns: int) -> int:
        """Delete finished jobs that ended before the given time; returns how many."""

        def op(conn: sqlite3.Connection) -> int:
            ids = [
                row[0]
                for row in conn.execute(
                    f"SELECT job_id FROM jobs WHERE state IN ({TERMINAL_SQL}) AND end_ns < ?",
                    (ended_before_ns,),
                )
            ]
            _forget(conn, ids)
            conn.executemany("DELETE FROM jobs WHERE job_id = ?", ((i,) for i in ids))
            return len(ids)

        return await self._db.write(op)

    async def job_state(self, job_id: str) -> tuple[int, int] | None:
        """(state, last_sequence) of a stored job, without reading the job itself."""

        def op(conn: sqlite3.Connection) -> tuple[int, int] | None:
            row = conn.execute(
                "SELECT state, last_sequence FROM jobs WHERE job_id = ?", (job_id,)
            ).fetchone()
            return None if row is None else (int(row[0]), int(row[1]))

        return await self._db.read(op)

    async def file_errors(
        self, job_id: str, *, after_seq: int, limit: int, max_bytes: int
    ) -> tuple[list[scan_pb2.FileError], int | None]:
        """Up to `limit` file errors of a job with seq > after_seq, and no more than `max_bytes`
        of them serialized (at least one); with the seq of the last one if more follow."""

        def op(conn: sqlite3.Connection) -> tuple[list[scan_pb2.FileError], int | None]:
            rows = conn.execute(
                "SELECT seq, error FROM file_errors WHERE job_id = ? AND seq > ? "
                "ORDER BY seq LIMIT ?",
                (job_id, after_seq, limit + 1),
            )
            errors: list[scan_pb2.FileError] = []
            size, last = 0, after_seq
            for seq, blob in rows:
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
        def op(conn: sqlite3.Connection) -> list[scan_pb2.JobEvent]:
            rows = conn.execute(
                "SELECT event FROM job_events WHERE job_id = ? AND sequence > ? "
                "ORDER BY sequence LIMIT ?",
                (job_id, after_sequence, limit),
            )
            return [scan_pb2.JobEvent.FromString(row[0]) for row in rows]

        return await self._db.read(op)


def _apply(
    conn: sqlite3.Connection, job: scan_pb2.Job, change: JobChange, *, expected_state: int
) -> ChangedJob:
    """Apply `change` to a stored job and store the result and its events (writer thread)."""
    previous = job.state
    events = change(job)
    if not _save(conn, job, job.SerializeToString(), expected_state):
        raise RuntimeError(f"job {job.job_id} changed inside its own transaction")
    _insert_events(conn, events)
    return ChangedJob(job=job, events=events, previous_state=previous)


def _save(
    conn: sqlite3.Connection, job: scan_pb2.Job, blob: bytes, expected_state: int | None
) -> bool:
    end_ns = job.end_time.ToNanoseconds() if job.HasField("end_time") else None
    sql = _SAVE
    params: tuple[Any, ...] = (job.state, end_ns, job.last_sequence, blob, job.job_id)
    if expected_state is not None:
        sql += " AND state = ?"
        params += (expected_state,)
    return bool(conn.execute(sql, params).rowcount == 1)


def _insert_events(conn: sqlite3.Connection, events: Sequence[scan_pb2.JobEvent]) -> None:
    for event in events:
        conn.execute(
            "INSERT INTO job_events (job_id, sequence, event) VALUES (?, ?, ?)",
            (event.job_id, event.sequence, event.SerializeToString()),
        )


def _forget(conn: sqlite3.Connection, ids: list[str]) -> None:
    """Delete what belongs to these jobs besides their rows."""
    for table in ("job_events", "requests", "file_errors"):
        conn.executemany(f"DELETE FROM {table} WHERE job_id = ?", ((i,) for i in ids))


def _find_request(conn: sqlite3.Connection, request_id: str) -> tuple[scan_pb2.Job, str] | None:
    row = conn.execute(
        "SELECT jobs.job, requests.fingerprint FROM requests JOIN jobs USING (job_id) "
        "WHERE requests.request_id = ?",
        (request_id,),
    ).fetchone()
    return None if row is None else (scan_pb2.Job.FromString(row[0]), row[1])


def _remember_request(
    conn: sqlite3.Connection, request_id: str, fingerprint: str, job_id: str
) -> None:
    # REPLACE: a mapping left behind by a deleted job gives way.
    conn.execute(
        "INSERT OR REPLACE INTO requests (request_id, fingerprint, job_id) VALUES (?, ?, ?)",
        (request_id, fingerprint, job_id),
    )
