"""``memory://``: a process-local store, for tests and short-lived tools.

Entries are still sealed, so code paths (and their failure modes) are the ones a
persistent backend runs.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .._crypto import KeyRing, MasterKey
from ._base import (
    Applied,
    AuditRow,
    Batch,
    Change,
    EncryptedRegistry,
    EntryRef,
    SealedEntry,
    SealedWrite,
    check_expected,
    now,
    rekeyed_error,
)

__all__ = ["MemoryStore", "open_memory_registry"]


class MemoryStore:
    """A dict of sealed entries. Reads take no lock: a dict probe is atomic in CPython."""

    def __init__(self) -> None:
        self._rows: dict[str, SealedEntry] = {}
        self._key_id: str | None = None
        self._states: dict[str, str] = {}
        self._audit: list[AuditRow] = []
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
        return self.apply(Batch(key_id, writes=[SealedWrite(key, settings, secrets)])).written[0]

    def delete(self, key: str) -> bool:
        return bool(self.apply(Batch(None, removes=[key])).removed)

    def apply(self, batch: Batch) -> Applied:
        with self._write_lock:
            if batch.key_id is not None and self._key_id not in (None, batch.key_id):
                raise rekeyed_error("memory://", self._key_id, batch.key_id)
            check_expected("memory://", batch.expect, self._revision_of)
            # Everything is computed on copies and swapped in at the end: an exception
            # (from the journal, say) leaves the store as it was.
            rows = dict(self._rows)
            changes: list[Change] = []
            written: list[SealedEntry] = []
            updated_at = now()
            for write in batch.writes:
                row = SealedEntry(
                    write.key,
                    next(self._revisions),
                    updated_at,
                    dict(write.settings),
                    dict(write.secrets),
                )
                changes.append(Change(write.key, row.revision, rows.get(write.key), row))
                rows[write.key] = row
                written.append(row)
            for key in batch.removes:
                before = rows.pop(key, None)
                if before is not None:
                    changes.append(Change(key, next(self._revisions), before, None))
            records: list[AuditRow] = []
            if batch.journal is not None and changes:
                records = list(batch.journal(changes, self._audit[-1] if self._audit else None))
            self._rows = rows
            self._audit.extend(records)
            if batch.state is not None:
                self._states[batch.state[0]] = batch.state[1]
        return Applied(written, [change.key for change in changes if change.after is None])

    def _revision_of(self, key: str) -> int | None:
        row = self._rows.get(key)
        return None if row is None else row.revision

    def state(self, name: str) -> str | None:
        return self._states.get(name)

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


def open_memory_registry(url: str, key: MasterKey | KeyRing) -> EncryptedRegistry:
    """Open a new, empty in-memory registry (the URL is ``memory://``)."""
    return EncryptedRegistry(MemoryStore(), key, name="memory://")
