"""One server per database (issue 11.5): a second `mediascan-server` started on the `--db` of a
running one refuses to start at once (exit 2, one line naming the other server and the lock
file), before it opens the database; the first one goes on as if nothing happened (its running
scan, its queued jobs)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest
from _robust import (
    BIN,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    Launcher,
    _server_env,
    channel_to,
    hang_env,
    hung_folder,
    launch_fixture,  # noqa: F401 - provides the `launch` fixture
)

from mediascan.server.dblock import DatabaseLock, DatabaseLocked, lock_path
from mediascan.server.testing import final_job, make_many, wait_for_running
from mediascan.v1 import scan_pb2

REFUSAL_TIMEOUT = 30.0  # generous: a busy machine; the refusal itself takes one flock


def run_second(db: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "mediascan-server"), "--listen", "127.0.0.1:0", "--db", str(db)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=_server_env(None),
        timeout=REFUSAL_TIMEOUT,
        cwd=tmp_path,
    )


async def test_second_server_refuses_and_first_is_unaffected(
    launch: Launcher, tmp_path: Path
) -> None:
    db = tmp_path / "shared.db"
    first = await launch("--workers", "1", db=db, env=hang_env())
    hung = hung_folder(tmp_path)
    queued = [tmp_path / f"q{n}" for n in range(3)]
    for folder in queued:
        make_many(folder, 2)
    async with channel_to(first.address) as (_, stub):
        running = (await stub.SubmitScan(scan_pb2.SubmitScanRequest(path=str(hung)))).job_id
        await wait_for_running(stub, running)
        waiting = [
            (await stub.SubmitScan(scan_pb2.SubmitScanRequest(path=str(folder)))).job_id
            for folder in queued
        ]
        before = [await stub.GetJob(scan_pb2.GetJobRequest(job_id=j)) for j in [running, *waiting]]

        for _ in range(3):  # every try is refused the same way
            second = await asyncio.to_thread(run_second, db, tmp_path)
            assert second.returncode == 2, second.stderr
            lines = second.stderr.strip().splitlines()
            assert len(lines) == 1, second.stderr
            assert f"pid {first.pid}" in lines[0]
            assert first.address in lines[0]
            assert str(lock_path(db)) in lines[0]
            assert second.stdout == ""  # never said it was listening

        assert first.alive()
        for old in before:
            job = await stub.GetJob(scan_pb2.GetJobRequest(job_id=old.job_id))
            assert job.state == (RUNNING if job.job_id == running else QUEUED)
            assert (job.attempt, job.state) == (old.attempt, old.state)
        await stub.CancelJob(scan_pb2.CancelJobRequest(job_id=running))
        for job_id in waiting:
            job = await final_job(stub, job_id)
            assert job.state == SUCCEEDED and job.attempt == 1, job  # run once, by the first
            assert job.result.added == 2
    log = first.stderr_text()
    assert "Traceback" not in log, log
    assert not [line for line in log.splitlines() if " ERROR " in line or " CRITICAL " in line]


async def test_lock_names_its_holder_and_dies_with_it(tmp_path: Path) -> None:
    """In one process: the lock file says who holds it; a second lock on the same database is
    refused; once released (or its holder gone) it can be taken again."""
    db = tmp_path / "sub" / "library.db"
    first = DatabaseLock(db)
    first.acquire("127.0.0.1:1234")
    holder = json.loads(lock_path(db).read_text())
    assert holder["listen"] == "127.0.0.1:1234" and isinstance(holder["pid"], int)
    first.update(listen="127.0.0.1:5678")
    with pytest.raises(DatabaseLocked, match=r"listening on 127\.0\.0\.1:5678"):
        DatabaseLock(db).acquire()
    link = tmp_path / "link.db"
    link.symlink_to(db)
    with pytest.raises(DatabaseLocked):  # the same database under another name
        DatabaseLock(link).acquire()
    first.release()
    again = DatabaseLock(db)
    again.acquire()
    again.release()
