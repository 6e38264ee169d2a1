"""Leases on PostgreSQL: a job RUNNING on a server holds `jobs.lease_until`, set at its claim
and renewed by that server (`LeaseKeeper`, every third of `--lease`, for all its running jobs
in one statement). Any server re-queues the jobs whose lease passed (their server died, froze
or was cut off), with the engine's change (`reclaim`), and notifies the queue so that a free
worker somewhere claims them.

A server whose renewals keep failing for longer than the lease knows that others may reclaim
its jobs: it tells its lease-lost listeners (the engine stops those jobs at once, without
writing for them) rather than go on scanning as if nothing happened."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from mediascan.v1 import scan_pb2

from ..protocol import ChangedJob, JobChange, StorageError
from .batches import RENEW_CLAIMS
from .database import PgDatabase
from .jobs import LEASE_UNTIL, apply_change
from .notify import EVENTS, QUEUE, notify
from .schema import QUEUED, RUNNING, Connection

log = logging.getLogger(__name__)

_RENEW = f"UPDATE jobs SET lease_until = {LEASE_UNTIL} WHERE state = {RUNNING} AND node = %s"
_EXPIRED = (
    f"SELECT job FROM jobs WHERE state = {RUNNING} AND lease_until < now() "
    "ORDER BY lease_until LIMIT 100 FOR UPDATE SKIP LOCKED"
)

#: What the engine does with a job whose lease passed: the change to store (to QUEUED with
#: attempt + 1, or FAILED after too many attempts), and what to announce once stored.
Reclaim = tuple[JobChange, Callable[[ChangedJob], None]]


class LeaseKeeper:
    """Renews this server's leases and reclaims expired ones, every `lease / 3` seconds."""

    def __init__(self, db: PgDatabase, *, node: str, lease: float) -> None:
        self._db = db
        self._node = node
        self.lease = lease
        self._reclaim: Reclaim | None = None
        self._lost_listeners: list[Callable[[], None]] = []
        self._renewed = time.monotonic()
        self._lost = False

    def set_reclaim(self, change: JobChange, announce: Callable[[ChangedJob], None]) -> None:
        self._reclaim = (change, announce)

    def add_lost_listener(self, listener: Callable[[], None]) -> None:
        """Called when this server could not renew its leases for longer than the lease."""
        self._lost_listeners.append(listener)

    async def run(self) -> None:
        """Renew and reclaim until cancelled; a database failure is logged and tried again."""
        self._renewed = time.monotonic()
        while True:
            await asyncio.sleep(self.lease / 3)
            await self.tick()

    async def tick(self) -> None:
        """One round: renew this server's leases, then reclaim the expired ones."""
        try:
            await self._db.bounded(self._db.write(self._renew))
        except StorageError as exc:
            self._renew_failed(exc)
            return
        self._renewed = time.monotonic()
        self._lost = False
        if self._reclaim is not None:
            try:
                await self.reclaim_expired(*self._reclaim)
            except StorageError as exc:
                log.warning("cannot reclaim expired leases: %s", exc)

    def _renew_failed(self, exc: StorageError) -> None:
        late = time.monotonic() - self._renewed
        log.warning("cannot renew the leases of this server's jobs (for %.1fs): %s", late, exc)
        if late > self.lease and not self._lost:
            self._lost = True
            log.error(
                "the leases of this server's jobs expired (not renewed for %.1fs, lease %gs): "
                "stopping them here; another server runs them again",
                late,
                self.lease,
            )
            for listener in self._lost_listeners:
                listener()

    async def _renew(self, conn: Connection) -> None:
        """This server's jobs' leases, and its claims of batches to probe."""
        await conn.execute(_RENEW.encode(), (self.lease, self._node))
        await conn.execute(RENEW_CLAIMS.encode(), (self.lease, self._node))

    async def reclaim_expired(
        self, change: JobChange, announce: Callable[[ChangedJob], None]
    ) -> list[ChangedJob]:
        """Apply `change` to every RUNNING job whose lease passed, in one transaction (rows
        another server's reclaim holds are skipped), and notify the queue."""

        async def op(conn: Connection) -> list[ChangedJob]:
            found: list[ChangedJob] = []
            for (blob,) in await (await conn.execute(_EXPIRED)).fetchall():
                job = scan_pb2.Job.FromString(blob)
                changed = await apply_change(conn, job, change, expected_state=RUNNING)
                await notify(conn, EVENTS, f"{job.job_id}:{job.last_sequence}")
                found.append(changed)
            if any(c.job.state == QUEUED for c in found):
                await notify(conn, QUEUE, "")
            return found

        reclaimed = await self._db.bounded(self._db.write(op))
        for changed in reclaimed:
            announce(changed)
        return reclaimed
