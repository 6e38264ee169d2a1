"""The tests' PostgreSQL cluster: one throwaway cluster per session
(`mediascan.server.testing_postgres`), started on first use; each test that wants one gets a
fresh empty database (`pg_url`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mediascan.server.testing_postgres import PostgresCluster, postgres_cluster

__all__ = ["PostgresCluster", "pg_url", "postgres", "postgres_cluster"]


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """The session's PostgreSQL cluster, started on first use."""
    with postgres_cluster() as cluster:
        yield cluster


@pytest.fixture
def pg_url(postgres: PostgresCluster) -> str:
    """A fresh empty database of the session's cluster, for one test."""
    return postgres.fresh()
