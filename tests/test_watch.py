"""WatchJob: snapshot first, gap-free sequences, identical fan-out, exact resume, resync,
coalesced progress; live events sent as the same bytes as replayed ones, serialized once."""

from __future__ import annotations

import asyncio
import gc
import itertools
from pathlib import Path
from typing import Any

import grpc
import pytest

from mediascan.server import events as events_module
from mediascan.server.events import EventHub
from mediascan.server.streams import StreamBudget
from mediascan.server.testing import (
    Corpus,
    event_job,
    event_state,
    final_job,
    job_seconds,
    wait_for_running,
    watch_events,
)
from mediascan.v1 import scan_pb2
from mediascan.v1.scan_pb2_grpc import ScanServiceStub

#: The contract holds on both backends (tests/conftest.py `backend`).
pytestmark = pytest.mark.both_backends

QUEUED = scan_pb2.JOB_STATE_QUEUED
RUNNING = scan_pb2.JOB_STATE_RUNNING
SUCCEEDED = scan_pb2.JOB_STATE_SUCCEEDED
CANCELLED = scan_pb2.JOB_STATE_CANCELLED


async def submit(stub: Any, path: Path | str, **fields: Any) -> Any:
    return await stub.SubmitScan(scan_pb2.SubmitScanRequest(path=str(path), **fields))


async def attach(client: Any, job_id: str, timeout: float = 60.0) -> asyncio.Task[list[Any]]:
    """Start watching a job; return once the stream delivered its first event (the snapshot),
    with a task that collects every event until the stream closes."""
    attached = asyncio.Event()

    async def collect() -> list[Any]:
        events: list[Any] = []
        call = client.WatchJob(scan_pb2.WatchJobRequest(job_id=job_id))
        try:
            async with asyncio.timeout(timeout):
                async for event in call:
                    events.append(event)
                    attached.set()
        finally:
            attached.set()
            call.cancel()
        return events

    task = asyncio.create_task(collect())
    async with asyncio.timeout(10):
        await attached.wait()
    return task


def kinds(events: list[Any]) -> list[str]:
    return [e.WhichOneof("kind") for e in events]


def assert_well_formed(events: list[Any], job_id: str) -> None:
    """Snapshot first (its sequence is its job's last_sequence), then sequences with no gap, and
    the stream's last event is the terminal state change carrying the result."""
    assert events, "empty stream"
    snapshot = events[0]
    assert snapshot.WhichOneof("kind") == "snapshot", kinds(events)
    assert not snapshot.snapshot.resync
    assert snapshot.sequence == snapshot.snapshot.job.last_sequence
    assert [e.sequence for e in events] == list(
        range(snapshot.sequence, snapshot.sequence + len(events))
    )
    assert all(e.job_id == job_id for e in events)
    assert all(e.HasField("event_time") for e in events)
    assert "snapshot" not in kinds(events[1:])
    last = events[-1]
    job = event_job(last)
    assert job is not None and job.state == SUCCEEDED, last
    assert job.HasField("result")
    assert job.last_sequence == last.sequence


async def test_stream_is_snapshot_then_every_event_then_closes(
    make_server: Any, connect: Any, big_folder: Path, corpus: Corpus
) -> None:
    server = await make_server(workers=1, shutdown_grace=0.5)
    stub = await connect(server.address)
    blocker = await submit(stub, big_folder)
    await wait_for_running(stub, blocker.job_id)
    response = await submit(stub, corpus.root)
    assert response.job.last_sequence == 1

    # The watcher attaches while the job is queued behind the blocker: it sees the whole run.
    watch = await attach(stub, response.job_id)
    await stub.CancelJob(scan_pb2.CancelJobRequest(job_id=blocker.job_id))
    events = await watch

    assert_well_formed(events, response.job_id)
    assert events[0].sequence == 1
    assert events[0].snapshot.job.state == QUEUED
    changes = [
        (e.state_change.from_state, e.state_change.to_state)
        for e in events
        if e.WhichOneof("kind") == "state_change"
    ]
    assert changes == [(QUEUED, RUNNING), (RUNNING, SUCCEEDED)]
    errors = [e.file_error.path for e in events if e.WhichOneof("kind") == "file_error"]
    assert sorted(errors) == sorted(str(p.resolve()) for p in corpus.bad)
    # Progress never goes backwards.
    done = [e.progress.files_done for e in events if e.WhichOneof("kind") == "progress"]
    assert done == sorted(done)


