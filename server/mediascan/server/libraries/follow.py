"""`LibraryFollowers`: the WatchLibrary streams of this server, woken when the store says a
library changed (its own writes, or on a shared store another server's)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from mediascan.v1 import scan_pb2

from ..errors import NotFound, Unavailable
from ..store.changes import ChangePage, LibraryCatalog

#: Changes read (and sent) at a time: each carries a video of at most 32 KiB.
PAGE = 64
#: A follower reads again at least this often, woken or not (a notification missed by a
#: shared store's listener costs at most this delay).
REREAD_SECONDS = 5.0


class LibraryFollowers:
    def __init__(self, catalog: LibraryCatalog) -> None:
        self._catalog = catalog
        self._waiting: dict[str, set[asyncio.Event]] = {}
        self._closed = False
        catalog.add_library_listener(self._changed)

    def _changed(self, library_id: str, last_sequence: int) -> None:
        for event in self._waiting.get(library_id, ()):
            event.set()

    def close(self) -> None:
        """End every stream (the server stops): each ends with UNAVAILABLE, to be resumed."""
        self._closed = True
        for events in self._waiting.values():
            for event in events:
                event.set()

    async def follow(
        self, library_id: str, after: int, uid: str
    ) -> AsyncIterator[scan_pb2.LibraryChange]:
        """The changes of a library after `after`: a RESYNC first when `after` is 0, before
        the kept history or past the last change, or `uid` is another library's; then every
        change as it is stored, until the library is deleted (NOT_FOUND) or the server stops
        (UNAVAILABLE)."""
        woken = asyncio.Event()
        self._waiting.setdefault(library_id, set()).add(woken)
        try:
            page = await self._read(library_id, after)
            if after == 0 or _stale(page, after, uid):
                yield _resync(page)
                after, uid = page.last_sequence, page.uid
                page = await self._read(library_id, after)
            uid = page.uid
            while True:
                for change in page.changes:
                    yield change
                    after = change.sequence
                if len(page.changes) < PAGE:
                    await self._wait(woken, after)
                woken.clear()
                page = await self._read(library_id, after)
                if _stale(page, after, uid):  # deleted and created again, or left behind
                    yield _resync(page)
                    after, uid = page.last_sequence, page.uid
                    page = await self._read(library_id, after)
        finally:
            waiting = self._waiting.get(library_id)
            if waiting is not None:
                waiting.discard(woken)
                if not waiting:
                    del self._waiting[library_id]

    async def _wait(self, woken: asyncio.Event, after: int) -> None:
        if self._closed:
            raise _stopping(after)
        try:
            async with asyncio.timeout(REREAD_SECONDS):
                await woken.wait()
        except TimeoutError:
            pass
        if self._closed:
            raise _stopping(after)

    async def _read(self, library_id: str, after: int) -> ChangePage:
        page = await self._catalog.changes_after(library_id, after, PAGE)
        if page is None:
            raise NotFound(
                f'library "{library_id}" does not exist (it may have been deleted)',
                field="name",
                reason="LIBRARY_NOT_FOUND",
            )
        return page


def _stale(page: ChangePage, after: int, uid: str) -> bool:
    """True when the changes after `after` cannot be sent: the library is another (deleted and
    created again), or `after` is before its kept history or past its last change."""
    return (
        (bool(uid) and uid != page.uid) or after < page.first_kept - 1 or after > page.last_sequence
    )


def _resync(page: ChangePage) -> scan_pb2.LibraryChange:
    change = scan_pb2.LibraryChange(
        sequence=page.last_sequence, kind=scan_pb2.CHANGE_KIND_RESYNC, library_uid=page.uid
    )
    change.time.GetCurrentTime()
    return change


def _stopping(after: int) -> Unavailable:
    return Unavailable(
        f"the server is shutting down: reconnect and resume with after_sequence={after}"
    )
