"""The library queries on PostgreSQL. No index is kept between scans: other servers write
the same library, so every scan reads the index of its folder from the database."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from mediascan.v1 import scan_pb2

from ...probed import PROBER_VERSION
from ..protocol import Fence, LibraryIndex, VideoRow
from ..videos import VIDEO_COLUMNS, VIDEO_FIELDS, below, video_of, video_values
from .database import PgDatabase
from .fencing import check_fence
from .schema import Connection

#: The columns a VideoRow is written to: its `dev` is the key of the file system's mount
#: (`fskeys.py`), stored in `fs_key`; the `dev` column (the st_dev of schema version 2) gets
#: -1, which no st_dev equals, so that a node of that version never removes such a row.
_COLUMNS = tuple("fs_key" if name == "dev" else name for name in VIDEO_FIELDS)
_UPSERT = (
    f"INSERT INTO videos ({', '.join(_COLUMNS)}, dev) "
    f"VALUES ({', '.join(['%s'] * len(_COLUMNS))}, -1) "
    "ON CONFLICT (path) DO UPDATE SET "
    + ", ".join(f"{name} = EXCLUDED.{name}" for name in _COLUMNS[1:])
    + ", dev = -1"
    # xmax is 0 in a row version that an INSERT made, not an UPDATE.
    + " RETURNING xmax = 0"
)


class PostgresLibrary:
    """The video library in the PostgreSQL database (the `LibraryStore` half)."""

    def __init__(self, db: PgDatabase) -> None:
        self._db = db

    async def library_index(self, folder: str, *, recursive: bool) -> LibraryIndex:
        """The index of the library's videos below `folder` (only those directly in it unless
        `recursive`), read with a range query on the path index."""
        low, high = below(folder)
        direct = "" if recursive else f" AND strpos(substr(path, {len(low) + 1}), '/') = 0"
        sql = (
            "SELECT path || '/' || CASE WHEN prober_version < "
            f"{PROBER_VERSION} THEN '-1/-1' ELSE size_bytes || '/' || mtime_ns END, "
            "fs_key = 0, path FROM videos "
            "WHERE path > %s AND path < %s" + direct
        )

        async def op(conn: Connection) -> LibraryIndex:
            cursor = await conn.execute(sql.encode(), (low, high))
            keys: dict[str, bool] = {}
            undated: set[str] = set()
            for key, no_dev, path in await cursor.fetchall():
                keys[key] = True
                if no_dev:
                    undated.add(path)
            return LibraryIndex(keys, undated)

        return await self._db.read(op)

    async def set_devices(
        self, devices: Sequence[tuple[int, str]], *, fence: Fence | None = None
    ) -> None:
        """Record the file system key of videos that have none yet (fenced: LeaseLost)."""
        if not devices:
            return

        async def op(conn: Connection) -> None:
            await check_fence(conn, fence)
            await conn.execute(
                "UPDATE videos SET fs_key = g.key "
                "FROM unnest(%s::bigint[], %s::text[]) AS g(key, path) "
                "WHERE videos.path = g.path AND videos.fs_key = 0",
                ([dev for dev, _ in devices], [path for _, path in devices]),
            )

        await self._db.commit(op)

    async def upsert_videos(
        self, rows: Iterable[VideoRow], *, fence: Fence | None = None
    ) -> tuple[int, int]:
        """Insert or update videos by path in one transaction; returns (added, updated).
        With `fence`, only while that attempt of the job runs (LeaseLost, nothing written)."""
        values = [video_values(row) for row in rows]
        if not values:
            return 0, 0

        async def op(conn: Connection) -> tuple[int, int]:
            await check_fence(conn, fence)
            return await upsert(conn, values)

        return await self._db.commit(op)

    async def remove_videos(
        self, gone: Sequence[tuple[str, int]], *, before_ns: int, fence: Fence | None = None
    ) -> int:
        """Delete these videos, given as (path, key of its folder's file system now), unless
        rewritten since `before_ns` or recorded on another file system (0: not known, no
        objection); with `fence`, only while that attempt of the job runs."""
        if not gone:
            return 0

        async def op(conn: Connection) -> int:
            await check_fence(conn, fence)
            cursor = await conn.execute(
                "DELETE FROM videos USING unnest(%s::text[], %s::bigint[]) AS g(path, key) "
                "WHERE videos.path = g.path AND videos.probe_ns < %s "
                "AND videos.fs_key IN (0, g.key)",
                ([path for path, _ in gone], [dev for _, dev in gone], before_ns),
            )
            return cursor.rowcount

        return await self._db.commit(op)

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
        where: list[str] = []
        params: list[Any] = []
        if prefix:
            folder = prefix.rstrip("/")
            where.append("(path = %s OR (path > %s AND path < %s))")
            params.extend([folder, *below(folder)])
        for clause, value in (
            ("video_codec = %s", video_codec or None),
            ("duration_ns >= %s", min_duration_ns),
            ("duration_ns <= %s", max_duration_ns),
            ("path > %s", after_path),
        ):
            if value is not None:
                where.append(clause)
                params.append(value)
        sql = f"SELECT id, {VIDEO_COLUMNS} FROM videos"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY path LIMIT %s"
        params.append(limit)

        async def op(conn: Connection) -> list[scan_pb2.Video]:
            cursor = await conn.execute(sql.encode(), params)
            return [video_of(row) for row in await cursor.fetchall()]

        return await self._db.read(op)

    async def get_video(self, *, video_id: int | None, path: str | None) -> scan_pb2.Video | None:
        if video_id is not None and not 0 < video_id < 2**63:
            return None  # no row has it: ids are positive bigints
        column, value = ("id", video_id) if video_id is not None else ("path", path)
        sql = f"SELECT id, {VIDEO_COLUMNS} FROM videos WHERE {column} = %s"

        async def op(conn: Connection) -> scan_pb2.Video | None:
            row = await (await conn.execute(sql.encode(), (value,))).fetchone()
            return None if row is None else video_of(row)

        return await self._db.read(op)


async def upsert(conn: Connection, values: Sequence[tuple[Any, ...]]) -> tuple[int, int]:
    """Insert or update the rows `values` (VideoRow tuples) by path: (added, updated)."""
    added = 0
    async with conn.cursor() as cursor:
        await cursor.executemany(_UPSERT.encode(), values, returning=True)
        while True:
            row = await cursor.fetchone()
            added += bool(row and row[0])
            if not cursor.nextset():
                break
    return added, len(values) - added