async def test_a_stream_opened_at_submit_misses_no_event(
    stub: Any, small_folders: list[Path]
) -> None:
    """Watchers that attach while the job starts running must still get every event after
    their snapshot: no gap in sequences, no state change lost."""
    for folder in small_folders:
        job_id = (await submit(stub, folder)).job_id
        events = await watch_events(stub, job_id, timeout=20)
        sequences = [e.sequence for e in events]
        assert sequences == list(range(sequences[0], sequences[0] + len(events))), (
            f"gap in {sequences}: {kinds(events)}"
        )
        state = events[0].snapshot.job.state
        for event in events[1:]:
            if event.WhichOneof("kind") == "state_change":
                assert event.state_change.from_state == state, kinds(events)
                state = event.state_change.to_state
        assert state == SUCCEEDED


async def test_two_watchers_see_identical_events(
    make_server: Any, connect: Any, big_folder: Path, corpus: Corpus
) -> None:
    server = await make_server(workers=1, shutdown_grace=0.5)
    stub = await connect(server.address)
    other = await connect(server.address)  # a second client on its own channel
    blocker = await submit(stub, big_folder)
    await wait_for_running(stub, blocker.job_id)
    job_id = (await submit(stub, corpus.root)).job_id

    # Both attach while the job is queued behind the blocker.
    tasks = [await attach(stub, job_id), await attach(other, job_id)]
    await stub.CancelJob(scan_pb2.CancelJobRequest(job_id=blocker.job_id))
    one, two = await asyncio.gather(*tasks)

    assert_well_formed(one, job_id)
    assert_well_formed(two, job_id)
    assert one[0].sequence == two[0].sequence == 1
    assert len(one) > 3
    assert one[1:] == two[1:]


async def test_resume_after_sequence_yields_exactly_the_missing_events(
    stub: Any, corpus: Corpus
) -> None:
    job_id = (await submit(stub, corpus.root)).job_id
    final = await final_job(stub, job_id)
    assert final.state == SUCCEEDED
    last = final.last_sequence

    everything = await watch_events(stub, job_id, after_sequence=1)
    assert [e.sequence for e in everything] == list(range(2, last + 1))
    assert event_state(everything[-1]) == SUCCEEDED
    for n in range(1, last):
        resumed = await watch_events(stub, job_id, after_sequence=n, timeout=10)
        assert resumed == [e for e in everything if e.sequence > n], n


async def test_resume_of_a_broken_live_stream(
    make_server: Any, connect: Any, medium_folder: Path
) -> None:
    server = await make_server(probe_concurrency=1, progress_rate=20.0)
    stub = await connect(server.address)
    job_id = (await submit(stub, medium_folder)).job_id

    reference = asyncio.create_task(watch_events(stub, job_id))
    # A second watcher reads until its first progress event, then its stream breaks.
    first_part: list[Any] = []
    call = stub.WatchJob(scan_pb2.WatchJobRequest(job_id=job_id))
    async with asyncio.timeout(30):
        async for event in call:
            first_part.append(event)
            if event.WhichOneof("kind") == "progress" or event_state(event) == SUCCEEDED:
                break
    call.cancel()
    n = first_part[-1].sequence
    resumed = await watch_events(stub, job_id, after_sequence=n)
    full = await reference

    assert_well_formed(full, job_id)
    assert full[0].sequence <= n
    assert resumed == [e for e in full if e.sequence > n]
    assert [e.sequence for e in first_part + resumed] == list(
        range(first_part[0].sequence, full[-1].sequence + 1)
    )


async def test_progress_is_coalesced(make_server: Any, connect: Any, medium_folder: Path) -> None:
    server = await make_server(probe_concurrency=1, progress_rate=5.0)
    stub = await connect(server.address)
    job_id = (await submit(stub, medium_folder)).job_id
    await final_job(stub, job_id)
    events = await watch_events(stub, job_id, after_sequence=1)
    job = event_job(events[-1])
    assert job is not None and job.state == SUCCEEDED
    progress = [e.progress for e in events if e.WhichOneof("kind") == "progress"]
    ran = job_seconds(job)
    assert progress, "no progress events"
    # At most progress_rate events a second (plus one at each end), never one per file: a
    # count the coalescing guarantees by the server's own clock (the windows and the job's
    # start and end times), however slow the machine.
    assert len(progress) <= 5.0 * ran + 2, (len(progress), ran)
    assert len(progress) < 600
    assert [p.files_done for p in progress] == sorted(p.files_done for p in progress)
    fractions = [p.fraction for p in progress]
    assert all(0.0 <= f <= 1.0 for f in fractions)
    assert fractions == sorted(fractions)
    totals = {p.files_total for p in progress if p.HasField("files_total")}
    assert totals <= {600}


