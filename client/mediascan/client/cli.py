"""The `mediascan` command line: submit scans, follow jobs and list the library.

Every subcommand takes `--server ADDR[,ADDR...]` (or `MEDIASCAN_SERVER`; several addresses for
servers that share one database, tried in turn), `--json`, and the security options `--token` (or
`MEDIASCAN_TOKEN`), `--tls-ca`, `--tls-cert`/`--tls-key`. See `EXIT_CODES_HELP` for what the exit
status means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib.metadata
import json
import os
import re
import sys
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from rich.console import Console

from mediascan.client import display
from mediascan.client.client import DEFAULT_TARGET, ScanClient
from mediascan.client.diagnose import ClientTls, diagnose_each
from mediascan.client.errors import MediascanError
from mediascan.v1 import scan_pb2

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_ERROR = 2
EXIT_TIMED_OUT = 3
EXIT_CANCELLED = 4
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """\
exit status:
  0    done (watch, scan --watch: the job SUCCEEDED)
  1    the job FAILED
  2    error: bad arguments, the server refused the request, or it cannot be reached
  3    the job TIMED_OUT
  4    the job was CANCELLED
  130  interrupted (Ctrl-C): the job goes on
"""

_EXIT_BY_STATE = {
    scan_pb2.JOB_STATE_SUCCEEDED: EXIT_OK,
    scan_pb2.JOB_STATE_FAILED: EXIT_FAILED,
    scan_pb2.JOB_STATE_TIMED_OUT: EXIT_TIMED_OUT,
    scan_pb2.JOB_STATE_CANCELLED: EXIT_CANCELLED,
}

_VERIFY = {"none": scan_pb2.VERIFY_UNSPECIFIED, "decode": scan_pb2.VERIFY_DECODE}
_HEALTH = {
    "ok": scan_pb2.HEALTH_OK,
    "warnings": scan_pb2.HEALTH_WARNINGS,
    "corrupt": scan_pb2.HEALTH_CORRUPT,
}
_HDR = {
    "none": scan_pb2.HDR_KIND_NONE,
    "hdr10": scan_pb2.HDR_KIND_HDR10,
    "hdr10+": scan_pb2.HDR_KIND_HDR10_PLUS,
    "hlg": scan_pb2.HDR_KIND_HLG,
    "dolby-vision": scan_pb2.HDR_KIND_DOLBY_VISION,
}
#: `videos --order-by` names, as ListVideosRequest.order_by spells them.
_ORDERS = {
    "path": "path",
    "duration": "duration",
    "size": "size_bytes",
    "modify-time": "modify_time",
    "probe-time": "probe_time",
}
_STATES = {
    "queued": scan_pb2.JOB_STATE_QUEUED,
    "running": scan_pb2.JOB_STATE_RUNNING,
    "succeeded": scan_pb2.JOB_STATE_SUCCEEDED,
    "failed": scan_pb2.JOB_STATE_FAILED,
    "timed_out": scan_pb2.JOB_STATE_TIMED_OUT,
    "cancelled": scan_pb2.JOB_STATE_CANCELLED,
}

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

_T = TypeVar("_T")
_M = TypeVar("_M", bound=Message)


def parse_duration(text: str) -> float:
    """`30s`, `5m`, `1h`, `250ms` or a bare number of seconds, in seconds."""
    match = _DURATION_RE.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r}: use a number with a unit, e.g. 30s, 5m, 1h, 250ms"
        )
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


@dataclasses.dataclass(frozen=True)
class _Arg:
    """One argument of the command line: its names and the keywords of `add_argument`."""

    names: tuple[str, ...]
    settings: dict[str, Any]


def _arg(*names: str, **settings: Any) -> _Arg:
    return _Arg(names, settings)


# Given before or after the subcommand.
_CONNECTION_ARGS = (
    _arg(
        "--server",
        metavar="ADDR",
        help="server address host:port, or several separated by commas (servers sharing one "
        "database: a call that cannot reach one goes on to the next) (env MEDIASCAN_SERVER, "
        f"default {DEFAULT_TARGET})",
    ),
    _arg(
        "--token",
        metavar="TOKEN",
        help="bearer token for a server started with --auth-token-file (env MEDIASCAN_TOKEN, "
        "which unlike the flag other users cannot see in the process list)",
    ),
    _arg("--token-file", metavar="FILE", help="read the bearer token from the first line of FILE"),
    _arg(
        "--tls-ca",
        metavar="FILE",
        help="connect with TLS, trusting the CA certificate(s) in this PEM file "
        "(env MEDIASCAN_TLS_CA)",
    ),
    _arg(
        "--tls", action="store_true", help="connect with TLS, trusting the system's CA certificates"
    ),
    _arg(
        "--tls-cert",
        metavar="FILE",
        help="client certificate (PEM) for a server that requires one (mutual TLS)",
    ),
    _arg("--tls-key", metavar="FILE", help="private key (PEM) of --tls-cert"),
    _arg(
        "--tls-server-name",
        metavar="NAME",
        help="expect this name in the server's certificate instead of the host of --server",
    ),
)

_JSON_HELP = "print JSON (lowerCamelCase field names, the proto3 JSON mapping grpcurl prints)"
_JSON_LINES_HELP = (
    "JSON Lines: each event of the job as one compact JSON object on a line of its own"
)


def _json_arg(help: str = _JSON_HELP) -> _Arg:
    return _arg("--json", action="store_true", default=argparse.SUPPRESS, help=help)


_JOB_ID = _arg("job_id", metavar="ID", help="the job's id (j_..., as scan and jobs print it)")


def _limit_arg(what: str, default: int) -> _Arg:
    return _arg(
        "--limit",
        type=_non_negative,
        default=default,
        metavar="N",
        help=f"at most N {what} (0: all; default {default})",
    )


_SCAN_ARGS = (
    _arg("path", metavar="PATH", help="folder to scan (relative to here, or absolute)"),
    _arg("--watch", action="store_true", help="follow the job until it ends, with a progress bar"),
    _arg(
        "--timeout",
        type=parse_duration,
        metavar="DURATION",
        help="time limit of the whole scan, e.g. 30s, 5m, 1h (default: the server's)",
    ),
    _arg(
        "--no-recursive",
        dest="recursive",
        action="store_false",
        help="do not descend into subfolders",
    ),
    _arg("--follow-symlinks", action="store_true", help="follow symbolic links"),
    _arg("--full", action="store_true", help="probe every file again, even unchanged ones"),
    _arg(
        "--verify",
        choices=list(_VERIFY),
        default="none",
        help="decode: also decode every new or changed file, and every video never verified, "
        "and record its health (slow: about the videos' running time per core)",
    ),
    _arg("--priority", type=int, default=0, metavar="N", help="-100..100, higher runs first"),
    _arg(
        "--request-id",
        metavar="ID",
        help="idempotency key: a repeat with the same ID returns the first job",
    ),
    _json_arg(f"print the submitted job as JSON; with --watch, {_JSON_LINES_HELP}"),
)

_VIDEOS_ARGS = (
    _arg(
        "--prefix",
        metavar="DIR",
        default="",
        help="only videos under this folder (relative to here, or absolute)",
    ),
    _arg("--codec", metavar="NAME", default="", help="only videos of this video codec, e.g. h264"),
    _arg(
        "--min-duration",
        type=parse_duration,
        metavar="DURATION",
        help="only videos at least this long, e.g. 90s, 5m",
    ),
    _arg(
        "--max-duration",
        type=parse_duration,
        metavar="DURATION",
        help="only videos at most this long, e.g. 90s, 5m",
    ),
    _arg("--health", choices=list(_HEALTH), help="only videos a DECODE scan found so"),
    _arg(
        "--fingerprint",
        metavar="FP",
        default="",
        help="only videos with this content fingerprint (the copies of one file)",
    ),
    _arg(
        "--container",
        metavar="NAME",
        default="",
        help="only videos in this container, as FFmpeg names it, e.g. matroska,webm",
    ),
    _arg(
        "--audio-codec",
        metavar="NAME",
        default="",
        help="only videos whose main audio stream has this codec, e.g. aac",
    ),
    *(
        _arg(f"--{bound}-{side}", type=_non_negative, default=0, metavar="PIXELS", help=text)
        for side, wide in (("width", "wide"), ("height", "high"))
        for bound, text in (
            ("min", f"only videos at least this {wide}"),
            ("max", f"only videos at most this {wide}"),
        )
    ),
    _arg(
        "--rotation",
        type=int,
        choices=(0, 90, -90, 180),
        help="only videos rotated so (degrees counterclockwise)",
    ),
    _arg("--hdr", choices=list(_HDR), help="only videos of this dynamic range"),
    _arg(
        "--truncated",
        action=argparse.BooleanOptionalAction,
        help="only truncated videos (--no-truncated: only whole ones)",
    ),
    _arg(
        "--vfr",
        dest="variable_frame_rate",
        action=argparse.BooleanOptionalAction,
        help="only videos with a variable frame rate (--no-vfr: only constant ones)",
    ),
    _arg(
        "--order-by",
        choices=list(_ORDERS),
        default="path",
        help="list in this order (default path; equal values in the order they were added)",
    ),
    _arg("--desc", action="store_true", help="in descending order"),
    _limit_arg("videos", 100),
    _json_arg(),
)

_DUPLICATES_ARGS = (
    _arg(
        "--prefix",
        metavar="DIR",
        default="",
        help="only videos under this folder (relative to here, or absolute)",
    ),
    _arg(
        "--confirm",
        action="store_true",
        help="have the server read each file whole and compare content hashes (slow)",
    ),
    _limit_arg("groups", 50),
    _json_arg(),
)

_VIDEO_ARGS = (
    _arg(
        "video",
        metavar="ID|PATH",
        help="the video's id (v_123, as videos --json shows it) or its file's path (relative "
        "to here, or absolute; write ./v_1 for a file named v_1)",
    ),
    _json_arg(),
)


def _add(add_argument: Callable[..., object], args: Sequence[_Arg]) -> None:
    for arg in args:
        add_argument(*arg.names, **arg.settings)


def _add_connection_options(parser: argparse.ArgumentParser) -> None:
    """The connection options, as a group listed after the parser's own options. SUPPRESS keeps
    a subcommand's default from hiding a value given before the subcommand."""
    group = parser.add_argument_group("connection options")
    for arg in _CONNECTION_ARGS:
        group.add_argument(*arg.names, default=argparse.SUPPRESS, **arg.settings)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mediascan",
        description="Scan video folders with a mediascan server, follow the jobs and list the "
        "videos they found.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add(
        parser.add_argument,
        [_json_arg(f"{_JSON_HELP}; watch and scan --watch print {_JSON_LINES_HELP}")],
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {importlib.metadata.version('mediascan')}"
    )
    _add_connection_options(parser)
    commands = parser.add_subparsers(
        dest="command",
        metavar="COMMAND",
        required=True,
        help="what to do (mediascan COMMAND --help shows its options)",
    )
    for command in _COMMAND_TABLE:
        subparser = commands.add_parser(
            command.name,
            help=command.help,
            description=command.help,
            epilog=EXIT_CODES_HELP if command.exit_codes else None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _add(subparser.add_argument, command.args)
        _add_connection_options(subparser)
    return parser


class _Output:
    """Where and how results are printed: JSON or rich text, with or without a live bar."""

    def __init__(self, as_json: bool) -> None:
        self.json = as_json
        #: Draws the live progress bar, on a terminal only.
        self.console = Console(highlight=False)
        self.live = self.console.is_terminal

    @property
    def width(self) -> int | None:
        """The width tables must fit: the terminal's, or None (no limit) for a file or pipe."""
        return self.console.width if self.live else None

    def line(self, text: str) -> None:
        print(text, flush=True)

    def lines(self, texts: Sequence[str]) -> None:
        """Print many lines with one write (a table of 50,000 rows among them)."""
        sys.stdout.write("".join(text + "\n" for text in texts))
        sys.stdout.flush()

    def message(self, message: Message) -> None:
        self.line(json_format.MessageToJson(message))

    def messages(self, key: str, messages: Sequence[Message]) -> None:
        document = {key: [json_format.MessageToDict(message) for message in messages]}
        self.line(json.dumps(document, indent=2))

    def event(self, event: scan_pb2.JobEvent) -> None:
        """One line of JSON Lines: the event as compact JSON."""
        self.line(json.dumps(json_format.MessageToDict(event), separators=(",", ":")))


async def _take(items: AsyncGenerator[_T, None], limit: int) -> tuple[list[_T], bool]:
    """The first `limit` items (all for 0), and whether there were more."""
    taken: list[_T] = []
    async with contextlib.aclosing(items) as iterator:
        async for item in iterator:
            if limit and len(taken) == limit:
                return taken, True
            taken.append(item)
    return taken, False


def _page_size(limit: int) -> int:
    return min(limit + 1, 1000) if limit else 500


async def _follow(client: ScanClient, job_id: str, out: _Output) -> int:
    """Follow the job to its end, showing it as asked; the exit status for its final state."""
    try:
        if out.json:
            job = await client.wait(job_id, on_event=out.event)
        elif out.live:
            with display.LiveProgress(out.console) as live:
                job = await client.wait(job_id, on_event=live.update)
        else:
            job = await client.wait(job_id)
    except asyncio.CancelledError:
        print(
            f"interrupted: job {job_id} goes on (cancel it with: mediascan cancel {job_id})",
            file=sys.stderr,
        )
        raise
    if not out.json:
        for text in display.summary_lines(job):
            out.line(text)
    return _EXIT_BY_STATE.get(job.state, EXIT_ERROR)


async def _scan(client: ScanClient, args: argparse.Namespace, out: _Output) -> int:
    response = await client.submit_scan(
        os.path.abspath(args.path),
        recursive=args.recursive,
        follow_symlinks=args.follow_symlinks,
        timeout=args.timeout,
        request_id=args.request_id,
        priority=args.priority,
        full=args.full,
        verify=_VERIFY[args.verify],
    )
    if out.json and not args.watch:
        out.message(response)
        return EXIT_OK
    if not out.json:
        note = " (the same scan was already queued or running)" if response.deduplicated else ""
        state = display.state_name(response.job.state)
        out.line(f"job {response.job_id} {state}: {response.job.path}{note}")
    if args.watch:
        return await _follow(client, response.job_id, out)
    return EXIT_OK


async def _job(client: ScanClient, args: argparse.Namespace, out: _Output) -> int:
    job = await client.get_job(args.job_id)
    if out.json:
        out.message(job)
    else:
        for text in display.job_details(job):
            out.line(text)
    return EXIT_OK


async def _errors(client: ScanClient, args: argparse.Namespace, out: _Output) -> int:
    listed = client.list_file_errors(args.job_id, page_size=_page_size(args.limit))
    taken = await _take(listed, args.limit)
    return _show_list(out, "fileErrors", taken, display.file_error_lines, "no file errors")


async def _watch(client: ScanClient, args: argparse.Namespace, out: _Output) -> int:
    # A first plain call fails at once for an unknown job or a server that is not there;
    # watch_job would keep trying to reconnect to the latter.
    await client.get_job(args.job_id)
    return await _follow(client, args.job_id, out)


async def _cancel(client: ScanClient, args: argparse.Namespace, out: _Output) -> int:
    job = await client.cancel_job(args.job_id)
    if out.json:
        out.message(job)
    else:
        out.line(f"job {job.job_id} {display.state_name(job.state)}: {job.path}")
    return EXIT_OK


async def _delete(client: ScanClient, args: argparse.Namespace, out: _Output) -> int:
    await client.delete_job(args.job_id)
    out.line("{}" if out.json else f"job {args.job_id} deleted")
    return EXIT_OK


async def _jobs(client: ScanClient, args: argparse.Namespace, out: _Output) -> int:
    state = _STATES[args.state] if args.state else None
    listed = client.list_jobs(state, page_size=_page_size(args.limit))
    return _show_list(out, "jobs", await _take(listed, args.limit), display.jobs_table, "no jobs")


async def _videos(client: ScanClient, args: argparse.Namespace, out: _Output) -> int:
    prefix = os.path.abspath(args.prefix) if args.prefix else ""
    listed = client.list_videos(
        prefix,
        page_size=_page_size(args.limit),
        video_codec=args.codec,
        min_duration=args.min_duration,
        max_duration=args.max_duration,
        health=_HEALTH[args.health] if args.health else scan_pb2.HEALTH_UNSPECIFIED,
        fingerprint=args.fingerprint,
        container=args.container,
        audio_codec=args.audio_codec,
        min_width=args.min_width,
        max_width=args.max_width,
        min_height=args.min_height,
        max_height=args.max_height,
        rotation=args.rotation,
        hdr=_HDR[args.hdr] if args.hdr else scan_pb2.HDR_KIND_UNSPECIFIED,
        truncated=args.truncated,
        variable_frame_rate=args.variable_frame_rate,
        order_by=_ORDERS[args.order_by] + (" desc" if args.desc else ""),
    )
    taken = await _take(listed, args.limit)
    nothing = "no videos" + _filters_text(prefix, args)
    return _show_list(out, "videos", taken, display.videos_table, nothing)


async def _duplicates(client: ScanClient, args: argparse.Namespace, out: _Output) -> int:
    prefix = os.path.abspath(args.prefix) if args.prefix else ""
    page = min(_page_size(args.limit), 50 if args.confirm else 500)
    listed = client.list_duplicates(prefix, page, confirm=args.confirm)
    taken = await _take(listed, args.limit)
    nothing = "no duplicates" + (f" under {prefix}" if prefix else "")
    return _show_list(out, "groups", taken, display.duplicate_lines, nothing)


def _show_list(
    out: _Output,
    key: str,
    taken: tuple[list[_M], bool],
    table: Callable[[list[_M], int | None], list[str]],
    nothing: str,
) -> int:
    """Print what `_take` took as JSON (`{key: [...]}`) or as a table; say so on stderr when
    there was nothing, or more than the limit."""
    items, more = taken
    if out.json:
        out.messages(key, items)
        return EXIT_OK
    if items:
        out.lines(table(items, out.width))
    else:
        print(nothing, file=sys.stderr)
    if more:
        what = "errors" if key == "fileErrors" else key
        print(f"(the first {len(items)} {what}; --limit 0 lists all)", file=sys.stderr)
    return EXIT_OK


def _filters_text(prefix: str, args: argparse.Namespace) -> str:
    """` under /media/tv with codec h264 of at least 5m`: the filters of `videos`, as said."""
    words = [f" under {prefix}"] if prefix else []
    if args.codec:
        words.append(f" with codec {args.codec}")
    if args.min_duration is not None:
        words.append(f" of at least {display.format_seconds(args.min_duration)}")
    if args.max_duration is not None:
        words.append(f" of at most {display.format_seconds(args.max_duration)}")
    for value, said in (
        (args.health, f" with health {args.health}"),
        (args.fingerprint, f" with fingerprint {args.fingerprint}"),
        (args.container, f" in container {args.container}"),
        (args.audio_codec, f" with audio codec {args.audio_codec}"),
        (args.min_width, f" at least {args.min_width} wide"),
        (args.max_width, f" at most {args.max_width} wide"),
        (args.min_height, f" at least {args.min_height} high"),
        (args.max_height, f" at most {args.max_height} high"),
        (args.rotation is not None, f" rotated {args.rotation}"),
        (args.hdr, f" with dynamic range {args.hdr}"),
        (args.truncated is not None, " truncated" if args.truncated else " whole"),
        (
            args.variable_frame_rate is not None,
            " of variable frame rate" if args.variable_frame_rate else " of constant frame rate",
        ),
    ):
        if value:
            words.append(said)
    return "".join(words)


_VIDEO_ID_RE = re.compile(r"v_\d+")


async def _video(client: ScanClient, args: argparse.Namespace, out: _Output) -> int:
    if _VIDEO_ID_RE.fullmatch(args.video):
        video = await client.get_video(video_id=args.video)
    else:
        video = await client.get_video(path=os.path.abspath(args.video))
    if out.json:
        out.message(video)
    else:
        out.lines(display.video_details(video))
    return EXIT_OK


_Runner = Callable[[ScanClient, argparse.Namespace, _Output], Awaitable[int]]


@dataclasses.dataclass(frozen=True)
class _Command:
    """A subcommand: its name, one-line help, what runs it, its arguments, and whether it exits
    with a job's state (then its help lists the exit codes)."""

    name: str
    help: str
    run: _Runner
    args: tuple[_Arg, ...]
    exit_codes: bool = False


_COMMAND_TABLE = (
    _Command(
        "scan", "submit a scan of a folder (and follow it with --watch)", _scan, _SCAN_ARGS, True
    ),
    _Command("job", "show a job", _job, (_JOB_ID, _json_arg())),
    _Command(
        "errors",
        "list every file error of a job, in the order met",
        _errors,
        (_JOB_ID, _limit_arg("errors", 0), _json_arg()),
    ),
    _Command(
        "watch",
        "follow a job until it ends, with a progress bar",
        _watch,
        (_JOB_ID, _json_arg(f"print {_JSON_LINES_HELP}")),
        True,
    ),
    _Command("cancel", "cancel a queued or running job", _cancel, (_JOB_ID, _json_arg())),
    _Command("delete", "forget a finished job", _delete, (_JOB_ID, _json_arg())),
    _Command(
        "jobs",
        "list jobs, newest first",
        _jobs,
        (
            _arg("--state", choices=list(_STATES), help="only jobs in this state"),
            _limit_arg("jobs", 50),
            _json_arg(),
        ),
    ),
    _Command(
        "videos", "list the videos of the library, by path or --order-by", _videos, _VIDEOS_ARGS
    ),
    _Command("video", "show one video of the library, by id or by path", _video, _VIDEO_ARGS),
    _Command(
        "duplicates",
        "list groups of identical videos (same content fingerprint)",
        _duplicates,
        _DUPLICATES_ARGS,
    ),
)


_RUNNERS = {command.name: command.run for command in _COMMAND_TABLE}


async def _report(error: MediascanError, client: ScanClient, security: dict[str, Any]) -> None:
    if error.code == grpc.StatusCode.UNAVAILABLE and (error.unreachable or len(client.targets) > 1):
        await _report_each_server(error, security)
        return
    print(f"error: {error.code.name}: {error.message}", file=sys.stderr)
    for field, description in error.field_violations:
        # The server's message usually says it already, as "field: description" or as the
        # description alone (a violation that names the field at fault of a NOT_FOUND, ...).
        if description not in error.message:
            print(f"  {field}: {description}", file=sys.stderr)
    if error.retry_delay is not None:
        print(f"  retry in {display.format_seconds(error.retry_delay)}", file=sys.stderr)


_CLIENT_TLS_KEYS = ("tls", "tls_ca", "tls_cert", "tls_key", "tls_server_name")


async def _report_each_server(error: MediascanError, security: dict[str, Any]) -> None:
    """A line for each server the call tried: why it could not connect there (diagnosed), or
    what the server answered."""
    failures = [*error.earlier, error]
    tls = ClientTls(**{key: security[key] for key in _CLIENT_TLS_KEYS})
    unreachable = [failure.target for failure in failures if failure.unreachable]
    causes = await asyncio.to_thread(diagnose_each, [t for t in unreachable if t], tls)
    for failure in failures:
        if failure.unreachable:
            cause = causes.get(failure.target or "") or failure.message
            print(f"error: cannot connect to {failure.target}: {cause}", file=sys.stderr)
        else:
            print(
                f"error: {failure.target} answered {failure.code.name}: {failure.message}",
                file=sys.stderr,
            )


def _security(args: argparse.Namespace) -> dict[str, Any]:
    """ScanClient's security keyword arguments from the options and their environment twins.
    Raises ValueError for an option that cannot work."""
    token: str | None = getattr(args, "token", None)
    token_file: str | None = getattr(args, "token_file", None)
    if token is not None and token_file is not None:
        raise ValueError("give --token or --token-file, not both")
    if token_file is not None:
        try:
            with open(token_file, encoding="utf-8") as file:
                token = file.readline().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"--token-file {token_file}: cannot read it: {exc}") from None
    if token is None:
        token = os.environ.get("MEDIASCAN_TOKEN") or None
    cert, key = getattr(args, "tls_cert", None), getattr(args, "tls_key", None)
    if (cert is None) != (key is None):
        raise ValueError("--tls-cert and --tls-key go together: give both")
    return {
        "token": token,
        "tls": getattr(args, "tls", False),
        "tls_ca": getattr(args, "tls_ca", None) or os.environ.get("MEDIASCAN_TLS_CA") or None,
        "tls_cert": cert,
        "tls_key": key,
        "tls_server_name": getattr(args, "tls_server_name", None),
    }


async def _run(args: argparse.Namespace) -> int:
    target: str = getattr(args, "server", None) or os.environ.get("MEDIASCAN_SERVER") or ""
    out = _Output(getattr(args, "json", False))
    try:
        security = _security(args)
        client = ScanClient(target or DEFAULT_TARGET, **security)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    async with client:
        try:
            return await _RUNNERS[args.command](client, args, out)
        except MediascanError as error:
            await _report(error, client, security)
            return EXIT_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (see `EXIT_CODES_HELP`)."""
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(_run(args))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away, e.g. `mediascan jobs | head -1`
        # Point stdout at /dev/null so that flushing it at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
