"""``memory://`` registries: process-local, for tests and short-lived tools."""

from __future__ import annotations

from ._registry.memory import MemoryStore, open_memory_registry

__all__ = ["MemoryStore", "open_memory_registry"]
