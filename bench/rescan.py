"""4. Rescan: files/s of a rescan of an unchanged tree (every file's size and mtime match the
library, so nothing is probed) against `find DIR -type f -printf '%s %T@\\n' > /dev/null` over the
same tree: the floor for a walk that reads every file's size and time.

The tree (in tmpfs when available: no disk noise) holds hard links of one tiny clip, 1,000 to a
folder; one first scan fills the library (its speed is reported too), then rescans and `find` runs
alternate. mediascan's time runs from SubmitScan to the terminal event.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

from mediascan.server.testing import make_video

from .common import Client, Context, Row, Sizes, link_tree, mediascan_server, paired

BENCH = "4 rescan"
TINY_CLIP = {"width": 64, "height": 48, "seconds": 0.2}


def figures(sizes: Sizes) -> list[str]:
    return ["files/s"]


async def run(ctx: Context) -> list[Row]:
    sizes = ctx.sizes
    files = sizes.rescan_files
    seed = ctx.scratch / "rescan-seed.mp4"
    await asyncio.to_thread(make_video, seed, **TINY_CLIP)
    tree = ctx.scratch / "rescan"
    await asyncio.to_thread(link_tree, seed, tree, files, per_folder=1000)
    warm = ctx.scratch / "rescan-warm"
    await asyncio.to_thread(link_tree, seed, warm, 1, per_folder=1)
    ctx.log(f"{BENCH}: {files:,} videos under {tree}; first scan")
    server, _ = mediascan_server(ctx, "rescan")
    pairs = []
    try:
        async with Client(server.address) as client:
            await client.scan(warm, 60)
            seconds, job = await client.scan(tree, 1800, timeout={"seconds": 3600})
            if job.result.added != files:
                raise RuntimeError(f"the first scan added {job.result.added} of {files}: {job}")
            first = files / seconds
            ctx.log(f"{BENCH}: first scan {first:,.0f} files/s; now rescans")
            for number in range(1, sizes.rescan_runs + 1):
                find = await asyncio.to_thread(_find, tree)
                seconds, job = await client.scan(tree, 600)
                if job.result.unchanged != files or job.result.added or job.result.updated:
                    raise RuntimeError(f"the rescan found changes: {job.result}")
                pairs.append((files / seconds, files / find))
                ctx.log(
                    f"{BENCH}: run {number}/{sizes.rescan_runs}: {files / seconds:,.0f} vs find "
                    f"{files / find:,.0f} files/s"
                )
    finally:
        await asyncio.to_thread(server.stop)
    return [
        paired(
            BENCH,
            "files/s",
            pairs,
            baseline_name="find -printf",
            target=(">=", 0.5),
            note=f"{files:,} unchanged files, {sizes.rescan_runs} runs; the first scan that "
            f"filled the library ran at {first:,.0f} files/s",
        )
    ]


def _find(tree: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        ["find", str(tree), "-type", "f", "-printf", "%s %T@\n"],
        stdout=subprocess.DEVNULL,
        check=True,
        timeout=600,
    )
    return time.perf_counter() - start
