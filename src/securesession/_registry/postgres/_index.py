"""The in-process index of a PostgreSQL registry: ``key -> revision`` of every entry."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from .._base import EntryRef


class Index:
    """``key -> revision``, held by one :class:`~._listener.Listener`: its thread applies
    the changes, and :meth:`forget` is the only other way in. Lookups probe it without a
    lock (each probe is one dict read, atomic under the GIL); every change takes the
    lock, so that :meth:`forget` cannot undo a change applied between its check and its
    removal."""

    def __init__(self) -> None:
        self._entries: dict[str, int] = {}
        self._lock = threading.Lock()

    def find(self, keys: Sequence[str]) -> EntryRef | None:
        entries = self._entries
        for key in keys:
            revision = entries.get(key)
            if revision is not None:
                return EntryRef(key, revision)
        return None

    def get(self, key: str) -> int | None:
        return self._entries.get(key)

    def replace(self, entries: dict[str, int]) -> None:
        with self._lock:
            self._entries = entries

    def put(self, key: str, revision: int | None) -> None:
        """Index *key* at *revision*; ``None`` removes it."""
        with self._lock:
            if revision is None:
                self._entries.pop(key, None)
            else:
                self._entries[key] = revision

    def forget(self, key: str, revision: int) -> None:
        """Remove *key* if it is still at *revision*."""
        with self._lock:
            if self._entries.get(key) == revision:
                del self._entries[key]
