"""Every row records the version of the prober that read it (issue 14, section 6): the migration
from the schema before it keeps every video (SQLite 4 -> 5, PostgreSQL 2 -> 3), and a plain
rescan, without `full`, probes again the rows an older prober read, so that the new fields fill
in; on both backends."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
from _library_helpers import SUCCEEDED, real, scan

from mediascan.server.probed import PROBER_VERSION
from mediascan.server.store.postgres import schema as pg_schema
from mediascan.server.store.sqlite import schema as sqlite_schema
from mediascan.server.testing import make_many
from mediascan.v1 import scan_pb2

pytestmark = pytest.mark.both_backends

#: The columns of `videos` before the richer prober (SQLite 4, PostgreSQL 2).
OLD_COLUMNS = (
    "path, size_bytes, mtime_ns, container, duration_ns, bit_rate, video_codec, width, height, "
    "frame_rate, audio_codec, audio_channels, audio_sample_rate, audio_streams, probe_ns, "
    "job_id, dev"
)


def execute(database: Path | str, sql: str, rows: Sequence[Sequence[Any]] = ((),)) -> None:
    """Run `sql` (with `?` placeholders) on the test's database, once per row of `rows`."""
    if isinstance(database, Path):
        with contextlib.closing(sqlite3.connect(database)) as conn, conn:
            conn.executemany(sql, rows)
        return
    with psycopg.connect(database, autocommit=True) as conn:
        conn.cursor().executemany(sql.replace("?", "%s"), rows)


def old_database(database: Path | str, files: list[Path]) -> None:
    """A database as the server before the richer prober left it, holding `files`."""
    if isinstance(database, Path):
        with contextlib.closing(sqlite3.connect(database)) as conn:
            conn.executescript(sqlite_schema._SCHEMA)
            conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '4')")
            for version in (2, 3, 4):
                for step in sqlite_schema._MIGRATIONS[version]:
                    conn.execute(step) if isinstance(step, str) else step(conn)
            conn.commit()
    else:
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute("CREATE TABLE schema_version (version integer NOT NULL)")
            conn.execute("INSERT INTO schema_version VALUES (2)")
            for version in (1, 2):
                for statement in pg_schema.MIGRATIONS[version]:
                    conn.execute(statement.encode())
    rows = []
    for path in files:
        info = path.stat()
        rows.append(
            (real(path), info.st_size, info.st_mtime_ns, "mov,mp4,m4a,3gp,3g2,mj2", 200_000_000,
             1000, "h264", 64, 48, 25.0, "", 0, 0, 0, 1, "j_old", info.st_dev)
        )  # fmt: skip
    execute(database, f"INSERT INTO videos ({OLD_COLUMNS}) VALUES ({', '.join('?' * 17)})", rows)


def counts(job: Any) -> tuple[int, int, int, int]:
    result = job.result
    return result.added, result.updated, result.unchanged, result.removed


async def videos_of(stub: Any, files: list[Path]) -> list[scan_pb2.Video]:
    return [await stub.GetVideo(scan_pb2.GetVideoRequest(path=real(p))) for p in files]


async def test_a_plain_rescan_probes_again_what_an_older_prober_read(
    make_server: Any, connect: Any, database: Path | str, tmp_path: Path
) -> None:
    lib = tmp_path / "lib"
    files = make_many(lib, 3)
    stub = await connect((await make_server()).address)
    assert counts(await scan(stub, lib)) == (3, 0, 0, 0)
    execute(
        database,
        "UPDATE videos SET prober_version = 1, hdr = 0, duration_source = 0, details = ?",
        [(b"",)],
    )
    stale = await videos_of(stub, files)
    assert {(v.prober_version, v.hdr, len(v.streams)) for v in stale} == {
        (1, scan_pb2.HDR_KIND_UNSPECIFIED, 0)
    }

    # A file gone whose row an older prober read is removed like any other.
    files[0].unlink()
    assert counts(await scan(stub, lib)) == (0, 2, 0, 1)
    for video in await videos_of(stub, files[1:]):
        assert video.prober_version == PROBER_VERSION
        assert video.hdr == scan_pb2.HDR_KIND_NONE
        assert video.duration_source == scan_pb2.DURATION_SOURCE_HEADER
        assert [s.codec for s in video.streams] == ["h264"]
    assert counts(await scan(stub, lib)) == (0, 0, 2, 0)


async def test_the_migration_keeps_every_video_and_a_rescan_fills_the_new_fields(
    make_server: Any, connect: Any, database: Path | str, tmp_path: Path
) -> None:
    lib = tmp_path / "lib"
    files = make_many(lib, 4)
    old_database(database, files)
    stub = await connect((await make_server()).address)

    kept = await videos_of(stub, files)
    assert [v.path for v in kept] == [real(p) for p in files]
    for video in kept:
        assert (video.video_codec, video.width, video.height, video.job_id) == (
            "h264",
            64,
            48,
            "j_old",
        )
        assert video.prober_version == 1
        assert video.duration_source == scan_pb2.DURATION_SOURCE_UNSPECIFIED
        assert video.hdr == scan_pb2.HDR_KIND_UNSPECIFIED
        assert not video.truncated and not video.variable_frame_rate and not video.streams
    listed = await stub.ListVideos(scan_pb2.ListVideosRequest(path_prefix=real(lib)))
    assert len(listed.videos) == 4

    job = await scan(stub, lib)
    assert job.state == SUCCEEDED
    assert counts(job) == (0, 4, 0, 0)
    for video in await videos_of(stub, files):
        assert video.prober_version == PROBER_VERSION
        assert video.job_id == job.job_id
        assert video.pixel_format == "yuv420p" and video.chroma_subsampling == "4:2:0"
        assert video.stream_count == len(video.streams) >= 1
