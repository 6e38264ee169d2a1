"""SQLite persistence: jobs, their event logs, and the video library.

One writer thread owns the only write connection. Writes from the event loop are queued to it; it
runs every write that is waiting as one transaction (group commit: 100 concurrent submits cost one
fsync, not 100), each write inside its own SAVEPOINT so that one failing write does not undo its
neighbours, and resolves the callers' futures only after COMMIT. Reads run on a small pool of
reader threads, each with its own connection (WAL lets them read while the writer writes). The
event loop never touches SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from mediascan.v1 import scan_pb2

from .dblock import DatabaseLock
from .errors import Unavailable
from .jobs import TERMINAL, ScanSpec, sample_file_errors
from .lane import settle

log = logging.getLogger(__name__)

T = TypeVar("T")
Op = Callable[[sqlite3.Connection], Any]

SCHEMA_VERSION = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    job_id        TEXT PRIMARY KEY,
    state         INTEGER NOT NULL,
    create_ns     INTEGER NOT NULL,
    end_ns        INTEGER,
    request_id    TEXT,
    fingerprint   TEXT,
    last_sequence INTEGER NOT NULL,
    job           BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_by_request_id ON jobs (request_id)
    WHERE request_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_by_create ON jobs (create_ns DESC, job_id DESC);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, create_ns DESC, job_id DESC);
CREATE TABLE IF NOT EXISTS job_events (
    job_id   TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    event    BLOB NOT NULL,
    PRIMARY KEY (job_id, sequence)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS videos (
    id                INTEGER PRIMARY KEY,
    path              TEXT NOT NULL UNIQUE,
    size_bytes        INTEGER NOT NULL,
    mtime_ns          INTEGER NOT NULL,
    container         TEXT NOT NULL,
    duration_ns       INTEGER NOT NULL,
    bit_rate          INTEGER NOT NULL,
    video_codec       TEXT NOT NULL,
    width             INTEGER NOT NULL,
    height            INTEGER NOT NULL,
    frame_rate        REAL NOT NULL,
    audio_codec       TEXT NOT NULL,
    audio_channels    INTEGER NOT NULL,
    audio_sample_rate INTEGER NOT NULL,
    audio_streams     INTEGER NOT NULL,
    probe_ns          INTEGER NOT NULL,
    job_id            TEXT NOT NULL
);
"""

#: Forward migrations: the statements (or functions) that take a database from version N-1 to N.
_MIGRATIONS: dict[int, tuple[str | Callable[[sqlite3.Connection], None], ...]] = {
    # The device a video lives on: a folder now on another device (an unmounted disk's empty
    # mount point) must not make its videos look deleted. 0: not known (written by version 1).
    2: (
        "ALTER TABLE videos ADD COLUMN dev INTEGER NOT NULL DEFAULT 0",
        # request_id -> job, also for submits that joined an active job (deduplicated).
        "CREATE TABLE IF NOT EXISTS requests (request_id TEXT PRIMARY KEY, "
        "fingerprint TEXT NOT NULL, job_id TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS requests_by_job ON requests (job_id)",
        "INSERT OR IGNORE INTO requests (request_id, fingerprint, job_id) "
        "SELECT request_id, fingerprint, job_id FROM jobs WHERE request_id IS NOT NULL",
    ),
    # File errors in their own table, read page by page (ListFileErrors): a job's row keeps
    # its counts and a small sample, so that a Job message stays small whatever the paths.
    3: (
        "CREATE TABLE IF NOT EXISTS file_errors (job_id TEXT NOT NULL, seq INTEGER NOT NULL, "
        "error BLOB NOT NULL, PRIMARY KEY (job_id, seq)) WITHOUT ROWID",
        lambda conn: _move_file_errors(conn),
    ),
}

_TERMINAL_SQL = ",".join(str(int(s)) for s in TERMINAL)


class StorageError(Unavailable):
    """The database failed (locked, disk full, file gone). Expected under faults: UNAVAILABLE."""


