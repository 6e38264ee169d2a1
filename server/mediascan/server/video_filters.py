"""ListVideos requests as store queries: each filter and the order checked (INVALID_ARGUMENT
naming the field and saying what to send instead), the key that binds a page token to them,
and the sort key of a listed video."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from google.protobuf import duration_pb2

from mediascan.v1 import scan_pb2

from .errors import InvalidArgument
from .roots import shown
from .store import VIDEO_ORDERS, VideoQuery

_MAX_DURATION_SECONDS = 315_576_000_000  # the protobuf Duration range
_MAX_INT64 = 2**63 - 1
#: What a fingerprint looks like (`fingerprint.py`): SIZE-HASH.
_FINGERPRINT = re.compile(r"[0-9]{1,20}-[0-9a-f]{32}")
#: The longest codec or container name a filter takes (FFmpeg's are far shorter).
MAX_NAME = 256
#: The rotations a video may have (`Video.rotation`).
ROTATIONS = (0, 90, -90, 180)


def duration_seconds(field: str, duration: duration_pb2.Duration) -> float:
    seconds, nanos = duration.seconds, duration.nanos
    if (
        abs(seconds) > _MAX_DURATION_SECONDS
        or abs(nanos) >= 1_000_000_000
        or (seconds > 0 > nanos)
        or (seconds < 0 < nanos)
    ):
        raise InvalidArgument(field, "not a valid google.protobuf.Duration")
    return seconds + nanos / 1e9


def video_query(request: scan_pb2.ListVideosRequest, prefix: str) -> VideoQuery:
    """The filters and order of `request` (its `path_prefix` already checked and normalized:
    `prefix`), without a start or a limit."""
    for field in ("video_codec", "container", "audio_codec"):
        _check_name(field, getattr(request, field))
    _check_enum("health", request.health, scan_pb2.Health)
    _check_enum("hdr", request.hdr, scan_pb2.HdrKind)
    _check_fingerprint(request.fingerprint)
    order, descending = parse_order(request.order_by)
    bounds = _bounds(request)
    return VideoQuery(
        prefix=prefix,
        video_codec=request.video_codec,
        container=request.container,
        audio_codec=request.audio_codec,
        min_duration_ns=bounds["min_duration_ns"],
        max_duration_ns=bounds["max_duration_ns"],
        min_width=bounds["min_width"],
        max_width=bounds["max_width"],
        min_height=bounds["min_height"],
        max_height=bounds["max_height"],
        rotation=_rotation(request),
        hdr=request.hdr,
        health=request.health,
        fingerprint=request.fingerprint,
        truncated=request.truncated if request.HasField("truncated") else None,
        variable_frame_rate=(
            request.variable_frame_rate if request.HasField("variable_frame_rate") else None
        ),
        order=order,
        descending=descending,
    )


def parse_order(order_by: str) -> tuple[str, bool]:
    """`order_by` ("duration desc") as (a key of VIDEO_ORDERS, descending)."""
    words = order_by.split()
    if not words:
        return "path", False
    fix = (
        f"use one of {', '.join(VIDEO_ORDERS)}, optionally followed by desc (or asc), "
        'e.g. "duration desc"; empty for path order'
    )
    if words[0] not in VIDEO_ORDERS:
        raise InvalidArgument("order_by", f"cannot order by {shown(words[0])[:80]!r}: {fix}")
    if len(words) > 2 or (len(words) == 2 and words[1].lower() not in ("asc", "desc")):
        raise InvalidArgument("order_by", f"{shown(order_by)[:120]!r} is not an order: {fix}")
    return words[0], len(words) == 2 and words[1].lower() == "desc"


def order_text(query: VideoQuery) -> str:
    """The order of `query` as `order_by` spells it, e.g. "duration desc"."""
    return query.order + (" desc" if query.descending else "")


def page_end(video: scan_pb2.Video, order: str) -> str | tuple[int, int]:
    """Where the page after `video` starts in `order`: its path, or its sort key and id."""
    if order == "path":
        return video.path
    key = {
        "duration": lambda: video.duration.ToNanoseconds(),
        "size_bytes": lambda: video.size_bytes,
        "modify_time": lambda: video.modify_time.ToNanoseconds(),
        "probe_time": lambda: video.probe_time.ToNanoseconds(),
    }[order]()
    return int(key), int(video.video_id.removeprefix("v_"))


def filter_key(query: VideoQuery) -> str:
    """A short digest of the filters of `query`, which its page tokens carry: a token used with
    other filters is refused. The tokens of listings without the newer filters stay as they
    were."""
    filters: list[object] = [
        query.prefix,
        query.video_codec,
        query.min_duration_ns,
        query.max_duration_ns,
    ]
    if query.health or query.fingerprint:
        filters += [query.health, query.fingerprint]
    newer = {
        name: value
        for name in _NEWER_FILTERS
        # Unset: None, "" or (hdr) 0; a rotation of 0 and a False are filters.
        if (value := getattr(query, name)) is not None
        and value != ""
        and (name, value) != ("hdr", 0)
    }
    if newer:
        filters.append(newer)
    raw = json.dumps(filters, sort_keys=True).encode()
    return hashlib.sha256(raw).hexdigest()[:12]


#: The filters whose tokens carry them only when set (added after the first ones).
_NEWER_FILTERS = (
    "container",
    "audio_codec",
    "min_width",
    "max_width",
    "min_height",
    "max_height",
    "rotation",
    "hdr",
    "truncated",
    "variable_frame_rate",
)


def _bounds(request: scan_pb2.ListVideosRequest) -> dict[str, int | None]:
    """The duration, width and height bounds, each lower one at most its upper one."""
    bounds = {
        "min_duration_ns": _optional_duration(request, "min_duration"),
        "max_duration_ns": _optional_duration(request, "max_duration"),
    }
    for name in ("min_width", "max_width", "min_height", "max_height"):
        value = getattr(request, name)
        if value < 0:
            raise InvalidArgument(
                name, f"{value} is negative: use a size in pixels, or 0 for no bound"
            )
        bounds[name] = value or None
    for low, high, field in (
        ("min_duration_ns", "max_duration_ns", "min_duration"),
        ("min_width", "max_width", "min_width"),
        ("min_height", "max_height", "min_height"),
    ):
        low_value, high_value = bounds[low], bounds[high]
        if low_value is not None and high_value is not None and low_value > high_value:
            upper = "max_" + field.removeprefix("min_")
            raise InvalidArgument(
                field, f"is more than {upper}: no video can match; lower it or raise {upper}"
            )
    return bounds


def _optional_duration(request: scan_pb2.ListVideosRequest, field: str) -> int | None:
    if not request.HasField(field):
        return None
    seconds = duration_seconds(field, getattr(request, field))
    if seconds < 0:
        raise InvalidArgument(field, "must not be negative")
    # Longer than any video (and than SQLite's 64-bit integers in nanoseconds): no bound.
    return min(round(seconds * 1e9), _MAX_INT64)


def _rotation(request: scan_pb2.ListVideosRequest) -> int | None:
    if not request.HasField("rotation"):
        return None
    rotation = request.rotation
    if rotation not in ROTATIONS:
        same = {270: " (270 is -90)", -270: " (-270 is 90)", -180: " (-180 is 180)"}
        raise InvalidArgument(
            "rotation",
            f"{rotation} is not a rotation a video has{same.get(rotation, '')}: use 0, 90, "
            "-90 or 180, or leave it unset for any",
        )
    return rotation


def _check_name(field: str, value: str) -> None:
    if "\x00" in value:
        raise InvalidArgument(field, "contains a NUL character, which no FFmpeg name holds")
    if len(value) > MAX_NAME:
        raise InvalidArgument(
            field, f"longer than {MAX_NAME} characters: use an FFmpeg name such as h264"
        )


def _check_enum(field: str, value: int, enum: Any) -> None:
    if value not in enum.values():
        names = [name for name, _ in enum.items() if not name.endswith("UNSPECIFIED")]
        raise InvalidArgument(
            field,
            f"unknown value {value}: use one of {', '.join(names)}, or leave it unset for any",
        )


def _check_fingerprint(fingerprint: str) -> None:
    if fingerprint and not _FINGERPRINT.fullmatch(fingerprint):
        raise InvalidArgument(
            "fingerprint",
            f"{shown(fingerprint)[:80]!r} is not a fingerprint: use a video's `fingerprint`, "
            "SIZE-HASH with 32 hexadecimal digits (e.g. 7381-0f3c...), or leave it empty",
        )
