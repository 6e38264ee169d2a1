"""Client cancellation (issue 5.5): 1,000 WatchJob and 1,000 GetJob calls cut off mid-flight by
the client (cancel, or a deadline that expires) leave nothing behind on the server.

- In-process server: every asyncio task that the calls created on the server's loop ends
  (awaited with a timeout: none is left pending).
- `mediascan-server` subprocess: its open descriptors, threads and resident memory, read from
  /proc/PID, do not grow from one half of the storm to the next.

The WatchJob calls target a job that runs until the test ends (its only video hangs the
prober), so every stream is open and waiting when it is cut; GetJob calls read a finished job
(a SQLite read in a reader thread) and a running one (memory).
"""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path
from typing import Any

import grpc
import pytest
from _library_helpers import HANG_MARK, LONG_PROBE_TIMEOUT, set_fault, start_hung_blocker
from _robust import (
    Launcher,
    ServerProcess,
    channel_to,
    hang_env,
    hung_folder,
    launch_fixture,  # noqa: F401 - provides the `launch` fixture
    record_figures,
)

from mediascan.server.testing import final_job, make_many, wait_for_running
from mediascan.v1 import scan_pb2

CALLS = 1000  # of each kind
BATCH = 100  # calls in flight at once
CODES = (grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.OK)
#: Growth allowed from the first half of the storm to the second (a leak of a few KiB per call
#: would be several MiB here).
RSS_SLACK_MIB = 3.0
HANDLE_SLACK = 1


async def cut_watch(stub: Any, job_id: str, n: int) -> str:
    """One WatchJob call cut off mid-flight, four ways."""
    way = n % 4
    if way == 0:  # read the snapshot, then hang up
        call = stub.WatchJob(scan_pb2.WatchJobRequest(job_id=job_id))
        await call.read()
        call.cancel()
    elif way == 1:  # resume after the first event, read one, hang up
        call = stub.WatchJob(scan_pb2.WatchJobRequest(job_id=job_id, after_sequence=1))
        await call.read()
        call.cancel()
    elif way == 2:  # a deadline that expires while the stream waits for the next event
        call = stub.WatchJob(scan_pb2.WatchJobRequest(job_id=job_id), timeout=0.05 + n % 5 / 20)
        try:
            async for _ in call:
                pass
        except grpc.aio.AioRpcError:
            pass
    else:  # hang up before anything arrived
        call = stub.WatchJob(scan_pb2.WatchJobRequest(job_id=job_id))
        await call.initial_metadata()
        call.cancel()
    return str((await call.code()).name)


async def cut_gets(stub: Any, job_ids: list[str], start: int) -> list[str]:
    """A batch of GetJob calls: half cancelled right after they were sent, half with deadlines
    of 1 to 5 ms (some are answered first: those count as OK)."""
    calls = []
    for n in range(start, start + BATCH):
        request = scan_pb2.GetJobRequest(job_id=job_ids[n % len(job_ids)])
        if n % 2:
            calls.append(stub.GetJob(request, timeout=0.001 * (1 + n % 5)))
        else:
            calls.append(stub.GetJob(request))
    for call in calls[::2]:
        call.cancel()
    return [str((await call.code()).name) for call in calls]


async def storm(stub: Any, running: str, finished: str, calls: int) -> collections.Counter[str]:
    """`calls` WatchJob and `calls` GetJob calls, cut off mid-flight, BATCH at a time."""
    outcomes: collections.Counter[str] = collections.Counter()
    for start in range(0, calls, BATCH):
        async with asyncio.timeout(60):
            watches = await asyncio.gather(
                *(cut_watch(stub, running, n) for n in range(start, start + BATCH))
            )
            gets = await cut_gets(stub, [finished, running], start)
        outcomes.update(f"WatchJob {code}" for code in watches)
        outcomes.update(f"GetJob {code}" for code in gets)
    return outcomes


#: Tasks that may still be pending after the storm without being a leftover of a call: gRPC's
#: wait for the next incoming call, and the running job's probe (created as the job started).
NOT_A_CALL = ("AioServer._request_registered_call", "_ScanRun._probe_one", "StreamReader.readline")


def _coroutine_name(task: asyncio.Task[Any]) -> str:
    coro = task.get_coro()
    return str(getattr(coro, "__qualname__", None) or repr(coro))