class DatabaseLost(StorageError):
    """The database file was removed or replaced while the server ran: nothing can be stored
    any more (SQLite would write to the unlinked file). Fatal for the server."""


class DatabaseTimeout(StorageError):
    """The database did not answer within the server's limit (`--db-timeout`): a hung disk or
    file system, or a lock held elsewhere. What was asked may still happen."""


class SchemaTooNew(RuntimeError):
    """The database was written by a newer mediascan; refuse to touch it."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class VideoRow:
    """One probed video, as written to the library."""

    path: str
    size_bytes: int
    mtime_ns: int
    container: str
    duration_ns: int
    bit_rate: int
    video_codec: str
    width: int
    height: int
    frame_rate: float
    audio_codec: str
    audio_channels: int
    audio_sample_rate: int
    audio_streams: int
    probe_ns: int
    job_id: str
    dev: int  #: st_dev of the file system the file lives on


@dataclasses.dataclass(frozen=True, slots=True)
class LibraryIndex:
    """What the library holds below a scan's folder, as a scan compares its walk against it.

    `keys` has one key per video, `library_key(path, size_bytes, mtime_ns)`: a file whose key
    is there is unchanged since its last probe. A scan takes out (of its copy) the keys it
    meets; what is left is the rows of files it did not meet, or met with another size or time.
    In memory, a video costs about 90 bytes plus its key's length (150 with 36-character paths),
    and 40 more in each copy."""

    keys: dict[str, bool]
    #: Paths of the videos stored without their device (dev 0, written by schema version 1).
    undated: set[str]

    def copy(self) -> LibraryIndex:
        return LibraryIndex(dict(self.keys), set(self.undated))


def library_key(path: str, size_bytes: int, mtime_ns: int) -> str:
    """`path/size/mtime`: the digits at the end never contain a '/', so this names one
    (path, size, mtime) only. The scanner builds the same string inline."""
    return f"{path}/{size_bytes}/{mtime_ns}"


def library_key_path(key: str) -> str:
    return key.rsplit("/", 2)[0]


class _IndexCache:
    """The indexes `Store.library_index` read, kept while the library does not change, so that
    rescanning an unchanged folder does not read the library again. Every write to the library
    clears it, before the write and after it, and an index whose read overlapped a write is not
    kept. Holds at most _INDEX_CACHE_KEYS keys; the least recently used index goes first."""

    def __init__(self) -> None:
        self.generation = 0  #: changes with every clear
        self._entries: dict[tuple[str, bool], LibraryIndex] = {}

    def get(self, key: tuple[str, bool]) -> LibraryIndex | None:
        index = self._entries.pop(key, None)
        if index is not None:
            self._entries[key] = index  # now the most recently used
        return index

    def put(self, key: tuple[str, bool], index: LibraryIndex, generation: int) -> None:
        """Keep `index`, read from the library as it was at `generation`, unless the library
        changed meanwhile or the index is too big."""
        if generation != self.generation or len(index.keys) > _INDEX_CACHE_KEYS:
            return
        self._entries[key] = index
        held = sum(len(kept.keys) for kept in self._entries.values())
        while held > _INDEX_CACHE_KEYS:
            held -= len(self._entries.pop(next(iter(self._entries))).keys)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()


@dataclasses.dataclass(frozen=True, kw_only=True)
class InsertOutcome:
    job: scan_pb2.Job
    created: bool  #: False: the request_id named an existing job, which is returned


class RequestIdReused(Exception):
    """Raised inside the writer when a request_id comes back with a different request."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


class _WriteRequest:
    __slots__ = ("future", "op")

    def __init__(self, op: Op, future: asyncio.Future[Any]) -> None:
        self.op = op
        self.future = future


_STOP = object()


