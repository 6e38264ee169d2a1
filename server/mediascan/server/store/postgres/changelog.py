"""`ChangeLog`: the library changes one PostgreSQL write transaction records, beside the rows
it writes (the `Recorder` of `store/changes.py`).

`begin` takes the `libraries` table in ROW EXCLUSIVE mode, then reads the roots: a library
cannot be created or deleted (SHARE ROW EXCLUSIVE, `catalog.py`) while a write that read the
roots without it is in flight, so no video lands under a new root uncounted. `record` only
buffers. `flush`, the transaction's last step, takes each library's row lock in id order with
`UPDATE libraries SET last_sequence = last_sequence + n ... RETURNING last_sequence`: writers
of one library wait for each other there, so their sequences follow their commit order, and a
transaction rolled back leaves no gap (its UPDATE goes with it)."""

from __future__ import annotations

import dataclasses
import time

from ..changes import LibraryRoots
from .schema import Connection

#: Changes kept per library by default (as on SQLite): older ones are trimmed (a follower
#: resuming from before them gets a RESYNC).
HISTORY = 100_000

#: The table in ROW EXCLUSIVE mode, then the roots (one round trip: schema version 7).
_ROOTS = "SELECT id, root FROM mediascan_library_roots()"
#: SET expressions read the row as it was: `last_sequence` there is the one before.
_ADVANCE = (
    "UPDATE libraries SET last_sequence = last_sequence + %(n)s, "
    "video_count = video_count + %(count)s, total_size = total_size + %(size)s, "
    "first_kept = GREATEST(first_kept, last_sequence + %(n)s - %(history)s + 1) "
    "WHERE id = %(id)s RETURNING last_sequence, first_kept"
)
_INSERT = (
    "INSERT INTO library_changes (library_id, sequence, kind, video_id, path, old_path, "
    "fields, job_id, time_ns, status) SELECT * FROM unnest(%s::text[], %s::bigint[], "
    "%s::smallint[], %s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[], "
    "%s::bigint[], %s::bytea[])"
)
_TRIM = "DELETE FROM library_changes WHERE library_id = %s AND sequence < %s"


@dataclasses.dataclass(frozen=True, slots=True)
class _Change:
    kind: int
    video_id: int
    path: str
    old_path: str
    fields: str
    job_id: str
    status: bytes


@dataclasses.dataclass(slots=True)
class _Pending:
    """One library's changes recorded so far, and what they add to its counts."""

    changes: list[_Change] = dataclasses.field(default_factory=list)
    count: int = 0
    size: int = 0


class ChangeLog:
    """Buffers the changes of one transaction (`record`), then stores them with each
    library's next sequences, its counts and its trimmed history (`flush`)."""

    def __init__(self, roots: LibraryRoots, *, history: int = HISTORY) -> None:
        self.roots = roots
        self._history = history
        self._now = time.time_ns()
        self._pending: dict[str, _Pending] = {}

    @classmethod
    async def begin(cls, conn: Connection, *, history: int = HISTORY) -> ChangeLog:
        """The log of the transaction of `conn`, with the roots it sees (table lock first)."""
        cursor = await conn.execute(_ROOTS)
        return cls(LibraryRoots.of(await cursor.fetchall()), history=history)

    def library_of(self, path: str) -> str | None:
        return self.roots.library_of(path) if self.roots else None

    def record(
        self,
        library_id: str,
        kind: int,
        *,
        video_id: int = 0,
        path: str = "",
        old_path: str = "",
        fields: str = "",
        job_id: str = "",
        status: bytes = b"",
        count: int = 0,
        size: int = 0,
    ) -> None:
        """Keep one change for `flush`; `count` and `size` are what it adds to the library's
        video count and total size."""
        pending = self._pending.setdefault(library_id, _Pending())
        pending.changes.append(_Change(kind, video_id, path, old_path, fields, job_id, status))
        pending.count += count
        pending.size += size

    async def flush(self, conn: Connection) -> dict[str, int]:
        """Store the changes recorded: each library's sequences, counts and history (its row
        locked until the transaction ends), then every change in one statement. Returns the
        last sequence of each library that changed."""
        columns: tuple[list[object], ...] = tuple([] for _ in range(10))
        last_of: dict[str, int] = {}
        trims: list[tuple[str, int]] = []
        for library_id in sorted(self._pending):  # one lock order: no deadlock between two
            pending = self._pending[library_id]
            params = {
                "n": len(pending.changes),
                "count": pending.count,
                "size": pending.size,
                "history": self._history,
                "id": library_id,
            }
            row = await (await conn.execute(_ADVANCE, params)).fetchone()
            if row is None:  # cannot be: a deletion waits for the table lock of `begin`
                continue
            last, first_kept = int(row[0]), int(row[1])
            last_of[library_id] = last
            first = last - len(pending.changes) + 1
            for sequence, c in enumerate(pending.changes, first):
                values = (library_id, sequence, c.kind, c.video_id, c.path, c.old_path)
                more = (c.fields, c.job_id, self._now, c.status)
                for column, value in zip(columns, (*values, *more), strict=True):
                    column.append(value)
            if first_kept > 1:
                trims.append((library_id, first_kept))
        if last_of:
            await conn.execute(_INSERT, columns)
        for trim in trims:
            await conn.execute(_TRIM, trim)
        self._pending.clear()
        return last_of
