"""The bounded steps of a shutdown: each step that waits on something outside the loop's control
(the database, gRPC, the prober processes, threads) gets a time limit; an overrun is logged and
left behind (`ShutdownSteps`), and a watchdog ends the process whatever it is stuck on
(`start_watchdog`, `exit_now`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

from mediascan.v1 import scan_pb2

from .store import StorageError
from .store.factory import ServerStore

log = logging.getLogger(__name__)


class ShutdownSteps:
    """The time budget of a shutdown: each step runs for at most its own limit and never past
    the overall deadline minus what later steps are guaranteed (`reserve`). A step that overruns
    is logged, recorded and left running; the shutdown goes on without it."""

    def __init__(self, budget: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._started = self._loop.time()
        self._deadline = self._started + budget
        self.overran: list[str] = []

    def left(self, reserve: float) -> float:
        """Seconds until the deadline, minus `reserve`."""
        return max(0.0, self._deadline - reserve - self._loop.time())

    def elapsed(self) -> float:
        return self._loop.time() - self._started

    async def run(
        self, step: str, work: Awaitable[Any], limit: float, *, reserve: float = 0.0
    ) -> bool:
        """Wait up to `limit` seconds for `work`; True if it finished without an error."""
        task = asyncio.ensure_future(work)
        timeout = min(limit, self.left(reserve))
        await asyncio.wait({task}, timeout=timeout)
        if not task.done():
            self.overran.append(step)
            log.warning("shutdown: %s did not finish within %.2fs; going on", step, timeout)
            return False
        error = None if task.cancelled() else task.exception()
        if error is not None:
            log.warning("shutdown: %s failed: %s", step, error)
            return False
        return True


async def close_storage(
    store: ServerStore | None,
    steps: ShutdownSteps,
    drain: asyncio.Task[None] | None,
    *,
    store_timeout: float,
    reserve: float,
) -> bool:
    """Close the database once the drain is done (or out of time). True if every change
    reached it: the drain finished, no job is left RUNNING in the database (a re-queue or a
    final state whose commit failed) and the writer committed everything queued. `reserve`:
    seconds kept for the steps after it."""
    if store is None:
        return drain is None or drain.done()
    complete = drain is None or (drain.done() and not drain.cancelled())
    if complete:
        try:
            async with asyncio.timeout(min(store_timeout / 2, steps.left(reserve))):
                stored = await store.list_jobs(
                    state=scan_pb2.JOB_STATE_RUNNING, limit=100, after=None
                )
            # Only this server's: on a shared database, other servers' jobs run on.
            left = [job for job in stored if job.node in ("", store.node)]
        except (TimeoutError, StorageError) as exc:
            log.error("shutdown: cannot check the jobs stored RUNNING: %s", exc or "timeout")
            complete = False
        else:
            if left:
                log.error(
                    "shutdown: %d job(s) still RUNNING in the database (their re-queue or end "
                    "was not stored): %s; they run again at the next start",
                    len(left),
                    ", ".join(job.job_id for job in left),
                )
                complete = False
    elif drain is not None:
        log.error(
            "shutdown: the interrupted jobs were not all re-queued in time; those still "
            "RUNNING in the database run again at the next start"
        )
    closed = await steps.run(
        "closing the database (committing queued writes)",
        store.close(),
        store_timeout,
        reserve=reserve,
    )
    if not closed:
        log.error(
            "shutdown: the database writer did not finish: the last queued writes may be "
            "lost; the next start recovers every job from what was committed"
        )
    return complete and closed


def start_watchdog(exit_code: Callable[[], int], seconds: float) -> None:
    """End the process `seconds` from now if it is still there, whatever it is stuck on (the
    event loop blocked, a thread that never returns at the interpreter's exit), with the code
    `exit_code()` gives then."""

    def expire() -> None:
        exit_now(exit_code(), f"still running {seconds:.1f}s after the shutdown began")

    timer = threading.Timer(seconds, expire)
    timer.name = "shutdown-watchdog"
    timer.daemon = True  # never what keeps the process alive
    timer.start()


def exit_now(code: int, why: str) -> NoReturn:
    """Log why, flush the log, and end the process at once with `code`."""

    def say() -> None:
        log.warning("%s: exiting now with code %d", why, code)
        for handler in logging.getLogger().handlers:
            with contextlib.suppress(Exception):
                handler.flush()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()

    # In a thread of its own: a log handler stuck on a full pipe must not keep us alive.
    writer = threading.Thread(target=say, name="last-words", daemon=True)
    writer.start()
    writer.join(0.5)
    os._exit(code)
