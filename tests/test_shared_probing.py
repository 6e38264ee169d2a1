"""One scan probed by every server that can see its folder, with real `mediascan-server`
processes on one PostgreSQL database: the node running the job walks, the nodes that can see
the folder probe its batches (each node's `mediascan_files_probed_total` shows its share), a
node whose allowed roots do not hold the folder and a node where the folder does not exist
(a mount namespace of its own hides it) probe nothing; a probing node killed with `kill -9`
loses its batches to the others after the lease and the scan still adds every file once; a
rescan run on one node removes what a scan probed on others.

Nothing here asserts speed: each wait is for a stream's event or a job's state, bounded."""

from __future__ import annotations

import asyncio
import ctypes
import os
from pathlib import Path
from typing import Any

import pytest
from _library_helpers import all_videos
from _robust import Launcher, channel_to, launch_fixture, metric_total  # noqa: F401 - the `launch` fixture

from mediascan.server.testing import SLOW_PROBE, final_job, make_many
from mediascan.v1 import scan_pb2

pytestmark = pytest.mark.slow

WAIT = 240.0
FILES = 2000
LEASE = "2s"
WORKER = ("--workers", "1", "--probe-workers", "1", "--metrics-listen", "127.0.0.1:0")
_CLONE_NEWNS = 0x00020000
_MS_REC, _MS_PRIVATE = 0x4000, 0x40000


def metrics_address(server: Any) -> str:
    for line in server.stderr_text().splitlines():
        if "metrics on http://" in line:
            return line.split("metrics on http://", 1)[1].split("/metrics", 1)[0]
    raise AssertionError(f"no metrics address in the log:\n{server.tail()}")


def probed(server: Any) -> float:
    """The server's `mediascan_files_probed_total`."""
    return metric_total(metrics_address(server), "mediascan_files_probed_total")


def hide(folder: Path) -> Any:
    """A preexec_fn: the server runs in a mount namespace of its own where `folder` is an empty
    tmpfs (the scanned folder below it does not exist there)."""
    target = os.fsencode(folder)

    def enter() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(_CLONE_NEWNS) != 0:
            raise OSError(ctypes.get_errno(), "unshare")
        if libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
            raise OSError(ctypes.get_errno(), "mount --make-rprivate /")
        if libc.mount(b"tmpfs", target, b"tmpfs", 0, None) != 0:
            raise OSError(ctypes.get_errno(), "mount tmpfs")

    return enter


async def paths_below(stub: Any, folder: Path) -> list[str]:
    videos = await all_videos(stub, path_prefix=str(folder), page_size=1000)
    return [video.path for video in videos]


async def until_probed(server: Any, at_least: float) -> None:
    async with asyncio.timeout(WAIT):
        while await asyncio.to_thread(probed, server) < at_least:
            await asyncio.sleep(0.1)


@pytest.mark.timeout(300)
async def test_one_scan_is_probed_by_every_node_that_can_see_its_folder(
    launch: Launcher, pg_url: str, tmp_path: Path
) -> None:
    hidden = tmp_path / "share"
    folder = hidden / "many"
    make_many(folder, FILES, **SLOW_PROBE)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    a, b, elsewhere = await asyncio.gather(
        launch("--node-name", "A", *WORKER, db=pg_url),
        launch("--node-name", "B", *WORKER, db=pg_url),
        launch("--node-name", "D", *WORKER, "--allow-root", str(outside), db=pg_url),
    )
    async with channel_to(a.address) as (_, on_a):
        job = await on_a.SubmitScan(scan_pb2.SubmitScanRequest(path=str(folder)))
        async with asyncio.timeout(WAIT):  # A or B runs the job; both probe its batches
            while await asyncio.to_thread(probed, a) + await asyncio.to_thread(probed, b) < 1:
                await asyncio.sleep(0.1)
        blind = await launch("--node-name", "C", *WORKER, db=pg_url, preexec_fn=hide(hidden))
        running = await on_a.GetJob(scan_pb2.GetJobRequest(job_id=job.job_id))
        final = await final_job(on_a, job.job_id, timeout=WAIT)
        assert final.state == scan_pb2.JOB_STATE_SUCCEEDED, final
        assert final.node in {"A", "B"} and final.attempt == 1
        assert final.result.added == FILES and final.result.failed == 0, final.result
        assert final.progress.files_done == FILES
        shares = {
            name: probed(server)
            for name, server in zip("ABCD", (a, b, blind, elsewhere), strict=True)
        }
        assert shares["A"] > 0 and shares["B"] > 0, shares
        assert shares["A"] + shares["B"] == FILES, shares  # each file probed once
        # C was up while batches waited (the job still ran), and never took one.
        assert running.state == scan_pb2.JOB_STATE_RUNNING
        assert shares["C"] == 0 and shares["D"] == 0, shares
        paths = await paths_below(on_a, folder)
        assert len(paths) == FILES and len(set(paths)) == FILES

        blind.kill()  # it would claim the rescan's job, and fail it: the folder is not there
        # A rescan on any node removes what was deleted, whoever probed it (same file system
        # key on every node), and finds the rest unchanged.
        for path in sorted(folder.iterdir())[:10]:
            path.unlink()
    async with channel_to(b.address) as (_, on_b):
        again = await on_b.SubmitScan(scan_pb2.SubmitScanRequest(path=str(folder)))
        rescan = await final_job(on_b, again.job_id, timeout=WAIT)
        assert rescan.state == scan_pb2.JOB_STATE_SUCCEEDED, rescan
        assert rescan.result.removed == 10 and rescan.result.unchanged == FILES - 10
        assert len(await paths_below(on_b, folder)) == FILES - 10


@pytest.mark.timeout(300)
async def test_a_probing_node_killed_mid_scan_loses_its_batches_to_the_others(
    launch: Launcher, pg_url: str, tmp_path: Path
) -> None:
    """kill -9 of a node that probes batches of a scan another node runs: its claims lapse
    after the lease, the other node probes them again, and the scan ends with every file in
    the library once (attempt 1: the running node never stopped)."""
    folder = tmp_path / "many"
    make_many(folder, FILES, **SLOW_PROBE)
    a = await launch("--node-name", "A", *WORKER, "--lease", LEASE, db=pg_url)
    async with channel_to(a.address) as (_, on_a):
        job = await on_a.SubmitScan(scan_pb2.SubmitScanRequest(path=str(folder)))
        await until_probed(a, 1)
        b = await launch("--node-name", "B", *WORKER, "--lease", LEASE, db=pg_url)
        await until_probed(b, 40)  # B finished a batch and holds others
        b.kill()
        final = await final_job(on_a, job.job_id, timeout=WAIT)
        assert final.state == scan_pb2.JOB_STATE_SUCCEEDED, final
        assert final.attempt == 1 and final.node == "A"
        assert final.result.added == FILES and final.result.failed == 0, final.result
        assert final.progress.files_done == FILES
        paths = await paths_below(on_a, folder)
        assert len(paths) == FILES and len(set(paths)) == FILES
