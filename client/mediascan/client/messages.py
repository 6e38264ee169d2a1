"""Request messages built from Python values: durations and ListVideos filters."""

from __future__ import annotations

import datetime
from typing import Any

from google.protobuf import duration_pb2

from mediascan.v1 import scan_pb2

#: A duration: seconds, or a timedelta.
Seconds = float | datetime.timedelta


def duration(value: Seconds) -> duration_pb2.Duration:
    """A Duration of `value` seconds (or of the timedelta)."""
    result = duration_pb2.Duration()
    if isinstance(value, datetime.timedelta):
        result.FromTimedelta(value)
    else:
        result.FromNanoseconds(round(value * 1e9))
    return result


def videos_request(
    path_prefix: str,
    page_size: int,
    min_duration: Seconds | None,
    max_duration: Seconds | None,
    fields: dict[str, Any],
) -> scan_pb2.ListVideosRequest:
    """A ListVideosRequest: `fields` by name (None leaves one unset), durations converted."""
    return scan_pb2.ListVideosRequest(
        path_prefix=path_prefix,
        page_size=page_size,
        min_duration=None if min_duration is None else duration(min_duration),
        max_duration=None if max_duration is None else duration(max_duration),
        **{name: value for name, value in fields.items() if value is not None},
    )
