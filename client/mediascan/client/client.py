"""`ScanClient`: an asyncio client of the mediascan `ScanService`.

Every failed call raises `MediascanError`. `watch_job` survives a lost connection: it reconnects
with backoff and resumes right after the last event it yielded, so the caller sees every event
once. Given several server addresses (servers that share one database), the client talks to one at
a time and moves on to the next when that one cannot be reached or answers UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncGenerator, Callable, Sequence
from types import TracebackType
from typing import Any, Self, cast

import grpc

from mediascan.client.connection import Backoff, Connection
from mediascan.client.errors import MediascanError
from mediascan.client.libraries import LibraryMethods
from mediascan.client.messages import Seconds, duration, videos_request
from mediascan.v1 import scan_pb2

DEFAULT_TARGET = "127.0.0.1:50051"

#: The states a job never leaves.
TERMINAL_STATES: frozenset[scan_pb2.JobState] = frozenset(
    {
        scan_pb2.JOB_STATE_SUCCEEDED,
        scan_pb2.JOB_STATE_FAILED,
        scan_pb2.JOB_STATE_TIMED_OUT,
        scan_pb2.JOB_STATE_CANCELLED,
    }
)


def terminal_job(event: scan_pb2.JobEvent) -> scan_pb2.Job | None:
    """The final job if `event` shows the job terminal (a terminal state change, or a snapshot of
    a finished job); None otherwise."""
    kind = event.WhichOneof("kind")
    if kind == "state_change" and event.state_change.to_state in TERMINAL_STATES:
        return event.state_change.job
    if kind == "snapshot" and event.snapshot.job.state in TERMINAL_STATES:
        return event.snapshot.job
    return None


def _is_resync(event: scan_pb2.JobEvent) -> bool:
    return event.WhichOneof("kind") == "snapshot" and event.snapshot.resync


class ScanClient(LibraryMethods):
    """An asyncio client of the mediascan server, or of several servers that share one database.

    Use it as an async context manager, or call `close()` when done::

        async with ScanClient("127.0.0.1:50051") as client:
            submitted = await client.submit_scan("/media/videos")
            job = await client.wait(submitted.job_id)

    `target` is one address, several separated by commas (`"a:50051,b:50051"`), or a list of
    addresses. With several, the client talks to one server at a time, starting with the first;
    when a call cannot reach it or it answers UNAVAILABLE (down, shutting down), the call moves
    on to the next address, round robin, and the client stays there. A call that is not safe to
    repeat (`delete_job`, `create_library`, `delete_library`) moves on only when it could not
    connect at all. `watch_job` and `follow_library` resume on the next server after the last
    event or change they yielded.

    The library methods (`create_library` ... `follow_library`) come from `LibraryMethods`.

    Security: `token` is sent as `authorization: Bearer TOKEN` on every call (streams too).
    `tls_ca` (a PEM file of the CA that signed the server's certificate) turns TLS on, as does
    `tls=True` alone (the system's CAs); `tls_cert` and `tls_key` add a client certificate for
    servers that require one (mutual TLS); `tls_server_name` checks the server's certificate
    for that name instead of the target's host. They apply to every address.

    Pass `channel` to use a channel of your own (interceptors, ...), to one server; `close()`
    then leaves it open. Failed calls raise `MediascanError`.
    """

    def __init__(
        self,
        target: str | Sequence[str] = DEFAULT_TARGET,
        *,
        channel: grpc.aio.Channel | None = None,
        token: str | None = None,
        tls: bool = False,
        tls_ca: str | os.PathLike[str] | None = None,
        tls_cert: str | os.PathLike[str] | None = None,
        tls_key: str | os.PathLike[str] | None = None,
        tls_server_name: str | None = None,
    ) -> None:
        self._connection = Connection(
            target,
            channel=channel,
            token=token,
            tls=tls,
            tls_ca=tls_ca,
            tls_cert=tls_cert,
            tls_key=tls_key,
            tls_server_name=tls_server_name,
        )

    @property
    def target(self) -> str:
        """The address of the server the client talks to now (the first until one fails)."""
        return self._connection.target

    @property
    def targets(self) -> tuple[str, ...]:
        """Every server address this client was given, in order."""
        return self._connection.targets

    @property
    def channel(self) -> grpc.aio.Channel:
        """The gRPC channel to the server the client talks to now (see `target`)."""
        return self._connection.channel

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channels (unless passed in); calls still running are cancelled."""
        await self._connection.close()

    async def submit_scan(
        self,
        path: str,
        *,
        recursive: bool = True,
        follow_symlinks: bool = False,
        timeout: Seconds | None = None,
        request_id: str | None = None,
        priority: int = 0,
        full: bool = False,
        verify: scan_pb2.Verify = scan_pb2.VERIFY_UNSPECIFIED,
        force: bool = False,
    ) -> scan_pb2.SubmitScanResponse:
        """Submit a scan of the folder `path` (absolute, on the server's file system).

        `verify=scan_pb2.VERIFY_DECODE` also decodes the files to check their health. `force`
        removes the videos whose files are gone even when they are more than a library's
        `removal_limit` share of its videos.

        `timeout` (seconds or a timedelta) limits the whole scan; None takes the server's default.
        `request_id` is the idempotency key: a submit repeating an earlier one's id returns the
        earlier job. When None, a fresh UUID is used, so that retries of this one call are safe.
        """
        request = scan_pb2.SubmitScanRequest(
            path=path,
            recursive=recursive,
            follow_symlinks=follow_symlinks,
            request_id=request_id if request_id is not None else str(uuid.uuid4()),
            priority=priority,
            full=full,
            verify=verify,
            force=force,
            timeout=None if timeout is None else duration(timeout),
        )
        return await self._connection.call(lambda stub: stub.SubmitScan, request)

    async def get_job(self, job_id: str) -> scan_pb2.Job:
        """A point-in-time snapshot of the job."""
        return await self._connection.call(
            lambda stub: stub.GetJob, scan_pb2.GetJobRequest(job_id=job_id)
        )

    async def cancel_job(self, job_id: str) -> scan_pb2.Job:
        """Cancel a queued or running job (a finished job is returned unchanged)."""
        return await self._connection.call(
            lambda stub: stub.CancelJob, scan_pb2.CancelJobRequest(job_id=job_id)
        )

    async def delete_job(self, job_id: str) -> None:
        """Forget a finished job (FAILED_PRECONDITION while it is queued or running)."""
        await self._connection.call(
            lambda stub: stub.DeleteJob,
            scan_pb2.DeleteJobRequest(job_id=job_id),
            retry_safe=False,
        )

    async def get_video(
        self, *, video_id: str | None = None, path: str | None = None
    ) -> scan_pb2.Video:
        """One video of the library, by id or by absolute path (give exactly one)."""
        if (video_id is None) == (path is None):
            raise TypeError("get_video() takes exactly one of video_id and path")
        request = scan_pb2.GetVideoRequest(video_id=video_id or "", path=path or "")
        return await self._connection.call(lambda stub: stub.GetVideo, request)

    async def list_jobs(
        self, state: int | None = None, page_size: int = 100
    ) -> AsyncGenerator[scan_pb2.Job, None]:
        """All jobs, newest first, optionally only those in `state` (a `scan_pb2.JobState`)."""
        request = scan_pb2.ListJobsRequest(
            state=cast(scan_pb2.JobState, state or scan_pb2.JOB_STATE_UNSPECIFIED),
            page_size=page_size,
        )
        async for page in self._connection.pages(lambda stub: stub.ListJobs, request):
            for job in page.jobs:
                yield job

    async def list_file_errors(
        self, job_id: str, page_size: int = 100
    ) -> AsyncGenerator[scan_pb2.FileError, None]:
        """Every file error the job recorded, in the order met, page by page."""
        request = scan_pb2.ListFileErrorsRequest(job_id=job_id, page_size=page_size)
        async for page in self._connection.pages(lambda stub: stub.ListFileErrors, request):
            for error in page.file_errors:
                yield error

    async def list_videos(
        self,
        path_prefix: str = "",
        page_size: int = 100,
        *,
        video_codec: str = "",
        min_duration: Seconds | None = None,
        max_duration: Seconds | None = None,
        health: scan_pb2.Health = scan_pb2.HEALTH_UNSPECIFIED,
        fingerprint: str = "",
        **fields: Any,
    ) -> AsyncGenerator[scan_pb2.Video, None]:
        """The videos of the library, ordered by path (or `order_by`, e.g. "duration desc"),
        those under `path_prefix` with `video_codec`, a duration in [min_duration,
        max_duration], a `health` or a `fingerprint`. The keywords and `fields` (container,
        audio_codec, min_width, rotation, truncated, order_by, ...; None leaves one unset) are
        the `ListVideosRequest` fields of the same names; `library="films"` lists only the
        videos of that library."""
        fields.update(video_codec=video_codec, health=health, fingerprint=fingerprint)
        request = videos_request(path_prefix, page_size, min_duration, max_duration, fields)
        async for page in self._connection.pages(lambda stub: stub.ListVideos, request):
            for video in page.videos:
                yield video

    async def list_duplicates(
        self, path_prefix: str = "", page_size: int = 0, *, confirm: bool = False
    ) -> AsyncGenerator[scan_pb2.DuplicateGroup, None]:
        """Groups of videos with the same content fingerprint, by fingerprint, optionally only
        under the folder `path_prefix`; with `confirm`, each file's whole-content hash too (the
        server reads the files: slow)."""
        request = scan_pb2.ListDuplicatesRequest(
            path_prefix=path_prefix, page_size=page_size, confirm=confirm
        )
        async for page in self._connection.pages(lambda stub: stub.ListDuplicates, request):
            for group in page.groups:
                yield group

    async def watch_job(
        self, job_id: str, *, after_sequence: int = 0, reconnect_timeout: float = 60.0
    ) -> AsyncGenerator[scan_pb2.JobEvent, None]:
        """The job's events, in order, until the server ends the stream (after the event that
        makes the job terminal).

        With `after_sequence` 0 the first event is a snapshot of the job; with a positive value
        the stream resumes right after that event. When the connection is lost (UNAVAILABLE),
        this reconnects with backoff, to the next server address when there are several, and
        resumes after the last event it yielded, so no event is repeated or missed. It raises
        `MediascanError` when reconnecting has not worked for `reconnect_timeout` seconds, and
        at once for any other error.

        A snapshot with `resync` set means the server no longer kept the events asked for:
        discard what you derived from earlier events and start over from that snapshot.
        """
        last = after_sequence

        def request() -> scan_pb2.WatchJobRequest:
            return scan_pb2.WatchJobRequest(job_id=job_id, after_sequence=last)

        events = self._connection.stream(
            lambda stub: stub.WatchJob, request, reconnect_timeout=reconnect_timeout
        )
        async with contextlib.aclosing(events) as stream:
            async for event in stream:
                if last and event.sequence <= last and not _is_resync(event):
                    continue  # already yielded (a server replaying too much)
                last = event.sequence
                yield event

    async def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        on_event: Callable[[scan_pb2.JobEvent], object] | None = None,
    ) -> scan_pb2.Job:
        """Follow the job until it is terminal and return it in its final state.

        `on_event` is called with each event as it arrives (e.g. to show progress). Raises
        `TimeoutError` after `timeout` seconds (None waits for ever); the job goes on.
        """
        async with asyncio.timeout(timeout):
            last = 0
            backoff = Backoff()
            while True:
                async with contextlib.aclosing(
                    self.watch_job(job_id, after_sequence=last)
                ) as events:
                    async for event in events:
                        last = event.sequence
                        if on_event is not None:
                            on_event(event)
                        job = terminal_job(event)
                        if job is not None:
                            return job if job.job_id else await self.get_job(job_id)
                # The stream ended without a terminal event (a server shutting down cleanly).
                # Check the job, then follow it again (watch_job rides out a server that is down).
                if (ended := await _ended(self, job_id)) is not None:
                    return ended
                await asyncio.sleep(backoff.delay())


async def _ended(client: ScanClient, job_id: str) -> scan_pb2.Job | None:
    """The job if it is terminal; None if it is not, or if no server answers now."""
    try:
        job = await client.get_job(job_id)
    except MediascanError as error:
        if error.code != grpc.StatusCode.UNAVAILABLE:
            raise
        return None
    return job if job.state in TERMINAL_STATES else None
