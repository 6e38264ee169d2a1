"""One SQLite database file: its lock, the writer thread and the reader threads, the two
primitives (`write`, `read`) with the `--db-timeout` bound, and the check that the file opened
is still the one at the path. The event loop never touches SQLite."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from ...dblock import DatabaseLock
from ...lane import settle
from ...supervisor import Supervise
from ..protocol import DatabaseLost, StorageError
from ..waits import within
from .readers import Readers
from .schema import identity, open_database
from .writer import Writer

log = logging.getLogger(__name__)

T = TypeVar("T")


class Database:
    """The connections to one SQLite file and the threads that use them."""

    def __init__(
        self,
        path: Path,
        *,
        readers: int = 2,
        max_batch: int = 1000,
        listen: str = "",
        timeout: float = 5.0,
        on_lost: Callable[[str], None] | None = None,
        supervise: Supervise | None = None,
    ) -> None:
        self.path = path
        self._supervise = supervise
        #: Longest wait of `read` and `bounded` (seconds) before DatabaseTimeout.
        self.timeout = timeout
        self._on_lost = on_lost
        self._lost: DatabaseLost | None = None
        self._checking: threading.Thread | None = None
        #: Held from before the database is opened until it is closed: one server per file.
        self.lock = DatabaseLock(path)
        self._listen = listen
        self._reader_threads = readers
        self._max_batch = max_batch
        self._writer: Writer | None = None
        self._write_conn: sqlite3.Connection | None = None
        self._readers: Readers | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the file opened

    async def open(self) -> None:
        """Take the database's lock (DatabaseLocked if another server holds it), create the
        file and schema if needed, then start the writer and reader threads."""
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self.lock.acquire, self._listen)
        try:
            self._write_conn = await asyncio.to_thread(open_database, self.path)
        except BaseException:
            self.lock.release()
            raise
        readers = Readers(self.path, self._reader_threads)
        try:
            self._identity = await asyncio.to_thread(identity, self.path)
            await asyncio.to_thread(readers.start)
        except BaseException:  # nothing of a store that did not open may stay behind
            await asyncio.to_thread(readers.close)
            self._write_conn.close()
            self._write_conn = None
            self.lock.release()
            raise
        self._readers = readers
        self._writer = Writer(
            self._write_conn,
            self._loop,
            max_batch=self._max_batch,
            refuse=self._refusal,
            supervise=self._supervise,
        )

    async def close(self) -> None:
        """Finish the queued writes, then close every connection."""
        if self._writer is not None:
            writer, self._writer = self._writer, None
            await asyncio.to_thread(writer.stop)
        if self._readers is not None:
            readers, self._readers = self._readers, None
            await asyncio.to_thread(readers.close)  # not on the loop
        if self._write_conn is not None:
            self._write_conn.close()
            self._write_conn = None
        self.lock.release()

    async def write(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Run `op` in the writer thread inside a transaction; return once it is committed.

        The write happens even if the awaiting task is cancelled (a queued write is never
        dropped), so callers that assign sequence numbers can rely on it.
        """
        return await self.queue_write(op)

    def queue_write(self, op: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """`write` without a coroutine: the future resolves once `op` is committed."""
        if self._writer is None:
            raise StorageError("the database is closed")
        if self._lost is not None:
            raise self._lost
        return self._writer.submit(op)

    async def read(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Run `op` on a reader connection in a reader thread."""
        if self._readers is None:
            raise StorageError("the database is closed")
        if self._lost is not None:
            raise self._lost
        return await self.bounded(self._readers.submit(op))

    async def bounded(self, work: Awaitable[T]) -> T:
        """Wait for `work` (a read, a queued write) at most `timeout` seconds, then raise
        DatabaseTimeout; the work itself is not cancelled (a queued write still happens)."""
        return await within(
            work, self.timeout, "its disk or file system hangs, or another process keeps it locked"
        )

    @property
    def lost(self) -> bool:
        """True once the database file was found removed or replaced."""
        return self._lost is not None

    async def check_file(self) -> bool:
        """Check that the file opened is still the one at the path (found removed or replaced:
        lost, `on_lost` is called). False if the check did not answer within `timeout` (the file
        system hangs); at most one check thread is ever waiting on it."""
        if self._checking is not None and self._checking.is_alive():
            return False
        loop = asyncio.get_running_loop()
        done: asyncio.Future[tuple[int, int] | None] = loop.create_future()

        def check() -> None:
            found = identity(self.path)
            with contextlib.suppress(RuntimeError):  # the loop is closed
                loop.call_soon_threadsafe(settle, done, found, None)

        self._checking = threading.Thread(target=check, name="sqlite-check", daemon=True)
        self._checking.start()
        try:
            async with asyncio.timeout(self.timeout):
                found = await done
        except TimeoutError:
            return False
        if found != self._identity:
            self._mark_lost()
        return True

    def _refusal(self) -> BaseException | None:
        """The writer's check before each batch (writer thread): a lost file refuses it."""
        if self._lost is not None or identity(self.path) != self._identity:
            return self._mark_lost()
        return None

    def _mark_lost(self) -> DatabaseLost:
        """Record the loss (any thread) and tell `on_lost` once, on the loop."""
        if self._lost is None:
            self._lost = DatabaseLost(
                f"the database file {self.path} was removed or replaced while the server ran: "
                "nothing can be stored; the server stops (a restart starts with the file now at "
                "that path, a new empty library if there is none)"
            )
            log.critical("%s", self._lost)
            if self._on_lost is not None and self._loop is not None:
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(self._on_lost, str(self._lost))
        return self._lost
