"""`PostgresStore` on a real PostgreSQL (tests/_postgres.py): the protocols, the claim order,
claims that skip each other's locked rows, the guarded record, request ids and dedupe held by
the database across two stores, the migration lock, and the refusal of a newer schema."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from _library_helpers import (
    HANG_MARK,
    LONG_PROBE_TIMEOUT,
    QUICK_STOP,
    set_fault,
    start_hung_blocker,
)
from _postgres import StoreFactory

from mediascan.server.engine.attempts import reclaim_change_for
from mediascan.server.engine.cluster import cancel_queued
from mediascan.server.engine.recorder import new_event, reclaim_change, start_change
from mediascan.server.jobs import JobState, ScanSpec
from mediascan.server.store import (
    DatabaseTimeout,
    JobStore,
    LeaseLost,
    LibraryStore,
    QueueFull,
    RequestIdReused,
    SchemaTooNew,
    SqliteStore,
    StorageError,
)
from mediascan.server.store.postgres import notify
from mediascan.server.store.postgres.schema import SCHEMA_VERSION
from mediascan.server.store.postgres.store import PostgresStore
from mediascan.server.testing import final_job
from mediascan.v1 import scan_pb2

TIMEOUT = 30.0
STOP_WAIT = 60.0
BIN = Path(sys.executable).parent


def spec(
    path: str = "/videos", *, priority: int = 0, request_id: str = "", fp: str = ""
) -> ScanSpec:
    return ScanSpec(
        path=path,
        recursive=True,
        follow_symlinks=False,
        timeout=60.0,
        priority=priority,
        full=False,
        request_id=request_id,
        fingerprint=fp or (f"fp-{request_id}" if request_id else ""),
    )


async def submit(store: PostgresStore, scan: ScanSpec) -> scan_pb2.Job:
    outcome = await store.insert_job(scan.new_job(), scan)
    assert outcome.created
    return outcome.job


async def test_the_store_is_both_protocols_with_the_sqlite_signatures(
    open_store: StoreFactory,
) -> None:
    store = await open_store()
    assert isinstance(store, JobStore)
    assert isinstance(store, LibraryStore)
    for protocol in (JobStore, LibraryStore):
        for name, _ in inspect.getmembers(protocol, inspect.isfunction):
            if name.startswith("_"):
                continue
            assert inspect.signature(getattr(PostgresStore, name)) == inspect.signature(
                getattr(SqliteStore, name)
            ), name


async def test_claims_take_the_highest_priority_first_then_the_oldest(
    open_store: StoreFactory,
) -> None:
    store = await open_store(node="node-a")
    jobs = [
        await submit(store, spec(f"/v/{name}", priority=priority))
        for name, priority in (("a", 0), ("b", 5), ("c", 0), ("d", 5), ("e", -3))
    ]
    by_path = {job.path: job.job_id for job in jobs}
    claimed = []
    while (changed := await store.claim_next(start_change)) is not None:
        assert changed.previous_state == JobState.QUEUED
        assert changed.job.state == JobState.RUNNING
        assert changed.job.node == "node-a"
        assert [e.state_change.to_state for e in changed.events] == [JobState.RUNNING]
        claimed.append(changed.job.job_id)
    assert claimed == [by_path[p] for p in ("/v/b", "/v/d", "/v/a", "/v/c", "/v/e")]
    stored = await store.get_job(by_path["/v/b"])
    assert stored is not None and stored.node == "node-a" and stored.state == JobState.RUNNING


async def test_a_claim_skips_a_row_another_transaction_holds(
    open_store: StoreFactory, pg_url: str
) -> None:
    store = await open_store()
    first = await submit(store, spec("/v/first", priority=9))
    second = await submit(store, spec("/v/second"))
    async with await psycopg.AsyncConnection.connect(pg_url) as other, other.transaction():
        await other.execute("SELECT 1 FROM jobs WHERE job_id = %s FOR UPDATE", (first.job_id,))
        async with asyncio.timeout(TIMEOUT):  # SKIP LOCKED: it does not wait for the lock
            changed = await store.claim_next(start_change)
        assert changed is not None and changed.job.job_id == second.job_id
    changed = await store.claim_next(start_change)
    assert changed is not None and changed.job.job_id == first.job_id


async def test_two_stores_claiming_at_once_never_take_the_same_job(
    open_store: StoreFactory, pg_url: str
) -> None:
    a = await open_store(node="a")
    b = await open_store(node="b")
    ids = {(await submit(a, spec(f"/v/{i}"))).job_id for i in range(30)}

    async def claim_all(store: PostgresStore) -> list[str]:
        taken = []
        while (changed := await store.claim_next(start_change)) is not None:
            taken.append(changed.job.job_id)
        return taken

    async with asyncio.timeout(TIMEOUT):
        results = await asyncio.gather(*(claim_all(s) for s in (a, b, a, b)))
    taken = [job_id for result in results for job_id in result]
    assert sorted(taken) == sorted(ids)  # each job once
    for job_id in ids:
        job = await a.get_job(job_id)
        assert job is not None and job.state == JobState.RUNNING and job.attempt == 1
        assert len(await a.events_after(job_id, 0, 10)) == 1  # one start, not two


async def test_a_guarded_record_is_refused_after_another_change(open_store: StoreFactory) -> None:
    a = await open_store(node="a")
    b = await open_store(node="b")
    await submit(a, spec())
    changed = await a.claim_next(start_change)
    assert changed is not None
    cancelled = scan_pb2.Job()
    cancelled.CopyFrom(changed.job)
    cancelled.state = scan_pb2.JOB_STATE_CANCELLED
    cancelled.last_sequence += 1
    event = scan_pb2.JobEvent(job_id=cancelled.job_id, sequence=cancelled.last_sequence)
    assert await b.record(cancelled, [event], expected_state=JobState.RUNNING)
    done = scan_pb2.Job()
    done.CopyFrom(changed.job)
    done.state = scan_pb2.JOB_STATE_SUCCEEDED
    late = scan_pb2.JobEvent(job_id=done.job_id, sequence=done.last_sequence + 1)
    assert not await a.record(done, [late], expected_state=JobState.RUNNING)
    assert await a.job_state(done.job_id) == (JobState.CANCELLED, cancelled.last_sequence)
    stored = [e.sequence for e in await a.events_after(done.job_id, 0, 10)]
    assert stored == [changed.events[0].sequence, cancelled.last_sequence]  # not the late one


async def test_a_request_id_is_unique_across_two_stores(open_store: StoreFactory) -> None:
    a = await open_store()
    b = await open_store()
    one, two = spec("/v/one", request_id="r-1"), spec("/v/one", request_id="r-1")
    async with asyncio.timeout(TIMEOUT):
        outcomes = await asyncio.gather(
            a.insert_job(one.new_job(), one), b.insert_job(two.new_job(), two)
        )
    assert sorted(o.created for o in outcomes) == [False, True]
    assert outcomes[0].job.job_id == outcomes[1].job.job_id
    other = spec("/v/other", request_id="r-1", fp="another request")
    with pytest.raises(RequestIdReused) as raised:
        await b.insert_job(other.new_job(), other)
    assert raised.value.job_id == outcomes[0].job.job_id
    found = await b.find_request("r-1")
    assert found is not None and found[0].job_id == outcomes[0].job.job_id


async def test_identical_active_scans_are_one_job_across_two_stores(
    open_store: StoreFactory,
) -> None:
    a = await open_store()
    b = await open_store()
    scans = [spec("/v/same", request_id=f"r-{i}", fp="same scan") for i in range(2)]
    async with asyncio.timeout(TIMEOUT):
        outcomes = await asyncio.gather(
            a.insert_job(scans[0].new_job(), scans[0]), b.insert_job(scans[1].new_job(), scans[1])
        )
    created = [o for o in outcomes if o.created]
    joined = [o for o in outcomes if not o.created]
    assert len(created) == 1 and len(joined) == 1 and joined[0].deduplicated
    job_id = created[0].job.job_id
    assert joined[0].job.job_id == job_id
    for request_id in ("r-0", "r-1"):  # a retry of either submit finds the one job
        found = await a.find_request(request_id)
        assert found is not None and found[0].job_id == job_id
    # Once the job has ended, the same scan is a new job.
    finished = created[0].job
    finished.state = scan_pb2.JOB_STATE_CANCELLED
    assert await b.record(finished, [], expected_state=JobState.QUEUED)
    again = await a.insert_job(scans[0].new_job(), spec("/v/same"))
    assert again.created and again.job.job_id != job_id


async def test_the_queue_bound_is_counted_in_the_database(open_store: StoreFactory) -> None:
    a = await open_store(max_queued=2)
    b = await open_store(max_queued=2)
    first = await submit(a, spec("/v/1", request_id="r-1"))
    await submit(b, spec("/v/2"))
    third = spec("/v/3")
    with pytest.raises(QueueFull):
        await a.insert_job(third.new_job(), third)
    retried = spec("/v/1", request_id="r-1")  # a retry still gets its job when the queue is full
    outcome = await b.insert_job(retried.new_job(), retried)
    assert not outcome.created and outcome.job.job_id == first.job_id
    assert await a.claim_next(start_change) is not None  # one leaves QUEUED: room for one
    await submit(b, third)


async def test_two_stores_opening_a_new_database_at_once_migrate_it_once(
    postgres: object, pg_url: str
) -> None:
    stores = [PostgresStore(pg_url) for _ in range(3)]
    try:
        async with asyncio.timeout(TIMEOUT):
            await asyncio.gather(*(store.open() for store in stores))
        # Each migration applied once, by whichever store took the lock first for it.
        assert sum(store.migrations_applied for store in stores) == SCHEMA_VERSION
        await submit(stores[2], spec())  # every one works
        assert await stores[0].claim_next(start_change) is not None
    finally:
        for store in stores:
            await store.close()


async def test_a_newer_schema_is_refused_untouched(open_store: StoreFactory, pg_url: str) -> None:
    store = await open_store()
    await store.close()
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute("UPDATE schema_version SET version = 99")
    newer = PostgresStore(pg_url)
    newer_than = f"schema version 99, newer than this server's {SCHEMA_VERSION}"
    with pytest.raises(SchemaTooNew, match=newer_than):
        await newer.open()
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        row = await (await conn.execute("SELECT version FROM schema_version")).fetchone()
    assert row == (99,)


async def test_an_unreachable_database_is_a_storage_error(postgres: object) -> None:
    with socket_closed_port() as port:
        store = PostgresStore(f"postgresql://postgres@127.0.0.1:{port}/none", timeout=1.0)
        with pytest.raises(StorageError) as raised:
            await store.open()
    assert isinstance(raised.value, DatabaseTimeout) or "failed" in str(raised.value)
    assert "127.0.0.1" in str(raised.value)


@contextlib.contextmanager
def socket_closed_port() -> Iterator[int]:
    """A port nothing listens on while the block runs (bound, not listening)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