@pytest.mark.slow
async def test_progress_slows_down_for_a_crowd_of_watchers(
    make_server: Any, connect: Any, medium_folder: Path, big_folder: Path
) -> None:
    """--progress-fanout: a job that may send 16 progress messages a second in all sends its
    one watcher progress at --progress-rate (here 16 a second, 1 / 16 s being longer than
    1 / 20 s), and each of 8 watchers at most 2 a second. The watchers attach while the job
    waits behind a blocker, so that every window of its run counts them. Only counts and
    intervals by the server's own clock are compared, never rates between two runs."""
    server = await make_server(
        workers=1, probe_concurrency=1, progress_rate=20.0, progress_fanout=16
    )
    stub = await connect(server.address)

    async def progress_events(watchers: int) -> tuple[list[Any], float]:
        """Scan with this many watchers; its progress events and the scan's duration."""
        blocker = (await submit(stub, big_folder, full=True)).job_id
        await wait_for_running(stub, blocker)
        job_id = (await submit(stub, medium_folder, full=True)).job_id  # every file probed
        tasks = [await attach(stub, job_id) for _ in range(watchers)]
        await stub.CancelJob(scan_pb2.CancelJobRequest(job_id=blocker))
        streams = await asyncio.gather(*tasks)
        job = event_job(streams[0][-1])
        assert job is not None and job.state == SUCCEEDED
        for stream in streams:  # every watcher got every event from its snapshot on
            assert [e.sequence for e in stream] == list(
                range(stream[0].sequence, job.last_sequence + 1)
            )
        history = await watch_events(stub, job_id, after_sequence=1)
        return [e for e in history if e.WhichOneof("kind") == "progress"], job_seconds(job)

    alone, _ = await progress_events(1)
    crowd, crowd_ran = await progress_events(8)
    # 16 / 8: one window of 0.5 s between two progress events (by the server's clock), plus
    # the final flush; without the budget, one every 1 / 20 s.
    assert 1 <= len(crowd) <= 2.0 * crowd_ran + 3, (len(crowd), crowd_ran)
    # A lone watcher is not held to the crowd's window: two of its progress events were made
    # closer together than 0.5 s (its window is 1 / 16 s; a scan of 600 files makes progress
    # far more often than every 0.5 s, however busy the machine).
    made = [e.event_time.ToNanoseconds() / 1e9 for e in alone]
    assert min(b - a for a, b in itertools.pairwise(made)) < 0.5, made


async def test_resume_beyond_the_last_sequence_resyncs(stub: Any, corpus: Corpus) -> None:
    job_id = (await submit(stub, corpus.root)).job_id
    final = await final_job(stub, job_id)
    events = await watch_events(stub, job_id, after_sequence=final.last_sequence + 50, timeout=10)
    assert kinds(events) == ["snapshot"]
    assert events[0].snapshot.resync
    assert events[0].snapshot.job.state == SUCCEEDED
    assert events[0].sequence == final.last_sequence


async def test_resume_after_evicted_events_resyncs(
    make_server: Any, connect: Any, tmp_path: Path
) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    for index in range(40):  # 40 file errors: more events than a log of 16 keeps
        (folder / f"broken{index:02d}.mp4").write_bytes(b"")
    server = await make_server(event_log_size=16)
    stub = await connect(server.address)
    job_id = (await submit(stub, folder)).job_id
    final = await final_job(stub, job_id)
    assert final.state == SUCCEEDED
    assert final.result.failed == 40
    assert final.last_sequence > 40
    # The log is trimmed once the job ends; a restart makes sure that is done, and shows that
    # the kept events live in the database.
    await server.stop()
    server = await make_server(event_log_size=16)
    stub = await connect(server.address)

    events = await watch_events(stub, job_id, after_sequence=1, timeout=10)
    assert kinds(events) == ["snapshot"]
    assert events[0].snapshot.resync
    assert events[0].snapshot.job == await stub.GetJob(scan_pb2.GetJobRequest(job_id=job_id))

    # The newest events are still kept, and resume exactly.
    recent = await watch_events(stub, job_id, after_sequence=final.last_sequence - 3, timeout=10)
    assert [e.sequence for e in recent] == [
        final.last_sequence - 2,
        final.last_sequence - 1,
        final.last_sequence,
    ]
    assert "snapshot" not in kinds(recent)


