"""`ScanClient`: an asyncio client of the mediascan `ScanService`.

Every failed call raises `MediascanError`. `watch_job` survives a lost connection: it reconnects
with backoff and resumes right after the last event it yielded, so the caller sees every event
once. Given several server addresses (servers that share one database), the client talks to one at
a time and moves on to the next when that one cannot be reached or answers UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import random
import uuid
from collections.abc import AsyncGenerator, Callable, Sequence
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar, cast

import grpc
from google.protobuf import duration_pb2

from mediascan.client.errors import MediascanError
from mediascan.v1 import scan_pb2, scan_pb2_grpc

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

_SERVICE = "mediascan.v1.ScanService"

# The calls that are safe to repeat: reads, CancelJob (idempotent) and SubmitScan, whose
# `request_id` makes a repeat return the job the first attempt created. gRPC retries them itself
# on UNAVAILABLE (a connection that broke before the server answered), and the client then tries
# the next server. DeleteJob is left out: a repeat of a delete that did happen would answer
# NOT_FOUND; it moves to the next server only when it could not reach the first at all.
_RETRY_SAFE = (
    "SubmitScan",
    "GetJob",
    "CancelJob",
    "ListJobs",
    "ListFileErrors",
    "ListVideos",
    "GetVideo",
)

_SERVICE_CONFIG = {
    "methodConfig": [
        {
            "name": [{"service": _SERVICE, "method": method} for method in _RETRY_SAFE],
            "retryPolicy": {
                "maxAttempts": 4,
                "initialBackoff": "0.1s",
                "maxBackoff": "1s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ]
}

_CHANNEL_OPTIONS: list[tuple[str, str | int]] = [
    ("grpc.service_config", json.dumps(_SERVICE_CONFIG)),
    # Reconnect quickly after a server restart (the defaults wait 1 s, growing to 2 minutes).
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
]

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")


class _PagedRequest(Protocol):
    page_token: str


class _Page(Protocol):
    next_page_token: str


_Paged = TypeVar("_Paged", bound=_PagedRequest)
_PageT = TypeVar("_PageT", bound=_Page)


class _Backoff:
    """Exponential backoff delays with jitter: 0.05 s doubling up to 2 s."""

    def __init__(self, first: float = 0.05, cap: float = 2.0) -> None:
        self._first = first
        self._cap = cap
        self._next = first

    def reset(self) -> None:
        self._next = self._first

    def delay(self) -> float:
        """The next delay: between half and all of the current step, which then doubles."""
        step = self._next
        self._next = min(self._cap, step * 2)
        return random.uniform(step / 2, step)


class _Stub:
    """The generated stub's methods, with the types the generated code does not declare."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        stub = scan_pb2_grpc.ScanServiceStub(channel)  # type: ignore[no-untyped-call]
        self.SubmitScan: grpc.aio.UnaryUnaryMultiCallable[
            scan_pb2.SubmitScanRequest, scan_pb2.SubmitScanResponse
        ] = stub.SubmitScan
        self.GetJob: grpc.aio.UnaryUnaryMultiCallable[scan_pb2.GetJobRequest, scan_pb2.Job] = (
            stub.GetJob
        )
        self.WatchJob: grpc.aio.UnaryStreamMultiCallable[
            scan_pb2.WatchJobRequest, scan_pb2.JobEvent
        ] = stub.WatchJob
        self.CancelJob: grpc.aio.UnaryUnaryMultiCallable[
            scan_pb2.CancelJobRequest, scan_pb2.Job
        ] = stub.CancelJob
        self.ListJobs: grpc.aio.UnaryUnaryMultiCallable[
            scan_pb2.ListJobsRequest, scan_pb2.ListJobsResponse
        ] = stub.ListJobs
        self.ListFileErrors: grpc.aio.UnaryUnaryMultiCallable[
            scan_pb2.ListFileErrorsRequest, scan_pb2.ListFileErrorsResponse
        ] = stub.ListFileErrors
        self.DeleteJob: grpc.aio.UnaryUnaryMultiCallable[scan_pb2.DeleteJobRequest, object] = (
            stub.DeleteJob
        )
        self.ListVideos: grpc.aio.UnaryUnaryMultiCallable[
            scan_pb2.ListVideosRequest, scan_pb2.ListVideosResponse
        ] = stub.ListVideos
        self.GetVideo: grpc.aio.UnaryUnaryMultiCallable[
            scan_pb2.GetVideoRequest, scan_pb2.Video
        ] = stub.GetVideo
        self.ListDuplicates: grpc.aio.UnaryUnaryMultiCallable[
            scan_pb2.ListDuplicatesRequest, scan_pb2.ListDuplicatesResponse
        ] = stub.ListDuplicates