async def test_the_server_runs_on_a_postgresql_url(
    spawn_server: Any, connect: Any, pg_url: str, small_folders: list[Path]
) -> None:
    """The real command line: `--db postgresql://...`, a scan, and a clean exit."""
    server = await spawn_server("--node-name", "cli-node", db=pg_url)
    stub = await connect(server.address)
    response = await stub.SubmitScan(scan_pb2.SubmitScanRequest(path=str(small_folders[0])))
    job = await final_job(stub, response.job_id)
    assert job.state == scan_pb2.JOB_STATE_SUCCEEDED and job.node == "cli-node"
    server.terminate()
    assert await server.wait(STOP_WAIT) == 0
    assert "cli-node" in server.stderr_text()


async def test_the_server_does_not_start_on_an_unreachable_database(tmp_path: Path) -> None:
    with socket_closed_port() as port:
        url = f"postgresql://scan:s3cret@127.0.0.1:{port}/mediascan"
        done = await asyncio.to_thread(
            subprocess.run,
            [str(BIN / "mediascan-server"), "--listen", "127.0.0.1:0", "--db", url,
             "--db-timeout", "1s"],
            capture_output=True, text=True, timeout=STOP_WAIT, check=False,
        )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "cannot open the database: " in done.stderr
    assert f"postgresql://scan@127.0.0.1:{port}/mediascan" in done.stderr
    assert "s3cret" not in done.stderr + done.stdout


