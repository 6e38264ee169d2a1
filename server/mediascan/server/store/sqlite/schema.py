"""The SQLite schema: the version 1 tables, the numbered forward migrations, and `migrate`,
which brings a database to this code's version (or refuses one from a newer server)."""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

from mediascan.v1 import scan_pb2

from ...jobs import TERMINAL, JobState, sample_file_errors
from ..protocol import SchemaTooNew

log = logging.getLogger(__name__)

SCHEMA_VERSION = 9

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

TERMINAL_SQL = ",".join(str(int(s)) for s in TERMINAL)
QUEUED = int(JobState.QUEUED)
RUNNING = int(JobState.RUNNING)

Step = str | Callable[[sqlite3.Connection], None]

#: The sort keys of ListVideos besides the path (`VIDEO_ORDERS`), each indexed with the id.
ORDERED_COLUMNS = ("duration_ns", "size_bytes", "mtime_ns", "probe_ns")

#: The end of a video's key in a listing (`LibraryListing`): `/size/seconds.nanoseconds0` as
#: `find -printf %T@` writes the time; `/size/u` and the nanoseconds for a video stored without
#: a device; `/size/` and the nanoseconds for a time before 1970.
LISTED = (
    "CASE WHEN dev = 0 THEN '/' || size_bytes || '/u' || mtime_ns "
    "WHEN mtime_ns < 0 THEN '/' || size_bytes || '/' || mtime_ns "
    "ELSE printf('/%d/%d.%09d0', size_bytes, mtime_ns / 1000000000, mtime_ns % 1000000000) END"
)

#: The file name's extension, lower case (ASCII), with its dot ("" without one): what a
#: listing checks against the scan's extensions (`videonames.is_video_name`).
EXTENSION = (
    "CASE WHEN instr(substr(path, length(rtrim(path, replace(path, '/', ''))) + 1), '.') "
    "THEN lower(substr(path, length(rtrim(path, replace(path, '.', ''))))) ELSE '' END"
)

#: Forward migrations: the statements (or functions) that take a database from version N-1 to N.
_MIGRATIONS: dict[int, tuple[Step, ...]] = {
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
    # Claims in the database: the next job is the QUEUED one of the highest priority, oldest
    # first (`claim_next`), found through a partial index of the queued jobs.
    4: (
        "ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0",
        lambda conn: _fill_priorities(conn),
        f"CREATE INDEX IF NOT EXISTS jobs_queued ON jobs (priority DESC, create_ns, job_id) "
        f"WHERE state = {QUEUED}",
    ),
    # What the richer prober reads (`probed.ProbeResult`): the fields a query filters on as
    # columns, the rest as `details` (a serialized Video). Rows kept from before say which
    # prober read them (1), so that a plain rescan probes them again.
    5: (
        "ALTER TABLE videos ADD COLUMN duration_source INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE videos ADD COLUMN truncated INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE videos ADD COLUMN variable_frame_rate INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE videos ADD COLUMN rotation INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE videos ADD COLUMN hdr INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE videos ADD COLUMN prober_version INTEGER NOT NULL DEFAULT 1",
        "ALTER TABLE videos ADD COLUMN details BLOB NOT NULL DEFAULT x''",
    ),
    # Content fingerprints (moves, duplicates) and DECODE verification (`health`).
    6: (
        "ALTER TABLE videos ADD COLUMN fingerprint TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE videos ADD COLUMN health INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE videos ADD COLUMN health_errors INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE videos ADD COLUMN health_messages TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE videos ADD COLUMN health_first_error_ns INTEGER NOT NULL DEFAULT -1",
        "ALTER TABLE videos ADD COLUMN verify_ns INTEGER NOT NULL DEFAULT 0",
        "CREATE INDEX IF NOT EXISTS videos_by_fingerprint ON videos (fingerprint, path) "
        "WHERE fingerprint != ''",
        "CREATE INDEX IF NOT EXISTS videos_by_health ON videos (health, path) WHERE health != 0",
    ),
    # ListVideos `order_by`: an index of each sort key with the id that breaks its ties, so
    # that a page (keyset: `(key, id) > (?, ?)`) is a range of the index in either direction.
    7: tuple(
        f"CREATE INDEX IF NOT EXISTS videos_by_{column} ON videos ({column}, id)"
        for column in ORDERED_COLUMNS
    ),
    # Libraries (`store/changes.py`): each a root, its settings and status (`body`, a
    # serialized Library), its counts, and its change feed (`library_changes`, by sequence).
    8: (
        "CREATE TABLE IF NOT EXISTS libraries (id TEXT PRIMARY KEY, root TEXT NOT NULL UNIQUE, "
        "uid TEXT NOT NULL, body BLOB NOT NULL, video_count INTEGER NOT NULL DEFAULT 0, "
        "total_size INTEGER NOT NULL DEFAULT 0, last_sequence INTEGER NOT NULL DEFAULT 0, "
        "first_kept INTEGER NOT NULL DEFAULT 1)",
        "CREATE TABLE IF NOT EXISTS library_changes (library_id TEXT NOT NULL, "
        "sequence INTEGER NOT NULL, kind INTEGER NOT NULL, video_id INTEGER NOT NULL, "
        "path TEXT NOT NULL, old_path TEXT NOT NULL, fields TEXT NOT NULL, "
        "job_id TEXT NOT NULL, time_ns INTEGER NOT NULL, status BLOB NOT NULL, "
        "PRIMARY KEY (library_id, sequence)) WITHOUT ROWID",
    ),
    # The find walk (`find_walk.py`): each video's `listed`, the end of its key as `find`
    # lists files (`LibraryListing`), and its `extension`, computed by SQLite (virtual
    # columns) and kept in an index with the path, so that a listing reads one index and
    # formats no number.
    9: (lambda conn: _add_listed(conn),),
}


