"""The job model and the queue: ids, options, timeouts, cancellation, bounds, idempotency,
priorities, listing and deleting."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import grpc
import pytest

from mediascan.server.testing import (
    duration,
    field_violations,
    final_job,
    job_seconds,
    retry_delay,
    rich_status,
    wait_for_progress,
    wait_for_running,
    watch_events,
)
from mediascan.v1 import scan_pb2

#: The contract holds on both backends (tests/conftest.py `backend`).
pytestmark = pytest.mark.both_backends

QUEUED = scan_pb2.JOB_STATE_QUEUED
RUNNING = scan_pb2.JOB_STATE_RUNNING
SUCCEEDED = scan_pb2.JOB_STATE_SUCCEEDED
CANCELLED = scan_pb2.JOB_STATE_CANCELLED
TIMED_OUT = scan_pb2.JOB_STATE_TIMED_OUT

#: A short grace so that servers holding a long job stop quickly at teardown.
QUICK_STOP = {"shutdown_grace": 0.5}


async def submit(stub: Any, path: Path | str, **fields: Any) -> Any:
    return await stub.SubmitScan(scan_pb2.SubmitScanRequest(path=str(path), **fields))


async def start_blocker(stub: Any, folder: Path) -> str:
    """Submit a long scan and wait until a worker runs it."""
    response = await submit(stub, folder)
    await wait_for_running(stub, response.job_id)
    return str(response.job_id)


async def get(stub: Any, job_id: str) -> Any:
    return await stub.GetJob(scan_pb2.GetJobRequest(job_id=job_id))


async def cancel(stub: Any, job_id: str) -> Any:
    return await stub.CancelJob(scan_pb2.CancelJobRequest(job_id=job_id))


def assert_counts_add_up(job: Any) -> None:
    """Every handled file is counted once: added, updated, unchanged or failed."""
    result, progress = job.result, job.progress
    counted = result.added + result.updated + result.unchanged + result.failed
    assert counted == result.files_total, f"counts {counted} != files_total: {result}"
    assert (progress.added, progress.updated, progress.unchanged, progress.failed) == (
        result.added,
        result.updated,
        result.unchanged,
        result.failed,
    ), (progress, result)


def file_count(folder: Path) -> int:
    return sum(1 for _ in folder.iterdir())


async def count_videos(stub: Any, prefix: Path) -> int:
    total, token = 0, ""
    while True:
        page = await stub.ListVideos(
            scan_pb2.ListVideosRequest(
                path_prefix=str(prefix.resolve()), page_size=1000, page_token=token
            )
        )
        total += len(page.videos)
        token = page.next_page_token
        if not token:
            return total


async def test_new_job_is_queued_with_defaults(
    make_server: Any, connect: Any, small_folders: list[Path]
) -> None:
    server = await make_server(default_timeout=45.0)
    stub = await connect(server.address)
    folder = small_folders[0]
    response = await submit(stub, folder)
    assert re.fullmatch(r"j_[0-9A-Za-z]{26}", response.job_id), response.job_id
    job = response.job
    assert job.job_id == response.job_id
    assert job.state == QUEUED
    assert job.attempt == 1
    assert job.path == str(folder.resolve())
    assert job.options.recursive is True
    assert job.options.follow_symlinks is False
    assert job.options.full is False
    assert job.options.priority == 0
    assert job.options.timeout.ToNanoseconds() == 45 * 10**9
    assert job.HasField("create_time")
    assert not job.HasField("end_time")
    assert not job.HasField("result")
    assert job.last_sequence >= 1
    assert not response.deduplicated

    final = await final_job(stub, response.job_id)
    assert final.state == SUCCEEDED
    assert final.create_time == job.create_time
    assert final.attempt == 1
    assert await get(stub, response.job_id) == final


async def test_timeout_defaults_and_caps(
    make_server: Any, connect: Any, small_folders: list[Path]
) -> None:
    server = await make_server(default_timeout=1.5, max_timeout=2.0)
    stub = await connect(server.address)
    default = await submit(stub, small_folders[0])
    assert default.job.options.timeout.ToNanoseconds() == 1_500_000_000
    capped = await submit(stub, small_folders[1], timeout=duration(3600))
    assert capped.job.options.timeout.ToNanoseconds() == 2_000_000_000
    shorter = await submit(stub, small_folders[2], timeout=duration(0.5))
    assert shorter.job.options.timeout.ToNanoseconds() == 500_000_000


async def test_job_that_outlives_its_timeout_ends_timed_out_with_partial_counts(
    make_server: Any, connect: Any, big_folder: Path
) -> None:
    server = await make_server(**QUICK_STOP)
    stub = await connect(server.address)
    response = await submit(stub, big_folder, timeout=duration(0.5))
    job = await final_job(stub, response.job_id)

    assert job.state == TIMED_OUT, job
    assert job.error.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0], job.error
    assert "0.5s" in job.error.message, job.error.message  # names the limit it hit
    assert job.HasField("result")
    done = job.progress.files_done
    # Part of the folder, perhaps none of it: a busy machine may spend the whole 0.5 s before
    # the first probe ends.
    assert 0 <= done < file_count(big_folder), job.progress
    assert_counts_add_up(job)
    assert job.result.files_total == done
    assert 0 <= job.result.added <= done
    # It ran until its timeout (by the server's clock), not to the end of the folder (above).
    assert job_seconds(job) >= 0.45, job
    # What the job stored before the deadline stays in the library.
    assert await count_videos(stub, big_folder) == job.result.added


async def test_cancel_queued_job_is_cancelled_at_once_and_never_runs(
    make_server: Any, connect: Any, big_folder: Path, small_folders: list[Path]
) -> None:
    server = await make_server(workers=1, **QUICK_STOP)
    stub = await connect(server.address)
    blocker = await start_blocker(stub, big_folder)
    queued = await submit(stub, small_folders[0])
    assert queued.job.state == QUEUED
    assert queued.job.last_sequence == 1  # only its creation so far

    cancelled = await cancel(stub, queued.job_id)
    assert cancelled.state == CANCELLED
    assert cancelled.error.code == grpc.StatusCode.CANCELLED.value[0]
    assert cancelled.HasField("end_time")
    assert not cancelled.HasField("start_time")
    assert cancelled.progress.files_done == 0
    # Idempotent: a second cancel returns the same job.
    assert await cancel(stub, queued.job_id) == cancelled
    assert await get(stub, queued.job_id) == cancelled

    # Its stream: one snapshot of the cancelled job, then the stream closes.
    events = await watch_events(stub, queued.job_id, timeout=10)
    assert len(events) == 1
    assert events[0].snapshot.job.state == CANCELLED
    # Replaying its whole log shows it went QUEUED -> CANCELLED, never RUNNING.
    log = await watch_events(stub, queued.job_id, after_sequence=1, timeout=10)
    changes = [e.state_change for e in log if e.WhichOneof("kind") == "state_change"]
    assert [(c.from_state, c.to_state) for c in changes] == [(QUEUED, CANCELLED)]

    # The blocker was never disturbed.
    assert (await get(stub, blocker)).state == RUNNING
    await cancel(stub, blocker)


async def test_cancel_running_job_keeps_counts_so_far(
    make_server: Any, connect: Any, big_folder: Path
) -> None:
    server = await make_server(**QUICK_STOP)
    stub = await connect(server.address)
    response = await submit(stub, big_folder)
    seen = await wait_for_progress(stub, response.job_id, files_done=1)

    answer = await cancel(stub, response.job_id)
    assert answer.job_id == response.job_id
    assert answer.state in (RUNNING, CANCELLED)
    job = await final_job(stub, response.job_id, timeout=30)

    assert job.state == CANCELLED, job
    assert job.error.code == grpc.StatusCode.CANCELLED.value[0]
    assert job.HasField("result") and job.HasField("start_time") and job.HasField("end_time")
    assert seen.files_done <= job.progress.files_done < file_count(big_folder)
    assert_counts_add_up(job)
    assert job.result.files_total == job.progress.files_done
    assert job.result.added > 0
    assert await count_videos(stub, big_folder) == job.result.added
    # A terminal state never changes.
    assert await cancel(stub, response.job_id) == job


async def test_cancel_finished_job_returns_it_unchanged(
    stub: Any, small_folders: list[Path]
) -> None:
    response = await submit(stub, small_folders[0])
    finished = await final_job(stub, response.job_id)
    assert finished.state == SUCCEEDED
    before = await get(stub, response.job_id)
    assert await cancel(stub, response.job_id) == before
    assert await get(stub, response.job_id) == before


async def test_full_queue_answers_resource_exhausted_with_retry_info(
    make_server: Any, connect: Any, big_folder: Path, small_folders: list[Path]
) -> None:
    server = await make_server(workers=1, max_queued=2, **QUICK_STOP)
    stub = await connect(server.address)
    blocker = await start_blocker(stub, big_folder)  # running: not counted as queued
    first = await submit(stub, small_folders[0])
    await submit(stub, small_folders[1])

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await submit(stub, small_folders[2])
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert info.value.details()
    assert rich_status(info.value) is not None
    delay = retry_delay(info.value)
    assert delay is not None, "no google.rpc.RetryInfo detail"
    assert delay > 0

    # A rejected submit left nothing behind.
    listed = await stub.ListJobs(scan_pb2.ListJobsRequest())
    assert len(listed.jobs) == 3

    # Room again once a queued job is gone.
    await cancel(stub, first.job_id)
    third = await submit(stub, small_folders[2])
    assert third.job.state == QUEUED
    await cancel(stub, blocker)


async def test_request_id_returns_the_same_job(stub: Any, small_folders: list[Path]) -> None:
    request = {"path": str(small_folders[0]), "request_id": "0b6e3c1e-retry-1", "priority": 3}
    first = await stub.SubmitScan(scan_pb2.SubmitScanRequest(**request))
    again = await stub.SubmitScan(scan_pb2.SubmitScanRequest(**request))
    assert again.job_id == first.job_id
    assert again.job.request_id == "0b6e3c1e-retry-1"

    finished = await final_job(stub, first.job_id)
    late = await stub.SubmitScan(scan_pb2.SubmitScanRequest(**request))
    assert late.job_id == first.job_id
    assert late.job.state == finished.state == SUCCEEDED

    listed = await stub.ListJobs(scan_pb2.ListJobsRequest())
    assert [j.job_id for j in listed.jobs] == [first.job_id]


@pytest.mark.parametrize(
    "change",
    [{"path": 1}, {"recursive": False}, {"priority": 4}, {"full": True}],
    ids=["path", "recursive", "priority", "full"],
)
async def test_request_id_with_a_different_request_is_invalid(
    stub: Any, small_folders: list[Path], change: dict[str, Any]
) -> None:
    request: dict[str, Any] = {
        "path": str(small_folders[0]),
        "request_id": "same-id",
        "priority": 3,
    }
    first = await stub.SubmitScan(scan_pb2.SubmitScanRequest(**request))
    if "path" in change:
        change = {"path": str(small_folders[change["path"]])}
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.SubmitScan(scan_pb2.SubmitScanRequest(**{**request, **change}))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "request_id" in field_violations(info.value)
    # The first job is untouched.
    assert (await get(stub, first.job_id)).request_id == "same-id"


async def test_same_scan_while_active_is_deduplicated(
    make_server: Any, connect: Any, big_folder: Path, small_folders: list[Path]
) -> None:
    server = await make_server(workers=1, **QUICK_STOP)
    stub = await connect(server.address)
    blocker = await start_blocker(stub, big_folder)
    first = await submit(stub, small_folders[0])
    same = await submit(stub, small_folders[0])
    assert same.job_id == first.job_id
    assert same.deduplicated
    other_options = await submit(stub, small_folders[0], recursive=False)
    assert other_options.job_id != first.job_id
    assert not other_options.deduplicated

    running_again = await submit(stub, big_folder)
    assert running_again.job_id == blocker
    assert running_again.deduplicated

    await cancel(stub, first.job_id)
    fresh = await submit(stub, small_folders[0])
    assert fresh.job_id != first.job_id
    assert not fresh.deduplicated
    await cancel(stub, blocker)


async def test_concurrent_identical_submits_make_one_job(
    make_server: Any, connect: Any, big_folder: Path, small_folders: list[Path]
) -> None:
    """Submits racing each other (a client's retry storm) join one job: the later ones wait for
    the first one's insert instead of passing the dedup check before it registers."""
    server = await make_server(workers=1, **QUICK_STOP)
    stub = await connect(server.address)
    blocker = await start_blocker(stub, big_folder)
    request = scan_pb2.SubmitScanRequest(path=str(small_folders[1]))
    responses = await asyncio.gather(*(stub.SubmitScan(request) for _ in range(20)))
    assert len({response.job_id for response in responses}) == 1
    assert sum(response.deduplicated for response in responses) == 19
    listed = await stub.ListJobs(scan_pb2.ListJobsRequest(state=scan_pb2.JOB_STATE_QUEUED))
    assert [job.job_id for job in listed.jobs] == [responses[0].job_id]
    await cancel(stub, blocker)


async def test_higher_priority_runs_first_then_submission_order(
    make_server: Any, connect: Any, big_folder: Path, small_folders: list[Path]
) -> None:
    server = await make_server(workers=1, **QUICK_STOP)
    stub = await connect(server.address)
    blocker = await start_blocker(stub, big_folder)
    low = await submit(stub, small_folders[0], priority=-5)
    first = await submit(stub, small_folders[1])
    second = await submit(stub, small_folders[2])
    urgent = await submit(stub, small_folders[3], priority=10)
    await cancel(stub, blocker)

    jobs = [await final_job(stub, r.job_id) for r in (low, first, second, urgent)]
    assert all(j.state == SUCCEEDED for j in jobs)
    by_start = sorted(jobs, key=lambda j: j.start_time.ToNanoseconds())
    assert [j.job_id for j in by_start] == [
        urgent.job_id,
        first.job_id,
        second.job_id,
        low.job_id,
    ]
    assert all(j.options.priority == p for j, p in zip(jobs, (-5, 0, 0, 10), strict=True))


async def test_list_jobs_pages_newest_first_and_filters_by_state(
    make_server: Any, connect: Any, big_folder: Path, small_folders: list[Path]
) -> None:
    server = await make_server(workers=1, **QUICK_STOP)
    stub = await connect(server.address)
    blocker = await start_blocker(stub, big_folder)
    q1, q2, q3, q4 = [(await submit(stub, f)).job_id for f in small_folders[:4]]
    await cancel(stub, q2)
    newest_first = [q4, q3, q2, q1, blocker]

    ids: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await stub.ListJobs(scan_pb2.ListJobsRequest(page_size=2, page_token=token))
        pages += 1
        assert len(page.jobs) <= 2
        ids.extend(j.job_id for j in page.jobs)
        token = page.next_page_token
        if not token:
            break
        assert pages < 10
    assert ids == newest_first
    assert pages == 3

    everything = await stub.ListJobs(scan_pb2.ListJobsRequest())
    assert [j.job_id for j in everything.jobs] == newest_first
    assert not everything.next_page_token

    def state_ids(response: Any) -> list[str]:
        return [j.job_id for j in response.jobs]

    queued = await stub.ListJobs(scan_pb2.ListJobsRequest(state=QUEUED))
    assert state_ids(queued) == [q4, q3, q1]
    assert all(j.state == QUEUED for j in queued.jobs)
    running = await stub.ListJobs(scan_pb2.ListJobsRequest(state=RUNNING))
    assert state_ids(running) == [blocker]
    cancelled = await stub.ListJobs(scan_pb2.ListJobsRequest(state=CANCELLED))
    assert state_ids(cancelled) == [q2]

    # Paging a filtered list keeps the filter.
    first_page = await stub.ListJobs(scan_pb2.ListJobsRequest(state=QUEUED, page_size=2))
    assert state_ids(first_page) == [q4, q3]
    second_page = await stub.ListJobs(
        scan_pb2.ListJobsRequest(state=QUEUED, page_size=2, page_token=first_page.next_page_token)
    )
    assert state_ids(second_page) == [q1]
    assert not second_page.next_page_token
    await cancel(stub, blocker)


async def test_delete_job(
    make_server: Any, connect: Any, big_folder: Path, small_folders: list[Path]
) -> None:
    server = await make_server(workers=1, **QUICK_STOP)
    stub = await connect(server.address)
    blocker = await start_blocker(stub, big_folder)
    queued = (await submit(stub, small_folders[0])).job_id

    for active in (blocker, queued):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.DeleteJob(scan_pb2.DeleteJobRequest(job_id=active))
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert info.value.details()
        assert (await get(stub, active)).state in (QUEUED, RUNNING)

    await cancel(stub, blocker)
    assert (await final_job(stub, blocker)).state == CANCELLED
    assert (await final_job(stub, queued)).state == SUCCEEDED

    for finished in (blocker, queued):
        await stub.DeleteJob(scan_pb2.DeleteJobRequest(job_id=finished))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await get(stub, finished)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await watch_events(stub, finished, timeout=10)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.DeleteJob(scan_pb2.DeleteJobRequest(job_id=finished))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert not (await stub.ListJobs(scan_pb2.ListJobsRequest())).jobs


async def test_a_job_names_the_node_that_ran_it(
    make_server: Any, connect: Any, small_folders: list[Path]
) -> None:
    server = await make_server(node_name="node-7")
    stub = await connect(server.address)
    response = await submit(stub, small_folders[0])
    assert response.job.node == ""  # queued: no node has claimed it yet
    job = await final_job(stub, response.job_id)
    assert job.state == SUCCEEDED
    assert job.node == "node-7"
