"""`ChangeLog`: the library changes one SQLite write transaction records, beside the rows it
writes (the writer thread runs it; nothing here touches the event loop)."""

from __future__ import annotations

import sqlite3
import time

from ..changes import LibraryRoots

#: Changes kept per library by default: older ones are trimmed (a follower resuming from
#: before them gets a RESYNC).
HISTORY = 100_000


class ChangeLog:
    """Assigns each library's next sequences and stores the changes, then (`close`) the
    libraries' new last sequences and counts, and trims their histories."""

    def __init__(self, conn: sqlite3.Connection, *, history: int = HISTORY) -> None:
        self._conn = conn
        self._history = history
        self.roots = LibraryRoots.of(conn.execute("SELECT id, root FROM libraries"))
        self._now = time.time_ns()
        self._last: dict[str, int] = {}
        self._counts: dict[str, list[int]] = {}

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
        """Store one change with the library's next sequence; `count` and `size` are what it
        adds to the library's video count and total size."""
        last = self._last.get(library_id)
        if last is None:
            row = self._conn.execute(
                "SELECT last_sequence FROM libraries WHERE id = ?", (library_id,)
            ).fetchone()
            last = row[0]
        last += 1
        self._last[library_id] = last
        self._conn.execute(
            "INSERT INTO library_changes (library_id, sequence, kind, video_id, path, old_path, "
            "fields, job_id, time_ns, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (library_id, last, kind, video_id, path, old_path, fields, job_id, self._now, status),
        )
        counts = self._counts.setdefault(library_id, [0, 0])
        counts[0] += count
        counts[1] += size

    def close(self) -> dict[str, int]:
        """Store each library's last sequence and counts, trim its history; returns the last
        sequence of each library that changed."""
        for library_id, last in self._last.items():
            count, size = self._counts[library_id]
            first = max(1, last - self._history + 1)
            self._conn.execute(
                "UPDATE libraries SET last_sequence = ?, video_count = video_count + ?, "
                "total_size = total_size + ?, first_kept = max(first_kept, ?) WHERE id = ?",
                (last, count, size, first, library_id),
            )
            self._conn.execute(
                "DELETE FROM library_changes WHERE library_id = ? AND sequence < ?",
                (library_id, first),
            )
        return dict(self._last)
