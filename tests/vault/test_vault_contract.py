"""The backend contract suite on the ``vault+http`` registry, with the app's AppRole token."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from securesession import MasterKey, open_registry
from securesession.registry import EncryptedRegistry
from securesession.testing.contract import OpenRegistry, RegistryContract

from .baoserver import Bao


class TestVaultRegistry(RegistryContract):
    @pytest.fixture
    def open_registry(
        self, bao: Bao, prefix: str, app_token: str, monkeypatch: pytest.MonkeyPatch
    ) -> Iterator[OpenRegistry]:
        # Credentials from the environment, as open_registry(url, key) callers have them.
        monkeypatch.setenv("VAULT_TOKEN", app_token)
        opened: list[EncryptedRegistry] = []

        def opener(key: MasterKey) -> EncryptedRegistry:
            registry = open_registry(bao.registry_url(prefix), key)
            assert isinstance(registry, EncryptedRegistry)
            opened.append(registry)
            return registry

        yield opener
        for registry in opened:
            registry.close()
