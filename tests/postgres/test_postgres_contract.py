"""The backend contract suite, on a real PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from securesession import MasterKey, open_registry
from securesession.registry import EncryptedRegistry
from securesession.testing.contract import OpenRegistry, RegistryContract


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
