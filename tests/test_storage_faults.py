"""Storage faults (issue 5.6): the database locked by another process that holds a write
transaction, the disk full (for good, or for one second during a scan), and the database file
removed under a running `mediascan-server`.

Each fault must give a clear error (UNAVAILABLE or INTERNAL with a reason that names the
database), never a crash, never a corrupt file (SQLite's integrity check), and the server must
recover when the fault goes away: new scans succeed, and a job that was running or ending during
the fault reaches a terminal state that GetJob and WatchJob agree on.

The disk is a 4 MiB tmpfs filled with a ballast file (mounted here, as root); where mounting is
refused, the server's RLIMIT_FSIZE is lowered to the size of its write-ahead log instead (with
prlimit, which can raise it again: that is the fault going away). Set
MEDIASCAN_TEST_DISK=rlimit to use the latter.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import os
import resource
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from _robust import (
    CANCELLED,
    FAILED,
    SUCCEEDED,
    TERMINAL_STATES,
    Launcher,
    ServerProcess,
    channel_to,
    check_database_copy,
    hang_env,
    hung_folder,
    launch_fixture,  # noqa: F401 - provides the `launch` fixture
    record_figures,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mediascan.server.testing import (
    final_job,
    make_many,
    wait_for_progress,
    wait_for_running,
    watch_events,
)
from mediascan.v1 import scan_pb2

#: SQLite's busy timeout in the server (store.py): how long a write waits for a lock.
BUSY_TIMEOUT = 5.0
#: How long a write may take to fail while the fault lasts: the busy timeout, twice (a write
#: can queue behind a batch that is itself waiting), plus slack.
FAIL_WITHIN = 2 * BUSY_TIMEOUT + 3.0
#: A full disk fails a write at once: how long a running scan is watched for its end while the
#: disk is full (it may also wait for space; either is fine).
DISK_FAIL_WITHIN = 5.0
#: How long a job may take to reach its terminal state once the fault is gone.
RECOVER_WITHIN = 10.0
FAULT_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL)

LOCK_HOLDER = r"""
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("BEGIN IMMEDIATE")
conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('held-by-a-test', 'yes')")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
conn.close()
print("released", flush=True)
"""


@contextlib.contextmanager
def write_lock(db: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holds a write transaction on `db` until the block ends."""
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdin is not None and holder.stdout is not None
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield holder
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "released"
        assert holder.wait(10) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)
        holder.stdin.close()
        holder.stdout.close()


def assert_fault_error(error: grpc.aio.AioRpcError, *words: str) -> None:
    """UNAVAILABLE or INTERNAL, with a reason that names the database and the fault."""
    assert error.code() in FAULT_CODES, (error.code(), error.details())
    details = error.details().lower()
    assert "database" in details, error.details()
    assert any(word in details for word in words), (words, error.details())


async def submit(stub: Any, path: Path, **fields: Any) -> Any:
    return await stub.SubmitScan(
        scan_pb2.SubmitScanRequest(path=str(path), **fields), timeout=FAIL_WITHIN
    )


async def terminal_everywhere(stub: Any, job_id: str) -> Any:
    """The job once it is terminal, as WatchJob (the stream closes OK on it) and GetJob
    (the same state) both show it."""
    try:
        watched = await final_job(stub, job_id, timeout=RECOVER_WITHIN)
    except TimeoutError:
        got = await stub.GetJob(scan_pb2.GetJobRequest(job_id=job_id))
        raise AssertionError(
            f"job {job_id} never reached a terminal state after the fault went away: its "
            f"WatchJob stream stayed open for {RECOVER_WITHIN}s; GetJob says "
            f"{scan_pb2.JobState.Name(got.state)}"
        ) from None
    got = await stub.GetJob(scan_pb2.GetJobRequest(job_id=job_id))
    assert got.state == watched.state, (got.state, watched.state)
    return watched


async def count_videos(stub: Any, folder: Path) -> int:
    total, token = 0, ""
    for _ in range(1000):
        page = await stub.ListVideos(
            scan_pb2.ListVideosRequest(path_prefix=str(folder), page_size=1000, page_token=token)
        )
        total += len(page.videos)
        token = page.next_page_token
        if not token:
            return total
    raise AssertionError("ListVideos never ended")


async def assert_serving(server: ServerProcess, stub: Any, channel: Any) -> None:
    assert server.alive(), server.tail()
    health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING


