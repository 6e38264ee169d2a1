"""Probe isolation (issue 3, section 4): probes run in prober processes; a probe that hangs is
killed after the probe timeout and costs one file, a prober that crashes costs one file, and
neither stops the scan, the pool or the event loop. Faults are injected for real: the servers run
the test prober (`mediascan.server.testing_prober`, passed in by `set_fault`), which hangs
(sleeps) or aborts on a marked path."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import json
import os
import resource
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from _library_helpers import (
    CRASH_MARK,
    HANG_MARK,
    QUICK_STOP,
    SHORT_PROBE_TIMEOUT,
    SUCCEEDED,
    cancel,
    copies,
    counts,
    errors_by_path,
    get_job,
    library,
    prober_pids,
    progress_of,
    real,
    scan,
    scratch_folder,
    set_fault,
    submit,
    tiny_video,
    wait_for_exit,
)

from mediascan.server.probe import PARENT_ENV, ProbeError, ProbeResult
from mediascan.server.probe_pool import ProbePool
from mediascan.server.testing import Corpus, final_job, wait_for_event, wait_for_running
from mediascan.v1 import scan_pb2

#: Files per test folder: more than one batch of the pool (16), so that batches carry over.
FILES = 40


@pytest.fixture
def no_core_dumps() -> Iterator[None]:
    """An aborting prober must not leave a core file in the working folder."""
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
    yield
    resource.setrlimit(resource.RLIMIT_CORE, (soft, hard))


def folder_with_one_marked(tmp_path: Path, mark: str) -> tuple[Path, Path, list[Path]]:
    """FILES videos in a folder, the one in the middle named with `mark`."""
    folder = tmp_path / "lib"
    seed = tiny_video(tmp_path / "seed.mp4")
    names = [f"v{i:03d}.mp4" for i in range(FILES)]
    names[FILES // 2] = f"v{FILES // 2:03d}-{mark}.mp4"
    made = copies(seed, [folder / name for name in names])
    marked = made[FILES // 2]
    return folder, marked, [p for p in made if p != marked]


async def probe_path(pool: ProbePool, path: Path) -> ProbeResult:
    """Probe a file the way a scan does: opened here, its descriptor handed to the pool."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return await pool.probe(fd, str(path))
    finally:
        os.close(fd)


async def probe_all(pool: ProbePool, files: list[Path]) -> list[ProbeResult | BaseException]:
    return await asyncio.gather(*(probe_path(pool, p) for p in files), return_exceptions=True)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# -- the pool on its own -------------------------------------------------------------------------


async def test_the_pool_probes_in_separate_processes_and_closes_them(corpus: Corpus) -> None:
    pool = ProbePool(2, timeout=30.0)
    await pool.start()
    try:
        files = [*corpus.valid, *corpus.bad] * 4
        results = await probe_all(pool, files)
        workers = set(prober_pids())
    finally:
        await pool.close()
    assert len(workers) == 2, workers  # two processes: both cores
    assert os.getpid() not in workers
    by_path = dict(zip(map(str, files), results, strict=True))
    for spec in corpus.specs:
        result = by_path[str(spec.path)]
        assert isinstance(result, ProbeResult), (spec.path, result)
        assert (result.video_codec, result.width, result.height) == (
            spec.video_codec,
            spec.width,
            spec.height,
        )
    for path in corpus.bad:
        assert isinstance(by_path[str(path)], ProbeError), path
    assert not any(alive(pid) for pid in workers), "close() left prober processes running"


async def start_one_worker(pool: ProbePool, good: Path) -> int:
    """Start a pool of one worker and return the worker's pid once it has answered."""
    await pool.start()
    assert (await probe_path(pool, good)).width == 64
    (pid,) = prober_pids()
    return pid


async def test_a_hung_probe_is_killed_after_the_timeout_and_its_batch_goes_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    set_fault(monkeypatch, "hang", HANG_MARK)
    _, hung, others = folder_with_one_marked(tmp_path, HANG_MARK)
    pool = ProbePool(1, timeout=1.5)
    try:
        worker = await start_one_worker(pool, others[0])
        started = time.monotonic()
        # The hung file first: the rest of its batch waits in the same worker.
        hang_task = asyncio.create_task(probe_path(pool, hung))
        results = await probe_all(pool, others)
        with pytest.raises(ProbeError) as info:
            await asyncio.wait_for(hang_task, 20)
        elapsed = time.monotonic() - started
        assert info.value.reason == "timeout"
        assert "1.5s" in info.value.message, info.value.message
        assert elapsed >= 1.5, elapsed  # killed for its timeout, not before
        assert all(isinstance(r, ProbeResult) for r in results), results
        await wait_for_exit(worker, 10)  # the hung worker was killed
        assert (await probe_path(pool, others[0])).width == 64  # by a fresh worker
        assert worker not in prober_pids()
    finally:
        await pool.close()


