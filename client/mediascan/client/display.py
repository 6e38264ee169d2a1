"""How the command line shows jobs, videos and a job's progress: rich tables, a live progress bar
and plain-text summaries. Nothing here talks to the server."""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from types import TracebackType
from typing import Self

import grpc
from google.rpc import status_pb2  # type: ignore[import-untyped]
from rich import box
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
from rich.table import Table
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
    """`12 files: 10 added, 0 updated, 0 unchanged, 0 removed, 2 failed`."""
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
    return files + ": " + ", ".join(f"{n} {name}" for n, name in zip(counts, names, strict=True))


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


def file_error_line(error: scan_pb2.FileError) -> str:
    """`PATH: CODE message` (the `errors ID` command)."""
    return f"{error.path}: {status_line(error.status)}"


def progress_line(progress: scan_pb2.Progress) -> str:
    """`probing 12/40 files (30%)` (no phase once the job is over)."""
    total = str(progress.files_total) if progress.HasField("files_total") else "?"
    line = f"{progress.files_done}/{total} files"
    if progress.phase != scan_pb2.SCAN_PHASE_UNSPECIFIED:
        line = f"{phase_name(progress.phase)} {line}"
    if progress.HasField("files_total"):
        line += f" ({progress.fraction:.0%})"
    return line


def jobs_table(jobs: Iterable[scan_pb2.Job]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("JOB", no_wrap=True)
    table.add_column("STATE", no_wrap=True)
    table.add_column("CREATED", no_wrap=True)
    table.add_column("FILES", justify="right", no_wrap=True)
    table.add_column("FAILED", justify="right", no_wrap=True)
    table.add_column("DURATION", justify="right", no_wrap=True)
    table.add_column("PATH", overflow="fold")
    for job in jobs:
        progress = job.progress
        total = str(progress.files_total) if progress.HasField("files_total") else "?"
        duration = job_duration(job)
        table.add_row(
            job.job_id,
            state_name(job.state),
            _local(_time(job, "create_time")),
            f"{progress.files_done}/{total}",
            str(progress.failed),
            format_seconds(duration) if duration is not None else "-",
            Text(job.path),
        )
    return table


def videos_table(videos: Iterable[scan_pb2.Video]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("PATH", overflow="fold")
    table.add_column("DURATION", justify="right", no_wrap=True)
    table.add_column("RESOLUTION", justify="right", no_wrap=True)
    table.add_column("VIDEO", no_wrap=True)
    table.add_column("AUDIO", no_wrap=True)
    table.add_column("SIZE", justify="right", no_wrap=True)
    for video in videos:
        audio = video.audio_codec or "-"
        if video.audio_codec and video.audio_channels:
            audio += f" {video.audio_channels}ch"
        table.add_row(
            Text(video.path),
            format_seconds(video.duration.ToTimedelta().total_seconds()),
            f"{video.width}x{video.height}" if video.width else "-",
            video.video_codec or "-",
            audio,
            format_bytes(video.size_bytes),
        )
    return table


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
