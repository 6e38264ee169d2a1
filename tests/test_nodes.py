"""Several `mediascan-server` processes on one PostgreSQL database: every RPC works on every
node. A job submitted on one node is watched on another (snapshot, gapless sequences, the
terminal event) and cancelled from a third; GetJob, ListJobs, DeleteJob and the library give
the same answers everywhere, and page tokens travel; an API-only node (`--workers 0`) never
runs a job, and the nodes that do are woken by NOTIFY (their periodic re-check is made too long
to matter); a LISTEN connection cut by the database comes back and nothing is missed; a node
whose database goes away is NOT_SERVING until it comes back.

Nothing here asserts speed: each wait is for a stream's event, with a generous bound."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from _postgres import postgres_cluster
from _robust import (
    CANCELLED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    Launcher,
    all_jobs,
    channel_to,
    check_history,
    hang_env,
    hung_folder,
    job_history,
    launch_fixture,  # noqa: F401 - provides the `launch` fixture
    logged,
    record_figures,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mediascan.server.testing import (
    SLOW_PROBE,
    TERMINAL_STATES,
    event_job,
    event_state,
    final_job,
    make_many,
)
from mediascan.v1 import scan_pb2

pytestmark = pytest.mark.slow

#: The bound of every wait for a job's event (generous: the machine may be busy).
WAIT = 60.0
#: A re-check interval no test outlives: only a NOTIFY can wake a node's dispatcher.
NEVER = "1h"


async def nodes(launch: Launcher, db: str, *specs: tuple[str, ...], env: Any = None) -> list[Any]:
    """Start one server per spec (its extra flags), side by side, on database `db`."""
    return list(await asyncio.gather(*(launch(*spec, db=db, env=env) for spec in specs)))


class Stream:
    """A WatchJob stream read in the background, its events kept in order."""

    def __init__(self, stub: Any, job_id: str, after_sequence: int = 0) -> None:
        self.events: list[scan_pb2.JobEvent] = []
        self._new = asyncio.Event()
        self.call = stub.WatchJob(
            scan_pb2.WatchJobRequest(job_id=job_id, after_sequence=after_sequence)
        )
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for event in self.call:
            self.events.append(event)
            self._new.set()

    async def until(self, predicate: Any, timeout: float = WAIT) -> scan_pb2.JobEvent:
        """The first event (already read or to come) that satisfies `predicate`."""
        seen = 0
        async with asyncio.timeout(timeout):
            while True:
                for event in self.events[seen:]:
                    if predicate(event):
                        return event
                seen = len(self.events)
                if self.task.done():
                    self.task.result()
                    raise AssertionError(f"the stream ended first: {self.summary()}")
                self._new.clear()
                await asyncio.wait(
                    {self.task, asyncio.ensure_future(self._new.wait())},
                    return_when=asyncio.FIRST_COMPLETED,
                )

    async def finished(self, timeout: float = WAIT) -> list[scan_pb2.JobEvent]:
        async with asyncio.timeout(timeout):
            await self.task
        return self.events

    def summary(self) -> list[str]:
        return [f"{e.sequence}:{e.WhichOneof('kind')}:{event_state(e)}" for e in self.events]


def assert_gapless(events: list[scan_pb2.JobEvent]) -> None:
    """A snapshot first, then every sequence after it once, in order, ending on the terminal
    state change (a resync snapshot may stand for events that were coalesced)."""
    assert events and events[0].WhichOneof("kind") == "snapshot", events[:1]
    cursor = events[0].sequence
    for event in events[1:]:
        if event.WhichOneof("kind") == "snapshot":
            assert event.snapshot.resync and event.sequence > cursor
        else:
            assert event.sequence == cursor + 1, (cursor, event.sequence)
        cursor = event.sequence
    assert event_state(events[-1]) in TERMINAL_STATES, events[-1]


def stable(job: scan_pb2.Job) -> tuple[Any, ...]:
    """What two nodes must agree on while a job runs (its progress moves on meanwhile)."""
    return (job.job_id, job.state, job.node, job.attempt, job.path)


async def test_submit_on_a_watch_on_b_cancel_from_c(
    launch: Launcher, pg_url: str, tmp_path: Path
) -> None:
    a, b, c = await nodes(
        launch,
        pg_url,
        ("--node-name", "A", "--workers", "1"),
        ("--node-name", "B", "--workers", "1"),
        ("--node-name", "C", "--workers", "0"),
        env=hang_env(),
    )
    folder = hung_folder(tmp_path)
    async with (
        channel_to(a.address) as (_, on_a),
        channel_to(b.address) as (_, on_b),
        channel_to(c.address) as (_, on_c),
    ):
        submitted = await on_a.SubmitScan(scan_pb2.SubmitScanRequest(path=str(folder)))
        job_id = submitted.job_id
        watch = Stream(on_b, job_id)
        started = await watch.until(lambda e: event_state(e) == RUNNING)
        runner = event_job(started)
        assert runner is not None and runner.node in ("A", "B")
        # Resumes on C, which runs nothing: from the live end, and from the start (older
        # events read back from the database).
        resumed = Stream(on_c, job_id, after_sequence=started.sequence)
        replayed = Stream(on_c, job_id, after_sequence=1)

        # While it runs (hung on its one file), every node tells the same story.
        during = [
            await stub.GetJob(scan_pb2.GetJobRequest(job_id=job_id)) for stub in (on_a, on_b, on_c)
        ]
        assert {stable(job) for job in during} == {stable(during[0])}
        assert during[0].state == RUNNING and during[0].node == runner.node
        listed_during = [await all_jobs(stub) for stub in (on_a, on_b, on_c)]
        assert {tuple(stable(job) for job in jobs) for jobs in listed_during} == {
            (stable(during[0]),)
        }
        for stub in (on_a, on_b, on_c):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.DeleteJob(scan_pb2.DeleteJobRequest(job_id=job_id))
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION

        # C runs nothing, yet its CancelJob stops the job on A or B and answers the end.
        asked = time.monotonic()
        cancelled = await asyncio.wait_for(
            on_c.CancelJob(scan_pb2.CancelJobRequest(job_id=job_id)), WAIT
        )
        record_figures("cross-node cancel", seconds=round(time.monotonic() - asked, 3))
        assert cancelled.state == CANCELLED and cancelled.node == runner.node
        events = await watch.finished()
        assert_gapless(events)
        assert event_state(events[-1]) == CANCELLED
        last = events[-1].sequence
        for stream, first in ((resumed, started.sequence + 1), (replayed, 2)):
            got = await stream.finished()
            assert [e.sequence for e in got] == list(range(first, last + 1)), stream.summary()
            assert not any(e.WhichOneof("kind") == "snapshot" for e in got)

        after = [
            await stub.GetJob(scan_pb2.GetJobRequest(job_id=job_id)) for stub in (on_a, on_b, on_c)
        ]
        assert after[0] == after[1] == after[2] == cancelled
        listed = [await all_jobs(stub) for stub in (on_a, on_b, on_c)]
        assert listed[0] == listed[1] == listed[2] and [j.job_id for j in listed[0]] == [job_id]
        history = check_history(job_id, await job_history(on_c, job_id))
        assert history == {"runs": 1, "requeues": 0, "final": CANCELLED}


async def test_a_queued_job_is_cancelled_from_any_node(
    launch: Launcher, pg_url: str, small_folders: list[Path]
) -> None:
    """With no node to run it, a job stays QUEUED; CancelJob on another node cancels it in the
    database, and a watcher on a third sees it end."""
    a, c = await nodes(launch, pg_url, ("--workers", "0"), ("--workers", "0"))
    async with channel_to(a.address) as (_, on_a), channel_to(c.address) as (_, on_c):
        job_id = (
            await on_a.SubmitScan(scan_pb2.SubmitScanRequest(path=str(small_folders[0])))
        ).job_id
        watch = Stream(on_a, job_id)
        await watch.until(lambda e: event_state(e) == QUEUED)
        cancelled = await on_c.CancelJob(scan_pb2.CancelJobRequest(job_id=job_id))
        assert cancelled.state == CANCELLED and not cancelled.node
        events = await watch.finished()
        assert_gapless(events)
        assert await on_a.GetJob(scan_pb2.GetJobRequest(job_id=job_id)) == cancelled


async def test_an_api_only_node_never_runs_a_job_and_notify_wakes_the_others(
    launch: Launcher, pg_url: str, small_folders: list[Path]
) -> None:
    """C has no worker; A and B re-check the queue only once an hour, so what wakes them for
    the jobs submitted on C is C's NOTIFY."""
    a, _b, c = await nodes(
        launch,
        pg_url,
        ("--node-name", "A", "--claim-recheck", NEVER),
        ("--node-name", "B", "--claim-recheck", NEVER),
        ("--node-name", "C", "--workers", "0"),
    )
    async with channel_to(c.address) as (_, on_c), channel_to(a.address) as (_, on_a):
        ids = [
            (await on_c.SubmitScan(scan_pb2.SubmitScanRequest(path=str(folder)))).job_id
            for folder in small_folders[:4]
        ]
        finals = [await final_job(on_c, job_id, timeout=WAIT) for job_id in ids]
        assert all(job.state == SUCCEEDED for job in finals), finals
        assert {job.node for job in finals} <= {"A", "B"}
        assert await all_jobs(on_a) == await all_jobs(on_c)


