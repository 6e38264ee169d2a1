"""The `mediascan` command line: submit scans, follow jobs and list the library.

Every subcommand takes `--server ADDR[,ADDR...]` (or `MEDIASCAN_SERVER`; several addresses for
servers that share one database, tried in turn), `--json`, and the security options `--token` (or
`MEDIASCAN_TOKEN`), `--tls-ca`, `--tls-cert`/`--tls-key`. See `EXIT_CODES_HELP` for what the exit
status means.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from mediascan.client import display
from mediascan.client.cli_kit import (
    EXIT_CANCELLED,
    EXIT_ERROR,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TIMED_OUT,
    JSON_HELP,
    Arg,
    Command,
    Output,
    Runner,
    arg,
    json_arg,
    limit_arg,
    non_negative,
    page_size,
    parse_duration,
    show_list,
    take,
)
from mediascan.client.cli_library import LIBRARY
from mediascan.client.client import DEFAULT_TARGET, ScanClient
from mediascan.client.diagnose import ClientTls, diagnose_each
from mediascan.client.errors import MediascanError
from mediascan.v1 import scan_pb2

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

# Given before or after the subcommand.
_CONNECTION_ARGS = (
    arg(
        "--server",
        metavar="ADDR",
        help="server address host:port, or several separated by commas (servers sharing one "
        "database: a call that cannot reach one goes on to the next) (env MEDIASCAN_SERVER, "
        f"default {DEFAULT_TARGET})",
    ),
    arg(
        "--token",
        metavar="TOKEN",
        help="bearer token for a server started with --auth-token-file (env MEDIASCAN_TOKEN, "
        "which unlike the flag other users cannot see in the process list)",
    ),
    arg("--token-file", metavar="FILE", help="read the bearer token from the first line of FILE"),
    arg(
        "--tls-ca",
        metavar="FILE",
        help="connect with TLS, trusting the CA certificate(s) in this PEM file "
        "(env MEDIASCAN_TLS_CA)",
    ),
    arg(
        "--tls", action="store_true", help="connect with TLS, trusting the system's CA certificates"
    ),
    arg(
        "--tls-cert",
        metavar="FILE",
        help="client certificate (PEM) for a server that requires one (mutual TLS)",
    ),
    arg("--tls-key", metavar="FILE", help="private key (PEM) of --tls-cert"),
    arg(
        "--tls-server-name",
        metavar="NAME",
        help="expect this name in the server's certificate instead of the host of --server",
    ),
)

_JSON_LINES_HELP = (
    "JSON Lines: each event of the job as one compact JSON object on a line of its own"
)

_JOB_ID = arg("job_id", metavar="ID", help="the job's id (j_..., as scan and jobs print it)")


_SCAN_ARGS = (
    arg("path", metavar="PATH", help="folder to scan (relative to here, or absolute)"),
    arg("--watch", action="store_true", help="follow the job until it ends, with a progress bar"),
    arg(
        "--timeout",
        type=parse_duration,
        metavar="DURATION",
        help="time limit of the whole scan, e.g. 30s, 5m, 1h (default: the server's)",
    ),
    arg(
        "--no-recursive",
        dest="recursive",
        action="store_false",
        help="do not descend into subfolders",
    ),
    arg("--follow-symlinks", action="store_true", help="follow symbolic links"),
    arg("--full", action="store_true", help="probe every file again, even unchanged ones"),
    arg(
        "--force",
        action="store_true",
        help="remove the videos whose files are gone even when they are more than a "
        "library's --removal-limit share of its videos",
    ),
    arg(
        "--verify",
        choices=list(_VERIFY),
        default="none",
        help="decode: also decode every new or changed file, and every video never verified, "
        "and record its health (slow: about the videos' running time per core)",
    ),
    arg("--priority", type=int, default=0, metavar="N", help="-100..100, higher runs first"),
    arg(
        "--request-id",
        metavar="ID",
        help="idempotency key: a repeat with the same ID returns the first job",
    ),
    json_arg(f"print the submitted job as JSON; with --watch, {_JSON_LINES_HELP}"),
)

_VIDEOS_ARGS = (
    arg(
        "--prefix",
        metavar="DIR",
        default="",
        help="only videos under this folder (relative to here, or absolute)",
    ),
    arg(
        "--library",
        metavar="NAME",
        default="",
        help="only videos of this library (below its root; --prefix then a folder in it)",
    ),
    arg("--codec", metavar="NAME", default="", help="only videos of this video codec, e.g. h264"),
    arg(
        "--min-duration",
        type=parse_duration,
        metavar="DURATION",
        help="only videos at least this long, e.g. 90s, 5m",
    ),
    arg(
        "--max-duration",
        type=parse_duration,
        metavar="DURATION",
        help="only videos at most this long, e.g. 90s, 5m",
    ),
    arg("--health", choices=list(_HEALTH), help="only videos a DECODE scan found so"),
    arg(
        "--fingerprint",
        metavar="FP",
        default="",
        help="only videos with this content fingerprint (the copies of one file)",
    ),
    arg(
        "--container",
        metavar="NAME",
        default="",
        help="only videos in this container, as FFmpeg names it, e.g. matroska,webm",
    ),
    arg(
        "--audio-codec",
        metavar="NAME",
        default="",
        help="only videos whose main audio stream has this codec, e.g. aac",
    ),
    *(
        arg(f"--{bound}-{side}", type=non_negative, default=0, metavar="PIXELS", help=text)
        for side, wide in (("width", "wide"), ("height", "high"))
        for bound, text in (
            ("min", f"only videos at least this {wide}"),
            ("max", f"only videos at most this {wide}"),
        )
    ),
    arg(
        "--rotation",
        type=int,
        choices=(0, 90, -90, 180),
        help="only videos rotated so (degrees counterclockwise)",
    ),
    arg("--hdr", choices=list(_HDR), help="only videos of this dynamic range"),
    arg(
        "--truncated",
        action=argparse.BooleanOptionalAction,
        help="only truncated videos (--no-truncated: only whole ones)",
    ),
    arg(
        "--vfr",
        dest="variable_frame_rate",
        action=argparse.BooleanOptionalAction,
        help="only videos with a variable frame rate (--no-vfr: only constant ones)",
    ),
    arg(
        "--order-by",
        choices=list(_ORDERS),
        default="path",
        help="list in this order (default path; equal values in the order they were added)",
    ),
    arg("--desc", action="store_true", help="in descending order"),
    limit_arg("videos", 100),
    json_arg(),
)

_DUPLICATES_ARGS = (
    arg(
        "--prefix",
        metavar="DIR",
        default="",
        help="only videos under this folder (relative to here, or absolute)",
    ),
    arg(
        "--confirm",
        action="store_true",
        help="have the server read each file whole and compare content hashes (slow)",
    ),
    limit_arg("groups", 50),
    json_arg(),
)

_VIDEO_ARGS = (
    arg(
        "video",
        metavar="ID|PATH",
        help="the video's id (v_123, as videos --json shows it) or its file's path (relative "
        "to here, or absolute; write ./v_1 for a file named v_1)",
    ),
    json_arg(),
)


def _add(add_argument: Callable[..., object], args: Sequence[Arg]) -> None:
    for argument in args:
        add_argument(*argument.names, **argument.settings)


def _add_connection_options(parser: argparse.ArgumentParser) -> None:
    """The connection options, as a group listed after the parser's own options. SUPPRESS keeps
    a subcommand's default from hiding a value given before the subcommand."""
    group = parser.add_argument_group("connection options")
    for argument in _CONNECTION_ARGS:
        group.add_argument(*argument.names, default=argparse.SUPPRESS, **argument.settings)


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
        [json_arg(f"{JSON_HELP}; watch and scan --watch print {_JSON_LINES_HELP}")],
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {importlib.metadata.version('mediascan')}"
    )
    _add_connection_options(parser)
    _add_commands(parser, _COMMAND_TABLE, "command", "mediascan COMMAND --help")
    return parser


