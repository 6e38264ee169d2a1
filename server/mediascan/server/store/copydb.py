"""Copying a SQLite database into an empty PostgreSQL database (`mediascan-server copy-db`):
every job with its events, file errors and request ids, the whole library, and the libraries
with their change feeds (uids, counts and sequences kept: a follower resumes on PostgreSQL
where it was), so that a server moved to PostgreSQL keeps its history and its library without
a rescan.

The SQLite file is held under the servers' own lock (`<db>.lock`, `DatabaseLock`) for the whole
copy, so no server starts on it meanwhile, and read in one read transaction. PostgreSQL gets
everything in one transaction, all or nothing, written with COPY from rows streamed out of
SQLite one at a time: memory stays bounded whatever the library's size. A job stored RUNNING
(its server crashed) is copied QUEUED with its next attempt, by the `requeue` change recovery
applies at start."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg

from mediascan.v1 import scan_pb2

from ..dblock import DatabaseLock, DatabaseLocked
from ..jobs import spec_of
from .postgres import schema as pg_schema
from .postgres.database import connection_info, redacted
from .protocol import JobChange
from .sqlite import schema as sqlite_schema
from .videos import VIDEO_COLUMNS

#: Called after each table is copied, with its name and the rows copied.
Report = Callable[[str, int], None]
Row = Sequence[Any]

#: The tables a copy writes, in the order it writes them.
TABLES = ("jobs", "job_events", "file_errors", "requests", "videos", "libraries", "library_changes")
#: How long the copy waits for other sessions to let go of the target's tables.
LOCK_WAIT = "5s"

#: Oldest first, so that the queue's order (`created`, the identity column) is the same FIFO
#: order within a priority that SQLite claims by (create_ns, job_id).
_SELECT_JOBS = (
    "SELECT job, create_ns, end_ns, request_id, fingerprint FROM jobs ORDER BY create_ns, job_id"
)
_COPY_JOBS = (
    "COPY jobs (job_id, state, priority, create_ns, end_ns, attempt, node, path, dedup_key, "
    "request_id, fingerprint, last_sequence, job) FROM STDIN"
)
_LIBRARY_COLUMNS = "id, root, uid, body, video_count, total_size, last_sequence, first_kept"
_CHANGE_COLUMNS = (
    "library_id, sequence, kind, video_id, path, old_path, fields, job_id, time_ns, status"
)
#: (what SQLite gives, where PostgreSQL takes it) for the tables copied row for row. COPY
#: writes the `id` of a video as given, like INSERT ... OVERRIDING SYSTEM VALUE.
_PLAIN = {
    "job_events": (
        "SELECT job_id, sequence, event FROM job_events",
        "COPY job_events (job_id, sequence, event) FROM STDIN",
    ),
    "file_errors": (
        "SELECT job_id, seq, error FROM file_errors",
        "COPY file_errors (job_id, seq, error) FROM STDIN",
    ),
    "requests": (
        "SELECT request_id, fingerprint, job_id FROM requests",
        "COPY requests (request_id, fingerprint, job_id) FROM STDIN",
    ),
    "videos": (
        f"SELECT id, {VIDEO_COLUMNS} FROM videos ORDER BY id",
        f"COPY videos (id, {VIDEO_COLUMNS}) FROM STDIN",
    ),
    # No library is held by any server yet (`owner`, `lease_until` keep their defaults).
    "libraries": (
        f"SELECT {_LIBRARY_COLUMNS} FROM libraries ORDER BY id",
        f"COPY libraries ({_LIBRARY_COLUMNS}) FROM STDIN",
    ),
    "library_changes": (
        f"SELECT {_CHANGE_COLUMNS} FROM library_changes ORDER BY library_id, sequence",
        f"COPY library_changes ({_CHANGE_COLUMNS}) FROM STDIN",
    ),
}


class CopyRefused(Exception):
    """The copy cannot be made as asked (the source is missing, not a mediascan database or in
    use by a server; the target is not empty or in use): the user's to fix. Nothing was
    written to the target."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class CopyCounts:
    """What a copy wrote."""

    jobs: int
    #: Jobs QUEUED in the target, those that were RUNNING included.
    queued: int
    #: Jobs that were RUNNING in the SQLite file (a crashed server) and are now QUEUED with
    #: their next attempt.
    requeued: int
    #: Stored events, with the state change of each re-queued job.
    events: int
    file_errors: int
    requests: int
    videos: int
    libraries: int = 0
    #: The libraries' stored changes (their feeds' kept history).
    library_changes: int = 0

    @property
    def rows(self) -> int:
        return (
            self.jobs
            + self.events
            + self.file_errors
            + self.requests
            + self.videos
            + self.libraries
            + self.library_changes
        )


