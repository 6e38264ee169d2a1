"""The PostgreSQL schema: numbered migrations, each applied in its own transaction under a
transaction-level advisory lock, so that servers starting at once never both migrate; a
database from a newer server is refused, never touched."""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from ...jobs import ACTIVE, TERMINAL, JobState
from ..protocol import SchemaTooNew

log = logging.getLogger(__name__)

#: A connection of the pool (rows as tuples).
Connection = psycopg.AsyncConnection[tuple[Any, ...]]

#: The advisory lock key of migrations: any constant, the same in every mediascan version.
MIGRATION_LOCK = 0x6D656469617363  # "mediasc"

QUEUED = int(JobState.QUEUED)
RUNNING = int(JobState.RUNNING)
ACTIVE_SQL = ",".join(str(int(s)) for s in sorted(ACTIVE))
TERMINAL_SQL = ",".join(str(int(s)) for s in sorted(TERMINAL))

#: Forward migrations: the statements that take a database from version N-1 to N.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        # `created` orders the queue (FIFO within a priority) by the database's own counter,
        # not by the clocks of the servers that submitted; `create_ns` orders ListJobs.
        # `node` names the server that claimed the current attempt; `lease_until` is kept
        # NULL (leases come with a later version).
        "CREATE TABLE jobs ("
        " job_id text PRIMARY KEY,"
        " state smallint NOT NULL,"
        " priority integer NOT NULL,"
        " created bigint GENERATED ALWAYS AS IDENTITY,"
        " create_ns bigint NOT NULL,"
        " end_ns bigint,"
        " attempt integer NOT NULL,"
        " node text NOT NULL DEFAULT '',"
        " lease_until timestamptz,"
        " path text NOT NULL,"
        " dedup_key text NOT NULL,"
        " request_id text,"
        " fingerprint text,"
        " last_sequence bigint NOT NULL,"
        " job bytea NOT NULL)",
        f"CREATE INDEX jobs_queued ON jobs (priority DESC, created) WHERE state = {QUEUED}",
        "CREATE INDEX jobs_by_create ON jobs (create_ns DESC, job_id DESC)",
        "CREATE INDEX jobs_by_state ON jobs (state, create_ns DESC, job_id DESC)",
        # Identical scans are one job while it is active, whichever server was asked.
        f"CREATE UNIQUE INDEX jobs_active_dedup ON jobs (dedup_key) WHERE state IN ({ACTIVE_SQL})",
        "CREATE TABLE job_events ("
        " job_id text NOT NULL, sequence bigint NOT NULL, event bytea NOT NULL,"
        " PRIMARY KEY (job_id, sequence))",
        "CREATE TABLE file_errors ("
        " job_id text NOT NULL, seq integer NOT NULL, error bytea NOT NULL,"
        " PRIMARY KEY (job_id, seq))",
        # request_id -> job, also for submits that joined an active job (deduplicated).
        "CREATE TABLE requests ("
        " request_id text PRIMARY KEY, fingerprint text NOT NULL, job_id text NOT NULL)",
        "CREATE INDEX requests_by_job ON requests (job_id)",
        # Paths compare byte by byte (COLLATE "C"), as the folder ranges of the queries assume.
        "CREATE TABLE videos ("
        " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
        ' path text COLLATE "C" NOT NULL UNIQUE,'
        " size_bytes bigint NOT NULL, mtime_ns bigint NOT NULL, container text NOT NULL,"
        " duration_ns bigint NOT NULL, bit_rate bigint NOT NULL, video_codec text NOT NULL,"
        " width integer NOT NULL, height integer NOT NULL,"
        " frame_rate double precision NOT NULL, audio_codec text NOT NULL,"
        " audio_channels integer NOT NULL, audio_sample_rate integer NOT NULL,"
        " audio_streams integer NOT NULL, probe_ns bigint NOT NULL, job_id text NOT NULL,"
        " dev bigint NOT NULL)",
    ),
    2: (
        # CancelJob on any server marks a RUNNING job; the server running it stops it (told by
        # a NOTIFY, or when it reads the mark again after its LISTEN connection came back).
        "ALTER TABLE jobs ADD COLUMN cancel_requested boolean NOT NULL DEFAULT false",
    ),
    3: (
        # The files a running job's walk found to probe, in batches any server may claim
        # (`batches.py`): `root` is the job's folder (a server that cannot see it never
        # claims), `files` holds [path, size, mtime_ns, device key] of each, `claim` counts
        # the claims (a finish is fenced by it) and `outcome` is set once probed.
        "CREATE TABLE probe_batches ("
        " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
        " job_id text NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,"
        " attempt integer NOT NULL,"
        " root text NOT NULL,"
        " follow_symlinks boolean NOT NULL,"
        " files jsonb NOT NULL,"
        " node text,"
        " claim integer NOT NULL DEFAULT 0,"
        " lease_until timestamptz,"
        " outcome jsonb,"
        " done_seq bigint)",
        "CREATE INDEX probe_batches_waiting ON probe_batches (id) WHERE outcome IS NULL",
        "CREATE INDEX probe_batches_by_job ON probe_batches (job_id, done_seq)",
        "CREATE SEQUENCE probe_batches_done",
        # A video's file system named the same way on every server (a key made from the mount:
        # `fskeys.py`), not by one machine's st_dev (`dev`, which nodes of version 2 still read
        # and write during a rolling upgrade; new rows get -1 there). 0: not known yet, recorded
        # by the next scan that meets the video.
        "ALTER TABLE videos ADD COLUMN fs_key bigint NOT NULL DEFAULT 0",
    ),
    4: (
        # What the richer prober reads (`probed.ProbeResult`): the fields a query filters on
        # as columns, the rest as `details` (a serialized Video). Rows kept from before say
        # which prober read them (1), so that a plain rescan probes them again.
        "ALTER TABLE videos"
        " ADD COLUMN duration_source smallint NOT NULL DEFAULT 0,"
        " ADD COLUMN truncated boolean NOT NULL DEFAULT false,"
        " ADD COLUMN variable_frame_rate boolean NOT NULL DEFAULT false,"
        " ADD COLUMN rotation smallint NOT NULL DEFAULT 0,"
        " ADD COLUMN hdr smallint NOT NULL DEFAULT 0,"
        " ADD COLUMN prober_version integer NOT NULL DEFAULT 1,"
        " ADD COLUMN details bytea NOT NULL DEFAULT ''::bytea",
    ),
    5: (
        # Content fingerprints (moves, duplicates) and DECODE verification (`health`).
        "ALTER TABLE videos ADD COLUMN fingerprint text COLLATE \"C\" NOT NULL DEFAULT '',"
        " ADD COLUMN health smallint NOT NULL DEFAULT 0,"
        " ADD COLUMN health_errors integer NOT NULL DEFAULT 0,"
        " ADD COLUMN health_messages text NOT NULL DEFAULT '',"
        " ADD COLUMN health_first_error_ns bigint NOT NULL DEFAULT -1,"
        " ADD COLUMN verify_ns bigint NOT NULL DEFAULT 0",
        "CREATE INDEX videos_by_fingerprint ON videos (fingerprint, path) WHERE fingerprint <> ''",
        "CREATE INDEX videos_by_health ON videos (health, path) WHERE health <> 0",
    ),
    # ListVideos `order_by`: an index of each sort key with the id that breaks its ties, so
    # that a page (keyset: `(key, id) > (%s, %s)`) is a range of the index in either direction.
    6: tuple(
        f"CREATE INDEX videos_by_{column} ON videos ({column}, id)"
        for column in ("duration_ns", "size_bytes", "mtime_ns", "probe_ns")
    ),
    # Libraries (`store/changes.py`), as SQLite's version 8: each a root, its settings and
    # status (`body`, a serialized Library), its counts and its change feed
    # (`library_changes`, by sequence, with no gaps: `changelog.py`); ids and roots compare
    # byte by byte, as on SQLite. `owner` and `lease_until`: the server that holds the
    # library's single-owner work (watching, schedules) and until when (`library_leases.py`).
    7: (
        "CREATE TABLE libraries ("
        ' id text COLLATE "C" PRIMARY KEY,'
        ' root text COLLATE "C" NOT NULL UNIQUE,'
        " uid text NOT NULL,"
        " body bytea NOT NULL,"
        " video_count bigint NOT NULL DEFAULT 0,"
        " total_size bigint NOT NULL DEFAULT 0,"
        " last_sequence bigint NOT NULL DEFAULT 0,"
        " first_kept bigint NOT NULL DEFAULT 1,"
        " owner text NOT NULL DEFAULT '',"
        " lease_until timestamptz)",
        "CREATE TABLE library_changes ("
        ' library_id text COLLATE "C" NOT NULL,'
        " sequence bigint NOT NULL,"
        " kind smallint NOT NULL,"
        " video_id bigint NOT NULL,"
        " path text NOT NULL,"
        " old_path text NOT NULL,"
        " fields text NOT NULL,"
        " job_id text NOT NULL,"
        " time_ns bigint NOT NULL,"
        " status bytea NOT NULL,"
        " PRIMARY KEY (library_id, sequence))",
        # What every video write reads first (`changelog.py`), in one round trip: the table
        # locked against creates and deletes of libraries, then (a new snapshot: a volatile
        # function's statement sees what committed before the lock was granted) the roots.
        "CREATE FUNCTION mediascan_library_roots() RETURNS TABLE (id text, root text) "
        "LANGUAGE plpgsql VOLATILE AS $$ BEGIN "
        "LOCK TABLE libraries IN ROW EXCLUSIVE MODE; "
        "RETURN QUERY SELECT l.id, l.root FROM libraries l; "
        "END $$",
    ),
}
SCHEMA_VERSION = max(MIGRATIONS)


async def migrate(conn: Connection, where: str) -> int:
    """Bring the database to SCHEMA_VERSION, one migration a transaction, each under the
    advisory lock (a server that waited on it finds the work done). Returns how many
    migrations this call applied. SchemaTooNew for a database a newer server wrote."""
    applied = 0
    for target in range(1, SCHEMA_VERSION + 1):
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            version = await _version(conn, where)
            if version >= target:
                continue
            for statement in MIGRATIONS[target]:
                await conn.execute(statement)
            await conn.execute("UPDATE schema_version SET version = %s", (target,))
            applied += 1
        log.info("migrated %s to schema version %d", where, target)
    return applied


async def _version(conn: Connection, where: str) -> int:
    """The stored schema version (0: a new database, its version table made here)."""
    await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
    row = await (await conn.execute("SELECT version FROM schema_version")).fetchone()
    if row is None:
        await conn.execute("INSERT INTO schema_version (version) VALUES (0)")
        return 0
    version = int(row[0])
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"{where} has schema version {version}, newer than this server's "
            f"{SCHEMA_VERSION}: upgrade mediascan or use another --db"
        )
    return version
