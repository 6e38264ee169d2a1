"""The real `mediascan-server` command as a subprocess: crash recovery and SIGTERM drain."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from _robust import (
    Launcher,
    channel_to,
    hang_env,
    hung_folder,
    launch_fixture,  # noqa: F401 - provides the `launch` fixture
)
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mediascan.server.app import SHUTDOWN_MARGIN
from mediascan.server.testing import (
    TERMINAL_STATES,
    event_job,
    final_job,
    make_many,
    wait_for_event,
    wait_for_progress,
    wait_for_running,
)
from mediascan.v1 import scan_pb2

#: Seconds a stop may take beyond its promised bound on a busy machine (a hung stop takes
#: for ever).
EXIT_SLACK = 10.0

SUCCEEDED = scan_pb2.JOB_STATE_SUCCEEDED
RUNNING = scan_pb2.JOB_STATE_RUNNING
QUEUED = scan_pb2.JOB_STATE_QUEUED


async def test_subprocess_server_serves_and_exits_0_on_sigterm(
    spawn_server: Any, connect: Any, small_folders: list[Path]
) -> None:
    spawned = await spawn_server("--workers", "1")
    stub = await connect(spawned.address)
    response = await stub.SubmitScan(scan_pb2.SubmitScanRequest(path=str(small_folders[0])))
    assert (await final_job(stub, response.job_id)).state == SUCCEEDED
    async with grpc.aio.insecure_channel(spawned.address) as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    spawned.terminate()
    assert await spawned.wait(10) == 0


@pytest.mark.slow
async def test_kill_9_then_restart_runs_every_job(
    spawn_server: Any, connect: Any, tmp_path: Path, small_folders: list[Path]
) -> None:
    folder = tmp_path / "long"
    make_many(folder, 1000)
    first = await spawn_server("--workers", "1", "--probe-concurrency", "1")
    stub = await connect(first.address)
    long_id = (await stub.SubmitScan(scan_pb2.SubmitScanRequest(path=str(folder)))).job_id
    queued_ids = [
        (await stub.SubmitScan(scan_pb2.SubmitScanRequest(path=str(f)))).job_id
        for f in small_folders[:3]
    ]
    await wait_for_running(stub, long_id)
    for job_id in queued_ids:
        assert (await stub.GetJob(scan_pb2.GetJobRequest(job_id=job_id))).state == QUEUED

    first.kill()
    assert await first.wait(10) == -signal.SIGKILL

    second = await spawn_server("--workers", "1")
    stub = await connect(second.address)
    jobs = {job_id: await final_job(stub, job_id, timeout=60) for job_id in [long_id, *queued_ids]}
    assert all(job.state == SUCCEEDED for job in jobs.values()), jobs
    interrupted = jobs[long_id]
    assert interrupted.attempt == 2
    assert interrupted.result.files_total == 1000
    assert interrupted.result.failed == 0
    for job_id in queued_ids:
        assert jobs[job_id].result.files_total == 3
    listed = await stub.ListJobs(scan_pb2.ListJobsRequest())
    assert {j.job_id for j in listed.jobs} == set(jobs)
    assert all(j.state in TERMINAL_STATES for j in listed.jobs)


@pytest.mark.slow
async def test_sigterm_drains_requeues_and_finishes_after_restart(
    spawn_server: Any, connect: Any, big_folder: Path
) -> None:
    folder = big_folder
    files = sum(1 for _ in folder.iterdir())
    grace = 1.0
    first = await spawn_server(
        "--workers", "1", "--probe-concurrency", "1", "--shutdown-grace", "1s"
    )
    stub = await connect(first.address)
    job_id = (await stub.SubmitScan(scan_pb2.SubmitScanRequest(path=str(folder)))).job_id
    await wait_for_progress(stub, job_id, files_done=1)
    watch = stub.WatchJob(scan_pb2.WatchJobRequest(job_id=job_id))
    assert (await watch.read()).WhichOneof("kind") == "snapshot"

    started = time.monotonic()
    first.terminate()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async with asyncio.timeout(grace + 10):
            while await watch.read() is not grpc.aio.EOF:
                pass
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert await first.wait(grace + 10) == 0
    # The server's bound (grace + SHUTDOWN_MARGIN), with slack for a busy machine.
    assert time.monotonic() - started < grace + SHUTDOWN_MARGIN + EXIT_SLACK

    second = await spawn_server("--workers", "1")
    stub = await connect(second.address)
    requeued = await stub.GetJob(scan_pb2.GetJobRequest(job_id=job_id))
    assert requeued.attempt == 2
    assert requeued.state in (QUEUED, RUNNING)
    job = await final_job(stub, job_id, timeout=90)
    assert job.state == SUCCEEDED
    assert job.attempt == 2
    assert job.result.files_total == files
    assert job.result.failed == 0
    assert job.result.added + job.result.unchanged + job.result.updated == files
    assert job.result.unchanged > 0  # the first attempt's work was kept


async def test_a_job_whose_runs_keep_dying_ends_failed_after_max_attempts(
    launch: Launcher, tmp_path: Path
) -> None:
    """SQLite, `--max-attempts 2`: a scan hung on its file is killed with its server twice;
    the third start finds it RUNNING at attempt 2 and ends it FAILED with the reason instead
    of running it a third time."""
    folder = hung_folder(tmp_path)
    args = ("--workers", "1", "--max-attempts", "2")
    job_id = ""
    for attempt in (1, 2):
        server = await launch(*args, env=hang_env())
        async with channel_to(server.address) as (_, stub):
            if not job_id:
                request = scan_pb2.SubmitScanRequest(path=str(folder))
                job_id = (await stub.SubmitScan(request)).job_id
            await wait_for_event(
                stub,
                job_id,
                lambda e, n=attempt: (
                    (job := event_job(e)) is not None and job.state == RUNNING and job.attempt == n
                ),
            )
        server.kill()
        assert await server.wait(10) == -signal.SIGKILL
    server = await launch(*args, env=hang_env())
    async with channel_to(server.address) as (_, stub):
        job = await final_job(stub, job_id, timeout=30)
    assert job.state == scan_pb2.JOB_STATE_FAILED and job.attempt == 2
    assert job.error.message == "gave up after 2 attempts: its node died each time"


async def test_a_jobs_time_limit_counts_from_its_first_start_across_a_restart(
    launch: Launcher, tmp_path: Path
) -> None:
    """A scan with a 3 s limit, hung, killed with its server after 2 s: after the restart,
    its second attempt has what is left of the 3 s since its first start (nothing, once the
    server is up again), not 3 s more."""
    folder = hung_folder(tmp_path)
    first = await launch("--workers", "1", env=hang_env())
    async with channel_to(first.address) as (_, stub):
        request = scan_pb2.SubmitScanRequest(path=str(folder))
        request.timeout.FromSeconds(3)
        job_id = (await stub.SubmitScan(request)).job_id
        await wait_for_running(stub, job_id)
        await asyncio.sleep(2.0)  # part of its limit: the time that must count
    first.kill()
    assert await first.wait(10) == -signal.SIGKILL
    started = time.time()
    second = await launch("--workers", "1", env=hang_env())
    async with channel_to(second.address) as (_, stub):
        job = await final_job(stub, job_id, timeout=30)
    assert job.state == scan_pb2.JOB_STATE_TIMED_OUT and job.attempt == 2
    ran = job.end_time.ToNanoseconds() / 1e9 - job.start_time.ToNanoseconds() / 1e9
    first_start = started - 2.0  # at the latest
    # What was left of the 3 s at the second start: nothing when the restart itself took the
    # rest (a busy machine), and then the second attempt ends at once.
    left = max(0.0, 3.0 - (job.start_time.ToNanoseconds() / 1e9 - first_start))
    assert ran < left + 0.5, ran
