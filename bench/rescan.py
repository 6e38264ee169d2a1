"""4. Rescan: files/s of a rescan of an unchanged tree (every file's size and mtime match the
library, so nothing is probed) against `find DIR -type f -printf '%s %T@\\n' > /dev/null` over the
same tree: the floor for a walk that reads every file's size and time.

The tree (in tmpfs when available: no disk noise) holds hard links of one tiny clip, 1,000 to a
folder; one first scan fills the library (its speed is reported too), then rescans and `find` runs
alternate. mediascan's time runs from SubmitScan to the terminal event. Both trees hold more
videos than `--find-walk-min` (20,000), so their rescans take the find walk (`find_walk.py`): the
server runs `find` over the tree while it reads the library's listing of it, and walks no folder
in Python when nothing changed (the quick run's trees are smaller: the Python walk). The server's
CPU includes that of its `find` (a child it waits for). The note reports the first rescan's
speed too (cold caches). The first scan stores each file's content fingerprint (checked on a
sample); a rescan reads no file's content: fingerprints are computed for new or changed files
only.

Then a library of `rescan_library_files` videos (1,000,000; `library.py`'s rows, with the paths,
size, time and device of placeholder files): the tree is that many hard links of a few bytes that
are not a video, 1,000 to a folder, in ten parts, and the rows are written straight into the
server's database, as if a first scan had probed them (they are never probed: nothing changed).
The same alternation of rescans and `find` runs gives the files/s. The server's VmHWM (peak
resident memory) is read after one rescan of a tenth of the tree (one part) and again after the
whole tree's rescans: how the rescan's memory grows with the library it walks. The note gives the
server's idle VmRSS before the rescans, after them, and after one more ListVideos call. That
server runs with `--db-timeout 60s` (LARGE_DB_TIMEOUT).
"""

from __future__ import annotations

import asyncio
import os
import statistics
from pathlib import Path

from mediascan.server.testing import make_video
from mediascan.v1 import scan_pb2

from .common import (
    Client,
    Context,
    Row,
    Sizes,
    cpu_seconds,
    find_printf,
    folder_name,
    link_tree,
    mediascan_server,
    paired,
)
from .library import write_library

BENCH = "4 rescan"
TINY_CLIP = {"width": 64, "height": 48, "seconds": 0.2}
#: The placeholders of the large library: a few bytes, not a video, all with the same time.
PLACEHOLDER = b"not a video\n"
PLACEHOLDER_MTIME_NS = 1_600_000_000_123_456_789
PARTS = 10  # the large tree's parts (the first one is rescanned alone)
PER_FOLDER = 1000
LINKS_PER_SEED = 50_000  # under the hard-link limit of a disk's file system (ext4: 65,000)
#: The large rescan's server waits this long for the database (default 5 s): a machine loaded
#: by other work can stretch a read of the 1,000,000-video library past 5 s, and the scan then
#: fails ("the database did not answer").
LARGE_DB_TIMEOUT = "60s"


def figures(sizes: Sizes) -> list[str]:
    files = sizes.rescan_library_files
    return ["files/s", f"{files:,} files: files/s", f"{files:,} files: server peak RSS (MiB)"]


async def run(ctx: Context) -> list[Row]:
    rows = await _small(ctx)
    rows += await _large(ctx)
    return rows


async def _small(ctx: Context) -> list[Row]:
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
                find, find_cpu = await asyncio.to_thread(find_printf, tree)
                cpu_before = cpu_seconds(server.pid, children=True) or 0.0
                seconds, job = await client.scan(tree, 600)
                cpu = (cpu_seconds(server.pid, children=True) or 0.0) - cpu_before
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
            f"filled the library ran at {first:,.0f} files/s, the first rescan at "
            f"{first_rescan:,.0f} files/s; CPU per rescan (median): server and its find "
            f"{cpu_ms:,.0f} ms, find alone {find_cpu_ms:,.0f} ms",
            details=details,
        )
    ]


# -- the large library -------------------------------------------------------------------------


