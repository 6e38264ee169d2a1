"""A pool of prober processes: probes use every core, a hung probe is killed, a crash costs one
file, and a prober that cannot be started again is retried while its files fail clearly.

Each worker is `python -m mediascan.server.probe`, a child process whose stdin is one end of a
Unix socket pair (`SOCK_SEQPACKET`). The pool sends a worker batches of up to `BATCH` files in one
message: their paths (for messages, and for the test prober of `testing_prober.py`) and their
open descriptors (`SCM_RIGHTS`); the worker probes the descriptors, never the paths, and answers
one JSON line per file on stdout, in order. The pool waits for each answer at most `timeout`
seconds from the moment the worker could start on it. A worker that misses that deadline is
killed and the file reported as timed out; a worker that dies (FFmpeg crashing on a hostile file)
costs only the file it was on. A worker killed from outside (SIGKILL, SIGTERM, SIGINT, SIGHUP:
an operator, the OOM killer) is not the file's fault: the file is tried once more on a fresh
worker, and reported as `prober_killed` only if that one is killed too. Either way a fresh worker
takes over the rest of the batch. A worker that cannot be started (no descriptors left, no
memory) is retried with a growing delay; meanwhile the files it held, and every file when no
worker runs at all, fail as `unavailable`. Everything here runs on
the event loop with non-blocking sockets and pipes: no thread waits on a child.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from .probe import MAX_BATCH, PARENT_ENV, ProbeError
from .probed import ProbeResult, result_from_json

log = logging.getLogger(__name__)

#: Files handed to a worker at once (measured best for small files: fewer round trips).
BATCH = MAX_BATCH
#: The worker process run when a pool is given no `command` (tests give one of
#: `testing_prober.py`).
PROBER_COMMAND = (sys.executable, "-m", "mediascan.server.probe")
#: Delays between attempts to start a worker that could not be started (seconds): the first,
#: doubled at each failure up to the last.
SPAWN_RETRY_FIRST = 0.1
SPAWN_RETRY_MAX = 5.0


def _probe_result(answer: Any) -> ProbeResult:
    return result_from_json(answer)


class _Request(NamedTuple):
    fd: int  #: open by the caller until the future is done
    path: str
    future: asyncio.Future[Any]
    retried: bool = False  #: its prober was killed from outside once already
    op: str = "probe"  #: what the prober does with the file (`probe.py`, `prober_ops.py`)
    parse: Callable[[Any], Any] = _probe_result  #: the answer's value from its JSON
    timeout: float | None = None  #: the pool's own time limit unless set


#: Signals that end a prober from outside (an operator, the OOM killer): not the file's fault,
#: unlike a crash (SIGSEGV, SIGABRT, SIGBUS, ...), which the prober raises itself. The pool's own
#: kill (a hung probe) never reaches this check.
OUTSIDE_SIGNALS = frozenset({signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP})


class _Worker(NamedTuple):
    process: asyncio.subprocess.Process
    requests: socket.socket  #: the pool's end of the worker's stdin


class ProbePool:
    """Probes files in `size` worker processes, each probe limited to `timeout` seconds.

    `batch` files go to a worker at once. With `kill_on_cancel` (long operations: DECODE
    verification, whole-file hashes), a request whose caller gives up while its worker is on
    it kills that worker, so that a cancelled job stops its decode at once. With `on_demand`,
    the workers start with the first request, not with the pool: a server never asked for
    such work runs no process for it."""

    def __init__(
        self,
        size: int,
        timeout: float,
        *,
        command: Sequence[str] | None = None,
        batch: int = BATCH,
        kill_on_cancel: bool = False,
        on_demand: bool = False,
    ) -> None:
        self.size = size
        self.timeout = timeout
        self._batch = batch
        self._kill_on_cancel = kill_on_cancel
        self._wanted = asyncio.Event()  #: set once work is asked for (or at once)
        if not on_demand:
            self._wanted.set()
        self.abandoned = 0  #: workers killed because their request's caller gave up
        self._command = list(command or PROBER_COMMAND)
        self._requests: collections.deque[_Request] = collections.deque()
        self._wakeup = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        self._processes: set[asyncio.subprocess.Process] = set()
        self._failing: set[str] = set()  #: workers that could not be started, by task name
        self._healthy = True
        self.killed = 0  #: workers killed for a hung probe
        self.crashed = 0  #: workers that died on a file
        self.killed_outside = 0  #: workers killed by a signal that is not the pool's
        self.spawn_failures = 0  #: attempts to start a worker that failed
        #: Called with the error of every failed attempt to start a worker (metrics).
        self.spawn_failure_listeners: list[Callable[[OSError], None]] = []
        #: Called with `healthy` whenever it changes (health checks).
        self.health_listeners: list[Callable[[bool], None]] = []

    @property
    def live(self) -> int:
        """Worker processes running now."""
        return len(self._processes)

    @property
    def tasks(self) -> tuple[asyncio.Task[None], ...]:
        """The tasks that run the workers (`prober-N`), one per slot: each starts its worker
        process, feeds it and starts it again; none ends before close()."""
        return tuple(self._workers)

    @property
    def healthy(self) -> bool:
        """False while no worker runs and one could not be started: files cannot be probed."""
        return self._healthy

    async def start(self) -> None:
        self._workers = [
            asyncio.create_task(self._serve(f"prober-{i}"), name=f"prober-{i}")
            for i in range(self.size)
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
            request = self._requests.popleft()
            if not request.future.done():
                request.future.cancel()

    async def probe(self, fd: int, path: str) -> ProbeResult:
        """Probe the open file `fd` (found at `path`), which the caller keeps open until this
        returns or is cancelled; raises ProbeError when it is not a usable video."""
        result: ProbeResult = await self.run(fd, path)
        return result

    async def run(
        self,
        fd: int,
        path: str,
        op: str = "probe",
        parse: Callable[[Any], Any] = _probe_result,
        timeout: float | None = None,
    ) -> Any:
        """Have a worker run `op` on the open file `fd` (kept open by the caller until this
        returns), within `timeout` seconds (the pool's by default); its answer through `parse`.
        ProbeError when the file could not be handled."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._requests.append(_Request(fd, path, future, op=op, parse=parse, timeout=timeout))
        self._wanted.set()
        self._wakeup.set()
        return await future

    # -- one worker ------------------------------------------------------------------------

    async def _take(self, carried: list[_Request]) -> list[_Request]:
        """The next batch: what a killed worker left over first, then queued requests."""
        batch = [r for r in carried if not r.future.done()]
        while not batch and not self._requests:
            self._wakeup.clear()
            await self._wakeup.wait()
        while self._requests and len(batch) < self._batch:
            request = self._requests.popleft()
            if not request.future.done():  # its scan was cancelled meanwhile
                batch.append(request)
        if self._requests:
            self._wakeup.set()  # let an idle worker take the rest
        return batch

    async def _serve(self, name: str) -> None:
        await self._wanted.wait()
        carried: list[_Request] = []
        failures = 0
        while True:
            try:
                worker = await self._spawn()
            except OSError as exc:
                failures += 1
                carried = await self._cannot_spawn(name, exc, carried, failures)
                continue
            if failures:
                log.warning("%s: a prober process started again after %d failures", name, failures)
                failures = 0
            self._failing.discard(name)
            self._update_health()
            try:
                carried = await self._feed(worker, carried)
            finally:
                _kill(worker.process)
                worker.requests.close()  # first: a cancel of the wait below must not leak it
                with contextlib.suppress(Exception):
                    await worker.process.wait()
                self._processes.discard(worker.process)
                self._update_health()

    async def _spawn(self) -> _Worker:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            process = await asyncio.create_subprocess_exec(
                *self._command,
                stdin=theirs.fileno(),
                stdout=asyncio.subprocess.PIPE,
                env={**os.environ, "PYTHONUNBUFFERED": "1", PARENT_ENV: str(os.getpid())},
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        self._processes.add(process)
        return _Worker(process, ours)

    async def _cannot_spawn(
        self, name: str, exc: OSError, carried: list[_Request], failures: int
    ) -> list[_Request]:
        """A worker could not be started: say so, fail the files it held (and every file
        while no worker runs), and wait before the next attempt. Returns nothing to carry."""
        self.spawn_failures += 1
        for listener in self.spawn_failure_listeners:
            listener(exc)
        delay = min(SPAWN_RETRY_MAX, SPAWN_RETRY_FIRST * 2 ** (failures - 1))
        message = f"could not start a prober process: {exc}; retrying"
        log.warning("%s: %s in %gs (attempt %d)", name, message, delay, failures)
        self._failing.add(name)
        self._update_health()
        for request in carried:
            _fail(request.future, "unavailable", message)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + delay
        while (left := deadline - loop.time()) > 0:
            if not self._processes:  # nobody else can take them: they fail now
                while self._requests:
                    _fail(self._requests.popleft().future, "unavailable", message)
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._wakeup.wait()
        if self._requests:
            self._wakeup.set()  # what arrived meanwhile is for the live workers
        return []

    def _update_health(self) -> None:
        healthy = bool(self._processes) or not self._failing
        if healthy == self._healthy:
            return
        self._healthy = healthy
        if healthy:
            log.warning("a prober process runs again: files are probed again")
        else:
            log.error("no prober process runs and none can be started: files fail to probe")
        for listener in self.health_listeners:
            listener(healthy)

    async def _feed(self, worker: _Worker, carried: list[_Request]) -> list[_Request]:
        """Serve batches with this worker until it has to go; returns the requests it left."""
        while True:
            batch = await self._take(carried)
            carried = []
            try:
                left = await self._run_batch(worker, batch)
            except asyncio.CancelledError:  # the pool is closing: nobody may wait for ever
                for request in batch:
                    request.future.cancel()
                raise
            if left is not None:
                return left

    async def _run_batch(self, worker: _Worker, batch: list[_Request]) -> list[_Request] | None:
        """Send a batch and collect its answers; returns what is left if the worker must go."""
        try:
            batch = await _send(worker.requests, batch)
        except (BrokenPipeError, ConnectionResetError):
            return batch  # died while idle: a new worker takes the whole batch
        except OSError as exc:  # e.g. the system's limit of descriptors in flight
            for request in batch:
                _fail(request.future, "unavailable", f"could not hand the file to a prober: {exc}")
            return None
        stdout = worker.process.stdout
        assert stdout is not None
        for index, request in enumerate(batch):
            limit = request.timeout or self.timeout
            try:
                async with asyncio.timeout(limit):
                    line = await self._read(stdout, request)
            except TimeoutError:
                self.killed += 1
                log.warning(
                    "%s of %s hung for %gs: killing its worker", request.op, request.path, limit
                )
                _fail(request.future, "timeout", f"the {request.op} took longer than {limit:g}s")
                return batch[index + 1 :]
            if line is None:  # the caller gave up: the worker goes with its work
                self.abandoned += 1
                return batch[index + 1 :]
            if not line:  # the worker died on this file
                code = await worker.process.wait()
                return self._died(request, code, batch[index + 1 :])
            _answer(request, line)
        return None

    async def _read(self, stdout: asyncio.StreamReader, request: _Request) -> bytes | None:
        """The worker's answer about `request`; None if, with `kill_on_cancel`, the request's
        caller gave up first."""
        if not self._kill_on_cancel:
            return await stdout.readline()
        read = asyncio.ensure_future(stdout.readline())
        try:
            await asyncio.wait((read, request.future), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not read.done():
                read.cancel()
        return read.result() if read.done() and not read.cancelled() else None

    def _died(self, request: _Request, code: int, rest: list[_Request]) -> list[_Request]:
        """The worker died on `request`: a crash costs the file; a kill from outside is not the
        file's fault, which is tried once more on a fresh worker before it is reported as
        killed. Returns what the next worker takes."""
        if -code not in OUTSIDE_SIGNALS:
            self.crashed += 1
            log.warning("the prober died (exit %s) on %s", code, request.path)
            _fail(request.future, "crashed", f"the prober crashed on this file ({_exit(code)})")
            return rest
        self.killed_outside += 1
        if not request.retried:
            log.warning(
                "the prober was %s from outside the server while probing %s: trying the file "
                "again on a fresh prober",
                _exit(code),
                request.path,
            )
            return [request._replace(retried=True), *rest]
        log.warning("the prober was %s again on %s: reporting it", _exit(code), request.path)
        _fail(
            request.future,
            "prober_killed",
            f"the prober was {_exit(code)} from outside the server while probing this file, "
            "twice (an operator or the OOM killer?): not a fault of the file; scan again",
        )
        return rest


async def _send(requests: socket.socket, batch: list[_Request]) -> list[_Request]:
    """Send the paths and descriptors of `batch` in one message; returns what was sent. Only
    requests still awaited are sent: a cancelled caller may have closed its descriptor."""
    loop = asyncio.get_running_loop()
    while True:
        batch = [r for r in batch if not r.future.done()]
        if not batch:
            return batch
        items = [r.path if r.op == "probe" else [r.path, r.op] for r in batch]
        message = json.dumps(items).encode()
        try:
            socket.send_fds(requests, [message], [r.fd for r in batch])
            return batch
        except BlockingIOError:
            await _writable(loop, requests)


async def _writable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_writer(sock, wake)
    try:
        await ready
    finally:
        loop.remove_writer(sock)


def _answer(request: _Request, line: bytes) -> None:
    future = request.future
    if future.done():
        return
    try:
        answer = json.loads(line)
        if "ok" in answer:
            future.set_result(request.parse(answer["ok"]))
        else:
            reason, message = answer["error"]
            future.set_exception(ProbeError(reason, message))
    except (ValueError, TypeError, KeyError) as exc:
        future.set_exception(ProbeError("crashed", f"the prober answered garbage: {exc}"))


def _fail(future: asyncio.Future[Any], reason: str, message: str) -> None:
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