async def test_watching_a_finished_job_sends_one_snapshot(stub: Any, corpus: Corpus) -> None:
    job_id = (await submit(stub, corpus.root)).job_id
    final = await final_job(stub, job_id)
    events = await watch_events(stub, job_id, timeout=10)
    assert kinds(events) == ["snapshot"]
    assert not events[0].snapshot.resync
    assert events[0].snapshot.job == final
    assert events[0].sequence == final.last_sequence


async def test_watching_a_cancelled_queued_job(
    make_server: Any, connect: Any, big_folder: Path, corpus: Corpus
) -> None:
    server = await make_server(workers=1, shutdown_grace=0.5)
    stub = await connect(server.address)
    blocker = await submit(stub, big_folder)
    await wait_for_running(stub, blocker.job_id)
    job_id = (await submit(stub, corpus.root)).job_id
    watch = await attach(stub, job_id, timeout=20)
    await stub.CancelJob(scan_pb2.CancelJobRequest(job_id=job_id))
    events = await watch
    assert [e.sequence for e in events] == [1, 2]
    assert events[0].snapshot.job.state == QUEUED
    assert events[0].WhichOneof("kind") == "snapshot"
    last = events[-1]
    assert last.WhichOneof("kind") == "state_change"
    assert (last.state_change.from_state, last.state_change.to_state) == (QUEUED, CANCELLED)
    await stub.CancelJob(scan_pb2.CancelJobRequest(job_id=blocker.job_id))


@pytest.mark.parametrize("after_sequence", [0, 5])
async def test_watching_an_unknown_job_is_not_found(stub: Any, after_sequence: int) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await watch_events(stub, "j_00000000000000000000000000", after_sequence=after_sequence)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert info.value.details()


async def test_live_events_are_sent_as_the_bytes_a_replay_sends(
    make_server: Any, big_folder: Path, corpus: Corpus
) -> None:
    """Live events go out as bytes serialized once for all watchers (`serialize_event`): those
    bytes are exactly what the stored event replays as, so the wire is the same either way."""
    server = await make_server(workers=1, shutdown_grace=0.5)
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = ScanServiceStub(channel)
        raw = channel.unary_stream(
            "/mediascan.v1.ScanService/WatchJob",
            request_serializer=scan_pb2.WatchJobRequest.SerializeToString,
            response_deserializer=None,  # the bytes as sent
        )
        blocker = await submit(stub, big_folder)
        await wait_for_running(stub, blocker.job_id)
        job_id = (await submit(stub, corpus.root)).job_id
        live: list[bytes] = []
        attached = asyncio.Event()
        call = raw(scan_pb2.WatchJobRequest(job_id=job_id))
        reading = asyncio.create_task(collect_raw(call, live, attached))
        async with asyncio.timeout(10):
            await attached.wait()  # the snapshot is in: the stream follows the job
        await stub.CancelJob(scan_pb2.CancelJobRequest(job_id=blocker.job_id))
        await reading
        replay = raw(scan_pb2.WatchJobRequest(job_id=job_id, after_sequence=1))
        replayed: list[bytes] = []
        await collect_raw(replay, replayed)

    events = [scan_pb2.JobEvent.FromString(data) for data in live]
    assert_well_formed(events, job_id)
    assert live[1:] == replayed, "live and replayed bytes differ"
    assert all(event.SerializeToString() == data for event, data in zip(events, live, strict=True))


async def collect_raw(call: Any, into: list[bytes], first: asyncio.Event | None = None) -> None:
    """Every message of a raw stream; `first` is set at the first one."""
    try:
        async with asyncio.timeout(60):
            async for data in call:
                into.append(data)
                if first is not None:
                    first.set()
    finally:
        call.cancel()