async def test_a_crashing_prober_costs_only_its_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_core_dumps: None
) -> None:
    set_fault(monkeypatch, "crash", CRASH_MARK)
    _, crashing, others = folder_with_one_marked(tmp_path, CRASH_MARK)
    pool = ProbePool(1, timeout=30.0)
    try:
        worker = await start_one_worker(pool, others[0])
        results = await probe_all(pool, [*others[:10], crashing, *others[10:]])
        crashed = results[10]
        assert isinstance(crashed, ProbeError), crashed
        assert crashed.reason == "crashed"
        assert "SIGABRT" in crashed.message, crashed.message
        rest = results[:10] + results[11:]
        assert all(isinstance(r, ProbeResult) for r in rest), rest
        await wait_for_exit(worker, 10)
        # Crash again: the pool keeps replacing its worker.
        with pytest.raises(ProbeError):
            await probe_path(pool, crashing)
        assert (await probe_path(pool, others[0])).width == 64
        assert worker not in prober_pids()
    finally:
        await pool.close()


async def test_closing_the_pool_kills_a_hung_prober_and_settles_its_probe(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    set_fault(monkeypatch, "hang", HANG_MARK)
    good = tiny_video(tmp_path / "good.mp4")
    hung = tiny_video(tmp_path / f"{HANG_MARK}.mp4")
    pool = ProbePool(1, timeout=60.0)
    worker = await start_one_worker(pool, good)
    task = asyncio.create_task(probe_path(pool, hung))
    await asyncio.sleep(0)  # let the probe reach the worker's queue
    await asyncio.wait_for(pool.close(), 10)  # does not wait for the hung probe
    assert not alive(worker), "close() left the hung prober running"
    # Whoever awaited the probe is not left waiting forever.
    with pytest.raises((asyncio.CancelledError, ProbeError)):
        await asyncio.wait_for(task, 2)


# -- the pool under a server -------------------------------------------------------------------


async def test_a_hung_probe_costs_one_file_and_the_scan_goes_on(
    make_server: Any, connect: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    set_fault(monkeypatch, "hang", HANG_MARK)
    server = await make_server(probe_timeout=SHORT_PROBE_TIMEOUT, **QUICK_STOP)
    stub = await connect(server.address)
    folder, hung, others = folder_with_one_marked(tmp_path, HANG_MARK)

    started = time.monotonic()
    job_id = (await submit(stub, folder)).job_id
    await wait_for_running(stub, job_id)
    # While a prober hangs, the server answers: probes never block the event loop.
    for _ in range(5):
        running = await asyncio.wait_for(get_job(stub, job_id), 10)
        assert running.state in (scan_pb2.JOB_STATE_RUNNING, SUCCEEDED), running
    job = await final_job(stub, job_id, timeout=30)
    elapsed = time.monotonic() - started

    assert job.state == SUCCEEDED, job.error
    assert counts(job) == dict(
        files_total=FILES, added=FILES - 1, updated=0, unchanged=0, removed=0, failed=1
    )
    code, message = errors_by_path(job)[real(hung)]
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert message
    assert elapsed >= SHORT_PROBE_TIMEOUT, elapsed  # the hung file waited its whole timeout
    assert set(await library(stub, real(folder))) == {real(p) for p in others}


async def test_a_crashing_probe_costs_one_file_and_the_server_goes_on(
    make_server: Any,
    connect: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    no_core_dumps: None,
) -> None:
    set_fault(monkeypatch, "crash", CRASH_MARK)
    server = await make_server(**QUICK_STOP)
    stub = await connect(server.address)
    folder, crashing, others = folder_with_one_marked(tmp_path, CRASH_MARK)

    job = await scan(stub, folder, timeout=30)
    assert job.state == SUCCEEDED, job.error
    assert counts(job) == dict(
        files_total=FILES, added=FILES - 1, updated=0, unchanged=0, removed=0, failed=1
    )
    code, message = errors_by_path(job)[real(crashing)]
    assert code == grpc.StatusCode.DATA_LOSS
    assert message
    assert set(await library(stub, real(folder))) == {real(p) for p in others}

    # The pool replaced the dead prober: the next scan probes normally.
    second = tmp_path / "second"
    copies(others[0], [second / f"w{i}.mp4" for i in range(20)])
    again = await scan(stub, second, timeout=30)
    assert (again.state, again.result.added, again.result.failed) == (SUCCEEDED, 20, 0)


class FolderWatch:
    """inotify on one folder (through libc): tells when the folder itself is opened and when
    its listing is closed, i.e. where a walk of it stands. No polling: events queue up in the
    kernel and are read at once."""

    IN_CLOSE_NOWRITE = 0x10
    IN_OPEN = 0x20
    _HEADER = struct.Struct("iIII")

    def __init__(self, folder: Path) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        mask = self.IN_OPEN | self.IN_CLOSE_NOWRITE
        if libc.inotify_add_watch(self.fd, os.fsencode(folder), mask) < 0:
            os.close(self.fd)
            raise OSError(ctypes.get_errno(), "inotify_add_watch")

    def folder_events(self) -> list[int]:
        """Masks of the events on the folder itself (not on files in it) since the last call."""
        masks: list[int] = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return masks
            offset = 0
            while offset < len(data):
                _, mask, _, length = self._HEADER.unpack_from(data, offset)
                if length == 0:  # no name: the folder itself
                    masks.append(mask)
                offset += self._HEADER.size + length

    def close(self) -> None:
        os.close(self.fd)


async def test_probing_starts_while_the_walk_goes_on(
    make_server: Any, connect: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """One probe at a time. The walk meets first.mp4, then the hanging file, then a folder of
    20,000 more videos; while the hung probe holds the only slot, the walk can run ahead only as
    far as its bounded hand-over lets it, so it cannot finish listing that folder: yet
    first.mp4 is already probed (and the walk is seen still inside the folder)."""
    set_fault(monkeypatch, "hang", HANG_MARK)
    server = await make_server(probe_concurrency=1, probe_timeout=30.0, **QUICK_STOP)
    stub = await connect(server.address)
    with scratch_folder(tmp_path) as scratch:
        root = scratch / "lib"
        first = tiny_video(root / "first.mp4")  # the root's files are walked first
        tiny_video(root / "d1" / f"{HANG_MARK}.mp4")
        many = root / "d1" / "d2"
        many.mkdir()
        for index in range(20_000):
            os.link(first, many / f"v{index:05d}.mp4")

        watch = FolderWatch(many)
        try:
            job_id = (await submit(stub, root)).job_id
            event = await wait_for_event(
                stub, job_id, lambda e: getattr(progress_of(e), "files_done", 0) >= 1, timeout=20
            )
            events = watch.folder_events()
        finally:
            watch.close()
        # first.mp4 is probed while the listing of d2 is open and not yet finished.
        assert any(mask & FolderWatch.IN_OPEN for mask in events), events
        assert not any(mask & FolderWatch.IN_CLOSE_NOWRITE for mask in events), events
        progress = progress_of(event)
        assert not progress.HasField("files_total")
        assert progress.phase == scan_pb2.SCAN_PHASE_DISCOVERING
        assert progress.current_path == real(first)
        job = await cancel(stub, job_id)
        assert job.state == scan_pb2.JOB_STATE_CANCELLED
        assert job.result.added == 1  # what was probed before the cancel is kept
        assert set(await library(stub, real(root))) == {real(first)}


def test_a_prober_whose_server_died_while_it_started_ends_at_once(tmp_path: Path) -> None:
    """The server names itself to its probers (PARENT_ENV). A prober whose parent is no longer
    that server (it died while the prober was starting, before Linux could be asked to kill the
    prober with it) ends at once, before it reads the batch already waiting on its stdin: it
    would otherwise hang on a marked file for ever, a process nobody stops."""
    video = tiny_video(tmp_path / "a.mp4")
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, theirs:
        ours.sendall(json.dumps([str(video)]).encode())
        ours.shutdown(socket.SHUT_WR)
        done = subprocess.run(
            [sys.executable, "-m", "mediascan.server.probe"],
            stdin=theirs.fileno(),
            capture_output=True,
            env={**os.environ, PARENT_ENV: str(os.getppid())},  # not the prober's parent
            timeout=60,
            check=False,
        )
    assert (done.returncode, done.stdout, done.stderr) == (1, b"", b"")
