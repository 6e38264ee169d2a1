"""The library queries on PostgreSQL. No index is kept between scans: other servers write
the same library, so every scan reads the index of its folder from the database."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

from mediascan.v1 import scan_pb2

from ..protocol import HEALTH_FIELDS, HealthUpdate, LibraryIndex, MovedVideo, VideoRow
from ..videos import (
    PLAIN_FIELDS,
    VIDEO_COLUMNS,
    VIDEO_FIELDS,
    below,
    group_of,
    keep_health,
    row_of,
    video_of,
    video_values,
)
from .database import PgDatabase
from .schema import Connection

_UPSERT = (
    f"INSERT INTO videos ({VIDEO_COLUMNS}) VALUES ({', '.join(['%s'] * len(VIDEO_FIELDS))}) "
    "ON CONFLICT (path) DO UPDATE SET "
    + ", ".join(
        [f"{name} = EXCLUDED.{name}" for name in PLAIN_FIELDS[1:]]
        + [
            keep_health(name, lambda c: f"EXCLUDED.{c}", lambda c: f"videos.{c}")
            for name in HEALTH_FIELDS
        ]
    )
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
            "SELECT path || '/' || size_bytes || '/' || mtime_ns, dev = 0, path, health <> 0 "
            "FROM videos "
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

    async def set_devices(self, devices: Sequence[tuple[int, str]]) -> None:
        """Record the device of videos that have none yet."""
        if not devices:
            return

        async def op(conn: Connection) -> None:
            await conn.execute(
                "UPDATE videos SET dev = g.dev "
                "FROM unnest(%s::bigint[], %s::text[]) AS g(dev, path) "
                "WHERE videos.path = g.path AND videos.dev = 0",
                ([dev for dev, _ in devices], [path for _, path in devices]),
            )

        await self._db.commit(op)

    async def upsert_videos(self, rows: Iterable[VideoRow]) -> tuple[int, int]:
        """Insert or update videos by path in one transaction; returns (added, updated)."""
        values = [video_values(row) for row in rows]
        if not values:
            return 0, 0

        async def op(conn: Connection) -> tuple[int, int]:
            added = 0
            async with conn.cursor() as cursor:
                await cursor.executemany(_UPSERT.encode(), values, returning=True)
                while True:
                    row = await cursor.fetchone()
                    added += bool(row and row[0])
                    if not cursor.nextset():
                        break
            return added, len(values) - added

        return await self._db.commit(op)

    async def remove_videos(self, gone: Sequence[tuple[str, int]], *, before_ns: int) -> int:
        """Delete these videos, given as (path, device of its folder now), unless rewritten
        since `before_ns` or recorded on another device (0: not known, no objection)."""
        if not gone:
            return 0

        async def op(conn: Connection) -> int:
            cursor = await conn.execute(
                "DELETE FROM videos USING unnest(%s::text[], %s::bigint[]) AS g(path, dev) "
                "WHERE videos.path = g.path AND videos.probe_ns < %s AND videos.dev IN (0, g.dev)",
                ([path for path, _ in gone], [dev for _, dev in gone], before_ns),
            )
            return cursor.rowcount

        return await self._db.commit(op)

    async def video_rows(self, paths: Sequence[str]) -> dict[str, VideoRow]:
        if not paths:
            return {}
        sql = f"SELECT {VIDEO_COLUMNS} FROM videos WHERE path = ANY(%s)"

        async def op(conn: Connection) -> dict[str, VideoRow]:
            cursor = await conn.execute(sql.encode(), (list(paths),))
            return {row[0]: row_of(row) for row in await cursor.fetchall()}

        return await self._db.read(op)

    async def move_videos(self, moves: Sequence[MovedVideo], *, before_ns: int) -> list[bool]:
        if not moves:
            return []

        async def op(conn: Connection) -> list[bool]:
            done = []
            for move in moves:
                cursor = await conn.execute(
                    "UPDATE videos SET path = %s, dev = %s WHERE path = %s AND size_bytes = %s "
                    "AND mtime_ns = %s AND fingerprint = %s AND probe_ns < %s AND dev IN (0, %s) "
                    "AND NOT EXISTS (SELECT 1 FROM videos WHERE path = %s)",
                    (
                        move.new_path,
                        move.dev,
                        move.old_path,
                        move.size_bytes,
                        move.mtime_ns,
                        move.fingerprint,
                        before_ns,
                        move.folder_dev,
                        move.new_path,
                    ),
                )
                done.append(cursor.rowcount > 0)
            return done

        return await self._db.commit(op)

    async def set_health(self, updates: Sequence[HealthUpdate]) -> int:
        if not updates:
            return 0
        sql = (
            "UPDATE videos SET "
            + ", ".join(f"{name} = %({name})s" for name in HEALTH_FIELDS)
            + " WHERE path = %(path)s AND size_bytes = %(size_bytes)s AND mtime_ns = %(mtime_ns)s"
        )

        async def op(conn: Connection) -> int:
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

    async def list_videos(
        self,
        *,
        prefix: str,
        video_codec: str,
        min_duration_ns: int | None,
        max_duration_ns: int | None,
        after_path: str | None,
        limit: int,
        health: int = 0,
        fingerprint: str = "",
    ) -> list[scan_pb2.Video]:
        where: list[str] = []
        params: list[Any] = []
        if prefix:
            folder = prefix.rstrip("/")
            where.append("(path = %s OR (path > %s AND path < %s))")
            params.extend([folder, *below(folder)])
        for clause, value in (
            ("video_codec = %s", video_codec or None),
            ("health = %s", health or None),
            ("fingerprint = %s", fingerprint or None),
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
