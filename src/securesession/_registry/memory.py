"""``memory://``: a process-local store, for tests and short-lived tools.

Entries are still sealed, so code paths (and their failure modes) are the ones a
persistent backend runs.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .._crypto import MasterKey
from ._base import EncryptedRegistry, EntryRef, SealedEntry, now, rekeyed_error

__all__ = ["MemoryStore", "open_memory_registry"]


class MemoryStore:
    """A dict of sealed entries. Reads take no lock: a dict probe is atomic in CPython."""

    def __init__(self) -> None:
        self._rows: dict[str, SealedEntry] = {}
        self._key_id: str | None = None
        self._revisions = itertools.count(1)
        self._write_lock = threading.Lock()

    def stored_key_id(self) -> str | None:
        return self._key_id

    def record_key_id(self, key_id: str) -> None:
        with self._write_lock:
            if self._key_id is None:
                self._key_id = key_id

    def find(self, keys: Sequence[str]) -> EntryRef | None:
        rows = self._rows
        for key in keys:
            row = rows.get(key)
            if row is not None:
                return EntryRef(key, row.revision)
        return None

    def read(self, key: str) -> SealedEntry | None:
        return self._rows.get(key)

    def write(
        self, key: str, settings: dict[str, Any], secrets: dict[str, str], *, key_id: str
    ) -> SealedEntry:
        with self._write_lock:
            if self._key_id is not None and self._key_id != key_id:
                raise rekeyed_error("memory://", self._key_id, key_id)
            row = SealedEntry(key, next(self._revisions), now(), dict(settings), dict(secrets))
            self._rows[key] = row
        return row

    def delete(self, key: str) -> bool:
        with self._write_lock:
            return self._rows.pop(key, None) is not None

    def scan(self) -> Iterator[SealedEntry]:
        return iter(sorted(self._rows.values(), key=lambda row: row.key))

    def keys(self) -> Iterator[str]:
        return iter(sorted(self._rows))

    def rewrite_all(self, reseal: Callable[[SealedEntry], dict[str, str]], new_key_id: str) -> None:
        with self._write_lock:
            # Build the whole new table first, then swap: a failure leaves the old one.
            rows = {
                key: SealedEntry(
                    key, next(self._revisions), row.updated_at, row.settings, reseal(row)
                )
                for key, row in self._rows.items()
            }
            self._rows = rows
            self._key_id = new_key_id

    def close(self) -> None:
        """Nothing to release: the rows live as long as the store object."""


def open_memory_registry(url: str, key: MasterKey) -> EncryptedRegistry:
    """Open a new, empty in-memory registry (the URL is ``memory://``)."""
    return EncryptedRegistry(MemoryStore(), key, name="memory://")
