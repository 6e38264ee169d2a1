"""`PostgresProbeQueue`: the batches of files to probe that the servers sharing the database
claim from each other (`probe_queue.py` says what for).

A claim takes the oldest waiting batch of a RUNNING job's current attempt with `FOR UPDATE SKIP
LOCKED` (claims of several servers never wait on each other) and gives it a lease that this
server's `LeaseKeeper` renews with its jobs'; a batch whose claim's lease passed is waiting
again, for any server. A finish is one transaction: the job must still run the batch's attempt
(`check_fence`, which holds the job's row against a reclaim), the claim must still be this one's
(a later claim bumped `claim`), then the videos (with their libraries' changes: `recorded.py`)
and the outcome are stored and the running server is notified."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from typing import Any

from psycopg.types.json import Jsonb

from ..probe_queue import BatchOutcome, ClaimedBatch, WalkedFile
from ..protocol import Fence, LeaseLost, VideoRow
from .changelog import ChangeLog
from .database import PgDatabase
from .fencing import check_fence
from .jobs import LEASE_UNTIL
from .notify import BATCHES, notify
from .recorded import RecordedWrites
from .schema import RUNNING, Connection
from .video_writes import upsert_recorded

_CLAIM = (
    f"UPDATE probe_batches b SET node = %s, claim = b.claim + 1, lease_until = {LEASE_UNTIL} "
    "WHERE b.id = ("
    " SELECT p.id FROM probe_batches p JOIN jobs j ON j.job_id = p.job_id"
    " WHERE p.outcome IS NULL AND (p.node IS NULL OR p.lease_until < now())"
    f" AND p.root = ANY(%s) AND j.state = {RUNNING} AND j.attempt = p.attempt"
    " ORDER BY p.id LIMIT 1 FOR UPDATE OF p SKIP LOCKED) "
    "RETURNING b.id, b.job_id, b.attempt, b.claim, b.root, b.follow_symlinks, b.files"
)
_WAITING_ROOTS = (
    "SELECT DISTINCT p.root FROM probe_batches p JOIN jobs j ON j.job_id = p.job_id"
    " WHERE p.outcome IS NULL AND (p.node IS NULL OR p.lease_until < now())"
    f" AND j.state = {RUNNING} AND j.attempt = p.attempt LIMIT 100"
)
#: The renewal of this server's claims, with its jobs' leases (`LeaseKeeper`).
RENEW_CLAIMS = (
    f"UPDATE probe_batches SET lease_until = {LEASE_UNTIL} WHERE node = %s AND outcome IS NULL"
)


class PostgresProbeQueue:
    """The shared batches of the scans, as this server queues, claims and finishes them."""

    def __init__(self, db: PgDatabase, writes: RecordedWrites, *, node: str, lease: float) -> None:
        self._db = db
        self._writes = writes  # a finish's videos record their libraries' changes
        self._node = node
        self._lease = lease
        self._queued = asyncio.Event()
        self._done: dict[str, asyncio.Event] = {}
        self._lost_listeners: list[Callable[[], None]] = []

    # -- notifications (called by the feed's LISTEN connection, on the loop) -----------------

    def notified(self, payload: str) -> None:
        """`mediascan_batches`: "" when batches were queued, a job id when some were done."""
        if not payload:
            self._queued.set()
        elif (event := self._done.get(payload)) is not None:
            event.set()

    def resync(self) -> None:
        """The LISTEN connection (re)started: whatever was missed is to be read again."""
        self._queued.set()
        for event in self._done.values():
            event.set()

    def batches_queued(self) -> asyncio.Event:
        return self._queued

    def batches_done(self, job_id: str) -> asyncio.Event:
        return self._done.setdefault(job_id, asyncio.Event())

    def forget(self, job_id: str) -> None:
        self._done.pop(job_id, None)

    def add_lost_listener(self, listener: Callable[[], None]) -> None:
        self._lost_listeners.append(listener)

    def claims_lost(self) -> None:
        """This server could not renew its leases (and claims) for longer than the lease."""
        for listener in self._lost_listeners:
            listener()

    # -- the running server's side ---------------------------------------------------------------

    async def clear(self, fence: Fence) -> None:
        async def op(conn: Connection) -> None:
            await conn.execute(
                "DELETE FROM probe_batches WHERE job_id = %s AND attempt < %s",
                (fence.job_id, fence.attempt),
            )

        await self._db.commit(op)

    async def add(
        self, fence: Fence, root: str, follow_symlinks: bool, files: Sequence[WalkedFile]
    ) -> None:
        listed = [list(file) for file in files]

        async def op(conn: Connection) -> None:
            await check_fence(conn, fence)
            await conn.execute(
                "INSERT INTO probe_batches (job_id, attempt, root, follow_symlinks, files) "
                "VALUES (%s, %s, %s, %s, %s)",
                (fence.job_id, fence.attempt, root, follow_symlinks, Jsonb(listed)),
            )
            await notify(conn, BATCHES, "")

        await self._db.commit(op)

    async def outcomes(self, fence: Fence, after: int) -> list[tuple[int, BatchOutcome]]:
        async def op(conn: Connection) -> list[tuple[int, BatchOutcome]]:
            await check_fence(conn, fence, lock=False)
            cursor = await conn.execute(
                "SELECT done_seq, outcome FROM probe_batches "
                "WHERE job_id = %s AND done_seq > %s ORDER BY done_seq",
                (fence.job_id, after),
            )
            return _finished(await cursor.fetchall(), after)

        return await self._db.read(op)

    async def drop(self, fence: Fence, after: int) -> list[tuple[int, BatchOutcome]]:
        async def op(conn: Connection) -> list[tuple[int, BatchOutcome]]:
            cursor = await conn.execute(
                "DELETE FROM probe_batches WHERE job_id = %s AND attempt = %s "
                "RETURNING done_seq, outcome",
                (fence.job_id, fence.attempt),
            )
            return _finished(await cursor.fetchall(), after)

        return await self._db.commit(op)

    # -- every probing server's side -------------------------------------------------------------

    async def waiting_roots(self) -> list[str]:
        async def op(conn: Connection) -> list[str]:
            cursor = await conn.execute(_WAITING_ROOTS)
            return [str(root) for (root,) in await cursor.fetchall()]

        return await self._db.read(op)

    async def claim(self, roots: Sequence[str]) -> ClaimedBatch | None:
        if not roots:
            return None

        async def op(conn: Connection) -> ClaimedBatch | None:
            cursor = await conn.execute(_CLAIM.encode(), (self._node, self._lease, list(roots)))
            row = await cursor.fetchone()
            if row is None:
                return None
            batch_id, job_id, attempt, claim, root, follow, files = row
            return ClaimedBatch(
                batch_id=int(batch_id),
                fence=Fence(str(job_id), int(attempt)),
                claim=int(claim),
                root=str(root),
                follow_symlinks=bool(follow),
                files=tuple(WalkedFile(str(p), int(s), int(m), int(d)) for p, s, m, d in files),
            )

        return await self._db.commit(op)

    async def finish(
        self, batch: ClaimedBatch, rows: Sequence[VideoRow], outcome: BatchOutcome
    ) -> None:
        async def op(conn: Connection, log: ChangeLog) -> None:
            cursor = await conn.execute(
                "SELECT 1 FROM probe_batches WHERE id = %s AND claim = %s AND node = %s "
                "AND outcome IS NULL FOR UPDATE",
                (batch.batch_id, batch.claim, self._node),
            )
            if await cursor.fetchone() is None:
                raise LeaseLost(
                    f"job {batch.fence.job_id}: batch {batch.batch_id} was claimed by another "
                    "server (this server's claim expired) or dropped; its results are refused"
                )
            if rows:
                outcome.added, outcome.updated = await upsert_recorded(conn, log, rows)
            await lock_finishes(conn, batch.fence.job_id)
            await conn.execute(
                "UPDATE probe_batches SET outcome = %s, done_seq = nextval('probe_batches_done') "
                "WHERE id = %s",
                (Jsonb(outcome.to_json()), batch.batch_id),
            )
            await notify(conn, BATCHES, batch.fence.job_id)

        await self._writes.write(op, fence=batch.fence)  # the job's attempt checked first

    async def release(self, batch: ClaimedBatch) -> None:
        async def op(conn: Connection) -> None:
            await conn.execute(
                "UPDATE probe_batches SET node = NULL, lease_until = NULL "
                "WHERE id = %s AND claim = %s AND node = %s AND outcome IS NULL",
                (batch.batch_id, batch.claim, self._node),
            )
            await notify(conn, BATCHES, "")

        await self._db.commit(op)


async def lock_finishes(conn: Connection, job_id: str) -> None:
    """Hold the finishes of the job's batches back until this transaction ends. The running
    server reads the outcomes finished after the last `done_seq` it saw (`outcomes`), so the
    numbers must become visible in their order: a finish that took its number and committed
    after a later one would never be read, and its scan would wait for it for ever. Taken
    just before the number, and held to the commit, the lock makes commit order number order."""
    await conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (FINISH_LOCK, job_id))


#: The first key of `lock_finishes`' advisory locks (the second is the job's): a constant of its
#: own, apart from the one-key lock of the migrations.
FINISH_LOCK = 0x6D73


def _finished(rows: list[tuple[Any, ...]], after: int) -> list[tuple[int, BatchOutcome]]:
    """The (done_seq, outcome) rows of the batches finished after `after`, in finish order."""
    finished = [
        (int(seq), BatchOutcome.from_json(_json(outcome)))
        for seq, outcome in rows
        if seq is not None and int(seq) > after
    ]
    return sorted(finished, key=lambda item: item[0])


def _json(value: Any) -> dict[str, Any]:
    if isinstance(value, (str, bytes)):
        loaded: dict[str, Any] = json.loads(value)
        return loaded
    return dict(value)
