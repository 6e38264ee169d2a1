"""The invariants the engine's speed relies on, checked on a real SQLite store: claims in
priority-then-FIFO order, a job cancelled while queued is never claimed, an event is stored
before it is published, a published event (or job) is never changed afterwards; and the SQLite
store is both storage protocols."""

from __future__ import annotations

import asyncio
import inspect
import logging
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from _library_helpers import HANG_MARK, LONG_PROBE_TIMEOUT, set_fault, tiny_video

from mediascan.server.engine.recorder import (
    Recorder,
    copy_job,
    first_event,
    sequence_events,
    start_change,
)
from mediascan.server.engine.running import RunningJob
from mediascan.server.errors import Code, status_of
from mediascan.server.events import JobChannel
from mediascan.server.jobs import JobState, ScanSpec
from mediascan.server.status import grpc_code
from mediascan.server.store import JobStore, LibraryStore, SqliteStore
from mediascan.server.store.sqlite.jobs import NEXT_QUEUED
from mediascan.server.testing import final_job, make_many
from mediascan.v1 import scan_pb2

QUEUED = scan_pb2.JOB_STATE_QUEUED
RUNNING = scan_pb2.JOB_STATE_RUNNING
CANCELLED = scan_pb2.JOB_STATE_CANCELLED


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "jobs.db")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def spec(path: str, priority: int = 0) -> ScanSpec:
    return ScanSpec(
        path=path,
        recursive=True,
        follow_symlinks=False,
        timeout=60.0,
        priority=priority,
        full=False,
    )


async def insert(store: SqliteStore, scan: ScanSpec) -> tuple[scan_pb2.Job, scan_pb2.JobEvent]:
    job = scan.new_job()
    event = first_event(job)
    outcome = await store.insert_job(job, scan)
    assert outcome.created
    return job, event


async def test_claims_take_the_highest_priority_then_the_oldest(store: SqliteStore) -> None:
    priorities = [0, 5, 0, 5, -1, 5]
    ids = [(await insert(store, spec(f"/v/{n}", p)))[0].job_id for n, p in enumerate(priorities)]
    claimed = []
    while (changed := await store.claim_next(start_change)) is not None:
        claimed.append(changed)
    assert [c.job.job_id for c in claimed] == [ids[i] for i in (1, 3, 5, 0, 2, 4)]
    for changed in claimed:
        assert changed.previous_state == QUEUED
        assert changed.job.state == RUNNING and changed.job.HasField("start_time")
        assert [e.sequence for e in changed.events] == [2] == [changed.job.last_sequence]
        assert changed.events[0].state_change.to_state == RUNNING
        assert await store.get_job(changed.job.job_id) == changed.job
        assert await store.events_after(changed.job.job_id, 1, 10) == changed.events


async def test_a_claim_reads_one_entry_of_the_queued_index(store: SqliteStore) -> None:
    """The claim's query walks `jobs_queued` in its order and stops at the first entry: no
    scan of the queued jobs, no sort (which cost 7 ms a claim with 20,000 jobs queued)."""
    with sqlite3.connect(store.path) as conn:
        plan = " ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + NEXT_QUEUED))
    assert "jobs_queued" in plan and "TEMP B-TREE" not in plan, plan


async def test_a_job_cancelled_while_queued_is_never_claimed(store: SqliteStore) -> None:
    waiting, _ = await insert(store, spec("/a"))
    urgent, _ = await insert(store, spec("/b", priority=9))
    cancelled = copy_job(urgent)
    cancelled.state = CANCELLED
    events = sequence_events(cancelled, QUEUED)
    assert await store.record(cancelled, events, expected_state=QUEUED)
    changed = await store.claim_next(start_change)
    assert changed is not None and changed.job.job_id == waiting.job_id
    assert await store.claim_next(start_change) is None
    assert (await store.get_job(urgent.job_id)) == cancelled
    # And the other way round: a claimed job is no longer QUEUED, so a guarded cancel loses.
    late = copy_job(waiting)
    late.state = CANCELLED
    assert not await store.record(late, sequence_events(late, QUEUED), expected_state=QUEUED)


class CheckingChannel(JobChannel):
    """A real channel that checks, at each publish, that the events are in the database, and
    keeps each published event and job with the bytes they had then."""

    def __init__(self, job: scan_pb2.Job, db: Path) -> None:
        super().__init__(job, ring_size=64)
        self._db = db
        self.unstored: list[int] = []
        self.published: list[tuple[Any, bytes]] = []

    def publish(self, job: scan_pb2.Job, events: Any) -> None:
        with sqlite3.connect(self._db) as conn:
            stored = {
                row[0]
                for row in conn.execute(
                    "SELECT sequence FROM job_events WHERE job_id = ?", (job.job_id,)
                )
            }
        self.unstored += [e.sequence for e in events if e.sequence not in stored]
        self.published += [(e, e.SerializeToString()) for e in events]
        self.published.append((job, job.SerializeToString()))
        super().publish(job, events)


