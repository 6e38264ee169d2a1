"""10. A large library's cost at rest: the database's bytes per video, on SQLite and on
PostgreSQL, and the resident memory of an idle server that serves it.

The library is `library.py`'s (`list_rows` videos, the one benchmark 9 lists; its `details`
are what the prober stores for real files). On SQLite, the figure is the database file's size
÷ videos; the baseline is the `videos` table alone (its pages, from `dbstat`), so the ratio is
what the indexes (the path, the fingerprints, the health, the four sort keys) add. On
PostgreSQL (a throwaway cluster of the benchmark's own, the same rows written by the server's
store, then `VACUUM ANALYZE`), `pg_total_relation_size('videos')` ÷ videos against
`pg_table_size('videos')` (the heap with its TOAST, free space and visibility maps) ÷ videos.

The idle server: VmRSS of a `mediascan-server` on the library, read from /proc after it
started and served a first page of each order and then sat idle for a second, against the same
on an empty library. The server must not hold the library in memory: the difference, per video,
is in the note.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import grpc
import psycopg

from mediascan.server.store import VIDEO_ORDERS
from mediascan.server.testing_postgres import postgres_cluster
from mediascan.v1 import scan_pb2, scan_pb2_grpc

from .common import CHANNEL_OPTIONS, Context, Row, Sizes, mediascan_server, paired
from .library import library_db, write_library

BENCH = "10 library size"
IDLE = 1.0  # seconds the server sits idle before its VmRSS is read


def figures(sizes: Sizes) -> list[str]:
    return [
        "SQLite bytes per video",
        "PostgreSQL bytes per video",
        f"server RSS idle with {sizes.list_rows:,} videos (MiB)",
    ]


async def run(ctx: Context) -> list[Row]:
    count = ctx.sizes.list_rows
    db = await library_db(ctx)
    rows = [_sqlite_row(db, count)]
    rows.append(await _postgres_row(ctx, count))
    ctx.log(f"{BENCH}: {rows[-1].value:,.0f} bytes a video on PostgreSQL")
    rows.append(await _idle_row(ctx, db, count))
    return rows


def _sqlite_row(db: Path, count: int) -> Row:
    wal = db.with_name(db.name + "-wal")
    size = db.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        parts = dict(conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"))
        (rows,) = conn.execute("SELECT count(*) FROM videos").fetchone()
        (paths, details) = conn.execute(
            "SELECT avg(length(CAST(path AS BLOB))), avg(length(details)) FROM videos"
        ).fetchone()
    if rows != count:
        raise RuntimeError(f"the library holds {rows} videos, not {count}")
    indexes = sorted(
        (
            (name, pages)
            for name, pages in parts.items()
            if name.startswith(("videos_", "sqlite_autoindex_videos"))
        ),
        key=lambda item: -item[1],
    )
    shown = ", ".join(f"{name} {pages / count:.0f}" for name, pages in indexes)
    return paired(
        BENCH,
        "SQLite bytes per video",
        [(size / count, parts["videos"] / count)],
        baseline_name="the videos table alone",
        note=f"{count:,} videos, file {size / 2**20:,.0f} MiB; a path is {paths:.0f} bytes and "
        f"a video's details {details:.0f} bytes on average; bytes a video in each index: {shown}",
    )


async def _postgres_row(ctx: Context, count: int) -> Row:
    ctx.log(f"{BENCH}: starting a throwaway PostgreSQL cluster for {count:,} videos")
    with postgres_cluster() as cluster:
        url = cluster.fresh()
        await write_library(ctx, url, count)
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute("VACUUM ANALYZE videos")
            cursor = await conn.execute(
                "SELECT pg_total_relation_size('videos'), pg_table_size('videos'), "
                "(SELECT count(*) FROM videos)"
            )
            total, table, rows = await cursor.fetchone() or (0, 0, 0)
            cursor = await conn.execute(
                "SELECT indexrelid::regclass::text, pg_relation_size(indexrelid) "
                "FROM pg_index WHERE indrelid = 'videos'::regclass ORDER BY 2 DESC"
            )
            indexes = await cursor.fetchall()
    if rows != count:
        raise RuntimeError(f"PostgreSQL holds {rows} videos, not {count}")
    shown = ", ".join(f"{name} {size / count:.0f}" for name, size in indexes)
    return paired(
        BENCH,
        "PostgreSQL bytes per video",
        [(total / count, table / count)],
        baseline_name="the videos table alone",
        note=f"{count:,} videos, {total / 2**20:,.0f} MiB after VACUUM ANALYZE; bytes a video in "
        f"each index: {shown}",
    )


async def _idle_row(ctx: Context, db: Path, count: int) -> Row:
    full = await _idle_rss(ctx, "idle-library", "--db", str(db))
    bare = await _idle_rss(ctx, "idle-empty")  # its own fresh database
    grown = (full["after"] - bare["after"]) * 1024 / count
    return paired(
        BENCH,
        f"server RSS idle with {count:,} videos (MiB)",
        [(full["after"] / 1024, bare["after"] / 1024)],
        baseline_name="an empty library",
        note=f"VmRSS after a first page of each order and {IDLE:g} s idle; right after the "
        f"start {full['start'] / 1024:.1f} MiB (empty library {bare['start'] / 1024:.1f}); "
        f"{grown:+.1f} bytes a video",
        details=[{"library_kib": full, "empty_kib": bare}],
    )


async def _idle_rss(ctx: Context, name: str, *args: str) -> dict[str, int]:
    """VmRSS (KiB) of a server (`args`: its flags): once started, then after a page of each
    order."""
    server, _ = mediascan_server(ctx, name, *args)
    try:
        await asyncio.sleep(IDLE)
        start = server.rss_kib() or 0
        async with grpc.aio.insecure_channel(server.address, options=CHANNEL_OPTIONS) as channel:
            stub = scan_pb2_grpc.ScanServiceStub(channel)
            for order in VIDEO_ORDERS:
                for way in ("", " desc"):
                    request = scan_pb2.ListVideosRequest(order_by=order + way, page_size=100)
                    await stub.ListVideos(request)
        await asyncio.sleep(IDLE)
        after = server.rss_kib() or 0
    finally:
        await asyncio.to_thread(server.stop)
    if not start or not after:
        raise RuntimeError(f"no VmRSS read for server {server.pid}")
    return {"start": start, "after": after}
