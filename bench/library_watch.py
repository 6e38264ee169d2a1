"""11. Libraries that keep themselves current (issue 15): how soon a new file reaches the
WatchLibrary feed, what watching a large library costs at rest, and how fast polling walks it.

- **write to ADDED**: a library in WATCH_MODE_EVENTS on a fresh `mediascan-server`; a small real
  video (h264 + aac, 320x240, 1 s) is written into one of its folders, and the time runs from
  the end of the write (the file closed) to the receipt of its ADDED change on a WatchLibrary
  stream, file after file (each once the job of the previous one has ended), with the default
  quiet window (10 s) and with a short one (0.5 s), where the overhead stands out. Baselines:
  the quiet window itself (the floor: a file is probed once it has been quiet that long), and
  `ffprobe` of the same file. Target: the quiet window + under 1 s.
- **idle, watched**: 100,000 files (tiny placeholders with a video extension, hard links of one
  file, 100 to a folder in 1,000 folders) already in the library (`library.py`'s rows with the
  placeholders' paths, size, time and device, written straight into the database, none probed)
  of a library in WATCH_MODE_EVENTS; the server's VmRSS and its CPU
  over an idle window once every folder has its inotify watch (counted in /proc/PID/fdinfo)
  and the whole rescan the server starts keeping the library with has ended.
  The CPU is the time its threads ran (/proc/PID/task/*/schedstat, in ns): utime + stime of
  /proc/PID/stat, sampled at each 10 ms clock tick, count an idle server's few milliseconds as
  0 or 10 (they are in the note). Baseline: the same server on a copy of the same database made
  before the library was created (the same videos, no library).
- **poll**: files/s of a poll of the same tree by the server's own poller (`FolderPoller`, run
  here as the server runs it in a worker thread: every video file stat'ed, every folder's digest
  compared, nothing changed) against `find DIR -type f -printf '%s %T@\\n'` over the same tree,
  one after the other; then the library switched to WATCH_MODE_POLL on a server: its CPU per
  poll interval once the whole rescan it starts with has ended, and the jobs its polls made
  (none, as nothing changed).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from mediascan.server.testing import make_video
from mediascan.server.videonames import VIDEO_SUFFIXES
from mediascan.server.watching.poll import FolderPoller
from mediascan.v1 import scan_pb2

from .common import (
    Client,
    Context,
    Row,
    Sizes,
    cpu_seconds,
    find_printf,
    link_tree,
    mediascan_server,
    paired,
    percentile,
    run_ns,
)
from .library import write_library

BENCH = "11 library watch"
CLIP = {"width": 320, "height": 240, "seconds": 1.0, "audio_codec": "aac"}
#: Files to a folder of the large library.
PER_FOLDER = 100
#: Bytes of each placeholder file of the large library.
PLACEHOLDER = b"not a video, already in the library\n"
#: Seconds to wait for a change, a job or a watcher.
WAIT = 120.0
#: The quiet window of the large library while files are written into it.
LARGE_WINDOW = 0.5


def figures(sizes: Sizes) -> list[str]:
    names = []
    for window, _ in sizes.watch_latency:
        label = _label(window)
        names += [f"{label}: write to ADDED {stat} (s)" for stat in ("p50", "p90", "max")]
        names.append(f"{label}: past the window p50 (ms)")
    files = f"{sizes.watch_library_files:,}"
    names += [
        f"{files} watched files, {_label(LARGE_WINDOW)}: write to ADDED p50 (s)",
        f"{files} watched files: idle server RSS (MiB)",
        f"{files} watched files: idle server CPU (% of a core)",
        f"{files}-file poll: files/s",
        f"{files}-file polled library: server CPU per poll (ms)",
    ]
    return names


def _label(window: float) -> str:
    return f"{window:g} s quiet window"


async def run(ctx: Context) -> list[Row]:
    rows = await _latency(ctx)
    root, db, bare_db = await _large_library(ctx)
    rows += await _idle(ctx, root, db, bare_db)
    rows += await _poll(ctx, root, db)
    rows += await _large_latency(ctx, root, db)
    return rows


# -- write to ADDED -----------------------------------------------------------------------------


async def _latency(ctx: Context) -> list[Row]:
    seed = ctx.scratch / "watch-seed.mp4"
    await asyncio.to_thread(make_video, seed, **CLIP)
    content = seed.read_bytes()
    server, _ = mediascan_server(ctx, "watch-latency")
    rows: list[Row] = []
    try:
        async with Client(server.address) as client:
            for number, (window, files) in enumerate(ctx.sizes.watch_latency):
                root = ctx.scratch / f"watch-latency-{number}"
                for folder in range(4):
                    (root / f"d{folder}").mkdir(parents=True)
                name = f"latency-{number}"
                samples = await _files_added(ctx, client, name, root, window, files, content)
                rows += _latency_rows(window, samples, content)
                await client.stub.DeleteLibrary(scan_pb2.DeleteLibraryRequest(name=name))
    finally:
        await asyncio.to_thread(server.stop)
    return rows


async def _files_added(
    ctx: Context, client: Client, name: str, root: Path, window: float, files: int, content: bytes
) -> list[dict[str, float]]:
    """Write `files` files of `content` (after one unmeasured) into a new library `name` over
    `root`, one at a time; each one's timings (seconds)."""
    library = scan_pb2.Library(root=str(root), watch_mode=scan_pb2.WATCH_MODE_EVENTS)
    library.quiet_window.FromNanoseconds(round(window * 1e9))
    await client.stub.CreateLibrary(
        scan_pb2.CreateLibraryRequest(library_id=name, library=library), timeout=30
    )
    feed = Feed(client, name)
    samples = []
    try:
        await feed.watching(scan_pb2.WATCH_MODE_EVENTS)
        for number in range(files + 1):  # the first warms the probers up
            path = root / f"d{number % 4}" / f"new-{number:03d}.mp4"
            sample = await _write_to_added(client, feed, path, content)
            if number == 0:
                continue
            sample["ffprobe"] = await asyncio.to_thread(_ffprobe, path)
            samples.append(sample)
            ctx.log(
                f"{BENCH}: {_label(window)}, file {number}/{files}: {sample['seconds']:.3f} s "
                f"(ffprobe {sample['ffprobe'] * 1000:.0f} ms)"
            )
            await asyncio.sleep(0.2)
    finally:
        feed.close()
    return samples


