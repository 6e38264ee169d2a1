"""`LibraryMirror`: an in-memory copy of one library's videos, kept in sync with the library's
change feed across broken streams, server restarts and its own restarts."""

from __future__ import annotations

import asyncio
import contextlib
import types
from collections.abc import AsyncGenerator, Iterable, Mapping
from typing import TYPE_CHECKING

import grpc

from mediascan.client.connection import Backoff
from mediascan.client.errors import MediascanError
from mediascan.v1 import scan_pb2

if TYPE_CHECKING:
    from mediascan.client.client import ScanClient

_SETS = (scan_pb2.CHANGE_KIND_ADDED, scan_pb2.CHANGE_KIND_UPDATED, scan_pb2.CHANGE_KIND_MOVED)
#: A listing that failed so is tried again: no server could be reached, or one that was
#: stopping cancelled the call (this client's own cancel raises CancelledError instead).
_LIST_AGAIN = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)


class LibraryMirror:
    """A copy of the videos of the library `name` (video id -> `Video`), kept in sync by
    following its change feed (`ScanClient.follow_library`).

    On a RESYNC it lists the library (ListVideos with `library`, every page) and replaces its
    copy with what it found; then it applies each change that follows: ADDED, UPDATED and MOVED
    set the video the change carries (a change without one is of a video that changed again or
    left since: a later change says how), REMOVED drops the id. Other changes (STATUS) only move
    `sequence` on.

    To carry the copy over a restart of your own program, save `videos`, `sequence` and `uid`
    together (e.g. after each change that `changes()` yields) and pass them to the next
    mirror: it resumes right after that change. The server answers a RESYNC instead when it no
    longer keeps the changes since then, or the library was deleted and created again.

    `videos` given without `sequence` are replaced at the first RESYNC (a mirror without a
    sequence starts with one)."""

    def __init__(
        self,
        client: ScanClient,
        name: str,
        *,
        videos: Iterable[scan_pb2.Video] = (),
        sequence: int = 0,
        uid: str = "",
        page_size: int = 1000,
        reconnect_timeout: float | None = 60.0,
    ) -> None:
        self._client = client
        self._name = name
        self._videos = {video.video_id: video for video in videos}
        self._sequence = sequence
        self._uid = uid
        self._page_size = page_size
        self._reconnect_timeout = reconnect_timeout
        self._resyncs = 0

    @property
    def name(self) -> str:
        return self._name

    @property
    def videos(self) -> Mapping[str, scan_pb2.Video]:
        """The copy: each video of the library by its id (a read-only view that follows)."""
        return types.MappingProxyType(self._videos)

    @property
    def sequence(self) -> int:
        """The sequence of the last change applied (of the RESYNC, after a relisting)."""
        return self._sequence

    @property
    def uid(self) -> str:
        """The uid of the library the copy is of (empty before the first change)."""
        return self._uid

    @property
    def resyncs(self) -> int:
        """How many times this mirror listed the library again (RESYNC changes)."""
        return self._resyncs

    async def run(self) -> None:
        """Keep the copy in sync until cancelled (or an error other than a lost connection:
        see `changes`)."""
        async with contextlib.aclosing(self.changes()) as changes:
            async for _ in changes:
                pass

    async def changes(self) -> AsyncGenerator[scan_pb2.LibraryChange, None]:
        """Follow the feed: each change is applied to the copy, and then yielded (a RESYNC once
        the library has been listed again). Use one at a time. Raises `MediascanError` as
        `follow_library` does, and when the library cannot be listed (after trying again for
        `reconnect_timeout` seconds while no server can be reached)."""
        feed = self._client.follow_library(
            self._name,
            after_sequence=self._sequence,
            library_uid=self._uid,
            reconnect_timeout=self._reconnect_timeout,
        )
        async with contextlib.aclosing(feed) as changes:
            async for change in changes:
                if change.kind == scan_pb2.CHANGE_KIND_RESYNC:
                    self._videos = await self._listing()
                    self._sequence, self._uid = change.sequence, change.library_uid
                    self._resyncs += 1
                else:
                    self.apply(change)
                yield change

    def apply(self, change: scan_pb2.LibraryChange) -> None:
        """Apply one change other than a RESYNC: the next after `sequence` (ValueError
        otherwise, leaving the copy as it was)."""
        if change.kind == scan_pb2.CHANGE_KIND_RESYNC:
            raise ValueError("a RESYNC is applied by listing the library again: see changes()")
        if change.sequence != self._sequence + 1:
            raise ValueError(
                f"change {change.sequence} of {self._name} does not follow change "
                f"{self._sequence}, the last one applied"
            )
        if change.kind == scan_pb2.CHANGE_KIND_REMOVED:
            self._videos.pop(change.video_id, None)
        elif change.kind in _SETS and change.HasField("video"):
            self._videos[change.video_id] = change.video
        self._sequence = change.sequence
        self._uid = change.library_uid or self._uid

    async def _listing(self) -> dict[str, scan_pb2.Video]:
        """Every video of the library now, trying again while no server can be reached (for
        `reconnect_timeout` seconds)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        backoff = Backoff()
        while True:
            try:
                listed = self._client.list_videos(library=self._name, page_size=self._page_size)
                return {video.video_id: video async for video in listed}
            except MediascanError as error:
                timeout = self._reconnect_timeout
                if error.code not in _LIST_AGAIN or (
                    timeout is not None and loop.time() - started >= timeout
                ):
                    raise
            await asyncio.sleep(backoff.delay())
