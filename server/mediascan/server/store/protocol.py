"""What the engine and the scanner need from storage, in types: the `JobStore` and
`LibraryStore` protocols, the values that cross them, and the storage errors.

SQLite (`store/sqlite/`) is the first implementation. A shared backend (PostgreSQL: claims with
`FOR UPDATE SKIP LOCKED`, wake-ups from `LISTEN`) implements the same protocols, and the engine
does not change: claiming the next job is an operation of the store, run in the database, not a
heap in the process.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from typing import Protocol, TypeVar, runtime_checkable

from mediascan.v1 import scan_pb2

from ..errors import Unavailable
from ..jobs import ScanSpec
from ..probed import ProbeResult

T = TypeVar("T")


class StorageError(Unavailable):
    """The database failed (locked, disk full, file gone). Expected under faults: UNAVAILABLE."""


class DatabaseLost(StorageError):
    """The database file was removed or replaced while the server ran: nothing can be stored
    any more (SQLite would write to the unlinked file). Fatal for the server."""


class DatabaseTimeout(StorageError):
    """The database did not answer within the server's limit (`--db-timeout`): a hung disk or
    file system, or a lock held elsewhere. What was asked may still happen."""


class LeaseLost(Exception):
    """A shared store refused a write for a job because the attempt it was made for is no
    longer the job's current one: the job's lease expired and another server reclaimed it
    (fencing). Nothing was written; the engine stops the job on this server quietly."""


class QueueFull(Exception):
    """A shared store counted `--max-queued` jobs QUEUED in the database: the insert was
    refused (the engine answers RESOURCE_EXHAUSTED with its retry delay)."""

    def __init__(self, max_queued: int) -> None:
        super().__init__(max_queued)
        self.max_queued = max_queued


class SchemaTooNew(RuntimeError):
    """The database was written by a newer mediascan; refuse to touch it."""


class RequestIdReused(Exception):
    """An insert's request_id names an existing job made by a different request (AIP-155)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id


@dataclasses.dataclass(frozen=True, kw_only=True)
class InsertOutcome:
    job: scan_pb2.Job
    created: bool  #: False: the request_id named an existing job, which is returned
    #: True when an identical active job (same dedup key) was returned instead: a shared
    #: store finds those that other servers queued.
    deduplicated: bool = False


#: A job's file errors to store: (seq from 0 in the order met, the error).
FileErrorRows = Sequence[tuple[int, scan_pb2.FileError]]

#: A change the store applies to a job's stored row inside its own transaction (a claim, a
#: re-queue at recovery): it changes the `Job` it is given in place and returns the events
#: that record the change, their sequences assigned. It runs wherever the store runs its
#: transactions (SQLite: the writer thread), so it touches nothing but the job.
JobChange = Callable[[scan_pb2.Job], list[scan_pb2.JobEvent]]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ChangedJob:
    """A job as a store operation left it, with the events it stored for the change."""

    job: scan_pb2.Job
    events: list[scan_pb2.JobEvent]
    #: The state the job had before the change.
    previous_state: int
    #: A claim of a shared store: CancelJob asked (on some server) to stop this job while it
    #: ran before (it was re-queued since); the new run stops it at once.
    cancel_requested: bool = False


@dataclasses.dataclass(frozen=True, kw_only=True)
class CancelOutcome:
    """What `JobFeed.request_cancel` did to a job."""

    #: The job as stored after the call.
    job: scan_pb2.Job
    #: The events stored when the call itself cancelled a QUEUED job (with `previous_state`).
    events: list[scan_pb2.JobEvent] = dataclasses.field(default_factory=list)
    previous_state: int = 0
    #: True: the job is RUNNING on a server, which was asked to stop it (`cancel_requested`).
    requested: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Fence:
    """The attempt of a job that a library write is made for. A shared store writes only while
    it is the job's current attempt and the job is RUNNING (LeaseLost otherwise: a reclaim
    moved the job on, or it ended); a store only this server writes has nothing to fence."""

    job_id: str
    attempt: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class VideoRow(ProbeResult):
    """One probed video, as written to the library: the file, and what its probe found."""

    path: str
    size_bytes: int
    mtime_ns: int
    probe_ns: int
    job_id: str
    #: st_dev of the file system the file lives on (PostgreSQL: a key of its mount, `fskeys.py`)
    dev: int
    #: the `Health` of the last DECODE verification (0: never verified, or changed since)
    health: int = 0
    health_errors: int = 0  #: decoding errors counted
    health_messages: str = ""  #: the first error messages, a JSON list of strings
    health_first_error_ns: int = -1  #: media time of the first error (-1: none)
    verify_ns: int = 0  #: when the verification ran (0: never)


