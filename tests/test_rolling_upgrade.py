"""A rolling upgrade on PostgreSQL, with the real code of the previous schema version: a node
of that version (taken from git at `PREVIOUS`, the last commit on schema version 2) runs scans;
a node of this version starts on the same database and migrates it; both then run scans side by
side, each answering for the other's jobs; the old node, restarted, refuses the newer schema
with exit status 2 and changes nothing (operations.md, rolling upgrades)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest

from mediascan.server.store.postgres.schema import SCHEMA_VERSION
from mediascan.server.testing import final_job, make_many
from mediascan.v1 import scan_pb2, scan_pb2_grpc

pytestmark = pytest.mark.slow

#: The last commit whose PostgreSQL schema is version 2.
PREVIOUS = "a0068bf"
PREVIOUS_VERSION = 2
REPO = Path(__file__).resolve().parent.parent
WAIT = 60.0


@pytest.fixture(scope="module")
def previous_code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server, client and protos of PREVIOUS, extracted from git."""
    known = subprocess.run(
        ["git", "-C", str(REPO), "cat-file", "-e", f"{PREVIOUS}^{{commit}}"], check=False
    )
    if known.returncode != 0:
        pytest.skip(f"commit {PREVIOUS} is not in this clone (a shallow clone has no history)")
    folder = tmp_path_factory.mktemp("previous")
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", PREVIOUS, "server", "client", "protos"],
        check=True,
        capture_output=True,
    )
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder


class Node:
    def __init__(self, name: str, url: str, log: Path, code: Path | None) -> None:
        env = dict(os.environ)
        if code is not None:  # its packages first on the path: the old `mediascan.server`
            env["PYTHONPATH"] = os.pathsep.join(
                str(code / part) for part in ("server", "protos", "client")
            )
        self.log = log
        with log.open("w") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mediascan.server", "--listen", "127.0.0.1:0", "--db", url,
                 "--node-name", name, "--workers", "1"],
                stdout=subprocess.PIPE, stderr=stderr, env=env, text=True,
            )  # fmt: skip
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        found = re.search(r"listening on (\S+)", line)
        assert found, f"{name} did not start: {log.read_text()[-2000:]}"
        self.address = found[1]

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(30)
        if self.process.stdout is not None:
            self.process.stdout.close()


async def scan(address: str, folder: Path) -> tuple[scan_pb2.Job, int]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub: Any = scan_pb2_grpc.ScanServiceStub(channel)
        job = await stub.SubmitScan(scan_pb2.SubmitScanRequest(path=str(folder)))
        final = await final_job(stub, job.job_id, timeout=WAIT)
        page = await stub.ListVideos(
            scan_pb2.ListVideosRequest(path_prefix=str(folder), page_size=1000)
        )
        return final, len(page.videos)


async def stored_version(url: str) -> int:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        row = await (await conn.execute("SELECT version FROM schema_version")).fetchone()
        assert row is not None
        return int(row[0])


async def test_nodes_of_the_previous_version_keep_working_on_the_migrated_schema(
    previous_code: Path, pg_url: str, tmp_path: Path
) -> None:
    folders = [tmp_path / f"f{n}" for n in range(4)]
    for folder in folders:
        make_many(folder, 20)
    old = Node("old", pg_url, tmp_path / "old.log", previous_code)
    new = None
    try:
        final, count = await scan(old.address, folders[0])
        assert final.state == scan_pb2.JOB_STATE_SUCCEEDED and count == 20
        assert await stored_version(pg_url) == PREVIOUS_VERSION
        new = Node("new", pg_url, tmp_path / "new.log", None)
        assert await stored_version(pg_url) == SCHEMA_VERSION > PREVIOUS_VERSION
        ran_on = set()
        for address, folder in (
            (old.address, folders[1]),
            (new.address, folders[2]),
            (old.address, folders[3]),
            (new.address, folders[0]),
        ):
            final, count = await scan(address, folder)
            assert final.state == scan_pb2.JOB_STATE_SUCCEEDED, final
            assert count == 20 and final.attempt == 1
            ran_on.add(final.node)
        # The old node's rows, read by whichever ran it: unchanged for the old node, probed
        # again by the new one (an older prober made them), never added twice.
        assert final.result.added == 0
        assert final.result.unchanged + final.result.updated == 20
        assert ran_on <= {"old", "new"}
    finally:
        old.stop()
        if new is not None:
            new.stop()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        str(previous_code / part) for part in ("server", "protos", "client")
    ))  # fmt: skip
    restarted = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "mediascan.server", "--listen", "127.0.0.1:0", "--db", pg_url],
        capture_output=True, text=True, env=env, timeout=WAIT, check=False,
    )  # fmt: skip
    assert restarted.returncode == 2, restarted.stderr
    assert f"newer than this server's {PREVIOUS_VERSION}" in restarted.stderr
    assert await stored_version(pg_url) == SCHEMA_VERSION
