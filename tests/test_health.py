"""Health checking and the in-process graceful stop."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mediascan.server.app import SHUTDOWN_MARGIN
from mediascan.server.testing import final_job, wait_for_progress
from mediascan.v1 import scan_pb2

#: Seconds a stop may take beyond its promised bound on a busy machine (a hung stop takes
#: for ever).
EXIT_SLACK = 10.0

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def test_serving_after_start(server: Any) -> None:
    async with grpc.aio.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "mediascan.v1.ScanService"):
            answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert answer.status == SERVING, service
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_address_is_the_bound_port(server: Any) -> None:
    host, port = server.address.rsplit(":", 1)
    assert host == "127.0.0.1"
    assert int(port) == server.port > 0


@pytest.mark.slow
async def test_stop_drains_then_restart_finishes_the_job(
    make_server: Any, connect: Any, medium_folder: Path, tmp_path: Path
) -> None:
    folder = medium_folder
    files = sum(1 for _ in folder.iterdir())
    grace = 0.2
    server = await make_server(workers=1, probe_concurrency=1, shutdown_grace=grace)
    stub = await connect(server.address)
    job_id = (await stub.SubmitScan(scan_pb2.SubmitScanRequest(path=str(folder)))).job_id
    await wait_for_progress(stub, job_id, files_done=1)

    channel = grpc.aio.insecure_channel(server.address)
    health = health_pb2_grpc.HealthStub(channel)
    health_watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
    assert (await health_watch.read()).status == SERVING
    job_watch = stub.WatchJob(scan_pb2.WatchJobRequest(job_id=job_id))
    assert (await job_watch.read()).WhichOneof("kind") == "snapshot"

    started = time.monotonic()
    stopping = asyncio.create_task(server.stop())
    try:
        async with asyncio.timeout(10):
            assert (await health_watch.read()).status == NOT_SERVING
        # While draining, new submits are refused with UNAVAILABLE.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.SubmitScan(scan_pb2.SubmitScanRequest(path=str(tmp_path)))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        # The open watch stream ends with UNAVAILABLE, so that clients reconnect.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async with asyncio.timeout(10):
                while await job_watch.read() is not grpc.aio.EOF:
                    pass
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        async with asyncio.timeout(10):
            await stopping
    finally:
        health_watch.cancel()
        job_watch.cancel()
        await channel.close()
    # The server's bound (grace + SHUTDOWN_MARGIN), with slack for a busy machine.
    assert time.monotonic() - started < grace + SHUTDOWN_MARGIN + EXIT_SLACK

    again = await make_server(workers=1)  # same database
    stub = await connect(again.address)
    requeued = await stub.GetJob(scan_pb2.GetJobRequest(job_id=job_id))
    assert requeued.attempt == 2
    assert requeued.state in (scan_pb2.JOB_STATE_QUEUED, scan_pb2.JOB_STATE_RUNNING)
    job = await final_job(stub, job_id)
    assert job.state == scan_pb2.JOB_STATE_SUCCEEDED
    assert job.attempt == 2
    assert job.result.files_total == files
    assert job.result.failed == 0
    assert job.result.added + job.result.unchanged + job.result.updated == files
    assert job.result.unchanged > 0  # the first attempt's work was kept
