"""What both stores share about the library's rows: the columns of a video, a stored row as
the contract's `Video`, and the bounds of the paths below a folder."""

from __future__ import annotations

import dataclasses
import json
import operator
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from mediascan.v1 import scan_pb2

from .protocol import HEALTH_FIELDS, VIDEO_ORDERS, VideoQuery, VideoRow

#: The columns of `videos` besides `id`: the path first, then the rest of VideoRow's fields.
VIDEO_FIELDS = ("path", *(f.name for f in dataclasses.fields(VideoRow) if f.name != "path"))
VIDEO_COLUMNS = ", ".join(VIDEO_FIELDS)
#: A VideoRow's values in VIDEO_FIELDS order (a tuple; far cheaper than `dataclasses.astuple`).
video_values = operator.attrgetter(*VIDEO_FIELDS)


def below(folder: str) -> tuple[str, str]:
    """Bounds of the paths strictly below `folder`: path > 'a/' AND path < 'a0' ('0' follows
    '/' in byte order, which is how both databases compare paths)."""
    base = folder.rstrip("/")
    return base + "/", base + "0"


def video_of(row: Sequence[Any]) -> scan_pb2.Video:
    """A stored row, (id, *VIDEO_COLUMNS), as a `Video`: its `details` (a serialized `Video`
    of the fields that are not columns), then the columns."""
    data = dict(zip(VIDEO_FIELDS, row[1:], strict=True))
    video = scan_pb2.Video.FromString(bytes(data["details"] or b""))
    video.MergeFrom(
        scan_pb2.Video(
            video_id=f"v_{row[0]}",
            path=data["path"],
            size_bytes=data["size_bytes"],
            container=data["container"],
            bit_rate=data["bit_rate"],
            video_codec=data["video_codec"],
            width=data["width"],
            height=data["height"],
            frame_rate=data["frame_rate"],
            audio_codec=data["audio_codec"],
            audio_channels=data["audio_channels"],
            audio_sample_rate=data["audio_sample_rate"],
            audio_streams=data["audio_streams"],
            job_id=data["job_id"],
            duration_source=data["duration_source"],
            truncated=bool(data["truncated"]),
            variable_frame_rate=bool(data["variable_frame_rate"]),
            rotation=data["rotation"],
            hdr=data["hdr"],
            prober_version=data["prober_version"],
        )
    )
    video.modify_time.FromNanoseconds(data["mtime_ns"])
    video.duration.FromNanoseconds(data["duration_ns"])
    video.probe_time.FromNanoseconds(data["probe_ns"])
    video.fingerprint = data["fingerprint"]
    if data["health"]:
        video.health = data["health"]  # type: ignore[assignment]
        report = video.health_report
        report.error_count = data["health_errors"]
        report.messages.extend(_messages(data["health_messages"]))
        if data["health_first_error_ns"] >= 0:
            report.first_error_at.FromNanoseconds(data["health_first_error_ns"])
        report.verify_time.FromNanoseconds(data["verify_ns"])
    return video


def row_of(row: Sequence[Any]) -> VideoRow:
    """A stored row, (*VIDEO_COLUMNS), as a VideoRow."""
    return VideoRow(**dict(zip(VIDEO_FIELDS, row, strict=True)))


def _messages(text: str) -> list[str]:
    try:
        messages = json.loads(text) if text else []
    except ValueError:
        return []
    return [str(m) for m in messages] if isinstance(messages, list) else []


def group_of(
    fingerprint: str, count: int, rows: Iterable[Sequence[Any]]
) -> scan_pb2.DuplicateGroup:
    """A duplicate group from its fingerprint, its size and its rows (id, path, size_bytes)."""
    group = scan_pb2.DuplicateGroup(fingerprint=fingerprint, file_count=count)
    for video_id, path, size in rows:
        group.size_bytes = size
        group.files.add(video_id=f"v_{video_id}", path=path, size_bytes=size)
    return group


#: The columns of a row but its verification, and those of the verification.
PLAIN_FIELDS = tuple(name for name in VIDEO_FIELDS if name not in HEALTH_FIELDS)


