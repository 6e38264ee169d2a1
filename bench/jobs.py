"""5. Job overhead: 10,000 scans of tiny folders (one tiny clip each) submitted at once (64 in
flight over 4 connections, `--max-queued 1000000`, default workers), against the same 10,000 files
scanned as one job: jobs completed per second against files per second, so the ratio is the
price of making each file a job of its own. Also the server's peak memory (VmHWM) for each.

The jobs' time runs from the first job's create_time to the last one's end_time (read from the
database once the server stopped); the one job's from its create_time to its end_time.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from mediascan.server.testing import make_video

from .common import (
    Client,
    Context,
    Row,
    Sizes,
    Worker,
    job_counts,
    job_span_ns,
    link_tree,
    mediascan_server,
    paired,
)
from .submit import SUBMIT_METHOD

BENCH = "5 job overhead"
TINY_CLIP = {"width": 64, "height": 48, "seconds": 0.2}


def figures(sizes: Sizes) -> list[str]:
    return ["jobs/s", "server peak RSS (MiB)"]


async def run(ctx: Context) -> list[Row]:
    sizes = ctx.sizes
    count = sizes.jobs
    seed = ctx.scratch / "jobs-seed.mp4"
    await asyncio.to_thread(make_video, seed, **TINY_CLIP)
    many = ctx.scratch / "jobs"
    await asyncio.to_thread(link_tree, seed, many, count, per_folder=1)
    one = ctx.scratch / "jobs-one"
    await asyncio.to_thread(link_tree, seed, one, count, per_folder=count)
    warm = ctx.scratch / "jobs-warm"
    await asyncio.to_thread(link_tree, seed, warm, 1, per_folder=1)
    ctx.log(f"{BENCH}: {count:,} folders of one video under {many}")
    rates, memory = [], []
    for number in range(1, sizes.jobs_runs + 1):
        mine = await _many_jobs(ctx, many, warm, count)
        base = await _one_job(ctx, one / "f00000", warm, count)
        ctx.log(
            f"{BENCH}: run {number}/{sizes.jobs_runs}: {mine['jobs_per_s']:,.0f} jobs/s vs "
            f"{base['files_per_s']:,.0f} files/s in one job; peak RSS {mine['hwm_kib'] / 1024:.0f}"
            f" vs {base['hwm_kib'] / 1024:.0f} MiB"
        )
        rates.append((mine["jobs_per_s"], base["files_per_s"]))
        memory.append((mine["hwm_kib"] / 1024, base["hwm_kib"] / 1024))
        submit_rate = mine["submit_per_s"]
    return [
        paired(
            BENCH,
            "jobs/s",
            rates,
            baseline_name="files/s as one job",
            note=f"{count:,} jobs of one file each, submitted at {submit_rate:,.0f}/s",
        ),
        paired(
            BENCH,
            "server peak RSS (MiB)",
            memory,
            baseline_name="the files as one job",
        ),
    ]


async def _many_jobs(ctx: Context, many: Path, warm: Path, count: int) -> dict[str, Any]:
    server, folder = mediascan_server(
        ctx, "jobs", "--max-queued", "1000000", "--shutdown-grace", "1s"
    )
    try:
        async with Client(server.address) as client:
            await client.scan(warm, 60)
            since_ns = time.time_ns()
            worker = await Worker.start(
                ctx,
                "jobs-loadgen",
                "unary",
                "--target",
                server.address,
                "--method",
                SUBMIT_METHOD,
                "--root",
                str(many),
                "--folders",
                str(count),
                "--once",
                "--limit",
                "900",
            )
            submitted = await worker.result(960)
            if submitted["errors"] or submitted["completed"] != count:
                raise RuntimeError(f"submits failed: {submitted['errors']}")
            deadline = time.monotonic() + 1800
            while await client.active():
                if time.monotonic() > deadline:
                    raise RuntimeError("the jobs did not finish in 30 minutes")
                await asyncio.sleep(0.1)
        hwm = server.hwm_kib() or 0
    finally:
        await asyncio.to_thread(server.stop)
    first, last, done = job_span_ns(folder / "mediascan.db", since_ns)
    counts = job_counts(folder / "mediascan.db")
    if done != count or counts.get("JOB_STATE_SUCCEEDED", 0) != count + 1:
        raise RuntimeError(f"not every job succeeded: {counts}")
    return {
        "jobs_per_s": count / ((last - first) / 1e9),
        "submit_per_s": submitted["rps"],
        "hwm_kib": hwm,
    }


async def _one_job(ctx: Context, folder: Path, warm: Path, count: int) -> dict[str, Any]:
    server, _ = mediascan_server(ctx, "jobs-one", "--shutdown-grace", "1s")
    try:
        async with Client(server.address) as client:
            await client.scan(warm, 60)
            _, job = await client.scan(folder, 1800, timeout={"seconds": 3600})
        hwm = server.hwm_kib() or 0
    finally:
        await asyncio.to_thread(server.stop)
    if job.result.added != count:
        raise RuntimeError(f"the one job added {job.result.added} of {count}")
    seconds = (job.end_time.ToNanoseconds() - job.create_time.ToNanoseconds()) / 1e9
    return {"files_per_s": count / seconds, "hwm_kib": hwm}