async def test_connections_cut_by_the_database_are_replaced(
    open_store: StoreFactory, pg_url: str
) -> None:
    """An administrator's pg_terminate_backend (or a database restart) breaks the pooled
    connections: the pool replaces them, and the next calls work without a restart."""
    store = await open_store(node="cut")
    job = await submit(store, spec())
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as admin:
        cursor = await admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'mediascan cut'"
        )
        row = await cursor.fetchone()
        assert row is not None and row[0] >= 1
    assert await store.check()
    found = await store.get_job(job.job_id)
    assert found is not None and found.job_id == job.job_id
    assert await store.claim_next(start_change) is not None


async def test_events_are_notified_coalesced_and_the_last_one_always(
    open_store: StoreFactory, pg_url: str
) -> None:
    """A burst of progress commits of one job sends a few notifications, not one per commit,
    and the last one names the last sequence (sent by itself once the interval is over)."""
    store = await open_store(node="n")
    await submit(store, spec())
    claimed = await store.claim_next(start_change)
    assert claimed is not None
    job = claimed.job
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute(f"LISTEN {notify.EVENTS}")
        started = time.monotonic()
        for _ in range(40):
            job.last_sequence += 1
            event = new_event(job.job_id, job.last_sequence, scan_pb2.Progress(files_done=1))
            assert await store.record(job, [event])
        elapsed = time.monotonic() - started
        last = f"{job.job_id}:{job.last_sequence}"
        payloads: list[str] = []
        async with contextlib.aclosing(conn.notifies(timeout=TIMEOUT)) as notifies:
            async for received in notifies:
                payloads.append(received.payload)
                if received.payload == last:
                    break
    assert payloads and payloads[-1] == last
    # One per interval at most, plus the trailing one: a count, whatever the machine's speed.
    assert len(payloads) <= elapsed / notify.EVENTS_INTERVAL + 2, (len(payloads), elapsed)


