"""Shared plumbing of the benchmarks: sizes, scratch folders, server and load-generator processes,
/proc readings, statistics and the rows of the result table."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import os
import queue
import re
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc

from mediascan.server.testing import event_job
from mediascan.v1 import scan_pb2, scan_pb2_grpc

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BIN = Path(sys.executable).parent
LOOPS = ("asyncio", "uvloop")
LISTENING = re.compile(r"listening on (?P<address>\S+:\d+)\s*$")
#: Every client channel gets its own TCP connection (gRPC shares one between channels to the
#: same address by default, which would make "64 in flight over 4 channels" one connection).
CHANNEL_OPTIONS: list[tuple[str, Any]] = [("grpc.use_local_subchannel_pool", 1)]
TERMINAL = frozenset(
    {
        scan_pb2.JOB_STATE_SUCCEEDED,
        scan_pb2.JOB_STATE_FAILED,
        scan_pb2.JOB_STATE_TIMED_OUT,
        scan_pb2.JOB_STATE_CANCELLED,
    }
)


# -- sizes --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class Sizes:
    """How big each benchmark is and how often it runs (medians over `runs`)."""

    quick: bool
    runs: int
    # 1. submit
    submit_warmup: float
    submit_duration: float
    submit_folders: int
    submit_channels: int = 4
    submit_concurrency: int = 64
    # 2. fan-out
    fanout_counts: tuple[int, ...]
    fanout_warmup: float
    fanout_duration: float
    fanout_files: int
    fanout_per_channel: int = 100
    stalled_share: float = 0.1
    # 2. fan-out: a full scan watched by this many subscribers against the same scan unwatched
    watched_files: int
    watched_count: int
    # 3. first scan
    first_files: int
    ffprobe_files: int
    # 4. rescan
    rescan_files: int
    rescan_runs: int
    #: the rescan of placeholder files whose rows were written straight into the library
    rescan_library_files: int = 1_000_000
    # 5. job overhead
    jobs: int
    jobs_runs: int
    # 6. the command line's videos table
    table_rows: int = 50_000
    # 7. cluster: nodes on one PostgreSQL database
    cluster_nodes: tuple[int, ...] = (1, 2, 4)
    cluster_jobs: int = 2000
    cluster_watch_files: int = 40_000
    cluster_watchers: int = 20
    # 8. DECODE verification: files (hard links of one clip) and the clip's seconds
    verify_files: int = 20
    verify_seconds: float = 10.0
    verify_size: str = "1280x720"
    # 9. ListVideos: videos in the library, and calls of each page measured
    list_rows: int = 1_000_000
    list_calls: int = 200
    # 11. libraries kept current: (quiet window in seconds, files written) of each
    # write-to-ADDED figure; then a library of watch_library_files (100 to a folder), watched at
    # rest and polled
    watch_latency: tuple[tuple[float, int], ...] = ((10.0, 6), (0.5, 20))
    watch_library_files: int = 100_000
    watch_idle_runs: int = 2
    watch_idle_settle: float = 5.0  #: seconds between the last watch and the idle window
    watch_idle_seconds: float = 30.0
    watch_poll_runs: int = 5
    watch_poll_interval: float = 3.0
    watch_large_files: int = 8  #: written into that library, each to its ADDED change


FULL = Sizes(
    quick=False,
    runs=3,
    submit_warmup=1.0,
    submit_duration=5.0,
    submit_folders=40_000,
    fanout_counts=(1, 100, 1000),
    fanout_warmup=1.0,
    fanout_duration=5.0,
    fanout_files=40_000,
    watched_files=2000,
    watched_count=1000,
    first_files=5000,
    ffprobe_files=200,
    rescan_files=100_000,
    rescan_runs=5,
    jobs=10_000,
    jobs_runs=3,
)

QUICK = Sizes(
    quick=True,
    runs=1,
    submit_warmup=0.3,
    submit_duration=1.0,
    submit_folders=10_000,
    fanout_counts=(1, 50),
    fanout_warmup=0.3,
    fanout_duration=1.0,
    fanout_files=10_000,
    watched_files=200,
    watched_count=50,
    first_files=200,
    ffprobe_files=16,
    rescan_files=5000,
    rescan_runs=2,
    rescan_library_files=2000,
    jobs=200,
    jobs_runs=1,
    table_rows=2000,
    cluster_jobs=400,
    cluster_watch_files=10_000,
    cluster_watchers=5,
    verify_files=4,
    verify_seconds=2.0,
    verify_size="640x360",
    list_rows=5000,
    list_calls=20,
    watch_latency=((0.5, 3),),
    watch_library_files=2000,
    watch_idle_runs=1,
    watch_idle_settle=0.25,
    watch_idle_seconds=1.0,
    watch_poll_runs=2,
    watch_poll_interval=1.0,
    watch_large_files=2,
)


# -- the result table ---------------------------------------------------------------------------


@dataclasses.dataclass(kw_only=True)
class Row:
    """One figure: mediascan's value, the baseline's, their ratio (mediascan / baseline) and the
    target the ratio (or, with `target_on="value"`, the value itself) must meet."""

    bench: str  #: e.g. "1 submit"
    figure: str  #: e.g. "requests/s"
    value: float | None
    baseline: float | None = None
    baseline_name: str = ""
    unit: str = ""
    ratio: float | None = None
    #: (">=" or "<=", number) or None
    target: tuple[str, float] | None = None
    target_on: str = "ratio"  #: "ratio" or "value"
    runs: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    note: str = ""

    def __post_init__(self) -> None:
        if self.ratio is None and self.value is not None and self.baseline:
            self.ratio = self.value / self.baseline

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        checked = self.ratio if self.target_on == "ratio" else self.value
        if checked is None or math.isnan(checked):
            return False
        op, limit = self.target
        return checked >= limit if op == ">=" else checked <= limit

    def as_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["met"] = self.met
        data["key"] = self.key
        return data

    @property
    def key(self) -> str:
        return f"{self.bench} | {self.figure}"


def paired(
    bench: str,
    figure: str,
    runs: Sequence[tuple[float | None, float | None]],
    *,
    baseline_name: str,
    unit: str = "",
    target: tuple[str, float] | None = None,
    target_on: str = "ratio",
    note: str = "",
    details: Sequence[dict[str, Any]] = (),
) -> Row:
    """A row from (mediascan, baseline) pairs measured side by side: medians of each, and the
    median of the per-run ratios (robust to a machine that drifts between runs). `details`: more
    figures of each run, kept in the JSON."""
    values = [v for v, _ in runs if v is not None]
    baselines = [b for _, b in runs if b is not None]
    ratios = [v / b for v, b in runs if v is not None and b]
    return Row(
        bench=bench,
        figure=figure,
        value=statistics.median(values) if values else None,
        baseline=statistics.median(baselines) if baselines else None,
        baseline_name=baseline_name,
        unit=unit,
        ratio=statistics.median(ratios) if ratios else None,
        target=target,
        target_on=target_on,
        runs=[
            {"value": v, "baseline": b, **(details[i] if i < len(details) else {})}
            for i, (v, b) in enumerate(runs)
        ],
        note=note,
    )


def percentile(samples: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) by nearest rank; None without samples."""
    if not samples:
        return None
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def median_of(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


# -- the run's context --------------------------------------------------------------------------


@dataclasses.dataclass(kw_only=True)
class Context:
    sizes: Sizes
    server_loop: str
    client_loop: str
    scratch: Path  #: video trees (tmpfs when available)
    dbdir: Path  #: databases and logs (a real disk)
    verbose: bool = True
    notes: list[str] = dataclasses.field(default_factory=list)
    #: What one benchmark made that others may reuse in the same run (a library's database).
    cache: dict[str, Any] = dataclasses.field(default_factory=dict)
    _counter: int = 0

    def log(self, message: str) -> None:
        if self.verbose:
            print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    def fresh(self, name: str) -> Path:
        """A new, empty folder for one server's database and log."""
        self._counter += 1
        path = self.dbdir / f"{self._counter:03d}-{name}"
        path.mkdir(parents=True)
        return path


def scratch_base() -> Path:
    """tmpfs (/dev/shm) for the video trees when it is usable: no disk noise."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return shm
    return Path(tempfile.gettempdir())


# -- /proc --------------------------------------------------------------------------------------


def proc_kib(pid: int, field: str) -> int | None:
    """A field of /proc/PID/status in KiB (VmRSS, VmHWM); None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def children(pid: int) -> list[int]:
    """Direct child processes of `pid`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def cpu_seconds(pid: int, *, children: bool = False) -> float | None:
    """User + system CPU time of a process so far (seconds); with `children`, also that of
    the children it waited for (a rescan's `find`)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def run_ns(pid: int) -> int | None:
    """Nanoseconds the live threads of a process have run on a CPU (the first field of each
    /proc/PID/task/TID/schedstat): exact where utime + stime are sampled at each clock tick
    (10 ms), too coarse for a process that is nearly idle. Threads that ended are not counted."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for task in tasks:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/schedstat") as stat:
            total += int(stat.read().split()[0])
    return total


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = proc_meminfo("MemTotal")
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "mem_total_gib": round(mem_kib / 2**20, 1) if mem_kib else None,
        "python": sys.version.split()[0],
        "grpcio": grpc.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


def proc_meminfo(field: str) -> int | None:
    with contextlib.suppress(OSError), open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


# -- event loops ---------------------------------------------------------------------------------


def use_loop(loop: str) -> None:
    """Make asyncio.run use `loop` ("asyncio" or "uvloop") in this process."""
    if loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    elif loop != "asyncio":
        raise SystemExit(f"unknown event loop {loop!r}: use asyncio or uvloop")


def run_async(main: Coroutine[Any, Any, T], loop: str) -> T:
    use_loop(loop)
    return asyncio.run(main)


def uvloop_available() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


# -- server processes ---------------------------------------------------------------------------


class ServerProcess:
    """A server subprocess whose first stdout line ends in `listening on HOST:PORT`."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        log: Path,
        env: dict[str, str] | None = None,
        ready_timeout: float = 60.0,
    ) -> None:
        self.argv = list(argv)
        self.log = log
        with log.open("ab") as stderr:
            self.popen = subprocess.Popen(
                self.argv,
                stdout=subprocess.PIPE,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                text=True,
                env=env,
                cwd=ROOT,
            )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._pump = threading.Thread(target=self._read, daemon=True)
        self._pump.start()
        try:
            line = self._lines.get(timeout=ready_timeout)
        except queue.Empty:
            self.kill()
            raise RuntimeError(
                f"{argv[0]} printed nothing in {ready_timeout}s; {self.tail()}"
            ) from None
        match = LISTENING.search(line or "")
        if match is None:
            self.kill()
            raise RuntimeError(f"{argv[0]}: unexpected first line {line!r}; {self.tail()}")
        self.address = match["address"]

    def _read(self) -> None:
        assert self.popen.stdout is not None
        with contextlib.suppress(ValueError, OSError):
            for line in self.popen.stdout:
                self._lines.put(line)
        self._lines.put(None)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def rss_kib(self) -> int | None:
        return proc_kib(self.pid, "VmRSS")

    def hwm_kib(self) -> int | None:
        return proc_kib(self.pid, "VmHWM")

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return "(no log)"
        return "log tail:\n" + "\n".join(text)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (a graceful drain), SIGKILL after `timeout`; the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._pump.join(5)
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        return self.popen.returncode

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(10)


def server_env() -> dict[str, str]:
    """The environment of a benchmark server: none of the caller's MEDIASCAN_* settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MEDIASCAN_")}


def mediascan_server(
    ctx: Context,
    name: str,
    *args: str,
    env: dict[str, str] | None = None,
    prober_fault: str | None = None,
) -> tuple[ServerProcess, Path]:
    """A real `mediascan-server` subprocess with a fresh database; returns it and its folder.
    `prober_fault` (`hang:TEXT`): the server's main() with the test prober of
    `mediascan.server.testing_prober`, whose probes hang on paths holding TEXT."""
    folder = ctx.fresh(name)
    common = ["--listen", "127.0.0.1:0", "--db", str(folder / "mediascan.db"), *args]
    if prober_fault is not None:
        argv = [PYTHON, "-m", "mediascan.server.testing_prober", "server", prober_fault, "--"]
        argv += common
    elif ctx.server_loop == "asyncio":
        argv = [str(BIN / "mediascan-server"), *common]
    else:  # the same main() under another loop (mediascan has no --loop flag)
        argv = [PYTHON, "-m", "bench.serve", f"--loop={ctx.server_loop}", *common]
    process = ServerProcess(argv, log=folder / "server.log", env=env or server_env())
    return process, folder


def bare_server(ctx: Context, name: str, *args: str) -> ServerProcess:
    """A baseline grpc.aio server (`bench/bare.py`) under the server loop."""
    folder = ctx.fresh(name)
    argv = [PYTHON, "-m", "bench.bare", f"--loop={ctx.server_loop}", *args]
    return ServerProcess(argv, log=folder / "server.log", env=server_env())


def job_counts(db: Path) -> dict[str, int]:
    """Jobs by state name, read from a stopped server's database."""
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall()
        return {scan_pb2.JobState.Name(state): count for state, count in rows}
    finally:
        conn.close()


def job_span_ns(db: Path, since_ns: int = 0) -> tuple[int, int, int]:
    """(first create_ns, last end_ns, finished jobs) of the jobs created since `since_ns`, read
    from a stopped server's database."""
    conn = sqlite3.connect(db)
    try:
        first, last, done = conn.execute(
            "SELECT min(create_ns), max(end_ns), count(end_ns) FROM jobs WHERE create_ns >= ?",
            (since_ns,),
        ).fetchone()
        return int(first or 0), int(last or 0), int(done or 0)
    finally:
        conn.close()


# -- load generators ----------------------------------------------------------------------------


class Worker:
    """A `python -m bench.loadgen ...` process: lines on stdout, the last one `RESULT {json}`."""

    def __init__(self, process: asyncio.subprocess.Process, log: Path) -> None:
        self.process = process
        self.log = log

    @classmethod
    async def start(cls, ctx: Context, name: str, *args: str) -> Worker:
        log = ctx.fresh(name) / "loadgen.log"
        with log.open("ab") as stderr:
            process = await asyncio.create_subprocess_exec(
                PYTHON,
                "-m",
                "bench.loadgen",
                f"--loop={ctx.client_loop}",
                *args,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                stdin=asyncio.subprocess.DEVNULL,
                cwd=ROOT,
                limit=256 * 2**20,  # the result line carries the latency samples
            )
        return cls(process, log)

    async def line(self, timeout: float) -> str:
        assert self.process.stdout is not None
        raw = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not raw:
            await self.process.wait()
            raise RuntimeError(f"load generator exited ({self.process.returncode}); {self.tail()}")
        return raw.decode().rstrip("\n")

    async def expect(self, word: str, timeout: float) -> str:
        line = await self.line(timeout)
        if not line.startswith(word):
            raise RuntimeError(f"load generator said {line[:200]!r}, not {word}; {self.tail()}")
        return line

    async def result(self, timeout: float) -> dict[str, Any]:
        try:
            line = await self.expect("RESULT ", timeout)
            await asyncio.wait_for(self.process.wait(), 30)
        finally:
            self.kill()
        data: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
        return data

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return "(no log)"
        return "log tail:\n" + "\n".join(text)

    def kill(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()


# -- talking to mediascan -----------------------------------------------------------------------


class Client:
    """A small control client for the orchestrator (the load itself comes from loadgen)."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        self.stub = scan_pb2_grpc.ScanServiceStub(self.channel)

    async def __aenter__(self) -> Client:
        await asyncio.wait_for(self.channel.channel_ready(), 30)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.channel.close()

    async def submit(self, path: Path | str, **options: Any) -> scan_pb2.Job:
        response = await self.stub.SubmitScan(
            scan_pb2.SubmitScanRequest(path=str(path), **options), timeout=30
        )
        return response.job

    async def wait(self, job_id: str, limit: float) -> scan_pb2.Job:
        """Follow the job until it is terminal (at most `limit` seconds); the terminal job."""
        call = self.stub.WatchJob(scan_pb2.WatchJobRequest(job_id=job_id))
        try:
            async with asyncio.timeout(limit):
                async for event in call:
                    job = event_job(event)
                    if job is not None and job.state in TERMINAL:
                        return job
        finally:
            call.cancel()
        job = await self.stub.GetJob(scan_pb2.GetJobRequest(job_id=job_id), timeout=30)
        if job.state not in TERMINAL:
            raise RuntimeError(f"job {job_id} did not end (state {job.state})")
        return job

    async def scan(self, path: Path | str, limit: float, **options: Any) -> tuple[float, Any]:
        """Submit and follow to the end within `limit` seconds: (wall seconds from submit to the
        terminal event, the terminal job). `options` are SubmitScanRequest fields."""
        start = time.perf_counter()
        job = await self.submit(path, **options)
        job = await self.wait(job.job_id, limit)
        return time.perf_counter() - start, job

    async def until_progress(self, job_id: str, files_done: int, timeout: float) -> None:
        call = self.stub.WatchJob(scan_pb2.WatchJobRequest(job_id=job_id))
        try:
            async with asyncio.timeout(timeout):
                async for event in call:
                    if event.WhichOneof("kind") == "progress":
                        if event.progress.files_done >= files_done:
                            return
                    elif (job := event_job(event)) is not None and job.state in TERMINAL:
                        raise RuntimeError(f"job {job_id} ended before making progress")
        finally:
            call.cancel()

    async def cancel(self, job_id: str, timeout: float = 60.0) -> scan_pb2.Job:
        await self.stub.CancelJob(scan_pb2.CancelJobRequest(job_id=job_id), timeout=timeout)
        return await self.wait(job_id, timeout)

    async def active(self) -> int:
        """Jobs queued or running now (0 or more; counts at most 2 of each)."""
        total = 0
        for state in (scan_pb2.JOB_STATE_QUEUED, scan_pb2.JOB_STATE_RUNNING):
            response = await self.stub.ListJobs(
                scan_pb2.ListJobsRequest(state=state, page_size=1), timeout=30
            )
            total += len(response.jobs) + (1 if response.next_page_token else 0)
        return total


# -- trees of videos ----------------------------------------------------------------------------


def link_tree(seed: Path, root: Path, count: int, *, per_folder: int, suffix: str = ".mp4") -> Path:
    """`count` hard links of `seed` under `root`, `per_folder` to a folder (f0000/v000000.mp4).

    Hard links share size and mtime, which a first scan does not care about, and cost no space."""
    root.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        folder = root / folder_name(index // per_folder)
        if index % per_folder == 0:
            folder.mkdir(exist_ok=True)
        os.link(seed, folder / f"v{index:06d}{suffix}")
    return root


def folder_name(index: int) -> str:
    """The name of the index-th folder of a tree (f00000, f00001, ...)."""
    return f"f{index:05d}"


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def find_printf(tree: Path) -> tuple[float, float]:
    """`find TREE -type f -printf '%s %T@\\n' > /dev/null` (the floor of a walk that reads
    every file's size and time): its (wall seconds, CPU seconds)."""
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


async def gather_bounded(
    factories: Iterable[Callable[[], Coroutine[Any, Any, T]]], limit: int
) -> list[T]:
    semaphore = asyncio.Semaphore(limit)

    async def one(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
        async with semaphore:
            return await factory()

    return await asyncio.gather(*(one(f) for f in factories))
