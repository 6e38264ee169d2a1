"""A thread for the blocking file-system calls of requests, so the event loop never blocks on
a disk or a hung network mount.

`asyncio.to_thread` would do, at a cost: each call is a thread pool submission, a wake-up of a
pool thread, a chained future and a wake-up of the loop, and under load several pool threads
take turns at the GIL. A lane is one thread fed by a queue: it takes every call waiting when it
wakes and hands their results back to the loop together (after HAND_BACK_AFTER seconds of
calls at most, so that no result waits behind a slow call), so a busy server pays one wake-up
per batch, not per call (the same scheme as the store's writer thread).

A call that has not finished after `timeout` seconds fails with UNAVAILABLE. If the lane's
thread is itself stuck in such a call (a hung mount: when a call times out, the call the thread
runs has run for at least half the timeout), the lane starts a fresh thread for the calls that
follow and leaves the stuck one behind. Once more than `max_stuck` threads hang,
calls fail at once until one of them comes back.

A lane thread that dies (not a call that raises: the thread itself) is logged with its
traceback, its queued calls fail with UNAVAILABLE at once, and the next call starts a fresh
thread: restarting is safe, since a lane holds no state but its queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from .errors import Unavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds a lane thread's batch of calls may run before it hands their results back (the
#: rest of the batch goes on): cheap calls share one wake-up of the loop, and a call that
#: finished is never held back by a later one that hangs.
HAND_BACK_AFTER = 0.002
#: The share of the timeout a lane thread's current call must have run for, when a call times
#: out, for the thread to count as stuck.
STUCK_SHARE = 0.5

_Call = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any]"]
_Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]


class _Worker:
    """One thread and its queue; `started` is when its current call began (None when idle)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, name: str) -> None:
        self.calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self.started: float | None = None
        self.current: asyncio.Future[Any] | None = None  #: the call running now
        self.dead = False  #: the thread died (not a call: the thread itself)
        self.name = name
        self._loop = loop
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self._serve()
        except BaseException as exc:
            # Not an error of a call (those go to their caller): the thread itself is dying.
            # Its calls fail now; the lane starts a fresh thread for the next ones (safe: a
            # lane holds no state but its queue).
            log.critical(
                "%s died; its calls fail, the next ones get a new thread", self.name, exc_info=True
            )
            self.dead = True
            self._fail_queued(exc)

    def _fail_queued(self, exc: BaseException) -> None:
        failed: list[_Outcome] = []
        error = Unavailable(f"the server's {self.name} thread died ({exc!r}); retry")
        if self.current is not None:
            failed.append((self.current, None, error))
        while True:
            try:
                call = self.calls.get_nowait()
            except queue.Empty:
                break
            if call is not None:
                failed.append((call[2], None, error))
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(_resolve_all, failed)

    def _serve(self) -> None:
        while True:
            call = self.calls.get()
            outcomes: list[_Outcome] = []
            handed = time.monotonic()
            while call is not None:
                function, args, future = call
                self.current = future
                self.started = time.monotonic()
                try:
                    outcomes.append((future, function(*args), None))
                except Exception as exc:  # handed to the awaiting caller
                    outcomes.append((future, None, exc))
                self.started = None
                self.current = None
                if time.monotonic() - handed >= HAND_BACK_AFTER:
                    # Not held for the rest of the batch: a later call may hang.
                    self._hand_back(outcomes)
                    outcomes, handed = [], time.monotonic()
                try:
                    call = self.calls.get_nowait()
                except queue.Empty:
                    break
            self._hand_back(outcomes)
            if call is None:
                return

    def _hand_back(self, outcomes: list[_Outcome]) -> None:
        if outcomes:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                self._loop.call_soon_threadsafe(_resolve_all, outcomes)


class BlockingLane:
    """Runs blocking calls in one background thread, a batch per wake-up."""

    def __init__(self, name: str, *, timeout: float, max_stuck: int = 4) -> None:
        self.name = name
        self.timeout = timeout
        self.max_stuck = max_stuck
        self._worker: _Worker | None = None
        self._stuck: list[_Worker] = []
        self._closed = False

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        """`function(*args)` in the lane's thread; UNAVAILABLE after `timeout` seconds."""
        worker = self._current()
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        worker.calls.put((function, args, future))
        try:
            async with asyncio.timeout(self.timeout):
                return await future
        except TimeoutError:
            self._check_stuck(worker)
            raise Unavailable(
                f"the server's file system did not answer within {self.timeout:g} s "
                "(a slow or hung mount?); retry later"
            ) from None

    def close(self) -> None:
        """Let the threads end once their queued calls are done; later calls fail with
        UNAVAILABLE (no thread is started after close)."""
        self._closed = True
        for worker in (self._worker, *self._stuck):
            if worker is not None:
                worker.calls.put(None)
        self._worker = None
        self._stuck = []

    def _current(self) -> _Worker:
        if self._closed:
            raise Unavailable("the server is stopping; retry on another server or later")
        if self._worker is not None and self._worker.dead:
            self._worker = None  # start a fresh thread: a lane holds no state but its queue
        if self._worker is None:
            self._stuck = [w for w in self._stuck if w.thread.is_alive()]
            if len(self._stuck) > self.max_stuck:
                raise Unavailable(
                    f"the server's file system has not answered for more than "
                    f"{self.timeout:g} s ({len(self._stuck)} calls hang); retry later"
                )
            self._worker = _Worker(asyncio.get_running_loop(), f"{self.name}-lane")
        return self._worker

    def _check_stuck(self, worker: _Worker) -> None:
        """A call timed out: the worker is stuck if its current call has run for at least
        half the timeout. Not the whole timeout: the call that timed out started a moment
        after it was queued, so it has run for a little less. Not less than half: a call that
        waited behind slow ones and has only just started is no sign of a hang."""
        started = worker.started
        if worker is not self._worker or started is None:
            return
        hung = time.monotonic() - started
        if hung >= self.timeout * STUCK_SHARE:
            log.warning(
                "%s lane: a call has hung for %.1f s; the next calls get a new thread",
                self.name,
                hung,
            )
            worker.calls.put(None)  # ends once (if ever) the hung call returns
            self._stuck.append(worker)
            self._worker = None


def _resolve_all(outcomes: list[_Outcome]) -> None:
    for future, result, error in outcomes:
        settle(future, result, error)


def settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """On the loop: hand a thread's outcome to its future, unless its caller is gone (the
    future is done: cancelled or timed out)."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
