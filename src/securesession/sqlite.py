"""``sqlite:///path`` registries: the embedded default."""

from __future__ import annotations

from ._registry.sqlite import SQLiteStore, open_sqlite_registry

__all__ = ["SQLiteStore", "open_sqlite_registry"]
