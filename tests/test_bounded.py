"""Bounded responses and streams: a job with the most file errors the server keeps, under the
longest paths, still fits every response a default client accepts (4 MiB), its file errors are
read page by page, and WatchJob streams that never read cannot make the server hold more than
its --stream-buffer-budget."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import SpawnedServer
from test_cli import run as run_cli

from mediascan.server.store import Store
from mediascan.v1 import scan_pb2, scan_pb2_grpc

#: --max-file-errors (the default): the most file errors a job keeps.
MAX_FILE_ERRORS = 1000
#: A default gRPC client refuses messages larger than this.
DEFAULT_CLIENT_LIMIT = 4 * 1024 * 1024


def _deep_folder(base: Path, length: int) -> Path:
    """A folder whose absolute path is `length` characters long (components of at most 250)."""
    folder = base
    while len(str(folder)) < length:
        folder = folder / ("d" * max(1, min(250, length - len(str(folder)) - 1)))
    folder.mkdir(parents=True)
    return folder


@pytest.fixture(scope="module")
def long_broken(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MAX_FILE_ERRORS broken .mp4 files whose paths are about 4,000 characters long."""
    top = tmp_path_factory.mktemp("long")
    folder = _deep_folder(top, 3780)
    for i in range(MAX_FILE_ERRORS):
        name = f"broken-{i:04d}-" + "x" * (4000 - len(str(folder)) - 18) + ".mp4"
        (folder / name).write_bytes(b"this is not a video")
    return top


async def _scan_to_end(stub: Any, path: Path) -> scan_pb2.Job:
    response = await stub.SubmitScan(scan_pb2.SubmitScanRequest(path=str(path)), timeout=30)
    request = scan_pb2.WatchJobRequest(job_id=response.job_id)
    async for event in stub.WatchJob(request, timeout=300):
        kind = event.WhichOneof("kind")
        job = event.snapshot.job if kind == "snapshot" else event.state_change.job
        if kind in ("snapshot", "state_change") and job.HasField("end_time"):
            return job
    raise AssertionError("the stream ended before the job")


@contextlib.asynccontextmanager
async def _stub(address: str, **options: int) -> AsyncIterator[scan_pb2_grpc.ScanServiceStub]:
    """A stub on a channel with its own connection and gRPC's default limits (4 MiB)."""
    channel = grpc.aio.insecure_channel(
        address, options=[("grpc.use_local_subchannel_pool", 1), *options.items()]
    )
    try:
        yield scan_pb2_grpc.ScanServiceStub(channel)
    finally:
        await channel.close(None)


@pytest.mark.slow
async def test_jobs_with_most_errors_under_long_paths_fit_a_default_client(
    spawn_server: Any, long_broken: Path
) -> None:
    """Three jobs with 1,000 file errors each under 4,000-character paths (12 MB of errors):
    every Job stays under 256 KiB, the default ListJobs page fits a default client (before,
    it was 5.7 MB and the client refused it), `mediascan jobs` lists them, and ListFileErrors
    returns every error exactly once, in bounded pages."""
    server: SpawnedServer = await spawn_server()
    async with _stub(server.address) as stub:
        finals = [await _scan_to_end(stub, long_broken) for _ in range(3)]
        for job in finals:
            assert job.state == scan_pb2.JOB_STATE_SUCCEEDED
            assert job.result.failed == MAX_FILE_ERRORS
            assert job.result.file_error_count == MAX_FILE_ERRORS
            assert job.result.file_errors_truncated
            assert 0 < len(job.result.file_errors) < MAX_FILE_ERRORS
            assert job.ByteSize() < 256 * 1024
            got = await stub.GetJob(scan_pb2.GetJobRequest(job_id=job.job_id), timeout=30)
            assert got.ByteSize() < 256 * 1024

        page = await stub.ListJobs(scan_pb2.ListJobsRequest(), timeout=30)
        assert {job.job_id for job in page.jobs} >= {job.job_id for job in finals}
        assert page.ByteSize() < DEFAULT_CLIENT_LIMIT

        paths: list[str] = []
        request = scan_pb2.ListFileErrorsRequest(job_id=finals[0].job_id, page_size=1000)
        while True:
            errors = await stub.ListFileErrors(request, timeout=30)
            assert errors.ByteSize() < DEFAULT_CLIENT_LIMIT
            assert errors.file_errors
            paths.extend(error.path for error in errors.file_errors)
            if not errors.next_page_token:
                break
            request.page_token = errors.next_page_token
        assert len(paths) == len(set(paths)) == MAX_FILE_ERRORS
        assert all(len(path) > 3900 and path.endswith(".mp4") for path in paths)
        assert [e.path for e in finals[0].result.file_errors] == paths[
            : len(finals[0].result.file_errors)
        ]

    listed = await run_cli("jobs", "--server", server.address)
    assert listed.code == 0, listed.stderr
    assert all(job.job_id in listed.stdout for job in finals)
    errors_cli = await run_cli("errors", finals[0].job_id, "--server", server.address)
    assert errors_cli.code == 0, errors_cli.stderr
    assert errors_cli.stdout.count(".mp4: ") == MAX_FILE_ERRORS


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


#: Server-wide budget the test sets, and what the server may hold beyond it: gRPC's own
#: bookkeeping of 1,000 open calls and the event loop's of their handlers.
BUDGET = 16 * 1024 * 1024
ALLOWANCE = 48 * 1024 * 1024
STREAMS = 1000
CHANNELS = 4


