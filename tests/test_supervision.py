"""Supervision (issue 12 §2): every background task and thread is watched. One that dies is
logged with its traceback, turns health NOT_SERVING and ends the server with a non-zero exit
code, unless it restarts safely (the path lane). A walker that dies fails its job instead of
hanging it. A prober killed from outside does not blame its file: the file is tried once more on
a fresh prober, and reported as killed, not broken.

Each part is killed for real: its task cancelled, its thread made to raise by a collaborator the
test passes in, a prober process sent SIGKILL."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import grpc
import pytest
from _library_helpers import (
    HANG_MARK,
    prober_pids,
    set_fault,
    submit,
    tiny_video,
    wait_for_exit,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mediascan.server.errors import Unavailable
from mediascan.server.health import HealthState
from mediascan.server.jobs import ScanSpec
from mediascan.server.lane import BlockingLane
from mediascan.server.probe import ProbeError
from mediascan.server.probe_pool import ProbePool
from mediascan.server.scanner import Scanner
from mediascan.server.supervisor import Supervisor
from mediascan.server.testing_prober import prober_command
from mediascan.v1 import scan_pb2, scan_pb2_grpc

NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
HERE = Path(__file__).parent


async def health_status(address: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        answer = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        return int(answer.status)


async def until_failed(server: Any) -> None:
    """Until the server's wait() returns (a death or a stop request)."""
    async with asyncio.timeout(30):
        await server.wait()


def died_lines(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.levelno == logging.CRITICAL and r.getMessage().startswith(f"{name} died")
    ]


@pytest.mark.parametrize(
    "task", ["retention-purge", "database-check", "job-dispatcher", "prober-0"]
)
async def test_a_background_task_that_dies_stops_the_server(
    make_server: Any, caplog: pytest.LogCaptureFixture, task: str
) -> None:
    server = await make_server(probe_workers=1, shutdown_grace=0.5)
    assert set(server.supervisor.tasks) >= {
        "retention-purge",
        "database-check",
        "job-dispatcher",
        "prober-0",
    }
    server.supervisor.tasks[task].cancel()
    await until_failed(server)
    assert server.failed
    (line,) = died_lines(caplog, task)
    assert "was cancelled" in line.getMessage()
    assert await health_status(server.address) == NOT_SERVING
    assert f"{task} died" in server.health.problems
    await server.stop()
    assert server.exit_code == 1


