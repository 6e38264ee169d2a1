"""The libraries and their change feeds on PostgreSQL (the `LibraryCatalog` part of
`PostgresStore`), as on SQLite (`sqlite/catalog.py`), shared by the servers of the database.

A creation or a deletion takes the `libraries` table in SHARE ROW EXCLUSIVE mode: two of them
never run at once (two overlapping roots cannot both be created), and each waits for the
video writes in flight, which hold the table in ROW EXCLUSIVE mode from before they read the
roots (`changelog.py`): a new library's first counts include every video committed before it,
and every write after it records its changes. An update records its STATUS change through
the change log, under the library's row lock. A page of changes is read in one snapshot."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from mediascan.v1 import scan_pb2

from ..changes import (
    ChangePage,
    LibraryExists,
    LibraryRoots,
    LibraryRow,
    RootsOverlap,
    StatusChange,
    StoredChange,
    attach,
    library_of_row,
    stored_body,
)
from ..videos import below, video_of
from . import library_leases
from .changelog import ChangeLog
from .database import PgDatabase
from .recorded import RecordedWrites
from .schema import Connection
from .video_writes import SELECTED

_COLUMNS = "id, root, uid, body, video_count, total_size, last_sequence, first_kept"
#: A library as read: its row, then the holder of its lease (`Library.status.node`).
_READ = f"SELECT {_COLUMNS}, {library_leases.HOLDER} FROM libraries"
_CHANGE_COLUMNS = "sequence, kind, video_id, path, old_path, fields, job_id, time_ns, status"
_EXCLUSIVE = "LOCK TABLE libraries IN SHARE ROW EXCLUSIVE MODE"
_BELOW = "(path = %s OR (path > %s AND path < %s))"


class PostgresCatalog:
    """The libraries in the PostgreSQL database (the `LibraryCatalog` part of the store)."""

    def __init__(self, db: PgDatabase, writes: RecordedWrites) -> None:
        self._catalog_db = db
        self._catalog_writes = writes

    async def create_library(self, library_id: str, library: scan_pb2.Library) -> scan_pb2.Library:
        uid = secrets.token_hex(8)
        body = stored_body(library)
        root = library.root

        async def op(conn: Connection) -> LibraryRow:
            await conn.execute(_EXCLUSIVE)
            cursor = await conn.execute("SELECT id, root FROM libraries")
            rows = await cursor.fetchall()
            if any(other == library_id for other, _ in rows):
                raise LibraryExists(library_id)
            overlap = LibraryRoots.of(rows).overlapping(root)
            if overlap is not None:
                raise RootsOverlap(*overlap)
            cursor = await conn.execute(
                f"SELECT count(*), coalesce(sum(size_bytes), 0) FROM videos WHERE {_BELOW}",
                (root, *below(root)),
            )
            counted = await cursor.fetchone()
            count, size = (0, 0) if counted is None else (int(counted[0]), int(counted[1]))
            row: LibraryRow = (library_id, root, uid, body, count, size, 0, 1)
            await conn.execute(
                f"INSERT INTO libraries ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", row
            )
            return row

        return library_of_row(await self._catalog_db.commit(op))

    async def get_library(self, library_id: str) -> scan_pb2.Library | None:
        async def op(conn: Connection) -> scan_pb2.Library | None:
            cursor = await conn.execute(f"{_READ} WHERE id = %s", (library_id,))
            row = await cursor.fetchone()
            return None if row is None else _library(row)

        return await self._catalog_db.read(op)

    async def list_libraries(self, *, after: str, limit: int) -> list[scan_pb2.Library]:
        async def op(conn: Connection) -> list[scan_pb2.Library]:
            cursor = await conn.execute(
                f"{_READ} WHERE id > %s ORDER BY id LIMIT %s", (after, limit)
            )
            return [_library(row) for row in await cursor.fetchall()]

        return await self._catalog_db.read(op)

    async def update_library(
        self, library_id: str, change: StatusChange
    ) -> scan_pb2.Library | None:
        async def op(conn: Connection, log: ChangeLog) -> bool:
            cursor = await conn.execute(f"{_READ} WHERE id = %s FOR UPDATE", (library_id,))
            row = await cursor.fetchone()
            if row is None:
                return False
            library = _library(row)  # a STATUS change names the holder
            status_changed = change(library)
            await conn.execute(
                "UPDATE libraries SET body = %s WHERE id = %s", (stored_body(library), library_id)
            )
            if status_changed:
                log.record(
                    library_id,
                    scan_pb2.CHANGE_KIND_STATUS,
                    status=library.status.SerializeToString(deterministic=True),
                )
            return True

        found = await self._catalog_writes.write(op)
        return await self.get_library(library_id) if found else None

    async def delete_library(self, library_id: str, *, drop_videos: bool) -> bool:
        async def op(conn: Connection) -> bool:
            await conn.execute(_EXCLUSIVE)
            cursor = await conn.execute("SELECT root FROM libraries WHERE id = %s", (library_id,))
            row = await cursor.fetchone()
            if row is None:
                return False
            await conn.execute("DELETE FROM library_changes WHERE library_id = %s", (library_id,))
            await conn.execute("DELETE FROM libraries WHERE id = %s", (library_id,))
            if drop_videos:
                root = str(row[0])
                await conn.execute(f"DELETE FROM videos WHERE {_BELOW}", (root, *below(root)))
            return True

        return await self._catalog_db.commit(op)

    async def changes_after(
        self, library_id: str, after_sequence: int, limit: int
    ) -> ChangePage | None:
        async def op(conn: Connection) -> ChangePage | None:
            async with conn.transaction():  # one snapshot: the library, its changes, videos
                await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                return await _read_changes(conn, library_id, after_sequence, limit)

        return await self._catalog_db.read(op)

    async def library_roots(self) -> LibraryRoots:
        async def op(conn: Connection) -> LibraryRoots:
            cursor = await conn.execute("SELECT id, root FROM libraries")
            return LibraryRoots.of(await cursor.fetchall())

        return await self._catalog_db.read(op)

    async def lease_libraries(
        self, *, node: str, lease_s: float, roots: Sequence[str], limit: int
    ) -> list[str]:
        async def op(conn: Connection) -> list[str]:
            return await library_leases.lease(
                conn, node=node, lease_s=lease_s, roots=roots, limit=limit
            )

        return await self._catalog_db.commit(op)

    async def release_libraries(self, *, node: str, library_ids: Sequence[str]) -> None:
        if not library_ids:
            return

        async def op(conn: Connection) -> None:
            await library_leases.release(conn, node=node, library_ids=library_ids)

        await self._catalog_db.commit(op)


def _row(row: tuple[Any, ...]) -> LibraryRow:
    """A library's stored form from its columns (`_COLUMNS` first)."""
    library_id, root, uid, body, count, size, last, first = row[:8]
    return (library_id, root, uid, bytes(body), int(count), int(size), int(last), int(first))