# -- the database locked by another process ----------------------------------------------------


@pytest.mark.slow
async def test_locked_database_refuses_writes_then_recovers(
    launch: Launcher, tmp_path: Path
) -> None:
    make_many(tmp_path / "before", 2)
    make_many(tmp_path / "after", 2)
    server = await launch()
    async with channel_to(server.address) as (channel, stub):
        done = (await submit(stub, tmp_path / "before")).job_id
        await final_job(stub, done)
        with write_lock(server.db):
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await submit(stub, tmp_path / "after")
            refused_after = time.monotonic() - started
            assert_fault_error(refused.value, "locked", "busy")
            # Reads go on (WAL): the finished job, the listings.
            assert (await stub.GetJob(scan_pb2.GetJobRequest(job_id=done))).state == SUCCEEDED
            assert (await stub.ListJobs(scan_pb2.ListJobsRequest())).jobs
            await assert_serving(server, stub, channel)
        # The lock is gone: the same submit succeeds and its scan runs.
        job = await final_job(stub, (await submit(stub, tmp_path / "after")).job_id)
        assert job.state == SUCCEEDED
    server.terminate()
    assert await server.wait(30) == 0
    assert check_database_copy(server.db)["integrity"] == ["ok"]
    record_figures(
        "test_storage_faults.locked",
        refused_code=refused.value.code().name,
        refused_reason=refused.value.details(),
        refused_after_seconds=round(refused_after, 2),
        recovered=True,
    )


@pytest.mark.slow
async def test_job_cancelled_while_database_locked_ends_once_released(
    launch: Launcher, tmp_path: Path
) -> None:
    """A running job is cancelled while another process holds the lock: its CANCELLED state
    cannot be written. The cancel may fail with a reason, but once the lock is released the job
    must end (CANCELLED, or FAILED with a reason), not stay RUNNING for ever."""
    server = await launch("--probe-timeout", "120s", "--shutdown-grace", "0.5s", env=hang_env())
    async with channel_to(server.address) as (channel, stub):
        job_id = (await submit(stub, hung_folder(tmp_path))).job_id
        await wait_for_running(stub, job_id)
        cancel_answer = ""
        with write_lock(server.db):
            try:
                answer = await stub.CancelJob(
                    scan_pb2.CancelJobRequest(job_id=job_id), timeout=FAIL_WITHIN
                )
                cancel_answer = f"OK {scan_pb2.JobState.Name(answer.state)}"
            except grpc.aio.AioRpcError as error:
                cancel_answer = f"{error.code().name}: {error.details()}"
        await assert_serving(server, stub, channel)
        job = await terminal_everywhere(stub, job_id)
        assert job.state in (CANCELLED, FAILED), job
        assert cancel_answer.startswith(("OK", "UNAVAILABLE", "INTERNAL")), (
            f"CancelJob during the lock answered {cancel_answer!r}: it should end with the "
            "job's state or a storage error, within the busy timeout"
        )
    server.terminate()
    assert await server.wait(30) == 0
    assert check_database_copy(server.db)["integrity"] == ["ok"]


# -- the disk full -----------------------------------------------------------------------------