async def test_the_metrics_thread_that_ends_stops_the_server(
    make_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = await make_server(metrics_listen="127.0.0.1:0", shutdown_grace=0.5)
    await asyncio.to_thread(server.metrics.close)  # its thread returns while the server runs
    await until_failed(server)
    (line,) = died_lines(caplog, "metrics-http")
    assert "returned" in line.getMessage()
    assert await health_status(server.address) == NOT_SERVING
    await server.stop()
    assert server.exit_code == 1


class _Problems:
    def __init__(self) -> None:
        self.set: dict[str, bool] = {}

    def set_problem(self, name: str, present: bool) -> None:
        self.set[name] = present


async def test_a_thread_that_raises_is_logged_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What the store's writer thread and any other supervised thread get: the traceback, the
    health problem, the fatal path (the health state here is the server's real one)."""
    fatal = asyncio.Event()
    servicer = _Servicer()
    health = HealthState(servicer, ("",))
    await health.start()
    supervisor = Supervisor(health, lambda why: fatal.set())

    def explode() -> None:
        raise RuntimeError("the thread's own failure")

    thread = threading.Thread(target=supervisor.supervised("writer", explode))
    thread.start()
    async with asyncio.timeout(10):
        await fatal.wait()
    await asyncio.to_thread(thread.join, 10)
    (line,) = died_lines(caplog, "writer")
    assert line.exc_info is not None and "the thread's own failure" in str(line.exc_info[1])
    assert "Traceback" in caplog.text and "explode" in caplog.text
    assert health.problems == {"writer died"}
    async with asyncio.timeout(10):
        await servicer.published.wait()  # the publish task runs on the loop
    assert servicer.status[""] == NOT_SERVING
    supervisor.stop()
    supervisor.thread_died("writer", None)  # stopping: nothing more is said
    assert len(died_lines(caplog, "writer")) == 1


class _Servicer:
    """The part of grpc's HealthServicer that HealthState calls."""

    def __init__(self) -> None:
        self.status: dict[str, int] = {}
        self.published = asyncio.Event()  #: set at the first NOT_SERVING

    async def set(self, service: str, status: int) -> None:
        self.status[service] = status
        if status == NOT_SERVING:
            self.published.set()


@pytest.mark.slow
async def test_a_server_whose_task_dies_exits_non_zero(tmp_path: Path) -> None:
    """A real server process: the death is logged with its name and the process exits 1."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIASCAN_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HERE / "_dying_server.py"),
        "retention-purge",
        "--",
        "--listen",
        "127.0.0.1:0",
        "--db",
        str(tmp_path / "mediascan.db"),
        "--shutdown-grace",
        "0.5s",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        async with asyncio.timeout(60):
            _, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = stderr.decode(errors="replace")
    assert process.returncode == 1, text
    assert "retention-purge died (was cancelled)" in text, text
    assert "health: NOT_SERVING (retention-purge died)" in text, text


# -- the walker ---------------------------------------------------------------------------------


class _BrokenIndex:
    """A library index whose copy fails: the walker thread dies on its first step."""

    def copy(self) -> Any:
        raise RuntimeError("the walker's collaborator failed")


class _StoreGivingABrokenIndex:
    async def library_index(self, path: str, *, recursive: bool) -> Any:
        return _BrokenIndex()


class _Reporter:
    def __init__(self) -> None:
        self.progress = scan_pb2.Progress()

    def changed(self) -> None:
        pass

    def file_error(self, path: str, code: grpc.StatusCode, message: str) -> None:
        pass


async def test_a_walker_that_dies_fails_its_scan_instead_of_hanging_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tiny_video(tmp_path / "lib" / "a.mp4")
    pool = ProbePool(1, 30.0)
    executor = concurrent.futures.ThreadPoolExecutor(1)
    try:
        scanner = Scanner(
            _StoreGivingABrokenIndex(),  # type: ignore[arg-type]
            pool,
            executor,
            probe_concurrency=2,
        )
        spec = ScanSpec(
            path=str(tmp_path / "lib"),
            recursive=True,
            follow_symlinks=False,
            timeout=60.0,
            priority=0,
            full=False,
        )
        with pytest.raises(RuntimeError, match="collaborator failed"):
            async with asyncio.timeout(30):  # on the unfixed code: a hang
                await scanner.scan(spec, "j_test", _Reporter())
    finally:
        executor.shutdown(wait=True)
        await pool.close()
    assert "the walker of" in caplog.text and "Traceback" in caplog.text


# -- the path lane ------------------------------------------------------------------------------


class _ThreadKiller(BaseException):
    """Not an Exception: what a call cannot catch kills the lane's thread."""


def _kill_the_thread() -> None:
    raise _ThreadKiller("killed by the test")


async def test_a_lane_thread_that_dies_fails_its_calls_and_is_replaced(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lane = BlockingLane("path", timeout=60.0)
    try:
        with pytest.raises(Unavailable, match="thread died"):
            async with asyncio.timeout(10):  # not the lane's 60 s: at once
                await lane.call(_kill_the_thread)
        assert await lane.call(os.getpid) == os.getpid()  # a fresh thread
    finally:
        lane.close()
    assert "path-lane died" in caplog.text and "Traceback" in caplog.text


# -- a prober killed from outside ---------------------------------------------------------------


async def _new_prober(known: set[int]) -> int:
    async with asyncio.timeout(30):
        while True:
            fresh = set(prober_pids()) - known
            if fresh:
                return fresh.pop()
            await asyncio.sleep(0.05)  # a process list has no event to wait on


@pytest.mark.slow
async def test_a_prober_killed_from_outside_does_not_blame_the_file(tmp_path: Path) -> None:
    """The hung probe's prober is SIGKILLed: the file goes to a fresh prober (which hangs too,
    and is killed too); only then is it reported, as killed from outside, not as broken."""
    hung = tiny_video(tmp_path / f"{HANG_MARK}.mp4")
    pool = ProbePool(1, 120.0, command=prober_command("hang", HANG_MARK))
    await pool.start()
    fd = os.open(hung, os.O_RDONLY)
    try:
        probe = asyncio.create_task(pool.probe(fd, str(hung)))
        first = await _new_prober(set())
        os.kill(first, signal.SIGKILL)
        await wait_for_exit(first, 30)
        second = await _new_prober({first})
        assert not probe.done()  # retried, not reported
        os.kill(second, signal.SIGKILL)
        with pytest.raises(ProbeError) as caught:
            async with asyncio.timeout(30):
                await probe
    finally:
        os.close(fd)
        await pool.close()
    assert caught.value.reason == "prober_killed"
    assert "killed by SIGKILL from outside the server" in caught.value.message
    assert pool.crashed == 0 and pool.killed_outside == 2


# -- shutdown with --metrics-listen ---------------------------------------------------------------


@pytest.mark.slow
async def test_shutdown_with_metrics_is_silent(tmp_path: Path) -> None:
    """SIGTERM with the metrics endpoint on: no warning, exit 0 (the endpoint's thread stops
    within its poll interval, well inside the shutdown's budget for it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIASCAN_")}
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "mediascan-server"),
        "--listen",
        "127.0.0.1:0",
        "--db",
        str(tmp_path / "mediascan.db"),
        "--metrics-listen",
        "127.0.0.1:0",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(30):
            line = await process.stdout.readline()
        assert line.startswith(b"mediascan-server listening on"), line
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            _, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = stderr.decode(errors="replace")
    assert process.returncode == 0, text
    assert " WARNING " not in text and " ERROR " not in text, text
    assert "stopped" in text, text


async def test_a_task_of_one_job_may_end_but_not_raise(caplog: pytest.LogCaptureFixture) -> None:
    """`watch_task(task, may_end=True)` (what the engine's per-job reporters get): an end is
    normal, an exception is a death."""
    deaths: list[str] = []
    died = asyncio.Event()
    supervisor = Supervisor(_Problems(), lambda why: deaths.append(why) or died.set())

    async def finish() -> None:
        return None

    async def fail() -> None:
        raise RuntimeError("the reporter's own failure")

    ended = supervisor.watch_task(asyncio.create_task(finish(), name="progress-j1"), may_end=True)
    cancelled = supervisor.watch_task(
        asyncio.create_task(asyncio.sleep(3600), name="progress-j2"), may_end=True
    )
    cancelled.cancel()
    failed = supervisor.watch_task(asyncio.create_task(fail(), name="progress-j3"), may_end=True)
    await asyncio.gather(ended, cancelled, failed, return_exceptions=True)
    async with asyncio.timeout(10):
        await died.wait()
    assert deaths == ["progress-j3 died"]
    assert "the reporter's own failure" in caplog.text
    assert supervisor.tasks == {}


async def test_a_writer_thread_that_dies_stops_the_server(
    make_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The SQLite writer thread, killed by a write it cannot survive, is a supervised death:
    without it every later write would wait for ever."""
    server = await make_server(shutdown_grace=0.5)
    write = asyncio.ensure_future(
        server.queue.store.database.write(lambda conn: _kill_the_thread())
    )
    await until_failed(server)
    write.cancel()
    (line,) = died_lines(caplog, "sqlite-writer")
    assert "raised" in line.getMessage()
    assert "killed by the test" in caplog.text
    assert await health_status(server.address) == NOT_SERVING
    await server.stop()
    assert server.exit_code == 1


async def test_a_reporter_that_raises_stops_the_server(
    make_server: Any,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A running job's progress reporter that raises (not a storage error, which costs only
    progress events) is a death, not a silent end of the job's progress."""
    set_fault(monkeypatch, "hang", HANG_MARK)
    server = await make_server(shutdown_grace=0.5, probe_workers=2, probe_timeout=120.0)
    recorder = server.queue.recorder
    real_commit = recorder.commit

    async def commit(running: Any, payloads: Any = (), **kwargs: Any) -> None:
        if any(isinstance(p, scan_pb2.Progress) for p in payloads):
            raise RuntimeError("the reporter's own failure")
        await real_commit(running, payloads, **kwargs)

    folder = tmp_path / "videos"
    folder.mkdir()
    for n in range(3):
        tiny_video(folder / f"v{n}.mp4")
    tiny_video(folder / f"{HANG_MARK}.mp4")  # the scan runs on while the reporter reports
    recorder.commit = commit
    async with grpc.aio.insecure_channel(server.address) as channel:
        await submit(scan_pb2_grpc.ScanServiceStub(channel), folder)
    await until_failed(server)
    (line,) = [
        r
        for r in caplog.records
        if r.levelno == logging.CRITICAL and r.getMessage().startswith("progress-j_")
    ]
    assert "raised" in line.getMessage()
    assert "the reporter's own failure" in caplog.text
    assert await health_status(server.address) == NOT_SERVING
    await server.stop()
    assert server.exit_code == 1
