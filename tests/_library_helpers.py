"""Helpers shared by the library tests (issue 3): scans, paged listings, fault injection, a
server subprocess without root's file-permission bypass, and the prober processes of this test
process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from mediascan.server import probe_pool
from mediascan.server.store import VideoRow
from mediascan.server.testing import event_job, final_job, make_video, wait_for_running
from mediascan.server.testing_prober import prober_command
from mediascan.v1 import scan_pb2, scan_pb2_grpc

QUEUED = scan_pb2.JOB_STATE_QUEUED
RUNNING = scan_pb2.JOB_STATE_RUNNING
SUCCEEDED = scan_pb2.JOB_STATE_SUCCEEDED
FAILED = scan_pb2.JOB_STATE_FAILED
TIMED_OUT = scan_pb2.JOB_STATE_TIMED_OUT
CANCELLED = scan_pb2.JOB_STATE_CANCELLED

#: The test prober (`mediascan.server.testing_prober`, see set_fault) hangs on any path
#: containing this text.
HANG_MARK = "HANG-ON-ME"
#: The test prober aborts on any path containing this text (set_fault(..., "crash", CRASH_MARK)).
CRASH_MARK = "CRASH-ON-ME"
#: --probe-timeout for tests where a hung probe must be killed quickly. Long enough for a fresh
#: prober process to import PyAV on a busy 2-core machine.
SHORT_PROBE_TIMEOUT = 2.0
#: --probe-timeout for tests where a hung probe must hold a worker until the test cancels it.
LONG_PROBE_TIMEOUT = 120.0
#: A short shutdown grace, so that servers holding a hung job stop quickly at teardown.
QUICK_STOP = {"shutdown_grace": 0.5}

LISTEN_LINE = re.compile(r"^mediascan-server listening on (?P<address>\S+:\d+)$")
BIN = Path(sys.executable).parent


def code_of(status: Any) -> grpc.StatusCode:
    """The grpc.StatusCode of a google.rpc.Status."""
    for code in grpc.StatusCode:
        if code.value[0] == status.code:
            return code
    raise AssertionError(f"unknown status code {status.code}")


def real(path: Path | str) -> str:
    """The path as the server reports it: absolute, no symlinks."""
    return os.path.realpath(path)


async def submit(stub: Any, path: Path | str, **fields: Any) -> Any:
    return await stub.SubmitScan(scan_pb2.SubmitScanRequest(path=str(path), **fields))


async def scan(stub: Any, path: Path | str, *, timeout: float = 60.0, **fields: Any) -> Any:
    """Submit a scan and return the terminal job."""
    response = await submit(stub, path, **fields)
    return await final_job(stub, response.job_id, timeout=timeout)


async def first_rescan(stub: Any, name: str = "lib", timeout: float = 120.0) -> Any:
    """The whole rescan (TRIGGER_WATCH) a server submits when it begins keeping library `name`,
    followed to its end. Call it once the library's status says it is watched or polled: the
    rescan is submitted before that status is stored."""
    jobs = (await stub.ListJobs(scan_pb2.ListJobsRequest(page_size=1000))).jobs
    whole = [
        job
        for job in jobs
        if job.library == f"libraries/{name}"
        and job.trigger == scan_pb2.TRIGGER_WATCH
        and not job.options.folders
        and not job.options.trees
    ]
    assert whole, [(job.job_id, job.library, job.trigger) for job in jobs]
    first = min(whole, key=lambda job: job.create_time.ToNanoseconds())
    return await final_job(stub, first.job_id, timeout=timeout)


async def get_job(stub: Any, job_id: str) -> Any:
    return await stub.GetJob(scan_pb2.GetJobRequest(job_id=job_id))


async def cancel(stub: Any, job_id: str) -> Any:
    return await stub.CancelJob(scan_pb2.CancelJobRequest(job_id=job_id))


async def all_videos(stub: Any, *, page_token: str = "", **fields: Any) -> list[Any]:
    """Every video of a ListVideos listing (from `page_token` on), following next_page_token
    to the end."""
    videos: list[Any] = []
    token = page_token
    for _ in range(100_000):
        page = await stub.ListVideos(scan_pb2.ListVideosRequest(page_token=token, **fields))
        videos.extend(page.videos)
        token = page.next_page_token
        if not token:
            return videos
    raise AssertionError("ListVideos never returned an empty next_page_token")


async def library(stub: Any, prefix: Path | str = "") -> dict[str, tuple[Any, ...]]:
    """The library below `prefix` as {path: what the probe found}, without the fields that
    name the scan that wrote it (job id, probe time, video id)."""
    videos = await all_videos(stub, path_prefix=str(prefix), page_size=1000)
    paths = [v.path for v in videos]
    assert len(paths) == len(set(paths)), f"a path is listed twice: {paths}"
    return {
        v.path: (
            v.size_bytes,
            v.modify_time.ToNanoseconds(),
            v.container,
            v.duration.ToNanoseconds(),
            v.video_codec,
            v.width,
            v.height,
            round(v.frame_rate, 6),
            v.audio_codec,
            v.audio_channels,
            v.audio_sample_rate,
            v.audio_streams,
        )
        for v in videos
    }


def errors_by_path(job: Any) -> dict[str, tuple[grpc.StatusCode, str]]:
    """The job's per-file errors as {path: (code, message)}."""
    return {e.path: (code_of(e.status), e.status.message) for e in job.result.file_errors}


