"""Admission of a SubmitScan: refused while draining; deduplicated against an active job with
the same key (joining an identical submit that is still committing); a retried request_id gets
its earlier job (AIP-155); bounded by `--max-queued`, with a RetryInfo delay; then inserted."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Callable

from mediascan.v1 import scan_pb2

from ..errors import InvalidArgument, ResourceExhausted, Unavailable
from ..jobs import ScanSpec
from ..store import DatabaseTimeout, InsertOutcome, JobStore, QueueFull, RequestIdReused
from ..store.waits import seen
from .recorder import copy_job, first_event
from .running import ActiveJobs, Phase, RunningJob

#: Called on the loop once a new job is committed: (job, spec, its event 1).
Admit = Callable[[scan_pb2.Job, ScanSpec, scan_pb2.JobEvent], None]


@dataclasses.dataclass(frozen=True, kw_only=True)
class SubmitOutcome:
    job: scan_pb2.Job
    #: True when an active job with the same path and options was returned instead.
    deduplicated: bool = False


class Admission:
    """Decides what a submit gets, and inserts the new jobs.

    The bound counts the jobs QUEUED on this server (`ActiveJobs`, by phase) plus the submits
    still committing; a shared backend also counts the QUEUED jobs of every server in the
    insert's transaction (QueueFull), and finds the identical active jobs other servers queued
    (`InsertOutcome.deduplicated`)."""

    def __init__(
        self,
        store: JobStore,
        jobs: ActiveJobs,
        *,
        max_queued: int,
        admit: Admit,
        retry_delay: Callable[[], float],
    ) -> None:
        self._store = store
        self._jobs = jobs
        self._max_queued = max_queued
        self._admit = admit
        self._retry_delay = retry_delay
        #: Submits whose insert is being committed, by dedup key: an identical submit waits.
        self._submitting: dict[str, asyncio.Future[SubmitOutcome]] = {}
        self._pending = 0

    async def submit(self, spec: ScanSpec) -> SubmitOutcome:
        if self._jobs.draining:
            raise Unavailable("the server is shutting down and accepts no new scans; retry later")
        key = spec.dedup_key
        same = self._jobs.by_key(key)
        joined = self._submitting.get(key)
        if same is not None or joined is not None:
            return await self._join(spec, same, joined)
        library = spec.trigger in (scan_pb2.TRIGGER_WATCH, scan_pb2.TRIGGER_SCHEDULE)
        if not library and self._jobs.count_submitted(Phase.QUEUED) + self._pending >= (
            self._max_queued
        ):
            # A retry of an earlier submit returns that job (AIP-155), even when the queue is
            # full. Otherwise the insert looks the request_id up itself, in its transaction.
            retried = await self._earlier_request(spec) if spec.request_id else None
            if retried is not None:
                return retried
            raise self._queue_full()
        inserted = self._insert(spec)
        self._submitting[key] = inserted
        inserted.add_done_callback(functools.partial(self._submitted, key))
        # Shielded: a client that gives up mid-insert does not stop it; the store's callback
        # registers and queues the job whether anyone still waits or not.
        return await self._await_insert(inserted)

    async def _join(
        self,
        spec: ScanSpec,
        same: RunningJob | None,
        joined: asyncio.Future[SubmitOutcome] | None,
    ) -> SubmitOutcome:
        """The active job with the same key, or the one an identical submit is committing."""
        if spec.request_id:
            retried = await self._earlier_request(spec)
            if retried is not None:
                return retried
        if same is not None:
            job = same.job
        else:
            assert joined is not None
            job = (await self._await_insert(joined)).job
        if spec.request_id:
            await self._store.remember_request(spec.request_id, spec.fingerprint, job.job_id)
        return SubmitOutcome(job=job, deduplicated=True)

    async def _await_insert(self, inserted: asyncio.Future[SubmitOutcome]) -> SubmitOutcome:
        """The insert's outcome, waited for at most the store's time limit: past it the insert
        may still commit, and the caller is told so."""
        try:
            return await self._store.bounded(inserted)
        except DatabaseTimeout as exc:
            raise Unavailable(
                f"{exc}: this submit may or may not have created its job; retry with the same "
                "request_id to get the job it created, if any (without a request_id a retry may "
                "create a second job)",
                reason="SUBMIT_OUTCOME_UNKNOWN",
            ) from None

    async def _earlier_request(self, spec: ScanSpec) -> SubmitOutcome | None:
        """The job an earlier submit with this request_id made (AIP-155), or None."""
        found = await self._store.find_request(spec.request_id)
        if found is None:
            return None
        job, fingerprint = found
        if fingerprint != spec.fingerprint:
            raise request_id_reused(job.job_id)
        return self._retried(job)

    def _submitted(self, key: str, inserted: asyncio.Future[SubmitOutcome]) -> None:
        del self._submitting[key]
        seen(inserted)  # the submit that made it raised its exception already

    def _insert(self, spec: ScanSpec) -> asyncio.Future[SubmitOutcome]:
        """Commit a new job and queue it. No task runs this: the store's future calls back.

        The returned future resolves once the job is committed and queued, or the insert
        failed; cancelling it undoes neither."""
        job = spec.new_job()
        event = first_event(job)
        outcome: asyncio.Future[SubmitOutcome] = asyncio.get_running_loop().create_future()

        def stored(future: asyncio.Future[InsertOutcome]) -> None:
            self._pending -= 1
            try:
                result = self._inserted(future, job, spec, event)
            except Exception as exc:
                outcome.set_exception(exc)
            else:
                outcome.set_result(result)

        self._store.insert_job(job, spec).add_done_callback(stored)
        self._pending += 1
        return outcome

    def _inserted(
        self,
        future: asyncio.Future[InsertOutcome],
        job: scan_pb2.Job,
        spec: ScanSpec,
        event: scan_pb2.JobEvent,
    ) -> SubmitOutcome:
        """Queue a committed job. The one `job` message is shared by the registry, the channel
        and the answer: job messages there are replaced, never changed in place."""
        try:
            result = future.result()
        except RequestIdReused as exc:
            raise request_id_reused(exc.job_id) from None
        except QueueFull:  # counted in a shared database: the jobs of every server
            raise self._queue_full() from None
        if not result.created:
            outcome = self._retried(result.job)
            return dataclasses.replace(outcome, deduplicated=result.deduplicated)
        if not self._jobs.draining:  # else: shut down meanwhile; it runs at the next start
            self._admit(job, spec, event)
        return SubmitOutcome(job=job)

    def _queue_full(self) -> ResourceExhausted:
        return ResourceExhausted(
            f"the queue is full ({self._max_queued} queued scans): retry after the "
            "delay in the RetryInfo detail",
            retry_after=self._retry_delay(),
        )

    def _retried(self, job: scan_pb2.Job) -> SubmitOutcome:
        running = self._jobs.get(job.job_id)
        return SubmitOutcome(job=copy_job(running.job if running else job))


def request_id_reused(job_id: str) -> InvalidArgument:
    return InvalidArgument(
        "request_id",
        f"already used by job {job_id} for a different request; use a new request_id for a "
        "new scan",
    )
