"""Helpers for the robustness tests (issue 5): `mediascan-server` subprocesses with a chosen
environment and resource limits, their memory, threads and descriptors read from /proc, a job's
whole history read back through WatchJob, SQLite checks on a copy of a database, and the figures
each test records for docs/reliability.md."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest

from mediascan.server.testing import TERMINAL_STATES, event_state, make_video
from mediascan.v1 import scan_pb2, scan_pb2_grpc

BIN = Path(sys.executable).parent
LISTEN_LINE = re.compile(r"^mediascan-server listening on (?P<address>\S+:\d+)$")
START_TIMEOUT = 20.0

QUEUED = scan_pb2.JOB_STATE_QUEUED
RUNNING = scan_pb2.JOB_STATE_RUNNING
SUCCEEDED = scan_pb2.JOB_STATE_SUCCEEDED
FAILED = scan_pb2.JOB_STATE_FAILED
TIMED_OUT = scan_pb2.JOB_STATE_TIMED_OUT
CANCELLED = scan_pb2.JOB_STATE_CANCELLED

#: Not an environment variable: a key of a launch's `env` (`hang_env()`) that `start_server_sync`
#: takes out and turns into a server whose prober is the test prober (`python -m
#: mediascan.server.testing_prober server hang:HANG_MARK -- ...`): its probes hang on any path
#: containing HANG_MARK, a job that holds a worker until cancelled.
FAULT_ENV = "test-prober-fault"
HANG_MARK = "HANG-ON-ME"

#: Every transition the contract allows (RUNNING -> QUEUED: a job cut off by a crash or drain).
ALLOWED = {
    (QUEUED, RUNNING),
    (QUEUED, CANCELLED),
    (QUEUED, FAILED),
    (RUNNING, QUEUED),
    (RUNNING, SUCCEEDED),
    (RUNNING, FAILED),
    (RUNNING, TIMED_OUT),
    (RUNNING, CANCELLED),
}

#: Channel options for a channel with a TCP connection of its own (gRPC otherwise shares one
#: connection between channels to the same address, and one connection carries at most the
#: server's max_concurrent_streams calls).
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


# -- server subprocesses ---------------------------------------------------------------------


@dataclasses.dataclass
class ServerProcess:
    """A `mediascan-server` subprocess and what /proc says about it."""

    process: subprocess.Popen[str]
    address: str
    db: Path | str
    stderr_path: Path
    drain: threading.Thread | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def terminate(self) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.alive():
            self.process.kill()

    async def wait(self, timeout: float) -> int:
        """The exit code, once the process has exited (subprocess.TimeoutExpired after
        `timeout`)."""
        return await asyncio.to_thread(self.process.wait, timeout)

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def status(self) -> dict[str, int]:
        """VmRSS, VmHWM (peak RSS), VmSize in KiB and Threads, from /proc/PID/status."""
        values: dict[str, int] = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "VmSize", "Threads"):
                values[key] = int(rest.split()[0])
        return values

    def rss_mib(self) -> float:
        return self.status()["VmRSS"] / 1024

    def peak_rss_mib(self) -> float:
        return self.status()["VmHWM"] / 1024

    def threads(self) -> int:
        return self.status()["Threads"]

    def fds(self) -> int:
        """Open file descriptors (sockets, pipes to the probers, SQLite files, ...)."""
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def cpu_seconds(self) -> tuple[float, float]:
        """CPU time (user + system) used so far by the server process itself, and by its live
        children (the prober processes)."""
        tick = os.sysconf("SC_CLK_TCK")
        own = _cpu_of(self.pid, tick)
        children = 0.0
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                    if int(fields[1]) == self.pid:
                        children += (int(fields[11]) + int(fields[12])) / tick
        return own, children

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.stderr_text().splitlines()[-lines:])


def _cpu_of(pid: int, tick: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tick


def _server_env(extra: dict[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIASCAN_")}
    env.update(extra or {})
    return env


def _read_line(process: subprocess.Popen[str], timeout: float) -> str:
    """The first stdout line within `timeout` seconds ('' if none came)."""
    assert process.stdout is not None
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    return box[0] if box else ""


def _drain(stream: Any) -> None:
    with contextlib.suppress(ValueError, OSError):
        for _ in stream:
            pass


def start_server_sync(
    workdir: Path,
    *args: str,
    db: Path | str,
    env: dict[str, str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
    listen: str = "127.0.0.1:0",
    name: str = "server",
) -> ServerProcess:
    """Run `mediascan-server --listen LISTEN --db DB *args` and wait for its listening line."""
    stderr_path = workdir / f"{name}-{time.monotonic_ns()}.stderr"
    env = dict(env or {})
    command = [str(BIN / "mediascan-server")]
    fault = env.pop(FAULT_ENV, None)
    if fault is not None:
        command = [sys.executable, "-m", "mediascan.server.testing_prober", "server", fault, "--"]
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            [*command, "--listen", listen, "--db", str(db), *args],
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            text=True,
            env=_server_env(env),
            preexec_fn=preexec_fn,  # only resource limits, set before exec
        )
    handle = ServerProcess(process=process, address="", db=db, stderr_path=stderr_path)
    line = _read_line(process, START_TIMEOUT)
    match = LISTEN_LINE.match(line.rstrip("\n"))
    if match is None:
        process.kill()
        process.wait(10)
        raise AssertionError(
            f"mediascan-server did not start (first line {line!r}); stderr:\n{handle.tail()}"
        )
    handle.address = match["address"]
    handle.drain = threading.Thread(target=_drain, args=(process.stdout,), daemon=True)
    handle.drain.start()
    return handle


def stop_server_sync(handle: ServerProcess) -> None:
    """Kill the process if it still runs and reap it."""
    handle.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        handle.process.wait(15)
    if handle.drain is not None:
        handle.drain.join(10)
    if handle.process.stdout is not None:
        with contextlib.suppress(OSError):
            handle.process.stdout.close()


Launcher = Callable[..., Any]


@pytest.fixture(name="launch")
async def launch_fixture(tmp_path: Path) -> AsyncIterator[Launcher]:
    """The `launch` fixture (import `launch_fixture` into a test module to use it):
    `await launch(*args, db=..., env=..., preexec_fn=..., listen=...)` starts a
    `mediascan-server` subprocess (default db tmp_path/"mediascan.db"); killed at teardown."""
    started: list[ServerProcess] = []

    async def factory(
        *args: str,
        db: Path | str | None = None,
        env: dict[str, str] | None = None,
        preexec_fn: Callable[[], None] | None = None,
        listen: str = "127.0.0.1:0",
    ) -> ServerProcess:
        handle = await asyncio.to_thread(
            start_server_sync,
            tmp_path,
            *args,
            db=db or tmp_path / "mediascan.db",
            env=env,
            preexec_fn=preexec_fn,
            listen=listen,
            name=f"server{len(started)}",
        )
        started.append(handle)
        return handle

    yield factory
    for handle in started:
        await asyncio.to_thread(stop_server_sync, handle)


@contextlib.asynccontextmanager
async def channel_to(
    address: str, *, own_connection: bool = False
) -> AsyncIterator[tuple[grpc.aio.Channel, scan_pb2_grpc.ScanServiceStub]]:
    """A READY channel to `address` and a ScanService stub on it; closed on exit."""
    options = OWN_CONNECTION if own_connection else None
    channel = grpc.aio.insecure_channel(address, options=options)
    try:
        async with asyncio.timeout(START_TIMEOUT):
            await channel.channel_ready()
        yield channel, scan_pb2_grpc.ScanServiceStub(channel)
    finally:
        await channel.close(None)


# -- jobs -----------------------------------------------------------------------------------


async def job_history(stub: Any, job_id: str, *, timeout: float = 30.0) -> list[Any]:
    """Every stored event of a finished job after its creation event (sequence 2 onwards),
    replayed by WatchJob(after_sequence=1)."""
    events = []
    call = stub.WatchJob(scan_pb2.WatchJobRequest(job_id=job_id, after_sequence=1))
    try:
        async with asyncio.timeout(timeout):
            async for event in call:
                events.append(event)
    finally:
        call.cancel()
    return events


async def logged(server: Any, text: str, timeout: float = 60.0) -> None:
    """Until the server's log holds `text` (polled: a log line has no event to wait on)."""
    async with asyncio.timeout(timeout):
        while text not in server.stderr_text():
            await asyncio.sleep(0.1)