async def _write_to_added(
    client: Client, feed: Feed, path: Path, content: bytes
) -> dict[str, float]:
    """Write `content` to `path` in one write, then wait for its ADDED change on `feed` and
    for its watch job's end; the timings (seconds) from the file's close."""
    with open(path, "wb") as out:
        out.write(content)
    written = time.time_ns()
    change = await feed.added(os.path.realpath(path))
    received = time.time_ns()
    job = await client.wait(change.job_id, WAIT)
    if job.state != scan_pb2.JOB_STATE_SUCCEEDED or job.result.added != 1:
        raise RuntimeError(f"the watch job of {path} did not add it alone: {job}")
    return {
        "seconds": (received - written) / 1e9,
        "to_job": (job.create_time.ToNanoseconds() - written) / 1e9,
        "queued": (job.start_time.ToNanoseconds() - job.create_time.ToNanoseconds()) / 1e9,
        "to_change": (change.time.ToNanoseconds() - job.start_time.ToNanoseconds()) / 1e9,
        "to_client": (received - change.time.ToNanoseconds()) / 1e9,
    }


def _latency_rows(window: float, samples: list[dict[str, float]], content: bytes) -> list[Row]:
    label = _label(window)
    seconds = [s["seconds"] for s in samples]
    target = ("<=", window + 1.0)
    rows = [
        paired(
            BENCH,
            f"{label}: write to ADDED p50 (s)",
            [(s, window) for s in seconds],
            baseline_name="the quiet window",
            unit="s",
            target=target,
            target_on="value",
            note=_breakdown(samples, len(content)),
            details=samples,
        )
    ]
    for stat, value in (("p90", percentile(seconds, 90)), ("max", max(seconds))):
        rows.append(
            Row(
                bench=BENCH,
                figure=f"{label}: write to ADDED {stat} (s)",
                value=value,
                baseline=window,
                baseline_name="the quiet window",
                unit="s",
                target=target,
                target_on="value",
                runs=[{"value": s, "baseline": window} for s in seconds],
            )
        )
    rows.append(
        paired(
            BENCH,
            f"{label}: past the window p50 (ms)",
            [((s["seconds"] - window) * 1000, s["ffprobe"] * 1000) for s in samples],
            baseline_name="ffprobe of the file",
            unit="ms",
        )
    )
    return rows


