"""Supervision of the server's background tasks and threads: none may die in silence.

A watched task or thread that ends while the server runs (it raised, was cancelled, or simply
returned) is a death: it is logged at CRITICAL with its traceback, health goes NOT_SERVING with
the problem `<name> died`, and `fatal` is called, which stops the server with a non-zero exit
code (systemd or Kubernetes restarts it; recovery re-queues the jobs it held). Once the server is
stopping (`stop()`), tasks and threads end without a word.

Parts that can safely start again do so themselves and are not watched here (the path lane
starts a fresh thread; see `lane.py`).

Threads report through `thread_died(name, error)` (safe from any thread) or run under
`supervised(name, target)`; tasks through `watch_task(task)`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger(__name__)

#: `Supervisor.supervised`'s shape: wraps a thread's target so that its end is reported. Parts
#: that start threads (the metrics endpoint, the SQLite writer) take one, not the supervisor.
Supervise = Callable[[str, Callable[[], object]], Callable[[], None]]


class Health(Protocol):
    def set_problem(self, name: str, present: bool) -> None: ...


class Supervisor:
    """Watches named tasks and threads; a death is logged, makes health NOT_SERVING and calls
    `fatal(why)` (once), on the loop the supervisor was made on."""

    def __init__(self, health: Health, fatal: Callable[[str], None]) -> None:
        self._health = health
        self._fatal = fatal
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self.tasks: dict[str, asyncio.Task[Any]] = {}
        self.deaths: list[str] = []  #: names of the parts that died, in order

    @property
    def stopping(self) -> bool:
        return self._stopping

    def stop(self) -> None:
        """The server is stopping: what ends from now on is expected."""
        self._stopping = True

    def watch_task(self, task: asyncio.Task[Any], *, may_end: bool = False) -> asyncio.Task[Any]:
        """Watch `task` (named: `task.get_name()`) until the server stops; returns it. With
        `may_end` (a task of one job, e.g. its progress reporter) only an exception is a death:
        returning or being cancelled is its normal end, and it is forgotten then."""
        if may_end:
            task.add_done_callback(self._short_task_done)
            return task
        self.tasks[task.get_name()] = task
        task.add_done_callback(self._task_done)
        return task

    def thread_died(self, name: str, error: BaseException | None) -> None:
        """A watched thread ended (`error`: what it raised, None if it returned). Safe to call
        from any thread."""
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:  # a thread without a loop
            on_loop = False
        if on_loop:
            self._died(name, error)
            return
        try:
            self._loop.call_soon_threadsafe(self._died, name, error)
        except RuntimeError:  # the loop is closed: the process is on its way out anyway
            log.critical("%s died after the event loop closed", name, exc_info=error)

    def supervised(self, name: str, target: Callable[[], object]) -> Callable[[], None]:
        """`target` wrapped for a thread named `name`: its end, whatever it is, is reported."""

        def run() -> None:
            try:
                target()
            except BaseException as exc:  # reported here, not again by threading's hook
                self.thread_died(name, exc)
                return
            self.thread_died(name, None)

        return run

    def _short_task_done(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._died(task.get_name(), task.exception())

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        error = None if task.cancelled() else task.exception()
        self._died(task.get_name(), error, cancelled=task.cancelled())

    def _died(self, name: str, error: BaseException | None, *, cancelled: bool = False) -> None:
        if self._stopping:
            return
        how = "was cancelled" if cancelled else "raised" if error is not None else "returned"
        log.critical(
            "%s died (%s) while the server runs: stopping with a non-zero exit code",
            name,
            how,
            exc_info=(type(error), error, error.__traceback__) if error is not None else None,
        )
        self.deaths.append(name)
        self._health.set_problem(f"{name} died", True)
        self._fatal(f"{name} died")
