"""Server configuration: command-line flags, each with a `MEDIASCAN_*` environment twin."""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path

from .videonames import parse_extensions

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Parse `30s`, `5m`, `1h`, `2d`, `250ms` or a bare number of seconds into seconds."""
    match = _DURATION_RE.match(text)
    if match is None:
        raise ValueError(f"invalid duration {text!r}: use a number with a unit, e.g. 30s, 5m, 1h")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]


def format_duration(seconds: float) -> str:
    """The shortest of `1h`, `5m`, `30s`, `1.5s` that reads back as `seconds`."""
    for unit in ("d", "h", "m", "s"):
        size = _UNIT_SECONDS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """Everything the server can be told. Defaults are the out-of-the-box values."""

    #: host:port to listen on; port 0 picks a free port.
    listen: str = "127.0.0.1:50051"
    #: The database: a SQLite file (a Path, created with its folder on first start), or a
    #: PostgreSQL URL `postgresql://user@host:port/dbname` (a str; `postgres://` too).
    db: Path | str = Path("var/mediascan.db")
    #: This server's name in jobs (`Job.node`), logs and the database; empty: `host:port`,
    #: the machine's host name and the port of --listen.
    node_name: str = ""
    #: Jobs that run at the same time; 0 (PostgreSQL only): a server that answers RPCs and
    #: runs no job.
    workers: int = 2
    #: How often a server with a free worker looks for queued jobs without being woken (a
    #: NOTIFY from the server that queued them, on PostgreSQL): the safety net (seconds).
    claim_recheck: float = 5.0
    #: PostgreSQL: how long a running job's lease lasts unless its server renews it (every
    #: third of it); a job whose lease passed is run again by another server (seconds).
    lease: float = 15.0
    #: Runs of a job that may die with their server (a crash, an expired lease) before the
    #: job ends FAILED instead of running again.
    max_attempts: int = 3
    #: Queued (not yet running) jobs beyond which SubmitScan answers RESOURCE_EXHAUSTED.
    max_queued: int = 1000
    #: Time limit of a job whose request names none (seconds).
    default_timeout: float = 300.0
    #: Upper bound of any job's time limit (seconds).
    max_timeout: float = 3600.0
    #: Folders under which scans are allowed (resolved at start); empty allows any folder.
    allow_roots: tuple[Path, ...] = ()
    #: The file name extensions scans take for videos: "" the default set (videonames.py),
    #: "mp4,mkv" only those, "+vid,+dv" the default set and those.
    extensions: str = ""
    #: A whole rescan of a folder with at least this many videos in the library lists the
    #: folder with GNU find, and walks in Python only the folders where something changed
    #: (`find_walk.py`); 0: never.
    find_walk_min: int = 20_000
    #: Longest wait for the database an RPC makes before it answers UNAVAILABLE (seconds).
    db_timeout: float = 5.0
    #: On SIGTERM/SIGINT, how long running jobs may go on before they are interrupted (seconds).
    shutdown_grace: float = 10.0
    #: How long finished jobs are kept before they are purged (seconds).
    retention: float = 7 * 86400.0
    #: Prober processes shared by all jobs.
    probe_workers: int = max(2, os.cpu_count() or 2)
    #: Files of one job handed to the probers at the same time.
    probe_concurrency: int = 16
    #: A probe taking longer than this is abandoned and the file reported (seconds).
    probe_timeout: float = 30.0
    #: Prober processes of their own for DECODE verifications (and whole-file hashes), so
    #: that they never take the probers ordinary probes need.
    verify_workers: int = 1
    #: A DECODE verification of a file may take this many times the video's duration, plus
    #: probe_timeout, before it is stopped.
    verify_time_ratio: float = 3.0
    #: Per-file errors kept in a job's result; past it the list is marked truncated.
    max_file_errors: int = 1000
    #: Events of a job kept for WatchJob resumes (per job, in memory and in the database).
    event_log_size: int = 10_000
    #: Most progress events per second and job (state changes are never coalesced).
    progress_rate: float = 10.0
    #: Most progress messages per second one job sends to all its watchers together: with more
    #: watchers than progress_fanout / progress_rate (50), each gets fewer progress events (at
    #: least one every 5 s), so that a crowd of watchers cannot take the CPU its scan needs.
    #: State changes are never held back; file errors come with the next progress event.
    progress_fanout: int = 500
    #: Bytes the server holds, across all WatchJob streams, for messages that clients have not
    #: read yet; past it the streams that would add more end with RESOURCE_EXHAUSTED.
    stream_buffer_budget: int = 64 * 1024 * 1024
    #: Python logging level name.
    log_level: str = "INFO"
    #: `text` (one human-readable line per record) or `json` (one JSON object per line).
    log_format: str = "text"
    #: PEM certificate chain of the server; with `tls_key`, the server speaks TLS only.
    tls_cert: Path | None = None
    #: PEM private key of `tls_cert`.
    tls_key: Path | None = None
    #: PEM CA bundle: when set, clients must present a certificate it signed (mutual TLS).
    tls_client_ca: Path | None = None
    #: File of bearer tokens, one per line; when set, every call but health checks needs one.
    auth_token_file: Path | None = None
    #: Listen on a non-loopback address without allowed roots or authentication anyway.
    insecure_allow_remote: bool = False
    #: host:port of the Prometheus metrics HTTP endpoint; empty: no metrics.
    metrics_listen: str = ""
    #: Most concurrent calls (streams) one client connection may have open.
    max_concurrent_streams: int = 1000
    #: Idle time after which the server pings a client to check the connection (seconds).
    keepalive_time: float = 60.0
    #: How long the server waits for the answer to a ping before closing the connection.
    keepalive_timeout: float = 20.0

    def __post_init__(self) -> None:
        if isinstance(self.db, str) and not self.db.startswith(DATABASE_URL_SCHEMES):
            object.__setattr__(self, "db", Path(self.db))  # a file named by a str
        checks: list[tuple[bool, str]] = [
            (self.workers >= 0, "--workers must not be negative"),
            (
                self.workers >= 1 or self.postgres,
                "--workers 0 (a server that runs no job) needs a database shared with servers "
                "that do: --db postgresql://...; on SQLite --workers must be at least 1",
            ),
            (self.claim_recheck > 0, "--claim-recheck must be positive"),
            (self.lease > 0, "--lease must be positive"),
            (self.max_attempts >= 1, "--max-attempts must be at least 1"),
            (self.max_queued >= 1, "--max-queued must be at least 1"),
            (self.default_timeout > 0, "--default-timeout must be positive"),
            (self.max_timeout > 0, "--max-timeout must be positive"),
            (self.shutdown_grace >= 0, "--shutdown-grace must not be negative"),
            (self.db_timeout > 0, "--db-timeout must be positive"),
            (self.find_walk_min >= 0, "--find-walk-min must not be negative"),
            (self.retention > 0, "--retention must be positive"),
            (self.probe_workers >= 1, "--probe-workers must be at least 1"),
            (self.probe_concurrency >= 1, "--probe-concurrency must be at least 1"),
            (self.probe_timeout > 0, "--probe-timeout must be positive"),
            (self.verify_workers >= 1, "--verify-workers must be at least 1"),
            (self.verify_time_ratio > 0, "--verify-time-ratio must be positive"),
            (self.max_file_errors >= 0, "--max-file-errors must not be negative"),
            (self.event_log_size >= 16, "--event-log-size must be at least 16"),
            (self.progress_rate > 0, "--progress-rate must be positive"),
            (self.progress_fanout >= 1, "--progress-fanout must be at least 1"),
            (
                self.stream_buffer_budget >= 1024 * 1024,
                "--stream-buffer-budget must be at least 1MiB",
            ),
            (self.log_format in LOG_FORMATS, "--log-format must be text or json"),
            (
                (self.tls_cert is None) == (self.tls_key is None),
                "--tls-cert and --tls-key go together: give both, or neither",
            ),
            (
                self.tls_client_ca is None or self.tls_cert is not None,
                "--tls-client-ca needs TLS: add --tls-cert and --tls-key",
            ),
            (self.max_concurrent_streams >= 1, "--max-concurrent-streams must be at least 1"),
            (self.keepalive_time >= 1, "--keepalive-time must be at least 1s"),
            (self.keepalive_timeout >= 1, "--keepalive-timeout must be at least 1s"),
            (
                not self.metrics_listen or _is_host_port(self.metrics_listen),
                "--metrics-listen must be HOST:PORT, e.g. 127.0.0.1:9464",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        try:
            parse_extensions(self.extensions)  # a bad value fails at start
        except ValueError as exc:
            raise ValueError(f"--extensions {exc}") from None

    @property
    def video_suffixes(self) -> frozenset[str]:
        """The suffixes (".mp4", ...) of the names scans take for videos (--extensions)."""
        return parse_extensions(self.extensions)

    @property
    def postgres(self) -> bool:
        """True when --db is a PostgreSQL URL."""
        return isinstance(self.db, str)

    @property
    def effective_node_name(self) -> str:
        """--node-name, or `host:port` (the host name and the port of --listen)."""
        if self.node_name:
            return self.node_name
        port = self.listen.rpartition(":")[2]
        return f"{socket.gethostname()}:{port}"

    @property
    def effective_default_timeout(self) -> float:
        return min(self.default_timeout, self.max_timeout)

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


LOG_FORMATS = ("text", "json")
#: How a --db value that is a PostgreSQL URL begins (anything else is a SQLite file).
DATABASE_URL_SCHEMES = ("postgresql://", "postgres://")


def split_host_port(address: str) -> tuple[str, int]:
    """`host:port`, `[v6]:port` or `:port` into host (brackets removed) and port."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{address!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def _is_host_port(address: str) -> bool:
    try:
        split_host_port(address)
    except ValueError:
        return False
    return True


