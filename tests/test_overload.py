"""Overload (issue 5.7): submits at several times what a `mediascan-server` subprocess can run.

- A burst of 5x the queue bound while every worker is busy: exactly the bound is accepted, the
  rest get RESOURCE_EXHAUSTED with a RetryInfo delay (and the QUEUE_FULL reason); then every
  accepted job runs.
- Sustained load: clients that honour RetryInfo keep offering jobs for several seconds at
  several times the completion rate, while others poll GetJob. The queue never holds more than
  its bound (ListJobs, sampled throughout), every GetJob answers within its (generous) deadline,
  and every accepted job, each accepted once (its request_id is retried as is), ends SUCCEEDED.
  GetJob's latency and the overload factor are recorded in the figures, never asserted: how fast
  anything is belongs to `make bench`, against same-run baselines.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest
from _robust import (
    QUEUED,
    SUCCEEDED,
    Launcher,
    all_jobs,
    channel_to,
    hang_env,
    hung_folder,
    launch_fixture,  # noqa: F401 - provides the `launch` fixture
    percentile,
    record_figures,
)
from google.rpc import error_details_pb2

from mediascan.server.testing import (
    duration,
    final_job,
    make_many,
    retry_delay,
    rich_status,
    wait_for_running,
)
from mediascan.v1 import scan_pb2

WORKERS = 2
MAX_QUEUED = 20
BURST = 5 * MAX_QUEUED
#: Sustained phase: how long the clients offer jobs, how many submit and how many poll.
LOAD_SECONDS = 8.0
SUBMITTERS = 60
POLLERS = 4
#: Each GetJob's deadline during the load: it keeps answering (its latency is only recorded).
GET_DEADLINE = 10.0
TIMEOUT = 60.0


def job_request(folder: Path, n: int, request_id: str = "") -> scan_pb2.SubmitScanRequest:
    """The n-th distinct job on `folder`: its own time limit, so that no two are the same
    request (identical active jobs would be deduplicated); a full scan, so that every job probes
    every file."""
    return scan_pb2.SubmitScanRequest(
        path=str(folder), timeout=duration(600 + n), request_id=request_id, full=True
    )


def queue_full_details(error: grpc.aio.AioRpcError) -> tuple[float, str]:
    """The RetryInfo delay and the ErrorInfo reason of a RESOURCE_EXHAUSTED answer."""
    delay = retry_delay(error)
    status = rich_status(error)
    reason = ""
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason = info.reason
    assert delay is not None and delay > 0, f"no RetryInfo delay: {error.details()}"
    return delay, reason


@pytest.mark.slow
async def test_burst_beyond_the_queue_bound(launch: Launcher, tmp_path: Path) -> None:
    folder = tmp_path / "small"
    make_many(folder, 2)
    server = await launch(
        "--workers",
        str(WORKERS),
        "--max-queued",
        str(MAX_QUEUED),
        # One prober per blocker (they stay hung after the cancel), one for the jobs.
        "--probe-workers",
        str(WORKERS + 1),
        "--probe-timeout",
        "120s",
        "--shutdown-grace",
        "0.5s",
        env=hang_env(),
    )
    async with channel_to(server.address) as (_, stub):
        # Both workers busy until cancelled (each blocker's only video hangs the prober).
        blockers = []
        for n in range(WORKERS):
            blocker = (
                await stub.SubmitScan(
                    scan_pb2.SubmitScanRequest(path=str(hung_folder(tmp_path / f"b{n}")))
                )
            ).job_id
            await wait_for_running(stub, blocker)
            blockers.append(blocker)

        async def one(n: int) -> Any:
            try:
                return await stub.SubmitScan(job_request(folder, n))
            except grpc.aio.AioRpcError as error:
                return error

        answers = await asyncio.gather(*(one(n) for n in range(BURST)))
        accepted = [a.job_id for a in answers if isinstance(a, scan_pb2.SubmitScanResponse)]
        refused = [a for a in answers if isinstance(a, grpc.aio.AioRpcError)]
        codes = collections.Counter(e.code().name for e in refused)
        details = [queue_full_details(e) for e in refused]
        queued = await stub.ListJobs(scan_pb2.ListJobsRequest(state=QUEUED, page_size=1000))

        for blocker in blockers:
            await stub.CancelJob(scan_pb2.CancelJobRequest(job_id=blocker))
        finals = await asyncio.gather(*(final_job(stub, j, timeout=TIMEOUT) for j in accepted))

    assert len(accepted) == MAX_QUEUED, (len(accepted), codes)
    assert codes == {"RESOURCE_EXHAUSTED": BURST - MAX_QUEUED}, codes
    assert {reason for _, reason in details} == {"QUEUE_FULL"}
    assert len(queued.jobs) == MAX_QUEUED
    assert [f.state for f in finals] == [SUCCEEDED] * MAX_QUEUED
    record_figures(
        "test_overload.burst",
        burst=BURST,
        queue_bound=MAX_QUEUED,
        accepted=len(accepted),
        refused=dict(codes),
        retry_delays=sorted({round(d, 3) for d, _ in details}),
        accepted_succeeded=sum(f.state == SUCCEEDED for f in finals),
    )


@pytest.mark.slow
@pytest.mark.xdist_group("heavy")
async def test_sustained_overload(launch: Launcher, tmp_path: Path) -> None:
    folder = tmp_path / "jobs"
    make_many(folder, 30, audio_codec="aac", audio_streams=8)
    server = await launch("--workers", str(WORKERS), "--max-queued", str(MAX_QUEUED))
    numbers = itertools.count()
    accepted: dict[str, str] = {}  # request_id -> job_id
    attempts = collections.Counter[str]()
    delays: list[float] = []
    get_latencies: list[float] = []
    queued_samples: list[int] = []

    async with channel_to(server.address) as (_, stub):
        first = (await stub.SubmitScan(job_request(folder, next(numbers)))).job_id
        await final_job(stub, first, timeout=TIMEOUT)
        accepted["first"] = first
        started = time.monotonic()
        deadline = started + LOAD_SECONDS

        async def submitter() -> None:
            while time.monotonic() < deadline:
                n = next(numbers)
                request_id = str(uuid.uuid4())
                request = job_request(folder, n, request_id)
                # One logical job: retried with the same request_id until accepted or time out.
                while time.monotonic() < deadline:
                    try:
                        response = await stub.SubmitScan(request, timeout=10)
                    except grpc.aio.AioRpcError as error:
                        attempts[error.code().name] += 1
                        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
                        delay, _ = queue_full_details(error)
                        delays.append(delay)
                        await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                    else:
                        attempts["OK"] += 1
                        previous = accepted.setdefault(request_id, response.job_id)
                        assert previous == response.job_id
                        break

        async def poller(index: int) -> None:
            for tick in itertools.count():
                if time.monotonic() >= deadline:
                    return
                ids = list(accepted.values())
                job_id = ids[(index + tick * 7) % len(ids)]
                began = time.monotonic()
                await stub.GetJob(scan_pb2.GetJobRequest(job_id=job_id), timeout=GET_DEADLINE)
                get_latencies.append(time.monotonic() - began)

        async def sampler() -> None:
            while time.monotonic() < deadline:
                page = await stub.ListJobs(
                    scan_pb2.ListJobsRequest(state=QUEUED, page_size=1000), timeout=10
                )
                queued_samples.append(len(page.jobs))

        completed_before = len(accepted)
        async with asyncio.timeout(LOAD_SECONDS + 30):
            await asyncio.gather(
                *(submitter() for _ in range(SUBMITTERS)),
                *(poller(i) for i in range(POLLERS)),
                sampler(),
            )
        load_seconds = time.monotonic() - started
        succeeded_during_load = (
            sum(1 for job in await all_jobs(stub) if job.state == SUCCEEDED) - completed_before
        )
        # Everything accepted runs to the end.
        finals = await asyncio.gather(
            *(final_job(stub, job_id, timeout=TIMEOUT) for job_id in accepted.values())
        )
        listed = await all_jobs(stub)
    assert server.alive(), server.tail()

    offered_rate = sum(attempts.values()) / load_seconds
    completed_rate = max(succeeded_during_load, 1) / load_seconds
    p50, p99 = percentile(get_latencies, 0.50), percentile(get_latencies, 0.99)
    record_figures(
        "test_overload.sustained",
        seconds=round(load_seconds, 2),
        submit_attempts=dict(attempts),
        offered_per_second=round(offered_rate, 1),
        completed_per_second=round(completed_rate, 1),
        overload_factor=round(offered_rate / completed_rate, 1),
        retry_delay_seconds=[round(min(delays), 3), round(max(delays), 3)] if delays else [],
        queue_bound=MAX_QUEUED,
        max_queued_seen=max(queued_samples),
        queue_samples=len(queued_samples),
        get_job_calls=len(get_latencies),
        get_job_p50_ms=round(p50 * 1000, 1),
        get_job_p99_ms=round(p99 * 1000, 1),
        get_job_max_ms=round(max(get_latencies) * 1000, 1),
        jobs_accepted=len(accepted),
        jobs_succeeded=sum(f.state == SUCCEEDED for f in finals),
        jobs_lost=len(set(accepted.values()) - {j.job_id for j in listed}),
    )
    assert attempts["RESOURCE_EXHAUSTED"] > 0  # the load overflowed the queue
    assert get_latencies, "no GetJob answered during the load"
    # The store shows at most the bound queued, plus the jobs a worker has taken whose RUNNING
    # state is being committed (at most one per worker).
    assert max(queued_samples) <= MAX_QUEUED + WORKERS, max(queued_samples)
    assert [f.state for f in finals] == [SUCCEEDED] * len(finals)
    # Each accepted request is one job, and no other job exists.
    assert sorted(j.job_id for j in listed) == sorted(accepted.values())
