"""``memory://``: a process-local store, for tests and short-lived tools.

Entries are still sealed, so code paths (and their failure modes) are the ones a
persistent backend runs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Final

from .._crypto import KeyRing, MasterKey
from . import _base as base

if TYPE_CHECKING:
    from .._audit import AuditLog

__all__ = ["MemoryStore", "open_memory_registry"]


class MemoryStore(base.BatchesOfOne):
    """A dict of sealed entries. Reads take no lock: a dict probe is atomic in CPython."""

    def __init__(self) -> None:
        self._rows: dict[str, base.SealedEntry] = {}
        # Replaced by every change, once its table is in place (a token, not the table:
        # a front-end keeps stamps, and must not keep old tables with them).
        self._stamp = object()
        self._key_id: str | None = None
        self._states: dict[str, str] = {}
        self._audit: list[base.AuditRow] = []
        self._audit_start_pending = True  # a new store: the first registry starts its log
        self._revision = 0  # registry-wide: every change takes the next one
        self._write_lock = threading.Lock()

    def stored_key_id(self) -> str | None:
        return self._key_id

    def record_key_id(self, key_id: str) -> None:
        with self._write_lock:
            if self._key_id is None:
                self._key_id = key_id

    def find(self, keys: Sequence[str]) -> base.EntryRef | None:
        rows = self._rows
        for key in keys:
            row = rows.get(key)
            if row is not None:
                return base.EntryRef(key, row.revision)
        return None

    def lookup_stamp(self) -> object:
        return self._stamp

    def read(self, key: str) -> base.SealedEntry | None:
        return self._rows.get(key)

    def apply(self, batch: base.Batch) -> base.Applied:
        with self._write_lock:
            if batch.key_id is not None and self._key_id not in (None, batch.key_id):
                raise base.rekeyed_error("memory://", self._key_id, batch.key_id)
            base.check_expected("memory://", batch.expect, self._revision_of)
            # Everything is computed on copies and swapped in at the end: an exception
            # (from the journal, say) leaves the store as it was.
            rows = dict(self._rows)
            revision = self._revision
            changes: list[base.Change] = []
            written: list[base.SealedEntry] = []
            updated_at = base.now()
            for write in batch.writes:
                revision += 1
                row = base.SealedEntry(
                    write.key,
                    revision,
                    updated_at,
                    dict(write.settings),
                    dict(write.secrets),
                )
                changes.append(base.Change(write.key, row.revision, rows.get(write.key), row))
                rows[write.key] = row
                written.append(row)
            for key in batch.removes:
                before = rows.pop(key, None)
                if before is not None:
                    revision += 1
                    changes.append(base.Change(key, revision, before, None))
            state = batch.state_after(written)
            records: list[base.AuditRow] = []
            if batch.journal is not None and (changes or batch.state is not None):
                records = list(batch.journal(changes, self._last_record()))
            self._rows = rows
            self._stamp = object()  # after the swap: see lookup_stamp
            self._revision = revision
            self._audit.extend(records)
            if state is not None:
                self._states[state[0]] = state[1]
        return base.Applied(written, [change.key for change in changes if change.after is None])

    def _last_record(self) -> base.AuditRow | None:
        return self._audit[-1] if self._audit else None

    def _revision_of(self, key: str) -> int | None:
        row = self._rows.get(key)
        return None if row is None else row.revision

    def state(self, name: str) -> str | None:
        return self._states.get(name)

    #: The memory store keeps an audit log for as long as it lives.
    keeps_audit: Final = True

    def start_audit(self, start: base.AuditStart) -> bool:
        with self._write_lock:
            if not self._audit_start_pending or self._audit:
                return False
            rows = sorted(self._rows.values(), key=lambda row: row.key)
            self._audit.append(start(self._revision, rows))
            self._audit_start_pending = False
        return True

    def read_audit(self) -> AuditLog:
        from .._audit import AuditLog, StoredRow, row_digest  # audit readers only

        with self._write_lock:
            return AuditLog(
                rows=[(row.seq, row.record) for row in self._audit],
                revision=self._revision,
                entries={
                    key: StoredRow(row.revision, row_digest(row)) for key, row in self._rows.items()
                },
                start_pending=self._audit_start_pending,
            )

    def scan(self) -> Iterator[base.SealedEntry]:
        return iter(sorted(self._rows.values(), key=lambda row: row.key))

    def keys(self) -> Iterator[str]:
        return iter(sorted(self._rows))

    def rewrite_all(self, rekey: base.Rekey) -> int:
        with self._write_lock:
            # Build the whole new table first, then swap: a failure leaves the old one.
            revision = self._revision
            rows: dict[str, base.SealedEntry] = {}
            changes: list[base.Change] = []
            for key, row in sorted(self._rows.items()):
                revision += 1
                rows[key] = rekey.resealed(row, revision)
                changes.append(base.Change(key, revision, row, rows[key]))
            restate, journal = rekey.restate, rekey.journal
            states = {} if restate is None else dict(restate(changes, dict(self._states)))
            records = [] if journal is None else list(journal(changes, self._last_record()))
            self._rows = rows
            self._stamp = object()  # after the swap: see lookup_stamp
            self._revision = revision
            self._audit.extend(records)
            self._states.update(states)
            self._key_id = rekey.new_key_id
        return len(changes)

    def close(self) -> None:
        """Nothing to release: the rows live as long as the store object."""


def open_memory_registry(
    url: str, key: MasterKey | KeyRing, *, read_only: bool = False
) -> base.EncryptedRegistry:
    """Open a new, empty in-memory registry (the URL is ``memory://``)."""
    return base.EncryptedRegistry(MemoryStore(), key, name="memory://", read_only=read_only)