#: The columns of a row's verification, which a rewrite of the row keeps while the file's
#: content is the one verified (same size, time and fingerprint) and the new row has none.
HEALTH_FIELDS = ("health", "health_errors", "health_messages", "health_first_error_ns", "verify_ns")


#: The orders of ListVideos (`VideoQuery.order`): each a column, ties broken by id (the
#: order in which the videos entered the library).
VIDEO_ORDERS = {
    "path": "path",
    "duration": "duration_ns",
    "size_bytes": "size_bytes",
    "modify_time": "mtime_ns",
    "probe_time": "probe_ns",
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class VideoQuery:
    """A page of ListVideos: its filters (combined with AND; None or empty: no filter), its
    order, and where it starts (`after`: the previous page's last video, by its path in path
    order, else by its sort key and id; None for the first page)."""

    prefix: str = ""
    video_codec: str = ""
    container: str = ""
    audio_codec: str = ""
    min_duration_ns: int | None = None
    max_duration_ns: int | None = None
    min_width: int | None = None
    max_width: int | None = None
    min_height: int | None = None
    max_height: int | None = None
    rotation: int | None = None
    hdr: int = 0
    health: int = 0
    fingerprint: str = ""
    truncated: bool | None = None
    variable_frame_rate: bool | None = None
    order: str = "path"  #: a key of VIDEO_ORDERS
    descending: bool = False
    after: str | tuple[int, int] | None = None
    limit: int = 100


@dataclasses.dataclass(frozen=True, kw_only=True)
class HealthUpdate:
    """The verification of an unchanged video (the file at `path` with this size and time)."""

    path: str
    size_bytes: int
    mtime_ns: int
    health: int
    health_errors: int
    health_messages: str
    health_first_error_ns: int
    verify_ns: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class MovedVideo:
    """A video whose file is now at `new_path` (`moves.py`): its row, found at `old_path`
    with this size, time and fingerprint, takes the new path and device. `folder_dev` is the
    device of the old path's folder now, checked like a removal's (`remove_videos`)."""

    old_path: str
    new_path: str
    size_bytes: int
    mtime_ns: int
    fingerprint: str
    dev: int
    folder_dev: int

    def guarded(self, before_ns: int) -> tuple[str, int, str, int, int, str, int, int, str]:
        """The values of the stores' guarded UPDATE, in its order: the new path and device,
        then the old row's path, size, time, fingerprint, `before_ns`, folder device, and the
        new path again (which must not be taken)."""
        return (
            self.new_path,
            self.dev,
            self.old_path,
            self.size_bytes,
            self.mtime_ns,
            self.fingerprint,
            before_ns,
            self.folder_dev,
            self.new_path,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class LibraryIndex:
    """What the library holds below a scan's folder, as a scan compares its walk against it.

    `keys` has one key per video, `library_key(path, size_bytes, mtime_ns)`: a file whose key
    is there is unchanged since its last probe. A video an older prober read has the key
    `stale_key(path)` instead, which no file matches: a rescan probes it again. A scan takes
    out (of its copy) the keys it meets; what is left is the rows of files it did not meet, or
    met with another size or time.
    In memory, a video costs about 90 bytes plus its key's length (150 with 36-character paths),
    and 40 more in each copy."""

    #: The value is True when the row's health is known (a DECODE verification of this very
    #: content); a DECODE scan verifies the unchanged files whose value is False.
    keys: dict[str, bool]
    #: Paths of the videos stored without their device (dev 0, written by schema version 1).
    undated: set[str]

    def copy(self) -> LibraryIndex:
        return LibraryIndex(dict(self.keys), set(self.undated))


@dataclasses.dataclass(slots=True)
class LibraryListing:
    """The library's videos below a folder, at any depth, as GNU find lists files
    (`find_walk.py`), in UTF-8: the key of a video is `relative/path/size/seconds.nanoseconds0`,
    its path relative to the folder and its time as `find -printf %T@` writes it (nine digits
    of nanoseconds and a 0). A line of `find` that is one of these keys is an unchanged video.

    Videos that no line may match have a time no line has: `s` (read by an older prober, to
    probe again, or named with none of the scan's extensions, to remove), `u` and the
    nanoseconds (stored without a device), or the nanoseconds alone (a time before 1970); the
    walk compares those itself. `keys_bytes` is the sum of the sizes
    of all. A listing is read in parts (ranges of paths, `library_bounds`), several at once."""

    keys: list[bytes]
    keys_bytes: int


def library_key(path: str, size_bytes: int, mtime_ns: int) -> str:
    """`path/size/mtime`: the digits at the end never contain a '/', so this names one
    (path, size, mtime) only. The scanner builds the same string inline."""
    return f"{path}/{size_bytes}/{mtime_ns}"


def stale_key(path: str) -> str:
    """The key of a video read by an older prober (`probed.PROBER_VERSION`): no file has the
    size -1, so the walk sees the file as changed and probes it again."""
    return f"{path}/-1/-1"


def library_key_path(key: str) -> str:
    return key.rsplit("/", 2)[0]


@runtime_checkable
class JobStore(Protocol):
    """Jobs, their events, file errors and request ids: what the engine needs.

    Every write is committed before its awaitable resolves and happens even if the caller is
    cancelled (a sequence assigned is never lost). A state change is guarded by the state the
    caller expects, so a race can never revive a finished job."""

    def insert_job(self, job: scan_pb2.Job, spec: ScanSpec) -> asyncio.Future[InsertOutcome]:
        """Commit a new QUEUED job (its event 1 is not stored), unless its request_id names an
        existing job; fails with RequestIdReused when it names one made by another request. A
        shared store also returns an identical active job (`deduplicated`) and may refuse with
        QueueFull. A future, not a coroutine: a submit costs no task."""
        ...

    async def claim_next(self, start: JobChange) -> ChangedJob | None:
        """In one transaction: take the QUEUED job of the highest priority, oldest first, apply
        `start` to it (to RUNNING, its events' sequences assigned), store it, its events, and
        drop the file errors of its earlier attempt. None when no job is QUEUED."""
        ...

    async def record(
        self,
        job: scan_pb2.Job,
        events: Sequence[scan_pb2.JobEvent],
        *,
        expected_state: int | None = None,
        file_errors: FileErrorRows = (),
        clear_file_errors: bool = False,
    ) -> bool:
        """Save the job's row and append `events` (and file errors) in one transaction; with
        `expected_state`, only while the stored state is that one (False: another change won,
        nothing was written). A shared store also fences the write with the job's attempt
        (its attempt before a re-queue to QUEUED): LeaseLost when the stored attempt is
        another (a reclaim moved the job on)."""
        ...

    async def recover(self, requeue: JobChange) -> list[ChangedJob]:
        """At start: every job stored QUEUED or RUNNING, oldest first; the RUNNING ones (cut off
        by a crash or a shutdown) changed by `requeue` and stored, in one transaction."""
        ...

    async def trim_events(self, job_id: str, keep: int) -> None: ...

    async def find_request(self, request_id: str) -> tuple[scan_pb2.Job, str] | None: ...

    async def remember_request(self, request_id: str, fingerprint: str, job_id: str) -> None: ...

    async def get_job(self, job_id: str) -> scan_pb2.Job | None: ...

    async def job_state(self, job_id: str) -> tuple[int, int] | None: ...

    async def list_jobs(
        self, *, state: int, limit: int, after: tuple[int, str] | None
    ) -> list[scan_pb2.Job]: ...

    async def file_errors(
        self, job_id: str, *, after_seq: int, limit: int, max_bytes: int
    ) -> tuple[list[scan_pb2.FileError], int | None]: ...

    async def events_after(
        self, job_id: str, after_sequence: int, limit: int
    ) -> list[scan_pb2.JobEvent]: ...

    async def delete_job(self, job_id: str) -> bool: ...

    async def bounded(self, work: Awaitable[T]) -> T:
        """Wait for `work` at most the store's time limit (DatabaseTimeout); the work goes on."""
        ...

    def add_wakeup_listener(self, listener: Callable[[], None]) -> None:
        """Call `listener` (on the event loop) when jobs may have been queued by another
        server sharing the database (a shared backend's `LISTEN`). A store that only this
        process writes never calls it: the engine wakes itself after its own inserts."""
        ...


@runtime_checkable
class JobFeed(Protocol):
    """What a store shared by several servers tells each of them, and the two operations that
    only make sense there (a shared backend's `LISTEN`/`NOTIFY`; SQLite has none).

    Notifications are wake-ups, never the data: a listener reads what changed from the store.
    Listeners are called on the event loop and must not block."""

    def add_event_listener(self, listener: Callable[[str, int], None]) -> None:
        """Call `listener(job_id, sequence)` when events of a job up to `sequence` were
        committed, by this server or another (at most a few times a second per job)."""
        ...

    def add_cancel_listener(self, listener: Callable[[str], None]) -> None:
        """Call `listener(job_id)` when CancelJob asked, on any server, to stop a RUNNING job."""
        ...

    def add_resync_listener(self, listener: Callable[[], None]) -> None:
        """Call `listener()` after the notifications (re)start: some may have been missed, so
        whatever they would have said is to be read again from the tables."""
        ...

    def add_lease_lost_listener(self, listener: Callable[[], None]) -> None:
        """Call `listener()` when this server could not renew the leases of its running jobs
        for longer than the lease: other servers may run them now, so it must stop them."""
        ...

    def set_reclaim(self, change: JobChange, announce: Callable[[ChangedJob], None]) -> None:
        """How to change a RUNNING job whose lease expired (its server stopped renewing it),
        and what to call once that change is stored (on the server that made it)."""
        ...

    async def follow_job(
        self, job_id: str, after_sequence: int, limit: int
    ) -> tuple[scan_pb2.Job | None, list[scan_pb2.JobEvent]]:
        """The stored job and its stored events after `after_sequence` (at most the newest
        `limit`), read at one moment: the job's last_sequence is that of the last event."""
        ...

    async def request_cancel(self, job_id: str, cancel: JobChange) -> CancelOutcome | None:
        """In one transaction: a QUEUED job is changed by `cancel` (to CANCELLED) and stored;
        a RUNNING one is marked `cancel_requested` and its server notified; a finished one is
        returned unchanged. None when no job has that id."""
        ...

    async def cancels_requested(self) -> list[str]:
        """The jobs RUNNING on this server that CancelJob asked to stop (read again after the
        notifications were cut off)."""
        ...


@runtime_checkable
class LibraryStore(Protocol):
    """The video library: what the scanner and the service need."""

    async def library_index(self, folder: str, *, recursive: bool) -> LibraryIndex: ...

    async def library_count(self, folder: str, *, limit: int) -> int:
        """The library's videos below `folder`, at any depth, counted up to `limit`."""
        ...

    async def library_bounds(self, folder: str, *, every: int) -> list[str]:
        """The path of every `every`-th video below `folder`, at any depth, in path order: the
        bounds of the parts of its listing."""
        ...

    async def library_listing(
        self, folder: str, *, after: str, upto: str, extensions: Collection[str]
    ) -> LibraryListing:
        """The library's videos below `folder`, at any depth, as `find` lists files: those
        whose path follows `after` ("": from the first) up to `upto` ("": to the last). A video
        whose name has none of `extensions` (lower case, with the dot) gets a key no line
        matches."""
        ...

    async def set_devices(
        self, devices: Sequence[tuple[int, str]], *, fence: Fence | None = None
    ) -> None: ...

    async def upsert_videos(
        self, rows: Iterable[VideoRow], *, fence: Fence | None = None
    ) -> tuple[int, int]: ...

    async def remove_videos(
        self, gone: Sequence[tuple[str, int]], *, before_ns: int, fence: Fence | None = None
    ) -> int: ...

    async def video_rows(self, paths: Sequence[str]) -> dict[str, VideoRow]:
        """The stored rows of these paths (those the library holds)."""
        ...

    async def move_videos(
        self, moves: Sequence[MovedVideo], *, before_ns: int, fence: Fence | None = None
    ) -> list[bool]:
        """Give each row its new path, in one transaction, unless the row changed (another
        size, time or fingerprint, rewritten since `before_ns`, on another device than its
        folder) or the new path is taken; True for each row moved."""
        ...

    async def set_health(
        self, updates: Sequence[HealthUpdate], *, fence: Fence | None = None
    ) -> int:
        """Record the verification of unchanged videos (a row whose file changed meanwhile
        is left alone); returns how many rows took it."""
        ...

    async def list_videos(self, query: VideoQuery) -> list[scan_pb2.Video]:
        """At most `query.limit` videos that pass its filters, in its order, after its
        `after` (`videos.video_page_sql` writes the query for both stores)."""
        ...

    async def list_duplicates(
        self, *, prefix: str, after: str | None, limit: int, files_per_group: int
    ) -> list[scan_pb2.DuplicateGroup]:
        """Groups of at least two videos below `prefix` (all if empty) that share a non-empty
        fingerprint, by fingerprint after `after`: at most `limit` groups, each listing its
        first `files_per_group` files by path and counting all of them."""
        ...

    async def get_video(
        self, *, video_id: int | None, path: str | None
    ) -> scan_pb2.Video | None: ...