def _add_commands(
    parser: argparse.ArgumentParser, commands: Sequence[Command], dest: str, more: str
) -> None:
    """The subcommands of `parser` (each with the connection options; a group with its own
    subcommands); the one given sets `run` in the parsed arguments."""
    subparsers = parser.add_subparsers(
        dest=dest, metavar="COMMAND", required=True, help=f"what to do ({more} shows its options)"
    )
    for command in commands:
        subparser = subparsers.add_parser(
            command.name,
            help=command.help,
            description=command.help,
            epilog=EXIT_CODES_HELP if command.exit_codes else None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _add(subparser.add_argument, command.args)
        if command.commands:
            more = f"mediascan {command.name} COMMAND --help"
            _add_commands(subparser, command.commands, f"{command.name}_command", more)
        else:
            subparser.set_defaults(run=command.run)
        _add_connection_options(subparser)


async def _follow(client: ScanClient, job_id: str, out: Output) -> int:
    """Follow the job to its end, showing it as asked; the exit status for its final state."""
    try:
        if out.json:
            job = await client.wait(job_id, on_event=out.json_line)
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


async def _scan(client: ScanClient, args: argparse.Namespace, out: Output) -> int:
    response = await client.submit_scan(
        os.path.abspath(args.path),
        recursive=args.recursive,
        follow_symlinks=args.follow_symlinks,
        timeout=args.timeout,
        request_id=args.request_id,
        priority=args.priority,
        full=args.full,
        force=args.force,
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


async def _job(client: ScanClient, args: argparse.Namespace, out: Output) -> int:
    job = await client.get_job(args.job_id)
    if out.json:
        out.message(job)
    else:
        for text in display.job_details(job):
            out.line(text)
    return EXIT_OK


async def _errors(client: ScanClient, args: argparse.Namespace, out: Output) -> int:
    listed = client.list_file_errors(args.job_id, page_size=page_size(args.limit))
    taken = await take(listed, args.limit)
    return show_list(out, "fileErrors", taken, display.file_error_lines, "no file errors")


async def _watch(client: ScanClient, args: argparse.Namespace, out: Output) -> int:
    # A first plain call fails at once for an unknown job or a server that is not there;
    # watch_job would keep trying to reconnect to the latter.
    await client.get_job(args.job_id)
    return await _follow(client, args.job_id, out)


async def _cancel(client: ScanClient, args: argparse.Namespace, out: Output) -> int:
    job = await client.cancel_job(args.job_id)
    if out.json:
        out.message(job)
    else:
        out.line(f"job {job.job_id} {display.state_name(job.state)}: {job.path}")
    return EXIT_OK


async def _delete(client: ScanClient, args: argparse.Namespace, out: Output) -> int:
    await client.delete_job(args.job_id)
    out.line("{}" if out.json else f"job {args.job_id} deleted")
    return EXIT_OK


async def _jobs(client: ScanClient, args: argparse.Namespace, out: Output) -> int:
    state = _STATES[args.state] if args.state else None
    listed = client.list_jobs(state, page_size=page_size(args.limit))
    return show_list(out, "jobs", await take(listed, args.limit), display.jobs_table, "no jobs")


async def _videos(client: ScanClient, args: argparse.Namespace, out: Output) -> int:
    prefix = os.path.abspath(args.prefix) if args.prefix else ""
    listed = client.list_videos(
        prefix,
        page_size=page_size(args.limit),
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
        library=args.library,
    )
    taken = await take(listed, args.limit)
    nothing = "no videos" + _filters_text(prefix, args)
    return show_list(out, "videos", taken, display.videos_table, nothing)


async def _duplicates(client: ScanClient, args: argparse.Namespace, out: Output) -> int:
    prefix = os.path.abspath(args.prefix) if args.prefix else ""
    page = min(page_size(args.limit), 50 if args.confirm else 500)
    listed = client.list_duplicates(prefix, page, confirm=args.confirm)
    taken = await take(listed, args.limit)
    nothing = "no duplicates" + (f" under {prefix}" if prefix else "")
    return show_list(out, "groups", taken, display.duplicate_lines, nothing)


def _filters_text(prefix: str, args: argparse.Namespace) -> str:
    """` under /media/tv with codec h264 of at least 5m`: the filters of `videos`, as said."""
    words = [f" under {prefix}"] if prefix else []
    if args.library:
        words.append(f" in library {args.library}")
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


async def _video(client: ScanClient, args: argparse.Namespace, out: Output) -> int:
    if _VIDEO_ID_RE.fullmatch(args.video):
        video = await client.get_video(video_id=args.video)
    else:
        video = await client.get_video(path=os.path.abspath(args.video))
    if out.json:
        out.message(video)
    else:
        out.lines(display.video_details(video))
    return EXIT_OK


_COMMAND_TABLE = (
    Command(
        "scan", "submit a scan of a folder (and follow it with --watch)", _scan, _SCAN_ARGS, True
    ),
    Command("job", "show a job", _job, (_JOB_ID, json_arg())),
    Command(
        "errors",
        "list every file error of a job, in the order met",
        _errors,
        (_JOB_ID, limit_arg("errors", 0), json_arg()),
    ),
    Command(
        "watch",
        "follow a job until it ends, with a progress bar",
        _watch,
        (_JOB_ID, json_arg(f"print {_JSON_LINES_HELP}")),
        True,
    ),
    Command("cancel", "cancel a queued or running job", _cancel, (_JOB_ID, json_arg())),
    Command("delete", "forget a finished job", _delete, (_JOB_ID, json_arg())),
    Command(
        "jobs",
        "list jobs, newest first",
        _jobs,
        (
            arg("--state", choices=list(_STATES), help="only jobs in this state"),
            limit_arg("jobs", 50),
            json_arg(),
        ),
    ),
    Command(
        "videos", "list the videos of the library, by path or --order-by", _videos, _VIDEOS_ARGS
    ),
    Command("video", "show one video of the library, by id or by path", _video, _VIDEO_ARGS),
    Command(
        "duplicates",
        "list groups of identical videos (same content fingerprint)",
        _duplicates,
        _DUPLICATES_ARGS,
    ),
    LIBRARY,
)


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
    out = Output(getattr(args, "json", False))
    try:
        security = _security(args)
        client = ScanClient(target or DEFAULT_TARGET, **security)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    async with client:
        try:
            run: Runner = args.run
            return await run(client, args, out)
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
