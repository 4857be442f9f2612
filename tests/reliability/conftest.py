"""Fixtures for the fault and load suite: each test runs against SQLite and PostgreSQL.

``backend`` gives a fresh registry URL plus hand access to its tables (see
tests/backends.py). The PostgreSQL variant shares the session's throwaway
cluster with tests/postgres.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .. import pgcluster
from ..backends import Backend


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[pgcluster.PostgresCluster]:
    cluster = pgcluster.acquire()
    try:
        yield cluster
    finally:
        pgcluster.release()


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        path = tmp_path / "registry.db"
        return Backend("sqlite", f"sqlite://{path}", path)
    cluster: pgcluster.PostgresCluster = request.getfixturevalue("postgres_cluster")
    url = cluster.url(cluster.create_database())
    return Backend("postgres", url, url)