@pytest.mark.slow
async def test_cancelled_calls_leave_no_server_task_behind(
    make_server: Any, connect: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_fault(monkeypatch, "hang", HANG_MARK)
    server = await make_server(probe_timeout=LONG_PROBE_TIMEOUT, shutdown_grace=0.5)
    stub = await connect(server.address)
    make_many(tmp_path / "done", 2)
    finished = (
        await stub.SubmitScan(scan_pb2.SubmitScanRequest(path=str(tmp_path / "done")))
    ).job_id
    await final_job(stub, finished)
    running = await start_hung_blocker(stub, tmp_path / "hung")

    before = asyncio.all_tasks()
    outcomes = await storm(stub, running, finished, CALLS)
    created = asyncio.all_tasks() - before - {asyncio.current_task()}
    pending: set[asyncio.Task[Any]] = set()
    if created:
        _, pending = await asyncio.wait(created, timeout=10)
    names = [_coroutine_name(task) for task in pending]
    leaked = [name for name in names if name not in NOT_A_CALL]
    assert not leaked, leaked[:20]
    assert len(names) <= len(NOT_A_CALL) + 2, names
    # Still serving: the running job is watched and read as before.
    job = await stub.GetJob(scan_pb2.GetJobRequest(job_id=running))
    assert job.state == scan_pb2.JOB_STATE_RUNNING
    await wait_for_running(stub, running)

    cut = sum(n for key, n in outcomes.items() if not key.endswith(" OK"))
    assert sum(outcomes.values()) == 2 * CALLS
    assert all(key.split()[1] in {c.name for c in CODES} for key in outcomes), outcomes
    assert outcomes["WatchJob OK"] == 0, outcomes  # a running job's stream never ends OK
    record_figures(
        "test_cancellation.tasks",
        calls=2 * CALLS,
        cut_mid_flight=cut,
        outcomes=dict(outcomes),
        new_tasks_alive_after_storm=len(created),
        still_pending_after_10s=sorted(names),
    )


def reading(server: ServerProcess) -> dict[str, float]:
    status = server.status()
    return {
        "rss_mib": round(status["VmRSS"] / 1024, 2),
        "threads": status["Threads"],
        "fds": server.fds(),
    }


@pytest.mark.slow
async def test_cancelled_calls_leak_no_memory_or_descriptors(
    launch: Launcher, tmp_path: Path
) -> None:
    server = await launch("--probe-timeout", "120s", "--shutdown-grace", "0.5s", env=hang_env())
    make_many(tmp_path / "done", 2)
    async with channel_to(server.address) as (_, stub):
        finished = (
            await stub.SubmitScan(scan_pb2.SubmitScanRequest(path=str(tmp_path / "done")))
        ).job_id
        await final_job(stub, finished)
        running = (
            await stub.SubmitScan(scan_pb2.SubmitScanRequest(path=str(hung_folder(tmp_path))))
        ).job_id
        await wait_for_running(stub, running)

        await storm(stub, running, finished, 2 * BATCH)  # warm-up: pools, arenas, threads
        readings = [reading(server)]
        outcomes: collections.Counter[str] = collections.Counter()
        for _ in range(2):  # two halves of the storm
            outcomes.update(await storm(stub, running, finished, CALLS // 2))
            await stub.ListJobs(scan_pb2.ListJobsRequest(page_size=1))  # a round trip
            readings.append(reading(server))
        job = await stub.GetJob(scan_pb2.GetJobRequest(job_id=running))
    assert job.state == scan_pb2.JOB_STATE_RUNNING
    assert server.alive(), server.tail()

    record_figures(
        "test_cancellation.process",
        calls=sum(outcomes.values()),
        outcomes=dict(outcomes),
        readings=readings,
    )
    warm, half, full = readings
    assert full["fds"] - warm["fds"] <= HANDLE_SLACK, readings
    assert full["threads"] - warm["threads"] <= HANDLE_SLACK, readings
    assert full["rss_mib"] - half["rss_mib"] <= RSS_SLACK_MIB, readings
    # Cumulative growth over all 2,000 calls stays small too.
    assert full["rss_mib"] - warm["rss_mib"] <= 2 * RSS_SLACK_MIB, readings
