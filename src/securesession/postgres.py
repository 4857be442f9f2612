"""``postgresql://`` registries shared by many hosts (needs ``securesession[postgres]``)."""

from __future__ import annotations

from ._registry.postgres import PostgresStore, open_postgres_registry

__all__ = ["PostgresStore", "open_postgres_registry"]
