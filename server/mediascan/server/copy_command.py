"""`mediascan-server copy-db --from FILE --to URL`: copy a server's SQLite database into an
empty PostgreSQL database (`store/copydb.py`), saying what it copied, how long that took and
the most memory it used. Exit status 0 once committed; 2 when the copy is refused (nothing
written); 1 when it failed on the way (rolled back: nothing written either)."""

from __future__ import annotations

import argparse
import asyncio
import resource
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import psycopg

from .engine.recorder import requeue_change
from .store.copydb import CopyCounts, CopyRefused, copy_database
from .store.postgres.database import is_database_url, redacted
from .store.protocol import SchemaTooNew

#: The subcommand's name: `mediascan-server copy-db ...`.
COMMAND = "copy-db"
_PROG = f"mediascan-server {COMMAND}"
#: How each table is named in the report.
_LABELS = {
    "jobs": "jobs",
    "job_events": "events",
    "file_errors": "file errors",
    "requests": "request ids",
    "videos": "videos",
    "libraries": "libraries",
    "library_changes": "library changes",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="Copy a mediascan SQLite database (jobs, their events and file errors, "
        "request ids, the library, the libraries with their change feeds) into an empty "
        "PostgreSQL database, in one transaction. "
        "Stop the server that uses the file first: the copy takes its lock. Jobs the file "
        "holds as RUNNING (a server that crashed) are copied QUEUED with their next attempt.",
        epilog="Exit status: 0 copied; 2 refused (the file in use, a database not empty or "
        "newer than this mediascan), nothing written; 1 failed on the way, rolled back.",
    )
    parser.add_argument(
        "--from",
        dest="source",
        metavar="FILE",
        required=True,
        type=Path,
        help="the SQLite database file (the --db of the server that used it)",
    )
    parser.add_argument(
        "--to",
        dest="target",
        metavar="URL",
        required=True,
        help="an empty PostgreSQL database, postgresql://USER@HOST:PORT/DBNAME; its schema "
        "is created (the password from PGPASSFILE or ~/.pgpass, not the URL)",
    )
    return parser


def run(argv: Sequence[str]) -> int:
    """Parse `argv` (after `copy-db`), copy, print the report; the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not is_database_url(args.target):
        parser.error("--to must be a PostgreSQL URL: postgresql://USER@HOST:PORT/DBNAME")
    where = redacted(args.target)
    print(f"copying {args.source} into {where}", flush=True)
    started = time.monotonic()
    try:
        counts = asyncio.run(
            copy_database(args.source, args.target, requeue=requeue_change, report=_report)
        )
    except (CopyRefused, SchemaTooNew) as exc:
        print(f"{_PROG}: refused, nothing was written: {exc}", file=sys.stderr)
        return 2
    except (psycopg.Error, sqlite3.Error, OSError) as exc:
        print(
            f"{_PROG}: the copy failed and was rolled back, nothing was written to {where}: "
            f"{_first_line(exc)}",
            file=sys.stderr,
        )
        return 1
    print(summary(counts, time.monotonic() - started, peak_memory()))
    return 0


def _report(table: str, rows: int) -> None:
    print(f"  {_LABELS[table]:<15} {rows:>12,}", flush=True)


def summary(counts: CopyCounts, seconds: float, peak: int) -> str:
    """The last lines of the report: jobs left to run, totals, time, rate and memory."""
    lines = [f"  {counts.queued:,} queued job(s) will run on the new database"]
    if counts.requeued:
        lines[0] += (
            f", {counts.requeued:,} of them left RUNNING by a server that stopped without "
            "saving them: queued again with their next attempt"
        )
    rate = counts.rows / seconds if seconds > 0 else 0.0
    lines.append(
        f"copied {counts.rows:,} rows in {seconds:.1f}s ({rate:,.0f} rows/s), "
        f"peak memory {peak / 2**20:.0f} MiB"
    )
    return "\n".join(lines)


def peak_memory() -> int:
    """The most memory this process has had resident, in bytes (VmHWM of /proc/self/status;
    getrusage where there is no /proc)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