async def test_serialized_events_live_no_longer_than_their_ring() -> None:
    """What `serialize_event` keeps is bounded by the channels' rings: an event's bytes go when
    it leaves its ring, a shared snapshot's at the next publish, and all of a channel's when the
    channel is gone."""
    hub = EventHub(None, ring_size=4, log_size=4, budget=StreamBudget(1 << 20))  # type: ignore[arg-type]  # no store needed
    job = scan_pb2.Job(job_id="j_" + "0" * 26, state=RUNNING, last_sequence=1)
    channel = hub.open(job)
    stream = hub.watch(job.job_id, 0)
    snapshot = await anext(stream)
    assert snapshot.WhichOneof("kind") == "snapshot"
    published = [snapshot]  # kept alive, so that no other object takes one of their ids

    def kept() -> list[bool]:
        return [id(event) in events_module._WIRE for event in published]

    assert kept() == [True]
    for sequence in range(2, 12):
        job = scan_pb2.Job(job_id=job.job_id, state=RUNNING, last_sequence=sequence)
        event = scan_pb2.JobEvent(job_id=job.job_id, sequence=sequence)
        event.progress.files_done = sequence
        channel.publish(job, [event])
        published.append(event)
        assert await anext(stream) is event
        assert events_module.serialize_event(event) == event.SerializeToString()
        # The ring's events (the last 4) are kept serialized; the snapshot and older ones not.
        assert kept() == [False] * (len(published) - min(4, sequence - 1)) + [True] * min(
            4, sequence - 1
        )
    await stream.aclose()
    hub.release(job.job_id)
    del channel, stream
    gc.collect()
    assert not any(kept())


async def test_a_channel_catches_up_on_what_it_lacks_and_restarts_on_a_gap() -> None:
    """`JobChannel.catch_up` (the path of a channel fed from the store, and of one a claim
    adopts): events it holds are skipped, the rest follow on; when the events it lacks are no
    longer all there, its ring starts again and a stream behind it gets a resync snapshot."""
    hub = EventHub(None, ring_size=8, log_size=8, budget=StreamBudget(1 << 20))  # type: ignore[arg-type]  # no store needed
    job_id = "j_" + "1" * 26

    def at(sequence: int, state: int = RUNNING) -> tuple[scan_pb2.Job, list[scan_pb2.JobEvent]]:
        job = scan_pb2.Job(job_id=job_id, state=state, last_sequence=sequence)
        events = [scan_pb2.JobEvent(job_id=job_id, sequence=s) for s in range(2, sequence + 1)]
        for event in events:
            event.progress.files_done = event.sequence
        return job, events

    channel = hub.open(at(2)[0])
    stream = hub.watch(job_id, 0)
    assert (await anext(stream)).sequence == 2  # the snapshot
    job, events = at(4)
    channel.catch_up(job, events)  # 2 is skipped, 3 and 4 follow on
    assert [(await anext(stream)).sequence for _ in range(2)] == [3, 4]
    channel.catch_up(*at(4))  # nothing new
    job, events = at(9)
    channel.catch_up(job, events[-2:])  # 5 and 6 are gone: the ring starts again at 8
    assert channel.first_sequence() == 8
    resync = await anext(stream)
    assert resync.WhichOneof("kind") == "snapshot" and resync.snapshot.resync
    assert resync.sequence == 9
    job, _ = at(10, SUCCEEDED)
    channel.catch_up(job, [])  # finished, its events gone: the stream ends on a snapshot
    final = await anext(stream)
    assert final.snapshot.job.state == SUCCEEDED
    with pytest.raises(StopAsyncIteration):
        await anext(stream)


async def test_a_resume_at_the_terminal_event_ends_before_the_channel_is_released() -> None:
    """A client that got a job's terminal event and resumes after it, while the job's channel
    is still held (the moment between the end and the release), gets an OK end and no event,
    as it does once the job is read from the store: it must not wait for events that never
    come."""
    hub = EventHub(None, ring_size=8, log_size=8, budget=StreamBudget(1 << 20))  # type: ignore[arg-type]  # no store needed
    job_id = "j_" + "2" * 26
    channel = hub.open(scan_pb2.Job(job_id=job_id, state=RUNNING, last_sequence=2))
    end = scan_pb2.JobEvent(job_id=job_id, sequence=3)
    end.state_change.from_state = RUNNING
    end.state_change.to_state = SUCCEEDED
    channel.publish(scan_pb2.Job(job_id=job_id, state=SUCCEEDED, last_sequence=3), [end])
    assert channel.end_sequence == 3
    for after in (3, 2):
        async with asyncio.timeout(5):
            got = [event.sequence async for event in hub.watch(job_id, after)]
        assert got == ([] if after == 3 else [3])
    hub.release(job_id)
