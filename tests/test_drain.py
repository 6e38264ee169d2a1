"""Drain (issue 5.3): SIGTERM a server with two scans running and watchers attached. Health
turns NOT_SERVING and new submits get UNAVAILABLE at once; the process exits 0 within the
grace period (plus the server's shutdown margin and a generous allowance for a busy machine:
what is proven is that the exit never waits on what hangs); every raw watcher of an interrupted
job ends with UNAVAILABLE; and `ScanClient.watch_job` iterators ride out the restart on the
same port: each sees every event of its job once, in order, exactly as the server stored them."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from _robust import (
    RUNNING,
    SUCCEEDED,
    Launcher,
    ServerProcess,
    channel_to,
    check_history,
    hang_env,
    hung_folder,
    job_history,
    launch_fixture,  # noqa: F401 - provides the `launch` fixture
    record_figures,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mediascan.client import ScanClient
from mediascan.server.app import SHUTDOWN_MARGIN
from mediascan.server.testing import (
    event_state,
    final_job,
    make_many,
    wait_for_event,
    wait_for_running,
)
from mediascan.v1 import scan_pb2

GRACE = 2.0
#: What the process may take beyond the grace: the server's promise (SHUTDOWN_MARGIN: re-queue
#: the interrupted jobs, end the streams, stop gRPC, the probers and SQLite), plus slack for the
#: interpreter's exit on a busy machine. Generous: a shutdown that waits on a hung prober or a
#: locked database waits for ever, far beyond it.
EXIT_ALLOWANCE = SHUTDOWN_MARGIN + 10.0
RAW_WATCHERS_PER_JOB = 25
CLIENT_WATCHERS_PER_JOB = 5
TIMEOUT = 90.0


async def read_raw(
    stub: Any, job_id: str, events: list[Any], started: asyncio.Event
) -> grpc.StatusCode:
    """Read a WatchJob stream to its end (`started` is set at its first event); its final
    status code."""
    call = stub.WatchJob(scan_pb2.WatchJobRequest(job_id=job_id))
    try:
        async with asyncio.timeout(TIMEOUT):
            async for event in call:
                events.append(event)
                started.set()
        return grpc.StatusCode.OK
    except grpc.aio.AioRpcError as error:
        return error.code()
    finally:
        call.cancel()


async def follow(client: ScanClient, job_id: str, events: list[Any]) -> None:
    async with contextlib.aclosing(client.watch_job(job_id, reconnect_timeout=TIMEOUT)) as stream:
        async for event in stream:
            events.append(event)


def assert_gapless(events: list[Any], where: str) -> None:
    sequences = [e.sequence for e in events]
    for before, after in itertools.pairwise(sequences):
        assert after == before + 1, f"{where}: sequence {before} then {after}: {sequences}"


@pytest.mark.slow
async def test_sigterm_drains_and_watchers_resume_after_restart(
    launch: Launcher, tmp_path: Path, big_folder: Path
) -> None:
    hung = hung_folder(tmp_path)  # its job runs until the drain interrupts it
    make_many(hung / "more", 50)
    args = ("--workers", "2", "--shutdown-grace", f"{GRACE}s", "--probe-timeout", "120s")
    first = await launch(*args, env=hang_env())
    address = first.address

    async with channel_to(address) as (channel, stub), ScanClient(address) as client:
        # First the job that hangs (it holds one prober and all its probe slots), then a big
        # scan that flows on the other prober.
        stuck = (await stub.SubmitScan(scan_pb2.SubmitScanRequest(path=str(hung)))).job_id
        await wait_for_running(stub, stuck)
        flowing = (await stub.SubmitScan(scan_pb2.SubmitScanRequest(path=str(big_folder)))).job_id
        await wait_for_event(
            stub, flowing, lambda e: e.WhichOneof("kind") == "progress" and e.progress.files_done
        )
        jobs = (flowing, stuck)
        raw_events: dict[tuple[str, int], list[Any]] = {}
        raw_tasks: dict[tuple[str, int], asyncio.Task[grpc.StatusCode]] = {}
        raw_started: list[asyncio.Event] = []
        client_events: dict[tuple[str, int], list[Any]] = {}
        client_tasks = []
        for job_id in jobs:
            for n in range(RAW_WATCHERS_PER_JOB):
                raw_events[job_id, n] = []
                raw_started.append(asyncio.Event())
                raw_tasks[job_id, n] = asyncio.create_task(
                    read_raw(stub, job_id, raw_events[job_id, n], raw_started[-1])
                )
            for n in range(CLIENT_WATCHERS_PER_JOB):
                client_events[job_id, n] = []
                client_tasks.append(
                    asyncio.create_task(follow(client, job_id, client_events[job_id, n]))
                )
        # Every raw watcher has its snapshot before the signal.
        async with asyncio.timeout(30):
            await asyncio.gather(*(started.wait() for started in raw_started))
        health = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        assert (await health.read()).status == health_pb2.HealthCheckResponse.SERVING

        signalled = time.monotonic()
        first.terminate()
        async with asyncio.timeout(10):
            assert (await health.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
        not_serving_after = time.monotonic() - signalled
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.SubmitScan(scan_pb2.SubmitScanRequest(path=str(tmp_path)))
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value.details()
        health.cancel()

        exit_code = await first.wait(GRACE + EXIT_ALLOWANCE + 10)
        exit_seconds = time.monotonic() - signalled
        raw_codes = {key: await task for key, task in raw_tasks.items()}

        # The same port and database, without the hanging prober: both jobs run again.
        second = await launch(*args, db=first.db, listen=address)
        async with asyncio.timeout(TIMEOUT):
            await asyncio.gather(*client_tasks)
        async with channel_to(address) as (_, stub2):
            stored = {job_id: await job_history(stub2, job_id) for job_id in jobs}
            finals = {j: await stub2.GetJob(scan_pb2.GetJobRequest(job_id=j)) for j in jobs}
        second.terminate()
        assert await second.wait(30) == 0

    assert exit_code == 0, first.tail()
    assert exit_seconds <= GRACE + EXIT_ALLOWANCE, f"exited {exit_seconds:.2f}s after SIGTERM"
    assert "Traceback" not in first.stderr_text(), first.tail()

    # Raw watchers: gapless while connected; the interrupted job's all end UNAVAILABLE.
    for (job_id, n), events in raw_events.items():
        assert_gapless(events, f"raw watcher {n} of {job_id}")
    stuck_codes = {raw_codes[stuck, n] for n in range(RAW_WATCHERS_PER_JOB)}
    assert stuck_codes == {grpc.StatusCode.UNAVAILABLE}, stuck_codes
    flowing_codes = {raw_codes[flowing, n] for n in range(RAW_WATCHERS_PER_JOB)}
    # The big scan is interrupted too, unless it finished within the grace period.
    assert flowing_codes in ({grpc.StatusCode.UNAVAILABLE}, {grpc.StatusCode.OK}), flowing_codes

    for job_id in jobs:
        history = check_history(job_id, stored[job_id])
        assert finals[job_id].state == SUCCEEDED
        assert finals[job_id].attempt == 1 + history["requeues"]
    assert finals[stuck].attempt == 2
    by_sequence = {j: {e.sequence: e for e in stored[j]} for j in jobs}
    for (job_id, n), events in client_events.items():
        where = f"ScanClient watcher {n} of {job_id}"
        assert events[0].WhichOneof("kind") == "snapshot", where
        assert event_state(events[0]) == RUNNING, where
        assert event_state(events[-1]) == SUCCEEDED, where
        assert_gapless(events, where)
        assert not any(e.WhichOneof("kind") == "snapshot" for e in events[1:]), where
        # Each event after the first snapshot is the stored event of that sequence, byte for
        # byte: nothing missing, repeated, reordered or altered across the restart.
        for event in events[1:]:
            assert event == by_sequence[job_id][event.sequence], (where, event.sequence)
        assert events[-1].sequence == max(by_sequence[job_id]), where

    record_figures(
        "test_drain",
        grace_seconds=GRACE,
        not_serving_after_seconds=round(not_serving_after, 3),
        exit_code=exit_code,
        exit_after_seconds=round(exit_seconds, 2),
        raw_watchers=len(raw_codes),
        raw_watchers_unavailable=sum(c == grpc.StatusCode.UNAVAILABLE for c in raw_codes.values()),
        client_watchers=len(client_events),
        client_events_received=sum(len(e) for e in client_events.values()),
        client_events_missing_or_repeated=0,
        attempts={"flowing": finals[flowing].attempt, "stuck": finals[stuck].attempt},
    )


# -- a shutdown step that hangs ----------------------------------------------------------------


def children(pid: int) -> list[int]:
    """The direct child processes of `pid` (a server's probers)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    found.append(int(entry))
    return found


async def interrupt_hung_job(
    launch: Launcher, tmp_path: Path
) -> tuple[ServerProcess, str, tuple[str, ...]]:
    """A server whose one running job hangs in its prober (until a drain interrupts it)."""
    args = ("--workers", "1", "--shutdown-grace", f"{GRACE}s", "--probe-timeout", "120s")
    server = await launch(*args, env=hang_env())
    async with channel_to(server.address) as (_, stub):
        submitted = await stub.SubmitScan(
            scan_pb2.SubmitScanRequest(path=str(hung_folder(tmp_path)))
        )
        await wait_for_running(stub, submitted.job_id)
    return server, submitted.job_id, args


async def stop_and_time(server: ServerProcess) -> tuple[int, float]:
    """SIGTERM; the exit code and the seconds until the process was gone."""
    signalled = time.monotonic()
    server.terminate()
    code = await server.wait(GRACE + EXIT_ALLOWANCE + 20)
    return code, time.monotonic() - signalled


async def run_again(
    launch: Launcher, server: ServerProcess, job_id: str, args: tuple[str, ...]
) -> Any:
    """Restart on the same database without the hanging prober: the job must be there, run
    (attempt 2) and succeed, its stored history following the state machine."""
    second = await launch(*args, db=server.db)
    async with channel_to(second.address) as (_, stub):
        final = await final_job(stub, job_id, timeout=TIMEOUT)
        history = check_history(job_id, await job_history(stub, job_id))
    second.terminate()
    assert await second.wait(30) == 0, second.tail()
    assert final.state == SUCCEEDED, final
    assert final.attempt == 2 and history["requeues"] == 1, (final.attempt, history)
    return final


@pytest.mark.slow
async def test_a_prober_pipe_that_never_closes_cannot_hold_the_exit(
    launch: Launcher, tmp_path: Path
) -> None:
    """Another process keeps the write end of each prober's stdout open (as a child the prober
    left behind would): once the prober is killed its pipe never ends, so asyncio's
    `Process.wait()`, which waits for the pipes too, never returns, and closing the probers
    never finishes. Before the shutdown was bounded, the server hung there for ever after
    re-queueing its job, without a "stopped" line. Now that step is given up on, the job's
    re-queue is committed first, and the process exits 0 within the grace plus the margin."""
    server, job_id, args = await interrupt_hung_job(launch, tmp_path)
    probers = children(server.pid)
    assert probers, "no prober process"
    held = [os.open(f"/proc/{pid}/fd/1", os.O_WRONLY | os.O_NONBLOCK) for pid in probers]
    try:
        code, seconds = await stop_and_time(server)
    finally:
        for fd in held:
            os.close(fd)
    log = server.stderr_text()
    assert code == 0, server.tail()
    assert seconds <= GRACE + EXIT_ALLOWANCE, f"exited {seconds:.2f}s after SIGTERM"
    assert f"job {job_id} re-queued (the server shut down" in log, server.tail()
    assert "shutdown: closing the probers did not finish" in log, server.tail()
    assert "stopped" in log and "Traceback" not in log, server.tail()
    await run_again(launch, server, job_id, args)
    record_figures(
        "test_drain_hung_prober_pipe", exit_code=code, exit_after_seconds=round(seconds, 2)
    )


@pytest.mark.slow
async def test_a_locked_database_cannot_hold_the_exit(launch: Launcher, tmp_path: Path) -> None:
    """Another process holds the database's write lock through the shutdown: the interrupted
    job's re-queue cannot be committed (each write waits out SQLite's 5 s busy timeout) and the
    writer cannot finish. The process still exits within the grace plus the margin, with exit
    code 1 and log lines naming the steps that overran; the job, still RUNNING in the database,
    is not lost: the next start re-queues it and it runs to the end."""
    server, job_id, args = await interrupt_hung_job(launch, tmp_path)
    lock = sqlite3.connect(server.db, isolation_level=None, timeout=10)
    try:
        lock.execute("BEGIN IMMEDIATE")
        code, seconds = await stop_and_time(server)
    finally:
        lock.rollback()
        lock.close()
    log = server.stderr_text()
    assert code == 1, server.tail()
    assert seconds <= GRACE + EXIT_ALLOWANCE, f"exited {seconds:.2f}s after SIGTERM"
    assert "shutdown: re-queueing the interrupted jobs did not finish" in log, server.tail()
    assert "shutdown: closing the database (committing queued writes) did not finish" in log
    assert "stopped" in log, server.tail()
    await run_again(launch, server, job_id, args)
    record_figures(
        "test_drain_locked_database", exit_code=code, exit_after_seconds=round(seconds, 2)
    )
