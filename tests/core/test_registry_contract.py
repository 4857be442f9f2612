"""The backend contract suite, run against every built-in backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from securesession import MasterKey, open_registry
from securesession.memory import MemoryStore
from securesession.registry import EncryptedRegistry, OpenRegistry, RegistryContract


class TestMemoryRegistry(RegistryContract):
    @pytest.fixture
    def open_registry(self) -> OpenRegistry:
        store = MemoryStore()  # one store per test, reopened under each key
        return lambda key: EncryptedRegistry(store, key, name="memory://")


class TestSQLiteRegistry(RegistryContract):
    @pytest.fixture
    def open_registry(self, tmp_path: Path) -> OpenRegistry:
        def opener(key: MasterKey) -> EncryptedRegistry:
            registry = open_registry(f"sqlite://{tmp_path}/registry.db", key)
            assert isinstance(registry, EncryptedRegistry)
            return registry

        return opener
