"""The libraries and their change feeds in SQLite (the `LibraryCatalog` part of `SqliteStore`).
Writes go through `SqliteLibrary.write_recorded`, so that a status change is recorded in the
library's feed by the transaction that makes it."""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

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
    within_roots,
)
from ..videos import VIDEO_COLUMNS, below, video_of
from .changelog import ChangeLog
from .database import Database

T = TypeVar("T")

_COLUMNS = "id, root, uid, body, video_count, total_size, last_sequence, first_kept"
_CHANGE_COLUMNS = "sequence, kind, video_id, path, old_path, fields, job_id, time_ns, status"


class RecordedWriter(Protocol):
    async def write_recorded(
        self, op: Callable[[sqlite3.Connection, ChangeLog], T], *, videos: bool = True
    ) -> T: ...


class SqliteCatalog:
    def __init__(self, db: Database, writer: RecordedWriter) -> None:
        self._catalog_db = db
        self._writer = writer

    async def create_library(self, library_id: str, library: scan_pb2.Library) -> scan_pb2.Library:
        uid = secrets.token_hex(8)
        body = stored_body(library)
        root = library.root

        def op(conn: sqlite3.Connection, log: ChangeLog) -> LibraryRow:
            if conn.execute("SELECT 1 FROM libraries WHERE id = ?", (library_id,)).fetchone():
                raise LibraryExists(library_id)
            overlap = log.roots.overlapping(root)
            if overlap is not None:
                raise RootsOverlap(*overlap)
            low, high = below(root)
            count, size = conn.execute(
                "SELECT count(*), coalesce(sum(size_bytes), 0) FROM videos "
                "WHERE path = ? OR (path > ? AND path < ?)",
                (root, low, high),
            ).fetchone()
            row: LibraryRow = (library_id, root, uid, body, count, size, 0, 1)
            conn.execute(f"INSERT INTO libraries ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)
            return row

        return library_of_row(await self._writer.write_recorded(op))

    async def get_library(self, library_id: str) -> scan_pb2.Library | None:
        def op(conn: sqlite3.Connection) -> LibraryRow | None:
            row: LibraryRow | None = conn.execute(
                f"SELECT {_COLUMNS} FROM libraries WHERE id = ?", (library_id,)
            ).fetchone()
            return row

        row = await self._catalog_db.read(op)
        return None if row is None else library_of_row(row)

    async def list_libraries(self, *, after: str, limit: int) -> list[scan_pb2.Library]:
        def op(conn: sqlite3.Connection) -> list[LibraryRow]:
            return conn.execute(
                f"SELECT {_COLUMNS} FROM libraries WHERE id > ? ORDER BY id LIMIT ?",
                (after, limit),
            ).fetchall()

        return [library_of_row(row) for row in await self._catalog_db.read(op)]

    async def update_library(
        self, library_id: str, change: StatusChange
    ) -> scan_pb2.Library | None:
        def op(conn: sqlite3.Connection, log: ChangeLog) -> LibraryRow | None:
            row: LibraryRow | None = conn.execute(
                f"SELECT {_COLUMNS} FROM libraries WHERE id = ?", (library_id,)
            ).fetchone()
            if row is None:
                return None
            library = library_of_row(row)
            status_changed = change(library)
            conn.execute(
                "UPDATE libraries SET body = ? WHERE id = ?", (stored_body(library), library_id)
            )
            if status_changed:
                log.record(
                    library_id,
                    scan_pb2.CHANGE_KIND_STATUS,
                    status=library.status.SerializeToString(deterministic=True),
                )
            return row

        row = await self._writer.write_recorded(op, videos=False)
        return None if row is None else await self.get_library(library_id)

    async def delete_library(self, library_id: str, *, drop_videos: bool) -> bool:
        def op(conn: sqlite3.Connection, log: ChangeLog) -> bool:
            row = conn.execute("SELECT root FROM libraries WHERE id = ?", (library_id,)).fetchone()
            if row is None:
                return False
            conn.execute("DELETE FROM library_changes WHERE library_id = ?", (library_id,))
            conn.execute("DELETE FROM libraries WHERE id = ?", (library_id,))
            if drop_videos:
                low, high = below(row[0])
                conn.execute(
                    "DELETE FROM videos WHERE path = ? OR (path > ? AND path < ?)",
                    (row[0], low, high),
                )
            return True

        return await self._writer.write_recorded(op)

    async def changes_after(
        self, library_id: str, after_sequence: int, limit: int
    ) -> ChangePage | None:
        def op(conn: sqlite3.Connection) -> ChangePage | None:
            conn.execute("BEGIN")  # one snapshot for the library, its changes and videos
            try:
                return _read_changes(conn, library_id, after_sequence, limit)
            finally:
                conn.execute("COMMIT")

        return await self._catalog_db.read(op)

    async def lease_libraries(
        self, *, node: str, lease_s: float, roots: Sequence[str], limit: int
    ) -> list[str]:
        """Every library within `roots` (the first `limit` by id): one server uses the file,
        so it holds them all, with no lease to keep."""

        def op(conn: sqlite3.Connection) -> list[tuple[str, str]]:
            return conn.execute("SELECT id, root FROM libraries ORDER BY id").fetchall()

        rows = await self._catalog_db.read(op)
        held = [library_id for library_id, root in rows if within_roots(root, roots)]
        return held[: max(limit, 0)]

    async def release_libraries(self, *, node: str, library_ids: Sequence[str]) -> None:
        """Nothing to let go: no other server could take them."""

    async def library_roots(self) -> LibraryRoots:
        def op(conn: sqlite3.Connection) -> LibraryRoots:
            return LibraryRoots.of(conn.execute("SELECT id, root FROM libraries"))

        return await self._catalog_db.read(op)


def _read_changes(
    conn: sqlite3.Connection, library_id: str, after_sequence: int, limit: int
) -> ChangePage | None:
    head = conn.execute(
        "SELECT uid, first_kept, last_sequence FROM libraries WHERE id = ?", (library_id,)
    ).fetchone()
    if head is None:
        return None
    uid, first_kept, last = head
    rows = conn.execute(
        f"SELECT {_CHANGE_COLUMNS} FROM library_changes WHERE library_id = ? AND sequence > ? "
        "ORDER BY sequence LIMIT ?",
        (library_id, after_sequence, limit),
    ).fetchall()
    stored = [
        StoredChange(
            sequence=r[0],
            kind=r[1],
            video_id=r[2],
            path=r[3],
            old_path=r[4],
            fields=r[5],
            job_id=r[6],
            time_ns=r[7],
            status=bytes(r[8]),
        )
        for r in rows
    ]
    ids = sorted({c.video_id for c in stored if c.video_id})
    videos: dict[int, scan_pb2.Video] = {}
    for at in range(0, len(ids), 500):
        chunk = ids[at : at + 500]
        marks = ", ".join("?" * len(chunk))
        for row in conn.execute(
            f"SELECT id, {VIDEO_COLUMNS} FROM videos WHERE id IN ({marks})", chunk
        ):
            videos[row[0]] = video_of(row)
    return ChangePage(
        uid=uid,
        first_kept=first_kept,
        last_sequence=last,
        changes=[attach(c, uid, videos) for c in stored],
    )