async def test_events_are_stored_before_published_and_never_changed_after(
    store: SqliteStore,
) -> None:
    scan = spec("/v")
    job, first = await insert(store, scan)
    channel = CheckingChannel(job, store.path)
    running = RunningJob(job, scan, channel)
    recorder = Recorder(store)
    recorder.publish_first(running, first)
    claimed = await store.claim_next(start_change)
    assert claimed is not None
    recorder.publish_stored(running, claimed)
    for n in range(3):
        error = scan_pb2.FileError(path=f"/v/{n}.mp4")
        progress = scan_pb2.Progress(files_done=n + 1)

        def mutate(job: scan_pb2.Job, progress: scan_pb2.Progress = progress) -> None:
            job.progress.CopyFrom(progress)

        await recorder.commit(running, [error, progress], mutate=mutate, file_errors=[(n, error)])
    await recorder.transition(running, JobState.SUCCEEDED)

    assert channel.unstored == [1]  # event 1 only: published, never stored (by design)
    sequences = [m.sequence for m, _ in channel.published if isinstance(m, scan_pb2.JobEvent)]
    assert sequences == list(range(1, running.job.last_sequence + 1))  # gapless, in order
    for message, wire in channel.published:
        assert message.SerializeToString() == wire, message
    assert channel.job is not running.job  # the channel's copy, not the engine's


def test_the_sqlite_store_is_both_protocols(tmp_path: Path) -> None:
    """mypy checks the typed assignment in `store/sqlite/store.py`; this checks the methods at
    run time, with the protocols' parameter names."""
    store = SqliteStore(tmp_path / "x.db")
    assert isinstance(store, JobStore)
    assert isinstance(store, LibraryStore)
    for protocol in (JobStore, LibraryStore):
        members = [n for n, v in vars(protocol).items() if callable(v) and not n.startswith("_")]
        assert members
        for name in members:
            wanted = list(inspect.signature(getattr(protocol, name)).parameters)
            assert list(inspect.signature(getattr(store, name).__func__).parameters) == wanted


async def test_cancels_racing_claims_never_run_a_cancelled_job(
    make_server: Any, connect: Any, tmp_path: Path
) -> None:
    """Jobs are cancelled while two workers claim them: each job ends once (CANCELLED, or
    done before the cancel came), and one cancelled while QUEUED never reaches RUNNING (checked
    in the database)."""
    folder = tmp_path / "videos"
    make_many(folder, 2)
    server = await make_server(workers=2)
    stub = await connect(server.address)
    submitted = [
        await stub.SubmitScan(scan_pb2.SubmitScanRequest(path=str(folder), priority=p))
        for p in range(-20, 20)
    ]
    answers = await asyncio.gather(
        *(stub.CancelJob(scan_pb2.CancelJobRequest(job_id=s.job_id)) for s in submitted[::2]),
        return_exceptions=True,
    )
    for answer in answers:
        assert not isinstance(answer, grpc.aio.AioRpcError), answer
    for job in submitted:  # each to its end
        await final_job(stub, job.job_id, timeout=60)
    with sqlite3.connect(server.config.db) as conn:
        rows = conn.execute("SELECT job_id, event FROM job_events ORDER BY job_id, sequence")
        states: dict[str, list[int]] = {}
        for job_id, blob in rows:
            event = scan_pb2.JobEvent.FromString(blob)
            if event.HasField("state_change"):
                states.setdefault(job_id, []).append(event.state_change.to_state)
    never_started = 0
    for answer in answers:
        assert isinstance(answer, scan_pb2.Job), answer
        changes = states[answer.job_id]
        assert changes.count(answer.state) == 1, changes  # one end, whichever won
        if answer.state == CANCELLED and not answer.HasField("start_time"):
            never_started += 1
            assert RUNNING not in changes, changes
    for changes in states.values():
        assert changes[-1] not in (QUEUED, RUNNING), changes
    assert never_started, "no cancel reached a queued job: submit more jobs"


def test_domain_codes_are_grpcs_numbers_and_both_are_accepted() -> None:
    """`Code` has gRPC's numbers and names (status.py maps one to the other), and `status_of`
    takes either, so that callers still passing `grpc.StatusCode` (the scanner's file errors)
    store the same status."""
    assert {c.name for c in Code} == {c.name for c in grpc.StatusCode}
    for code in Code:
        assert grpc_code(code).name == code.name
        assert grpc_code(code).value[0] == code
        legacy = getattr(grpc.StatusCode, code.name)
        assert status_of(legacy, "m") == status_of(code, "m") == status_of(int(code), "m")


async def test_a_cancel_right_after_the_submit_always_cancels(
    make_server: Any,
    connect: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A scan that cannot end on its own (one file hangs its prober), cancelled as soon as it
    is submitted, many times: the cancel lands while the job is queued, being claimed, starting,
    or reading and writing the library, and every job ends CANCELLED, its end stored once and
    nothing logged as an error. (A cancel that arrived as a database read completed was lost by
    Python 3.11's `wait_for`, and the scan ran on to SUCCEEDED; a cancel during the stored end
    stored it twice.)"""
    set_fault(monkeypatch, "hang", HANG_MARK)
    folder = tmp_path / "videos"
    make_many(folder, 30)
    tiny_video(folder / f"{HANG_MARK}.mp4")
    server = await make_server(workers=2, probe_timeout=LONG_PROBE_TIMEOUT)
    stub = await connect(server.address)
    ended: dict[str, int] = {}
    for _ in range(300):
        job = await stub.SubmitScan(scan_pb2.SubmitScanRequest(path=str(folder), full=True))
        answer = await stub.CancelJob(scan_pb2.CancelJobRequest(job_id=job.job_id), timeout=60)
        ended[job.job_id] = answer.state
    assert set(ended.values()) == {CANCELLED}, ended
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors
