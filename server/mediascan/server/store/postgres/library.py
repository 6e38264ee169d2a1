"""The library queries on PostgreSQL. No index is kept between scans: other servers write
the same library, so every scan reads the index of its folder from the database. Every video
write is a recorded write (`recorded.py`): fenced first, then the statements of
`video_writes.py` with the changes of the libraries they touch, in one transaction."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

from mediascan.v1 import scan_pb2

from ...probed import PROBER_VERSION
from ..protocol import (
    Fence,
    HealthUpdate,
    LibraryIndex,
    LibraryListing,
    MovedVideo,
    VideoQuery,
    VideoRow,
)
from ..videos import below, group_of, row_of, video_of, video_page_sql
from .changelog import ChangeLog
from .database import PgDatabase
from .fencing import check_fence
from .recorded import RecordedWrites
from .schema import Connection
from .video_writes import (
    SELECTED,
    health_recorded,
    move_recorded,
    remove_recorded,
    upsert_recorded,
)


class PostgresLibrary:
    """The video library in the PostgreSQL database (the `LibraryStore` half)."""

    def __init__(self, db: PgDatabase, writes: RecordedWrites) -> None:
        self._db = db
        self._writes = writes

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

    async def library_count(self, folder: str, *, limit: int) -> int:
        """The videos below `folder`, at any depth, counted up to `limit`."""
        low, high = below(folder)
        sql = (
            b"SELECT count(*) FROM (SELECT 1 FROM videos WHERE path > %s AND path < %s LIMIT %s) v"
        )

        async def op(conn: Connection) -> int:
            cursor = await conn.execute(sql, (low, high, limit))
            row = await cursor.fetchone()
            return int(row[0]) if row is not None else 0

        return await self._db.read(op)

    async def library_bounds(self, folder: str, *, every: int) -> list[str]:
        """The path of every `every`-th video below `folder` (on the path index)."""
        low, high = below(folder)
        sql = (
            b"SELECT path FROM (SELECT path, row_number() OVER (ORDER BY path) AS n FROM videos "
            b"WHERE path > %s AND path < %s) v WHERE n %% %s = 0 ORDER BY path"
        )

        async def op(conn: Connection) -> list[str]:
            cursor = await conn.execute(sql, (low, high, every))
            return [str(row[0]) for row in await cursor.fetchall()]

        return await self._db.read(op)

    async def library_listing(
        self, folder: str, *, after: str, upto: str, extensions: Collection[str]
    ) -> LibraryListing:
        """The videos below `folder` from after `after` up to `upto`, as `find` lists files
        (`LibraryListing`): PostgreSQL builds their keys, joined by NUL bytes, as one bytea."""
        low, high = below(folder)
        key = (
            f"substr(path, {len(low) + 1}) || '/' || size_bytes || '/' || "
            f"CASE WHEN prober_version < {PROBER_VERSION} OR NOT coalesce("
            "lower(substring(path from '\\.[^./]*$')) = ANY(%s), false) THEN 's' "
            "WHEN fs_key = 0 THEN 'u' || mtime_ns WHEN mtime_ns < 0 THEN mtime_ns::text "
            "ELSE (mtime_ns / 1000000000) || '.' || lpad(mod(mtime_ns, 1000000000)::text, 9, '0') "
            "|| '0' END"
        )
        sql = (
            f"SELECT string_agg(convert_to({key}, 'UTF8'), '\\x00'::bytea), sum(size_bytes) "
            f"FROM videos WHERE path > %s AND path {'<=' if upto else '<'} %s"
        )
        values = (list(extensions), after or low, upto or high)

        async def op(conn: Connection) -> LibraryListing:
            cursor = await conn.execute(sql.encode(), values)
            row = await cursor.fetchone()
            keys, size = row if row is not None else (None, 0)
            return LibraryListing(bytes(keys).split(b"\0") if keys else [], int(size or 0))

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
        rows = list(rows)
        if not rows:
            return 0, 0

        async def op(conn: Connection, log: ChangeLog) -> tuple[int, int]:
            return await upsert_recorded(conn, log, rows)

        return await self._writes.write(op, fence=fence)

    async def remove_videos(
        self, gone: Sequence[tuple[str, int]], *, before_ns: int, fence: Fence | None = None
    ) -> int:
        """Delete these videos, given as (path, key of its folder's file system now), unless
        rewritten since `before_ns` or recorded on another file system (0: not known, no
        objection); with `fence`, only while that attempt of the job runs."""
        if not gone:
            return 0
        job_id = "" if fence is None else fence.job_id

        async def op(conn: Connection, log: ChangeLog) -> int:
            return await remove_recorded(conn, log, gone, before_ns=before_ns, job_id=job_id)

        return await self._writes.write(op, fence=fence)

    async def video_rows(self, paths: Sequence[str]) -> dict[str, VideoRow]:
        if not paths:
            return {}
        sql = f"SELECT {SELECTED} FROM videos WHERE path = ANY(%s)"

        async def op(conn: Connection) -> dict[str, VideoRow]:
            cursor = await conn.execute(sql.encode(), (list(paths),))
            return {row[0]: row_of(row) for row in await cursor.fetchall()}

        return await self._db.read(op)

    async def move_videos(
        self, moves: Sequence[MovedVideo], *, before_ns: int, fence: Fence | None = None
    ) -> list[bool]:
        if not moves:
            return []
        job_id = "" if fence is None else fence.job_id

        async def op(conn: Connection, log: ChangeLog) -> list[bool]:
            return await move_recorded(conn, log, moves, before_ns=before_ns, job_id=job_id)

        return await self._writes.write(op, fence=fence)

    async def set_health(
        self, updates: Sequence[HealthUpdate], *, fence: Fence | None = None
    ) -> int:
        if not updates:
            return 0
        job_id = "" if fence is None else fence.job_id

        async def op(conn: Connection, log: ChangeLog) -> int:
            return await health_recorded(conn, log, updates, job_id=job_id)

        return await self._writes.write(op, fence=fence)

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
        sql = f"SELECT id, {SELECTED} FROM videos{page}"

        async def op(conn: Connection) -> list[scan_pb2.Video]:
            cursor = await conn.execute(sql.encode(), params)
            return [video_of(row) for row in await cursor.fetchall()]

        return await self._db.read(op)

    async def get_video(self, *, video_id: int | None, path: str | None) -> scan_pb2.Video | None:
        if video_id is not None and not 0 < video_id < 2**63:
            return None  # no row has it: ids are positive bigints
        column, value = ("id", video_id) if video_id is not None else ("path", path)
        sql = f"SELECT id, {SELECTED} FROM videos WHERE {column} = %s"

        async def op(conn: Connection) -> scan_pb2.Video | None:
            row = await (await conn.execute(sql.encode(), (value,))).fetchone()
            return None if row is None else video_of(row)

        return await self._db.read(op)