@pytest.mark.slow
async def test_never_reading_streams_stay_within_the_budget(
    spawn_server: Any, long_broken: Path
) -> None:
    """1,000 WatchJob streams of the biggest job the server allows, from clients that never
    read (no BDP probing and a 1 KiB window: every snapshot stays in the server): its memory
    grows by less than its stream budget plus an allowance for the calls themselves (before,
    every stream held its own copy of the multi-megabyte job: gigabytes), the streams past the
    budget end with RESOURCE_EXHAUSTED naming after_sequence, and another client's GetJob is
    answered meanwhile."""
    server: SpawnedServer = await spawn_server("--stream-buffer-budget", f"{BUDGET}")
    async with _stub(server.address) as stub:
        job = await _scan_to_end(stub, long_broken)
        assert job.result.failed == MAX_FILE_ERRORS
        # One stream read to its end first, so that what every stream shares exists before.
        events = [e async for e in stub.WatchJob(scan_pb2.WatchJobRequest(job_id=job.job_id))]
        assert events[-1].snapshot.job.state == scan_pb2.JOB_STATE_SUCCEEDED
        before = _rss(server.pid)

        hostile = [
            grpc.aio.insecure_channel(
                server.address,
                options=[
                    ("grpc.use_local_subchannel_pool", 1),
                    ("grpc.http2.bdp_probe", 0),
                    ("grpc.http2.lookahead_bytes", 1024),
                    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
                ],
            )
            for _ in range(CHANNELS)
        ]
        try:
            calls = [
                scan_pb2_grpc.ScanServiceStub(hostile[i % CHANNELS]).WatchJob(
                    scan_pb2.WatchJobRequest(job_id=job.job_id)
                )
                for i in range(STREAMS)
            ]
            # Nothing is ever released, so the budget admits this many snapshots; the others
            # end with RESOURCE_EXHAUSTED after their wait for it.
            refused = STREAMS - BUDGET // events[-1].ByteSize()
            codes = [asyncio.ensure_future(call.code()) for call in calls]
            ended: list[Any] = []
            async with asyncio.timeout(240):
                await asyncio.gather(*(call.initial_metadata() for call in calls))
                # Answered while the streams are open.
                got = await stub.GetJob(scan_pb2.GetJobRequest(job_id=job.job_id), timeout=30)
                assert got.job_id == job.job_id
                for code in asyncio.as_completed(codes):
                    ended.append(await code)
                    if len(ended) >= refused:
                        break
            growth = _rss(server.pid) - before
            print(
                f"RSS before {before / 2**20:.1f} MiB, growth {growth / 2**20:.1f} MiB "
                f"with {STREAMS} streams; {len(ended)} ended"
            )
            assert growth < BUDGET + ALLOWANCE, f"the server grew by {growth / 2**20:.0f} MiB"
            assert set(ended) == {grpc.StatusCode.RESOURCE_EXHAUSTED}
            details = [await call.details() for call in calls if call.done()]
            assert all("after_sequence=0" in text for text in details)
            got = await stub.GetJob(scan_pb2.GetJobRequest(job_id=job.job_id), timeout=30)
            assert got.job_id == job.job_id
        finally:
            for code in codes:
                code.cancel()
            for channel in hostile:
                await channel.close(None)


@pytest.mark.timeout(60)
async def test_schema_3_moves_stored_file_errors_out_of_the_job(tmp_path: Path) -> None:
    """A database of schema version 2 keeps every file error in the job's row: opening it
    moves them to the file_errors table (all of them, in order) and leaves the row with the
    counts and the small sample."""
    db = tmp_path / "v2.db"
    job = scan_pb2.Job(job_id="j_old", state=scan_pb2.JOB_STATE_SUCCEEDED, last_sequence=3)
    job.create_time.FromNanoseconds(1)
    for i in range(300):
        job.result.file_errors.add(path=f"/media/{'x' * 3000}/{i:03d}.mp4").status.message = "bad"
    with sqlite3.connect(db) as conn:
        conn.executescript(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
            "INSERT INTO meta VALUES ('schema_version', '2');"
            "CREATE TABLE jobs (job_id TEXT PRIMARY KEY, state INTEGER NOT NULL, "
            "create_ns INTEGER NOT NULL, end_ns INTEGER, request_id TEXT, fingerprint TEXT, "
            "last_sequence INTEGER NOT NULL, job BLOB NOT NULL);"
            "CREATE TABLE requests (request_id TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, "
            "job_id TEXT NOT NULL);"
        )
        conn.execute(
            "INSERT INTO jobs VALUES ('j_old', ?, 1, 2, NULL, NULL, 3, ?)",
            (job.state, job.SerializeToString()),
        )
    conn.close()
    store = Store(db)
    await store.open()
    try:
        migrated = await store.get_job("j_old")
        assert migrated is not None
        assert migrated.result.file_error_count == 300
        assert migrated.result.file_errors_truncated
        assert 0 < len(migrated.result.file_errors) < 30
        assert migrated.ByteSize() < 256 * 1024
        paths: list[str] = []
        after = -1
        while True:
            errors, last = await store.file_errors(
                "j_old", after_seq=after, limit=1000, max_bytes=256 * 1024
            )
            paths.extend(error.path for error in errors)
            if last is None:
                break
            after = last
        assert paths == [error.path for error in job.result.file_errors]
    finally:
        await store.close()
