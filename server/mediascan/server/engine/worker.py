"""The dispatcher: waits for work, has the store claim the next job (`JobStore.claim_next`),
and runs it in its own task while one of `--workers` slots is free.

The engine keeps no queue of its own: the queue is the store's QUEUED rows, and what the
dispatcher keeps is a wake-up, set after a job is queued here (or by the store, for a shared
backend's `LISTEN`). While jobs it queued are still QUEUED it also claims again every
`--claim-recheck` seconds, in case a wake-up was missed. On a shared store (`shared`) any server
may have queued them: there a free worker claims again after every job it got (more may be
waiting), and every `--claim-recheck` seconds whatever it knows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

from ..errors import MediascanError
from ..events import EventHub
from ..jobs import spec_of
from ..store import ChangedJob, DatabaseLost, JobStore
from ..store.waits import seen
from .recorder import Recorder, start_change
from .runner import JobRunner
from .running import ActiveJobs, Phase, RunningJob, StopReason

log = logging.getLogger(__package__)

#: Seconds before a claim that failed (the database) is tried again.
CLAIM_RETRY = 1.0


class Dispatcher:
    """Claims jobs from the store and runs each in a task named `job-<id>`."""

    def __init__(
        self,
        store: JobStore,
        jobs: ActiveJobs,
        hub: EventHub,
        recorder: Recorder,
        runner: JobRunner,
        *,
        workers: int,
        recheck: float = 5.0,
        shared: bool = False,
    ) -> None:
        self._store = store
        self._jobs = jobs
        self._hub = hub
        self._recorder = recorder
        self._runner = runner
        self._slots = asyncio.Semaphore(workers)
        #: Seconds between two claims that find nothing, without a wake-up: the safety net.
        self._recheck = recheck
        self._shared = shared
        self._work = asyncio.Event()
        self._claiming: asyncio.Future[ChangedJob | None] | None = None
        self.running: dict[asyncio.Task[None], RunningJob] = {}
        self.task: asyncio.Task[None] | None = None
        self._side_tasks: set[asyncio.Task[None]] = set()
        store.add_wakeup_listener(self.wake)

    def start(self) -> None:
        self._work.set()  # recovered jobs may be waiting
        self.task = asyncio.create_task(self._dispatch(), name="job-dispatcher")

    def wake(self) -> None:
        """A job may be QUEUED: claim again."""
        self._work.set()

    async def stop(self) -> None:
        """No new claims. A claim already on its way to the store still happens: its job is
        started like the others (the drain then gives it the grace, or re-queues it)."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        claim, self._claiming = self._claiming, None
        if claim is not None:
            try:
                changed = await self._store.bounded(claim)
            except MediascanError as exc:
                log.error("a claim in flight at shutdown did not answer: %s", exc)
                return
            if changed is not None:
                self._launch(self._take(changed), slot=False)

    async def _dispatch(self) -> None:
        while True:
            await self._slots.acquire()
            try:
                changed = await self._claim()
            except BaseException:
                self._slots.release()
                raise
            self._launch(self._take(changed), slot=True)

    async def _claim(self) -> ChangedJob:
        """The next job the store hands over, waiting for work as long as there is none."""
        while True:
            await self._until_work()
            self._work.clear()
            claim = self._claiming = asyncio.ensure_future(self._store.claim_next(start_change))
            claim.add_done_callback(seen)
            try:
                changed = await asyncio.shield(claim)
            except MediascanError as exc:  # the database failed: nothing was claimed
                self._claiming = None
                log.error("cannot claim the next job (%s); trying again in %gs", exc, CLAIM_RETRY)
                await self._wait_for_work(CLAIM_RETRY)
                if self._shared:
                    self._work.set()  # whatever woke it may still be QUEUED
                continue
            self._claiming = None
            if changed is not None:
                if self._shared:
                    self._work.set()  # other servers may have queued more: claim again
                return changed
            if not self._shared:  # (shared: `_until_work` waits)
                await self._wait_for_work(self._recheck)  # none claimable: until woken, or a while

    async def _until_work(self) -> None:
        """Until a job may be claimable: a wake-up came, or jobs this server queued are still
        QUEUED (checked again every recheck). A server with nothing queued claims nothing,
        and so writes nothing while idle; on a shared store it claims at every recheck (a
        claim that finds nothing writes nothing there either)."""
        if self._shared:
            if not self._work.is_set():
                await self._wait_for_work(self._recheck)
            return
        while not self._work.is_set() and not self._jobs.count(Phase.QUEUED):
            await self._wait_for_work(self._recheck)

    async def _wait_for_work(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._work.wait()

    def _take(self, changed: ChangedJob) -> RunningJob:
        """The active job the store handed over, now RUNNING here, its start published."""
        running = self._jobs.get(changed.job.job_id)
        if running is None:  # a shared store: registered only once it runs here
            job = changed.job
            running = self._jobs.add(RunningJob(job, spec_of(job), self._hub.open(job)))
        if changed.cancel_requested:  # CancelJob asked, somewhere, before it was re-queued
            running.stop_reason = StopReason.USER_CANCEL
        self._jobs.set_phase(running, Phase.RUNNING)
        self._recorder.publish_stored(running, changed)
        return running

    def _launch(self, running: RunningJob, *, slot: bool) -> None:
        task = asyncio.create_task(self._runner.run(running), name=f"job-{running.job_id}")
        running.task = task
        self.running[task] = running
        if slot:
            task.add_done_callback(self._release_slot)
        task.add_done_callback(self._job_done)

    def _release_slot(self, task: asyncio.Task[None]) -> None:
        self._slots.release()

    def _job_done(self, task: asyncio.Task[None]) -> None:
        running = self.running.pop(task, None)
        if task.cancelled():
            if running is not None and not running.began and running.job_id in self._jobs:
                # Cancelled before its first step ran: run() never saw the cancel.
                self._side_task(self._runner.never_started(running))
        elif isinstance(task.exception(), DatabaseLost):  # stopped: nothing can be stored
            log.error("job task %s stopped: the database is lost", task.get_name())
        elif task.exception() is not None:
            log.error("job task %s crashed", task.get_name(), exc_info=task.exception())

    def _side_task(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)
