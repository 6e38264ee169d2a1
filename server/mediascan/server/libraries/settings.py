"""A library's names and settings: the id and name forms, the defaults a creation fills in,
the bounds of each setting, and an update's field mask."""

from __future__ import annotations

import re

from google.protobuf import duration_pb2, field_mask_pb2

from mediascan.v1 import scan_pb2

from ..errors import InvalidArgument
from ..video_filters import duration_seconds
from ..videonames import parse_extensions

_ID = re.compile(r"[a-z][a-z0-9-]{0,62}")
PREFIX = "libraries/"

#: (default, minimum, maximum) seconds of each duration setting; a default of 0 means unset.
DURATIONS = {
    "poll_interval": (300.0, 1.0, 7 * 86400.0),
    "quiet_window": (10.0, 0.0, 3600.0),
    "rescan_interval": (0.0, 1.0, 366 * 86400.0),
}
DEFAULT_REMOVAL_LIMIT = 0.5
#: The fields an update may set (an empty mask sets all of them).
SETTABLE = (
    "recursive",
    "follow_symlinks",
    "watch_mode",
    "poll_interval",
    "quiet_window",
    "rescan_interval",
    "full_rescan_every",
    "removal_limit",
    "extensions",
)
#: The longest `extensions` text.
MAX_EXTENSIONS = 1024
_READ_ONLY = ("name", "root", "status", "uid", "create_time")


def check_id(library_id: str, field: str = "library_id") -> str:
    if not _ID.fullmatch(library_id):
        raise InvalidArgument(
            field,
            f"{library_id[:80]!r} is not a library id: use 1 to 63 lower-case letters, digits "
            'and hyphens, starting with a letter, e.g. "films"',
        )
    return library_id


def id_of_name(name: str, field: str = "name") -> str:
    """The id in "libraries/ID" (or a bare ID)."""
    if not name:
        raise InvalidArgument(field, 'required: the library\'s name, e.g. "libraries/films"')
    return check_id(name.removeprefix(PREFIX), field)


def seconds(library: scan_pb2.Library, name: str) -> float:
    """A duration setting of a settled library, in seconds (0: unset)."""
    value: duration_pb2.Duration = getattr(library, name)
    return value.seconds + value.nanos / 1e9


def settle(library: scan_pb2.Library, field: str = "library") -> None:
    """Check the settings of `library` and fill in the defaults, in place."""
    if not library.HasField("recursive"):
        library.recursive = True
    if library.watch_mode not in scan_pb2.WatchMode.values():
        raise InvalidArgument(
            f"{field}.watch_mode",
            f"unknown value {library.watch_mode}: use WATCH_MODE_AUTO (the default), "
            "WATCH_MODE_EVENTS, WATCH_MODE_POLL or WATCH_MODE_OFF",
        )
    if library.watch_mode == scan_pb2.WATCH_MODE_UNSPECIFIED:
        library.watch_mode = scan_pb2.WATCH_MODE_AUTO
    for name, (default, low, high) in DURATIONS.items():
        value = duration_seconds(f"{field}.{name}", getattr(library, name))
        if value == 0 and default:
            getattr(library, name).FromNanoseconds(int(default * 1e9))
        elif value != 0 and not low <= value <= high:
            raise InvalidArgument(
                f"{field}.{name}",
                f"{value:g}s is out of range: use {low:g}s to {high:g}s"
                + (", or leave it unset for none" if not default else ""),
            )
    if not 0 <= library.full_rescan_every <= 1000:
        raise InvalidArgument(
            f"{field}.full_rescan_every", "out of range: use 0 (never) to 1000 scheduled rescans"
        )
    if not 0 <= library.removal_limit <= 1:
        raise InvalidArgument(
            f"{field}.removal_limit",
            f"{library.removal_limit:g} is out of range: use a share from 0 to 1 (0: the "
            f"default, {DEFAULT_REMOVAL_LIMIT:g}; 1: any removal)",
        )
    if library.removal_limit == 0:
        library.removal_limit = DEFAULT_REMOVAL_LIMIT
    _check_extensions(library.extensions, f"{field}.extensions")


def _check_extensions(text: str, field: str) -> None:
    if len(text) > MAX_EXTENSIONS or "\0" in text:
        raise InvalidArgument(
            field, f"longer than {MAX_EXTENSIONS} characters or holding NUL: name extensions"
        )
    try:
        parse_extensions(text)
    except ValueError as exc:
        raise InvalidArgument(field, f'{exc}, e.g. "mp4,mkv" or "+vid,+dv"') from None


def mask_paths(mask: field_mask_pb2.FieldMask) -> tuple[str, ...]:
    """The settable fields an update's mask names (all of them when it is empty)."""
    if not mask.paths:
        return SETTABLE
    for path in mask.paths:
        if path in _READ_ONLY:
            raise InvalidArgument(
                "update_mask",
                f"{path!r} cannot be changed"
                + (": create another library for another root" if path == "root" else ""),
            )
        if path not in SETTABLE:
            raise InvalidArgument(
                "update_mask", f"unknown field {path!r}: use some of {', '.join(SETTABLE)}"
            )
    return tuple(mask.paths)


def apply_update(stored: scan_pb2.Library, given: scan_pb2.Library, paths: tuple[str, ...]) -> None:
    """Copy the fields of `given` named by `paths` onto `stored` and settle it."""
    for path in paths:
        stored.ClearField(path)
        value = getattr(given, path)
        if path == "recursive":
            if given.HasField("recursive"):
                stored.recursive = given.recursive
        elif isinstance(value, duration_pb2.Duration):
            getattr(stored, path).CopyFrom(value)
        else:
            setattr(stored, path, value)
    settle(stored)
