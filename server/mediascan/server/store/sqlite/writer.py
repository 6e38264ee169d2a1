"""The writer thread: the only write connection, and group commit.

Writes from the event loop are queued to it; it runs every write that is waiting as one
transaction (100 concurrent submits cost one fsync, not 100), and resolves the callers' futures
only after COMMIT. If a write raises, the batch runs again with each write inside its own
SAVEPOINT, so that one failing write does not undo its neighbours.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from ...lane import settle
from ...supervisor import Supervise
from ..protocol import StorageError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The name of the writer thread (and of its supervision).
WRITER_THREAD = "sqlite-writer"
Op = Callable[[sqlite3.Connection], Any]
Outcomes = list[tuple["_WriteRequest", Any, BaseException | None]]

_STOP = object()


class _WriteRequest:
    __slots__ = ("future", "op")

    def __init__(self, op: Op, future: asyncio.Future[Any]) -> None:
        self.op = op
        self.future = future


class Writer:
    """The `sqlite-writer` thread and its queue of writes.

    `refuse` is asked before each batch: an error it returns fails the whole batch (the
    database file was removed or replaced: SQLite would write to the unlinked file)."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        loop: asyncio.AbstractEventLoop,
        *,
        max_batch: int,
        refuse: Callable[[], BaseException | None],
        supervise: Supervise | None = None,
    ) -> None:
        self._conn = conn
        self._loop = loop
        self._max_batch = max_batch
        self._refuse = refuse
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        target = self._loop_forever
        self._thread = threading.Thread(
            target=supervise(WRITER_THREAD, target) if supervise else target,
            name=WRITER_THREAD,
            daemon=True,
        )
        self._thread.start()

    def submit(self, op: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Queue `op`; the future resolves once it is committed (or failed)."""
        future: asyncio.Future[T] = self._loop.create_future()
        self._queue.put(_WriteRequest(op, future))
        return future

    def stop(self) -> None:
        """Commit what is queued, then end the thread (blocking: call it off the loop)."""
        self._queue.put(_STOP)
        self._thread.join()

    def _loop_forever(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is _STOP:
                break
            batch = [item]
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            self._run_batch(batch)  # type: ignore[arg-type]

    def _run_batch(self, batch: list[_WriteRequest]) -> None:
        error = self._refuse()
        if error is not None:
            outcomes: Outcomes = [(request, None, error) for request in batch]
        else:
            outcomes = self._transaction(batch)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self._loop.call_soon_threadsafe(_resolve_all, outcomes)

    def _transaction(self, batch: list[_WriteRequest]) -> Outcomes:
        """Run the batch in one transaction; a write that fails fails alone.

        First all writes run straight through (the common case: nothing fails, and each
        statement the writer runs is a hand-over of the GIL with the event loop). If one
        raises, the transaction is rolled back and the batch runs again with each write in
        its own savepoint. So a write may run twice: an op must change nothing but the
        database."""
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            return self._failed(batch, exc)
        try:
            results = [request.op(conn) for request in batch]
        except Exception as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if len(batch) > 1:
                return self._careful_transaction(batch)
            if isinstance(exc, sqlite3.Error):
                exc = StorageError(f"database write failed: {exc}")
            return [(batch[0], None, exc)]
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            return self._failed(batch, exc)
        return [(request, result, None) for request, result in zip(batch, results, strict=True)]

    def _failed(self, batch: list[_WriteRequest], exc: sqlite3.Error) -> Outcomes:
        """The whole transaction failed (locked, disk full, ...): so did every write in it."""
        log.error("database transaction failed: %s", exc)
        with contextlib.suppress(sqlite3.Error):
            self._conn.execute("ROLLBACK")
        error = StorageError(f"database write failed: {exc}")
        return [(request, None, error) for request in batch]

    def _careful_transaction(self, batch: list[_WriteRequest]) -> Outcomes:
        """Run the batch in one transaction, each write in its own savepoint."""
        conn = self._conn
        outcomes: Outcomes = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for request in batch:
                conn.execute("SAVEPOINT op")
                try:
                    result = request.op(conn)
                except Exception as exc:
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    if isinstance(exc, sqlite3.Error):
                        exc = StorageError(f"database write failed: {exc}")
                    outcomes.append((request, None, exc))
                else:
                    conn.execute("RELEASE op")
                    outcomes.append((request, result, None))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            return self._failed(batch, exc)
        return outcomes


def _resolve_all(outcomes: Outcomes) -> None:
    for request, result, error in outcomes:
        settle(request.future, result, error)
