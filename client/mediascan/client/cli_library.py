"""`mediascan library ...`: the subcommands of libraries (add, list, show, update, remove) and
`library watch`, which prints a library's changes as they happen."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from typing import cast

from mediascan.client import display_libraries as display
from mediascan.client.cli_kit import (
    EXIT_ERROR,
    EXIT_OK,
    Arg,
    Command,
    Output,
    arg,
    json_arg,
    limit_arg,
    non_negative,
    page_size,
    parse_duration,
    show_list,
    take,
)
from mediascan.client.client import ScanClient
from mediascan.client.messages import LibrarySettings
from mediascan.v1 import scan_pb2

_WATCH_MODES = {
    "auto": scan_pb2.WATCH_MODE_AUTO,
    "events": scan_pb2.WATCH_MODE_EVENTS,
    "poll": scan_pb2.WATCH_MODE_POLL,
    "off": scan_pb2.WATCH_MODE_OFF,
}


def _share(text: str) -> float:
    """A share from 0 to 1 (`0.5`), or a percentage (`50%`)."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(
            f"expected a share from 0 to 1 (or 0% to 100%), got {text!r}"
        )
    return value


_NAME = arg("name", metavar="NAME", help='the library\'s name, e.g. "films" (or libraries/films)')

# Each defaults to None: `add` leaves the server's default, `update` leaves the setting as it is.
_SETTINGS = (
    arg(
        "--watch-mode",
        choices=list(_WATCH_MODES),
        help="how changes are noticed: the kernel's file events, polling, auto (polling on "
        "network and FUSE file systems, events elsewhere; the default), or off (only scans)",
    ),
    arg(
        "--poll-interval",
        type=parse_duration,
        metavar="DURATION",
        help="how often a polled library is compared with its folder (default 5m; at least 1s)",
    ),
    arg(
        "--quiet-window",
        type=parse_duration,
        metavar="DURATION",
        help="probe a file only once its size and times have not changed for this long "
        "(default 10s; at most 1h)",
    ),
    arg(
        "--rescan-interval",
        type=parse_duration,
        metavar="DURATION",
        help="rescan the whole library this often, e.g. 1h or 7d (0, the default: never)",
    ),
    arg(
        "--full-every",
        dest="full_rescan_every",
        type=non_negative,
        metavar="N",
        help="make every N-th scheduled rescan a full one, probing every file (0: never)",
    ),
    arg(
        "--removal-limit",
        type=_share,
        metavar="SHARE",
        help="the largest share of the library's videos one scan may remove, e.g. 0.5 or 50%% "
        "(default 0.5; 1 allows any): a scan that would remove more removes none and marks "
        "the library DEGRADED until a scan with --force",
    ),
    arg(
        "--extensions",
        metavar="LIST",
        help='the file name extensions that are videos here: "mp4,mkv" (only those), "+vid,+dv" '
        "(the server's and those), or \"\" (the server's set, the default)",
    ),
    arg(
        "--recursive",
        action=argparse.BooleanOptionalAction,
        help="descend into subfolders (the default), or not (--no-recursive)",
    ),
    arg(
        "--follow-symlinks",
        action=argparse.BooleanOptionalAction,
        help="follow symbolic links to folders and files (default: not)",
    ),
)
_SETTING_NAMES = (
    "watch_mode",
    "poll_interval",
    "quiet_window",
    "rescan_interval",
    "full_rescan_every",
    "removal_limit",
    "extensions",
    "recursive",
    "follow_symlinks",
)


def _settings(args: argparse.Namespace) -> LibrarySettings:
    """The settings given on the command line, and only those."""
    given = {name: getattr(args, name) for name in _SETTING_NAMES}
    if args.watch_mode is not None:
        given["watch_mode"] = _WATCH_MODES[args.watch_mode]
    return cast(LibrarySettings, {k: v for k, v in given.items() if v is not None})


def _show(out: Output, library: scan_pb2.Library) -> int:
    if out.json:
        out.message(library)
    else:
        out.lines(display.library_details(library))
    return EXIT_OK


