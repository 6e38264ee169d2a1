"""A running scan's progress and file errors, committed and published coalesced (the scanner's
`ScanReporter`)."""

from __future__ import annotations

import asyncio
import logging

from mediascan.v1 import scan_pb2

from ..config import Config
from ..errors import CodeLike, status_of
from ..jobs import SAMPLE_BYTES, SAMPLE_ERRORS, bounded_error_message, bounded_error_path
from ..store import LeaseLost, StorageError
from .recorder import Payload, Recorder
from .running import RunningJob

log = logging.getLogger(__package__)

#: Longest time between two progress events of a running scan, however many watch it (unless
#: --progress-rate asks for fewer).
MAX_PROGRESS_INTERVAL = 5.0


class Reporter:
    """Collects a running scan's progress and file errors and commits them, coalesced, through
    the recorder it is given."""

    def __init__(self, recorder: Recorder, running: RunningJob, config: Config) -> None:
        self._recorder = recorder
        self._running = running
        self._max_file_errors = config.max_file_errors
        self._fanout = config.progress_fanout
        self.progress = scan_pb2.Progress()
        self.progress.CopyFrom(running.job.progress)
        #: The first errors, for the result (at most SAMPLE_ERRORS and SAMPLE_BYTES).
        self.sample: list[scan_pb2.FileError] = []
        self._sample_bytes = 0
        self.file_errors_total = 0
        #: Errors kept for ListFileErrors so far (at most --max-file-errors).
        self.stored = 0
        #: (seq, error) not yet in the store: written with the next progress commit.
        self.unstored: list[tuple[int, scan_pb2.FileError]] = []
        self._unpublished_errors: list[scan_pb2.FileError] = []
        self._dirty = asyncio.Event()
        self._interval = 1.0 / config.progress_rate

        #: Removals withheld by a library's removal limit (`libraries/guard.py`).
        self.withheld = 0

    def changed(self) -> None:
        self._dirty.set()

    def withhold(self, count: int) -> None:
        self.withheld += count

    def file_error(self, path: str, code: CodeLike, message: str) -> None:
        """Record a file's error. `code` is a domain `Code` (or, from callers not converted
        yet, a `grpc.StatusCode`: the same number)."""
        error = scan_pb2.FileError(
            path=bounded_error_path(path), status=status_of(code, bounded_error_message(message))
        )
        self.file_errors_total += 1
        if self.stored < self._max_file_errors:
            self.unstored.append((self.stored, error))
            self.stored += 1
            size = error.ByteSize() + 4
            if len(self.sample) < SAMPLE_ERRORS and self._sample_bytes + size <= SAMPLE_BYTES:
                self.sample.append(error)
                self._sample_bytes += size
        self._unpublished_errors.append(error)
        self._dirty.set()

    def interval(self) -> float:
        """The time between two progress events: 1 / progress_rate, longer when so many watch
        that the job would send them more than progress_fanout messages a second (at most
        MAX_PROGRESS_INTERVAL). Every message costs the server tens of microseconds of CPU,
        which the scan's probers would otherwise have."""
        crowd = self._running.channel.subscribers / self._fanout
        return min(max(self._interval, crowd), max(self._interval, MAX_PROGRESS_INTERVAL))

    async def run(self) -> None:
        """Publish progress events, coalesced, while the scan changes (see `interval`)."""
        loop = asyncio.get_running_loop()
        started = loop.time()  # the RUNNING event just sent carries the first progress
        while True:
            await self._dirty.wait()
            # A window counts from the start of the last flush (a flush slowed down by a burst
            # of writes to many watchers must not lower the rate below what interval() allows),
            # and is measured again every 1 / progress_rate seconds: watchers come and go.
            while (wait := started + self.interval() - loop.time()) > 0:
                await asyncio.sleep(min(wait, self._interval))
            started = loop.time()
            await self.flush()

    async def flush(self) -> None:
        """Commit and publish what changed. A database failure costs these progress events
        (the final state carries the counts and the file errors), never the scan."""
        try:
            await self._flush()
        except StorageError as exc:
            log.warning("job %s: progress not stored: %s", self._running.job_id, exc)
        except LeaseLost as exc:  # the job is being stopped here (`Recorder`)
            log.warning("job %s: progress refused: %s", self._running.job_id, exc)

    async def _flush(self) -> None:
        if not self._dirty.is_set():
            return
        self._dirty.clear()
        errors, self._unpublished_errors = self._unpublished_errors, []
        rows, self.unstored = self.unstored, []
        progress = scan_pb2.Progress()
        progress.CopyFrom(self.progress)
        payloads: list[Payload] = [*errors, progress]

        def mutate(job: scan_pb2.Job) -> None:
            job.progress.CopyFrom(progress)

        try:
            await self._recorder.commit(self._running, payloads, mutate=mutate, file_errors=rows)
        except BaseException:
            self.unstored[:0] = rows  # stored with the next commit, or with the job's end
            raise

    def result(self) -> scan_pb2.ScanResult:
        p = self.progress
        return scan_pb2.ScanResult(
            files_total=p.files_done,
            added=p.added,
            updated=p.updated,
            unchanged=p.unchanged,
            removed=p.removed,
            moved=p.moved,
            deferred=p.deferred,
            removals_withheld=self.withheld,
            failed=p.failed,
            bytes_total=p.bytes_done,
            file_errors=self.sample,
            file_errors_truncated=self.file_errors_total > len(self.sample),
            file_error_count=self.stored,
        )
