"""Fixtures for the PostgreSQL tests: one throwaway cluster per session, one database per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .. import pgcluster


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[pgcluster.PostgresCluster]:
    """A running cluster on 127.0.0.1 (skips, or fails under CI, without PostgreSQL)."""
    cluster = pgcluster.acquire()
    try:
        yield cluster
    finally:
        pgcluster.release()


@pytest.fixture
def postgres_url(postgres_cluster: pgcluster.PostgresCluster) -> str:
    """The URL of a new, empty database (as the superuser)."""
    return postgres_cluster.url(postgres_cluster.create_database())
