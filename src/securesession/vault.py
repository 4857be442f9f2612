"""Vault/OpenBao (needs ``securesession[vault]``): the KV registry, and the master key
wrapped by a Transit key (envelope encryption), over one :class:`VaultConnection`."""

from __future__ import annotations

from ._registry.vault import VaultStore, open_vault_registry
from ._vault import (
    AppRole,
    TransitKey,
    VaultConnection,
    rewrap_key,
    transit_key_version,
    unwrap_key,
    wrap_new_key,
)

__all__ = [
    "AppRole",
    "TransitKey",
    "VaultConnection",
    "VaultStore",
    "open_vault_registry",
    "rewrap_key",
    "transit_key_version",
    "unwrap_key",
    "wrap_new_key",
]