@dataclasses.dataclass(frozen=True)
class _Flag:
    name: str  # the Config field
    help: str
    kind: str = "str"  # str | int | float | duration | path | db | paths | bool

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-").replace("allow-roots", "allow-root")

    @property
    def env(self) -> str:
        return "MEDIASCAN_" + self.name.upper()


_FLAGS = (
    _Flag("listen", "address to listen on, host:port (port 0 picks a free one)"),
    _Flag(
        "db",
        "SQLite database file (created on first start), or a PostgreSQL URL "
        "postgresql://USER@HOST:PORT/DBNAME",
        "db",
    ),
    _Flag("node_name", "this server's name in jobs (Job.node) and logs"),
    _Flag(
        "workers",
        "jobs that run at the same time (0, PostgreSQL only: answer RPCs, run no job)",
        "int",
    ),
    _Flag(
        "claim_recheck",
        "how often a free worker looks for queued jobs without a wake-up, e.g. 5s",
        "duration",
    ),
    _Flag(
        "lease",
        "PostgreSQL: a running job's lease, renewed every third of it; a job whose server "
        "stops renewing runs again elsewhere after it, e.g. 15s",
        "duration",
    ),
    _Flag(
        "max_attempts",
        "runs of a job that may die with their server before it ends FAILED",
        "int",
    ),
    _Flag("max_queued", "queued jobs beyond which submits get RESOURCE_EXHAUSTED", "int"),
    _Flag("default_timeout", "time limit of a job that names none, e.g. 5m", "duration"),
    _Flag("max_timeout", "upper bound of any job's time limit, e.g. 1h", "duration"),
    _Flag(
        "allow_roots",
        "folder under which scans are allowed; repeat for more (default: any folder); "
        "the environment twin takes a list separated by ':'",
        "paths",
    ),
    _Flag(
        "extensions",
        "file name extensions scans take for videos, separated by commas: mp4,mkv replaces "
        "the default set, +vid,+dv adds to it (case does not matter)",
    ),
    _Flag(
        "find_walk_min",
        "videos in the library below a rescanned folder from which GNU find lists it (0: never)",
        "int",
    ),
    _Flag("db_timeout", "longest wait for the database before UNAVAILABLE, e.g. 5s", "duration"),
    _Flag("shutdown_grace", "how long running jobs may finish on SIGTERM, e.g. 10s", "duration"),
    _Flag("retention", "how long finished jobs are kept, e.g. 7d", "duration"),
    _Flag("probe_workers", "prober processes shared by all jobs", "int"),
    _Flag("probe_concurrency", "files of one job handed to the probers at once", "int"),
    _Flag("probe_timeout", "per-file probe time limit, e.g. 30s", "duration"),
    _Flag(
        "verify_workers",
        "prober processes for DECODE verifications, apart from --probe-workers",
        "int",
    ),
    _Flag(
        "verify_time_ratio",
        "a DECODE verification may take this many times the video's duration, plus --probe-timeout",
        "float",
    ),
    _Flag("max_file_errors", "per-file errors kept in a job's result", "int"),
    _Flag("event_log_size", "events per job kept for WatchJob resumes", "int"),
    _Flag("progress_rate", "most progress events per second and job", "float"),
    _Flag(
        "progress_fanout",
        "most progress messages per second a job sends to all its watchers together",
        "int",
    ),
    _Flag(
        "stream_buffer_budget",
        "bytes held for WatchJob streams that do not read, all together, e.g. 64MiB",
        "size",
    ),
    _Flag("log_level", "DEBUG, INFO, WARNING or ERROR"),
    _Flag("log_format", "text, or json for one JSON object per line"),
    _Flag("tls_cert", "PEM certificate (chain) of the server: serve TLS only", "path"),
    _Flag("tls_key", "PEM private key of --tls-cert", "path"),
    _Flag(
        "tls_client_ca",
        "PEM CA certificates: require client certificates signed by them (mutual TLS)",
        "path",
    ),
    _Flag(
        "auth_token_file",
        "file of bearer tokens, one per line: every call but health checks needs one",
        "path",
    ),
    _Flag(
        "insecure_allow_remote",
        "listen on a non-loopback address even without --allow-root and authentication",
        "bool",
    ),
    _Flag("metrics_listen", "serve Prometheus metrics over HTTP on HOST:PORT (/metrics)"),
    _Flag("max_concurrent_streams", "most calls one client connection may have open", "int"),
    _Flag("keepalive_time", "ping a client after this long without traffic, e.g. 60s", "duration"),
    _Flag("keepalive_timeout", "close a connection whose ping is unanswered this long", "duration"),
)

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


