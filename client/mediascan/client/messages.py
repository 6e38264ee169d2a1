"""Request messages built from Python values: durations, ListVideos filters, and a library's
settings with the field mask of those given."""

from __future__ import annotations

import datetime
from typing import Any, TypedDict

from google.protobuf import duration_pb2

from mediascan.v1 import scan_pb2

#: A duration: seconds, or a timedelta.
Seconds = float | datetime.timedelta


class LibrarySettings(TypedDict, total=False):
    """The settable fields of a library (`Library` in the contract), each optional: the server
    fills in the defaults at creation, and an update changes only those given."""

    #: Descend into subfolders (default true).
    recursive: bool
    #: Follow symbolic links to folders and files (default false).
    follow_symlinks: bool
    #: How changes are noticed: `scan_pb2.WATCH_MODE_AUTO` (the default), `_EVENTS`, `_POLL`
    #: or `_OFF`.
    watch_mode: scan_pb2.WatchMode
    #: How often a polled library is compared with its folder (default 5 minutes).
    poll_interval: Seconds
    #: How long a file's size and times must stay unchanged before it is probed (default 10 s).
    quiet_window: Seconds
    #: A rescan of the whole library at this interval; 0 for none (the default).
    rescan_interval: Seconds
    #: Every N-th scheduled rescan is full; 0 for never.
    full_rescan_every: int
    #: The largest share of the library's videos one scan may remove (default 0.5).
    removal_limit: float
    #: The file name extensions that are videos in the library: "mp4,mkv" replaces the server's
    #: set, "+vid,+dv" adds to it; "" (the default) is the server's set.
    extensions: str


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


def library(
    settings: LibrarySettings, *, name: str = "", root: str = ""
) -> tuple[scan_pb2.Library, list[str]]:
    """A Library named `name` of the folder `root` with `settings` (durations converted), and
    the names of the settings given, in the contract's order (an update's field mask)."""
    unknown = sorted(set(settings) - set(LibrarySettings.__annotations__))
    if unknown:
        raise TypeError(f"unknown library settings: {', '.join(unknown)}")
    message = scan_pb2.Library(name=name, root=root)
    given: list[str] = []
    for name in LibrarySettings.__annotations__:
        if name not in settings:
            continue
        value: Any = settings[name]  # type: ignore[literal-required]
        if name in _DURATIONS:
            getattr(message, name).CopyFrom(duration(value))
        else:
            setattr(message, name, value)
        given.append(name)
    return message, given


_DURATIONS = ("poll_interval", "quiet_window", "rescan_interval")
