"""The tests' PostgreSQL cluster: one throwaway cluster per session
(`mediascan.server.testing_postgres`), started on first use; each test that wants one gets a
fresh empty database (`pg_url`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from mediascan.server.store.postgres.store import PostgresStore
from mediascan.server.testing_postgres import PostgresCluster, postgres_cluster

__all__ = [
    "PostgresCluster",
    "StoreFactory",
    "open_store",
    "pg_url",
    "postgres",
    "postgres_cluster",
]

#: `await open_store(node=..., url=..., **PostgresStore options)`.
StoreFactory = Callable[..., Awaitable[PostgresStore]]


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """The session's PostgreSQL cluster, started on first use."""
    with postgres_cluster() as cluster:
        yield cluster


@pytest.fixture
def pg_url(postgres: PostgresCluster) -> str:
    """A fresh empty database of the session's cluster, for one test."""
    return postgres.fresh()


@pytest.fixture
async def open_store(pg_url: str) -> AsyncIterator[StoreFactory]:
    """`await open_store(node=..., url=...)`: an opened `PostgresStore` on the test's database
    (or `url`), closed at teardown; several side by side play several servers."""
    stores: list[PostgresStore] = []

    async def factory(*, url: str = pg_url, **options: object) -> PostgresStore:
        store = PostgresStore(url, **options)  # type: ignore[arg-type]
        stores.append(store)
        async with asyncio.timeout(30):
            await store.open()
        return store

    yield factory
    for store in stores:
        await store.close()
