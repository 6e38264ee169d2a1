"""A new job's insert on PostgreSQL, in one transaction: a retried request_id gets its
earlier job, an identical active scan is joined (the unique index `jobs_active_dedup` holds it
across servers), the `--max-queued` bound is counted in the database, then the row."""

from __future__ import annotations

from mediascan.v1 import scan_pb2

from ...jobs import ScanSpec
from ..protocol import InsertOutcome, QueueFull, RequestIdReused, StorageError
from .schema import ACTIVE_SQL, QUEUED, Connection

#: How often an insert that met a concurrent identical one looks for it again (that job may
#: have ended between the conflict and the look).
_JOIN_TRIES = 3


async def insert_job(
    conn: Connection, job: scan_pb2.Job, spec: ScanSpec, blob: bytes, *, max_queued: int
) -> InsertOutcome:
    """Commit `job` (serialized as `blob`) unless a request_id or an active twin names
    another; QueueFull when `max_queued` jobs are QUEUED already (counted by this
    transaction: submits committing at the same time on other servers are not seen, so the
    queue may overshoot by as many; the count includes the libraries' own queued jobs, at
    most one per library, which are never refused themselves)."""
    if spec.request_id:
        earlier = await _take_request(conn, spec.request_id, spec.fingerprint, job.job_id)
        if earlier is not None:
            return earlier
    for _ in range(_JOIN_TRIES):
        twin = await _active_twin(conn, spec.dedup_key)
        if twin is None:
            # A library's own jobs (at most one pending each) are never refused.
            library = spec.trigger in (scan_pb2.TRIGGER_WATCH, scan_pb2.TRIGGER_SCHEDULE)
            if not library and await _queued(conn) >= max_queued:
                raise QueueFull(max_queued)
            if await _insert_row(conn, job, spec, blob):
                return InsertOutcome(job=job, created=True)
            continue  # an identical submit committed first: join it
        if spec.request_id:
            await conn.execute(
                "UPDATE requests SET job_id = %s WHERE request_id = %s",
                (twin.job_id, spec.request_id),
            )
        return InsertOutcome(job=twin, created=False, deduplicated=True)
    raise StorageError("identical submits kept racing each other; retry")


async def _take_request(
    conn: Connection, request_id: str, fingerprint: str, job_id: str
) -> InsertOutcome | None:
    """Map `request_id` to `job_id` (taking over a mapping whose job is gone), or return the
    job an earlier submit with it made (RequestIdReused if that submit asked for another
    scan). A concurrent submit with the same request_id waits here for the other's commit."""
    cursor = await conn.execute(
        "INSERT INTO requests AS r (request_id, fingerprint, job_id) VALUES (%s, %s, %s) "
        "ON CONFLICT (request_id) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, "
        "job_id = EXCLUDED.job_id "
        "WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.job_id = r.job_id) RETURNING 1",
        (request_id, fingerprint, job_id),
    )
    if await cursor.fetchone() is not None:
        return None
    found = await find_request(conn, request_id)
    if found is None:
        raise StorageError("a request_id's job was deleted while it was looked up; retry")
    earlier, stored_fingerprint = found
    if stored_fingerprint != fingerprint:
        raise RequestIdReused(earlier.job_id)
    return InsertOutcome(job=earlier, created=False)


async def find_request(conn: Connection, request_id: str) -> tuple[scan_pb2.Job, str] | None:
    cursor = await conn.execute(
        "SELECT jobs.job, requests.fingerprint FROM requests JOIN jobs USING (job_id) "
        "WHERE requests.request_id = %s",
        (request_id,),
    )
    row = await cursor.fetchone()
    return None if row is None else (scan_pb2.Job.FromString(row[0]), row[1])


async def remember_request(
    conn: Connection, request_id: str, fingerprint: str, job_id: str
) -> None:
    await conn.execute(
        "INSERT INTO requests (request_id, fingerprint, job_id) VALUES (%s, %s, %s) "
        "ON CONFLICT (request_id) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, "
        "job_id = EXCLUDED.job_id",
        (request_id, fingerprint, job_id),
    )


async def _active_twin(conn: Connection, dedup_key: str) -> scan_pb2.Job | None:
    cursor = await conn.execute(
        f"SELECT job FROM jobs WHERE dedup_key = %s AND state IN ({ACTIVE_SQL})", (dedup_key,)
    )
    row = await cursor.fetchone()
    return None if row is None else scan_pb2.Job.FromString(row[0])


async def _queued(conn: Connection) -> int:
    cursor = await conn.execute(f"SELECT count(*) FROM jobs WHERE state = {QUEUED}")
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def _insert_row(conn: Connection, job: scan_pb2.Job, spec: ScanSpec, blob: bytes) -> bool:
    """Insert the row; False (nothing written) when an identical active job was committed
    meanwhile (`ON CONFLICT` on the unique index: it waits for that insert's commit)."""
    cursor = await conn.execute(
        "INSERT INTO jobs (job_id, state, priority, create_ns, attempt, node, path, dedup_key, "
        "request_id, fingerprint, last_sequence, job) "
        "VALUES (%s, %s, %s, %s, %s, '', %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (dedup_key) WHERE state IN (" + ACTIVE_SQL + ") DO NOTHING RETURNING 1",
        (
            job.job_id,
            job.state,
            spec.priority,
            job.create_time.ToNanoseconds(),
            job.attempt,
            spec.path,
            spec.dedup_key,
            spec.request_id or None,
            spec.fingerprint or None,
            job.last_sequence,
            blob,
        ),
    )
    return await cursor.fetchone() is not None