def _breakdown(samples: list[dict[str, float]], size: int) -> str:
    def p50(key: str) -> float:
        return statistics.median(s[key] for s in samples) * 1000

    return (
        f"{len(samples)} files of {size:,} bytes, one at a time; medians: write to the watch "
        f"job's create_time {p50('to_job'):,.0f} ms, queued {p50('queued'):,.0f} ms, start to "
        f"the change stored {p50('to_change'):,.0f} ms, stored to received "
        f"{p50('to_client'):,.0f} ms"
    )


def _ffprobe(path: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", str(path)],
        stdout=subprocess.DEVNULL,
        check=True,
        timeout=60,
    )
    return time.perf_counter() - started


class Feed:
    """A WatchLibrary stream read in the background into a queue of changes."""

    def __init__(self, client: Client, name: str) -> None:
        self.call = client.stub.WatchLibrary(scan_pb2.WatchLibraryRequest(name=name))
        self.changes: asyncio.Queue[Any] = asyncio.Queue()
        self.task = asyncio.create_task(self._read())
        self.stub = client.stub
        self.name = name

    async def _read(self) -> None:
        async for change in self.call:
            await self.changes.put(change)

    async def next(self) -> Any:
        async with asyncio.timeout(WAIT):
            return await self.changes.get()

    async def watching(self, mode: int) -> None:
        """Until the library's keeper says it watches in `mode` (its STATUS change): what the
        stream's RESYNC stands for is read once it has come, so no STATUS change falls between."""
        resync = await self.next()
        if resync.kind != scan_pb2.CHANGE_KIND_RESYNC:
            raise RuntimeError(f"WatchLibrary began with {resync}, not a RESYNC")
        library = await self.stub.GetLibrary(scan_pb2.GetLibraryRequest(name=self.name))
        status = library.status
        while status.watching != mode:
            change = await self.next()
            if change.kind == scan_pb2.CHANGE_KIND_STATUS:
                status = change.status

    async def added(self, path: str) -> Any:
        """The ADDED change of `path` (other changes are passed over)."""
        return await self._change(scan_pb2.CHANGE_KIND_ADDED, path)

    async def removed(self, path: str) -> Any:
        """The REMOVED change of `path` (other changes are passed over)."""
        return await self._change(scan_pb2.CHANGE_KIND_REMOVED, path)

    async def _change(self, kind: int, path: str) -> Any:
        while True:
            change = await self.next()
            if change.kind == kind and change.path == path:
                return change

    def close(self) -> None:
        self.call.cancel()
        self.task.cancel()


# -- the large library ----------------------------------------------------------------------------