def counts(job: Any) -> dict[str, int]:
    r = job.result
    return {
        "files_total": r.files_total,
        "added": r.added,
        "updated": r.updated,
        "unchanged": r.unchanged,
        "removed": r.removed,
        "failed": r.failed,
    }


def tiny_video(path: Path, **options: Any) -> Path:
    """A tiny real video (64x48, 0.2 s, no audio unless asked) at `path`."""
    settings: dict[str, Any] = {"width": 64, "height": 48, "seconds": 0.2}
    settings.update(options)
    make_video(path, **settings)
    return path


def copies(source: Path, targets: Iterable[Path]) -> list[Path]:
    """Copy `source` to every target (creating folders); returns the targets."""
    made = []
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        made.append(target)
    return made


@contextlib.contextmanager
def scratch_folder(fallback: Path) -> Iterator[Path]:
    """A folder for a tree of many files: in memory (/dev/shm) when the machine has it, where
    creating 20,000 files takes a fraction of a second even while other processes fsync the
    disk; else `fallback`. Removed afterwards."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK | os.X_OK)):
        yield fallback
        return
    folder = Path(tempfile.mkdtemp(prefix="mediascan-tree-", dir=shm))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def set_fault(monkeypatch: pytest.MonkeyPatch, kind: str, mark: str) -> None:
    """Make the probe pools of in-process servers started afterwards (in this test) run the
    test prober, which hangs or crashes on `mark` (the production prober has no fault hook)."""
    monkeypatch.setattr(probe_pool, "PROBER_COMMAND", tuple(prober_command(kind, mark)))


async def start_hung_blocker(stub: Any, folder: Path) -> str:
    """Scan a folder whose only video hangs its probe (the server must run with
    set_fault(..., "hang", HANG_MARK) and a long probe timeout): the job holds a worker until it is
    cancelled. Returns its id once it runs."""
    tiny_video(folder / f"{HANG_MARK}.mp4")
    response = await submit(stub, folder)
    await wait_for_running(stub, response.job_id)
    return str(response.job_id)


def _is_prober(cmdline: bytes) -> bool:
    args = cmdline.split(b"\0")
    return b"mediascan.server.probe" in args or (
        b"mediascan.server.testing_prober" in args and b"probe" in args
    )


def prober_pids() -> list[int]:
    """Live prober processes (`python -m mediascan.server.probe`, or the test prober of
    `mediascan.server.testing_prober`) that are children of this test process (the in-process
    servers' probe pools)."""
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        # Fields after the command name, which is in parentheses and may hold spaces.
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == me and state != "Z" and _is_prober(cmdline):
            found.append(int(entry))
    return found


async def wait_for_exit(pid: int, timeout: float) -> None:
    """Until process `pid` has exited (a pidfd becomes readable then: no polling)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return  # already gone
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[None] = loop.create_future()
    loop.add_reader(fd, lambda: exited.done() or exited.set_result(None))
    try:
        async with asyncio.timeout(timeout):
            await exited
    finally:
        loop.remove_reader(fd)
        os.close(fd)


def progress_of(event: Any) -> Any:
    """The progress an event shows: its own, or that of the job a snapshot or state change
    carries (a stream opened late starts with a snapshot of what was already published)."""
    if event.WhichOneof("kind") == "progress":
        return event.progress
    job = event_job(event)
    return None if job is None else job.progress


def walk_ended(event: Any) -> bool:
    """The event shows a job whose walk is over (files_total is known)."""
    progress = progress_of(event)
    return progress is not None and progress.HasField("files_total")


def can_drop_file_permission_bypass() -> bool:
    """Whether a child can run without root's CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH (through
    util-linux's setpriv), so that chmod 000 really locks it out."""
    if os.geteuid() != 0:
        return True  # not root: file permissions already apply
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return False
    probe = subprocess.run(
        [setpriv, *_DROP_BYPASS, "true"], capture_output=True, check=False, timeout=10
    )
    return probe.returncode == 0


_DROP_BYPASS = ("--bounding-set", "-dac_override,-dac_read_search")


@contextlib.asynccontextmanager
async def unprivileged_server(
    db: Path, *args: str
) -> AsyncIterator[tuple[scan_pb2_grpc.ScanServiceStub, subprocess.Popen[str]]]:
    """A `mediascan-server` subprocess that file permissions apply to even when the tests run
    as root (its capability bounding set lacks the permission bypasses), and a stub to it."""
    command = [str(BIN / "mediascan-server"), "--listen", "127.0.0.1:0", "--db", str(db), *args]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv is not None
        command = [setpriv, *_DROP_BYPASS, *command]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIASCAN_")}
    stderr_path = db.with_suffix(".stderr")
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
        )
    assert process.stdout is not None
    drain: threading.Thread | None = None
    channel: grpc.aio.Channel | None = None
    try:
        async with asyncio.timeout(15):
            line = await asyncio.to_thread(process.stdout.readline)
        match = LISTEN_LINE.match(line.rstrip("\n"))
        assert match, f"unexpected first line {line!r}; stderr:\n{stderr_path.read_text()}"
        drain = threading.Thread(target=_drain, args=(process.stdout,), daemon=True)
        drain.start()
        channel = grpc.aio.insecure_channel(match["address"])
        async with asyncio.timeout(15):
            await channel.channel_ready()
        yield scan_pb2_grpc.ScanServiceStub(channel), process
    finally:
        if channel is not None:
            await channel.close()
        if process.poll() is None:
            process.terminate()
            try:
                await asyncio.to_thread(process.wait, 20)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait, 10)
        if drain is not None:
            await asyncio.to_thread(drain.join, 10)


def _drain(stream: Any) -> None:
    with contextlib.suppress(ValueError, OSError):
        for _ in stream:
            pass
    with contextlib.suppress(OSError):
        stream.close()


def video_row(
    path: str, *, size: int, dev: int = 7, mtime_ns: int | None = None, job_id: str = "j_test"
) -> VideoRow:
    """A library row for `path` as a probe of a tiny H.264 MP4 would store it, written straight
    into a store (the time defaults to one derived from the size)."""
    return VideoRow(
        path=path,
        size_bytes=size,
        mtime_ns=1_700_000_000_123_456_789 + size if mtime_ns is None else mtime_ns,
        container="mov,mp4,m4a,3gp,3g2,mj2",
        duration_ns=200_000_000,
        bit_rate=1000,
        video_codec="h264",
        width=64,
        height=48,
        frame_rate=25.0,
        audio_codec="",
        audio_channels=0,
        audio_sample_rate=0,
        audio_streams=0,
        probe_ns=1,
        job_id=job_id,
        dev=dev,
    )