def _videos_request(
    path_prefix: str,
    page_size: int,
    min_duration: float | datetime.timedelta | None,
    max_duration: float | datetime.timedelta | None,
    fields: dict[str, Any],
) -> scan_pb2.ListVideosRequest:
    """A ListVideosRequest: `fields` by name (None leaves one unset), durations converted."""
    return scan_pb2.ListVideosRequest(
        path_prefix=path_prefix,
        page_size=page_size,
        min_duration=None if min_duration is None else _duration(min_duration),
        max_duration=None if max_duration is None else _duration(max_duration),
        **{name: value for name, value in fields.items() if value is not None},
    )


def _duration(value: float | datetime.timedelta) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    if isinstance(value, datetime.timedelta):
        duration.FromTimedelta(value)
    else:
        duration.FromNanoseconds(round(value * 1e9))
    return duration


def _check_token(token: str) -> str:
    token = token.strip()
    if not token or any(c.isspace() for c in token) or not token.isprintable():
        raise ValueError("a token is one word of printable characters, without spaces")
    return token


def _read(what: str, path: str | os.PathLike[str] | None) -> bytes | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise ValueError(f"cannot read the {what} {os.fspath(path)}: {exc.strerror}") from None


def _tls_credentials(
    ca: str | os.PathLike[str] | None,
    cert: str | os.PathLike[str] | None,
    key: str | os.PathLike[str] | None,
) -> grpc.ChannelCredentials:
    if (cert is None) != (key is None):
        raise ValueError("tls_cert and tls_key go together: give both, or neither")
    return grpc.ssl_channel_credentials(
        root_certificates=_read("CA certificate file", ca),
        private_key=_read("client key file", key),
        certificate_chain=_read("client certificate file", cert),
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


def _resumable(error: grpc.aio.AioRpcError) -> bool:
    """A broken watch to resume elsewhere: UNAVAILABLE, or a CANCELLED this client did not
    cause (its own cancel raises CancelledError instead): gRPC cancels a call that arrives just
    as a server shuts down."""
    return error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)


def _is_resync(event: scan_pb2.JobEvent) -> bool:
    return event.WhichOneof("kind") == "snapshot" and event.snapshot.resync


#: How gRPC words a call that could not connect, so that the request never left the client.
_NOT_CONNECTED = ("failed to connect to all addresses", "DNS resolution failed", "errors resolving")


def split_targets(target: str | Sequence[str]) -> tuple[str, ...]:
    """The server addresses of `target`: one address, several separated by commas
    (`"a:50051,b:50051"`), or a sequence of addresses. Raises ValueError for an empty one."""
    targets = target.split(",") if isinstance(target, str) else list(target)
    stripped = tuple(address.strip() for address in targets)
    if not stripped or not all(stripped):
        shown = target if isinstance(target, str) else ",".join(target)
        raise ValueError(f"an empty server address in {shown!r}: give host:port[,host:port...]")
    return stripped


class _Node:
    """One server address and the channel to it."""

    def __init__(self, target: str, channel: grpc.aio.Channel) -> None:
        self.target = target
        self.channel = channel
        self.stub = _Stub(channel)

    def error(self, error: grpc.aio.AioRpcError) -> MediascanError:
        """The call's failure as a MediascanError that names this node."""
        not_connected = error.code() == grpc.StatusCode.UNAVAILABLE and (
            (error.details() or "").startswith(_NOT_CONNECTED)
            or self.channel.get_state() == grpc.ChannelConnectivity.TRANSIENT_FAILURE
        )
        return MediascanError.from_rpc_error(error, target=self.target, unreachable=not_connected)


def _fails_over(error: grpc.aio.AioRpcError, retry_safe: bool) -> bool:
    """Whether a unary call that failed this way goes on to the next server: on UNAVAILABLE if
    it is safe to repeat, else only if it never reached a server."""
    if error.code() != grpc.StatusCode.UNAVAILABLE:
        return False
    return retry_safe or (error.details() or "").startswith(_NOT_CONNECTED)


