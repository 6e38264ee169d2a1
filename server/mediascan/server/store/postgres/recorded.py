"""`RecordedWrites`: the transactions that write videos or libraries on PostgreSQL, each with
the `ChangeLog` of the library changes it records, committed with them.

After its changes are stored, a transaction notifies `mediascan_library` with
`library_id:last_sequence` for each library it changed (at most one per library every
LIBRARY_INTERVAL from this server, the last one always, as for job events: `notify.py`), so
that every server's followers read again; once it committed, this server's library listeners
are told at once. The LISTEN connection hands them the notifications of every server
(`changed`), and after it reconnected, every library (`resync`): what it missed is read again."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ..protocol import Fence, StorageError
from .changelog import HISTORY, ChangeLog
from .database import PgDatabase
from .fencing import check_fence
from .notify import LIBRARY, LIBRARY_INTERVAL, NotifyLimiter, notify
from .schema import Connection

log = logging.getLogger(__name__)

T = TypeVar("T")

#: A write given the transaction's connection and its change log.
RecordedOp = Callable[[Connection, ChangeLog], Awaitable[T]]
LibraryListener = Callable[[str, int], None]


class RecordedWrites:
    """Runs recorded writes, notifies the other servers and tells the local listeners."""

    def __init__(self, db: PgDatabase, notices: NotifyLimiter) -> None:
        self._db = db
        self._notices = notices
        self._listeners: list[LibraryListener] = []
        self._resyncs: set[asyncio.Task[None]] = set()
        #: Changes kept per library (`ChangeLog`).
        self.history = HISTORY

    def add_listener(self, listener: LibraryListener) -> None:
        self._listeners.append(listener)

    def changed(self, library_id: str, last_sequence: int) -> None:
        """Tell the listeners that `library_id` has changes up to `last_sequence`."""
        for listener in self._listeners:
            listener(library_id, last_sequence)

    def notified(self, payload: str) -> None:
        """A `mediascan_library` notification, `library_id:last_sequence`, of any server."""
        library_id, _, sequence = payload.rpartition(":")
        if library_id and sequence.isdigit():
            self.changed(library_id, int(sequence))

    def resync(self) -> None:
        """Tell the listeners of every library (read in a task of its own): notifications
        may have been missed."""
        if self._listeners:
            task = asyncio.create_task(self._resync(), name="library-resync")
            self._resyncs.add(task)
            task.add_done_callback(self._resyncs.discard)

    async def _resync(self) -> None:
        async def op(conn: Connection) -> list[tuple[str, int]]:
            cursor = await conn.execute("SELECT id, last_sequence FROM libraries")
            return [(str(i), int(last)) for i, last in await cursor.fetchall()]

        try:
            libraries = await self._db.read(op)
        except StorageError as exc:  # the followers read again by themselves, later
            log.warning("could not read the libraries after a reconnection: %s", exc)
            return
        for library_id, last in libraries:
            self.changed(library_id, last)

    async def close(self) -> None:
        tasks, self._resyncs = self._resyncs, set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def write(self, op: RecordedOp[T], *, fence: Fence | None = None) -> T:
        """Run `op` in one transaction, after the check of `fence` (LeaseLost: nothing is
        written, nothing recorded), with the transaction's `ChangeLog`; returns once
        committed (a cancelled caller does not stop it)."""
        history = self.history

        async def transaction(conn: Connection) -> tuple[T, dict[str, int], dict[str, int]]:
            await check_fence(conn, fence)
            log = await ChangeLog.begin(conn, history=history)
            result = await op(conn, log)
            changed = await log.flush(conn)
            held = {}  # the notifications too soon after the last: sent once committed
            for library_id, last in changed.items():
                if self._notices.now(LIBRARY, library_id, interval=LIBRARY_INTERVAL):
                    await notify(conn, LIBRARY, f"{library_id}:{last}")
                else:
                    held[library_id] = last
            return result, changed, held

        result, changed, held = await self._db.commit(transaction)
        for library_id, last in held.items():
            payload = f"{library_id}:{last}"
            self._notices.later(LIBRARY, library_id, payload, interval=LIBRARY_INTERVAL)
        for library_id, last in changed.items():
            self.changed(library_id, last)
        return result
