"""The backend contract suite, run against every built-in backend."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from securesession import MasterKey, open_registry
from securesession.memory import MemoryStore
from securesession.registry import EncryptedRegistry, OpenRegistry, RegistryContract
from securesession.testing.contract import RawAuditWriter


class TestMemoryRegistry(RegistryContract):
    """No ``raw_audit``: nobody outside the process can write a memory store, so there
    is no store writer to tamper with its log."""

    @pytest.fixture
    def open_registry(self) -> OpenRegistry:
        store = MemoryStore()  # one store per test, reopened under each key
        return lambda key: EncryptedRegistry(store, key, name="memory://")


class TestSQLiteRegistry(RegistryContract):
    @pytest.fixture
    def path(self, tmp_path: Path) -> Path:
        return tmp_path / "registry.db"

    @pytest.fixture
    def open_registry(self, path: Path) -> OpenRegistry:
        def opener(key: MasterKey) -> EncryptedRegistry:
            registry = open_registry(f"sqlite://{path}", key)
            assert isinstance(registry, EncryptedRegistry)
            return registry

        return opener

    @pytest.fixture
    def raw_audit(self, path: Path) -> RawAuditWriter:
        """The file's ``audit`` table, written on a connection of its own (another
        process's, as far as the registry can tell)."""

        def write(seq: int, text: str | None) -> None:
            with contextlib.closing(sqlite3.connect(path)) as db, db:
                if text is None:
                    db.execute("DELETE FROM audit WHERE seq = ?", (seq,))
                else:
                    db.execute(
                        "INSERT OR REPLACE INTO audit (seq, record) VALUES (?, ?)", (seq, text)
                    )

        return write