class ScanClient:
    """An asyncio client of the mediascan server, or of several servers that share one database.

    Use it as an async context manager, or call `close()` when done::

        async with ScanClient("127.0.0.1:50051") as client:
            submitted = await client.submit_scan("/media/videos")
            job = await client.wait(submitted.job_id)

    `target` is one address, several separated by commas (`"a:50051,b:50051"`), or a list of
    addresses. With several, the client talks to one server at a time, starting with the first;
    when a call cannot reach it or it answers UNAVAILABLE (down, shutting down), the call moves
    on to the next address, round robin, and the client stays there. A call that is not safe to
    repeat (`delete_job`) moves on only when it could not connect at all. `watch_job` resumes on
    the next server after the last event it yielded.

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
        targets = split_targets(target)
        self._owns_channel = channel is None
        self._metadata: tuple[tuple[str, str], ...] = ()
        if token is not None:
            self._metadata = (("authorization", f"Bearer {_check_token(token)}"),)
        uses_tls = tls or any(x is not None for x in (tls_ca, tls_cert, tls_key, tls_server_name))
        if channel is not None:
            if uses_tls:
                raise TypeError("pass either a channel or TLS options, not both")
            if len(targets) > 1:
                raise TypeError("pass either a channel or several addresses, not both")
            self._nodes = [_Node(targets[0], channel)]
        elif uses_tls:
            credentials = _tls_credentials(tls_ca, tls_cert, tls_key)
            options = list(_CHANNEL_OPTIONS)
            if tls_server_name:
                options.append(("grpc.ssl_target_name_override", tls_server_name))
            self._nodes = [
                _Node(t, grpc.aio.secure_channel(t, credentials, options=options)) for t in targets
            ]
        else:
            self._nodes = [
                _Node(t, grpc.aio.insecure_channel(t, options=_CHANNEL_OPTIONS)) for t in targets
            ]
        #: The node calls go to; it moves on when a call cannot use it.
        self._current = 0

    @property
    def target(self) -> str:
        """The address of the server the client talks to now (the first until one fails)."""
        return self._nodes[self._current].target

    @property
    def targets(self) -> tuple[str, ...]:
        """Every server address this client was given, in order."""
        return tuple(node.target for node in self._nodes)

    @property
    def channel(self) -> grpc.aio.Channel:
        """The gRPC channel to the server the client talks to now (see `target`)."""
        return self._nodes[self._current].channel

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
        if self._owns_channel:
            for node in self._nodes:
                await node.channel.close(None)

    def _round(self) -> list[_Node]:
        """Every node once, starting with the current one."""
        start = self._current
        return self._nodes[start:] + self._nodes[:start]

    def _next(self, failed: _Node) -> _Node:
        """The node after `failed`; it becomes the current one if `failed` still was (a call
        running alongside may have moved on already)."""
        index = (self._nodes.index(failed) + 1) % len(self._nodes)
        if self._nodes[self._current] is failed:
            self._current = index
        return self._nodes[index]

    async def _pages(
        self,
        method: Callable[[_Stub], grpc.aio.UnaryUnaryMultiCallable[_Paged, _PageT]],
        request: _Paged,
    ) -> AsyncGenerator[_PageT, None]:
        """Every page of a List call (AIP-158), following `next_page_token` until it is
        empty."""
        while True:
            page = await self._call(method, request)
            yield page
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    async def _call(
        self,
        method: Callable[[_Stub], grpc.aio.UnaryUnaryMultiCallable[_Request, _Response]],
        request: _Request,
        *,
        retry_safe: bool = True,
    ) -> _Response:
        """One unary call, on the current node, moving on to the next node while it fails over
        (the same request: a submit keeps its request_id)."""
        earlier: list[MediascanError] = []
        nodes = self._round()
        for node in nodes:
            try:
                return await method(node.stub)(request, metadata=self._metadata)
            except grpc.aio.AioRpcError as rpc_error:
                error = node.error(rpc_error)
                if node is nodes[-1] or not _fails_over(rpc_error, retry_safe):
                    error.earlier = tuple(earlier)
                    raise error from rpc_error
                earlier.append(error)
                self._next(node)
        raise AssertionError("a client has at least one node")  # pragma: no cover

    async def submit_scan(
        self,
        path: str,
        *,
        recursive: bool = True,
        follow_symlinks: bool = False,
        timeout: float | datetime.timedelta | None = None,
        request_id: str | None = None,
        priority: int = 0,
        full: bool = False,
        verify: scan_pb2.Verify = scan_pb2.VERIFY_UNSPECIFIED,
    ) -> scan_pb2.SubmitScanResponse:
        """Submit a scan of the folder `path` (absolute, on the server's file system).

        `verify=scan_pb2.VERIFY_DECODE` also decodes the files to check their health.

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
            timeout=None if timeout is None else _duration(timeout),
        )
        return await self._call(lambda stub: stub.SubmitScan, request)

    async def get_job(self, job_id: str) -> scan_pb2.Job:
        """A point-in-time snapshot of the job."""
        return await self._call(lambda stub: stub.GetJob, scan_pb2.GetJobRequest(job_id=job_id))

    async def cancel_job(self, job_id: str) -> scan_pb2.Job:
        """Cancel a queued or running job (a finished job is returned unchanged)."""
        return await self._call(
            lambda stub: stub.CancelJob, scan_pb2.CancelJobRequest(job_id=job_id)
        )

    async def delete_job(self, job_id: str) -> None:
        """Forget a finished job (FAILED_PRECONDITION while it is queued or running)."""
        await self._call(
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
        return await self._call(lambda stub: stub.GetVideo, request)

    async def list_jobs(
        self, state: int | None = None, page_size: int = 100
    ) -> AsyncGenerator[scan_pb2.Job, None]:
        """All jobs, newest first, optionally only those in `state` (a `scan_pb2.JobState`)."""
        request = scan_pb2.ListJobsRequest(
            state=cast(scan_pb2.JobState, state or scan_pb2.JOB_STATE_UNSPECIFIED),
            page_size=page_size,
        )
        async for page in self._pages(lambda stub: stub.ListJobs, request):
            for job in page.jobs:
                yield job

    async def list_file_errors(
        self, job_id: str, page_size: int = 100
    ) -> AsyncGenerator[scan_pb2.FileError, None]:
        """Every file error the job recorded, in the order met, page by page."""
        request = scan_pb2.ListFileErrorsRequest(job_id=job_id, page_size=page_size)
        async for page in self._pages(lambda stub: stub.ListFileErrors, request):
            for error in page.file_errors:
                yield error

    async def list_videos(
        self,
        path_prefix: str = "",
        page_size: int = 100,
        *,
        video_codec: str = "",
        min_duration: float | datetime.timedelta | None = None,
        max_duration: float | datetime.timedelta | None = None,
        health: scan_pb2.Health = scan_pb2.HEALTH_UNSPECIFIED,
        fingerprint: str = "",
        **fields: Any,
    ) -> AsyncGenerator[scan_pb2.Video, None]:
        """The videos of the library, ordered by path (or `order_by`, e.g. "duration desc"),
        those under `path_prefix` with `video_codec`, a duration in [min_duration,
        max_duration], a `health` or a `fingerprint`. The keywords and `fields` (container,
        audio_codec, min_width, rotation, truncated, order_by, ...; None leaves one unset) are
        the `ListVideosRequest` fields of the same names."""
        fields.update(video_codec=video_codec, health=health, fingerprint=fingerprint)
        request = _videos_request(path_prefix, page_size, min_duration, max_duration, fields)
        async for page in self._pages(lambda stub: stub.ListVideos, request):
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
        async for page in self._pages(lambda stub: stub.ListDuplicates, request):
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
        loop = asyncio.get_running_loop()
        last = after_sequence
        backoff = _Backoff()
        failing_since: float | None = None
        #: Each node's latest failure since the stream last gave an event.
        failures: dict[str, MediascanError] = {}
        node = self._nodes[self._current]
        while True:
            call = node.stub.WatchJob(
                scan_pb2.WatchJobRequest(job_id=job_id, after_sequence=last),
                metadata=self._metadata,
            )
            try:
                async for event in call:
                    failing_since = None
                    failures.clear()
                    backoff.reset()
                    if last and event.sequence <= last and not _is_resync(event):
                        continue  # already yielded (a server replaying too much)
                    last = event.sequence
                    yield event
                return
            except grpc.aio.AioRpcError as rpc_error:
                error = node.error(rpc_error)
                if not _resumable(rpc_error):
                    raise error from rpc_error
                failures.pop(node.target, None)
                now = loop.time()
                if failing_since is None:
                    failing_since = now
                elif now - failing_since >= reconnect_timeout:
                    error.earlier = tuple(failures.values())
                    raise error from rpc_error
                failures[node.target] = error
                node = self._next(node)
                delay = backoff.delay()
                await asyncio.sleep(min(delay, failing_since + reconnect_timeout - now))
            finally:
                call.cancel()

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
            backoff = _Backoff()
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