async def _large(ctx: Context) -> list[Row]:
    sizes = ctx.sizes
    files = sizes.rescan_library_files
    tree = ctx.scratch / "rescan-library"
    await asyncio.to_thread(_placeholders, tree, ctx.scratch / "rescan-library-seeds", files)
    dev = tree.stat().st_dev
    db = ctx.fresh("rescan-library-db") / "mediascan.db"
    ctx.log(f"{BENCH}: {files:,} placeholders under {tree}; writing their rows")
    await write_library(
        ctx,
        db,
        files,
        lambda i: (str(_placeholder(tree, i, files)), len(PLACEHOLDER), PLACEHOLDER_MTIME_NS, dev),
    )
    server, _ = mediascan_server(
        ctx, "rescan-library", "--db", str(db), "--db-timeout", LARGE_DB_TIMEOUT
    )
    pairs = []
    details = []
    try:
        await asyncio.sleep(1.0)
        idle_before = server.rss_kib() or 0
        async with Client(server.address) as client:
            part = tree / _part_name(0)
            await _unchanged(client, part, files // PARTS)
            part_peak = server.hwm_kib() or 0
            ctx.log(f"{BENCH}: {files // PARTS:,} files rescanned; VmHWM {part_peak:,} KiB")
            for number in range(1, sizes.rescan_runs + 1):
                find, find_cpu = await asyncio.to_thread(find_printf, tree)
                cpu_before = cpu_seconds(server.pid, children=True) or 0.0
                seconds = await _unchanged(client, tree, files)
                cpu = (cpu_seconds(server.pid, children=True) or 0.0) - cpu_before
                pairs.append((files / seconds, files / find))
                details.append({"server_cpu_s": cpu, "find_cpu_s": find_cpu})
                ctx.log(
                    f"{BENCH}: {files:,} files, run {number}/{sizes.rescan_runs}: "
                    f"{files / seconds:,.0f} vs find {files / find:,.0f} files/s; CPU "
                    f"{cpu * 1000:,.0f} vs {find_cpu * 1000:,.0f} ms"
                )
            peak = server.hwm_kib() or 0
            await asyncio.sleep(1.0)
            idle_after = server.rss_kib() or 0
            await client.stub.ListVideos(scan_pb2.ListVideosRequest(page_size=1))
            await asyncio.sleep(1.0)
            idle_read = server.rss_kib() or 0
    finally:
        await asyncio.to_thread(server.stop)
    cpu_ms = statistics.median(d["server_cpu_s"] for d in details) * 1000
    find_cpu_ms = statistics.median(d["find_cpu_s"] for d in details) * 1000
    grown = (peak - part_peak) * 1024 / (files - files // PARTS)
    return [
        paired(
            BENCH,
            f"{files:,} files: files/s",
            pairs,
            baseline_name="find -printf",
            target=(">=", 0.5),
            note=f"placeholder files whose rows were written into the library, "
            f"{sizes.rescan_runs} runs; CPU per rescan (median): server and its find "
            f"{cpu_ms:,.0f} ms, find alone "
            f"{find_cpu_ms:,.0f} ms",
            details=details,
        ),
        paired(
            BENCH,
            f"{files:,} files: server peak RSS (MiB)",
            [(peak / 1024, part_peak / 1024)],
            baseline_name=f"a rescan of {files // PARTS:,} of them",
            note=f"VmHWM; {grown:,.0f} bytes more per file rescanned; VmRSS idle "
            f"{idle_before / 1024:,.1f} MiB before the rescans, {idle_after / 1024:,.1f} MiB "
            f"1 s after, {idle_read / 1024:,.1f} MiB after one more ListVideos call",
            details=[
                {
                    "idle_before_kib": idle_before,
                    "idle_after_kib": idle_after,
                    "idle_after_a_read_kib": idle_read,
                }
            ],
        ),
    ]


async def _unchanged(client: Client, folder: Path, files: int) -> float:
    """A rescan of `folder`, which must find its `files` unchanged: its seconds."""
    seconds, job = await client.scan(folder, 1800, timeout={"seconds": 3600})
    result = job.result
    if result.unchanged != files or result.added or result.updated or result.removed:
        state = scan_pb2.JobState.Name(job.state)
        raise RuntimeError(
            f"the rescan of {folder} ended {state} ({job.error.message!r}), not with {files:,} "
            f"files unchanged: {result}"
        )
    return seconds


def _part_name(part: int) -> str:
    return f"p{part:02d}"


def _placeholder(tree: Path, i: int, files: int) -> Path:
    """The i-th placeholder: `PARTS` parts of folders of PER_FOLDER files."""
    part = i * PARTS // files
    return tree / _part_name(part) / folder_name(i // PER_FOLDER) / f"v{i:07d}.mp4"


def _placeholders(tree: Path, seeds: Path, files: int) -> None:
    """`files` hard links (under `tree`) of a few placeholder files (in `seeds`), all of the
    same size and time."""
    seeds.mkdir(parents=True)
    seed: Path | None = None
    folder: Path | None = None
    for i in range(files):
        path = _placeholder(tree, i, files)
        if path.parent != folder:
            folder = path.parent
            folder.mkdir(parents=True)
        if i % LINKS_PER_SEED == 0:
            seed = seeds / f"seed-{i // LINKS_PER_SEED}"
            seed.write_bytes(PLACEHOLDER)
            os.utime(seed, ns=(PLACEHOLDER_MTIME_NS, PLACEHOLDER_MTIME_NS))
        assert seed is not None
        os.link(seed, path)
