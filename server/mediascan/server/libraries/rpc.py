"""`LibraryRpc`: the library methods of ScanService (CreateLibrary ... WatchLibrary):
validation, the catalog's answers, and the errors a client can act on."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable

from mediascan.v1 import scan_pb2

from ..engine.tokens import decode_libraries_token, encode_libraries_token
from ..errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from ..roots import check_path_text
from ..store.changes import LibraryCatalog, LibraryExists, LibraryRoots, RootsOverlap
from .follow import LibraryFollowers
from .settings import apply_update, check_id, id_of_name, mask_paths, settle

LIBRARIES_PAGE = (50, 1000)  # default, maximum
#: Seconds the roots read for a submit's library are used for others.
ROOTS_AGE = 1.0


def library_not_found(library_id: str) -> NotFound:
    return NotFound(
        f'library "{library_id}" does not exist: ListLibraries shows those that do',
        field="name",
        reason="LIBRARY_NOT_FOUND",
    )


class LibraryRpc:
    """The library RPCs over a catalog. `resolve` resolves a root like a scan's folder (the
    allowed roots, a readable folder); `changed(library_id)` is told of every library created,
    updated or deleted here (the server's keepers follow it)."""

    def __init__(
        self,
        catalog: LibraryCatalog,
        resolve: Callable[[str], Awaitable[str]],
        followers: LibraryFollowers,
    ) -> None:
        self._catalog = catalog
        self._resolve = resolve
        self._followers = followers
        self._observers: list[Callable[[str], None]] = []
        #: The libraries' roots as last read, and when (`holding`).
        self._roots: tuple[float, LibraryRoots] | None = None

    def observe(self, observer: Callable[[str], None]) -> None:
        self._observers.append(observer)

    async def holding(self, path: str) -> scan_pb2.Library | None:
        """The library whose root holds `path` (roots read at most ROOTS_AGE seconds ago,
        or since this server last changed a library)."""
        now = time.monotonic()
        if self._roots is None or now - self._roots[0] > ROOTS_AGE:
            self._roots = (now, await self._catalog.library_roots())
        library_id = self._roots[1].library_of(path)
        if library_id is None:
            return None
        return await self._catalog.get_library(library_id)

    def _changed(self, library_id: str) -> None:
        self._roots = None
        for observer in self._observers:
            observer(library_id)

    async def create(self, request: scan_pb2.CreateLibraryRequest) -> scan_pb2.Library:
        library_id = check_id(request.library_id)
        library = scan_pb2.Library()
        library.CopyFrom(request.library)
        check_path_text("library.root", library.root)
        for output_only in ("name", "status", "uid", "create_time"):
            library.ClearField(output_only)
        library.root = await self._resolve(library.root)
        settle(library)
        library.create_time.GetCurrentTime()
        library.status.state = scan_pb2.LIBRARY_STATE_ACTIVE
        if library.watch_mode == scan_pb2.WATCH_MODE_OFF:  # else set once watching began
            library.status.watching = scan_pb2.WATCH_MODE_OFF
        library.status.since.CopyFrom(library.create_time)
        try:
            created = await self._catalog.create_library(library_id, library)
        except LibraryExists:
            raise AlreadyExists(
                f'library "{library_id}" exists already: choose another library_id, or change '
                "it with UpdateLibrary",
                field="library_id",
                reason="LIBRARY_EXISTS",
            ) from None
        except RootsOverlap as overlap:
            raise FailedPrecondition(
                f"library.root {library.root} overlaps the root of library "
                f'"{overlap.library_id}" ({overlap.root}): library roots may not hold one '
                "another; choose a root beside it, or delete that library first",
                field="library.root",
                reason="LIBRARY_ROOTS_OVERLAP",
            ) from None
        self._changed(library_id)
        return created

    async def get(self, name: str, field: str = "name") -> scan_pb2.Library:
        library_id = id_of_name(name, field)
        library = await self._catalog.get_library(library_id)
        if library is None:
            raise library_not_found(library_id)
        return library

    async def list(self, request: scan_pb2.ListLibrariesRequest) -> scan_pb2.ListLibrariesResponse:
        default, maximum = LIBRARIES_PAGE
        if request.page_size < 0:
            raise InvalidArgument("page_size", "must not be negative (0 means the default)")
        size = min(request.page_size or default, maximum)
        after = decode_libraries_token(request.page_token)
        found = await self._catalog.list_libraries(after=after, limit=size + 1)
        token = ""
        if len(found) > size:
            token = encode_libraries_token(found[size - 1].name.removeprefix("libraries/"))
        return scan_pb2.ListLibrariesResponse(libraries=found[:size], next_page_token=token)

    async def update(self, request: scan_pb2.UpdateLibraryRequest) -> scan_pb2.Library:
        paths = mask_paths(request.update_mask)
        given = request.library
        stored = await self.get(given.name, "library.name")
        if given.root and given.root != stored.root:
            raise InvalidArgument(
                "library.root",
                "a library's root cannot change: create another library for another root",
            )
        trial = scan_pb2.Library()
        trial.CopyFrom(stored)
        apply_update(trial, given, paths)  # raises on a bad value, before anything is stored

        def change(library: scan_pb2.Library) -> bool:
            apply_update(library, given, paths)
            return False

        library_id = stored.name.removeprefix("libraries/")
        updated = await self._catalog.update_library(library_id, change)
        if updated is None:
            raise library_not_found(library_id)
        self._changed(library_id)
        return updated

    async def delete(self, request: scan_pb2.DeleteLibraryRequest) -> None:
        library_id = id_of_name(request.name)
        if not await self._catalog.delete_library(library_id, drop_videos=request.drop_videos):
            raise library_not_found(library_id)
        self._changed(library_id)

    def watch(self, request: scan_pb2.WatchLibraryRequest) -> AsyncIterator[scan_pb2.LibraryChange]:
        library_id = id_of_name(request.name)
        if request.after_sequence < 0:
            raise InvalidArgument(
                "after_sequence",
                "must not be negative: use 0 to start with a RESYNC, or the sequence of the "
                "last change received to resume",
            )
        return self._followers.follow(library_id, request.after_sequence, request.library_uid)


def library_prefix(library: scan_pb2.Library, prefix: str) -> str:
    """ListVideos' path prefix for `library`: its root, or `prefix` when that lies within it."""
    root = library.root
    if not prefix or prefix == root:
        return root
    if prefix.startswith(root.rstrip("/") + "/"):
        return prefix
    raise InvalidArgument(
        "path_prefix",
        f"{prefix} is not inside the root of {library.name} ({root}): leave it empty for the "
        "whole library, or give a folder below the root",
    )
