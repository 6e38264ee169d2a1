"""`BatchWorker`: this server's share of every scan's probing, on a shared store.

It claims the batches of files that running scans queued (`store/probe_queue.py`), on any
server, while it has room (`BATCHES_IN_FLIGHT`), probes their files in this server's prober
processes (at most `slots` at once), and finishes each batch: the videos and the outcome in one
transaction, fenced by the job's attempt and by its claim. It claims only batches of folders it
can see: under its allowed roots (`--allow-root`), and a folder here. Each file is opened again
from this server's side (`reopen.py`).

Woken by the notification of queued batches, and every `POLL` seconds. A database that fails
is logged and tried again; a lost lease stops the batches in flight (their results would be
refused); a shutdown gives them back at once for another server to claim."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time

from .errors import Code
from .probe import ProbeError, Prober
from .reopen import reopen
from .roots import AllowedRoots
from .scanner import REASON_CODES, video_row
from .store import LeaseLost, StorageError, VideoRow
from .store.probe_queue import BatchOutcome, ClaimedBatch, ProbeQueue, WalkedFile
from .walk_errors import WalkError

log = logging.getLogger(__name__)

#: Batches this server probes at once: a few, so that the batches of a scan spread over the
#: servers instead of going to the first that asks.
BATCHES_IN_FLIGHT = 2
#: Seconds between two looks for waiting batches when no notification came.
POLL = 1.0
#: Seconds a folder found visible (or not) here is trusted before it is looked at again.
SEEN_FOR = 10.0
#: Seconds a batch's hand-back may take at shutdown.
RELEASE_TIMEOUT = 2.0

_Probed = VideoRow | tuple[str, int, str]  # a row, or (path, code, message)


class BatchWorker:
    """Claims, probes and finishes batches of the scans of every server."""

    def __init__(
        self, queue: ProbeQueue, prober: Prober, roots: AllowedRoots, *, slots: int
    ) -> None:
        self._queue = queue
        self._prober = prober
        self._roots = roots
        self._files = asyncio.Semaphore(max(1, slots))
        self._room = asyncio.Semaphore(BATCHES_IN_FLIGHT)
        self._batches: set[asyncio.Task[None]] = set()
        self._seen: dict[str, tuple[bool, float]] = {}  # folder -> (visible here, when)
        self._failing = False
        queue.add_lost_listener(self.stop_batches)

    async def run(self) -> None:
        """Claim and probe until cancelled; then give back the batches in flight."""
        wake = self._queue.batches_queued()
        try:
            while True:
                await self._room.acquire()
                wake.clear()
                batch = await self._claim()
                if batch is None:
                    self._room.release()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(POLL):
                            await wake.wait()
                    continue
                task = asyncio.create_task(self._work(batch), name=f"batch-{batch.batch_id}")
                self._batches.add(task)
                task.add_done_callback(self._batches.discard)
        finally:
            self.stop_batches()
            if self._batches:
                await asyncio.gather(*self._batches, return_exceptions=True)

    def stop_batches(self) -> None:
        """Stop the batches in flight (this server's claims lapsed, or it stops)."""
        for task in self._batches:
            task.cancel()

    async def _claim(self) -> ClaimedBatch | None:
        try:
            waiting = await self._queue.waiting_roots()
            visible = [root for root in waiting if await self._visible(root)]
            batch = await self._queue.claim(visible)
        except StorageError as exc:
            if not self._failing:
                log.warning("cannot claim batches to probe: %s", exc)
            self._failing = True
            return None
        self._failing = False
        return batch

    async def _visible(self, root: str) -> bool:
        """True if a scan of `root` may be probed here: under the allowed roots, and there."""
        seen = self._seen.get(root)
        now = time.monotonic()
        if seen is not None and now - seen[1] < SEEN_FOR:
            return seen[0]
        visible = self._roots.allows(root) and await asyncio.to_thread(os.path.isdir, root)
        if len(self._seen) >= 1000:
            self._seen.clear()
        self._seen[root] = (visible, now)
        return visible

    async def _work(self, batch: ClaimedBatch) -> None:
        try:
            probed = await asyncio.gather(*(self._probe(batch, file) for file in batch.files))
            rows = [item for item in probed if isinstance(item, VideoRow)]
            await self._queue.finish(batch, rows, _outcome(batch, probed))
        except LeaseLost as exc:
            log.info("%s", exc)
        except StorageError as exc:  # its claim lapses: another server probes it again
            log.warning("job %s: cannot store a probed batch: %s", batch.fence.job_id, exc)
        except asyncio.CancelledError:
            with contextlib.suppress(StorageError, TimeoutError):
                async with asyncio.timeout(RELEASE_TIMEOUT):
                    await asyncio.shield(self._queue.release(batch))
            raise
        finally:
            self._room.release()

    async def _probe(self, batch: ClaimedBatch, walked: WalkedFile) -> _Probed:
        async with self._files:
            opened = await asyncio.to_thread(
                reopen,
                walked,
                batch.root,
                follow_symlinks=batch.follow_symlinks,
                roots=self._roots,
            )
            if isinstance(opened, WalkError):
                return (opened.path, int(opened.code), opened.message)
            try:
                if walked.size == 0:
                    raise ProbeError("corrupt", "the file is empty (0 bytes)")
                result = await self._prober.probe(opened, walked.path)
            except ProbeError as exc:
                code = REASON_CODES.get(exc.reason, Code.UNKNOWN)
                return (walked.path, int(code), exc.message)
            finally:
                os.close(opened)
        path, size, mtime_ns, dev = walked
        return video_row(path, size, mtime_ns, dev, result, batch.fence.job_id)


def _outcome(batch: ClaimedBatch, probed: list[_Probed]) -> BatchOutcome:
    """What the batch did, but the library counts (the finish adds them)."""
    errors = [item for item in probed if not isinstance(item, VideoRow)]
    return BatchOutcome(
        done=len(batch.files),
        bytes_done=sum(file.size for file in batch.files),
        failed=len(errors),
        last_path=batch.files[-1].path if batch.files else "",
        errors=errors,
    )