async def _large_library(ctx: Context) -> tuple[Path, Path, Path]:
    """A tree of placeholders whose rows are in a database, with a library in WATCH_MODE_EVENTS
    over it; and a copy of that database made before the library was created."""
    count = ctx.sizes.watch_library_files
    seed = ctx.scratch / "watch-placeholder.mp4"
    seed.write_bytes(PLACEHOLDER)
    root = Path(os.path.realpath(ctx.scratch / "watch-large"))
    await asyncio.to_thread(link_tree, seed, root, count, per_folder=PER_FOLDER)
    info = seed.stat()
    folder = ctx.fresh("library-watch-db")
    db, bare_db = folder / "mediascan.db", folder / "no-library.db"

    def placeholder(index: int) -> tuple[str, int, int, int]:
        path = root / f"f{index // PER_FOLDER:05d}" / f"v{index:06d}.mp4"
        return str(path), info.st_size, info.st_mtime_ns, info.st_dev

    await write_library(ctx, db, count, placeholder)
    await asyncio.to_thread(_copy_db, db, bare_db)
    ctx.log(f"{BENCH}: {count:,} placeholders under {root}, their rows in {db}")
    server, _ = mediascan_server(ctx, "watch-create", "--db", str(db))
    try:
        async with Client(server.address) as client:
            library = scan_pb2.Library(root=str(root), watch_mode=scan_pb2.WATCH_MODE_EVENTS)
            await client.stub.CreateLibrary(
                scan_pb2.CreateLibraryRequest(library_id="large", library=library), timeout=30
            )
            feed = Feed(client, "large")
            try:
                await feed.watching(scan_pb2.WATCH_MODE_EVENTS)
            finally:
                feed.close()
            got = await client.stub.GetLibrary(scan_pb2.GetLibraryRequest(name="large"))
            if got.status.video_count != count:
                raise RuntimeError(f"the library holds {got.status.video_count} of {count}")
    finally:
        await asyncio.to_thread(server.stop)
    return root, db, bare_db


def _copy_db(source: Path, target: Path) -> None:
    with (
        contextlib.closing(sqlite3.connect(source)) as src,
        contextlib.closing(sqlite3.connect(target)) as dst,
    ):
        src.backup(dst)


# -- idle -----------------------------------------------------------------------------------------


