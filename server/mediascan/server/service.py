"""The ScanService servicer: validates requests, calls the queue and the store, and is the one
place where domain errors become gRPC statuses."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc
from google.protobuf import empty_pb2

from mediascan.v1 import scan_pb2, scan_pb2_grpc

from .config import Config
from .duplicates import Duplicates
from .engine import MAX_PAGE_BYTES, AsyncJobQueue
from .engine.tokens import decode_videos_token, encode_videos_token
from .errors import (
    InvalidArgument,
    MediascanError,
    NotFound,
    Unimplemented,
)
from .grpc_types import Context
from .jobs import JobState, ScanSpec, request_fingerprint
from .lane import BlockingLane
from .libraries.follow import LibraryFollowers
from .libraries.rpc import LibraryRpc, library_prefix
from .libraries.settings import seconds
from .logs import limited
from .roots import AllowedRoots, check_path_text, resolve_folder, shown
from .status import abort, abort_internal
from .store import LibraryStore
from .store.changes import LibraryCatalog
from .verify import Verifier
from .video_filters import (
    duration_seconds,
    filter_key,
    order_text,
    page_end,
    video_query,
)

log = logging.getLogger(__name__)
#: Calls that fail with INTERNAL are logged (with the traceback) at most LOG_BURST a window.
_FAILURES = limited(log, "failed calls")

Req = TypeVar("Req")
Resp = TypeVar("Resp")

MAX_ID = 128
PRIORITY_RANGE = (-100, 100)
JOBS_PAGE = (50, 1000)  # default, maximum
FILE_ERRORS_PAGE = (100, 1000)
VIDEOS_PAGE = (100, 1000)
#: Seconds a submit waits for the file system to resolve its folder before UNAVAILABLE.
PATH_TIMEOUT = 10.0


def _unary(
    method: Callable[[Any, Req, Context], Awaitable[Resp]],
) -> Callable[[Any, Req, Context], Awaitable[Resp]]:
    @functools.wraps(method)
    async def handler(self: Any, request: Req, context: Context) -> Resp:
        try:
            return await method(self, request, context)
        except MediascanError as exc:
            await abort(context, exc)
        except grpc.aio.AbortError:
            raise
        except Exception:
            _FAILURES.log(logging.ERROR, "%s failed", method.__name__, exc_info=True)
            await abort_internal(context)
        raise AssertionError("unreachable: abort() raises")

    return handler


class ScanService(scan_pb2_grpc.ScanServiceServicer):  # type: ignore[misc]
    """mediascan.v1.ScanService over a job queue and the library store."""

    def __init__(
        self,
        queue: AsyncJobQueue,
        store: LibraryStore,
        config: Config,
        roots: Sequence[str],
        *,
        verifier: Verifier | None = None,
    ) -> None:
        self._queue = queue
        self._store = store
        self._duplicates = Duplicates(store, verifier, AllowedRoots(roots))
        self._config = config
        self._roots = tuple(roots)
        #: Resolving a submitted folder touches the disk: never on the loop.
        self._lane = BlockingLane("path", timeout=PATH_TIMEOUT)
        self._followers: LibraryFollowers | None = None
        #: The library RPCs, on a store that keeps libraries.
        self.libraries: LibraryRpc | None = None
        if isinstance(store, LibraryCatalog):
            self._followers = LibraryFollowers(store)
            self.libraries = LibraryRpc(store, self._resolve, self._followers)

    async def _resolve(self, path: str) -> str:
        return await self._lane.call(resolve_folder, path, self._roots)

    def end_streams(self) -> None:
        """End the WatchLibrary streams (with UNAVAILABLE: resume on another server)."""
        if self._followers is not None:
            self._followers.close()

    def close(self) -> None:
        """Let the path lane's thread end (once the calls it holds return): the server stops."""
        self.end_streams()
        self._lane.close()

    def _library_rpc(self) -> LibraryRpc:
        if self.libraries is None:
            raise Unimplemented("this server's store keeps no libraries")
        return self.libraries

    # -- jobs ---------------------------------------------------------------------------------

    @_unary
    async def SubmitScan(
        self, request: scan_pb2.SubmitScanRequest, context: Context
    ) -> scan_pb2.SubmitScanResponse:
        spec = await self._validate_submit(request)
        outcome = await self._queue.submit(spec)
        return scan_pb2.SubmitScanResponse(
            job_id=outcome.job.job_id, job=outcome.job, deduplicated=outcome.deduplicated
        )

    @_unary
    async def GetJob(self, request: scan_pb2.GetJobRequest, context: Context) -> scan_pb2.Job:
        return await self._queue.get(_job_id(request.job_id))

    async def WatchJob(
        self, request: scan_pb2.WatchJobRequest, context: Context
    ) -> AsyncIterator[scan_pb2.JobEvent]:
        try:
            job_id = _job_id(request.job_id)
            if request.after_sequence < 0:
                raise InvalidArgument(
                    "after_sequence",
                    "must not be negative: use 0 to start with a snapshot, or the sequence "
                    "of the last event received to resume",
                )
            async for event in self._queue.watch(job_id, request.after_sequence):
                yield event
        except MediascanError as exc:
            await abort(context, exc)
        except grpc.aio.AbortError:
            raise
        except Exception:
            _FAILURES.log(logging.ERROR, "WatchJob failed", exc_info=True)
            await abort_internal(context)

    @_unary
    async def CancelJob(self, request: scan_pb2.CancelJobRequest, context: Context) -> scan_pb2.Job:
        return await self._queue.cancel(_job_id(request.job_id))

    @_unary
    async def ListJobs(
        self, request: scan_pb2.ListJobsRequest, context: Context
    ) -> scan_pb2.ListJobsResponse:
        if request.state not in (0, *JobState):
            raise InvalidArgument(
                "state",
                f"unknown state {request.state}: use one of "
                + ", ".join(f"JOB_STATE_{s.name}" for s in JobState)
                + ", or leave it unset for all",
            )
        page_size = _page_size(request.page_size, JOBS_PAGE)
        jobs, token = await self._queue.list_jobs(
            state=request.state, page_size=page_size, page_token=request.page_token
        )
        return scan_pb2.ListJobsResponse(jobs=jobs, next_page_token=token)

    @_unary
    async def ListFileErrors(
        self, request: scan_pb2.ListFileErrorsRequest, context: Context
    ) -> scan_pb2.ListFileErrorsResponse:
        job_id = _job_id(request.job_id)
        page_size = _page_size(request.page_size, FILE_ERRORS_PAGE)
        errors, token = await self._queue.list_file_errors(
            job_id, page_size=page_size, page_token=request.page_token
        )
        return scan_pb2.ListFileErrorsResponse(file_errors=errors, next_page_token=token)

    @_unary
    async def DeleteJob(
        self, request: scan_pb2.DeleteJobRequest, context: Context
    ) -> empty_pb2.Empty:
        await self._queue.delete(_job_id(request.job_id))
        return empty_pb2.Empty()

    # -- the library --------------------------------------------------------------------------

    @_unary
    async def ListVideos(
        self, request: scan_pb2.ListVideosRequest, context: Context
    ) -> scan_pb2.ListVideosResponse:
        prefix = request.path_prefix
        if prefix:
            check_path_text("path_prefix", prefix)
            prefix = os.path.normpath(prefix)
        sequence = 0
        if request.library:
            library = await self._library_rpc().get(request.library, "library")
            prefix = library_prefix(library, prefix)
            sequence = library.status.last_sequence
        query = video_query(request, prefix)
        page_size = _page_size(request.page_size, VIDEOS_PAGE)
        filters, order = filter_key(query), order_text(query)
        after = decode_videos_token(request.page_token, filters, order)
        videos = await self._store.list_videos(
            dataclasses.replace(query, after=after, limit=page_size + 1)
        )
        more = len(videos) > page_size
        page: list[scan_pb2.Video] = []
        size = 0
        for video in videos[:page_size]:
            # A Video is bounded (its lists and texts are capped), but a page of the most
            # detailed ones would not fit a default client: cut it at MAX_PAGE_BYTES.
            size += video.ByteSize() + 8
            if page and size > MAX_PAGE_BYTES:
                more = True
                break
            page.append(video)
        token = ""
        if more and page:
            token = encode_videos_token(page_end(page[-1], query.order), filters, order)
        return scan_pb2.ListVideosResponse(
            videos=page, next_page_token=token, library_sequence=sequence
        )

    @_unary
    async def ListDuplicates(
        self, request: scan_pb2.ListDuplicatesRequest, context: Context
    ) -> scan_pb2.ListDuplicatesResponse:
        prefix = request.path_prefix
        if prefix:
            check_path_text("path_prefix", prefix)
            prefix = os.path.normpath(prefix)
        return await self._duplicates.list(request, prefix)

    @_unary
    async def GetVideo(self, request: scan_pb2.GetVideoRequest, context: Context) -> scan_pb2.Video:
        if bool(request.video_id) == bool(request.path):
            raise InvalidArgument("video_id", "set exactly one of video_id and path")
        if request.video_id:
            number = request.video_id.removeprefix("v_")
            if not (number.isascii() and number.isdigit()) or len(number) > 18:
                raise InvalidArgument(
                    "video_id",
                    f"{shown(request.video_id)!r} is not a video id (they look like v_123)",
                )
            video = await self._store.get_video(video_id=int(number), path=None)
            missing = f'video "{shown(request.video_id)}" is not in the library'
        else:
            check_path_text("path", request.path)
            video = await self._store.get_video(video_id=None, path=os.path.normpath(request.path))
            missing = f"{shown(request.path)} is not in the library (scan its folder first)"
        if video is None:
            raise NotFound(missing)
        return video

    # -- libraries --------------------------------------------------------------------------

    @_unary
    async def CreateLibrary(
        self, request: scan_pb2.CreateLibraryRequest, context: Context
    ) -> scan_pb2.Library:
        return await self._library_rpc().create(request)

    @_unary
    async def GetLibrary(
        self, request: scan_pb2.GetLibraryRequest, context: Context
    ) -> scan_pb2.Library:
        return await self._library_rpc().get(request.name)

    @_unary
    async def ListLibraries(
        self, request: scan_pb2.ListLibrariesRequest, context: Context
    ) -> scan_pb2.ListLibrariesResponse:
        return await self._library_rpc().list(request)

    @_unary
    async def UpdateLibrary(
        self, request: scan_pb2.UpdateLibraryRequest, context: Context
    ) -> scan_pb2.Library:
        return await self._library_rpc().update(request)

    @_unary
    async def DeleteLibrary(
        self, request: scan_pb2.DeleteLibraryRequest, context: Context
    ) -> empty_pb2.Empty:
        await self._library_rpc().delete(request)
        return empty_pb2.Empty()

    async def WatchLibrary(
        self, request: scan_pb2.WatchLibraryRequest, context: Context
    ) -> AsyncIterator[scan_pb2.LibraryChange]:
        try:
            async for change in self._library_rpc().watch(request):
                yield change
        except MediascanError as exc:
            await abort(context, exc)
        except grpc.aio.AbortError:
            raise
        except Exception:
            _FAILURES.log(logging.ERROR, "WatchLibrary failed", exc_info=True)
            await abort_internal(context)

    # -- validation -------------------------------------------------------------------------

    async def _validate_submit(self, request: scan_pb2.SubmitScanRequest) -> ScanSpec:
        check_path_text("path", request.path)
        if len(request.request_id) > MAX_ID:
            raise InvalidArgument("request_id", f"longer than {MAX_ID} characters")
        low, high = PRIORITY_RANGE
        if not low <= request.priority <= high:
            raise InvalidArgument(
                "priority", f"{request.priority} is out of range: use {low} to {high}"
            )
        timeout = self._timeout(request)
        if request.verify not in scan_pb2.Verify.values():
            raise InvalidArgument(
                "verify",
                f"unknown value {request.verify}: use VERIFY_NONE (the default) or VERIFY_DECODE",
            )
        path = await self._lane.call(resolve_folder, request.path, self._roots)
        library = None if self.libraries is None else await self.libraries.holding(path)
        return ScanSpec(
            library=library.name if library is not None else "",
            quiet=seconds(library, "quiet_window") if library is not None else 0.0,
            extensions=library.extensions if library is not None else "",
            force=request.force,
            path=path,
            recursive=request.recursive if request.HasField("recursive") else True,
            follow_symlinks=request.follow_symlinks,
            timeout=timeout,
            priority=request.priority,
            full=request.full,
            verify=request.verify or scan_pb2.VERIFY_NONE,
            request_id=request.request_id,
            fingerprint=request_fingerprint(request) if request.request_id else "",
        )

    def _timeout(self, request: scan_pb2.SubmitScanRequest) -> float:
        if not request.HasField("timeout"):
            return self._config.effective_default_timeout
        seconds = duration_seconds("timeout", request.timeout)
        if seconds < 0:
            raise InvalidArgument(
                "timeout",
                'must not be negative: give a duration such as "300s", or leave '
                "it unset for the server default",
            )
        if seconds == 0:
            return self._config.effective_default_timeout
        return min(seconds, self._config.max_timeout)


def _job_id(job_id: str) -> str:
    if not job_id:
        raise InvalidArgument("job_id", "required: the id SubmitScan returned, e.g. j_01J...")
    if len(job_id) > MAX_ID:
        raise InvalidArgument("job_id", f"longer than {MAX_ID} characters: not a job id")
    return job_id


def _page_size(requested: int, limits: tuple[int, int]) -> int:
    default, maximum = limits
    if requested < 0:
        raise InvalidArgument("page_size", "must not be negative (0 means the default)")
    return min(requested or default, maximum)
