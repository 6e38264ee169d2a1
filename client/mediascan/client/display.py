"""How the command line shows jobs, videos and a job's progress: rich tables, a live progress bar
and plain-text summaries. Nothing here talks to the server."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Self

import grpc
from google.protobuf import timestamp_pb2
from google.rpc import status_pb2  # type: ignore[import-untyped]
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from mediascan.v1 import scan_pb2

#: File errors listed in a summary before "... and N more".
SUMMARY_FILE_ERRORS = 5
#: File errors printed above the live bar as they happen.
LIVE_FILE_ERRORS = 10

_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def state_name(state: int) -> str:
    """`JOB_STATE_SUCCEEDED` -> `SUCCEEDED`."""
    return scan_pb2.JobState.Name(state).removeprefix("JOB_STATE_")  # type: ignore[arg-type]


def phase_name(phase: int) -> str:
    """`SCAN_PHASE_PROBING` -> `probing`."""
    return scan_pb2.ScanPhase.Name(phase).removeprefix("SCAN_PHASE_").lower()  # type: ignore[arg-type]


def status_line(status: status_pb2.Status) -> str:
    """`NOT_FOUND: job "j_x" does not exist` for a google.rpc.Status."""
    code = _CODE_NAMES.get(status.code, str(status.code))
    return f"{code}: {status.message}" if status.message else code


def format_seconds(seconds: float) -> str:
    """`850ms`, `12.3s`, `4m05s`, `2h03m`."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s" if secs else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"