async def test_the_listen_connection_wakes_the_server_and_comes_back(
    open_store: StoreFactory, pg_url: str
) -> None:
    """A job queued through another store wakes this one; after pg_terminate_backend on its
    LISTEN connection it reconnects and says so (a resync), and wakes again."""
    here = await open_store(node="here")
    there = await open_store(node="there")
    woken = asyncio.Event()
    resyncs: asyncio.Queue[None] = asyncio.Queue()
    here.add_wakeup_listener(woken.set)
    here.feed.add_resync_listener(lambda: resyncs.put_nowait(None))
    here.start_tasks()
    async with asyncio.timeout(TIMEOUT):
        await resyncs.get()  # the first connection LISTENs
        woken.clear()
        await submit(there, spec("/a"))
        await woken.wait()
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as admin:
            cursor = await admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'mediascan here listen'"
            )
            assert await cursor.fetchone() == (1,)
        await resyncs.get()
        woken.clear()
        await submit(there, spec("/b"))
        await woken.wait()
    assert here.feed is not None


async def test_cancel_through_the_feed_cancels_a_queued_job_and_marks_a_running_one(
    open_store: StoreFactory,
) -> None:
    store = await open_store(node="n")
    queued = await submit(store, spec("/q"))
    running = await submit(store, spec("/r", priority=5))
    claimed = await store.claim_next(start_change)
    assert claimed is not None and claimed.job.job_id == running.job_id
    outcome = await store.feed.request_cancel(queued.job_id, cancel_queued)
    assert outcome is not None and outcome.job.state == JobState.CANCELLED and outcome.events
    assert await store.claim_next(start_change) is None  # nothing left to claim
    outcome = await store.feed.request_cancel(running.job_id, cancel_queued)
    assert outcome is not None and outcome.requested and outcome.job.state == JobState.RUNNING
    assert await store.feed.cancels_requested() == [running.job_id]
    assert await store.feed.request_cancel("no-such-job", cancel_queued) is None
    job, events = await store.feed.follow_job(queued.job_id, 0, 100)
    assert job is not None and job.state == JobState.CANCELLED
    assert [e.sequence for e in events] == [job.last_sequence]
    assert events[0].state_change.to_state == JobState.CANCELLED


async def test_a_cancel_asked_while_a_job_ran_stops_its_next_run(open_store: StoreFactory) -> None:
    """A job marked `cancel_requested` and then re-queued (its server shut down before it
    heard) is claimed with the mark: the claiming server stops it at once."""
    store = await open_store(node="n")
    job = await submit(store, spec("/m"))
    claimed = await store.claim_next(start_change)
    assert claimed is not None and not claimed.cancel_requested
    outcome = await store.feed.request_cancel(job.job_id, cancel_queued)
    assert outcome is not None and outcome.requested
    running = claimed.job
    running.state = scan_pb2.JOB_STATE_QUEUED
    running.attempt += 1  # a re-queue moves the job to its next attempt (`requeued`)
    running.last_sequence += 1
    event = new_event(running.job_id, running.last_sequence, scan_pb2.StateChange())
    assert await store.record(running, [event], expected_state=JobState.RUNNING)
    again = await store.claim_next(start_change)
    assert again is not None and again.job.job_id == job.job_id and again.cancel_requested