async def test_a_cut_listen_connection_comes_back_and_nothing_is_missed(
    launch: Launcher, pg_url: str, big_folder: Path, small_folders: list[Path]
) -> None:
    """The database ends B's LISTEN connection while B's watcher follows a scan on A: B
    reconnects, reads what it missed, and its watcher sees every event. Then A's is cut: a
    job queued meanwhile on B is still claimed by A (its re-check is an hour away)."""
    a, b = await nodes(
        launch,
        pg_url,
        ("--node-name", "A", "--workers", "1", "--claim-recheck", NEVER),
        ("--node-name", "B", "--workers", "0"),
    )
    async with channel_to(a.address) as (_, on_a), channel_to(b.address) as (_, on_b):
        job_id = (await on_a.SubmitScan(scan_pb2.SubmitScanRequest(path=str(big_folder)))).job_id
        watch = Stream(on_b, job_id)
        await watch.until(lambda e: e.WhichOneof("kind") == "progress")
        assert await terminate_listener(pg_url, "B") == 1
        events = await watch.finished(timeout=120.0)
        assert_gapless(events)
        assert event_state(events[-1]) == SUCCEEDED
        assert not any(e.WhichOneof("kind") == "snapshot" for e in events[1:])
        assert "is back; reading what it missed" in b.stderr_text()

        assert await terminate_listener(pg_url, "A") == 1
        queued = await on_b.SubmitScan(scan_pb2.SubmitScanRequest(path=str(small_folders[5])))
        job = await final_job(on_b, queued.job_id, timeout=WAIT)
        assert job.state == SUCCEEDED and job.node == "A"


