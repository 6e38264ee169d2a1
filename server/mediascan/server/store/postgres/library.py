"""The library queries on PostgreSQL. No index is kept between scans: other servers write
the same library, so every scan reads the index of its folder from the database."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

from mediascan.v1 import scan_pb2

from ...probed import PROBER_VERSION
from ..protocol import (
    HEALTH_FIELDS,
    Fence,
    HealthUpdate,
    LibraryIndex,
    MovedVideo,
    VideoQuery,
    VideoRow,
)
from ..videos import (
    PLAIN_FIELDS,
    VIDEO_FIELDS,
    below,
    group_of,
    keep_health,
    row_of,
    video_of,
    video_page_sql,
    video_values,
)
from .database import PgDatabase
from .fencing import check_fence
from .schema import Connection

#: The columns a VideoRow is written to: its `dev` is the key of the file system's mount
#: (`fskeys.py`), stored in `fs_key`; the `dev` column (the st_dev of schema version 2) gets
#: -1, which no st_dev equals, so that a node of that version never removes such a row.
_COLUMNS = tuple("fs_key" if name == "dev" else name for name in VIDEO_FIELDS)
#: What a read selects, as VIDEO_COLUMNS names them (`dev` is the key of the mount).
_SELECTED = ", ".join("fs_key AS dev" if name == "dev" else name for name in VIDEO_FIELDS)


def _column(name: str) -> str:
    """The column a VideoRow field is stored in."""
    return "fs_key" if name == "dev" else name


_UPSERT = (
    f"INSERT INTO videos ({', '.join(_COLUMNS)}, dev) "
    f"VALUES ({', '.join(['%s'] * len(_COLUMNS))}, -1) "
    "ON CONFLICT (path) DO UPDATE SET "
    + ", ".join(
        [f"{_column(name)} = EXCLUDED.{_column(name)}" for name in PLAIN_FIELDS[1:]]
        + [
            keep_health(name, lambda c: f"EXCLUDED.{c}", lambda c: f"videos.{c}")
            for name in HEALTH_FIELDS
        ]
    )
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
            "fs_key = 0, path, health <> 0 FROM videos "
            "WHERE path > %s AND path < %s" + direct
        )

        async def op(conn: Connection) -> LibraryIndex:
            cursor = await conn.execute(sql.encode(), (low, high))
            keys: dict[str, bool] = {}
            undated: set[str] = set()
            for key, no_dev, path, verified in await cursor.fetchall():
                keys[key] = verified
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

    async def video_rows(self, paths: Sequence[str]) -> dict[str, VideoRow]:
        if not paths:
            return {}
        sql = f"SELECT {_SELECTED} FROM videos WHERE path = ANY(%s)"

        async def op(conn: Connection) -> dict[str, VideoRow]:
            cursor = await conn.execute(sql.encode(), (list(paths),))
            return {row[0]: row_of(row) for row in await cursor.fetchall()}

        return await self._db.read(op)

    async def move_videos(
        self, moves: Sequence[MovedVideo], *, before_ns: int, fence: Fence | None = None
    ) -> list[bool]:
        if not moves:
            return []

        async def op(conn: Connection) -> list[bool]:
            await check_fence(conn, fence)
            done = []
            for move in moves:
                cursor = await conn.execute(
                    "UPDATE videos SET path = %s, fs_key = %s, dev = -1 WHERE path = %s "
                    "AND size_bytes = %s AND mtime_ns = %s AND fingerprint = %s AND probe_ns < %s "
                    "AND fs_key IN (0, %s) "
                    "AND NOT EXISTS (SELECT 1 FROM videos WHERE path = %s)",
                    move.guarded(before_ns),
                )
                done.append(cursor.rowcount > 0)
            return done

        return await self._db.commit(op)

    async def set_health(
        self, updates: Sequence[HealthUpdate], *, fence: Fence | None = None
    ) -> int:
        if not updates:
            return 0
        sql = (
            "UPDATE videos SET "
            + ", ".join(f"{name} = %({name})s" for name in HEALTH_FIELDS)
            + " WHERE path = %(path)s AND size_bytes = %(size_bytes)s AND mtime_ns = %(mtime_ns)s"
        )

        async def op(conn: Connection) -> int:
            await check_fence(conn, fence)
            changed = 0
            for update in updates:
                cursor = await conn.execute(sql.encode(), dataclasses.asdict(update))
                changed += cursor.rowcount
            return changed

        return await self._db.commit(op)

    async def list_duplicates(
        self, *, prefix: str, after: str | None, limit: int, files_per_group: int
    ) -> list[scan_pb2.DuplicateGroup]:
        scope, scoped = "", []
        if prefix:
            folder = prefix.rstrip("/")
            scope, scoped = (
                " AND (path = %s OR (path > %s AND path < %s))",
                [folder, *below(folder)],
            )
        later = "" if after is None else " AND fingerprint > %s"
        groups = (
            f"SELECT fingerprint, count(*) FROM videos WHERE fingerprint <> ''{scope}{later} "
            "GROUP BY fingerprint HAVING count(*) > 1 ORDER BY fingerprint LIMIT %s"
        )
        members = (
            f"SELECT id, path, size_bytes FROM videos WHERE fingerprint = %s{scope} "
            "ORDER BY path LIMIT %s"
        )
        params = [*scoped, *([] if after is None else [after]), limit]

        async def op(conn: Connection) -> list[scan_pb2.DuplicateGroup]:
            found = await (await conn.execute(groups.encode(), params)).fetchall()
            result = []
            for fp, count in found:
                cursor = await conn.execute(members.encode(), (fp, *scoped, files_per_group))
                result.append(group_of(fp, count, await cursor.fetchall()))
            return result

        return await self._db.read(op)

    async def list_videos(self, query: VideoQuery) -> list[scan_pb2.Video]:
        page, params = video_page_sql(query, "%s")
        sql = f"SELECT id, {_SELECTED} FROM videos{page}"

        async def op(conn: Connection) -> list[scan_pb2.Video]:
            cursor = await conn.execute(sql.encode(), params)
            return [video_of(row) for row in await cursor.fetchall()]

        return await self._db.read(op)

    async def get_video(self, *, video_id: int | None, path: str | None) -> scan_pb2.Video | None:
        if video_id is not None and not 0 < video_id < 2**63:
            return None  # no row has it: ids are positive bigints
        column, value = ("id", video_id) if video_id is not None else ("path", path)
        sql = f"SELECT id, {_SELECTED} FROM videos WHERE {column} = %s"

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
