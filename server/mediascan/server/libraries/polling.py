"""`PollLoop`: a `FolderPoller` run every poll interval for a keeper, in a worker thread; what
it finds changed goes to the keeper as folders and trees to rescan. No change, no job."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from mediascan.v1 import scan_pb2

from ..videonames import parse_extensions
from ..watching.poll import FolderPoller
from .settings import seconds

#: What a keeper does with changed folders: `changed(folders, trees)`.
OnChange = Callable[[Iterable[str], Iterable[str]], None]


class PollLoop:
    def __init__(self, poller: FolderPoller, interval: float, changed: OnChange) -> None:
        self._poller = poller
        self._interval = interval
        self._changed = changed

    async def baseline(self) -> None:
        """The first poll: what later polls compare with. Take it before the rescan that brings
        the library up to date, so that a change made after that rescan's walk is seen."""
        try:
            await asyncio.to_thread(self._poller.poll)
        except asyncio.CancelledError:
            self._poller.close()  # the walk in its thread stops at its next folder
            raise

    async def run(self) -> None:
        """Poll until cancelled (a poll running then is told to stop)."""
        try:
            while True:
                await asyncio.sleep(self._interval)
                found = await asyncio.to_thread(self._poller.poll)
                if found is not None:
                    self._changed(found.folders, found.trees)
        finally:
            self._poller.close()


def poll_loop(
    library: scan_pb2.Library, tops: Iterable[str], suffixes: frozenset[str], changed: OnChange
) -> PollLoop:
    """The polls of the folders `tops` of `library` (and below them, if it is recursive), every
    `poll_interval`; `suffixes`: the server's video names, which `extensions` start from."""
    poller = FolderPoller(
        tops,
        recursive=library.recursive,
        follow_symlinks=library.follow_symlinks,
        suffixes=parse_extensions(library.extensions, suffixes),
    )
    return PollLoop(poller, seconds(library, "poll_interval"), changed)
