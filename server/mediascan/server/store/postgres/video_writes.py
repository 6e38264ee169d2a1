"""The statements that write videos on PostgreSQL, run inside a recorded write
(`recorded.py`): each records the changes of the libraries whose roots hold its paths in the
transaction's `ChangeLog`, as SQLite's writes do (ADDED, UPDATED with the fields that changed,
MOVED, REMOVED). The paths no library holds take the plain statements, which read nothing
back (a first scan of a folder outside every library is as fast as before libraries).

A library's row is read before it is rewritten (`FOR UPDATE`), so that the change names the
fields that differ; a path that is new is inserted with `ON CONFLICT DO NOTHING`, and one that
another transaction inserted meanwhile is locked and rewritten instead."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from mediascan.v1 import scan_pb2

from ..changes import Recorder, changed_fields, record_move
from ..protocol import HEALTH_FIELDS, HealthUpdate, MovedVideo, VideoRow
from ..videos import PLAIN_FIELDS, VIDEO_FIELDS, keep_health, video_of, video_values
from .schema import Connection

#: The columns a VideoRow is written to: its `dev` is the key of the file system's mount
#: (`fskeys.py`), stored in `fs_key`; the `dev` column (the st_dev of schema version 2) gets
#: -1, which no st_dev equals, so that a node of that version never removes such a row.
COLUMNS = tuple("fs_key" if name == "dev" else name for name in VIDEO_FIELDS)
#: What a read selects, as VIDEO_COLUMNS names them (`dev` is the key of the mount).
SELECTED = ", ".join("fs_key AS dev" if name == "dev" else name for name in VIDEO_FIELDS)


def _column(name: str) -> str:
    """The column a VideoRow field is stored in."""
    return "fs_key" if name == "dev" else name


_INSERT = (
    f"INSERT INTO videos ({', '.join(COLUMNS)}, dev) "
    f"VALUES ({', '.join(['%s'] * len(COLUMNS))}, -1) ON CONFLICT (path) "
)
_UPSERT = (
    _INSERT
    + "DO UPDATE SET "
    + ", ".join(
        [f"{_column(name)} = EXCLUDED.{_column(name)}" for name in PLAIN_FIELDS[1:]]
        + [
            keep_health(name, lambda c: f"EXCLUDED.{c}", lambda c: f"videos.{c}")
            for name in HEALTH_FIELDS
        ]
    )
    + ", dev = -1"
)
#: xmax is 0 in a row version that an INSERT made, not an UPDATE.
_UPSERT_ADDED = _UPSERT + " RETURNING xmax = 0"
_REWRITE = _UPSERT + f" RETURNING id, {SELECTED}"
_INSERT_NEW = _INSERT + "DO NOTHING RETURNING path, id"
_LOCK = f"SELECT id, {SELECTED} FROM videos WHERE path = ANY(%s) FOR UPDATE"
_REMOVE = (
    "DELETE FROM videos USING unnest(%s::text[], %s::bigint[]) AS g(path, key) "
    "WHERE videos.path = g.path AND videos.probe_ns < %s AND videos.fs_key IN (0, g.key)"
)
_MOVE = (
    "UPDATE videos SET path = %s, fs_key = %s, dev = -1 WHERE path = %s "
    "AND size_bytes = %s AND mtime_ns = %s AND fingerprint = %s AND probe_ns < %s "
    "AND fs_key IN (0, %s) AND NOT EXISTS (SELECT 1 FROM videos WHERE path = %s) RETURNING id"
)
_SET_HEALTH = (
    "UPDATE videos SET "
    + ", ".join(f"{name} = %({name})s" for name in HEALTH_FIELDS)
    + " WHERE path = %(path)s AND size_bytes = %(size_bytes)s AND mtime_ns = %(mtime_ns)s"
)
_SIZE = VIDEO_FIELDS.index("size_bytes") + 1  # in a row of _LOCK or _REWRITE
#: The columns (in a row of _LOCK or _REWRITE) the fields a change may name are read from:
#: not the id, path, probe time, job, prober version or file system key. Rows equal in these
#: are videos of no changed field (`video_of` reads the fields from the columns).
_COMPARED = tuple(
    at
    for at, name in enumerate(VIDEO_FIELDS, 1)
    if name not in {"path", "probe_ns", "job_id", "prober_version", "dev"}
)
#: Stored rows, (id, *VIDEO_COLUMNS), by path.
Rows = dict[str, tuple[Any, ...]]


async def upsert(conn: Connection, values: Sequence[tuple[Any, ...]]) -> tuple[int, int]:
    """Insert or update the rows `values` (VideoRow tuples) by path: (added, updated)."""
    added = 0
    async with conn.cursor() as cursor:
        await cursor.executemany(_UPSERT_ADDED.encode(), values, returning=True)
        while True:
            row = await cursor.fetchone()
            added += bool(row and row[0])
            if not cursor.nextset():
                break
    return added, len(values) - added


async def upsert_recorded(
    conn: Connection, log: Recorder, rows: Sequence[VideoRow]
) -> tuple[int, int]:
    """`upsert`, recording ADDED, or UPDATED with the fields that changed, for the rows of a
    library: (added, updated)."""
    plain: list[tuple[Any, ...]] = []
    held: list[tuple[str, VideoRow]] = []
    for row in rows:
        library = log.library_of(row.path)
        if library is None:
            plain.append(video_values(row))
        else:
            held.append((library, row))
    added, updated = await upsert(conn, plain) if plain else (0, 0)
    for batch in _passes(held):
        new = await _upsert_held(conn, log, batch)
        added += new
        updated += len(batch) - new
    return added, updated


def _passes(held: list[tuple[str, VideoRow]]) -> list[list[tuple[str, VideoRow]]]:
    """`held` in passes of distinct paths, in order (a path written twice is written again
    by the next pass, as SQLite writes it twice)."""
    passes: list[dict[str, tuple[str, VideoRow]]] = []
    for item in held:
        for batch in passes:
            if item[1].path not in batch:
                batch[item[1].path] = item
                break
        else:
            passes.append({item[1].path: item})
    return [list(batch.values()) for batch in passes]


async def _upsert_held(conn: Connection, log: Recorder, held: list[tuple[str, VideoRow]]) -> int:
    """Write rows of distinct paths that libraries hold, recording their changes; how many
    were added."""
    old, ids = await _settle(conn, [row for _, row in held])
    rewritten: Rows = {}
    again = [video_values(row) for _, row in held if row.path in old]
    if again:
        async with conn.cursor() as cursor:
            await cursor.executemany(_REWRITE.encode(), again, returning=True)
            while True:
                for found in await cursor.fetchall():
                    rewritten[found[1]] = found
                if not cursor.nextset():
                    break
    for library, row in held:
        if row.path in ids:
            log.record(
                library,
                scan_pb2.CHANGE_KIND_ADDED,
                video_id=ids[row.path],
                path=row.path,
                job_id=row.job_id,
                count=1,
                size=row.size_bytes,
            )
            continue
        before, after = old[row.path], rewritten[row.path]
        if all(before[at] == after[at] for at in _COMPARED):
            continue  # a rescan that found the file as it was: nothing to record
        fields = changed_fields(video_of(before), video_of(after))
        if fields:
            log.record(
                library,
                scan_pb2.CHANGE_KIND_UPDATED,
                video_id=int(before[0]),
                path=row.path,
                fields=",".join(fields),
                job_id=row.job_id,
                size=int(after[_SIZE]) - int(before[_SIZE]),
            )
    return len(ids)


async def _settle(conn: Connection, rows: list[VideoRow]) -> tuple[Rows, dict[str, int]]:
    """The stored rows of these paths, locked, and the ids of those inserted now (a path
    another transaction inserts meanwhile is found, and locked, on the next round)."""
    old = await _locked(conn, [row.path for row in rows])
    ids: dict[str, int] = {}
    pending = [row for row in rows if row.path not in old]
    while pending:
        async with conn.cursor() as cursor:
            values = [video_values(row) for row in pending]
            await cursor.executemany(_INSERT_NEW.encode(), values, returning=True)
            while True:
                ids.update((str(path), int(i)) for path, i in await cursor.fetchall())
                if not cursor.nextset():
                    break
        taken = [row.path for row in pending if row.path not in ids]
        found = await _locked(conn, taken) if taken else {}
        old.update(found)
        pending = [row for row in pending if row.path not in ids and row.path not in found]
    return old, ids


async def _locked(conn: Connection, paths: list[str]) -> Rows:
    cursor = await conn.execute(_LOCK.encode(), (paths,))
    return {str(row[1]): row for row in await cursor.fetchall()}


async def remove_recorded(
    conn: Connection,
    log: Recorder,
    gone: Sequence[tuple[str, int]],
    *,
    before_ns: int,
    job_id: str,
) -> int:
    """Delete these videos, (path, key of its folder's file system now), unless rewritten
    since `before_ns` or recorded on another file system; REMOVED for those of a library."""
    plain = [(path, key) for path, key in gone if log.library_of(path) is None]
    held = [(path, key) for path, key in gone if log.library_of(path) is not None]
    removed = 0
    if plain:
        params = ([path for path, _ in plain], [key for _, key in plain], before_ns)
        removed += (await conn.execute(_REMOVE, params)).rowcount
    if held:
        params = ([path for path, _ in held], [key for _, key in held], before_ns)
        cursor = await conn.execute(
            _REMOVE + " RETURNING videos.path, videos.id, videos.size_bytes", params
        )
        found = {str(path): (int(i), int(size)) for path, i, size in await cursor.fetchall()}
        for path, _ in held:
            video = found.pop(path, None)
            library = log.library_of(path)
            if video is None or library is None:
                continue
            removed += 1
            log.record(
                library,
                scan_pb2.CHANGE_KIND_REMOVED,
                video_id=video[0],
                path=path,
                job_id=job_id,
                count=-1,
                size=-video[1],
            )
    return removed


async def move_recorded(
    conn: Connection,
    log: Recorder,
    moves: Sequence[MovedVideo],
    *,
    before_ns: int,
    job_id: str,
) -> list[bool]:
    """Move each video whose row is still the one met (`MovedVideo.guarded`); MOVED within a
    library, REMOVED and ADDED between two (`record_move`)."""
    done = []
    for move in moves:
        cursor = await conn.execute(_MOVE, move.guarded(before_ns))
        moved = await cursor.fetchall()
        for (video_id,) in moved:
            record_move(log, move, int(video_id), job_id)
        done.append(bool(moved))
    return done


async def health_recorded(
    conn: Connection, log: Recorder, updates: Sequence[HealthUpdate], *, job_id: str
) -> int:
    """Store each verification of a video still the file verified; UPDATED (health) for
    those of a library. How many were stored."""
    changed = 0
    for update in updates:
        library = log.library_of(update.path)
        values = dataclasses.asdict(update)
        if library is None:
            changed += (await conn.execute(_SET_HEALTH.encode(), values)).rowcount
            continue
        cursor = await conn.execute((_SET_HEALTH + " RETURNING id").encode(), values)
        for (video_id,) in await cursor.fetchall():
            changed += 1
            log.record(
                library,
                scan_pb2.CHANGE_KIND_UPDATED,
                video_id=int(video_id),
                path=update.path,
                fields="health,health_report",
                job_id=job_id,
            )
    return changed
