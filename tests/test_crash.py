"""Crash (issue 5.2): `kill -9` a server with 10 scans running and more queued, twice (the
second time while it recovers), then start it again. Every accepted job reaches a terminal state
exactly once, no job ever ran twice at once, the database passes SQLite's integrity check at each
crash, and the library equals what a clean server scanning the same folders finds: no
half-written or lost rows."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from _library_helpers import library
from _robust import (
    QUEUED,
    RUNNING,
    SUCCEEDED,
    Launcher,
    all_jobs,
    channel_to,
    check_database_copy,
    check_history,
    job_history,
    launch_fixture,  # noqa: F401 - provides the `launch` fixture
    record_figures,
)

from mediascan.server.testing import SLOW_PROBE, event_job, final_job, make_many, wait_for_event
from mediascan.v1 import scan_pb2

#: Scans running at the first crash (one worker each) and scans queued behind them.
RUNNING_SCANS = 10
QUEUED_SCANS = 5
#: Videos per running scan, and per queued scan. Eight audio streams slow each probe down, so
#: that the ten scans are all still running when the server is killed.
RUNNING_FILES = 200
QUEUED_FILES = 20
TIMEOUT = 90.0


def added_rows(event: Any) -> bool:
    """The event shows rows committed to the library by this attempt."""
    if event.WhichOneof("kind") == "progress":
        return event.progress.added > 0
    job = event_job(event)
    return job is not None and job.state == RUNNING and job.progress.added > 0


async def wait_all(stub: Any, job_ids: list[str], predicate: Any) -> None:
    await asyncio.gather(
        *(wait_for_event(stub, job_id, predicate, timeout=TIMEOUT) for job_id in job_ids)
    )


@pytest.mark.slow
@pytest.mark.xdist_group("heavy")
async def test_kill_9_twice_loses_nothing_and_leaves_a_sound_library(
    launch: Launcher, tmp_path: Path
) -> None:
    base = tmp_path / "media"
    running_folders = [base / f"run{i:02d}" for i in range(RUNNING_SCANS)]
    queued_folders = [base / f"queued{i}" for i in range(QUEUED_SCANS)]
    for folder in running_folders:
        make_many(folder, RUNNING_FILES, **SLOW_PROBE)
    for folder in queued_folders:
        make_many(folder, QUEUED_FILES)
    db = tmp_path / "crash.db"
    args = ("--workers", str(RUNNING_SCANS), "--probe-workers", "2")

    # 1. Ten scans running, five queued behind them; kill -9 once every running scan has
    #    committed library rows (so that the crash cuts through batches of upserts).
    first = await launch(*args, db=db)
    async with channel_to(first.address) as (_, stub):
        running_ids = [
            (await stub.SubmitScan(scan_pb2.SubmitScanRequest(path=str(f)))).job_id
            for f in running_folders
        ]
        queued_ids = [
            (await stub.SubmitScan(scan_pb2.SubmitScanRequest(path=str(f)))).job_id
            for f in queued_folders
        ]
        await wait_all(stub, running_ids, added_rows)
        states = [
            (await stub.GetJob(scan_pb2.GetJobRequest(job_id=j))).state
            for j in running_ids + queued_ids
        ]
        first.kill()
    assert states == [RUNNING] * RUNNING_SCANS + [QUEUED] * QUEUED_SCANS, states
    assert await first.wait(10) == -signal.SIGKILL
    accepted = running_ids + queued_ids

    crash1 = await asyncio.to_thread(check_database_copy, db)
    assert crash1["integrity"] == ["ok"], crash1["integrity"]
    assert crash1["states"] == {RUNNING: RUNNING_SCANS, QUEUED: QUEUED_SCANS}, crash1["states"]

    # 2. Restart; kill -9 again while the recovered scans run their second attempt.
    second = await launch(*args, db=db)
    async with channel_to(second.address) as (_, stub):
        recovered = {j: await stub.GetJob(scan_pb2.GetJobRequest(job_id=j)) for j in accepted}
        await wait_all(stub, running_ids, added_rows)
        second.kill()
    assert await second.wait(10) == -signal.SIGKILL
    assert all(recovered[j].attempt == 2 for j in running_ids), recovered
    assert all(recovered[j].attempt == 1 for j in queued_ids), recovered

    crash2 = await asyncio.to_thread(check_database_copy, db)
    assert crash2["integrity"] == ["ok"], crash2["integrity"]
    assert sum(crash2["states"].values()) == len(accepted), crash2["states"]

    # 3. Restart and let everything finish.
    started = time.monotonic()
    third = await launch(*args, db=db)
    async with channel_to(third.address) as (_, stub):
        finals = await asyncio.gather(*(final_job(stub, j, timeout=TIMEOUT) for j in accepted))
        recovery_seconds = time.monotonic() - started
        histories = {j: check_history(j, await job_history(stub, j)) for j in accepted}
        listed = await all_jobs(stub)
        after = await library(stub, base.resolve())
    third.terminate()
    assert await third.wait(30) == 0

    assert [job.state for job in finals] == [SUCCEEDED] * len(accepted), finals
    for job, folder in zip(finals, running_folders + queued_folders, strict=True):
        files = RUNNING_FILES if folder in running_folders else QUEUED_FILES
        assert job.result.files_total == files, job
        assert job.result.failed == 0, job.result.file_errors
    # Every accepted job is listed once, terminal; nothing else appeared.
    assert sorted(j.job_id for j in listed) == sorted(accepted)
    requeues = {j: h["requeues"] for j, h in histories.items()}
    assert all(1 <= requeues[j] <= 2 for j in running_ids), requeues
    assert all(h["runs"] == h["requeues"] + 1 for h in histories.values()), histories

    final_check = await asyncio.to_thread(check_database_copy, db)
    assert final_check["integrity"] == ["ok"]
    assert final_check["states"] == {SUCCEEDED: len(accepted)}

    # 4. A clean server, on a new database, scanning the same folders, finds the same library.
    clean = await launch("--workers", "4", db=tmp_path / "clean.db")
    async with channel_to(clean.address) as (_, stub):
        for folder in running_folders + queued_folders:
            job_id = (await stub.SubmitScan(scan_pb2.SubmitScanRequest(path=str(folder)))).job_id
            assert (await final_job(stub, job_id, timeout=TIMEOUT)).state == SUCCEEDED
        reference = await library(stub, base.resolve())
    expected = RUNNING_SCANS * RUNNING_FILES + QUEUED_SCANS * QUEUED_FILES
    assert len(reference) == expected
    assert after == reference, {
        "missing": sorted(set(reference) - set(after))[:5],
        "extra": sorted(set(after) - set(reference))[:5],
        "different": [p for p in reference if p in after and after[p] != reference[p]][:5],
    }

    record_figures(
        "test_crash",
        crashes=2,
        running_at_first_crash=RUNNING_SCANS,
        queued_at_first_crash=QUEUED_SCANS,
        jobs_accepted=len(accepted),
        jobs_succeeded=sum(job.state == SUCCEEDED for job in finals),
        jobs_lost=len(accepted) - len(listed),
        requeues=sum(requeues.values()),
        videos_in_library=len(after),
        library_rows_differing_from_clean_scan=sum(
            after.get(p) != v for p in reference for v in [reference[p]]
        ),
        integrity_checks=[crash1["integrity"][0], crash2["integrity"][0], "ok"],
        videos_committed_at_crashes=[crash1["videos"], crash2["videos"]],
        recovery_seconds=round(recovery_seconds, 2),
    )
