"""`SqliteStore`: one SQLite file behind both protocols, `JobStore` and `LibraryStore`.

It composes the `Database` (lock, writer thread with group commit, reader threads, loss check)
with the job queries (`SqliteJobs`) and the library queries (`SqliteLibrary`), and adds nothing
of its own but the life cycle."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from ...dblock import DatabaseLock
from ...supervisor import Supervise
from ..changes import LibraryCatalog
from ..protocol import JobStore, LibraryStore
from .catalog import SqliteCatalog
from .database import Database
from .jobs import SqliteJobs
from .library import SqliteLibrary

T = TypeVar("T")


class SqliteStore(SqliteJobs, SqliteLibrary, SqliteCatalog):
    """The SQLite database behind the job engine and the library."""

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
        node: str = "",
    ) -> None:
        self.database = Database(
            path,
            readers=readers,
            max_batch=max_batch,
            listen=listen,
            timeout=timeout,
            on_lost=on_lost,
            supervise=supervise,
        )
        SqliteJobs.__init__(self, self.database, node=node)
        SqliteLibrary.__init__(self, self.database)
        SqliteCatalog.__init__(self, self.database, self)

    @property
    def path(self) -> Path:
        return self.database.path

    @property
    def where(self) -> str:
        return str(self.database.path)

    @property
    def lock(self) -> DatabaseLock:
        """Held from before the database is opened until it is closed: one server per file."""
        return self.database.lock

    @property
    def lost(self) -> bool:
        return self.database.lost

    @property
    def queued(self) -> None:
        """None: the engine counts the queue it holds in memory."""
        return None

    @property
    def feed(self) -> None:
        """None: no other server writes this file, so none has anything to say."""
        return None

    @property
    def probe_queue(self) -> None:
        """None: this server probes its scans itself."""
        return None

    def start_tasks(self) -> list[asyncio.Task[None]]:
        """None: the writer thread is supervised through `supervise`."""
        return []

    async def open(self) -> None:
        await self.database.open()

    async def close(self) -> None:
        await self.database.close()

    async def check_file(self) -> bool:
        return await self.database.check_file()

    async def check(self) -> bool:
        """The periodic check (`check_file`): False while the file system does not answer."""
        return await self.database.check_file()

    def serving_on(self, address: str) -> None:
        """Name the address in the lock file, for the message a second server gets."""
        self.lock.update(listen=address)

    async def bounded(self, work: Awaitable[T]) -> T:
        return await self.database.bounded(work)

    def add_wakeup_listener(self, listener: Callable[[], None]) -> None:
        """This process is the file's only writer (`DatabaseLock`): no job is ever queued
        behind the engine's back, so there is nothing to wake it for."""


if TYPE_CHECKING:  # mypy checks here that SqliteStore is both protocols

    def _satisfies(store: SqliteStore) -> tuple[JobStore, LibraryStore, LibraryCatalog]:
        return store, store, store
