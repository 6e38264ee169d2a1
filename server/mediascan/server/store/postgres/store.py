"""`PostgresStore`: one PostgreSQL database behind both protocols, `JobStore` and
`LibraryStore`, shared by any number of servers.

It composes the connection pool (`PgDatabase`) with the job queries (`PostgresJobs`), the
library queries (`PostgresLibrary`), the libraries and their change feeds (`PostgresCatalog`,
over the writes that record the changes, `RecordedWrites`) and the notifications between
servers (`feed`, a `PostgresFeed` with its LISTEN connection), and adds the life cycle. Nothing
here is SQLite's file lock or loss check: an unreachable database is a `StorageError`
(UNAVAILABLE) and a failed `check` (NOT_SERVING) until it answers again."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from ..changes import LibraryCatalog
from ..protocol import JobFeed, JobStore, LibraryStore, StorageError
from .batches import PostgresProbeQueue
from .catalog import PostgresCatalog
from .database import PgDatabase
from .feed import PostgresFeed
from .jobs import PostgresJobs
from .library import PostgresLibrary
from .recorded import RecordedWrites
from .schema import QUEUED, Connection

T = TypeVar("T")


class PostgresStore(PostgresJobs, PostgresLibrary, PostgresCatalog):
    """The PostgreSQL database behind the job engine and the library."""

    def __init__(
        self,
        url: str,
        *,
        node: str = "",
        timeout: float = 5.0,
        max_queued: int = 1000,
        lease: float = 15.0,
        roots: Sequence[str] = (),
    ) -> None:
        """`roots`: the allowed roots; this server claims only the jobs below them."""
        self.database = PgDatabase(url, timeout=timeout, node=node)
        PostgresJobs.__init__(
            self, self.database, node=node, max_queued=max_queued, lease=lease, roots=roots
        )
        #: The writes that record library changes, and the library listeners.
        self.library_writes = RecordedWrites(self.database, self.notices)
        PostgresLibrary.__init__(self, self.database, self.library_writes)
        PostgresCatalog.__init__(self, self.database, self.library_writes)
        self._feed = PostgresFeed(self.database, self.library_writes, node=node, lease=lease)
        self._queued: int | None = None
        #: Migrations this store applied when it opened (0: another server had, or none due).
        self.migrations_applied = 0

    @property
    def where(self) -> str:
        """The database, as logs name it (no password)."""
        return self.database.where

    @property
    def feed(self) -> JobFeed:
        """The notifications of the servers sharing the database (this one's LISTEN
        connection), and the operations only a shared database has."""
        return self._feed

    @property
    def probe_queue(self) -> PostgresProbeQueue:
        """The batches of files to probe, shared by the servers (every scan's probing)."""
        return self._feed.batches

    @property
    def lost(self) -> bool:
        """Never: a database that does not answer is unreachable, and may come back."""
        return False

    async def open(self) -> None:
        """Connect and migrate (SchemaTooNew for a newer schema; StorageError when the
        database cannot be reached)."""
        self.migrations_applied = await self.database.open()

    def start_tasks(self) -> list[asyncio.Task[None]]:
        """Start the LISTEN connection (`db-listener`, reconnecting until the store closes)
        and the leases' renewal and reclaim (`db-leases`)."""
        return self._feed.start_listening()

    async def close(self) -> None:
        await self._feed.stop_listening()
        await self.library_writes.close()
        self.notices.close()
        await self.database.close()

    async def check(self) -> bool:
        """True if the database answers within the time limit. The question asked is the
        number of QUEUED jobs (the partial index `jobs_queued`), kept as `queued`."""

        async def op(conn: Connection) -> int:
            cursor = await conn.execute(f"SELECT count(*) FROM jobs WHERE state = {QUEUED}")
            row = await cursor.fetchone()
            return 0 if row is None else int(row[0])

        try:
            self._queued = await self.database.read(op)
        except StorageError:
            return False
        return True

    @property
    def queued(self) -> int | None:
        """The jobs QUEUED in the database, every server's, at the last `check`."""
        return self._queued

    def serving_on(self, address: str) -> None:
        """Nothing to record: no file lock names the holder on PostgreSQL."""

    async def bounded(self, work: Awaitable[T]) -> T:
        return await self.database.bounded(work)

    @property
    def history(self) -> int:
        """Changes kept per library (older ones are trimmed)."""
        return self.library_writes.history

    @history.setter
    def history(self, changes: int) -> None:
        self.library_writes.history = changes

    def add_library_listener(self, listener: Callable[[str, int], None]) -> None:
        """Called after library changes were committed: by this server at once, by any server
        through `mediascan_library` notifications, and for every library after the LISTEN
        connection came back."""
        self.library_writes.add_listener(listener)

    def add_wakeup_listener(self, listener: Callable[[], None]) -> None:
        """Called when a job was queued or re-queued, by any server (a NOTIFY on the queue's
        channel), and after the LISTEN connection came back."""
        self._feed.add_wakeup_listener(listener)


if TYPE_CHECKING:  # mypy checks here that PostgresStore is both protocols

    def _satisfies(store: PostgresStore) -> tuple[JobStore, LibraryStore, LibraryCatalog]:
        return store, store, store
