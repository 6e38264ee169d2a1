"""Logging set-up: `text` (a human-readable line, structured fields appended as key=value) or
`json` (one JSON object per line, for log collectors), both on stderr.

Structured fields travel as `extra=` on the log call (`job_fields()` builds those of a job state
change) and come out as JSON keys or key=value pairs. No secret is ever logged: the server never
passes a token to a log call, and as a second line of defence the accepted tokens, and anything
that looks like an `authorization` value or a bearer token, are masked before a line is written.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import sys
from collections.abc import Iterable
from typing import Any, TextIO

import grpc

from mediascan.v1 import scan_pb2

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
        "removed": counts.removed,
        "failed": counts.failed,
    }
    if job.HasField("error"):
        fields["error"] = grpc_code_name(job.error.code)
        fields["error_message"] = job.error.message
    return fields


def grpc_code_name(code: int) -> str:
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return status.name
    return str(code)
