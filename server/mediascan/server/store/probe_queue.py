"""The probing of one scan shared by every server (`ProbeQueue`, a shared store's): the server
running a job walks its folder and queues the files to probe in batches; every server that can
see the folder claims batches, probes them in its own prober processes and stores the videos
with the batch's outcome, fenced by the job's attempt and by its claim. The running server
adds the outcomes up into the job's progress and ends the job once every batch is done.

SQLite has no queue: only one server writes its file, and it probes its scans itself."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

from .protocol import Fence, VideoRow

#: Files in one batch: small enough that a scan of a few hundred files spreads over the
#: servers, large enough that a claim and a finish cost little per file.
BATCH_FILES = 32


class WalkedFile(NamedTuple):
    """A file to probe as the walk saw it: its size and time (a probe on another server trusts
    its result only if the file it opens still has them) and the key of its file system."""

    path: str
    size: int
    mtime_ns: int
    dev: int


@dataclasses.dataclass(frozen=True, slots=True)
class ClaimedBatch:
    """A batch this server claimed: probe its files, then `finish` it with this claim."""

    batch_id: int
    fence: Fence
    claim: int
    root: str
    follow_symlinks: bool
    files: tuple[WalkedFile, ...]


@dataclasses.dataclass(slots=True)
class BatchOutcome:
    """What probing a batch did, as the running server adds it to the job's progress."""

    done: int = 0
    bytes_done: int = 0
    added: int = 0
    updated: int = 0
    failed: int = 0
    last_path: str = ""
    #: (path, status code, message) of each file that could not be probed.
    errors: list[tuple[str, int, str]] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BatchOutcome:
        errors = [(str(p), int(c), str(m)) for p, c, m in data.get("errors", [])]
        return cls(
            done=int(data.get("done", 0)),
            bytes_done=int(data.get("bytes_done", 0)),
            added=int(data.get("added", 0)),
            updated=int(data.get("updated", 0)),
            failed=int(data.get("failed", 0)),
            last_path=str(data.get("last_path", "")),
            errors=errors,
        )


class ProbeQueue(Protocol):
    """The batches of the scans that the servers sharing a database probe together."""

    async def clear(self, fence: Fence) -> None:
        """Drop the job's batches of attempts before `fence`'s (a run that moved on)."""
        ...

    async def add(
        self, fence: Fence, root: str, follow_symlinks: bool, files: Sequence[WalkedFile]
    ) -> None:
        """Queue one batch of the job (fenced: LeaseLost) and wake the servers that probe."""
        ...

    async def waiting_roots(self) -> list[str]:
        """The folders of the jobs that have batches waiting for a server."""
        ...

    async def claim(self, roots: Sequence[str]) -> ClaimedBatch | None:
        """Claim the oldest waiting batch (never claimed, or its claim's lease passed) of a
        RUNNING job's current attempt whose folder is one of `roots`; None if there is none."""
        ...

    async def finish(
        self, batch: ClaimedBatch, rows: Sequence[VideoRow], outcome: BatchOutcome
    ) -> None:
        """Store the probed videos and the outcome in one transaction, only while the job runs
        that attempt and the claim is this server's latest (LeaseLost: nothing stored)."""
        ...

    async def release(self, batch: ClaimedBatch) -> None:
        """Give a claimed batch back at once (this server stops), for another to claim."""
        ...

    async def outcomes(self, fence: Fence, after: int) -> list[tuple[int, BatchOutcome]]:
        """The outcomes of the job's batches finished after `after` (their order of finish,
        from 0), as (order, outcome), oldest first; LeaseLost once the attempt of `fence` is
        over (its batches are gone: the scan must stop, not wait for them)."""
        ...

    async def drop(self, fence: Fence, after: int) -> list[tuple[int, BatchOutcome]]:
        """Forget the batches of this attempt of the job (its scan ended), in one statement
        that returns the outcomes finished after `after`: a batch is either counted here or
        refused at its finish, never stored and uncounted. A later attempt's stay."""
        ...

    def batches_queued(self) -> asyncio.Event:
        """Set when batches were queued somewhere (cleared by whoever waits on it)."""
        ...

    def batches_done(self, job_id: str) -> asyncio.Event:
        """Set when batches of the job were finished somewhere; `forget` when no longer
        needed."""
        ...

    def forget(self, job_id: str) -> None: ...

    def add_lost_listener(self, listener: Callable[[], None]) -> None:
        """Called when this server could not renew its claims for longer than the lease."""
        ...