class Store:
    """The SQLite database behind the job queue and the library."""

    def __init__(
        self,
        path: Path,
        *,
        readers: int = 2,
        max_batch: int = 1000,
        listen: str = "",
        timeout: float = 5.0,
        on_lost: Callable[[str], None] | None = None,
    ) -> None:
        self.path = path
        #: Longest wait of `read` and `bounded` (seconds) before DatabaseTimeout.
        self.timeout = timeout
        self._on_lost = on_lost
        self._lost: DatabaseLost | None = None
        self._checking: threading.Thread | None = None
        #: Held from before the database is opened until it is closed: one server per file.
        self.lock = DatabaseLock(path)
        self._listen = listen
        self._readers = readers
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._write_conn: sqlite3.Connection | None = None
        self._read_pool: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the file opened
        #: Indexes of recently scanned folders (`library_index`).
        self._index_cache = _IndexCache()

    # -- life cycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Take the database's lock (DatabaseLocked if another server holds it), create the
        file and schema if needed, then start the writer and reader threads."""
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self.lock.acquire, self._listen)
        try:
            self._write_conn = await asyncio.to_thread(self._open_sync)
        except BaseException:
            self.lock.release()
            raise
        self._identity = await asyncio.to_thread(_identity, self.path)
        self._writer = threading.Thread(target=self._writer_loop, name="sqlite-writer", daemon=True)
        self._writer.start()
        self._read_pool = ThreadPoolExecutor(self._readers, thread_name_prefix="sqlite-reader")

    def _open_sync(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = _connect(self.path)
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            log.warning("SQLite refused WAL mode (got %s); concurrency will suffer", mode)
        conn.execute("PRAGMA synchronous = FULL")
        try:
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Create the version 1 schema if needed, then apply each later migration in its own
        transaction. A database from a newer server is refused, never touched."""
        row = conn.execute(
            "SELECT value FROM meta WHERE key = 'schema_version'"
            if conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
            ).fetchone()
            else "SELECT NULL WHERE 0"
        ).fetchone()
        version = int(row[0]) if row is not None else 0
        if version > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"{self.path} has schema version {version}, newer than this server's "
                f"{SCHEMA_VERSION}: upgrade mediascan or use another --db"
            )
        conn.executescript(_SCHEMA)  # version 1, idempotent
        if version == 0:
            conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', 1)")
            version = 1
        for target in range(version + 1, SCHEMA_VERSION + 1):
            conn.execute("BEGIN IMMEDIATE")
            for statement in _MIGRATIONS[target]:
                if isinstance(statement, str):
                    conn.execute(statement)
                else:
                    statement(conn)
            conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(target),))
            conn.execute("COMMIT")
            log.info("migrated %s to schema version %d", self.path, target)

    async def close(self) -> None:
        """Finish the queued writes, then close every connection."""
        if self._writer is not None:
            self._queue.put(_STOP)
            await asyncio.to_thread(self._writer.join)
            self._writer = None
        if self._read_pool is not None:
            await asyncio.to_thread(self._read_pool.shutdown, True)  # not on the loop
            self._read_pool = None
        if self._write_conn is not None:
            self._write_conn.close()
            self._write_conn = None
        self.lock.release()

    # -- the two primitives -----------------------------------------------------------------

    async def write(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Run `op` in the writer thread inside a transaction; return once it is committed.

        The write happens even if the awaiting task is cancelled (a queued write is never
        dropped), so callers that assign sequence numbers can rely on it.
        """
        return await self.queue_write(op)

    def queue_write(self, op: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """`write` without a coroutine: the future resolves once `op` is committed."""
        if self._writer is None or self._loop is None:
            raise StorageError("the database is closed")
        if self._lost is not None:
            raise self._lost
        future: asyncio.Future[T] = self._loop.create_future()
        self._queue.put(_WriteRequest(op, future))
        return future

    async def read(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Run `op` on a reader connection in a reader thread."""
        if self._read_pool is None:
            raise StorageError("the database is closed")
        if self._lost is not None:
            raise self._lost
        loop = asyncio.get_running_loop()
        return await self.bounded(loop.run_in_executor(self._read_pool, self._read_sync, op))

    async def bounded(self, work: Awaitable[T]) -> T:
        """Wait for `work` (a read, a queued write) at most `timeout` seconds, then raise
        DatabaseTimeout; the work itself is not cancelled (a queued write still happens)."""
        future = asyncio.ensure_future(work)
        future.add_done_callback(_retrieve)  # an outcome nobody waits for any more
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.timeout)
        except TimeoutError:
            raise DatabaseTimeout(
                f"the database did not answer within {self.timeout:g}s (its disk or file system "
                "hangs, or another process keeps it locked); retry later"
            ) from None

    @property
    def lost(self) -> bool:
        """True once the database file was found removed or replaced."""
        return self._lost is not None

    async def check_file(self) -> bool:
        """Check that the file opened is still the one at the path (found removed or replaced:
        lost, `on_lost` is called). False if the check did not answer within `timeout` (the file
        system hangs); at most one check thread is ever waiting on it."""
        if self._checking is not None and self._checking.is_alive():
            return False
        loop = asyncio.get_running_loop()
        done: asyncio.Future[tuple[int, int] | None] = loop.create_future()

        def check() -> None:
            found = _identity(self.path)
            with contextlib.suppress(RuntimeError):  # the loop is closed
                loop.call_soon_threadsafe(settle, done, found, None)

        self._checking = threading.Thread(target=check, name="sqlite-check", daemon=True)
        self._checking.start()
        try:
            found = await asyncio.wait_for(done, self.timeout)
        except TimeoutError:
            return False
        if found != self._identity:
            self._mark_lost()
        return True

    def _mark_lost(self) -> DatabaseLost:
        """Record the loss (any thread) and tell `on_lost` once, on the loop."""
        if self._lost is None:
            self._lost = DatabaseLost(
                f"the database file {self.path} was removed or replaced while the server ran: "
                "nothing can be stored; the server stops (a restart starts with the file now at "
                "that path, a new empty library if there is none)"
            )
            log.critical("%s", self._lost)
            if self._on_lost is not None and self._loop is not None:
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(self._on_lost, str(self._lost))
        return self._lost

    def _read_sync(self, op: Callable[[sqlite3.Connection], T]) -> T:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        try:
            if conn is None:
                conn = _connect(self.path)
                self._local.conn = conn
            return op(conn)
        except sqlite3.Error as exc:
            raise StorageError(f"database read failed: {exc}") from exc

    # -- the writer thread ------------------------------------------------------------------

    def _writer_loop(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is _STOP:
                break
            batch = [item]
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            self._run_batch(batch)  # type: ignore[arg-type]

    def _run_batch(self, batch: list[_WriteRequest]) -> None:
        conn = self._write_conn
        assert conn is not None
        if self._lost is not None or _identity(self.path) != self._identity:
            # Removed or replaced under the server: SQLite would write to the unlinked file
            # and every write acknowledged from now on would be lost at the next start.
            error = self._mark_lost()
            outcomes: list[tuple[_WriteRequest, Any, BaseException | None]] = [
                (request, None, error) for request in batch
            ]
        else:
            outcomes = self._transaction(conn, batch)
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self._loop.call_soon_threadsafe(_resolve_all, outcomes)

    def _transaction(
        self, conn: sqlite3.Connection, batch: list[_WriteRequest]
    ) -> list[tuple[_WriteRequest, Any, BaseException | None]]:
        """Run the batch in one transaction; a write that fails fails alone.

        First all writes run straight through (the common case: nothing fails, and each
        statement the writer runs is a hand-over of the GIL with the event loop). If one
        raises, the transaction is rolled back and the batch runs again with each write in
        its own savepoint. So a write may run twice: an op must change nothing but the
        database."""
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            return self._failed(conn, batch, exc)
        try:
            results = [request.op(conn) for request in batch]
        except Exception as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if len(batch) > 1:
                return self._careful_transaction(conn, batch)
            if isinstance(exc, sqlite3.Error):
                exc = StorageError(f"database write failed: {exc}")
            return [(batch[0], None, exc)]
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            return self._failed(conn, batch, exc)
        return [(request, result, None) for request, result in zip(batch, results, strict=True)]

    @staticmethod
    def _failed(
        conn: sqlite3.Connection, batch: list[_WriteRequest], exc: sqlite3.Error
    ) -> list[tuple[_WriteRequest, Any, BaseException | None]]:
        """The whole transaction failed (locked, disk full, ...): so did every write in it."""
        log.error("database transaction failed: %s", exc)
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        error = StorageError(f"database write failed: {exc}")
        return [(request, None, error) for request in batch]

    def _careful_transaction(
        self, conn: sqlite3.Connection, batch: list[_WriteRequest]
    ) -> list[tuple[_WriteRequest, Any, BaseException | None]]:
        """Run the batch in one transaction, each write in its own savepoint."""
        outcomes: list[tuple[_WriteRequest, Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for request in batch:
                conn.execute("SAVEPOINT op")
                try:
                    result = request.op(conn)
                except Exception as exc:
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    if isinstance(exc, sqlite3.Error):
                        exc = StorageError(f"database write failed: {exc}")
                    outcomes.append((request, None, exc))
                else:
                    conn.execute("RELEASE op")
                    outcomes.append((request, result, None))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            return self._failed(conn, batch, exc)
        return outcomes

    # -- jobs ---------------------------------------------------------------------------------

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
                "last_sequence, job) VALUES (?, ?, ?, ?, ?, ?, ?)",
                job_row,
            )
            return InsertOutcome(job=job, created=True)

        return self.queue_write(op)

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
        end_ns = job.end_time.ToNanoseconds() if job.HasField("end_time") else None

        def op(conn: sqlite3.Connection) -> bool:
            sql = (
                "UPDATE jobs SET state = ?, end_ns = ?, last_sequence = ?, job = ? WHERE job_id = ?"
            )
            params: tuple[Any, ...] = (job.state, end_ns, job.last_sequence, blob, job.job_id)
            if expected_state is not None:
                sql += " AND state = ?"
                params += (expected_state,)
            if conn.execute(sql, params).rowcount != 1:
                return False
            for event in events:
                _insert_event(conn, event)
            if clear_file_errors:
                conn.execute("DELETE FROM file_errors WHERE job_id = ?", (job.job_id,))
            if errors:
                conn.executemany(
                    "INSERT OR REPLACE INTO file_errors (job_id, seq, error) VALUES (?, ?, ?)",
                    errors,
                )
            return True

        return await self.write(op)

    async def find_request(self, request_id: str) -> tuple[scan_pb2.Job, str] | None:
        """The job an earlier submit with this request_id created, if it is still kept, and
        that submit's fingerprint."""

        def op(conn: sqlite3.Connection) -> tuple[scan_pb2.Job, str] | None:
            return _find_request(conn, request_id)

        return await self.read(op)

    async def remember_request(self, request_id: str, fingerprint: str, job_id: str) -> None:
        """Let a retry of a submit that joined an active job find that job (AIP-155)."""

        def op(conn: sqlite3.Connection) -> None:
            _remember_request(conn, request_id, fingerprint, job_id)

        await self.bounded(self.queue_write(op))

    async def get_job(self, job_id: str) -> scan_pb2.Job | None:
        def op(conn: sqlite3.Connection) -> scan_pb2.Job | None:
            row = conn.execute("SELECT job FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            return None if row is None else scan_pb2.Job.FromString(row[0])

        return await self.read(op)

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

        return await self.read(op)

    async def active_jobs(self) -> list[scan_pb2.Job]:
        """Jobs stored QUEUED or RUNNING, oldest first (the recovery set after a restart)."""

        def op(conn: sqlite3.Connection) -> list[scan_pb2.Job]:
            rows = conn.execute(
                f"SELECT job FROM jobs WHERE state NOT IN ({_TERMINAL_SQL}) "
                "ORDER BY create_ns, job_id"
            )
            return [scan_pb2.Job.FromString(row[0]) for row in rows]

        return await self.read(op)

    async def delete_job(self, job_id: str) -> bool:
        """Forget a finished job and its events; False if no finished job has that id."""

        def op(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                f"DELETE FROM jobs WHERE job_id = ? AND state IN ({_TERMINAL_SQL})", (job_id,)
            )
            if cursor.rowcount == 0:
                return False
            conn.execute("DELETE FROM job_events WHERE job_id = ?", (job_id,))
            conn.execute("DELETE FROM requests WHERE job_id = ?", (job_id,))
            conn.execute("DELETE FROM file_errors WHERE job_id = ?", (job_id,))
            return True

        return await self.bounded(self.queue_write(op))

    async def purge_finished(self, ended_before_ns: int) -> int:
        """Delete finished jobs that ended before the given time; returns how many."""

        def op(conn: sqlite3.Connection) -> int:
            ids = [
                row[0]
                for row in conn.execute(
                    f"SELECT job_id FROM jobs WHERE state IN ({_TERMINAL_SQL}) AND end_ns < ?",
                    (ended_before_ns,),
                )
            ]
            conn.executemany("DELETE FROM job_events WHERE job_id = ?", ((i,) for i in ids))
            conn.executemany("DELETE FROM requests WHERE job_id = ?", ((i,) for i in ids))
            conn.executemany("DELETE FROM file_errors WHERE job_id = ?", ((i,) for i in ids))
            conn.executemany("DELETE FROM jobs WHERE job_id = ?", ((i,) for i in ids))
            return len(ids)

        return await self.write(op)

    async def job_state(self, job_id: str) -> tuple[int, int] | None:
        """(state, last_sequence) of a stored job, without reading the job itself."""

        def op(conn: sqlite3.Connection) -> tuple[int, int] | None:
            row = conn.execute(
                "SELECT state, last_sequence FROM jobs WHERE job_id = ?", (job_id,)
            ).fetchone()
            return None if row is None else (int(row[0]), int(row[1]))

        return await self.read(op)

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

        return await self.read(op)

    # -- events ---------------------------------------------------------------------------------

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

        return await self.read(op)

    async def trim_events(self, job_id: str, keep: int) -> None:
        """Keep only the newest `keep` events of a job."""

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "DELETE FROM job_events WHERE job_id = ? AND sequence <= "
                "(SELECT MAX(sequence) FROM job_events WHERE job_id = ?) - ?",
                (job_id, job_id, keep),
            )

        await self.write(op)

    # -- the library ------------------------------------------------------------------------
    # Every write to `videos` goes through `_write_library`, which keeps the index cache right.

    async def _write_library(self, op: Callable[[sqlite3.Connection], T]) -> T:
        cache = self._index_cache
        cache.clear()
        try:
            return await self.write(op)
        finally:
            cache.clear()  # also clears what was read while the write ran

    async def library_index(self, folder: str, *, recursive: bool) -> LibraryIndex:
        """The index of the library's videos below `folder` (only those directly in it unless
        `recursive`). It may be shared: `copy()` it before changing it.

        Read with range queries on the path index, _INDEX_CHUNK videos at a time: SQLite builds
        each chunk's keys as one string (`group_concat`), so that a chunk costs one step and one
        split, not a Python row per video (about 1 µs a video in all). Kept until the library
        changes: reading an unchanged folder again costs nothing."""
        cache = self._index_cache
        cached = cache.get((folder, recursive))
        if cached is not None:
            return cached
        generation = cache.generation
        low, high = _below(folder)
        direct = "" if recursive else f" AND instr(substr(path, {len(low) + 1}), '/') = 0"
        boundary = (
            f"SELECT path FROM videos WHERE path > ? AND path < ?{direct} "
            f"ORDER BY path LIMIT 1 OFFSET {_INDEX_CHUNK - 1}"
        )
        chunk = (
            "SELECT group_concat(path || '/' || size_bytes || '/' || mtime_ns, char(0)), "
            "group_concat(CASE WHEN dev = 0 THEN path END, char(0)) "
            "FROM videos WHERE path > ? AND path {} ?" + direct
        )

        def op(conn: sqlite3.Connection) -> LibraryIndex:
            keys: dict[str, bool] = {}
            undated: set[str] = set()
            after = low
            while True:
                last = conn.execute(boundary, (after, high)).fetchone()
                if last is None:  # the last chunk: up to the end of the range
                    joined, zeros = conn.execute(chunk.format("<"), (after, high)).fetchone()
                else:
                    joined, zeros = conn.execute(chunk.format("<="), (after, last[0])).fetchone()
                if joined:
                    more = dict.fromkeys(joined.split("\0"), True)
                    if keys:
                        keys.update(more)
                    else:
                        keys = more
                if zeros:
                    undated.update(zeros.split("\0"))
                if last is None:
                    return LibraryIndex(keys, undated)
                after = last[0]

        index = await self.read(op)
        cache.put((folder, recursive), index, generation)
        return index

    async def set_devices(self, devices: Sequence[tuple[int, str]]) -> None:
        """Record the device of videos that have none yet (rows written by schema 1)."""

        def op(conn: sqlite3.Connection) -> None:
            conn.executemany("UPDATE videos SET dev = ? WHERE path = ? AND dev = 0", devices)

        await self._write_library(op)

    async def upsert_videos(self, rows: Iterable[VideoRow]) -> tuple[int, int]:
        """Insert or update videos by path in one transaction; returns (added, updated)."""
        rows = list(rows)

        def op(conn: sqlite3.Connection) -> tuple[int, int]:
            added = updated = 0
            for row in rows:
                values = dataclasses.astuple(row)
                cursor = conn.execute(_UPDATE_VIDEO, (*values[1:], row.path))
                if cursor.rowcount:
                    updated += 1
                else:
                    conn.execute(
                        f"INSERT INTO videos ({_VIDEO_COLUMNS}) VALUES "
                        f"({','.join('?' * len(values))})",
                        values,
                    )
                    added += 1
            return added, updated

        return await self._write_library(op)

    async def remove_videos(self, gone: Sequence[tuple[str, int]], *, before_ns: int) -> int:
        """Delete these videos, given as (path, device of its folder now), unless rewritten
        since `before_ns` (a row an overlapping scan has just written stays) or recorded on
        another device (0: not known, no objection); returns how many went."""

        def op(conn: sqlite3.Connection) -> int:
            cursor = conn.executemany(
                "DELETE FROM videos WHERE path = ? AND probe_ns < ? AND dev IN (0, ?)",
                ((path, before_ns, dev) for path, dev in gone),
            )
            return cursor.rowcount

        return await self._write_library(op)

    async def list_videos(
        self,
        *,
        prefix: str,
        video_codec: str,
        min_duration_ns: int | None,
        max_duration_ns: int | None,
        after_path: str | None,
        limit: int,
    ) -> list[scan_pb2.Video]:
        def op(conn: sqlite3.Connection) -> list[scan_pb2.Video]:
            where: list[str] = []
            params: list[Any] = []
            if prefix:
                folder = prefix.rstrip("/")
                where.append("(path = ? OR (path > ? AND path < ?))")
                params.extend([folder, *_below(folder)])
            if video_codec:
                where.append("video_codec = ?")
                params.append(video_codec)
            if min_duration_ns is not None:
                where.append("duration_ns >= ?")
                params.append(min_duration_ns)
            if max_duration_ns is not None:
                where.append("duration_ns <= ?")
                params.append(max_duration_ns)
            if after_path is not None:
                where.append("path > ?")
                params.append(after_path)
            sql = f"SELECT id, {_VIDEO_COLUMNS} FROM videos"
            if where:
                sql += " WHERE " + " AND ".join(where)
            sql += " ORDER BY path LIMIT ?"
            params.append(limit)
            return [_video_of(row) for row in conn.execute(sql, params)]

        return await self.read(op)

    async def get_video(self, *, video_id: int | None, path: str | None) -> scan_pb2.Video | None:
        def op(conn: sqlite3.Connection) -> scan_pb2.Video | None:
            if video_id is not None:
                row = conn.execute(
                    f"SELECT id, {_VIDEO_COLUMNS} FROM videos WHERE id = ?", (video_id,)
                ).fetchone()
            else:
                row = conn.execute(
                    f"SELECT id, {_VIDEO_COLUMNS} FROM videos WHERE path = ?", (path,)
                ).fetchone()
            return None if row is None else _video_of(row)

        return await self.read(op)


_VIDEO_COLUMNS = ", ".join(f.name for f in dataclasses.fields(VideoRow))
_UPDATE_VIDEO = (
    "UPDATE videos SET "
    + ", ".join(f"{f.name} = ?" for f in dataclasses.fields(VideoRow)[1:])
    + " WHERE path = ?"
)


_INDEX_CHUNK = 65536  # videos per query of `library_index`
_INDEX_CACHE_KEYS = 250_000  # videos in the kept indexes, at most (36 MiB at 150 bytes)


def _below(folder: str) -> tuple[str, str]:
    """Bounds of the paths strictly below `folder`: path > 'a/' AND path < 'a0' ('0' follows
    '/' in byte order, which is how SQLite compares TEXT by default)."""
    base = folder.rstrip("/")
    return base + "/", base + "0"


def _video_of(row: Sequence[Any]) -> scan_pb2.Video:
    data = VideoRow(
        **dict(zip((f.name for f in dataclasses.fields(VideoRow)), row[1:], strict=True))
    )
    video = scan_pb2.Video(
        video_id=f"v_{row[0]}",
        path=data.path,
        size_bytes=data.size_bytes,
        container=data.container,
        bit_rate=data.bit_rate,
        video_codec=data.video_codec,
        width=data.width,
        height=data.height,
        frame_rate=data.frame_rate,
        audio_codec=data.audio_codec,
        audio_channels=data.audio_channels,
        audio_sample_rate=data.audio_sample_rate,
        audio_streams=data.audio_streams,
        job_id=data.job_id,
    )
    video.modify_time.FromNanoseconds(data.mtime_ns)
    video.duration.FromNanoseconds(data.duration_ns)
    video.probe_time.FromNanoseconds(data.probe_ns)
    return video


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


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


#: A job's file errors to store: (seq from 0 in the order met, the error).
FileErrorRows = Sequence[tuple[int, scan_pb2.FileError]]


def _move_file_errors(conn: sqlite3.Connection) -> None:
    """Schema 3: each job's file errors from its row into `file_errors`; the row keeps the
    counts and the sample a job of this version keeps (`sample_file_errors`)."""
    rows = conn.execute("SELECT job_id, job FROM jobs").fetchall()
    for job_id, blob in rows:
        job = scan_pb2.Job.FromString(blob)
        errors = list(job.result.file_errors)
        if not errors:
            continue
        conn.executemany(
            "INSERT OR REPLACE INTO file_errors (job_id, seq, error) VALUES (?, ?, ?)",
            ((job_id, seq, error.SerializeToString()) for seq, error in enumerate(errors)),
        )
        sample = sample_file_errors(errors)
        del job.result.file_errors[:]
        job.result.file_errors.extend(sample)
        job.result.file_error_count = len(errors)
        job.result.file_errors_truncated = job.result.file_errors_truncated or len(sample) < len(
            errors
        )
        conn.execute("UPDATE jobs SET job = ? WHERE job_id = ?", (job.SerializeToString(), job_id))


def _insert_event(conn: sqlite3.Connection, event: scan_pb2.JobEvent) -> None:
    conn.execute(
        "INSERT INTO job_events (job_id, sequence, event) VALUES (?, ?, ?)",
        (event.job_id, event.sequence, event.SerializeToString()),
    )


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _resolve_all(outcomes: list[tuple[_WriteRequest, Any, BaseException | None]]) -> None:
    for request, result, error in outcomes:
        settle(request.future, result, error)