async def test_without_notifications_the_server_reads_everything_again_periodically(
    open_store: StoreFactory,
) -> None:
    """When notifications do not reach the LISTEN connection (found at connection time, e.g.
    behind a pooler in transaction mode), the store resyncs every IDLE_CHECK seconds by itself.
    Here the connection works, and the check's verdict is overridden to see the fallback."""
    store = await open_store(node="quiet")
    resyncs: asyncio.Queue[None] = asyncio.Queue()
    store.feed.add_resync_listener(lambda: resyncs.put_nowait(None))
    store.start_tasks()
    async with asyncio.timeout(TIMEOUT):
        await resyncs.get()  # connected
        listener = store.feed.listener
        await listener.checked.wait()
        assert listener.connected and listener.delivering
        listener.delivering = False
        await resyncs.get()  # no notification, no reconnection: the periodic resync
    assert listener.connections == 1


async def test_the_check_counts_every_servers_queued_jobs(open_store: StoreFactory) -> None:
    """What `mediascan_jobs_queued` shows on PostgreSQL: the QUEUED jobs of the database."""
    here = await open_store(node="here")
    there = await open_store(node="there")
    assert here.queued is None  # no check yet
    for path in ("/a", "/b", "/c"):
        await submit(there, spec(path))
    assert await there.claim_next(start_change) is not None
    assert await here.check()
    assert here.queued == 2


async def _lease_left(store: PostgresStore, job_id: str) -> float:
    async with await psycopg.AsyncConnection.connect(store.database.url) as conn:
        cursor = await conn.execute(
            "SELECT extract(epoch FROM lease_until - now()) FROM jobs WHERE job_id = %s",
            (job_id,),
        )
        row = await cursor.fetchone()
        assert row is not None and row[0] is not None
        return float(row[0])


async def test_a_claim_takes_a_lease_its_node_renews_and_another_node_reclaims_it(
    open_store: StoreFactory,
) -> None:
    """The claim sets `lease_until`; the keeper's round renews this node's leases; once a lease
    passed, another node's round re-queues the job (attempt + 1, a state event whose job says
    why, in one transaction) and notifies the queue."""
    a = await open_store(node="a", lease=1.0)
    b = await open_store(node="b", lease=1.0)
    job = await submit(a, spec("/leased"))
    claimed = await a.claim_next(start_change)
    assert claimed is not None
    assert 0 < await _lease_left(a, job.job_id) <= 1.0
    reclaimed: list[Any] = []
    b.feed.set_reclaim(reclaim_change, reclaimed.append)
    await asyncio.sleep(0.6)
    await a._feed.leases.tick()  # renewed: 1 s again
    assert await _lease_left(a, job.job_id) > 0.8
    await b._feed.leases.tick()
    assert reclaimed == []  # not expired yet
    await asyncio.sleep(1.2)
    await b._feed.leases.tick()
    (changed,) = reclaimed
    assert changed.previous_state == JobState.RUNNING
    assert changed.job.state == JobState.QUEUED and changed.job.attempt == 2
    assert "its node a stopped renewing its lease" in changed.job.error.message
    stored, events = await b.feed.follow_job(job.job_id, claimed.job.last_sequence, 100)
    assert stored is not None and stored.attempt == 2
    assert [e.sequence for e in events] == [claimed.job.last_sequence + 1]
    assert events[0].state_change.job.error.message == changed.job.error.message
    again = await b.claim_next(start_change)
    assert again is not None and again.job.node == "b" and again.job.attempt == 2
    assert not again.job.HasField("error")


async def test_a_node_that_cannot_renew_for_longer_than_its_lease_is_told(
    open_store: StoreFactory,
) -> None:
    store = await open_store(node="a", lease=0.5)
    lost: list[bool] = []
    store.feed.add_lease_lost_listener(lambda: lost.append(True))
    await store._feed.leases.tick()
    await store.database.close()  # every renewal fails from now on
    await store._feed.leases.tick()
    assert lost == []  # not for longer than the lease yet
    await asyncio.sleep(0.6)
    await store._feed.leases.tick()
    await store._feed.leases.tick()
    assert lost == [True]  # once


