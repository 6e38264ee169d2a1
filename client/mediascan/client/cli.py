"""The `mediascan` command line: submit scans, follow jobs and list the library.

Every subcommand takes `--server ADDR` (or `MEDIASCAN_SERVER`), `--json`, and the security options
`--token` (or `MEDIASCAN_TOKEN`), `--tls-ca`, `--tls-cert`/`--tls-key`. See `EXIT_CODES_HELP` for
what the exit status means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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

# Wide enough that tables and paths are not wrapped when the output goes to a file or a pipe.
_PIPE_WIDTH = 1000

_T = TypeVar("_T")


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


def build_parser() -> argparse.ArgumentParser:
    # The global options sit on a parent parser shared by every subcommand, so they work before
    # and after it. SUPPRESS keeps a subcommand's default from hiding a value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--server",
        metavar="ADDR",
        default=argparse.SUPPRESS,
        help=f"server address host:port (env MEDIASCAN_SERVER, default {DEFAULT_TARGET})",
    )
    common.add_argument(
        "--token",
        metavar="TOKEN",
        default=argparse.SUPPRESS,
        help="bearer token for a server started with --auth-token-file (env MEDIASCAN_TOKEN, "
        "which unlike the flag other users cannot see in the process list)",
    )
    common.add_argument(
        "--token-file",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="read the bearer token from the first line of FILE",
    )
    common.add_argument(
        "--tls-ca",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="connect with TLS, trusting the CA certificate(s) in this PEM file "
        "(env MEDIASCAN_TLS_CA)",
    )
    common.add_argument(
        "--tls",
        action="store_true",
        default=argparse.SUPPRESS,
        help="connect with TLS, trusting the system's CA certificates",
    )
    common.add_argument(
        "--tls-cert",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="client certificate (PEM) for a server that requires one (mutual TLS)",
    )
    common.add_argument(
        "--tls-key",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="private key (PEM) of --tls-cert",
    )
    common.add_argument(
        "--tls-server-name",
        metavar="NAME",
        default=argparse.SUPPRESS,
        help="expect this name in the server's certificate instead of the host of --server",
    )
    common.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print JSON (lowerCamelCase field names, the proto3 JSON mapping grpcurl prints); "
        "watch prints one event per line",
    )

    parser = argparse.ArgumentParser(
        prog="mediascan",
        description="Scan video folders with a mediascan server, follow the jobs and list the "
        "videos they found.",
        parents=[common],
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {importlib.metadata.version('mediascan')}"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help: str, epilog: str | None = None) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            help=help,
            description=help,
            parents=[common],
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    scan = command(
        "scan",
        "submit a scan of a folder (and follow it with --watch)",
        EXIT_CODES_HELP,
    )
    scan.add_argument("path", metavar="PATH", help="folder to scan (relative to here, or absolute)")
    scan.add_argument(
        "--watch", action="store_true", help="follow the job until it ends, with a progress bar"
    )
    scan.add_argument(
        "--timeout",
        type=parse_duration,
        metavar="DURATION",
        help="time limit of the whole scan, e.g. 30s, 5m, 1h (default: the server's)",
    )
    scan.add_argument(
        "--no-recursive",
        dest="recursive",
        action="store_false",
        help="do not descend into subfolders",
    )
    scan.add_argument("--follow-symlinks", action="store_true", help="follow symbolic links")
    scan.add_argument(
        "--full", action="store_true", help="probe every file again, even unchanged ones"
    )
    scan.add_argument(
        "--priority", type=int, default=0, metavar="N", help="-100..100, higher runs first"
    )
    scan.add_argument(
        "--request-id",
        metavar="ID",
        help="idempotency key: a repeat with the same ID returns the first job",
    )

    job = command("job", "show a job")
    job.add_argument("job_id", metavar="ID")

    errors = command("errors", "list every file error of a job, in the order met")
    errors.add_argument("job_id", metavar="ID")
    errors.add_argument(
        "--limit", type=_non_negative, default=0, metavar="N", help="at most N errors (0: all)"
    )

    watch = command("watch", "follow a job until it ends, with a progress bar", EXIT_CODES_HELP)
    watch.add_argument("job_id", metavar="ID")

    cancel = command("cancel", "cancel a queued or running job")
    cancel.add_argument("job_id", metavar="ID")

    delete = command("delete", "forget a finished job")
    delete.add_argument("job_id", metavar="ID")

    jobs = command("jobs", "list jobs, newest first")
    jobs.add_argument("--state", choices=list(_STATES), help="only jobs in this state")
    jobs.add_argument(
        "--limit", type=_non_negative, default=50, metavar="N", help="at most N jobs (0: all)"
    )

    videos = command("videos", "list the videos of the library, by path")
    videos.add_argument("--prefix", metavar="P", default="", help="only videos under folder P")
    videos.add_argument(
        "--limit", type=_non_negative, default=100, metavar="N", help="at most N videos (0: all)"
    )
    return parser


class _Output:
    """Where and how results are printed: JSON or rich text, with or without a live bar."""

    def __init__(self, as_json: bool) -> None:
        self.json = as_json
        console = Console(highlight=False)
        self.live = console.is_terminal
        self.console = console if self.live else Console(highlight=False, width=_PIPE_WIDTH)

    def line(self, text: str) -> None:
        print(text, flush=True)

    def message(self, message: Message) -> None:
        self.line(json_format.MessageToJson(message))

    def messages(self, key: str, messages: Sequence[Message]) -> None:
        document = {key: [json_format.MessageToDict(message) for message in messages]}
        self.line(json.dumps(document, indent=2))

    def event(self, event: scan_pb2.JobEvent) -> None:
        self.line(json.dumps(json_format.MessageToDict(event)))


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
    errors, more = await _take(
        client.list_file_errors(args.job_id, page_size=_page_size(args.limit)), args.limit
    )
    if out.json:
        out.messages("fileErrors", errors)
        return EXIT_OK
    for error in errors:
        out.line(display.file_error_line(error))
    if not errors:
        print("no file errors", file=sys.stderr)
    if more:
        print(f"(the first {args.limit} errors; --limit 0 lists all)", file=sys.stderr)
    return EXIT_OK


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
    jobs, more = await _take(client.list_jobs(state, page_size=_page_size(args.limit)), args.limit)
    if out.json:
        out.messages("jobs", jobs)
        return EXIT_OK
    if jobs:
        out.console.print(display.jobs_table(jobs))
    else:
        print("no jobs", file=sys.stderr)
    if more:
        print(f"(the first {args.limit} jobs; --limit 0 lists all)", file=sys.stderr)
    return EXIT_OK


async def _videos(client: ScanClient, args: argparse.Namespace, out: _Output) -> int:
    prefix = os.path.abspath(args.prefix) if args.prefix else ""
    videos, more = await _take(
        client.list_videos(prefix, page_size=_page_size(args.limit)), args.limit
    )
    if out.json:
        out.messages("videos", videos)
        return EXIT_OK
    if videos:
        out.console.print(display.videos_table(videos))
    else:
        print("no videos" + (f" under {prefix}" if prefix else ""), file=sys.stderr)
    if more:
        print(f"(the first {args.limit} videos; --limit 0 lists all)", file=sys.stderr)
    return EXIT_OK


_Command = Callable[[ScanClient, argparse.Namespace, _Output], Awaitable[int]]

_COMMANDS: dict[str, _Command] = {
    "scan": _scan,
    "job": _job,
    "errors": _errors,
    "watch": _watch,
    "cancel": _cancel,
    "delete": _delete,
    "jobs": _jobs,
    "videos": _videos,
}


def _unreachable(error: MediascanError, client: ScanClient) -> bool:
    """True when the error comes from failing to connect, not from the server's answer."""
    if error.code != grpc.StatusCode.UNAVAILABLE:
        return False
    state = client.channel.get_state(try_to_connect=False)
    return state == grpc.ChannelConnectivity.TRANSIENT_FAILURE or error.message.startswith(
        ("failed to connect to all addresses", "DNS resolution failed", "errors resolving")
    )