def _library(row: tuple[Any, ...]) -> scan_pb2.Library:
    """A library as `_READ` reads it: its row, and the holder of its lease."""
    library = library_of_row(_row(row))
    library.status.node = str(row[8])
    return library


async def _read_changes(
    conn: Connection, library_id: str, after_sequence: int, limit: int
) -> ChangePage | None:
    cursor = await conn.execute(
        "SELECT uid, first_kept, last_sequence FROM libraries WHERE id = %s", (library_id,)
    )
    head = await cursor.fetchone()
    if head is None:
        return None
    uid, first_kept, last = str(head[0]), int(head[1]), int(head[2])
    cursor = await conn.execute(
        f"SELECT {_CHANGE_COLUMNS} FROM library_changes WHERE library_id = %s AND sequence > %s "
        "ORDER BY sequence LIMIT %s",
        (library_id, after_sequence, limit),
    )
    stored = [
        StoredChange(
            sequence=int(r[0]),
            kind=int(r[1]),
            video_id=int(r[2]),
            path=str(r[3]),
            old_path=str(r[4]),
            fields=str(r[5]),
            job_id=str(r[6]),
            time_ns=int(r[7]),
            status=bytes(r[8]),
        )
        for r in await cursor.fetchall()
    ]
    ids = sorted({c.video_id for c in stored if c.video_id})
    videos: dict[int, scan_pb2.Video] = {}
    if ids:
        cursor = await conn.execute(
            f"SELECT id, {SELECTED} FROM videos WHERE id = ANY(%s)".encode(), (ids,)
        )
        videos = {int(row[0]): video_of(row) for row in await cursor.fetchall()}
    return ChangePage(
        uid=uid,
        first_kept=first_kept,
        last_sequence=last,
        changes=[attach(c, uid, videos) for c in stored],
    )