async def test_the_writes_of_a_reclaimed_attempt_are_refused(open_store: StoreFactory) -> None:
    """Fencing: once another node reclaimed a job (attempt + 1), a write the first node makes
    for its attempt, progress or end, is refused (LeaseLost) and stores nothing."""
    a = await open_store(node="a", lease=0.2)
    b = await open_store(node="b", lease=0.2)
    await submit(a, spec("/fenced"))
    claimed = await a.claim_next(start_change)
    assert claimed is not None
    await asyncio.sleep(0.3)
    reclaimed = await b._feed.leases.reclaim_expired(reclaim_change, lambda _: None)
    assert [c.job.attempt for c in reclaimed] == [2]
    late = scan_pb2.Job()
    late.CopyFrom(claimed.job)
    late.last_sequence += 1
    event = new_event(late.job_id, late.last_sequence, scan_pb2.Progress(files_done=1))
    with pytest.raises(LeaseLost):
        await a.record(late, [event])
    late.state = scan_pb2.JOB_STATE_SUCCEEDED
    with pytest.raises(LeaseLost):
        await a.record(late, [event], expected_state=JobState.RUNNING)
    job, events = await a.feed.follow_job(late.job_id, 0, 100)
    assert job is not None and job.state == JobState.QUEUED and job.attempt == 2
    first = claimed.job.last_sequence  # RUNNING (attempt 1), then QUEUED (attempt 2): no more
    assert [e.sequence for e in events] == [first, first + 1]


async def test_a_job_whose_leases_keep_expiring_fails_after_max_attempts(
    open_store: StoreFactory,
) -> None:
    """`--max-attempts 2`: the first expired lease re-queues the job (attempt 2), the second
    ends it FAILED with the reason, in the same transaction, and nobody claims it again."""
    store = await open_store(node="a", lease=0.2)
    change = reclaim_change_for(2)
    job = await submit(store, spec("/dies"))
    for attempt, state in ((1, JobState.QUEUED), (2, JobState.FAILED)):
        claimed = await store.claim_next(start_change)
        assert claimed is not None and claimed.job.attempt == attempt
        await asyncio.sleep(0.3)
        (changed,) = await store._feed.leases.reclaim_expired(change, lambda _: None)
        assert changed.job.state == state
    assert changed.job.error.message == "gave up after 2 attempts: its node died each time"
    assert changed.job.HasField("end_time")
    assert await store.claim_next(start_change) is None
    assert await store.job_state(job.job_id) == (JobState.FAILED, changed.job.last_sequence)


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_server_whose_leases_lapsed_stops_its_jobs_without_writing(
    make_server: Any, connect: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Told that its renewals failed for longer than the lease (`leases_lost`, as its
    `db-leases` task tells it), a server stops its running job at once, writes nothing for it
    (stored RUNNING as it was, left to another server's reclaim), and goes on serving."""
    set_fault(monkeypatch, "hang", HANG_MARK)
    server = await make_server(probe_timeout=LONG_PROBE_TIMEOUT, node_name="n", **QUICK_STOP)
    stub = await connect(server.address)
    job_id = await start_hung_blocker(stub, tmp_path / "hung")
    engine = server.queue
    running = engine.jobs.get(job_id)
    assert running is not None and engine.cluster is not None
    engine.cluster.leases_lost()
    async with asyncio.timeout(TIMEOUT):
        await running.done.wait()
    assert job_id not in engine.jobs
    stored = await engine.store.get_job(job_id)
    assert stored is not None and stored.state == JobState.RUNNING and stored.attempt == 1
    assert stored.last_sequence == running.job.last_sequence  # nothing written since
    job = await stub.GetJob(scan_pb2.GetJobRequest(job_id=job_id))
    assert job.state == JobState.RUNNING and job.node == "n"


async def test_a_listen_connection_whose_test_notification_never_comes_is_reported(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """What a pooler in transaction mode does to LISTEN (the notifications never reach the
    connection), made here by a test notification that is never sent: the listener says so
    once, in an error naming the pooler, and reads everything again (its `on_connected`) at
    each idle check; other channels' notifications are still handed over meanwhile."""
    from mediascan.server.store.postgres.database import connection_info
    from mediascan.server.store.postgres.listener import PgListener

    connected: list[float] = []
    queued: list[str] = []

    async def never_sent(token: str) -> None:
        return None

    listener = PgListener(
        connection_info(pg_url, "deaf"),
        "the test database",
        handlers={notify.QUEUE: queued.append},
        on_connected=lambda: connected.append(time.monotonic()),
        send_probe=never_sent,
    )
    task = asyncio.create_task(listener.run())
    try:
        async with asyncio.timeout(TIMEOUT):
            while not listener.connected:
                await asyncio.sleep(0.05)
            async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
                await conn.execute("SELECT pg_notify(%s, 'wake')", (notify.QUEUE,))
            await listener.checked.wait()
            while len(connected) < 2:  # the read-again after the first idle check
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert not listener.delivering
    assert queued == ["wake"]
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "pool_mode = transaction" in errors[0]
