"""What both stores share about libraries and their change feeds: which library holds a path,
which `Video` fields a rewrite changed, the stored form of a change, and the `LibraryCatalog`
protocol.

A library's changes are written by the same transaction as the rows they describe (the video
writes of `LibraryStore` record them), each with the library's next sequence: a change is never
reported that did not happen, and never missing for one that did."""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, runtime_checkable

from mediascan.v1 import scan_pb2

from .protocol import MovedVideo

#: The Video fields a change never names: they change with every probe, or name the video.
_QUIET_FIELDS = frozenset({"video_id", "path", "probe_time", "job_id", "prober_version"})


class LibraryExists(Exception):
    """CreateLibrary: a library of that id exists."""


class RootsOverlap(Exception):
    """CreateLibrary: the root is, holds or lies below another library's root."""

    def __init__(self, library_id: str, root: str) -> None:
        super().__init__(library_id, root)
        self.library_id = library_id
        self.root = root


@dataclasses.dataclass(frozen=True, slots=True)
class LibraryRoots:
    """The libraries' roots, sorted: `library_of(path)` names the library whose root holds
    `path` (roots never overlap, so there is at most one)."""

    roots: tuple[str, ...] = ()
    ids: tuple[str, ...] = ()

    @classmethod
    def of(cls, rows: Iterable[tuple[str, str]]) -> LibraryRoots:
        """From (library id, root) rows."""
        pairs = sorted((root, library_id) for library_id, root in rows)
        return cls(tuple(r for r, _ in pairs), tuple(i for _, i in pairs))

    def __bool__(self) -> bool:
        return bool(self.roots)

    def library_of(self, path: str) -> str | None:
        at = bisect.bisect_right(self.roots, path) - 1
        if at < 0:
            return None
        root = self.roots[at]
        if path == root or path.startswith(root.rstrip("/") + "/"):
            return self.ids[at]
        return None

    def overlapping(self, root: str) -> tuple[str, str] | None:
        """The (id, root) of a library whose root is `root`, holds it, or lies below it."""
        for other, library_id in zip(self.roots, self.ids, strict=True):
            if _within(root, other) or _within(other, root):
                return library_id, other
        return None


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def within_roots(root: str, roots: Sequence[str]) -> bool:
    """True when `root` is or lies below one of `roots` (any root when there are none): a
    library a server with these allowed roots may take (`LibraryCatalog.lease_libraries`)."""
    return not roots or any(_within(root, folder.rstrip("/") or "/") for folder in roots)


#: The Video fields a change may name, by their place in the declaration order.
_NAMED_FIELDS = {
    name: at
    for at, name in enumerate(field.name for field in scan_pb2.Video.DESCRIPTOR.fields)
    if name not in _QUIET_FIELDS
}
_UNSET = object()