_METAVARS = {
    "listen": "HOST:PORT",
    "metrics_listen": "HOST:PORT",
    "log_level": "LEVEL",
    "node_name": "NAME",
    "log_format": "FORMAT",
    "str": "VALUE",
    "int": "N",
    "float": "N",
    "duration": "DURATION",
    "path": "FILE",
    "db": "FILE|URL",
    "paths": "DIR",
    "size": "BYTES",
}

_SIZE_UNITS = {"": 1, "b": 1, "kib": 1024, "mib": 1024**2, "gib": 1024**3}


def parse_size(raw: str) -> int:
    """`65536`, `512KiB`, `64MiB`, `1GiB` -> bytes."""
    text = raw.strip()
    digits = text.rstrip("BbKkMmGgIi ")
    unit = text[len(digits) :].strip().lower()
    if not digits.isdigit() or unit not in _SIZE_UNITS:
        raise ValueError(f"expected a size such as 64MiB, 512KiB or 1048576, got {raw!r}")
    return int(digits) * _SIZE_UNITS[unit]


def format_size(size: int) -> str:
    for unit in ("GiB", "MiB", "KiB"):
        if size % _SIZE_UNITS[unit.lower()] == 0:
            return f"{size // _SIZE_UNITS[unit.lower()]}{unit}"
    return str(size)