def format_bytes(size: int) -> str:
    """`512 B`, `1.5 MB`, `3.2 GB` (powers of 1000, as file managers show them)."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def _time(job: scan_pb2.Job, field: str) -> datetime.datetime | None:
    if not job.HasField(field):  # type: ignore[arg-type]
        return None
    value: datetime.datetime = getattr(job, field).ToDatetime(tzinfo=datetime.UTC)
    return value


def job_duration(job: scan_pb2.Job) -> float | None:
    """Seconds from start to end (or to now for a running job); None if the job never started."""
    start = _time(job, "start_time")
    if start is None:
        return None
    end = _time(job, "end_time") or datetime.datetime.now(datetime.UTC)
    return max(0.0, (end - start).total_seconds())


def _local(moment: datetime.datetime | None) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def counts_line(job: scan_pb2.Job) -> str:
    """`12 files: 10 added, 0 updated, 0 unchanged, 0 removed, 2 failed` (with `N moved`
    before `failed`, and `N deferred` last, when there are any)."""
    if job.HasField("result"):
        result = job.result
        total: int | None = result.files_total
        counts = (result.added, result.updated, result.unchanged, result.removed, result.failed)
    else:
        progress = job.progress
        total = progress.files_total if progress.HasField("files_total") else None
        counts = (
            progress.added,
            progress.updated,
            progress.unchanged,
            progress.removed,
            progress.failed,
        )
    names = ("added", "updated", "unchanged", "removed", "failed")
    files = f"{total} files" if total is not None else f"{job.progress.files_done} files so far"
    words = [f"{n} {name}" for n, name in zip(counts, names, strict=True)]
    state = job.result if job.HasField("result") else job.progress
    if state.moved:
        words.insert(4, f"{state.moved} moved")
    if state.deferred:  # still being written (a library's quiet window): not probed yet
        words.append(f"{state.deferred} deferred")
    return files + ": " + ", ".join(words)


def summary_lines(job: scan_pb2.Job) -> list[str]:
    """A plain-text summary of a job: state, counts, duration, error and the first file errors."""
    duration = job_duration(job)
    took = f" in {format_seconds(duration)}" if duration is not None else ""
    lines = [f"job {job.job_id} {state_name(job.state)}{took}: {job.path}", "  " + counts_line(job)]
    if job.HasField("error"):
        lines.append("  error: " + status_line(job.error))
    errors = list(job.result.file_errors)
    failed = max(job.result.failed, job.result.file_error_count, len(errors))
    if errors:
        lines.append(f"  file errors ({failed}):")
        lines.extend(
            f"    {error.path}: {status_line(error.status)}"
            for error in errors[:SUMMARY_FILE_ERRORS]
        )
        if failed > SUMMARY_FILE_ERRORS:
            lines.append(
                f"    ... and {failed - SUMMARY_FILE_ERRORS} more"
                f" (see them all with: mediascan errors {job.job_id})"
            )
    return lines


def job_details(job: scan_pb2.Job) -> list[str]:
    """Lines describing one job (the `job ID` command): `key  value`, aligned."""
    options = job.options
    flags = [
        "recursive" if options.recursive else "not recursive",
        *(["follow symlinks"] if options.follow_symlinks else []),
        *(["full"] if options.full else []),
        f"timeout {format_seconds(options.timeout.ToTimedelta().total_seconds())}",
        f"priority {options.priority}",
    ]
    rows = [
        ("job", job.job_id),
        ("state", f"{state_name(job.state)} (attempt {job.attempt})"),
        ("path", job.path),
        ("options", ", ".join(flags)),
        ("progress", progress_line(job.progress)),
        ("counts", counts_line(job)),
        ("created", _local(_time(job, "create_time"))),
        ("started", _local(_time(job, "start_time"))),
        ("ended", _local(_time(job, "end_time"))),
    ]
    duration = job_duration(job)
    if duration is not None:
        rows.append(("duration", format_seconds(duration)))
    if job.HasField("error"):
        rows.append(("error", status_line(job.error)))
    if job.request_id:
        rows.append(("request id", job.request_id))
    errors = job.result.file_errors
    rows.extend(
        ("file error", f"{error.path}: {status_line(error.status)}")
        for error in errors[:SUMMARY_FILE_ERRORS]
    )
    if len(errors) > SUMMARY_FILE_ERRORS or job.result.file_errors_truncated:
        shown = min(len(errors), SUMMARY_FILE_ERRORS)
        total = max(job.result.failed, job.result.file_error_count, len(errors))
        rows.append(("", f"... and {total - shown} more (mediascan errors {job.job_id})"))
    width = max(len(key) for key, _ in rows)
    return [f"{key:<{width}}  {value}".rstrip() for key, value in rows]


def file_error_lines(errors: list[scan_pb2.FileError], width: int | None = None) -> list[str]:
    """`PATH: CODE message`, one line a file error (the `errors ID` command; never folded)."""
    return [f"{error.path}: {status_line(error.status)}" for error in errors]


def progress_line(progress: scan_pb2.Progress) -> str:
    """`probing 12/40 files (30%)` (no phase once the job is over)."""
    total = str(progress.files_total) if progress.HasField("files_total") else "?"
    line = f"{progress.files_done}/{total} files"
    if progress.phase != scan_pb2.SCAN_PHASE_UNSPECIFIED:
        line = f"{phase_name(progress.phase)} {line}"
    if progress.HasField("files_total"):
        line += f" ({progress.fraction:.0%})"
    return line


@dataclasses.dataclass(frozen=True)
class Column:
    """A column of `table_lines`: its header, right-justified or not, and whether it is the
    column that folds (breaks its values over several lines) when the table is too wide."""

    header: str
    right: bool = False
    fold: bool = False


#: Between two columns.
_GAP = "   "
#: A folding column keeps at least this many characters a line.
_MIN_FOLD = 16


def table_lines(
    columns: Sequence[Column], rows: Iterable[Sequence[str]], width: int | None = None
) -> list[str]:
    """A plain-text table: the header, a rule and one line a row (more where the folding column
    must break a value to keep the table within `width`; None never folds).

    Plain string work, a few microseconds a row: a table of 50,000 videos takes well under a
    second, where a rich `Table` (which measures and renders every cell as a renderable) takes
    about 20 s."""
    cells = [list(row) for row in rows]
    widths = [len(column.header) for column in columns]
    for row in cells:
        widths = [max(w, len(value)) for w, value in zip(widths, row, strict=True)]
    fold = next((i for i, column in enumerate(columns) if column.fold), None)
    total = sum(widths) + len(_GAP) * (len(columns) - 1)
    if width is not None and fold is not None and total > width:
        widths[fold] = max(_MIN_FOLD, len(columns[fold].header), widths[fold] - (total - width))
    lines = [_table_line(columns, widths, [c.header for c in columns])]
    lines.append("─" * (sum(widths) + len(_GAP) * (len(columns) - 1)))
    for row in cells:
        if fold is None or len(row[fold]) <= widths[fold]:
            lines.append(_table_line(columns, widths, row))
            continue
        size = widths[fold]
        for start in range(0, len(row[fold]), size):
            part = ["" for _ in row] if start else list(row)
            part[fold] = row[fold][start : start + size]
            lines.append(_table_line(columns, widths, part))
    return lines


def _table_line(columns: Sequence[Column], widths: Sequence[int], values: Sequence[str]) -> str:
    return _GAP.join(
        value.rjust(width) if column.right else value.ljust(width)
        for column, width, value in zip(columns, widths, values, strict=True)
    ).rstrip()


_JOB_COLUMNS = (
    Column("JOB"),
    Column("STATE"),
    Column("CREATED"),
    Column("FILES", right=True),
    Column("FAILED", right=True),
    Column("DURATION", right=True),
    Column("PATH", fold=True),
)


def jobs_table(jobs: Iterable[scan_pb2.Job], width: int | None = None) -> list[str]:
    """The lines of the `jobs` table (see `table_lines` for `width`)."""
    rows = []
    for job in jobs:
        progress = job.progress
        total = str(progress.files_total) if progress.HasField("files_total") else "?"
        duration = job_duration(job)
        rows.append(
            (
                job.job_id,
                state_name(job.state),
                _local(_time(job, "create_time")),
                f"{progress.files_done}/{total}",
                str(progress.failed),
                format_seconds(duration) if duration is not None else "-",
                job.path,
            )
        )
    return table_lines(_JOB_COLUMNS, rows, width)


_VIDEO_COLUMNS = (
    Column("PATH", fold=True),
    Column("DURATION", right=True),
    Column("RESOLUTION", right=True),
    Column("VIDEO"),
    Column("AUDIO"),
    Column("SIZE", right=True),
)


def _audio(video: scan_pb2.Video) -> str:
    """`aac 2ch`, `aac`, or `-` without audio."""
    audio = video.audio_codec or "-"
    if video.audio_codec and video.audio_channels:
        audio += f" {video.audio_channels}ch"
    return audio


def _resolution(video: scan_pb2.Video) -> str:
    return f"{video.width}x{video.height}" if video.width else "-"


def _video_duration(video: scan_pb2.Video) -> str:
    return format_seconds(video.duration.ToTimedelta().total_seconds())


def videos_table(videos: Iterable[scan_pb2.Video], width: int | None = None) -> list[str]:
    """The lines of the `videos` table (see `table_lines` for `width`)."""
    rows = (
        (
            video.path,
            _video_duration(video),
            _resolution(video),
            video.video_codec or "-",
            _audio(video),
            format_bytes(video.size_bytes),
        )
        for video in videos
    )
    return table_lines(_VIDEO_COLUMNS, rows, width)


def video_details(video: scan_pb2.Video) -> list[str]:
    """Lines describing one video (the `video ID|PATH` command): `key  value`, aligned."""
    picture = _resolution(video)
    if video.frame_rate:
        picture += f" at {video.frame_rate:.3g} fps"
    audio = _audio(video)
    if video.audio_sample_rate:
        audio += f", {video.audio_sample_rate} Hz"
    if video.audio_streams > 1:
        audio += f" ({video.audio_streams} audio streams)"
    rows = [
        ("video", video.video_id),
        ("path", video.path),
        ("size", f"{format_bytes(video.size_bytes)} ({video.size_bytes} bytes)"),
        ("modified", format_time(video.modify_time)),
        ("container", video.container or "-"),
        ("duration", _video_duration(video)),
        ("bit rate", f"{video.bit_rate / 1000:.0f} kb/s" if video.bit_rate else "-"),
        ("video codec", video.video_codec or "-"),
        ("picture", picture),
        ("audio", audio),
        ("probed", format_time(video.probe_time)),
        ("by job", video.job_id or "-"),
        ("fingerprint", video.fingerprint or "-"),
        ("health", _health(video)),
    ]
    width = max(len(key) for key, _ in rows)
    return [f"{key:<{width}}  {value}" for key, value in rows]


_HEALTH_NAMES = {
    scan_pb2.HEALTH_OK: "ok",
    scan_pb2.HEALTH_WARNINGS: "warnings",
    scan_pb2.HEALTH_CORRUPT: "corrupt",
}


def _health(video: scan_pb2.Video) -> str:
    """`not verified`, `ok (verified 2026-...)`, `warnings: 3 decoding errors, the first at
    1.5s: [aac] ...`."""
    name = _HEALTH_NAMES.get(video.health)
    if name is None:
        return "not verified (scan with --verify decode)"
    report = video.health_report
    when = f" (verified {format_time(report.verify_time)})"
    if not report.error_count:
        return name + when
    where = ""
    if report.HasField("first_error_at"):
        where = (
            f", the first at {format_seconds(report.first_error_at.ToTimedelta().total_seconds())}"
        )
    first = f": {report.messages[0]}" if report.messages else ""
    return f"{name}: {report.error_count} decoding errors{where}{first}{when}"


def duplicate_lines(groups: list[scan_pb2.DuplicateGroup], width: int | None = None) -> list[str]:
    """Each group: a line with its fingerprint, size and count, then its files indented."""
    lines: list[str] = []
    for group in groups:
        confirmed = " (confirmed identical)" if group.confirmed else ""
        lines.append(
            f"{group.fingerprint}  {group.file_count} files of "
            f"{format_bytes(group.size_bytes)}{confirmed}"
        )
        for file in group.files:
            note = f"  ({file.error})" if file.error else ""
            lines.append(f"  {file.path}{note}")
        if group.file_count > len(group.files):
            lines.append(f"  ... and {group.file_count - len(group.files)} more")
    return lines


def format_time(stamp: timestamp_pb2.Timestamp) -> str:
    """`2026-12-02 16:54:33` in local time; `-` when unset."""
    return _local(_stamp(stamp))


def _stamp(stamp: timestamp_pb2.Timestamp) -> datetime.datetime | None:
    if not stamp.seconds and not stamp.nanos:
        return None
    return stamp.ToDatetime(tzinfo=datetime.UTC)


class _FilesPerSecondColumn(ProgressColumn):
    """`85.3 files/s`, from rich's speed estimate."""

    def render(self, task: Task) -> Text:
        speed = task.speed
        return Text(
            f"{speed:.1f} files/s" if speed is not None else "", style="progress.data.speed"
        )