@dataclasses.dataclass
class SmallDisk:
    """Where the database lives, and how to fill and free its disk."""

    mode: str  # "tmpfs" or "rlimit"
    folder: Path
    server: ServerProcess | None = None

    @property
    def db(self) -> Path:
        return self.folder / "mediascan.db"

    def fill(self) -> None:
        if self.mode == "tmpfs":
            _fill(self.folder / "ballast")
        else:
            assert self.server is not None
            wal = Path(f"{self.db}-wal")
            size = wal.stat().st_size if wal.exists() else 0
            # Growing any file past its size now fails (EFBIG): the WAL cannot take a frame.
            resource.prlimit(self.server.pid, resource.RLIMIT_FSIZE, (size, resource.RLIM_INFINITY))

    def free(self) -> None:
        if self.mode == "tmpfs":
            (self.folder / "ballast").unlink()
        else:
            assert self.server is not None
            unlimited = (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
            resource.prlimit(self.server.pid, resource.RLIMIT_FSIZE, unlimited)


def _fill(path: Path) -> None:
    """Write until the file system has no byte left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (1 << 16, 4096, 512, 1):
            try:
                for _ in range(1 << 20):
                    os.write(fd, bytes(chunk))
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)


@pytest.fixture
async def small_disk(tmp_path: Path) -> AsyncIterator[SmallDisk]:
    folder = tmp_path / "disk"
    folder.mkdir()
    mode = os.environ.get("MEDIASCAN_TEST_DISK", "tmpfs")
    if mode == "tmpfs":
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(folder)],
            capture_output=True,
            text=True,
            check=False,
        )
        if mounted.returncode != 0:
            mode = "rlimit"  # not root, or no mount in this container
    disk = SmallDisk(mode=mode, folder=folder)
    try:
        yield disk
    finally:
        if disk.server is not None:
            disk.server.kill()
            await disk.server.wait(15)
        if mode == "tmpfs":
            subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.slow
async def test_disk_full_refuses_writes_then_recovers(
    launch: Launcher, small_disk: SmallDisk, tmp_path: Path
) -> None:
    make_many(tmp_path / "before", 2)
    make_many(tmp_path / "after", 300)
    server = small_disk.server = await launch("--log-level", "WARNING", db=small_disk.db)
    async with channel_to(server.address) as (channel, stub):
        done = (await submit(stub, tmp_path / "before")).job_id
        await final_job(stub, done)
        small_disk.fill()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await submit(stub, tmp_path / "after")
        assert_fault_error(refused.value, "full", "disk", "i/o")
        assert (await stub.GetJob(scan_pb2.GetJobRequest(job_id=done))).state == SUCCEEDED
        await assert_serving(server, stub, channel)
        small_disk.free()
        job = await final_job(stub, (await submit(stub, tmp_path / "after")).job_id)
        assert job.state == SUCCEEDED and job.result.added == 300, job
    server.terminate()
    assert await server.wait(30) == 0
    check = check_database_copy(small_disk.db)
    assert check["integrity"] == ["ok"]
    assert check["videos"] == 302
    record_figures(
        "test_storage_faults.disk_full",
        disk=small_disk.mode,
        refused_code=refused.value.code().name,
        refused_reason=refused.value.details(),
        recovered=True,
    )


@pytest.mark.slow
async def test_scan_running_when_disk_fills_ends_with_a_reason(
    launch: Launcher, small_disk: SmallDisk, tmp_path: Path
) -> None:
    """A scan writes library rows when the disk fills up. It may end at once (FAILED, with a
    reason that names the database) or wait for space, but once space is back it must reach a
    terminal state that GetJob and WatchJob agree on, rather than stay RUNNING for ever."""
    folder = tmp_path / "slow"
    make_many(folder, 1500, audio_codec="aac", audio_streams=8)
    server = small_disk.server = await launch("--log-level", "WARNING", db=small_disk.db)
    async with channel_to(server.address) as (channel, stub):
        job_id = (await submit(stub, folder)).job_id
        await wait_for_progress(stub, job_id, 10)
        small_disk.fill()
        ended_during_fault: list[Any] = []
        with contextlib.suppress(TimeoutError):
            ended_during_fault = await watch_events(stub, job_id, timeout=DISK_FAIL_WITHIN)
        await assert_serving(server, stub, channel)
        small_disk.free()
        job = await terminal_everywhere(stub, job_id)
        stored = await count_videos(stub, folder)
    record_figures(
        "test_storage_faults.disk_full_while_scanning",
        videos_stored=stored,
        counts=[job.result.added, job.result.updated, job.result.unchanged, job.result.failed],
        disk=small_disk.mode,
        ended_during_fault=bool(ended_during_fault),
        final_state=scan_pb2.JobState.Name(job.state),
        error=job.error.message,
    )
    assert job.state in TERMINAL_STATES
    if job.state == FAILED:
        assert "database" in job.error.message.lower(), job.error
    if job.state == SUCCEEDED:
        # A success must be whole: every file handled counted once, and every one of them in
        # the library (no probed row may vanish with a failed write).
        result = job.result
        counted = result.added + result.updated + result.unchanged + result.failed
        assert (counted, stored) == (1500, 1500), (
            f"SUCCEEDED, but added {result.added} + updated {result.updated} + unchanged "
            f"{result.unchanged} + failed {result.failed} = {counted} of "
            f"{result.files_total} files handled, and the library holds {stored} of 1500"
        )
    server.terminate()
    assert await server.wait(30) == 0
    assert check_database_copy(small_disk.db)["integrity"] == ["ok"]


#: How long the disk stays full in the "blip" test: the fault's duration, a parameter of the
#: scenario (long enough for a write batch of the scan to be attempted: it writes every 0.5 s).
BLIP_SECONDS = 1.0


@pytest.mark.slow
async def test_scan_through_a_short_disk_full_loses_no_row(
    launch: Launcher, small_disk: SmallDisk, tmp_path: Path
) -> None:
    """The disk is full for a second while a scan writes library rows, then space is back and
    the scan goes on to its end. It may fail with a reason; if it reports success, every file
    it handled must be in the library."""
    folder = tmp_path / "slow"
    make_many(folder, 1500, audio_codec="aac", audio_streams=8)
    server = small_disk.server = await launch("--log-level", "WARNING", db=small_disk.db)
    async with channel_to(server.address) as (_, stub):
        job_id = (await submit(stub, folder)).job_id
        await wait_for_progress(stub, job_id, 300)
        small_disk.fill()
        await asyncio.sleep(BLIP_SECONDS)  # the fault lasts this long (not a wait for a state)
        small_disk.free()
        job = await terminal_everywhere(stub, job_id)
        stored = await count_videos(stub, folder)
    result = job.result
    record_figures(
        "test_storage_faults.disk_full_blip",
        disk=small_disk.mode,
        final_state=scan_pb2.JobState.Name(job.state),
        files_total=result.files_total,
        added=result.added,
        failed=result.failed,
        videos_stored=stored,
    )
    if job.state == FAILED:
        assert "database" in job.error.message.lower(), job.error
    else:
        assert job.state == SUCCEEDED, job
        counted = result.added + result.updated + result.unchanged + result.failed
        assert (counted, stored) == (1500, 1500), (
            f"SUCCEEDED, but added {result.added} + updated {result.updated} + unchanged "
            f"{result.unchanged} + failed {result.failed} = {counted} of "
            f"{result.files_total} files handled, and the library holds {stored} of 1500: "
            "rows of a failed write were dropped without a word"
        )
    server.terminate()
    assert await server.wait(30) == 0
    assert check_database_copy(small_disk.db)["integrity"] == ["ok"]


# -- the database file removed -----------------------------------------------------------------


@pytest.mark.slow
async def test_database_removed_under_a_running_server(launch: Launcher, tmp_path: Path) -> None:
    """Someone deletes the database files while the server runs. That is fatal (nothing can be
    stored any more): the server stops by itself with exit code 1, acknowledging nothing after
    the removal, and a restart starts with a new, empty library."""
    for name in ("a", "b", "c"):
        make_many(tmp_path / name, 2)
    db = tmp_path / "var" / "mediascan.db"
    server = await launch(db=db)
    acknowledged: list[str] = []
    answers: dict[str, str] = {}
    async with channel_to(server.address) as (_, stub):
        done = (await submit(stub, tmp_path / "a")).job_id
        await final_job(stub, done)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        for name in ("b", "c"):
            try:
                response = await submit(stub, tmp_path / name)
            except grpc.aio.AioRpcError as error:
                # CANCELLED: the server found the loss and stopped while this call was in
                # flight, and gRPC's stop cancelled it after its grace (on a busy machine the
                # call can take that long). Like the fault codes, it acknowledges nothing.
                codes = (*FAULT_CODES, grpc.StatusCode.CANCELLED)
                assert error.code() in codes, (error.code(), error.details())
                answers[f"SubmitScan {name}"] = f"{error.code().name}: {error.details()}"
            else:
                acknowledged.append(response.job_id)
                answers[f"SubmitScan {name}"] = "OK"
    exit_code = await server.wait(45)  # by itself: no signal
    assert "was removed or replaced while the server ran" in server.stderr_text()
    restarted = await launch(db=db)
    async with channel_to(restarted.address) as (_, stub):
        jobs = (await stub.ListJobs(scan_pb2.ListJobsRequest())).jobs
    record_figures(
        "test_storage_faults.removed",
        answers_after_removal=answers,
        exit_code=exit_code,
        acknowledged_after_removal=len(acknowledged),
    )
    assert exit_code == 1, server.tail()
    assert not acknowledged, answers  # acknowledged into the unlinked file: lost
    assert not jobs  # a new, empty library