def _convert(flag: _Flag, raw: str) -> object:
    if flag.kind == "int":
        return int(raw)
    if flag.kind == "float":
        return float(raw)
    if flag.kind == "duration":
        return parse_duration(raw)
    if flag.kind == "size":
        return parse_size(raw)
    if flag.kind == "path":
        return Path(raw)
    if flag.kind == "db":
        return raw if raw.startswith(DATABASE_URL_SCHEMES) else Path(raw)
    if flag.kind == "bool":
        if raw.strip().lower() in _TRUE:
            return True
        if raw.strip().lower() in _FALSE:
            return False
        raise ValueError(f"expected true or false, got {raw!r}")
    return raw


def build_parser() -> argparse.ArgumentParser:
    defaults = Config()
    parser = argparse.ArgumentParser(
        prog="mediascan-server",
        description="Serve the mediascan gRPC API: scan video folders as asynchronous jobs.",
        epilog="Every flag has an environment twin, e.g. --max-queued and MEDIASCAN_MAX_QUEUED; "
        "a flag given on the command line wins. Another command: mediascan-server copy-db "
        "--from FILE --to URL copies a SQLite database (jobs, events, the library) into an "
        "empty PostgreSQL database; mediascan-server copy-db --help says more.",
    )
    for flag in _FLAGS:
        default = getattr(defaults, flag.name)
        if flag.kind == "duration":
            shown = format_duration(default)
        elif flag.kind == "size":
            shown = format_size(default)
        elif flag.kind == "paths":
            shown = "any folder"
        elif flag.name == "node_name":
            shown = "HOSTNAME:PORT of --listen"
        elif default is None or default == "":
            shown = "none"
        else:
            shown = str(default)
        help = f"{flag.help} [env {flag.env}; default {shown}]"
        if flag.kind == "bool":
            parser.add_argument(
                flag.option, dest=flag.name, action="store_const", const="true", help=help
            )
            continue
        parser.add_argument(
            flag.option,
            dest=flag.name,
            action="append" if flag.kind == "paths" else "store",
            metavar=_METAVARS.get(flag.name) or _METAVARS[flag.kind],
            help=help,
        )
    return parser


def load_config(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Build a Config from flags, then environment twins, then defaults.

    Raises SystemExit (through argparse) with a message naming the flag when a value is invalid.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    env = os.environ if env is None else env
    values: dict[str, object] = {}
    for flag in _FLAGS:
        raw: object = getattr(args, flag.name)
        source = flag.option
        if raw is None and env.get(flag.env):
            raw = env[flag.env]
            source = flag.env
            if flag.kind == "paths":
                raw = [p for p in str(raw).split(os.pathsep) if p]
        if raw is None:
            continue
        try:
            if flag.kind == "paths":
                values[flag.name] = tuple(Path(p) for p in raw)  # type: ignore[attr-defined]
            else:
                values[flag.name] = _convert(flag, str(raw))
        except ValueError as exc:
            parser.error(f"{source}: {exc}")
    try:
        return Config(**values)  # type: ignore[arg-type]
    except ValueError as exc:
        parser.error(str(exc))
