"""The library queries: videos, and the indexes a scan compares its walk with (kept in
`_IndexCache` while the library does not change)."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import TypeVar

from mediascan.v1 import scan_pb2

from ...probed import PROBER_VERSION
from ..changes import changed_fields, record_move
from ..protocol import (
    HEALTH_FIELDS,
    Fence,
    HealthUpdate,
    LibraryIndex,
    LibraryListing,
    MovedVideo,
    VideoQuery,
    VideoRow,
)
from ..videos import (
    PLAIN_FIELDS,
    VIDEO_COLUMNS,
    VIDEO_FIELDS,
    below,
    group_of,
    keep_health,
    row_of,
    sqlite_page_parts,
    video_of,
    video_values,
)
from .changelog import HISTORY, ChangeLog
from .database import Database

T = TypeVar("T")


class _IndexCache:
    """The indexes `SqliteLibrary.library_index` read, kept while the library does not
    change, so that rescanning an unchanged folder does not read the library again. Every
    write to the library clears it, before the write and after it, and an index whose read
    overlapped a write is not kept. Holds at most _INDEX_CACHE_KEYS keys; the least recently
    used index goes first."""

    def __init__(self) -> None:
        self.generation = 0  #: changes with every clear
        self._entries: dict[tuple[str, bool], LibraryIndex] = {}

    def get(self, key: tuple[str, bool]) -> LibraryIndex | None:
        index = self._entries.pop(key, None)
        if index is not None:
            self._entries[key] = index  # now the most recently used
        return index

    def put(self, key: tuple[str, bool], index: LibraryIndex, generation: int) -> None:
        """Keep `index`, read from the library as it was at `generation`, unless the library
        changed meanwhile or the index is too big."""
        if generation != self.generation or len(index.keys) > _INDEX_CACHE_KEYS:
            return
        self._entries[key] = index
        held = sum(len(kept.keys) for kept in self._entries.values())
        while held > _INDEX_CACHE_KEYS:
            held -= len(self._entries.pop(next(iter(self._entries))).keys)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()


class SqliteLibrary:
    """The video library in the SQLite database (the `LibraryStore` half of `SqliteStore`).
    Every write to `videos` goes through `write_recorded`, which keeps the index cache right."""

    def __init__(self, db: Database) -> None:
        self._db = db
        #: Indexes of recently scanned folders (`library_index`).
        self._index_cache = _IndexCache()
        self._library_listeners: list[Callable[[str, int], None]] = []
        #: Changes kept per library (`ChangeLog`).
        self.history = HISTORY

    async def write_recorded(
        self, op: Callable[[sqlite3.Connection, ChangeLog], T], *, videos: bool = True
    ) -> T:
        """Run `op` in a write transaction with the `ChangeLog` of the libraries' changes it
        records; once committed, tell the library listeners which libraries changed. An op
        that writes no video (`videos=False`: a library's status) keeps the index cache."""
        if not videos:
            return await self._write_changes(op)
        cache = self._index_cache
        cache.clear()
        try:
            return await self._write_changes(op)
        finally:
            cache.clear()  # also clears what was read while the write ran

    async def _write_changes(self, op: Callable[[sqlite3.Connection, ChangeLog], T]) -> T:
        history = self.history

        def logged(conn: sqlite3.Connection) -> tuple[T, dict[str, int]]:
            log = ChangeLog(conn, history=history)
            result = op(conn, log)
            return result, log.close()

        result, changed = await self._db.write(logged)
        self.libraries_changed(changed)
        return result

    def libraries_changed(self, changed: dict[str, int]) -> None:
        for library_id, last in changed.items():
            for listener in self._library_listeners:
                listener(library_id, last)

    def add_library_listener(self, listener: Callable[[str, int], None]) -> None:
        self._library_listeners.append(listener)

    async def library_index(self, folder: str, *, recursive: bool) -> LibraryIndex:
        """The index of the library's videos below `folder` (only those directly in it unless
        `recursive`). It may be shared: `copy()` it before changing it.

        Read with range queries on the path index, _INDEX_CHUNK videos at a time: SQLite builds
        each chunk's keys as one string (`group_concat`), so that a chunk costs one step and one
        split, not a Python row per video (about 1 µs a video in all). Kept until the library
        changes: reading an unchanged folder again costs nothing."""
        cache = self._index_cache
        cached = cache.get((folder, recursive))
        if cached is not None:
            return cached
        generation = cache.generation
        low, high = below(folder)
        direct = "" if recursive else f" AND instr(substr(path, {len(low) + 1}), '/') = 0"
        boundary = (
            f"SELECT path FROM videos WHERE path > ? AND path < ?{direct} "
            f"ORDER BY path LIMIT 1 OFFSET {_INDEX_CHUNK - 1}"
        )
        # A video an older prober read gets a key no file has (`stale_key`): probed again.
        key = (
            f"path || '/' || CASE WHEN prober_version < {PROBER_VERSION} THEN '-1/-1' "
            "ELSE size_bytes || '/' || mtime_ns END"
        )
        chunk = (
            f"SELECT group_concat(CASE WHEN health = 0 THEN {key} END, char(0)), "
            f"group_concat(CASE WHEN health != 0 THEN {key} END, char(0)), "
            "group_concat(CASE WHEN dev = 0 THEN path END, char(0)) "
            "FROM videos WHERE path > ? AND path {} ?" + direct
        )

        def op(conn: sqlite3.Connection) -> LibraryIndex:
            keys: dict[str, bool] = {}
            undated: set[str] = set()
            after = low
            while True:
                last = conn.execute(boundary, (after, high)).fetchone()
                bounds = (after, high) if last is None else (after, last[0])
                # The last chunk goes up to the end of the range.
                query = chunk.format("<" if last is None else "<=")
                unverified, verified, zeros = conn.execute(query, bounds).fetchone()
                for joined, value in ((unverified, False), (verified, True)):
                    if joined:
                        more = dict.fromkeys(joined.split("\0"), value)
                        if keys:
                            keys.update(more)
                        else:
                            keys = more
                if zeros:
                    undated.update(zeros.split("\0"))
                if last is None:
                    return LibraryIndex(keys, undated)
                after = last[0]

        index = await self._db.read(op)
        cache.put((folder, recursive), index, generation)
        return index

    async def library_count(self, folder: str, *, limit: int) -> int:
        """The videos below `folder`, at any depth, counted up to `limit` (on the path index:
        what `limit` entries of it cost)."""
        low, high = below(folder)
        sql = "SELECT count(*) FROM (SELECT 1 FROM videos WHERE path > ? AND path < ? LIMIT ?)"

        def op(conn: sqlite3.Connection) -> int:
            return int(conn.execute(sql, (low, high, limit)).fetchone()[0])

        return await self._db.read(op)

    async def library_bounds(self, folder: str, *, every: int) -> list[str]:
        """The path of every `every`-th video below `folder` (on the path index alone: about
        0.05 s for 1,000,000 videos)."""
        low, high = below(folder)
        sql = "SELECT path FROM videos WHERE path > ? AND path < ? ORDER BY path LIMIT 1 OFFSET ?"

        def op(conn: sqlite3.Connection) -> list[str]:
            bounds: list[str] = []
            after = low
            while (row := conn.execute(sql, (after, high, every - 1)).fetchone()) is not None:
                after = str(row[0])
                bounds.append(after)
            return bounds

        return await self._db.read(op)

    async def library_listing(
        self, folder: str, *, after: str, upto: str, extensions: Collection[str]
    ) -> LibraryListing:
        """The videos below `folder` from after `after` up to `upto`, as `find` lists files
        (`LibraryListing`): their keys, joined by NUL bytes in one BLOB, read from the index
        of paths, `listed` and `extension` alone (schema version 9): about 0.35 s for
        1,000,000 videos."""
        low, high = below(folder)
        marks = ", ".join("?" * len(extensions)) or "NULL"
        key = (
            f"substr(path, {len(low) + 1}) || CASE WHEN prober_version < {PROBER_VERSION} "
            f"OR extension NOT IN ({marks}) THEN '/' || size_bytes || '/s' ELSE listed END"
        )
        until = "<=" if upto else "<"
        sql = (
            f"SELECT CAST(group_concat({key}, char(0)) AS BLOB), sum(size_bytes) "
            f"FROM videos INDEXED BY videos_listed WHERE path > ? AND path {until} ?"
        )
        values = (*extensions, after or low, upto or high)

        def op(conn: sqlite3.Connection) -> LibraryListing:
            keys, size = conn.execute(sql, values).fetchone()
            return LibraryListing(keys.split(b"\0") if keys else [], int(size or 0))

        return await self._db.read(op)

    async def set_devices(
        self, devices: Sequence[tuple[int, str]], *, fence: Fence | None = None
    ) -> None:
        """Record the device of videos that have none yet (rows written by schema 1)."""

        def op(conn: sqlite3.Connection, log: ChangeLog) -> None:
            conn.executemany("UPDATE videos SET dev = ? WHERE path = ? AND dev = 0", devices)

        await self.write_recorded(op)

    async def upsert_videos(
        self, rows: Iterable[VideoRow], *, fence: Fence | None = None
    ) -> tuple[int, int]:
        """Insert or update videos by path in one transaction; returns (added, updated).
        `fence` is not checked: only this server writes the file, and it never reclaims."""
        rows = list(rows)

        def op(conn: sqlite3.Connection, log: ChangeLog) -> tuple[int, int]:
            added = updated = 0
            for row in rows:
                library = log.library_of(row.path)
                if library is not None:
                    was_added = _upsert_recorded(conn, log, library, row)
                elif conn.execute(_UPDATE_VIDEO, video_values(row)).rowcount:
                    was_added = False
                else:
                    conn.execute(_INSERT_VIDEO, video_values(row))
                    was_added = True
                added += was_added
                updated += not was_added
            return added, updated

        return await self.write_recorded(op)

    async def remove_videos(
        self, gone: Sequence[tuple[str, int]], *, before_ns: int, fence: Fence | None = None
    ) -> int:
        """Delete these videos, given as (path, device of its folder now), unless rewritten
        since `before_ns` (a row an overlapping scan has just written stays) or recorded on
        another device (0: not known, no objection); returns how many went."""

        job_id = "" if fence is None else fence.job_id

        def op(conn: sqlite3.Connection, log: ChangeLog) -> int:
            plain = [(path, before_ns, dev) for path, dev in gone if log.library_of(path) is None]
            removed = conn.executemany(_REMOVE + ";", plain).rowcount if plain else 0
            for path, dev in gone:
                library = log.library_of(path)
                if library is None:
                    continue
                row = conn.execute(_REMOVE + " RETURNING id, size_bytes", (path, before_ns, dev))
                for video_id, size in row.fetchall():
                    removed += 1
                    log.record(
                        library,
                        scan_pb2.CHANGE_KIND_REMOVED,
                        video_id=video_id,
                        path=path,
                        job_id=job_id,
                        count=-1,
                        size=-size,
                    )
            return removed

        return await self.write_recorded(op)

    async def video_rows(self, paths: Sequence[str]) -> dict[str, VideoRow]:
        def op(conn: sqlite3.Connection) -> dict[str, VideoRow]:
            found: dict[str, VideoRow] = {}
            for path in paths:
                row = conn.execute(
                    f"SELECT {VIDEO_COLUMNS} FROM videos WHERE path = ?", (path,)
                ).fetchone()
                if row is not None:
                    found[path] = row_of(row)
            return found

        return await self._db.read(op)

    async def move_videos(
        self, moves: Sequence[MovedVideo], *, before_ns: int, fence: Fence | None = None
    ) -> list[bool]:
        job_id = "" if fence is None else fence.job_id

        def op(conn: sqlite3.Connection, log: ChangeLog) -> list[bool]:
            done = []
            for move in moves:
                cursor = conn.execute(
                    "UPDATE videos SET path = ?, dev = ? WHERE path = ? AND size_bytes = ? "
                    "AND mtime_ns = ? AND fingerprint = ? AND probe_ns < ? AND dev IN (0, ?) "
                    "AND NOT EXISTS (SELECT 1 FROM videos WHERE path = ?) RETURNING id",
                    move.guarded(before_ns),
                )
                moved = cursor.fetchall()
                for (video_id,) in moved:
                    record_move(log, move, video_id, job_id)
                done.append(bool(moved))
            return done

        return await self.write_recorded(op)

    async def set_health(
        self, updates: Sequence[HealthUpdate], *, fence: Fence | None = None
    ) -> int:
        job_id = "" if fence is None else fence.job_id

        def op(conn: sqlite3.Connection, log: ChangeLog) -> int:
            plain = [dataclasses.asdict(u) for u in updates if log.library_of(u.path) is None]
            took = conn.executemany(_SET_HEALTH, plain).rowcount if plain else 0
            for update in updates:
                library = log.library_of(update.path)
                if library is None:
                    continue
                values = dataclasses.asdict(update)
                for (video_id,) in conn.execute(_SET_HEALTH + " RETURNING id", values).fetchall():
                    took += 1
                    log.record(
                        library,
                        scan_pb2.CHANGE_KIND_UPDATED,
                        video_id=video_id,
                        path=update.path,
                        fields="health,health_report",
                        job_id=job_id,
                    )
            return took

        return await self.write_recorded(op)

    async def list_duplicates(
        self, *, prefix: str, after: str | None, limit: int, files_per_group: int
    ) -> list[scan_pb2.DuplicateGroup]:
        scope, scoped = "", []
        if prefix:
            folder = prefix.rstrip("/")
            scope, scoped = " AND (path = ? OR (path > ? AND path < ?))", [folder, *below(folder)]
        later = "" if after is None else " AND fingerprint > ?"
        groups = (
            f"SELECT fingerprint, count(*) FROM videos WHERE fingerprint != ''{scope}{later} "
            "GROUP BY fingerprint HAVING count(*) > 1 ORDER BY fingerprint LIMIT ?"
        )
        members = (
            f"SELECT id, path, size_bytes FROM videos WHERE fingerprint = ?{scope} "
            "ORDER BY path LIMIT ?"
        )
        params = [*scoped, *([] if after is None else [after]), limit]

        def op(conn: sqlite3.Connection) -> list[scan_pb2.DuplicateGroup]:
            found = conn.execute(groups, params).fetchall()
            return [
                group_of(fp, count, conn.execute(members, (fp, *scoped, files_per_group)))
                for fp, count in found
            ]

        return await self._db.read(op)

    async def list_videos(self, query: VideoQuery) -> list[scan_pb2.Video]:
        parts = sqlite_page_parts(query)

        def op(conn: sqlite3.Connection) -> list[scan_pb2.Video]:
            videos: list[scan_pb2.Video] = []
            for page, params in parts:
                more = query.limit - len(videos)  # the limit is the last parameter
                sql = f"SELECT id, {VIDEO_COLUMNS} FROM videos{page}"
                rows = conn.execute(sql, [*params[:-1], more])
                videos += [video_of(row) for row in rows]
                if len(videos) >= query.limit:
                    break
            return videos

        return await self._db.read(op)

    async def get_video(self, *, video_id: int | None, path: str | None) -> scan_pb2.Video | None:
        def op(conn: sqlite3.Connection) -> scan_pb2.Video | None:
            if video_id is not None:
                row = conn.execute(
                    f"SELECT id, {VIDEO_COLUMNS} FROM videos WHERE id = ?", (video_id,)
                ).fetchone()
            else:
                row = conn.execute(
                    f"SELECT id, {VIDEO_COLUMNS} FROM videos WHERE path = ?", (path,)
                ).fetchone()
            return None if row is None else video_of(row)

        return await self._db.read(op)


#: `?N` is the N-th of a row's values (`video_values`) in a statement.
_NUMBER = {name: f"?{index}" for index, name in enumerate(VIDEO_FIELDS, 1)}
_UPDATE_VIDEO = (
    "UPDATE videos SET "
    + ", ".join(
        [f"{name} = {_NUMBER[name]}" for name in PLAIN_FIELDS[1:]]
        + [keep_health(name, _NUMBER.__getitem__, str) for name in HEALTH_FIELDS]
    )
    + f" WHERE path = {_NUMBER['path']}"
)
_REMOVE = "DELETE FROM videos WHERE path = ? AND probe_ns < ? AND dev IN (0, ?)"
_SELECT_VIDEO = f"SELECT id, {VIDEO_COLUMNS} FROM videos WHERE path = ?"
_SIZE = VIDEO_FIELDS.index("size_bytes") + 1  # in a row of _SELECT_VIDEO
_INSERT_VIDEO = (
    f"INSERT INTO videos ({VIDEO_COLUMNS}) VALUES ({', '.join('?' * len(VIDEO_FIELDS))})"
)
_SET_HEALTH = (
    "UPDATE videos SET "
    + ", ".join(f"{name} = :{name}" for name in HEALTH_FIELDS)
    + " WHERE path = :path AND size_bytes = :size_bytes AND mtime_ns = :mtime_ns"
)


_INDEX_CHUNK = 65536  # videos per query of `library_index`
_INDEX_CACHE_KEYS = 250_000  # videos in the kept indexes, at most (36 MiB at 150 bytes)


def _upsert_recorded(conn: sqlite3.Connection, log: ChangeLog, library: str, row: VideoRow) -> bool:
    """Write one video of a library, recording ADDED, or UPDATED with the fields that changed
    (nothing when none did); True when it was added."""
    old = conn.execute(_SELECT_VIDEO, (row.path,)).fetchone()
    if old is None:
        cursor = conn.execute(_INSERT_VIDEO, video_values(row))
        log.record(
            library,
            scan_pb2.CHANGE_KIND_ADDED,
            video_id=cursor.lastrowid or 0,
            path=row.path,
            job_id=row.job_id,
            count=1,
            size=row.size_bytes,
        )
        return True
    conn.execute(_UPDATE_VIDEO, video_values(row))
    new = conn.execute(_SELECT_VIDEO, (row.path,)).fetchone()
    fields = changed_fields(video_of(old), video_of(new))
    if fields:
        log.record(
            library,
            scan_pb2.CHANGE_KIND_UPDATED,
            video_id=old[0],
            path=row.path,
            fields=",".join(fields),
            job_id=row.job_id,
            size=new[_SIZE] - old[_SIZE],
        )
    return False