def changed_fields(old: scan_pb2.Video, new: scan_pb2.Video) -> list[str]:
    """The top-level Video fields whose values differ, by name, in their declaration order
    (those that change with every probe, `probe_time` and the like, are not named). Only the
    fields set in either are compared (`ListFields`: a sixth of the time of reading all)."""
    before = {field.name: value for field, value in old.ListFields()}
    after = {field.name: value for field, value in new.ListFields()}
    changed = []
    for name in before.keys() | after.keys():
        if name not in _NAMED_FIELDS:
            continue
        was, now = before.get(name, _UNSET), after.get(name, _UNSET)
        if was is _UNSET or now is _UNSET:  # set in one only: compared as read
            was, now = getattr(old, name), getattr(new, name)
        if was != now:
            changed.append(name)
    return sorted(changed, key=_NAMED_FIELDS.__getitem__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class StoredChange:
    """A change as stored: the library's sequence, its kind, the video's id (0: none) and
    paths, the changed fields, the job, when, and for STATUS the serialized LibraryStatus."""

    sequence: int
    kind: int
    video_id: int = 0
    path: str = ""
    old_path: str = ""
    fields: str = ""  #: comma-separated Video field names
    job_id: str = ""
    time_ns: int = 0
    status: bytes = b""

    def message(self, uid: str) -> scan_pb2.LibraryChange:
        change = scan_pb2.LibraryChange(
            sequence=self.sequence,
            kind=self.kind,  # type: ignore[arg-type]
            path=self.path,
            old_path=self.old_path,
            job_id=self.job_id,
            library_uid=uid,
        )
        if self.video_id:
            change.video_id = f"v_{self.video_id}"
        if self.fields:
            change.changed_fields.extend(self.fields.split(","))
        if self.status:
            change.status.ParseFromString(self.status)
        change.time.FromNanoseconds(self.time_ns)
        return change


@dataclasses.dataclass(frozen=True, kw_only=True)
class ChangePage:
    """What `LibraryCatalog.changes_after` read at one moment: the library's uid, the first
    sequence it still keeps, its last sequence, and the changes after the one asked for (each
    with the video as stored now, when it still has the change's path)."""

    uid: str
    first_kept: int
    last_sequence: int
    changes: list[scan_pb2.LibraryChange]


def attach(
    stored: StoredChange, uid: str, videos: dict[int, scan_pb2.Video]
) -> scan_pb2.LibraryChange:
    """The change as sent, with its video as stored now when it still has the change's path
    (an id whose video was removed, moved or replaced since carries none)."""
    change = stored.message(uid)
    video = videos.get(stored.video_id)
    if (
        video is not None
        and stored.kind != scan_pb2.CHANGE_KIND_REMOVED
        and video.path == stored.path
    ):
        change.video.CopyFrom(video)
    return change


#: A library's stored form: (id, root, uid, serialized Library, video count, total size,
#: last sequence, first kept sequence).
LibraryRow = tuple[str, str, str, bytes, int, int, int, int]


def library_of_row(row: LibraryRow) -> scan_pb2.Library:
    """The Library message of a stored row: its stored body with the counts and the sequence."""
    library_id, root, uid, body, count, size, last, _first = row
    library = scan_pb2.Library.FromString(bytes(body))
    library.name = f"libraries/{library_id}"
    library.root = root
    library.uid = uid
    library.status.video_count = count
    library.status.total_size_bytes = size
    library.status.last_sequence = last
    return library


def stored_body(library: scan_pb2.Library) -> bytes:
    """What a library row keeps in its body: the message without what has columns."""
    body = scan_pb2.Library()
    body.CopyFrom(library)
    body.ClearField("name")
    body.ClearField("root")
    body.ClearField("uid")
    for name in ("video_count", "total_size_bytes", "last_sequence", "node"):
        body.status.ClearField(name)
    return body.SerializeToString(deterministic=True)


#: Changes a stored library in place (`LibraryCatalog.update_library`); True when it changed
#: the library's status (a STATUS change is recorded).
StatusChange = Callable[[scan_pb2.Library], bool]


@runtime_checkable
class LibraryCatalog(Protocol):
    """The libraries and their change feeds (both stores)."""

    async def create_library(self, library_id: str, library: scan_pb2.Library) -> scan_pb2.Library:
        """Store a new library (LibraryExists, RootsOverlap), counting the videos already below
        its root, in one transaction."""
        ...

    async def get_library(self, library_id: str) -> scan_pb2.Library | None: ...

    async def list_libraries(self, *, after: str, limit: int) -> list[scan_pb2.Library]: ...

    async def update_library(
        self, library_id: str, change: StatusChange
    ) -> scan_pb2.Library | None:
        """Apply `change` to the stored library in one transaction (None: no such library).
        When `change` returns True the status changed, and a STATUS change is recorded."""
        ...

    async def delete_library(self, library_id: str, *, drop_videos: bool) -> bool: ...

    async def changes_after(
        self, library_id: str, after_sequence: int, limit: int
    ) -> ChangePage | None:
        """At most `limit` changes after `after_sequence`, in order (None: no such library)."""
        ...

    async def library_roots(self) -> LibraryRoots: ...

    async def lease_libraries(
        self, *, node: str, lease_s: float, roots: Sequence[str], limit: int
    ) -> list[str]:
        """In one transaction: renew the leases `node` holds, and take the libraries that are
        free or whose lease lapsed and whose root is or lies below one of `roots` (any when
        empty), holding at most `limit` in all (those it held past that, or outside `roots`,
        are let go); the ids `node` holds now, sorted. A lease lasts `lease_s` seconds, and
        `Library.status.node` names its holder while it does. A store only this server
        writes holds every library (within `roots` and `limit`) and names no holder."""
        ...

    async def release_libraries(self, *, node: str, library_ids: Sequence[str]) -> None:
        """Let go of these libraries, if `node` holds them (another node may take them at
        once)."""
        ...

    def add_library_listener(self, listener: Callable[[str, int], None]) -> None:
        """Call `listener(library_id, last_sequence)` (on the event loop) after changes of a
        library were committed, by this server or (a shared store) another."""
        ...


class Recorder(Protocol):
    """What a store's write transaction records its libraries' changes with (`ChangeLog`)."""

    def library_of(self, path: str) -> str | None: ...

    def record(
        self,
        library_id: str,
        kind: int,
        *,
        video_id: int = 0,
        path: str = "",
        old_path: str = "",
        fields: str = "",
        job_id: str = "",
        status: bytes = b"",
        count: int = 0,
        size: int = 0,
    ) -> None: ...


def record_move(log: Recorder, move: MovedVideo, video_id: int, job_id: str) -> None:
    """A video moved within a library is MOVED; one moved from one library to another (or
    into or out of any) is REMOVED from the first and ADDED to the second."""
    before, after = log.library_of(move.old_path), log.library_of(move.new_path)
    if before is not None and before == after:
        log.record(
            before,
            scan_pb2.CHANGE_KIND_MOVED,
            video_id=video_id,
            path=move.new_path,
            old_path=move.old_path,
            job_id=job_id,
        )
        return
    if before is not None:
        log.record(
            before,
            scan_pb2.CHANGE_KIND_REMOVED,
            video_id=video_id,
            path=move.old_path,
            job_id=job_id,
            count=-1,
            size=-move.size_bytes,
        )
    if after is not None:
        log.record(
            after,
            scan_pb2.CHANGE_KIND_ADDED,
            video_id=video_id,
            path=move.new_path,
            job_id=job_id,
            count=1,
            size=move.size_bytes,
        )