class LiveProgress:
    """A live progress bar that follows a job's events (use as a context manager).

    Shows the state or phase, the bar (a pulsing one while the number of files is unknown), files
    done of total, files/s and the time remaining. File errors are printed above the bar.
    """

    def __init__(self, console: Console) -> None:
        self._console = console
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description:<11}"),
            BarColumn(),
            MofNCompleteColumn(),
            _FilesPerSecondColumn(),
            TimeRemainingColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[failed]}", style="red"),
            console=console,
            transient=True,
        )
        self._task: TaskID | None = None
        self._total_known = False
        self._state = "connecting"
        self._errors_shown = 0

    def __enter__(self) -> Self:
        self._progress.start()
        self._task = self._progress.add_task(self._state, total=None, failed="")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def update(self, event: scan_pb2.JobEvent) -> None:
        """Show what `event` says about the job."""
        kind = event.WhichOneof("kind")
        if kind == "snapshot":
            self._show_job(event.snapshot.job)
        elif kind == "state_change":
            self._show_job(event.state_change.job)
        elif kind == "progress":
            self._show_progress(event.progress)
        elif kind == "file_error":
            self._show_file_error(event.file_error)

    def _show_job(self, job: scan_pb2.Job) -> None:
        self._state = state_name(job.state).lower()
        self._show_progress(job.progress)

    def _show_progress(self, progress: scan_pb2.Progress) -> None:
        assert self._task is not None, "use LiveProgress as a context manager"
        description = self._state
        if self._state == "running" and progress.phase != scan_pb2.SCAN_PHASE_UNSPECIFIED:
            description = phase_name(progress.phase)
        failed = f"{progress.failed} failed" if progress.failed else ""
        if progress.HasField("files_total"):
            self._total_known = True
            self._progress.update(
                self._task,
                total=progress.files_total,
                completed=progress.files_done,
                description=description,
                failed=failed,
            )
        else:
            if self._total_known:  # a restarted attempt: the total is unknown again
                self._progress.remove_task(self._task)
                self._task = self._progress.add_task(description, total=None, failed=failed)
                self._total_known = False
            self._progress.update(
                self._task, completed=progress.files_done, description=description, failed=failed
            )

    def _show_file_error(self, error: scan_pb2.FileError) -> None:
        self._errors_shown += 1
        if self._errors_shown <= LIVE_FILE_ERRORS:
            self._progress.console.print(
                f"[red]x[/red] {escape(error.path)}: {escape(status_line(error.status))}",
                highlight=False,
                soft_wrap=True,
            )
        elif self._errors_shown == LIVE_FILE_ERRORS + 1:
            self._progress.console.print("[red]x[/red] ... (more file errors in the summary)")
