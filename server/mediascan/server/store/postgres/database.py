"""The connections to one PostgreSQL database: a pool, the two primitives (`write`, `read`)
with the `--db-timeout` bound, and the mapping of the driver's failures to storage errors.

A write runs in one transaction in a task of its own: it commits even if the caller is
cancelled, and its future resolves only after COMMIT. A lost connection or a database that
does not answer is a `StorageError` (UNAVAILABLE): the server goes on, and so does the
database check that reports NOT_SERVING until the database answers again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import psycopg
from psycopg import conninfo
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ..protocol import DatabaseTimeout, StorageError
from ..waits import seen, within
from .schema import Connection, migrate

log = logging.getLogger(__name__)

T = TypeVar("T")
Op = Callable[[Connection], Coroutine[Any, Any, T]]

#: Connections per server at most: the dispatcher's claims, the job writes and the RPCs' reads.
POOL_SIZE = 8
#: libpq settings used unless the URL gives its own. TCP keepalives find a dead peer of an
#: idle connection in about 25 s instead of the kernel's 2 hours, and `tcp_user_timeout` one
#: that does not acknowledge what was sent within 10 s (a statement sent into a cut link)
#: instead of the kernel's 15 minutes of retransmissions; a connect gives up after 10 s. The
#: database ends the session of a transaction left idle for 5 s (a server frozen in the middle
#: of one, e.g. stopped with SIGSTOP, must not hold its job's row locked against the reclaim
#: of its lease) and cancels a statement that runs for more than 60 s (nothing of ours takes
#: that long; a runaway one must not hold its locks for ever).
DEFAULT_PARAMS = {
    "connect_timeout": "10",
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "10000",
    "options": "-c idle_in_transaction_session_timeout=5s -c statement_timeout=60s",
}


def is_database_url(text: str) -> bool:
    """True for the URLs `--db` treats as PostgreSQL (`postgresql://`, `postgres://`)."""
    return text.startswith(("postgresql://", "postgres://"))


def redacted(url: str) -> str:
    """`url` fit for a log line or an error message: without a password, if it had one."""
    try:
        params = conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "a PostgreSQL URL that libpq cannot parse"
    host = params.get("host") or "localhost"
    port = params.get("port") or "5432"
    user = f"{params['user']}@" if params.get("user") else ""
    return f"postgresql://{user}{host}:{port}/{params.get('dbname', '')}"


def connection_info(url: str, node: str = "") -> str:
    """libpq's connection string for `url`: its own settings, then DEFAULT_PARAMS for those it
    leaves out, and an application name naming the node (seen in `pg_stat_activity`)."""
    params = {k: v for k, v in DEFAULT_PARAMS.items() if k not in conninfo.conninfo_to_dict(url)}
    return conninfo.make_conninfo(url, application_name=_app_name(node), **params)


class PgDatabase:
    """The pool of connections to one database, and how the store uses it."""

    def __init__(self, url: str, *, timeout: float = 5.0, node: str = "") -> None:
        self.url = url
        self.where = redacted(url)
        #: Longest wait of `read` and `bounded` (seconds) before DatabaseTimeout.
        self.timeout = timeout
        self._conninfo = connection_info(url, node)
        #: The connection string of the server's LISTEN connection: the pool's, named apart.
        self.listen_conninfo = connection_info(url, f"{node} listen")
        self._pool: AsyncConnectionPool[Connection] | None = None
        self._writes: set[asyncio.Task[Any]] = set()

    async def open(self) -> int:
        """Connect, then create or migrate the schema (SchemaTooNew for a newer one); the
        number of migrations applied. StorageError if the database cannot be reached."""
        pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            self._conninfo,
            kwargs={"autocommit": True},
            min_size=1,
            max_size=POOL_SIZE,
            open=False,
            timeout=self.timeout,
            check=AsyncConnectionPool.check_connection,
            name="mediascan",
        )
        try:
            async with _storage_errors(self.where):
                await pool.open(wait=True, timeout=self.timeout)
                async with pool.connection() as conn:
                    applied = await migrate(conn, self.where)
        except BaseException:
            await pool.close()
            raise
        self._pool = pool
        return applied

    async def close(self) -> None:
        """Let the writes in flight commit, then close every connection."""
        if self._writes:
            await asyncio.wait(set(self._writes), timeout=self.timeout)
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close(timeout=self.timeout)

    def write(self, op: Op[T]) -> asyncio.Future[T]:
        """Run `op` in one transaction, in a task of its own: the future resolves once it is
        committed, and the write happens even if every caller stops waiting."""
        task = asyncio.ensure_future(self._run(op, transaction=True))
        self._writes.add(task)
        task.add_done_callback(self._written)
        return task

    async def commit(self, op: Op[T]) -> T:
        """`write`, awaited: returns once committed; a cancelled caller does not stop it."""
        return await asyncio.shield(self.write(op))

    async def read(self, op: Op[T]) -> T:
        """Run `op` on a connection (autocommit: each statement sees the latest commits),
        within the time limit."""
        return await self.bounded(self._run(op, transaction=False))

    async def bounded(self, work: Awaitable[T]) -> T:
        """Wait for `work` at most `timeout` seconds, then raise DatabaseTimeout; the work
        itself is not cancelled (a write still commits)."""
        return await within(
            work,
            self.timeout,
            f"{self.where}: it is unreachable, overloaded, or a lock is held elsewhere",
        )

    async def _run(self, op: Op[T], *, transaction: bool) -> T:
        if self._pool is None:
            raise StorageError("the database is closed")
        async with _storage_errors(self.where), self._pool.connection() as conn:
            if not transaction:
                return await op(conn)
            async with conn.transaction():
                return await op(conn)

    def _written(self, task: asyncio.Task[Any]) -> None:
        self._writes.discard(task)
        seen(task)


def _app_name(node: str) -> str:
    return f"mediascan {node}".strip()[:63]


@contextlib.asynccontextmanager
async def _storage_errors(where: str) -> AsyncIterator[None]:
    """The driver's failures of the database or the connection as storage errors; errors of
    our own SQL (a bug) go through unchanged."""
    try:
        yield
    except PoolTimeout:
        raise DatabaseTimeout(
            f"no connection to the database {where} within the time limit: it is unreachable "
            "or every connection is busy; retry later"
        ) from None
    except psycopg.errors.QueryCanceled as exc:
        raise DatabaseTimeout(f"the database {where} cancelled a statement: {exc}") from None
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        log.warning("database %s failed: %s", where, exc)
        raise StorageError(
            f"the database {where} failed: {_first_line(exc)}; retry later"
        ) from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
