"""`ChangeLog`: the library changes one PostgreSQL write transaction records, beside the rows
it writes (the `Recorder` of `store/changes.py`).

`begin` takes the `libraries` table in ROW EXCLUSIVE mode, then reads the roots: a library
cannot be created or deleted (SHARE ROW EXCLUSIVE, `catalog.py`) while a write that read the
roots without it is in flight, so no video lands under a new root uncounted. `record` only
buffers. `flush`, the transaction's last step, takes each library's row lock in id order with
`UPDATE libraries SET last_sequence = last_sequence + n ... RETURNING last_sequence`: writers
of one library wait for each other there, so their sequences follow their commit order, and a
transaction rolled back leaves no gap (its UPDATE goes with it). The changes go in with one
COPY."""

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
_COPY = (
    "COPY library_changes (library_id, sequence, kind, video_id, path, old_path, fields, "
    "job_id, time_ns, status) FROM STDIN"
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

    def row(self, library_id: str, sequence: int, time_ns: int) -> tuple[object, ...]:
        """The change as a row of `library_changes`, in the columns' order of _COPY."""
        head = (library_id, sequence, self.kind, self.video_id, self.path, self.old_path)
        return (*head, self.fields, self.job_id, time_ns, self.status)


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
        locked until the transaction ends), then every change in one COPY. Returns the last
        sequence of each library that changed."""
        rows: list[tuple[object, ...]] = []
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
            rows += [
                change.row(library_id, sequence, self._now)
                for sequence, change in enumerate(pending.changes, first)
            ]
            if first_kept > 1:
                trims.append((library_id, first_kept))
        if rows:
            async with conn.cursor() as cursor, cursor.copy(_COPY) as copy:
                for change in rows:
                    await copy.write_row(change)
        for trim in trims:
            await conn.execute(_TRIM, trim)
        self._pending.clear()
        return last_of