async def terminate_listener(url: str, node: str) -> int:
    """pg_terminate_backend on the LISTEN connection of `node`; how many it ended."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as admin:
        cursor = await admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = %s",
            (f"mediascan {node} listen",),
        )
        row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def test_reads_and_page_tokens_are_the_same_on_every_node(
    launch: Launcher, pg_url: str, small_folders: list[Path]
) -> None:
    a, b = await nodes(launch, pg_url, ("--node-name", "A"), ("--node-name", "B", "--workers", "0"))
    async with channel_to(a.address) as (_, on_a), channel_to(b.address) as (_, on_b):
        ids = [
            (await on_b.SubmitScan(scan_pb2.SubmitScanRequest(path=str(folder)))).job_id
            for folder in small_folders[:3]
        ]
        for job_id in ids:
            await final_job(on_a, job_id, timeout=WAIT)
        # A page from A, the next one from B with A's token, and so on.
        seen: list[str] = []
        token = ""
        for turn in range(len(ids)):
            stub = (on_a, on_b)[turn % 2]
            page = await stub.ListJobs(scan_pb2.ListJobsRequest(page_size=1, page_token=token))
            seen.extend(job.job_id for job in page.jobs)
            token = page.next_page_token
        assert sorted(seen) == sorted(ids) and not token
        videos_a = await on_a.ListVideos(scan_pb2.ListVideosRequest(page_size=2))
        rest_b = await on_b.ListVideos(
            scan_pb2.ListVideosRequest(page_size=100, page_token=videos_a.next_page_token)
        )
        all_b = await on_b.ListVideos(scan_pb2.ListVideosRequest(page_size=100))
        assert list(videos_a.videos) + list(rest_b.videos) == list(all_b.videos)
        first = all_b.videos[0]
        assert await on_a.GetVideo(scan_pb2.GetVideoRequest(video_id=first.video_id)) == first
        await on_a.DeleteJob(scan_pb2.DeleteJobRequest(job_id=ids[0]))
        with pytest.raises(grpc.aio.AioRpcError) as gone:
            await on_b.GetJob(scan_pb2.GetJobRequest(job_id=ids[0]))
        assert gone.value.code() == grpc.StatusCode.NOT_FOUND


SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def test_a_node_whose_database_goes_away_is_not_serving_until_it_comes_back(
    launch: Launcher, small_folders: list[Path]
) -> None:
    """A cluster of its own, stopped and started again under a running server: the health
    service says NOT_SERVING, then SERVING, without a restart of the server."""
    with postgres_cluster() as cluster:
        server = await launch("--db-timeout", "1s", db=cluster.fresh())
        async with channel_to(server.address) as (channel, stub):
            health = health_pb2_grpc.HealthStub(channel)
            statuses = health.Watch(health_pb2.HealthCheckRequest(service=""))
            try:
                async with asyncio.timeout(WAIT):
                    assert (await statuses.read()).status == SERVING
                    await asyncio.to_thread(cluster.stop)
                    while (await statuses.read()).status != NOT_SERVING:
                        pass
                    await asyncio.to_thread(cluster.start)
                    while (await statuses.read()).status != SERVING:
                        pass
            finally:
                statuses.cancel()
            # Back for good: a scan runs end to end on the same server process.
            job_id = (
                await stub.SubmitScan(scan_pb2.SubmitScanRequest(path=str(small_folders[6])))
            ).job_id
            assert (await final_job(stub, job_id, timeout=WAIT)).state == SUCCEEDED
        assert server.alive()


#: A short lease, so that a dead node's job moves within seconds.
LEASE = "2s"
#: Videos of the scan a node dies in the middle of (each probe made slow: SLOW_PROBE).
MANY = 300


async def all_videos(stub: Any) -> list[str]:
    paths: list[str] = []
    token = ""
    while True:
        page = await stub.ListVideos(scan_pb2.ListVideosRequest(page_size=500, page_token=token))
        paths.extend(video.path for video in page.videos)
        token = page.next_page_token
        if not token:
            return paths


async def running_mid_scan(watch: Stream) -> scan_pb2.Job:
    """The job as its first run reports files done (the scan is under way)."""
    event = await watch.until(
        lambda e: e.WhichOneof("kind") == "progress" and e.progress.files_done >= 20
    )
    started = await watch.until(lambda e: event_state(e) == RUNNING)
    runner = event_job(started)
    assert runner is not None and event.sequence > started.sequence
    return runner


async def test_a_scan_whose_node_is_killed_finishes_on_another_node(
    launch: Launcher, pg_url: str, tmp_path: Path
) -> None:
    """kill -9 of the node running a scan: its lease expires, another node reclaims the job
    (attempt 2, QUEUED with the reason, then RUNNING there) and finishes it; a watcher on a
    third node sees one gapless log ending SUCCEEDED, and the library has each file once."""
    folder, by_name, c = await lease_cluster(launch, pg_url, tmp_path)
    async with channel_to(c.address) as (_, on_c):
        submitted = await on_c.SubmitScan(scan_pb2.SubmitScanRequest(path=str(folder)))
        watch = Stream(on_c, submitted.job_id)
        runner = await running_mid_scan(watch)
        by_name[runner.node].kill()
        events = await watch.finished(timeout=WAIT * 2)
        assert_gapless(events)
        final = event_job(events[-1])
        assert final is not None and final.state == SUCCEEDED, watch.summary()
        assert final.attempt == 2 and final.node != runner.node
        requeue = next(e for e in events if event_state(e) == QUEUED and e.sequence > 2)
        reason = event_job(requeue)
        assert reason is not None and f"its node {runner.node} stopped renewing" in (
            reason.error.message
        )
        history = check_history(submitted.job_id, await job_history(on_c, submitted.job_id))
        assert history == {"runs": 2, "requeues": 1, "final": SUCCEEDED}
        paths = await all_videos(on_c)
        assert len(paths) == MANY and len(set(paths)) == MANY


async def lease_cluster(
    launch: Launcher, pg_url: str, tmp_path: Path
) -> tuple[Path, dict[str, Any], Any]:
    """A folder of MANY slow-probing videos, and three nodes with a short lease: workers A and
    B (by name) and the API-only node C."""
    folder = tmp_path / "many"
    make_many(folder, MANY, **SLOW_PROBE)
    workers = ("--workers", "1", "--probe-workers", "1", "--lease", LEASE)
    a, b, c = await nodes(
        launch,
        pg_url,
        ("--node-name", "A", *workers),
        ("--node-name", "B", *workers),
        ("--node-name", "C", "--workers", "0", "--lease", LEASE),
    )
    return folder, {"A": a, "B": b}, c


async def test_a_paused_node_comes_back_to_find_its_writes_refused(
    launch: Launcher, pg_url: str, tmp_path: Path
) -> None:
    """SIGSTOP the node running a scan past its lease: another node reclaims the job and
    finishes it. SIGCONT: the first node's writes for its attempt are refused (fencing), it
    drops the job without a word in its log, and the log stays one gapless story."""
    folder, by_name, c = await lease_cluster(launch, pg_url, tmp_path)
    async with channel_to(c.address) as (_, on_c):
        submitted = await on_c.SubmitScan(scan_pb2.SubmitScanRequest(path=str(folder)))
        job_id = submitted.job_id
        watch = Stream(on_c, job_id)
        runner = await running_mid_scan(watch)
        paused = by_name[runner.node]
        os.kill(paused.pid, signal.SIGSTOP)
        try:
            events = await watch.finished(timeout=WAIT * 2)
        finally:
            os.kill(paused.pid, signal.SIGCONT)
        assert_gapless(events)
        final = event_job(events[-1])
        assert final is not None and final.state == SUCCEEDED and final.attempt == 2
        assert final.node != runner.node
        await logged(paused, "attempt 1 is over (the job is at attempt 2")  # fenced
        await logged(paused, "abandoned here (attempt 1)")
        assert paused.alive()
        history = await job_history(on_c, job_id)
        assert check_history(job_id, history) == {"runs": 2, "requeues": 1, "final": SUCCEEDED}
        assert history[-1].sequence == events[-1].sequence  # nothing written after the end
        assert history[-1].state_change.to_state == SUCCEEDED
        stored = await on_c.GetJob(scan_pb2.GetJobRequest(job_id=job_id))
        assert stored == final
