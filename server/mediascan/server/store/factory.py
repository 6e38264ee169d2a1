"""The store a server runs on, chosen by `--db`: a file path is SQLite (`SqliteStore`), a
`postgresql://` URL is PostgreSQL (`PostgresStore`). `ServerStore` is what the server's life
cycle needs of either, besides the two protocols."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from ..config import Config
from ..supervisor import Supervise
from .postgres.store import PostgresStore
from .probe_queue import ProbeQueue
from .protocol import JobFeed, JobStore, LibraryStore
from .sqlite.store import SqliteStore


class ServerStore(JobStore, LibraryStore, Protocol):
    """Both protocols, and what the server does with its store around them."""

    @property
    def where(self) -> str:
        """The database, as logs name it."""
        ...

    @property
    def node(self) -> str:
        """The name this server claims jobs under (`Job.node`)."""
        ...

    @property
    def lost(self) -> bool:
        """True once the database is gone for good (a SQLite file removed or replaced)."""
        ...

    @property
    def queued(self) -> int | None:
        """The jobs QUEUED in a shared database at its last `check` (None: the engine's count
        is the queue, or no check answered yet)."""
        ...

    @property
    def feed(self) -> JobFeed | None:
        """What the other servers sharing the database say (None: no other server can)."""
        ...

    @property
    def probe_queue(self) -> ProbeQueue | None:
        """The batches of files to probe that the servers share (None: each scan is probed
        by the server that runs it)."""
        ...

    async def open(self) -> None: ...

    def start_tasks(self) -> list[asyncio.Task[None]]:
        """Start the store's background tasks, for the server to supervise (PostgreSQL: the
        LISTEN connection); they end when the store closes."""
        ...

    async def close(self) -> None: ...

    async def check(self) -> bool:
        """The periodic check: False while the database does not answer (NOT_SERVING)."""
        ...

    def serving_on(self, address: str) -> None:
        """The server now listens on `address` (SQLite's lock file records it)."""
        ...

    async def purge_finished(self, ended_before_ns: int) -> int: ...


def build_store(
    config: Config,
    *,
    on_lost: Callable[[str], None] | None = None,
    supervise: Supervise | None = None,
    roots: Sequence[str] = (),
) -> ServerStore:
    """The store `config.db` names, not opened yet. `on_lost` and `supervise` concern SQLite
    only (the file removed or replaced; the writer thread's death), `roots` (the resolved
    allowed roots) PostgreSQL only: a server claims the jobs below them alone."""
    node = config.effective_node_name
    if isinstance(config.db, Path):
        return SqliteStore(
            config.db,
            listen=config.listen,
            timeout=config.db_timeout,
            on_lost=on_lost,
            supervise=supervise,
            node=node,
        )
    return PostgresStore(
        config.db,
        node=node,
        timeout=config.db_timeout,
        max_queued=config.max_queued,
        lease=config.lease,
        roots=roots,
    )


async def open_store(
    config: Config,
    *,
    on_lost: Callable[[str], None] | None = None,
    supervise: Supervise | None = None,
    roots: Sequence[str] = (),
) -> ServerStore:
    """`build_store`, opened: created or migrated (SchemaTooNew for a newer schema)."""
    store = build_store(config, on_lost=on_lost, supervise=supervise, roots=roots)
    await store.open()
    return store
