"""`LibraryMethods`: the library RPCs of `ScanClient` (CreateLibrary ... DeleteLibrary), and
`follow_library`, the change feed of a library (WatchLibrary) that resumes by itself."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from typing import Unpack

from google.protobuf import field_mask_pb2

from mediascan.client import messages
from mediascan.client.connection import Backoff, Connection
from mediascan.client.messages import LibrarySettings
from mediascan.v1 import scan_pb2


class LibraryMethods:
    """The library methods of `ScanClient`, over its connection.

    A library is named "libraries/ID" or by its bare ID ("films"). Its settings are keyword
    arguments named as the `Library` fields (`LibrarySettings`); durations are seconds or a
    timedelta."""

    _connection: Connection

    async def create_library(
        self, library_id: str, root: str, **settings: Unpack[LibrarySettings]
    ) -> scan_pb2.Library:
        """Create the library `library_id` (e.g. "films") of the folder `root` (absolute, on
        the server's file system); settings not given take the server's defaults.

        Not repeated on another server when the first could be reached (a repeat of a creation
        that happened would answer ALREADY_EXISTS)."""
        library, _ = messages.library(settings, root=root)
        request = scan_pb2.CreateLibraryRequest(library_id=library_id, library=library)
        return await self._connection.call(
            lambda stub: stub.CreateLibrary, request, retry_safe=False
        )

    async def get_library(self, name: str) -> scan_pb2.Library:
        """One library with its status."""
        request = scan_pb2.GetLibraryRequest(name=name)
        return await self._connection.call(lambda stub: stub.GetLibrary, request)

    async def list_libraries(self, page_size: int = 0) -> AsyncGenerator[scan_pb2.Library, None]:
        """Every library, by id, page by page (`page_size` 0: the server's default)."""
        request = scan_pb2.ListLibrariesRequest(page_size=page_size)
        async for page in self._connection.pages(lambda stub: stub.ListLibraries, request):
            for library in page.libraries:
                yield library

    async def update_library(
        self, name: str, **settings: Unpack[LibrarySettings]
    ) -> scan_pb2.Library:
        """Change the settings given, and only those (they make the update's field mask);
        returns the library as it now is. `rescan_interval=0` removes the schedule; a 0 of
        another setting restores its default. Raises ValueError when no setting is given."""
        library, given = messages.library(settings, name=name)
        if not given:
            raise ValueError("update_library() needs at least one setting to change")
        request = scan_pb2.UpdateLibraryRequest(
            library=library, update_mask=field_mask_pb2.FieldMask(paths=given)
        )
        return await self._connection.call(lambda stub: stub.UpdateLibrary, request)

    async def delete_library(self, name: str, *, drop_videos: bool = False) -> None:
        """Delete a library and its change history. Its videos stay (as found by plain scans)
        unless `drop_videos`. Not repeated on another server when the first could be reached
        (a repeat of a deletion that happened would answer NOT_FOUND)."""
        request = scan_pb2.DeleteLibraryRequest(name=name, drop_videos=drop_videos)
        await self._connection.call(lambda stub: stub.DeleteLibrary, request, retry_safe=False)

    async def follow_library(
        self,
        name: str,
        *,
        after_sequence: int = 0,
        library_uid: str = "",
        reconnect_timeout: float | None = 60.0,
    ) -> AsyncGenerator[scan_pb2.LibraryChange, None]:
        """The library's changes, in order, as they are stored; it never ends by itself.

        The first change is a RESYNC when `after_sequence` is 0, when it is before the history
        the server keeps or past the library's last change, or when `library_uid` is set and is
        not the library's (it was deleted and created again): list the library again (e.g.
        `list_videos(library=name)`) and apply the changes that follow. Otherwise the changes
        after `after_sequence` follow, with no gap. A RESYNC may come again later (the library
        was created again meanwhile).

        When the stream breaks (the connection is lost, the server restarts, or shuts down and
        another server of the same database answers), this reconnects with backoff and resumes
        right after the last change it yielded, with that change's library uid: no change is
        missed or repeated. It raises `MediascanError` when reconnecting has not worked for
        `reconnect_timeout` seconds (None: it keeps trying), and at once for any other error
        (NOT_FOUND: the library does not exist, or was deleted)."""
        last, uid = after_sequence, library_uid
        backoff = Backoff()

        def request() -> scan_pb2.WatchLibraryRequest:
            return scan_pb2.WatchLibraryRequest(name=name, after_sequence=last, library_uid=uid)

        while True:
            feed = self._connection.stream(
                lambda stub: stub.WatchLibrary, request, reconnect_timeout=reconnect_timeout
            )
            async with contextlib.aclosing(feed) as changes:
                async for change in changes:
                    backoff.reset()
                    resync = change.kind == scan_pb2.CHANGE_KIND_RESYNC
                    if not resync and change.sequence <= last:
                        continue  # yielded already (a server that replays too much)
                    last, uid = change.sequence, change.library_uid or uid
                    yield change
            # The feed ended without an error: only a server that stops ends one so. Resume.
            await asyncio.sleep(backoff.delay())