def _tls_failure(error: MediascanError) -> bool:
    text = error.message.lower()
    return any(word in text for word in ("ssl", "tls", "handshake", "certificate"))


def _report(error: MediascanError, client: ScanClient) -> None:
    if _unreachable(error, client) and _tls_failure(error):
        print(
            f"error: no secure connection to {client.target}: {error.message}\n"
            "  check --tls-ca (the CA of the server's certificate), --tls-cert/--tls-key (if "
            "the server requires a client certificate) and --tls-server-name",
            file=sys.stderr,
        )
        return
    if _unreachable(error, client):
        print(
            f"error: cannot reach the mediascan server at {client.target} "
            "(is it running? start it with 'make run')",
            file=sys.stderr,
        )
        return
    print(f"error: {error.code.name}: {error.message}", file=sys.stderr)
    for field, description in error.field_violations:
        if f"{field}: {description}" not in error.message:  # else it would say it twice
            print(f"  {field}: {description}", file=sys.stderr)
    if error.retry_delay is not None:
        print(f"  retry in {display.format_seconds(error.retry_delay)}", file=sys.stderr)


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
        client = ScanClient(target or DEFAULT_TARGET, **_security(args))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    async with client:
        try:
            return await _COMMANDS[args.command](client, args, out)
        except MediascanError as error:
            _report(error, client)
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
