"""How the command line shows libraries and their changes: a library's details, the table of
libraries, and one line a change. Nothing here talks to the server."""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf import duration_pb2

from mediascan.client.display import Column, format_bytes, format_seconds, format_time, table_lines
from mediascan.v1 import scan_pb2


def watch_mode_name(mode: int) -> str:
    """`WATCH_MODE_EVENTS` -> `events`."""
    return scan_pb2.WatchMode.Name(mode).removeprefix("WATCH_MODE_").lower()  # type: ignore[arg-type]


def state_name(state: int) -> str:
    """`LIBRARY_STATE_OFFLINE` -> `OFFLINE`."""
    return scan_pb2.LibraryState.Name(state).removeprefix("LIBRARY_STATE_")  # type: ignore[arg-type]


def kind_name(kind: int) -> str:
    """`CHANGE_KIND_ADDED` -> `ADDED`."""
    return scan_pb2.ChangeKind.Name(kind).removeprefix("CHANGE_KIND_")  # type: ignore[arg-type]


def library_id(library: scan_pb2.Library) -> str:
    """`libraries/films` -> `films`."""
    return library.name.removeprefix("libraries/")


def _seconds(value: duration_pb2.Duration) -> float:
    return value.ToNanoseconds() / 1e9


def _rescans(library: scan_pb2.Library) -> str:
    """`every 1h, each 4th full`, or `none`."""
    interval = _seconds(library.rescan_interval)
    if not interval:
        return "none"
    text = f"every {format_seconds(interval)}"
    if library.full_rescan_every == 1:
        text += ", all full"
    elif library.full_rescan_every:
        text += f", each {_ordinal(library.full_rescan_every)} full"
    return text


def _ordinal(number: int) -> str:
    """`2nd`, `3rd`, `4th`, `11th`, `21st`."""
    suffix = {1: "st", 2: "nd", 3: "rd"}.get(number % 10 if number % 100 not in (11, 12, 13) else 0)
    return f"{number}{suffix or 'th'}"


def _state(status: scan_pb2.LibraryStatus) -> str:
    """`ACTIVE since ...`, `OFFLINE since ...: why`."""
    text = f"{state_name(status.state)} since {format_time(status.since)}"
    return f"{text}: {status.reason}" if status.reason else text


def _watching(library: scan_pb2.Library) -> str:
    """`auto (now events)`, `poll every 5m`, `off`."""
    mode = watch_mode_name(library.watch_mode)
    if library.watch_mode == scan_pb2.WATCH_MODE_POLL:
        mode += f" every {format_seconds(_seconds(library.poll_interval))}"
    now = library.status.watching
    if now != scan_pb2.WATCH_MODE_UNSPECIFIED and now != library.watch_mode:
        mode += f" (now {watch_mode_name(now)})"
    return mode


def library_details(library: scan_pb2.Library) -> list[str]:
    """Lines describing one library (`library show`): `key  value`, aligned."""
    status = library.status
    flags = [
        "recursive" if library.recursive else "not recursive",
        "follows symlinks" if library.follow_symlinks else "no symlinks",
    ]
    last_scan = "-"
    if status.last_job_id:
        last_scan = f"{status.last_job_id}, ended {format_time(status.last_scan_end_time)}"
    rows = [
        ("library", library.name),
        ("root", library.root),
        ("state", _state(status)),
        ("watching", _watching(library)),
        ("quiet window", format_seconds(_seconds(library.quiet_window))),
        ("rescans", _rescans(library)),
        ("removal limit", f"{library.removal_limit:.0%} of its videos a scan"),
        ("scan options", ", ".join(flags)),
        ("extensions", library.extensions or "the server's"),
        ("videos", f"{status.video_count} ({format_bytes(status.total_size_bytes)})"),
        ("last change", str(status.last_sequence)),
        ("last scan", last_scan),
    ]
    if status.HasField("next_rescan_time"):
        rows.append(("next rescan", format_time(status.next_rescan_time)))
    if status.node:
        rows.append(("node", status.node))
    rows += [("uid", library.uid), ("created", format_time(library.create_time))]
    width = max(len(key) for key, _ in rows)
    return [f"{key:<{width}}  {value}" for key, value in rows]


_LIBRARY_COLUMNS = (
    Column("LIBRARY"),
    Column("STATE"),
    Column("WATCH"),
    Column("VIDEOS", right=True),
    Column("SIZE", right=True),
    Column("LAST CHANGE", right=True),
    Column("ROOT", fold=True),
)


def libraries_table(libraries: Iterable[scan_pb2.Library], width: int | None = None) -> list[str]:
    """The lines of the `library list` table (see `display.table_lines` for `width`)."""
    rows = (
        (
            library_id(library),
            state_name(library.status.state),
            _watch_column(library),
            str(library.status.video_count),
            format_bytes(library.status.total_size_bytes),
            str(library.status.last_sequence),
            library.root,
        )
        for library in libraries
    )
    return table_lines(_LIBRARY_COLUMNS, rows, width)


def _watch_column(library: scan_pb2.Library) -> str:
    """`poll`, or `auto (events)`: the mode asked for, and the one running where it differs."""
    mode, now = library.watch_mode, library.status.watching
    if now == scan_pb2.WATCH_MODE_UNSPECIFIED or now == mode:
        return watch_mode_name(mode)
    return f"{watch_mode_name(mode)} ({watch_mode_name(now)})"


def change_line(change: scan_pb2.LibraryChange) -> str:
    """One change as a line: its sequence, its kind and what it is about, e.g. `7  UPDATED
    /media/a.mp4: size_bytes, duration`."""
    kind = change.kind
    if kind == scan_pb2.CHANGE_KIND_MOVED:
        text = f"{change.path} (from {change.old_path})"
    elif kind == scan_pb2.CHANGE_KIND_UPDATED:
        text = f"{change.path}: {', '.join(change.changed_fields)}"
    elif kind == scan_pb2.CHANGE_KIND_STATUS:
        text = _state(change.status)
    elif kind == scan_pb2.CHANGE_KIND_RESYNC:
        text = f"(the library as of change {change.sequence}: the changes after it follow)"
    else:
        text = change.path
    return f"{change.sequence:<6} {kind_name(kind):<8} {text}"