async def _add(client: ScanClient, args: argparse.Namespace, out: Output) -> int:
    library_id = args.name.removeprefix("libraries/")
    root = os.path.abspath(args.root)
    return _show(out, await client.create_library(library_id, root, **_settings(args)))


async def _list(client: ScanClient, args: argparse.Namespace, out: Output) -> int:
    listed = client.list_libraries(page_size=page_size(args.limit))
    taken = await take(listed, args.limit)
    return show_list(out, "libraries", taken, display.libraries_table, "no libraries")


async def _get(client: ScanClient, args: argparse.Namespace, out: Output) -> int:
    return _show(out, await client.get_library(args.name))


async def _update(client: ScanClient, args: argparse.Namespace, out: Output) -> int:
    settings = _settings(args)
    if not settings:
        print(
            "error: give the settings to change, e.g. --watch-mode poll (see --help)",
            file=sys.stderr,
        )
        return EXIT_ERROR
    return _show(out, await client.update_library(args.name, **settings))


async def _remove(client: ScanClient, args: argparse.Namespace, out: Output) -> int:
    await client.delete_library(args.name, drop_videos=args.drop_videos)
    if out.json:
        out.line("{}")
    elif args.drop_videos:
        out.line(f"library {args.name} removed, with its videos")
    else:
        out.line(f"library {args.name} removed; its videos stay (scans keep them current)")
    return EXIT_OK


async def _watch(client: ScanClient, args: argparse.Namespace, out: Output) -> int:
    # A plain call first fails at once for an unknown library or a server that is not there
    # (follow_library would keep trying to reach the latter).
    library = await client.get_library(args.name)
    last = args.after
    feed = client.follow_library(args.name, after_sequence=args.after)
    try:
        async with contextlib.aclosing(feed) as changes:
            async for change in changes:
                last = change.sequence
                if out.json:
                    out.json_line(change)
                else:
                    out.line(display.change_line(change))
    except asyncio.CancelledError:
        name = display.library_id(library)
        print(
            f"interrupted after change {last} (go on with: mediascan library watch {name} "
            f"--after {last})",
            file=sys.stderr,
        )
        raise
    raise AssertionError("follow_library never ends by itself")  # pragma: no cover


_ADD_ARGS: tuple[Arg, ...] = (
    arg(
        "name",
        metavar="NAME",
        help='the new library\'s name, e.g. "films": lower-case '
        "letters, digits and hyphens, starting with a letter",
    ),
    arg("root", metavar="ROOT", help="its folder (relative to here, or absolute)"),
    *_SETTINGS,
    json_arg(),
)

#: `mediascan library ...`
LIBRARY = Command(
    "library",
    "libraries: folders the server keeps current by itself, and their changes",
    None,
    commands=(
        Command("add", "create a library of a folder", _add, _ADD_ARGS),
        Command(
            "list", "list the libraries, by name", _list, (limit_arg("libraries", 0), json_arg())
        ),
        Command("show", "show a library: its settings and status", _get, (_NAME, json_arg())),
        Command(
            "update",
            "change some settings of a library (only those given)",
            _update,
            (_NAME, *_SETTINGS, json_arg()),
        ),
        Command(
            "remove",
            "delete a library and its change history (its videos stay unless --drop-videos)",
            _remove,
            (
                _NAME,
                arg("--drop-videos", action="store_true", help="also remove its videos"),
                json_arg(),
            ),
        ),
        Command(
            "watch",
            "print a library's changes as they happen, one a line, until interrupted; "
            "it reconnects and resumes by itself when the connection breaks",
            _watch,
            (
                _NAME,
                arg(
                    "--after",
                    type=non_negative,
                    default=0,
                    metavar="N",
                    help="resume after change N (0, the default: from now on)",
                ),
                json_arg("JSON Lines: each change as one compact JSON object on a line of its own"),
            ),
        ),
    ),
)
