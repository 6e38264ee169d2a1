"""Logging set-up: `text` (a human-readable line, structured fields appended as key=value) or
`json` (one JSON object per line, for log collectors), both on stderr.

Structured fields travel as `extra=` on the log call (`job_fields()` builds those of a job state
change) and come out as JSON keys or key=value pairs. No secret is ever logged: the server never
passes a token to a log call, and as a second line of defence the accepted tokens, and anything
that looks like an `authorization` value or a bearer token, are masked before a line is written.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import re
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any, TextIO

from mediascan.v1 import scan_pb2

from .errors import Code

#: The attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
_SECRET = re.compile(
    r"(?i)(\bbearer\s+|authorization[\"']?\s*[:=,]\s*[\"']?(?:(?:bearer|basic)\s+)?)"
    r"[^\s\"',;)\]}]+"
)
_MASK = r"\1[REDACTED]"
_BARE = re.compile(r"^[\w./:@+-]+$")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


#: Known secret values (the accepted tokens), masked wherever they appear.
_KNOWN: set[str] = set()


def register_secrets(values: Iterable[str]) -> None:
    """Mask these values in every log line from now on (security.py registers the tokens)."""
    _KNOWN.update(v for v in values if v)


def redact(text: str) -> str:
    """Mask known secrets, bearer tokens and authorization values in `text`."""
    for secret in _KNOWN:
        if secret in text:
            text = text.replace(secret, "[REDACTED]")
    return _SECRET.sub(_MASK, text)


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields a log call added with `extra=`."""
    return {
        k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")
    }


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message key=value ...`, secrets masked."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = extra_fields(record)
        if fields:
            line += " " + " ".join(f"{k}={_logfmt(v)}" for k, v in fields.items())
        return redact(line)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, the `extra=`
    fields, and `exception` with the traceback when there is one. Secrets masked."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            document.setdefault(key, value)
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        return redact(json.dumps(document, default=str, ensure_ascii=False))


def _logfmt(value: object) -> str:
    text = str(value)
    return text if text and _BARE.match(text) else json.dumps(text, ensure_ascii=False)


def configure_logging(level: str, fmt: str, stream: TextIO | None = None) -> None:
    """Send the root logger's records to `stream` (stderr) in `fmt` (`text` or `json`)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


#: Lines of one limited kind written per window at most (`LineLimiter`), and the window (s).
LOG_BURST = 10
LOG_WINDOW = 10.0


class LineLimiter:
    """Rate limit for log lines that callers can cause at will (refused calls, failed calls): at
    most `burst` lines per `window` seconds; the others are counted, not written, and one line
    at the window's end says how many were suppressed. The kind is fixed by the server, never
    taken from the request (a caller must not be able to make new kinds). Counting elsewhere
    (metrics) is not affected."""

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        *,
        burst: int = LOG_BURST,
        window: float = LOG_WINDOW,
    ) -> None:
        self._logger = logger
        self._what = what
        self._burst = burst
        self._window = window
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._written = 0
        self._suppressed = 0
        self._flush_due = False

    def log(self, level: int, msg: str, *args: object, exc_info: bool = False) -> None:
        """Write the line if the window has room left, else count it."""
        now = time.monotonic()
        with self._lock:
            summary = self._roll(now)
            write = self._written < self._burst
            if write:
                self._written += 1
            else:
                self._suppressed += 1
                schedule = not self._flush_due
                self._flush_due = True
        self._summarize(summary)
        if write:
            self._logger.log(level, msg, *args, exc_info=exc_info)
        elif schedule:
            self._schedule(self._window - (now - self._start))

    def flush(self) -> None:
        """Write the count of the lines suppressed so far now (at shutdown)."""
        with self._lock:
            summary = self._take(time.monotonic())
        self._summarize(summary)

    def _roll(self, now: float) -> tuple[int, float] | None:
        """Start a new window if this one is over; what it suppressed (count, length)."""
        if now - self._start < self._window:
            return None
        summary = self._take(now)
        self._start, self._written = now, 0
        return summary

    def _take(self, now: float) -> tuple[int, float] | None:
        count, self._suppressed, self._flush_due = self._suppressed, 0, False
        return (count, now - self._start) if count else None

    def _summarize(self, summary: tuple[int, float] | None) -> None:
        if summary is not None:
            count, seconds = summary
            self._logger.warning(
                "suppressed %d similar lines (%s) in the last %.1fs",
                count,
                self._what,
                seconds,
                extra={"suppressed": count, "kind": self._what},
            )

    def _schedule(self, delay: float) -> None:
        """Write the summary when the window ends, even if no other line comes."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # not on a loop: the next line of this kind (or flush) writes it
        loop.call_later(max(0.0, delay), self._due)

    def _due(self) -> None:
        now = time.monotonic()
        with self._lock:
            left = self._window - (now - self._start)
            summary = self._roll(now) if left <= 0 else None
        if left > 0:
            self._schedule(left)  # woken early
        self._summarize(summary)


#: Every LineLimiter, for `flush_limited`.
_LIMITERS: list[LineLimiter] = []


def limited(logger: logging.Logger, what: str) -> LineLimiter:
    """A LineLimiter for `logger`'s lines of one kind, flushed by `flush_limited`."""
    limiter = LineLimiter(logger, what)
    _LIMITERS.append(limiter)
    return limiter


def flush_limited() -> None:
    """Write the counts of every limiter's suppressed lines (at shutdown)."""
    for limiter in _LIMITERS:
        limiter.flush()


def job_fields(job: scan_pb2.Job) -> dict[str, object]:
    """The structured fields of a job state-change line: id, path, state, attempt and counts
    (the result's once the job is final, the progress so far before)."""
    counts: scan_pb2.ScanResult | scan_pb2.Progress = (
        job.result if job.HasField("result") else job.progress
    )
    files = job.result.files_total if job.HasField("result") else job.progress.files_done
    fields: dict[str, object] = {
        "job_id": job.job_id,
        "path": job.path,
        "state": scan_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_"),
        "attempt": job.attempt,
        "files": files,
        "added": counts.added,
        "updated": counts.updated,
        "unchanged": counts.unchanged,
        "moved": counts.moved,
        "removed": counts.removed,
        "failed": counts.failed,
    }
    if job.HasField("error"):
        fields["error"] = grpc_code_name(job.error.code)
        fields["error_message"] = job.error.message
    return fields


def grpc_code_name(code: int) -> str:
    try:
        return Code(code).name
    except ValueError:
        return str(code)
