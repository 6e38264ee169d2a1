"""2. Progress fan-out, continued: how much 1,000 WatchJob subscribers slow a scan down, against
the same scan unwatched in the same run (what tests/test_subscribers.py once asserted).

A server with one worker and its default fan-out budget (--progress-fanout) scans a folder of
slow-probing videos in full, unwatched and watched in turn: unwatched, watched, unwatched, ...;
each watched scan is compared with the mean of the unwatched scans just before and after it (the
machine's speed drifts over a minute by more than the effect measured). Each scan waits behind a
blocker job while its watchers attach (a load generator process, `bench/loadgen.py watch`), so
that every progress window of its run counts them; the blocker is cancelled once it has probed
the same number of files in every scan. The watchers then read at the lowest priority (nice 19):
on 2 cores, reading 1,000 streams costs about as much CPU as sending them, and remote watchers
cost the server nothing of the kind.

Figure: the scan's duration (its start and end times as the server recorded them), watched;
baseline: unwatched; target: within 10%.
"""

from __future__ import annotations

import asyncio
import os
import statistics
from pathlib import Path

from mediascan.server.testing import job_seconds
from mediascan.v1 import scan_pb2

from .common import Client, Context, Row, Sizes, Worker, link_tree, mediascan_server, paired

WATCH_JOB = "/mediascan.v1.ScanService/WatchJob"
WATCHERS_NICE = 19


def figures(sizes: Sizes) -> list[str]:
    return [figure_name(sizes)]


def figure_name(sizes: Sizes) -> str:
    return f"{sizes.watched_count} watchers: scan seconds"


async def run(ctx: Context, bench: str, seed: Path, blocker_tree: Path) -> list[Row]:
    """The watched-scan row of benchmark `bench`; `blocker_tree` holds at least twice
    `sizes.watched_files` copies of `seed`."""
    sizes = ctx.sizes
    folder = ctx.scratch / "watched"
    await asyncio.to_thread(link_tree, seed, folder, sizes.watched_files, per_folder=1000)
    server, _ = mediascan_server(ctx, "watched", "--workers", "1", "--shutdown-grace", "1s")
    unwatched: list[float] = []
    watched: list[float] = []
    try:
        async with Client(server.address) as client:
            scans = _Scans(ctx, client, server.address, blocker_tree, folder)
            await scans.one(0)  # warm-up
            unwatched.append(await scans.one(0))
            for number in range(1, sizes.runs + 1):
                ctx.log(f"{bench}: {sizes.watched_count} watchers, run {number}/{sizes.runs}")
                watched.append(await scans.one(sizes.watched_count))
                unwatched.append(await scans.one(0))
    finally:
        await asyncio.to_thread(server.stop)
    pairs = [
        (seconds, statistics.mean([before, after]))
        for seconds, before, after in zip(watched, unwatched, unwatched[1:], strict=False)
    ]
    ctx.log(f"{bench}: watched {watched} s, unwatched {unwatched} s")
    return [
        paired(
            bench,
            figure_name(sizes),
            pairs,
            baseline_name="unwatched, same server",
            target=("<=", 1.1),
            note=f"full scan of {sizes.watched_files:,} slow-probing videos, one worker, default "
            "--progress-fanout; baseline: the mean of the unwatched scans before and after",
        )
    ]


class _Scans:
    """Full scans of `folder` on one server, each queued behind a blocker (`blocker_tree`)."""

    def __init__(
        self, ctx: Context, client: Client, address: str, blocker_tree: Path, folder: Path
    ) -> None:
        self.ctx = ctx
        self.client = client
        self.address = address
        self.blocker_tree = blocker_tree
        self.folder = folder

    async def one(self, count: int) -> float:
        """A scan with `count` watchers attached while it waits; its duration as the server
        recorded it."""
        client = self.client
        blocker = await client.submit(self.blocker_tree, full=True)
        await client.until_progress(blocker.job_id, 1, 120)
        job = await client.submit(self.folder, full=True)
        watchers = await _attach(self.ctx, self.address, job.job_id, count) if count else None
        try:
            await client.until_progress(blocker.job_id, self.ctx.sizes.watched_files // 2, 300)
            waiting = await client.stub.GetJob(scan_pb2.GetJobRequest(job_id=job.job_id))
            if waiting.state != scan_pb2.JOB_STATE_QUEUED:
                raise RuntimeError("the blocker ended before the watchers attached")
            await client.cancel(blocker.job_id)
            done = await client.wait(job.job_id, 300)
        finally:
            if watchers is not None:
                watchers.kill()
                await watchers.process.wait()
        if done.state != scan_pb2.JOB_STATE_SUCCEEDED:
            raise RuntimeError(f"the measured scan ended {scan_pb2.JobState.Name(done.state)}")
        return job_seconds(done)


async def _attach(ctx: Context, address: str, job_id: str, count: int) -> Worker:
    """`count` watchers of `job_id` in a load generator that reads at nice 19 once attached."""
    request = scan_pb2.WatchJobRequest(job_id=job_id).SerializeToString()
    worker = await Worker.start(
        ctx,
        "watched-loadgen",
        "watch",
        "--target",
        address,
        "--method",
        WATCH_JOB,
        "--request-hex",
        request.hex(),
        "--subscribers",
        str(count),
        "--per-channel",
        str(ctx.sizes.fanout_per_channel),
        "--warmup",
        "0",
        "--duration",
        "3600",  # killed once the scan has ended
    )
    try:
        await worker.expect("attached", 120)
    except BaseException:
        worker.kill()
        raise
    os.setpriority(os.PRIO_PROCESS, worker.process.pid, WATCHERS_NICE)
    return worker
