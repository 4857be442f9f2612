"""The backend contract suite, on a real PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from securesession import MasterKey, open_registry
from securesession.registry import EncryptedRegistry
from securesession.testing.contract import OpenRegistry, RawAuditWriter, RegistryContract

#: The schema open_registry uses when the URL names none.
SCHEMA = "securesession"


class TestPostgresRegistry(RegistryContract):
    @pytest.fixture
    def open_registry(self, postgres_url: str) -> Iterator[OpenRegistry]:
        opened: list[EncryptedRegistry] = []

        def opener(key: MasterKey) -> EncryptedRegistry:
            registry = open_registry(postgres_url, key)
            assert isinstance(registry, EncryptedRegistry)
            opened.append(registry)
            return registry

        yield opener
        for registry in opened:
            registry.close()

    @pytest.fixture
    def raw_audit(self, postgres_url: str) -> RawAuditWriter:
        """The ``audit`` table, written by a connection of its own, as a database user
        without the master key would."""
        table = sql.Identifier(SCHEMA, "audit")

        def write(seq: int, text: str | None) -> None:
            with psycopg.connect(postgres_url, autocommit=True) as db:
                if text is None:
                    db.execute(sql.SQL("DELETE FROM {} WHERE seq = %s").format(table), (seq,))
                else:
                    db.execute(
                        sql.SQL(
                            "INSERT INTO {} (seq, record) VALUES (%s, %s)"
                            " ON CONFLICT (seq) DO UPDATE SET record = EXCLUDED.record"
                        ).format(table),
                        (seq, text),
                    )

        return write
