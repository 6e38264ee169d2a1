"""A prober that cannot be replaced (issue 11, item 7): a real `mediascan-server` whose limit of
open descriptors is lowered while it runs (prlimit), so that starting a prober fails with EMFILE.
The files of the killed prober's batch, and every file while no prober runs, fail with a clear
UNAVAILABLE; health is NOT_SERVING; the scanned folder itself cannot be opened, so a new scan
FAILS rather than succeeding with 0 files; once the limit is raised again the pool starts a
prober, health is SERVING and scans work. The failures are counted in the metrics."""

from __future__ import annotations

import asyncio
import os
import re
import resource
import signal
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from _library_helpers import (
    FAILED,
    SUCCEEDED,
    code_of,
    copies,
    errors_by_path,
    progress_of,
    real,
    scan,
    submit,
    tiny_video,
    walk_ended,
)
from _robust import FAULT_ENV, HANG_MARK, channel_to, launch_fixture
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mediascan.server.testing import final_job, wait_for_event

__all__ = ["launch_fixture"]

OTHERS = 40  # videos in a subfolder: the walk hands them over after the hung one
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _is_prober(cmdline: bytes) -> bool:
    """The real prober, or the test prober this test's server runs."""
    return b"mediascan.server.probe\0" in cmdline or b"testing_prober\0probe\0" in cmdline


def prober_of(server_pid: int) -> int:
    """The pid of the server's only prober process."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == server_pid and state != "Z" and _is_prober(cmdline):
            return int(entry)
    raise AssertionError("the server has no prober process")


async def health_changes(channel: grpc.aio.Channel) -> AsyncIterator[int]:
    async for answer in health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest()):
        yield answer.status


async def next_status(stream: AsyncIterator[int], wanted: int) -> None:
    async with asyncio.timeout(60):
        async for status in stream:
            if status == wanted:
                return


def metrics_address(stderr: str) -> str:
    match = re.search(r"metrics on http://(\S+)/metrics", stderr)
    assert match, stderr
    return match[1]


def scrape(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as answer:
        return str(answer.read().decode())


@pytest.mark.slow
async def test_a_prober_that_cannot_be_started_fails_its_files_and_the_pool_recovers(
    launch: Any, tmp_path: Path
) -> None:
    hung_folder = tmp_path / "lib"
    hung = tiny_video(hung_folder / f"{HANG_MARK}.mp4")  # the root is listed first
    others = copies(hung, [hung_folder / "sub" / f"v{i:02d}.mp4" for i in range(OTHERS)])
    later = copies(hung, [tmp_path / "later" / f"w{i}.mp4" for i in range(3)])
    server = await launch(
        "--probe-workers",
        "1",
        "--probe-timeout",
        "120s",
        "--probe-concurrency",
        "64",  # every file reaches the pool: the walk ends while the probe hangs
        "--metrics-listen",
        "127.0.0.1:0",
        env={FAULT_ENV: f"hang:{HANG_MARK}"},
    )
    soft, hard = resource.prlimit(server.pid, resource.RLIMIT_NOFILE)
    async with channel_to(server.address) as (channel, stub):
        health = health_changes(channel)
        await next_status(health, SERVING)
        job_id = (await submit(stub, hung_folder, timeout={"seconds": 90})).job_id
        event = await wait_for_event(stub, job_id, walk_ended, timeout=60)
        assert progress_of(event).files_total == OTHERS + 1
        # From now on the server cannot open a single descriptor more.
        resource.prlimit(server.pid, resource.RLIMIT_NOFILE, (3, hard))
        try:
            os.kill(prober_of(server.pid), signal.SIGKILL)
            job = await final_job(stub, job_id, timeout=60)
            await next_status(health, NOT_SERVING)
            # The folder of a new scan cannot be opened: the job fails and says why.
            refused = await scan(stub, later[0].parent, timeout=60)
        finally:
            resource.prlimit(server.pid, resource.RLIMIT_NOFILE, (soft, hard))
        await next_status(health, SERVING)
        again = await scan(stub, later[0].parent, timeout=60)

    assert job.state == SUCCEEDED, job.error
    errors = errors_by_path(job)
    # Its prober was killed from outside: not the file's fault, it went back to the pool (where
    # no prober could start), like the others.
    assert set(errors) == {real(p) for p in [hung, *others]}, errors
    for code, message in errors.values():
        assert code == grpc.StatusCode.UNAVAILABLE, message
        assert "could not start a prober process" in message, message
        assert "Too many open files" in message, message
    assert (job.result.added, job.result.failed) == (0, OTHERS + 1)

    assert refused.state == FAILED, refused
    assert code_of(refused.error) == grpc.StatusCode.UNAVAILABLE, refused.error
    assert "Too many open files" in refused.error.message, refused.error.message
    assert refused.result.files_total == 0

    assert again.state == SUCCEEDED, again.error
    assert again.result.added == len(later)
    metrics = await asyncio.to_thread(scrape, metrics_address(server.stderr_text()))
    failures = re.search(r"^mediascan_prober_spawn_failures_total (\S+)$", metrics, re.M)
    assert failures and float(failures[1]) >= 1, metrics
    assert re.search(r"^mediascan_probers_live 1\.0$", metrics, re.M), metrics
    assert "could not start a prober process" in server.stderr_text()
