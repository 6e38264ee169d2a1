"""8. DECODE verification: MB/s of a scan with `verify: VERIFY_DECODE` of a tree of real videos
(H.264 at 4 Mb/s + AAC, 1280x720 at 25 fps, a test pattern with grain so that it costs what
camera footage costs to decode; made with ffmpeg; hard links of one file under distinct names)
into an empty library, against `ffmpeg -nostdin -v error -i FILE -f null -` run over the same
files, one at a time (the server's one verification prober, `--verify-workers 1`; both decode with
FFmpeg's frame threads on every core).

mediascan's time runs from SubmitScan to the terminal event on a fresh server whose probers were
warmed by a one-file DECODE scan, and includes each file's probe and the library writes; the
scan must add every file with health OK. Both sides read the same files from the page cache.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

from mediascan.v1 import scan_pb2

from .common import Client, Context, Row, Sizes, link_tree, mediascan_server, paired

BENCH = "8 verify"
MB = 1_000_000


def figures(sizes: Sizes) -> list[str]:
    return ["MB/s"]


async def run(ctx: Context) -> list[Row]:
    sizes = ctx.sizes
    seed = ctx.scratch / "verify-seed.mp4"
    await asyncio.to_thread(_make_clip, seed, sizes.verify_seconds, sizes.verify_size)
    tree = ctx.scratch / "verify"
    await asyncio.to_thread(link_tree, seed, tree, sizes.verify_files, per_folder=100)
    warm = ctx.scratch / "verify-warm"
    await asyncio.to_thread(link_tree, seed, warm, 1, per_folder=1)
    paths = sorted(tree.rglob("*.mp4"))
    total = seed.stat().st_size * len(paths)
    seconds_of_media = sizes.verify_seconds * len(paths)
    ctx.log(f"{BENCH}: {len(paths)} videos of {seed.stat().st_size:,} B under {tree}")
    pairs = []
    for number in range(1, sizes.runs + 1):
        ffmpeg = await asyncio.to_thread(_ffmpeg_loop, paths)
        mine = await _mediascan(ctx, tree, warm, len(paths))
        ctx.log(
            f"{BENCH}: run {number}/{sizes.runs}: {total / mine / MB:,.1f} vs ffmpeg "
            f"{total / ffmpeg / MB:,.1f} MB/s"
        )
        pairs.append((total / mine / MB, total / ffmpeg / MB))
    best = max(v for v, _ in pairs) * MB / total * seconds_of_media
    return [
        paired(
            BENCH,
            "MB/s",
            pairs,
            baseline_name="ffmpeg -v error -f null -",
            target=(">=", 0.7),
            note=f"{len(paths)} files, {total / MB:,.1f} MB, {seconds_of_media:,.0f} s of "
            f"{sizes.verify_size} H.264 + AAC; at best {best:,.0f}x real time",
        )
    ]


async def _mediascan(ctx: Context, tree: Path, warm: Path, files: int) -> float:
    server, _ = mediascan_server(ctx, "verify", "--verify-workers", "1")
    decode = scan_pb2.VERIFY_DECODE
    try:
        async with Client(server.address) as client:
            await client.scan(warm, 120, verify=decode)
            seconds, job = await client.scan(tree, 1800, verify=decode, timeout={"seconds": 3600})
    finally:
        await asyncio.to_thread(server.stop)
    if job.result.added != files or job.result.failed or job.result.file_error_count:
        raise RuntimeError(f"the DECODE scan added {job.result.added} of {files} files: {job}")
    return seconds


#: ffmpeg's arguments for the clip: a test pattern with moving grain, H.264 at 4 Mb/s, AAC.
_CLIP_ARGS = [
    "-f",
    "lavfi",
    "-i",
    "sine=frequency=440:sample_rate=48000",
    "-vf",
    "noise=alls=12:allf=t",
    "-c:v",
    "libx264",
    "-preset",
    "veryfast",
    "-b:v",
    "4M",
    "-maxrate",
    "4M",
    "-bufsize",
    "8M",
    "-pix_fmt",
    "yuv420p",
    "-c:a",
    "aac",
    "-shortest",
]


def _make_clip(path: Path, seconds: float, size: str) -> None:
    pattern = ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25", "-t", str(seconds)]
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", *pattern, *_CLIP_ARGS, str(path)],
        check=True,
        capture_output=True,
        timeout=600,
    )


def _ffmpeg_loop(paths: list[Path]) -> float:
    start = time.perf_counter()
    for path in paths:
        run = subprocess.run(
            ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-f", "null", "-"],
            capture_output=True,
            timeout=600,
            check=False,
        )
        if run.returncode != 0 or run.stderr:
            raise RuntimeError(f"ffmpeg found errors in {path}: {run.stderr[-500:]!r}")
    return time.perf_counter() - start
