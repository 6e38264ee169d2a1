"""The running server's side of a scan probed by every server (a shared store's `ProbeQueue`).

The walk goes on here as on one server; the files it finds to probe are not probed here but
queued in batches (`BATCH_FILES` each) in the database, for any server's `BatchWorker` (this
one's too) to claim. The outcomes of the finished batches are read back in the order they
finished, woken by their notifications (and at least every `POLL` seconds, should one be
missed), and added to the job's progress. The scan's end waits for every batch it queued; a
scan that stops early (cancelled, timed out, failed) reads what was finished so far, then drops
its batches: whatever a server was probing for it is refused at its finish."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from .fskeys import DeviceKeys
from .store import Fence, StorageError
from .store.probe_queue import BATCH_FILES, BatchOutcome, ProbeQueue, WalkedFile
from .walker import FoundFile

log = logging.getLogger(__name__)

#: Seconds between two reads of the outcomes when no notification came.
POLL = 1.0


class SharedProbes:
    """One scan's files to probe, queued for every server, and their outcomes read back."""

    def __init__(
        self,
        queue: ProbeQueue,
        fence: Fence,
        *,
        root: str,
        follow_symlinks: bool,
        apply: Callable[[BatchOutcome], None],
    ) -> None:
        self._queue = queue
        self._fence = fence
        self._root = root
        self._follow = follow_symlinks
        self._apply = apply  # adds an outcome to the job's progress
        self._keys = DeviceKeys.read()
        self._pending: list[WalkedFile] = []
        self._queued = 0  # batches queued
        self._finished = 0  # batches whose outcome was applied
        self._after = 0  # the finish order of the last outcome applied
        self._done = queue.batches_done(fence.job_id)

    def device_key(self, dev: int, path: str) -> int:
        """The key a shared library stores for the file system of `path` (`fskeys.py`)."""
        return self._keys.key(dev, path)

    async def start(self) -> None:
        """Drop what an earlier attempt of the job queued and did not finish."""
        await self._queue.clear(self._fence)

    async def add(self, found: FoundFile) -> None:
        """Queue a file the walk found (its descriptor is the caller's to close)."""
        key = self._keys.key(found.dev, found.path)
        self._pending.append(WalkedFile(found.path, found.size, found.mtime_ns, key))
        if len(self._pending) >= BATCH_FILES:
            await self._send()

    async def finish(self) -> None:
        """Queue the last batch, then wait until every batch queued is finished."""
        if self._pending:
            await self._send()
        while True:
            self._done.clear()
            await self.collect()
            if self._finished >= self._queued:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL):
                    await self._done.wait()

    async def collect(self) -> None:
        """Apply the outcomes finished since the last read."""
        self._take(await self._queue.outcomes(self._fence, self._after))

    async def close(self) -> None:
        """The scan is over: drop the job's batches, applying those finished meanwhile."""
        try:
            self._take(await self._queue.drop(self._fence, self._after))
        except StorageError as exc:  # never claimed again: the job no longer runs
            log.warning("job %s: its batches stay in the database: %s", self._fence.job_id, exc)
        finally:
            self._queue.forget(self._fence.job_id)

    def _take(self, outcomes: list[tuple[int, BatchOutcome]]) -> None:
        for order, outcome in outcomes:
            self._after = order
            self._finished += 1
            self._apply(outcome)

    async def _send(self) -> None:
        files, self._pending = self._pending, []
        await self._queue.add(self._fence, self._root, self._follow, files)
        self._queued += 1
        if self._done.is_set():  # progress while the walk goes on
            self._done.clear()
            await self.collect()
