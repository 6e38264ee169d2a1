"""A pool of prober processes: probes use every core, a hung probe is killed, a crash costs one
file.

Each worker is `python -m mediascan.server.probe`, a child process that reads one JSON-encoded
path per line on stdin and answers one JSON line per path on stdout, in order. The pool feeds a
worker batches of up to `BATCH` paths (one pipe write, answers streamed back) and waits for each
answer at most `timeout` seconds from the moment the worker could start on it. A worker that
misses that deadline is killed and the file reported as timed out; a worker that dies (FFmpeg
crashing on a hostile file) costs only the file it was on. Either way a fresh worker takes over
the rest of the batch. Everything here runs on the event loop with non-blocking pipes: no thread
waits on a child.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence

from .probe import ProbeError, ProbeResult

log = logging.getLogger(__name__)

#: Paths handed to a worker at once (measured best for small files: fewer pipe round trips).
BATCH = 16
#: Environment variable read by the workers, for tests: `hang:TEXT` or `crash:TEXT` makes a
#: worker hang or abort on any path containing TEXT.
FAULT_ENV = "MEDIASCAN_PROBE_FAULT"

_Request = tuple[str, "asyncio.Future[ProbeResult]"]


class ProbePool:
    """Probes files in `size` worker processes, each probe limited to `timeout` seconds."""

    def __init__(self, size: int, timeout: float, *, command: Sequence[str] | None = None) -> None:
        self.size = size
        self.timeout = timeout
        self._command = list(command or [sys.executable, "-m", "mediascan.server.probe"])
        self._requests: collections.deque[_Request] = collections.deque()
        self._wakeup = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        self._processes: set[asyncio.subprocess.Process] = set()
        self.killed = 0  #: workers killed for a hung probe
        self.crashed = 0  #: workers that died on a file

    async def start(self) -> None:
        self._workers = [
            asyncio.create_task(self._serve(), name=f"prober-{i}") for i in range(self.size)
        ]

    async def close(self) -> None:
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        for process in list(self._processes):
            _kill(process)
            with contextlib.suppress(Exception):
                await process.wait()
        while self._requests:
            _, future = self._requests.popleft()
            if not future.done():
                future.cancel()

    async def probe(self, path: str) -> ProbeResult:
        """Probe one file; raises ProbeError when it is not a usable video."""
        future: asyncio.Future[ProbeResult] = asyncio.get_running_loop().create_future()
        self._requests.append((path, future))
        self._wakeup.set()
        return await future

    # -- one worker ------------------------------------------------------------------------

    async def _take(self, carried: list[_Request]) -> list[_Request]:
        """The next batch: what a killed worker left over first, then queued requests."""
        batch = [(p, f) for p, f in carried if not f.done()]
        while not batch and not self._requests:
            self._wakeup.clear()
            await self._wakeup.wait()
        while self._requests and len(batch) < BATCH:
            path, future = self._requests.popleft()
            if not future.done():  # its scan was cancelled meanwhile
                batch.append((path, future))
        if self._requests:
            self._wakeup.set()  # let an idle worker take the rest
        return batch

    async def _serve(self) -> None:
        carried: list[_Request] = []
        while True:
            process = await self._spawn()
            try:
                carried = await self._feed(process, carried)
            finally:
                _kill(process)
                with contextlib.suppress(Exception):
                    await process.wait()
                self._processes.discard(process)

    async def _spawn(self) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            *self._command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._processes.add(process)
        return process

    async def _feed(
        self, process: asyncio.subprocess.Process, carried: list[_Request]
    ) -> list[_Request]:
        """Serve batches with this process until it has to go; returns the requests it left."""
        while True:
            batch = await self._take(carried)
            carried = []
            try:
                left = await self._run_batch(process, batch)
            except asyncio.CancelledError:  # the pool is closing: nobody may wait for ever
                for _, future in batch:
                    future.cancel()
                raise
            if left is not None:
                return left

    async def _run_batch(
        self, process: asyncio.subprocess.Process, batch: list[_Request]
    ) -> list[_Request] | None:
        """Send a batch and collect its answers; returns what is left if the worker must go."""
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(b"".join(json.dumps(p).encode() + b"\n" for p, _ in batch))
        try:
            await process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            return batch  # died while idle: a new worker takes the whole batch
        for index, (path, future) in enumerate(batch):
            try:
                line = await asyncio.wait_for(process.stdout.readline(), self.timeout)
            except TimeoutError:
                self.killed += 1
                log.warning("probe of %s hung for %gs: killing its worker", path, self.timeout)
                _fail(future, "timeout", f"the probe took longer than {self.timeout:g}s")
                return batch[index + 1 :]
            if not line:  # the worker died on this file
                self.crashed += 1
                code = await process.wait()
                log.warning("the prober died (exit %s) on %s", code, path)
                _fail(future, "crashed", f"the prober crashed on this file ({_exit(code)})")
                return batch[index + 1 :]
            _answer(future, line)
        return None


def _answer(future: asyncio.Future[ProbeResult], line: bytes) -> None:
    if future.done():
        return
    try:
        answer = json.loads(line)
        if "ok" in answer:
            future.set_result(ProbeResult(**answer["ok"]))
        else:
            reason, message = answer["error"]
            future.set_exception(ProbeError(reason, message))
    except (ValueError, TypeError, KeyError) as exc:
        future.set_exception(ProbeError("crashed", f"the prober answered garbage: {exc}"))


def _fail(future: asyncio.Future[ProbeResult], reason: str, message: str) -> None:
    if not future.done():
        future.set_exception(ProbeError(reason, message))


def _exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit status {code}"


def _kill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
