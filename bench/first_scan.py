"""3. First scan: files/s of a mediascan scan of a corpus of small real videos (h264 + aac, 320x240,
1 s; hard links of one encoded file under distinct names, 100 to a folder) into an empty library,
against what users write by hand: an `ffprobe -v error -show_format -show_streams -of json` loop
(output parsed) run at the same concurrency as mediascan's probing (its prober processes, one per
core), over a sample of the corpus (ffprobe is slow).

mediascan's time runs from SubmitScan to the terminal event on a fresh server whose probers were
warmed by a one-file scan; the scan must add every file.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

from mediascan.server.testing import make_video

from .common import Client, Context, Row, Sizes, link_tree, mediascan_server, paired

BENCH = "3 first scan"
CLIP = {"width": 320, "height": 240, "seconds": 1.0, "audio_codec": "aac"}
#: mediascan's default prober count (`--probe-workers`), also the ffprobe loop's concurrency.
CONCURRENCY = max(2, os.cpu_count() or 2)


def figures(sizes: Sizes) -> list[str]:
    return ["files/s"]


async def run(ctx: Context) -> list[Row]:
    sizes = ctx.sizes
    seed = ctx.scratch / "first-seed.mp4"
    await asyncio.to_thread(make_video, seed, **CLIP)
    tree = ctx.scratch / "first"
    await asyncio.to_thread(link_tree, seed, tree, sizes.first_files, per_folder=100)
    warm = ctx.scratch / "first-warm"
    await asyncio.to_thread(link_tree, seed, warm, 1, per_folder=1)
    sample = sorted(tree.rglob("*.mp4"))[: sizes.ffprobe_files]
    ctx.log(
        f"{BENCH}: {sizes.first_files:,} videos of {seed.stat().st_size:,} B under {tree}; "
        f"ffprobe sample {len(sample)}"
    )
    pairs = []
    for number in range(1, sizes.runs + 1):
        ffprobe = await _ffprobe_loop(sample)
        mine = await _mediascan(ctx, tree, warm, sizes.first_files)
        ctx.log(
            f"{BENCH}: run {number}/{sizes.runs}: {mine:,.0f} vs ffprobe {ffprobe:,.1f} files/s"
        )
        pairs.append((mine, ffprobe))
    return [
        paired(
            BENCH,
            "files/s",
            pairs,
            baseline_name=f"ffprobe loop x{CONCURRENCY}",
            target=(">=", 40),
            note=f"{sizes.first_files:,} files; ffprobe over {len(sample)} of them, "
            f"{CONCURRENCY} at a time (mediascan's prober count)",
        )
    ]


async def _mediascan(ctx: Context, tree: Path, warm: Path, files: int) -> float:
    server, _ = mediascan_server(ctx, "first-scan")
    try:
        async with Client(server.address) as client:
            await client.scan(warm, 60)
            seconds, job = await client.scan(tree, 600, timeout={"seconds": 3600})
    finally:
        await asyncio.to_thread(server.stop)
    if job.result.added != files or job.result.failed:
        raise RuntimeError(f"the first scan added {job.result.added} of {files} files: {job}")
    return files / seconds


async def _ffprobe_loop(paths: list[Path]) -> float:
    semaphore = asyncio.Semaphore(CONCURRENCY)

    async def probe(path: Path) -> None:
        async with semaphore:
            process = await asyncio.create_subprocess_exec(
                "ffprobe",
                "-v",
                "error",
                "-show_format",
                "-show_streams",
                "-of",
                "json",
                str(path),
                stdout=asyncio.subprocess.PIPE,
                stdin=asyncio.subprocess.DEVNULL,
            )
            out, _ = await process.communicate()
            if process.returncode != 0 or not json.loads(out).get("streams"):
                raise RuntimeError(f"ffprobe failed on {path}")

    start = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(probe(p) for p in paths)), 600)
    return len(paths) / (time.perf_counter() - start)