def keep_health(name: str, new: Callable[[str], str], old: Callable[[str], str]) -> str:
    """The SQL that sets verification column `name` on a rewrite of a row: the new value,
    unless the new row has no verification and the file is the one verified (same size, time
    and fingerprint). `new(column)` and `old(column)` name the incoming and the stored value
    (SQLite: `?N` and the column; PostgreSQL: `EXCLUDED.column` and `videos.column`)."""
    same = " AND ".join(f"{old(c)} = {new(c)}" for c in ("size_bytes", "mtime_ns", "fingerprint"))
    return (
        f"{name} = CASE WHEN {new('health')} = 0 AND {same} THEN {old(name)} ELSE {new(name)} END"
    )


def video_page_sql(query: VideoQuery, mark: str, start: str = "row") -> tuple[str, list[Any]]:
    """What follows `SELECT ... FROM videos` in a ListVideos query, and its parameters (`mark`
    is the driver's placeholder: `?` or `%s`; the limit is the last): the filters, the start
    after the previous page (keyset, never OFFSET, so that a deep page costs what the first
    does on the index of (key, id)), the order and the limit.

    A start after (key, id) is `start`: "row", `(key, id) > (last key, last id)`, one range of
    the index (PostgreSQL); or the two halves of it, "ties" (`key = last key AND id > last
    id`) and "beyond" (`key > last key`), which SQLite needs: it reads a row value whose second
    column is the rowid as a range of the key alone, which would read every tie of the last
    key (`sqlite_page_parts`)."""
    where, params = _filters(query, mark)
    column = VIDEO_ORDERS[query.order]
    way, than = (" DESC", "<") if query.descending else ("", ">")
    if isinstance(query.after, str):
        where.append(f"path {than} {mark}")
        params.append(query.after)
    elif query.after is not None:
        key, last_id = query.after
        where.append(
            {
                "row": f"({column}, id) {than} ({mark}, {mark})",
                "ties": f"{column} = {mark} AND id {than} {mark}",
                "beyond": f"{column} {than} {mark}",
            }[start]
        )
        params.extend([key] if start == "beyond" else [key, last_id])
    sql = (" WHERE " + " AND ".join(where)) if where else ""
    order = [f"path{way}"] if column == "path" else [f"{column}{way}", f"id{way}"]
    sql += f" ORDER BY {', '.join(order)} LIMIT {mark}"
    params.append(query.limit)
    return sql, params


def _filters(query: VideoQuery, mark: str) -> tuple[list[str], list[Any]]:
    """The WHERE terms of the filters of `query`, and their parameters."""
    where: list[str] = []
    params: list[Any] = []
    if query.prefix:
        folder = query.prefix.rstrip("/")
        where.append(f"(path = {mark} OR (path > {mark} AND path < {mark}))")
        params.extend([folder, *below(folder)])
    for clause, value in (
        ("video_codec = {}", query.video_codec or None),
        ("container = {}", query.container or None),
        ("audio_codec = {}", query.audio_codec or None),
        # The redundant terms let SQLite use the partial indexes (WHERE health != 0, WHERE
        # fingerprint != ''), which it cannot infer from `= ?`.
        ("health = {} AND health != 0", query.health or None),
        ("hdr = {}", query.hdr or None),
        ("fingerprint = {} AND fingerprint != ''", query.fingerprint or None),
        ("duration_ns >= {}", query.min_duration_ns),
        ("duration_ns <= {}", query.max_duration_ns),
        ("width >= {}", query.min_width),
        ("width <= {}", query.max_width),
        ("height >= {}", query.min_height),
        ("height <= {}", query.max_height),
        ("rotation = {}", query.rotation),
        ("truncated = {}", query.truncated),
        ("variable_frame_rate = {}", query.variable_frame_rate),
    ):
        if value is not None:
            where.append(clause.format(mark))
            params.append(value)
    return where, params


def sqlite_page_parts(query: VideoQuery) -> list[tuple[str, list[Any]]]:
    """The ListVideos query of `query` on SQLite: one, or after (key, id) two, read in turn
    until the page is full (the ties of the last key after its id, then the greater keys):
    each a range of the index of (key, id)."""
    if not isinstance(query.after, tuple):
        return [video_page_sql(query, "?")]
    return [video_page_sql(query, "?", start) for start in ("ties", "beyond")]