async def _idle(ctx: Context, root: Path, db: Path, bare_db: Path) -> list[Row]:
    sizes = ctx.sizes
    folders = -(-sizes.watch_library_files // PER_FOLDER)
    rss: list[tuple[float | None, float | None]] = []
    cpu: list[tuple[float | None, float | None]] = []
    details = []
    for number in range(1, sizes.watch_idle_runs + 1):
        bare = await _idle_server(ctx, "watch-idle-bare", bare_db, 0)
        mine = await _idle_server(ctx, "watch-idle", db, folders + 1)
        rss.append((mine["rss_mib"], bare["rss_mib"]))
        cpu.append((mine["cpu_share"] * 100, bare["cpu_share"] * 100))
        details.append({"library": mine, "no_library": bare})
        ctx.log(
            f"{BENCH}: idle run {number}/{sizes.watch_idle_runs}: RSS {mine['rss_mib']:.1f} vs "
            f"{bare['rss_mib']:.1f} MiB, CPU {mine['cpu_share'] * 100:.3f} vs "
            f"{bare['cpu_share'] * 100:.3f}% of a core"
        )
    files = f"{sizes.watch_library_files:,}"
    watches = statistics.median(d["library"]["watches"] for d in details)
    watching = statistics.median(d["library"]["watching_s"] for d in details)
    first_rescan = statistics.median(d["library"]["first_rescan_s"] for d in details)
    ticks = [
        statistics.median(d[side]["utime_stime_share"] * 100 for d in details)
        for side in ("library", "no_library")
    ]
    return [
        paired(
            BENCH,
            f"{files} watched files: idle server RSS (MiB)",
            rss,
            baseline_name="no library",
            unit="MiB",
            note=f"{files} files in {folders:,} folders, {watches:,.0f} inotify watches, all in "
            f"place {watching:.2f} s after the server listened, and the whole rescan the "
            f"server starts keeping a library with took {first_rescan:.2f} s (medians); VmRSS "
            f"of the server process (not its probers) after {sizes.watch_idle_seconds:g} s idle "
            "from the end of that rescan; baseline: the same server and videos without the "
            "library",
            details=details,
        ),
        paired(
            BENCH,
            f"{files} watched files: idle server CPU (% of a core)",
            cpu,
            baseline_name="no library",
            unit="%",
            note=f"the time the server's threads ran (schedstat) over "
            f"{sizes.watch_idle_seconds:g} s, as for the RSS; by utime + "
            f"stime (10 ms ticks): {ticks[0]:.3f} vs {ticks[1]:.3f}% of a core (medians)",
        ),
    ]


async def _idle_server(ctx: Context, name: str, db: Path, watches: int) -> dict[str, float]:
    """Start a server on `db`, wait until it has `watches` inotify watches and the whole rescan
    a keeper starts with has ended (and a moment more), then read its RSS and CPU over the idle
    window."""
    sizes = ctx.sizes
    server, _ = mediascan_server(ctx, name, "--db", str(db))
    first_rescan = 0.0
    try:
        listening = time.monotonic()
        async with asyncio.timeout(WAIT):
            while (found := inotify_watches(server.pid)) < watches:
                await asyncio.sleep(0.05)
        watching = time.monotonic() - listening
        if watches:
            async with Client(server.address) as client:
                job = await _next_job(client, set())
            if job.trigger != scan_pb2.TRIGGER_WATCH or job.options.folders:
                raise RuntimeError(f"{name}: not the keeper's first rescan: {job}")
            first_rescan = (job.end_time.ToNanoseconds() - job.create_time.ToNanoseconds()) / 1e9
        await asyncio.sleep(sizes.watch_idle_settle)
        ran, ticked = run_ns(server.pid) or 0, cpu_seconds(server.pid) or 0.0
        started = time.monotonic()
        await asyncio.sleep(sizes.watch_idle_seconds)
        ran = (run_ns(server.pid) or 0) - ran
        ticked = (cpu_seconds(server.pid) or 0.0) - ticked
        elapsed = time.monotonic() - started
        rss = server.rss_kib() or 0
        found = inotify_watches(server.pid)
        if found < watches:
            raise RuntimeError(f"{name}: {found} inotify watches, not {watches}; {server.tail()}")
    finally:
        await asyncio.to_thread(server.stop)
    return {
        "rss_mib": rss / 1024,
        "cpu_share": ran / 1e9 / elapsed,
        "utime_stime_share": ticked / elapsed,
        "watches": found,
        "watching_s": watching,
        "first_rescan_s": first_rescan,
    }


def inotify_watches(pid: int) -> int:
    """The inotify watches the process holds (the `inotify wd:` lines of its fdinfo)."""
    count = 0
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:inotify":
                    continue
                with open(f"/proc/{pid}/fdinfo/{fd}") as info:
                    count += sum(line.startswith("inotify wd:") for line in info)
            except OSError:
                continue
    return count


# -- poll -----------------------------------------------------------------------------------------


async def _poll(ctx: Context, root: Path, db: Path) -> list[Row]:
    walks = await asyncio.to_thread(_poll_walks, ctx, root)
    find_cpu_ms = statistics.median(d["find_cpu_s"] for d in walks.runs) * 1000
    return [walks, await _polled_server(ctx, db, find_cpu_ms)]


def _poll_walks(ctx: Context, root: Path) -> Row:
    """Polls of the large tree by the server's own poller (`FolderPoller`, in this process, as
    the server runs it in a worker thread), each against `find -printf` of the same tree."""
    sizes = ctx.sizes
    files = sizes.watch_library_files
    poller = FolderPoller(
        (str(root),), recursive=True, follow_symlinks=False, suffixes=VIDEO_SUFFIXES
    )
    poller.poll()  # the baseline
    pairs: list[tuple[float | None, float | None]] = []
    details = []
    for number in range(1, sizes.watch_poll_runs + 1):
        cpu = time.thread_time()
        start = time.perf_counter()
        found = poller.poll()
        seconds = time.perf_counter() - start
        cpu = time.thread_time() - cpu
        if found is not None or poller.files != files:
            raise RuntimeError(f"the poll found changes, or {poller.files} files: {found}")
        find, find_cpu = find_printf(root)
        pairs.append((files / seconds, files / find))
        details.append({"poll_cpu_s": cpu, "find_cpu_s": find_cpu})
        ctx.log(
            f"{BENCH}: poll {number}/{sizes.watch_poll_runs}: {files / seconds:,.0f} vs "
            f"find {files / find:,.0f} files/s"
        )
    cpu_ms = statistics.median(d["poll_cpu_s"] for d in details) * 1000
    find_cpu_ms = statistics.median(d["find_cpu_s"] for d in details) * 1000
    return paired(
        BENCH,
        f"{files:,}-file poll: files/s",
        pairs,
        baseline_name="find -printf",
        note=f"{sizes.watch_poll_runs} polls of {files:,} unchanged files in "
        f"{files // PER_FOLDER:,} folders by the server's poller (each video file stat'ed, "
        f"each folder's digest compared); CPU per poll (median): poller {cpu_ms:,.0f} ms, "
        f"find {find_cpu_ms:,.0f} ms",
        details=details,
    )


async def _polled_server(ctx: Context, db: Path, find_cpu_ms: float) -> Row:
    """The large library switched to WATCH_MODE_POLL on a server: its CPU per poll once the
    whole rescan it starts with has ended, and the jobs its polls make (none: nothing changes);
    against the CPU of one `find -printf` of the same tree."""
    sizes = ctx.sizes
    server, _ = mediascan_server(ctx, "watch-poll", "--db", str(db))
    try:
        async with Client(server.address) as client:
            seen = {job.job_id for job in (await client.stub.ListJobs(_JOBS)).jobs}
            library = scan_pb2.Library(name="large", watch_mode=scan_pb2.WATCH_MODE_POLL)
            library.poll_interval.FromNanoseconds(round(sizes.watch_poll_interval * 1e9))
            await client.stub.UpdateLibrary(
                scan_pb2.UpdateLibraryRequest(
                    library=library, update_mask={"paths": ["watch_mode", "poll_interval"]}
                ),
                timeout=30,
            )
            first = await _next_job(client, seen)  # the whole rescan a keeper starts with
            polls = sizes.watch_poll_runs
            cpu_before = cpu_seconds(server.pid) or 0.0
            await asyncio.sleep(polls * sizes.watch_poll_interval)  # polls, and nothing else
            cpu = (cpu_seconds(server.pid) or 0.0) - cpu_before
            jobs = (await client.stub.ListJobs(_JOBS, timeout=30)).jobs
            made = [job.job_id for job in jobs if job.job_id not in seen]
    finally:
        await asyncio.to_thread(server.stop)
    rescan = (first.end_time.ToNanoseconds() - first.create_time.ToNanoseconds()) / 1e9
    files = sizes.watch_library_files
    per_poll = cpu * 1000 / polls
    return paired(
        BENCH,
        f"{files:,}-file polled library: server CPU per poll (ms)",
        [(per_poll, find_cpu_ms)],
        baseline_name="find -printf's CPU",
        unit="ms",
        note=f"WATCH_MODE_POLL every {sizes.watch_poll_interval:g} s, {polls} intervals once "
        f"the first whole rescan had ended ({files / rescan:,.0f} files/s); jobs the polls "
        f"made: {len(made)}",
    )


async def _next_job(client: Client, seen: set[str]) -> Any:
    """The next job not seen yet, once it has ended."""
    async with asyncio.timeout(WAIT):
        while True:
            jobs = (await client.stub.ListJobs(_JOBS, timeout=30)).jobs
            fresh = [job for job in jobs if job.job_id not in seen]
            if fresh:
                job = fresh[-1]  # newest first: the oldest one not seen
                seen.add(job.job_id)
                return await client.wait(job.job_id, WAIT)
            await asyncio.sleep(0.05)


async def _no_jobs_running(client: Client) -> None:
    """Until no job is queued or running."""
    active = (scan_pb2.JOB_STATE_QUEUED, scan_pb2.JOB_STATE_RUNNING)
    async with asyncio.timeout(WAIT):
        while any(
            job.state in active for job in (await client.stub.ListJobs(_JOBS, timeout=30)).jobs
        ):
            await asyncio.sleep(0.05)


_JOBS = scan_pb2.ListJobsRequest(page_size=20)


# -- write to ADDED in the large library ----------------------------------------------------------


async def _large_latency(ctx: Context, root: Path, db: Path) -> list[Row]:
    """Files written one at a time into folders of the large library (back in WATCH_MODE_EVENTS,
    with a short quiet window), each to its ADDED change, as in the small library of `_latency`;
    the files are removed again at the end (their REMOVED changes awaited)."""
    seed = ctx.scratch / "watch-seed.mp4"
    content = seed.read_bytes()
    files = ctx.sizes.watch_large_files
    server, _ = mediascan_server(ctx, "watch-large", "--db", str(db))
    written: list[Path] = []
    try:
        async with Client(server.address) as client:
            seen = {job.job_id for job in (await client.stub.ListJobs(_JOBS)).jobs}
            library = scan_pb2.Library(name="large", watch_mode=scan_pb2.WATCH_MODE_EVENTS)
            library.quiet_window.FromNanoseconds(round(LARGE_WINDOW * 1e9))
            mask = {"paths": ["watch_mode", "quiet_window"]}
            feed = Feed(client, "large")
            try:
                await client.stub.UpdateLibrary(
                    scan_pb2.UpdateLibraryRequest(library=library, update_mask=mask), timeout=30
                )
                await feed.watching(scan_pb2.WATCH_MODE_EVENTS)
                await _next_job(client, seen)  # the whole rescan a keeper starts with
                await _no_jobs_running(client)
                samples = await _large_files(ctx, client, feed, root, files, content, written)
                for path in written:
                    path.unlink()
                    await feed.removed(os.path.realpath(path))
            finally:
                feed.close()
    finally:
        await asyncio.to_thread(server.stop)
        for path in written:
            path.unlink(missing_ok=True)
    count = f"{ctx.sizes.watch_library_files:,}"
    return [
        paired(
            BENCH,
            f"{count} watched files, {_label(LARGE_WINDOW)}: write to ADDED p50 (s)",
            [(s["seconds"], LARGE_WINDOW) for s in samples],
            baseline_name="the quiet window",
            unit="s",
            target=("<=", LARGE_WINDOW + 1.0),
            target_on="value",
            note=f"into folders of the {count}-file library; " + _breakdown(samples, len(content)),
            details=samples,
        )
    ]


async def _large_files(
    ctx: Context,
    client: Client,
    feed: Feed,
    root: Path,
    files: int,
    content: bytes,
    written: list[Path],
) -> list[dict[str, float]]:
    """Write `files` files (after one unmeasured) into folders of the large library, one at a
    time, each to its ADDED change; their timings (seconds)."""
    folders = max(1, ctx.sizes.watch_library_files // PER_FOLDER)
    samples = []
    for number in range(files + 1):
        path = root / f"f{number * 37 % folders:05d}" / f"new-{number:03d}.mp4"
        written.append(path)
        sample = await _write_to_added(client, feed, path, content)
        if number == 0:
            continue
        samples.append(sample)
        ctx.log(f"{BENCH}: large library, file {number}/{files}: {sample['seconds']:.3f} s")
        await asyncio.sleep(0.2)
    return samples
