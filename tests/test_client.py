"""`mediascan.client.ScanClient` against a real in-process server."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mediascan.client import TERMINAL_STATES, MediascanError, ScanClient
from mediascan.client.client import terminal_job
from mediascan.server.testing import Corpus
from mediascan.v1 import scan_pb2

TIMEOUT = 60.0


@pytest.fixture
async def client(server: Any) -> AsyncIterator[ScanClient]:
    async with ScanClient(server.address) as client:
        yield client


class CuttableProxy:
    """A TCP proxy in front of a server whose connections the test can cut at will (the client
    then sees UNAVAILABLE, as when a server or a network link goes away)."""

    def __init__(self, upstream: str) -> None:
        self._host, port = upstream.rsplit(":", 1)
        self._port = int(port)
        self._listener: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task[None]] = set()
        self.connections = 0
        self._marker: bytes | None = None
        self._withheld = b""
        #: Set when the proxy vanished after withholding an answer (`vanish_after_answer`).
        self.vanished = asyncio.Event()

    @property
    def address(self) -> str:
        assert self._listener is not None
        host, port = self._listener.sockets[0].getsockname()[:2]
        return f"{host}:{port}"

    async def start(self) -> None:
        self._listener = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection(self._host, self._port)
        self._writers.update((writer, up_writer))
        for source, sink, answers in ((reader, up_writer, False), (up_reader, writer, True)):
            task = asyncio.create_task(self._pipe(source, sink, answers))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, answers: bool
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await source.read(65536):
                if answers and self._marker is not None:
                    self._withhold(data)
                    continue
                sink.write(data)
                await sink.drain()
        sink.transport.abort()

    def vanish_after_answer(self, marker: bytes) -> None:
        """From now on, withhold what the server sends; once that holds `marker`, reset every
        connection and refuse new ones: a server that did the work, then went away before its
        answer reached the client."""
        self._marker = marker

    def _withhold(self, data: bytes) -> None:
        assert self._marker is not None
        self._withheld += data
        if self._marker in self._withheld and not self.vanished.is_set():
            self.vanished.set()
            self.cut()
            assert self._listener is not None
            self._listener.close()

    def cut(self) -> None:
        """Reset every open connection (the listener stays open: reconnects succeed)."""
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def stop_listening(self) -> None:
        """Refuse new connections from now on."""
        assert self._listener is not None
        self._listener.close()
        await self._listener.wait_closed()

    async def close(self) -> None:
        self.cut()
        if self._listener is not None and self._listener.is_serving():
            await self.stop_listening()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)


@pytest.fixture
async def proxy(server: Any) -> AsyncIterator[CuttableProxy]:
    proxy = CuttableProxy(server.address)
    await proxy.start()
    yield proxy
    await proxy.close()


def assert_contiguous(events: list[scan_pb2.JobEvent]) -> None:
    """Each event's sequence is the previous one's + 1 (a resync snapshot may jump ahead)."""
    for before, after in itertools.pairwise(events):
        if after.WhichOneof("kind") == "snapshot" and after.snapshot.resync:
            assert after.sequence > before.sequence
        else:
            assert after.sequence == before.sequence + 1, [e.sequence for e in events]


async def test_submit_and_wait_reports_what_the_scan_found(
    client: ScanClient, corpus: Corpus
) -> None:
    submitted = await client.submit_scan(str(corpus.root))
    assert submitted.job_id
    assert submitted.job.state == scan_pb2.JOB_STATE_QUEUED
    assert submitted.job.path == str(corpus.root.resolve())
    uuid.UUID(submitted.job.request_id)  # generated by the client when none is given

    job = await client.wait(submitted.job_id, timeout=TIMEOUT)

    assert job.state == scan_pb2.JOB_STATE_SUCCEEDED
    # Exactly which broken files a prober rejects is the server tests' business.
    assert job.result.files_total == len(corpus.video_files)
    assert job.result.added + job.result.failed == len(corpus.video_files)
    assert job.result.added >= len(corpus.valid)
    assert job.result.failed == len(job.result.file_errors) > 0
    assert {error.path for error in job.result.file_errors} <= {str(p) for p in corpus.bad}
    assert (await client.get_job(submitted.job_id)).state == scan_pb2.JOB_STATE_SUCCEEDED


async def test_wait_calls_on_event_for_every_event(client: ScanClient, corpus: Corpus) -> None:
    submitted = await client.submit_scan(str(corpus.root), full=True)
    events: list[scan_pb2.JobEvent] = []

    job = await client.wait(submitted.job_id, timeout=TIMEOUT, on_event=events.append)

    assert events[0].WhichOneof("kind") == "snapshot"
    assert events[-1].WhichOneof("kind") == "state_change"
    assert events[-1].state_change.to_state == job.state
    assert_contiguous(events)


async def test_same_request_id_returns_the_same_job(client: ScanClient, corpus: Corpus) -> None:
    request_id = str(uuid.uuid4())
    first = await client.submit_scan(str(corpus.root), request_id=request_id)
    again = await client.submit_scan(str(corpus.root), request_id=request_id)

    assert again.job_id == first.job_id
    await client.wait(first.job_id, timeout=TIMEOUT)


async def test_bad_argument_carries_field_violations(client: ScanClient) -> None:
    with pytest.raises(MediascanError) as caught:
        await client.submit_scan("relative/videos")

    error = caught.value
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.message
    assert [field for field, _ in error.field_violations] == ["path"]
    assert isinstance(error.__cause__, grpc.aio.AioRpcError)
    assert str(error).startswith("INVALID_ARGUMENT: ")


async def test_unknown_job_is_not_found(client: ScanClient) -> None:
    for call in (client.get_job, client.cancel_job, client.delete_job):
        with pytest.raises(MediascanError) as caught:
            await call("j_does_not_exist")
        assert caught.value.code == grpc.StatusCode.NOT_FOUND, call


async def test_full_queue_gives_a_retry_delay(
    make_server: Any, big_folder: Path, small_folders: list[Path]
) -> None:
    server = await make_server(workers=1, max_queued=1)
    async with ScanClient(server.address) as client:
        # One job at most runs and one may wait: of three submits, the third cannot fit.
        accepted = [await client.submit_scan(str(big_folder))]
        with pytest.raises(MediascanError) as caught:
            for folder in small_folders[:2]:
                accepted.append(await client.submit_scan(str(folder)))

        assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert caught.value.retry_delay is not None
        assert caught.value.retry_delay > 0
        for response in accepted:
            await client.cancel_job(response.job_id)


async def test_list_jobs_follows_page_tokens(
    make_server: Any, big_folder: Path, small_folders: list[Path]
) -> None:
    # One worker busy with the big folder keeps the other jobs QUEUED for the state filter.
    server = await make_server(workers=1)
    async with ScanClient(server.address) as client:
        blocker = await client.submit_scan(str(big_folder))
        submitted = [blocker.job_id]
        for folder in small_folders[:7]:
            submitted.append((await client.submit_scan(str(folder))).job_id)

        listed = [job.job_id async for job in client.list_jobs(page_size=3)]
        assert listed == submitted[::-1]  # newest first, each once, across three pages

        queued = [
            job async for job in client.list_jobs(state=scan_pb2.JOB_STATE_QUEUED, page_size=2)
        ]
        assert {job.job_id for job in queued} >= set(submitted[1:])
        assert {job.state for job in queued} == {scan_pb2.JOB_STATE_QUEUED}
        for job_id in submitted:
            await client.cancel_job(job_id)


async def test_list_videos_and_get_video(client: ScanClient, corpus: Corpus) -> None:
    submitted = await client.submit_scan(str(corpus.root))
    await client.wait(submitted.job_id, timeout=TIMEOUT)

    videos = [video async for video in client.list_videos(str(corpus.root), page_size=2)]

    paths = [video.path for video in videos]
    assert paths == sorted(paths)
    assert set(paths) >= {str(path) for path in corpus.valid}
    by_path = await client.get_video(path=videos[0].path)
    by_id = await client.get_video(video_id=videos[0].video_id)
    assert by_path == by_id == videos[0]
    with pytest.raises(MediascanError) as caught:
        await client.get_video(path=str(corpus.ignored[0]))
    assert caught.value.code == grpc.StatusCode.NOT_FOUND
    with pytest.raises(TypeError):
        await client.get_video()


async def test_cancel_then_delete(client: ScanClient, big_folder: Path) -> None:
    submitted = await client.submit_scan(str(big_folder))
    with pytest.raises(MediascanError) as caught:
        await client.delete_job(submitted.job_id)
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION

    await client.cancel_job(submitted.job_id)
    job = await client.wait(submitted.job_id, timeout=TIMEOUT)
    assert job.state == scan_pb2.JOB_STATE_CANCELLED
    assert (await client.cancel_job(submitted.job_id)).state == scan_pb2.JOB_STATE_CANCELLED

    await client.delete_job(submitted.job_id)
    with pytest.raises(MediascanError) as caught:
        await client.get_job(submitted.job_id)
    assert caught.value.code == grpc.StatusCode.NOT_FOUND


async def test_watch_of_a_finished_job_is_one_snapshot(client: ScanClient, corpus: Corpus) -> None:
    submitted = await client.submit_scan(str(corpus.root))
    final = await client.wait(submitted.job_id, timeout=TIMEOUT)

    async with asyncio.timeout(TIMEOUT):
        events = [event async for event in client.watch_job(submitted.job_id)]

    assert len(events) == 1
    assert events[0].snapshot.job.state in TERMINAL_STATES
    assert events[0].snapshot.job == final
    assert events[0].sequence == final.last_sequence


async def test_watch_job_resumes_after_lost_connections(
    server: Any, proxy: CuttableProxy, big_folder: Path
) -> None:
    async with ScanClient(server.address) as direct, ScanClient(proxy.address) as client:
        submitted = await direct.submit_scan(str(big_folder))
        events: list[scan_pb2.JobEvent] = []
        cuts = 0
        async with asyncio.timeout(TIMEOUT):
            async for event in client.watch_job(submitted.job_id):
                events.append(event)
                if len(events) % 3 == 1 and cuts < 4:
                    proxy.cut()  # the event just yielded is the last one of this connection
                    cuts += 1
                elif cuts == 4 and event.WhichOneof("kind") == "progress":
                    await direct.cancel_job(submitted.job_id)  # no need to scan it all
                    cuts += 1

    assert proxy.connections >= 5
    sequences = [event.sequence for event in events]
    assert len(sequences) == len(set(sequences)), sequences
    assert_contiguous(events)
    assert events[0].WhichOneof("kind") == "snapshot"
    last = events[-1]
    assert last.WhichOneof("kind") == "state_change"
    assert last.state_change.to_state in TERMINAL_STATES


async def test_watch_job_resumes_from_after_sequence(client: ScanClient, corpus: Corpus) -> None:
    submitted = await client.submit_scan(str(corpus.root), full=True)
    everything: list[scan_pb2.JobEvent] = []
    await client.wait(submitted.job_id, timeout=TIMEOUT, on_event=everything.append)
    final = await client.get_job(submitted.job_id)

    async with asyncio.timeout(TIMEOUT):
        rest = [event async for event in client.watch_job(submitted.job_id, after_sequence=1)]

    assert rest
    assert rest[0].sequence == 2
    assert rest[-1].sequence == final.last_sequence
    assert_contiguous(rest)


async def test_watch_job_gives_up_when_reconnecting_fails(
    server: Any, proxy: CuttableProxy, big_folder: Path
) -> None:
    async with ScanClient(server.address) as direct, ScanClient(proxy.address) as client:
        submitted = await direct.submit_scan(str(big_folder))
        seen: list[scan_pb2.JobEvent] = []
        with pytest.raises(MediascanError) as caught:
            async with asyncio.timeout(TIMEOUT):
                async for event in client.watch_job(submitted.job_id, reconnect_timeout=0.5):
                    seen.append(event)
                    if len(seen) == 1:
                        proxy.cut()
                        await proxy.stop_listening()

        assert caught.value.code == grpc.StatusCode.UNAVAILABLE
        assert proxy.connections == 1
        # (Events the client had already received before the cut may still come through.)
        assert seen
        assert all(terminal_job(event) is None for event in seen)
        await direct.cancel_job(submitted.job_id)


async def test_watch_job_raises_other_errors_at_once(client: ScanClient) -> None:
    with pytest.raises(MediascanError) as caught:
        async with asyncio.timeout(TIMEOUT):
            async for _ in client.watch_job("j_does_not_exist"):
                pass
    assert caught.value.code == grpc.StatusCode.NOT_FOUND


async def test_wait_times_out_and_the_job_goes_on(client: ScanClient, big_folder: Path) -> None:
    submitted = await client.submit_scan(str(big_folder))
    with pytest.raises(TimeoutError):
        await client.wait(submitted.job_id, timeout=0.2)

    job = await client.get_job(submitted.job_id)
    assert job.state not in TERMINAL_STATES
    await client.cancel_job(submitted.job_id)


async def test_client_on_a_channel_of_its_own(server: Any) -> None:
    channel = grpc.aio.insecure_channel(server.address)
    async with ScanClient(channel=channel) as client:
        assert [job async for job in client.list_jobs()] == []
    # The channel was not the client's to close.
    async with ScanClient(channel=channel) as client:
        assert [job async for job in client.list_jobs()] == []
    await channel.close(None)


#: The wait for a job that scans the big folder twice (two attempts): about 20 s alone, several
#: times that on a machine that runs two suites at once.
RESTART_WAIT = 180.0


@pytest.mark.slow
@pytest.mark.timeout(RESTART_WAIT + 60)
async def test_wait_survives_a_server_restart(spawn_server: Any, big_folder: Path) -> None:
    """A SIGTERM drains the server; a new one on the same port and database runs the job again
    (attempt 2); the watcher rides it out without a repeated or missing event."""
    first = await spawn_server("--shutdown-grace", "0")
    exit_codes: list[int] = []

    async def restart() -> None:
        first.terminate()
        exit_codes.append(await first.wait(TIMEOUT))
        await spawn_server("--listen", first.address, "--shutdown-grace", "0", db=first.db)

    async with ScanClient(first.address) as client:
        submitted = await client.submit_scan(str(big_folder))
        events: list[scan_pb2.JobEvent] = []
        restarter: asyncio.Task[None] | None = None

        def on_event(event: scan_pb2.JobEvent) -> None:
            nonlocal restarter
            events.append(event)
            if restarter is None and event.WhichOneof("kind") == "progress":
                restarter = asyncio.create_task(restart())

        job = await client.wait(submitted.job_id, timeout=RESTART_WAIT, on_event=on_event)

    assert restarter is not None
    await restarter
    assert exit_codes == [0]
    assert job.state == scan_pb2.JOB_STATE_SUCCEEDED
    assert job.attempt == 2
    sequences = [event.sequence for event in events]
    assert len(sequences) == len(set(sequences)), sequences
    assert_contiguous(events)


# -- several server addresses: failover ------------------------------------------------------------


async def test_a_dead_address_then_a_live_server(
    server: Any, free_address: str, corpus: Corpus
) -> None:
    """Every call goes on to the live server, and the client stays there."""
    async with ScanClient([free_address, server.address]) as client:
        assert client.targets == (free_address, server.address)
        assert client.target == free_address
        submitted = await client.submit_scan(str(corpus.root))
        assert client.target == server.address
        job = await client.wait(submitted.job_id, timeout=TIMEOUT)
        assert job.state == scan_pb2.JOB_STATE_SUCCEEDED
        assert [j.job_id async for j in client.list_jobs()] == [submitted.job_id]
        assert [e async for e in client.list_file_errors(submitted.job_id)]
        assert [v async for v in client.list_videos(str(corpus.root))]
        await client.delete_job(submitted.job_id)

    # A comma-separated string is the same list; a call that is not safe to repeat (DeleteJob)
    # goes on too when it could not connect at all.
    async with ScanClient(f"{free_address}, {server.address}") as client:
        assert client.targets == (free_address, server.address)
        with pytest.raises(MediascanError) as caught:
            await client.delete_job(submitted.job_id)
        assert caught.value.code == grpc.StatusCode.NOT_FOUND
        assert caught.value.target == server.address
        assert client.target == server.address


async def test_a_watch_starts_on_the_next_server_when_the_first_is_down(
    server: Any, free_address: str, corpus: Corpus
) -> None:
    async with ScanClient(server.address) as direct:
        submitted = await direct.submit_scan(str(corpus.root), full=True)
    async with ScanClient([free_address, server.address]) as client:
        events: list[scan_pb2.JobEvent] = []
        job = await client.wait(submitted.job_id, timeout=TIMEOUT, on_event=events.append)

        assert job.state == scan_pb2.JOB_STATE_SUCCEEDED
        assert events[0].WhichOneof("kind") == "snapshot"
        assert_contiguous(events)
        assert client.target == server.address


async def test_every_server_unreachable_names_each(
    free_addresses: Any,
) -> None:
    first, second = free_addresses(2)
    async with ScanClient([first, second]) as client:
        with pytest.raises(MediascanError) as caught:
            await client.get_job("j_x")

    error = caught.value
    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert (error.target, error.unreachable) == (second, True)
    assert [(e.target, e.unreachable, e.code) for e in error.earlier] == [
        (first, True, grpc.StatusCode.UNAVAILABLE)
    ]


async def test_a_submit_retried_on_another_server_keeps_its_request_id(
    server: Any, proxy: CuttableProxy, small_folders: list[Path]
) -> None:
    """The first server stores the job, then goes away before its answer arrives: the submit
    goes on to the next address (here: the same database, reached directly) with the same
    request_id, which answers with the job already made instead of making another."""
    folder = small_folders[0]
    async with ScanClient([proxy.address, server.address]) as client:
        assert [job async for job in client.list_jobs()] == []  # connected through the proxy
        assert client.target == proxy.address
        proxy.vanish_after_answer(str(folder.resolve()).encode())

        submitted = await client.submit_scan(str(folder))

        assert proxy.vanished.is_set()
        assert client.target == server.address
        jobs = [job async for job in client.list_jobs()]
        assert [job.job_id for job in jobs] == [submitted.job_id]
        assert jobs[0].request_id == submitted.job.request_id
        await client.wait(submitted.job_id, timeout=TIMEOUT)


async def test_a_submit_goes_on_from_a_server_that_is_shutting_down(
    make_server: Any, tmp_path: Path, big_folder: Path, small_folders: list[Path]
) -> None:
    """A server draining its running job answers new submits UNAVAILABLE: the submit goes on to
    the next address."""
    first = await make_server(shutdown_grace=30)
    second = await make_server(db=tmp_path / "second.db")
    async with ScanClient(first.address) as direct:
        running = await direct.submit_scan(str(big_folder))
        async with asyncio.timeout(TIMEOUT):
            async for event in direct.watch_job(running.job_id):
                if event.WhichOneof("kind") == "progress":
                    break
        health = health_pb2_grpc.HealthStub(direct.channel).Watch(health_pb2.HealthCheckRequest())
        async with asyncio.timeout(TIMEOUT):
            assert (await health.read()).status == health_pb2.HealthCheckResponse.SERVING
            stopping = asyncio.create_task(first.stop())
            assert (await health.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
        health.cancel()
        with pytest.raises(MediascanError) as refused:
            await direct.submit_scan(str(small_folders[0]))
        assert refused.value.code == grpc.StatusCode.UNAVAILABLE
        assert "shutting down" in refused.value.message

        async with ScanClient([first.address, second.address]) as client:
            submitted = await client.submit_scan(str(small_folders[0]))
            assert client.target == second.address
            assert (await client.get_job(submitted.job_id)).job_id == submitted.job_id

        await direct.cancel_job(running.job_id)  # the drain need not wait for it
    async with asyncio.timeout(TIMEOUT):
        await stopping


async def test_watch_job_gives_up_naming_every_server(
    server: Any, proxy: CuttableProxy, free_address: str, big_folder: Path
) -> None:
    first = proxy.address
    async with (
        ScanClient(server.address) as direct,
        ScanClient([first, free_address]) as client,
    ):
        submitted = await direct.submit_scan(str(big_folder))
        with pytest.raises(MediascanError) as caught:
            async with asyncio.timeout(TIMEOUT):
                async for event in client.watch_job(submitted.job_id, reconnect_timeout=0.5):
                    if event.WhichOneof("kind") == "snapshot":
                        proxy.cut()
                        await proxy.stop_listening()
        await direct.cancel_job(submitted.job_id)

    error = caught.value
    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert {e.target for e in (*error.earlier, error)} == {first, free_address}
    assert all(e.unreachable for e in (*error.earlier, error))


@pytest.mark.slow
async def test_a_watch_follows_the_job_to_the_next_server(
    spawn_server: Any, free_address: str, big_folder: Path
) -> None:
    """Server A is stopped (SIGTERM) while a client watches; B starts on A's database at the
    second address the client was given. The watch resumes on B after the last event A sent and
    follows the job (attempt 2, on B) to its end: no gap, no repeat."""
    first = await spawn_server("--shutdown-grace", "0")
    exit_codes: list[int] = []

    async def replace_first() -> None:
        first.terminate()
        exit_codes.append(await first.wait(TIMEOUT))
        await spawn_server("--listen", free_address, "--shutdown-grace", "0", db=first.db)

    async with ScanClient([first.address, free_address]) as client:
        submitted = await client.submit_scan(str(big_folder))
        events: list[scan_pb2.JobEvent] = []
        replacer: asyncio.Task[None] | None = None
        second_run_started = cancelled = False
        async with asyncio.timeout(TIMEOUT):
            async for event in client.watch_job(submitted.job_id):
                events.append(event)
                kind = event.WhichOneof("kind")
                if replacer is None and kind == "progress":
                    replacer = asyncio.create_task(replace_first())
                elif kind == "state_change" and event.state_change.job.attempt == 2:
                    second_run_started |= event.state_change.to_state == scan_pb2.JOB_STATE_RUNNING
                elif second_run_started and kind == "progress" and not cancelled:
                    await client.cancel_job(submitted.job_id)  # no need to scan it all
                    cancelled = True
        assert client.target == free_address

    assert replacer is not None
    await replacer
    assert exit_codes == [0]
    assert cancelled
    sequences = [event.sequence for event in events]
    assert len(sequences) == len(set(sequences)), sequences
    assert_contiguous(events)
    assert not any(event.snapshot.resync for event in events)
    last = events[-1]
    assert last.state_change.to_state == scan_pb2.JOB_STATE_CANCELLED
    assert last.state_change.job.attempt == 2