async def copy_database(
    source: Path, url: str, *, requeue: JobChange, report: Report | None = None
) -> CopyCounts:
    """Copy the SQLite database `source` into the PostgreSQL database `url`, creating its
    schema, in one transaction. CopyRefused or SchemaTooNew (either database is newer than
    this code) before anything is written; a failure on the way rolls everything back."""
    done = report or (lambda table, rows: None)
    with _source(source) as sqlite:
        async with (
            await psycopg.AsyncConnection.connect(
                connection_info(url, "copy-db"), autocommit=True
            ) as conn,
            conn.transaction(),
        ):
            # A library of millions of rows takes longer than the servers' statement limit.
            await conn.execute("SET LOCAL statement_timeout = 0")
            await _prepare_target(conn, redacted(url))
            jobs, queued, requeued, extra = await _copy_jobs(sqlite, conn, requeue)
            done("jobs", jobs)
            copied: dict[str, int] = {}
            for table, (select, copy) in _PLAIN.items():
                rows: Iterable[Row] = sqlite.execute(select)
                if table == "job_events":
                    rows = itertools.chain(rows, extra)
                copied[table] = await _copy_rows(conn, copy, rows)
                done(table, copied[table])
            await _advance_video_ids(conn)
    return CopyCounts(
        jobs=jobs,
        queued=queued,
        requeued=requeued,
        events=copied["job_events"],
        file_errors=copied["file_errors"],
        requests=copied["requests"],
        videos=copied["videos"],
        libraries=copied["libraries"],
        library_changes=copied["library_changes"],
    )


@contextlib.contextmanager
def _source(path: Path) -> Iterator[sqlite3.Connection]:
    """The SQLite database at `path`, locked as a server locks it, brought to this code's
    schema (as a server would at start) and opened in a read transaction."""
    if not path.is_file():
        raise CopyRefused(f"{path}: no such database file")
    lock = DatabaseLock(path)
    try:
        lock.acquire()
    except DatabaseLocked as exc:
        raise CopyRefused(f"cannot copy {path}: {exc}") from None
    except OSError as exc:
        raise CopyRefused(
            f"cannot take the lock {lock.path} ({exc.strerror}): run the copy as the user the "
            "server runs as"
        ) from None
    try:
        conn = sqlite_schema.connect(path)
        try:
            _check_source(conn, path)
            conn.execute("BEGIN")  # one snapshot for the whole copy
            yield conn
        finally:
            conn.close()
    finally:
        lock.release()


def _check_source(conn: sqlite3.Connection, path: Path) -> None:
    """A mediascan database at this code's schema version (an older one is migrated first;
    SchemaTooNew for a newer one, which is left untouched)."""
    try:
        found = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
        ).fetchone()
    except sqlite3.DatabaseError as exc:
        raise CopyRefused(f"{path} is not a SQLite database ({exc})") from None
    if found is None:
        raise CopyRefused(f"{path} is not a mediascan database (it has no table meta)")
    sqlite_schema.migrate(conn, path)


async def _prepare_target(conn: pg_schema.Connection, where: str) -> None:
    """Create or migrate the target's schema inside the copy's transaction (SchemaTooNew for
    a newer one), lock its tables against other writers, and check that they are empty."""
    await pg_schema.migrate(conn, where)
    await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_WAIT}'".encode())
    try:
        await conn.execute(f"LOCK TABLE {', '.join(TABLES)} IN EXCLUSIVE MODE".encode())
    except psycopg.errors.LockNotAvailable:
        raise CopyRefused(
            f"{where} is in use (another session kept its tables locked for {LOCK_WAIT}): stop "
            "the servers that use it"
        ) from None
    checks = ", ".join(f"EXISTS (SELECT 1 FROM {table})" for table in TABLES)
    row = await (await conn.execute(f"SELECT {checks}".encode())).fetchone()
    assert row is not None
    filled = [table for table, found in zip(TABLES, row, strict=True) if found]
    if filled:
        raise CopyRefused(
            f"{where} is not empty (it has rows in {', '.join(filled)}): copy into a new, empty "
            "database"
        )


async def _copy_jobs(
    sqlite: sqlite3.Connection, conn: pg_schema.Connection, requeue: JobChange
) -> tuple[int, int, int, list[Row]]:
    """Copy every job, oldest first; one stored RUNNING is changed by `requeue`. Returns the
    jobs copied, those QUEUED, those re-queued, and the event rows the re-queues added."""
    copied = queued = requeued = 0
    events: list[Row] = []
    async with conn.cursor() as cursor, cursor.copy(_COPY_JOBS) as copy:
        for blob, create_ns, end_ns, request_id, fingerprint in sqlite.execute(_SELECT_JOBS):
            job = scan_pb2.Job.FromString(blob)
            if job.state == sqlite_schema.RUNNING:
                events.extend((e.job_id, e.sequence, e.SerializeToString()) for e in requeue(job))
                blob = job.SerializeToString()
                requeued += 1
            spec = spec_of(job)
            await copy.write_row(
                (
                    job.job_id,
                    job.state,
                    spec.priority,
                    create_ns,
                    end_ns,
                    job.attempt,
                    job.node,
                    spec.path,
                    spec.dedup_key,
                    request_id,
                    fingerprint,
                    job.last_sequence,
                    blob,
                )
            )
            copied += 1
            queued += job.state == sqlite_schema.QUEUED
    return copied, queued, requeued, events


async def _copy_rows(conn: pg_schema.Connection, copy_sql: str, rows: Iterable[Row]) -> int:
    """Stream `rows` into one COPY; how many there were."""
    count = 0
    async with conn.cursor() as cursor, cursor.copy(copy_sql.encode()) as copy:
        for row in rows:
            await copy.write_row(row)
            count += 1
    return count


async def _advance_video_ids(conn: pg_schema.Connection) -> None:
    """Make the ids of videos added later follow the copied ones. (Their `fs_key`, the file
    system's key that PostgreSQL's removals compare, is 0, "not known": the next scan that
    meets a video records it.)"""
    await conn.execute(
        "SELECT setval(pg_get_serial_sequence('videos', 'id'), max(id)) FROM videos "
        "HAVING count(*) > 0"
    )