def _add_listed(conn: sqlite3.Connection) -> None:
    """Schema 9: the virtual columns `listed` (`LISTED`) and `extension` (`EXTENSION`), and
    their index."""
    columns = {row[1] for row in conn.execute("PRAGMA table_xinfo(videos)")}
    if "dev" not in columns:  # a database made by hand, without version 2's column
        conn.execute("ALTER TABLE videos ADD COLUMN dev INTEGER NOT NULL DEFAULT 0")
    for name, expression in (("listed", LISTED), ("extension", EXTENSION)):
        if name not in columns:
            conn.execute(
                f"ALTER TABLE videos ADD COLUMN {name} TEXT GENERATED ALWAYS AS ({expression})"
            )
    conn.execute(
        "CREATE INDEX IF NOT EXISTS videos_listed ON videos "
        "(path, listed, extension, size_bytes, prober_version)"
    )


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def identity(path: Path) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the file at `path`, or None if there is none."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def open_database(path: Path) -> sqlite3.Connection:
    """The write connection of a migrated database (WAL, synchronous FULL)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = connect(path)
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode.lower() != "wal":
        log.warning("SQLite refused WAL mode (got %s); concurrency will suffer", mode)
    conn.execute("PRAGMA synchronous = FULL")
    try:
        migrate(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def migrate(conn: sqlite3.Connection, path: Path) -> None:
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
            f"{path} has schema version {version}, newer than this server's "
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
        log.info("migrated %s to schema version %d", path, target)


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


def _fill_priorities(conn: sqlite3.Connection) -> None:
    """Schema 4: the priority of every active job, from its stored message (a finished job is
    never claimed: it keeps 0)."""
    rows = conn.execute(
        f"SELECT job_id, job FROM jobs WHERE state NOT IN ({TERMINAL_SQL})"
    ).fetchall()
    conn.executemany(
        "UPDATE jobs SET priority = ? WHERE job_id = ?",
        ((scan_pb2.Job.FromString(blob).options.priority, job_id) for job_id, blob in rows),
    )
