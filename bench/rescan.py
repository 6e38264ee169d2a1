"""4. Rescan: files/s of a rescan of an unchanged tree (every file's size and mtime match the
library, so nothing is probed) against `find DIR -type f -printf '%s %T@\\n' > /dev/null` over the
same tree: the floor for a walk that reads every file's size and time.

The tree (in tmpfs when available: no disk noise) holds hard links of one tiny clip, 1,000 to a
folder; one first scan fills the library (its speed is reported too), then rescans and `find` runs
alternate. mediascan's time runs from SubmitScan to the terminal event. The first rescan reads the
library's index of the folder; the server keeps it while the library does not change, so the later
ones do not (the note reports the first one's speed). The first scan stores each file's content
fingerprint (checked on a sample); a rescan reads no file's content: fingerprints are computed
for new or changed files only.
"""

from __future__ import annotations

import asyncio
import resource
import statistics
import subprocess
import time
from pathlib import Path

from mediascan.server.testing import make_video
from mediascan.v1 import scan_pb2

from .common import (
    Client,
    Context,
    Row,
    Sizes,
    cpu_seconds,
    link_tree,
    mediascan_server,
    paired,
)

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
    details = []  # CPU seconds of each run: steadier than wall time on a busy machine
    try:
        async with Client(server.address) as client:
            await client.scan(warm, 60)
            seconds, job = await client.scan(tree, 1800, timeout={"seconds": 3600})
            if job.result.added != files:
                raise RuntimeError(f"the first scan added {job.result.added} of {files}: {job}")
            first = files / seconds
            sample = await client.stub.ListVideos(
                scan_pb2.ListVideosRequest(path_prefix=str(tree), page_size=100)
            )
            if not all(video.fingerprint for video in sample.videos):
                raise RuntimeError("the first scan stored videos without a fingerprint")
            ctx.log(f"{BENCH}: first scan {first:,.0f} files/s; now rescans")
            for number in range(1, sizes.rescan_runs + 1):
                find, find_cpu = await asyncio.to_thread(_find, tree)
                cpu_before = cpu_seconds(server.pid) or 0.0
                seconds, job = await client.scan(tree, 600)
                cpu = (cpu_seconds(server.pid) or 0.0) - cpu_before
                if job.result.unchanged != files or job.result.added or job.result.updated:
                    raise RuntimeError(f"the rescan found changes: {job.result}")
                pairs.append((files / seconds, files / find))
                details.append({"server_cpu_s": cpu, "find_cpu_s": find_cpu})
                if number == 1:
                    first_rescan = files / seconds
                ctx.log(
                    f"{BENCH}: run {number}/{sizes.rescan_runs}: {files / seconds:,.0f} vs find "
                    f"{files / find:,.0f} files/s; CPU {cpu * 1000:,.0f} vs "
                    f"{find_cpu * 1000:,.0f} ms"
                )
    finally:
        await asyncio.to_thread(server.stop)
    cpu_ms = statistics.median(d["server_cpu_s"] for d in details) * 1000
    find_cpu_ms = statistics.median(d["find_cpu_s"] for d in details) * 1000
    return [
        paired(
            BENCH,
            "files/s",
            pairs,
            baseline_name="find -printf",
            target=(">=", 0.5),
            note=f"{files:,} unchanged files with fingerprints, {sizes.rescan_runs} runs; the "
            "first scan that "
            f"filled the library ran at {first:,.0f} files/s, the first rescan (which read the "
            f"library's index) at {first_rescan:,.0f} files/s; CPU per rescan (median): server "
            f"{cpu_ms:,.0f} ms, find {find_cpu_ms:,.0f} ms",
            details=details,
        )
    ]


def _find(tree: Path) -> tuple[float, float]:
    """find's (wall seconds, CPU seconds)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        ["find", str(tree), "-type", "f", "-printf", "%s %T@\n"],
        stdout=subprocess.DEVNULL,
        check=True,
        timeout=600,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
