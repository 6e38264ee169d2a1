"""A database that disappears or hangs (issue 11.8).

- Removed under a running `mediascan-server` (the file and its -wal and -shm): the server says
  so, stops its running scan at once (not after --shutdown-grace: nothing it does can be
  stored) and exits 1 so that a supervisor restarts it.
- Replaced under an in-process server: health NOT_SERVING, submits UNAVAILABLE, the server
  asks to stop (`wait()` returns) with a non-zero exit code.
- A database that does not answer (here: another process holds its write lock, so every write
  waits SQLite's busy timeout): SubmitScan answers UNAVAILABLE after --db-timeout, saying that
  its outcome is unknown and to retry with the same request_id; the retry then gets one job.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
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

from mediascan.server.testing import make_many, rich_status, wait_for_running
from mediascan.v1 import scan_pb2

EXIT_TIMEOUT = 45.0  # well below the --shutdown-grace of the test (120 s)


async def test_removed_database_is_fatal(launch: Launcher, tmp_path: Path) -> None:
    db = tmp_path / "lost.db"
    server = await launch("--shutdown-grace", "120s", db=db, env=hang_env())
    folder = hung_folder(tmp_path)
    async with channel_to(server.address) as (channel, stub):
        job_id = (await stub.SubmitScan(scan_pb2.SubmitScanRequest(path=str(folder)))).job_id
        await wait_for_running(stub, job_id)
        health = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink()
        # The health stream says NOT_SERVING before the server goes, then ends with it.
        seen = []
        with contextlib.suppress(grpc.aio.AioRpcError):
            while (answer := await watch.read()) is not grpc.aio.EOF:
                seen.append(answer.status)
        assert health_pb2.HealthCheckResponse.NOT_SERVING in seen, seen
    assert await server.wait(EXIT_TIMEOUT) == 1
    log = server.stderr_text()
    assert "was removed or replaced while the server ran" in log, log
    assert "Traceback" not in log, log


async def test_replaced_database_stops_the_server(
    make_server: Any, connect: Any, tmp_path: Path
) -> None:
    db = tmp_path / "replaced.db"
    server = await make_server(db=db)
    stub = await connect(server.address)
    folder = tmp_path / "videos"
    make_many(folder, 1)
    other = tmp_path / "other.db"
    sqlite3.connect(other).close()
    other.replace(db)
    async with asyncio.timeout(30):
        await server.wait()  # the server asks to stop by itself
    assert server.failed
    assert "database-lost" in server.health.problems
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SubmitScan(scan_pb2.SubmitScanRequest(path=str(folder)), timeout=30)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    channel = grpc.aio.insecure_channel(server.address)
    try:
        answer = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=30
        )
        assert answer.status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        await channel.close()
    await server.stop()
    assert server.exit_code == 1


@pytest.mark.slow
async def test_unanswered_submit_says_retry_with_the_same_request_id(
    make_server: Any, connect: Any, tmp_path: Path
) -> None:
    db = tmp_path / "held.db"
    server = await make_server(db=db, db_timeout=1.0)
    stub = await connect(server.address)
    folder = tmp_path / "videos"
    make_many(folder, 1)
    request = scan_pb2.SubmitScanRequest(path=str(folder), request_id="same-request-1")
    holder = sqlite3.connect(db, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # the write lock: the server's writer must wait
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.SubmitScan(request, timeout=60)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    error = caught.value
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error
    assert "retry with the same request_id" in (error.details() or "")
    status = rich_status(error)
    assert status is not None and b"SUBMIT_OUTCOME_UNKNOWN" in status.SerializeToString()
    first = await stub.SubmitScan(request, timeout=60)
    again = await stub.SubmitScan(request, timeout=60)
    assert first.job_id == again.job_id
    jobs = await stub.ListJobs(scan_pb2.ListJobsRequest(), timeout=60)
    assert [job.job_id for job in jobs.jobs] == [first.job_id]  # one job, whatever happened