def metric_total(address: str, name: str, **labels: str) -> float:
    """The sum of the samples `name` (with these labels) on a server's /metrics at `address`."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://{address}/metrics", timeout=30) as response:
        text = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def check_history(job_id: str, events: Sequence[Any]) -> dict[str, int]:
    """Assert that a job's events 2..N are gapless and that its state changes follow the state
    machine from QUEUED to exactly one terminal state, the last event; each run is preceded by
    a QUEUED (never two runs at once) and each RUNNING -> QUEUED adds one attempt.

    Returns {"runs": RUNNING entries, "requeues": RUNNING -> QUEUED, "final": final state}."""
    assert events, f"job {job_id}: no stored events"
    assert not any(e.WhichOneof("kind") == "snapshot" for e in events), (
        f"job {job_id}: the replay resynced instead of returning the stored events"
    )
    sequences = [e.sequence for e in events]
    assert sequences == list(range(2, 2 + len(events))), f"job {job_id}: gaps in {sequences}"
    state, attempt, runs, requeues, terminal = QUEUED, 1, 0, 0, 0
    for event in events:
        if event.WhichOneof("kind") != "state_change":
            continue
        change = event.state_change
        assert change.from_state == state, f"job {job_id}: {change.from_state} after {state}"
        assert (change.from_state, change.to_state) in ALLOWED, (
            f"job {job_id}: illegal transition {change.from_state} -> {change.to_state}"
        )
        assert terminal == 0, f"job {job_id}: a change after its terminal state"
        if change.to_state == RUNNING:
            runs += 1
        if (change.from_state, change.to_state) == (RUNNING, QUEUED):
            requeues += 1
            attempt += 1
        assert change.job.attempt == attempt, (
            f"job {job_id}: attempt {change.job.attempt}, expected {attempt}"
        )
        if change.to_state in TERMINAL_STATES:
            terminal += 1
        state = change.to_state
    assert terminal == 1, f"job {job_id}: {terminal} terminal state changes"
    assert event_state(events[-1]) in TERMINAL_STATES, f"job {job_id}: last event not terminal"
    return {"runs": runs, "requeues": requeues, "final": int(state)}


async def all_jobs(stub: Any) -> list[Any]:
    jobs: list[Any] = []
    token = ""
    for _ in range(10_000):
        page = await stub.ListJobs(scan_pb2.ListJobsRequest(page_size=1000, page_token=token))
        jobs.extend(page.jobs)
        token = page.next_page_token
        if not token:
            return jobs
    raise AssertionError("ListJobs never ended")


def hang_env() -> dict[str, str]:
    """The `env` of a launch whose server runs the test prober, hanging on HANG_MARK."""
    return {FAULT_ENV: f"hang:{HANG_MARK}"}


def hung_folder(base: Path) -> Path:
    """A folder whose only video hangs the probe of a server run with hang_env()."""
    folder = base / "hung"
    make_video(folder / f"{HANG_MARK}.mp4", width=64, height=48, seconds=0.2)
    return folder


# -- SQLite ---------------------------------------------------------------------------------


def check_database_copy(db: Path) -> dict[str, Any]:
    """Copy the database with its -wal and -shm files (as a crash left them) and open the copy:
    SQLite recovers the WAL exactly as the next server start would, without touching the
    original. Returns the integrity check, the jobs by state and the video count."""
    with tempfile.TemporaryDirectory(prefix="mediascan-dbcheck-") as scratch:
        copy = Path(scratch) / db.name
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{db}{suffix}")
            if source.exists():
                shutil.copyfile(source, f"{copy}{suffix}")
        conn = sqlite3.connect(copy)
        try:
            integrity = [row[0] for row in conn.execute("PRAGMA integrity_check")]
            tables = {
                row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            states: dict[int, int] = {}
            videos = 0
            if "jobs" in tables:
                for state, count in conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state"):
                    states[int(state)] = int(count)
                for (blob,) in conn.execute("SELECT job FROM jobs"):
                    scan_pb2.Job.FromString(blob)  # every row parses
            if "videos" in tables:
                videos = int(conn.execute("SELECT COUNT(*) FROM videos").fetchone()[0])
        finally:
            conn.close()
    return {"integrity": integrity, "states": states, "videos": videos, "tables": tables}


# -- figures --------------------------------------------------------------------------------


def record_figures(test: str, **values: Any) -> None:
    """Print the measured figures of a test (shown with -s or on failure) and, when
    MEDIASCAN_FIGURES names a file, append them to it as a JSON line (for
    docs/reliability.md)."""
    line = json.dumps({"test": test, **values}, sort_keys=True, default=str)
    print(f"FIGURES {line}")
    target = os.environ.get("MEDIASCAN_FIGURES")
    if target:
        with open(target, "a") as out:
            out.write(line + "\n")


def percentile(values: Iterable[float], fraction: float) -> float:
    """The nearest-rank percentile (fraction in 0..1) of `values`."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]
