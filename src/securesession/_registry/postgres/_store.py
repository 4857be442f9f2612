""":class:`PostgresStore`: the :class:`RegistryStore` on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Final

import psycopg
from psycopg.types.json import Jsonb

from ..._audit import AuditLog, StoredRow, row_digest
from ..._crypto import KeyRing, MasterKey
from ..._exceptions import RegistryCorruptError
from .. import _base as base
from ._listener import Listener, announce
from ._options import parse_url
from ._pool import Connection, Pool, registry_error
from ._schema import Queries, migrate

#: Rows re-encrypted per UPDATE batch during a rotation.
_ROTATE_BATCH: Final = 200
#: A batch of more changes than this sends one "reload" notification instead of one
#: per change: listeners then reload the index once.
_MAX_NOTIFICATIONS: Final = 64


class PostgresStore(base.BatchesOfOne):
    """Sealed entries in PostgreSQL, with an in-process index kept fresh by LISTEN.

    *options* are the URL's query parameters given as keywords instead (``schema``,
    or any libpq parameter); one given both ways is refused.
    """

    def __init__(self, url: str, *, read_only: bool = False, **options: str | int) -> None:
        self._target = parse_url(url, options)
        self.name = self._target.name
        self._q = Queries.build(self._target.schema)
        self._pool = Pool(self._target, read_only=read_only)
        self._listener = Listener(self._target, self._q, self._pool)
        try:
            connection = self._pool.take()
            try:
                migrate(connection, self._target, self._q, read_only=read_only)
            finally:
                self._pool.give(connection)
            self._listener.start()
        except psycopg.Error as exc:
            self.close()
            raise registry_error(self._target, "open", exc) from exc
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"<PostgresStore {self.name}>"

    def stored_key_id(self) -> str | None:
        row = self._pool.query("read", lambda c: c.execute(self._q.key_id).fetchone())
        return None if row is None or row[0] is None else str(row[0])

    def record_key_id(self, key_id: str) -> None:
        self._pool.transact("write", lambda c: c.execute(self._q.set_key_id, (key_id,)))

    def find(self, keys: Sequence[str]) -> base.EntryRef | None:
        return self._listener.find(keys)

    def read(self, key: str) -> base.SealedEntry | None:
        indexed = self._listener.revision_of(key)
        row = self._pool.query("read", lambda c: c.execute(self._q.read, (key,)).fetchone())
        if row is None:
            # The row is gone but its removal's notification has not arrived yet: have
            # the listener drop it from the index now, so the next lookup finds the entry
            # that really matches (unless the listener changed it meanwhile).
            if indexed is not None:
                self._listener.forget(key, indexed)
            return None
        return self._sealed(row)

    def _sealed(self, row: tuple[Any, ...]) -> base.SealedEntry:
        key, revision, updated_at, settings, secrets = row
        where = f"registry {self.name}, entry {key}"
        if not isinstance(settings, dict):
            raise RegistryCorruptError(f"{where}: settings are not a JSON object")
        if not isinstance(secrets, dict) or not all(
            isinstance(name, str) and isinstance(token, str) for name, token in secrets.items()
        ):
            raise RegistryCorruptError(f"{where}: secrets are not a JSON object of tokens")
        return base.SealedEntry(str(key), int(revision), float(updated_at), settings, secrets)

    def _lock_revision(self, connection: Connection) -> int:
        row = connection.execute(self._q.lock_state).fetchone()
        if row is None:
            raise RegistryCorruptError(f"registry {self.name}: its state row is missing")
        return int(row[0])

    def apply(self, batch: base.Batch) -> base.Applied:
        updated_at = base.now()

        # Run again from the start if the pool retries on a fresh connection: nothing
        # here outlives one attempt.
        def body(connection: Connection) -> tuple[base.Applied, int]:
            start = revision = self._lock_revision(connection)
            # The state row is locked now, so no rotation or other writer can slip in
            # before COMMIT: what is checked here stays true.
            stored = connection.execute(self._q.key_id).fetchone()
            if (
                batch.key_id is not None
                and stored is not None
                and stored[0] is not None
                and stored[0] != batch.key_id
            ):
                raise base.rekeyed_error(self.name, stored[0], batch.key_id)
            base.check_expected(
                self.name, batch.expect, lambda key: self._stored_revision(connection, key)
            )
            journal = batch.journal
            changes: list[base.Change] = []
            notices: list[tuple[str, int, str]] = []
            for write in batch.writes:
                before = self._row(connection, write.key) if journal else None
                revision += 1
                connection.execute(
                    self._q.upsert,
                    (write.key, revision, updated_at, Jsonb(write.settings), Jsonb(write.secrets)),
                )
                row = base.SealedEntry(
                    write.key, revision, updated_at, write.settings, write.secrets
                )
                changes.append(base.Change(write.key, revision, before, row))
                notices.append(("u", revision, write.key))
            for key in batch.removes:
                before = self._row(connection, key) if journal else None
                if connection.execute(self._q.delete, (key,)).rowcount:
                    revision += 1
                    changes.append(base.Change(key, revision, before, None))
                    notices.append(("d", revision, key))
            if revision != start:
                connection.execute(self._q.set_revision, (revision,))
            state = batch.state_after([change.after for change in changes if change.after])
            if state is not None:
                connection.execute(self._q.write_state, state)
            if journal is not None and (changes or batch.state is not None):
                self._append_audit(connection, journal, changes)
            if len(notices) > _MAX_NOTIFICATIONS:
                announce(connection, self._target.channel, "*", revision)
            else:
                for op, number, key in notices:
                    announce(connection, self._target.channel, op, number, key)
            written = [change.after for change in changes if change.after is not None]
            removed = [change.key for change in changes if change.after is None]
            return base.Applied(written, removed), revision

        applied, revision = self._pool.transact("write", body)
        if applied.written or applied.removed:
            self._listener.await_change(revision)
        return applied

    def _append_audit(
        self, connection: Connection, journal: base.Journal, changes: Sequence[base.Change]
    ) -> None:
        last = connection.execute(self._q.last_audit).fetchone()
        records = journal(
            changes, None if last is None else base.AuditRow(int(last[0]), str(last[1]))
        )
        if records:
            with connection.cursor() as cursor:
                cursor.executemany(
                    self._q.append_audit, [(record.seq, record.record) for record in records]
                )

    #: PostgreSQL keeps the audit log, in the ``audit`` table.
    keeps_audit: Final = True

    def start_audit(self, start: base.AuditStart) -> bool:
        pending = self._pool.query(
            "read", lambda c: c.execute(self._q.audit_start_pending).fetchone()
        )
        if pending is None or not pending[0]:
            return False  # the common case, one query: not waiting

        def body(connection: Connection) -> bool:
            revision = self._lock_revision(connection)
            # The state row is locked: another process may have started it meanwhile.
            waiting = connection.execute(self._q.audit_start_pending).fetchone()
            if not waiting or not waiting[0] or connection.execute(self._q.last_audit).fetchone():
                return False
            rows = [self._sealed(row) for row in connection.execute(self._q.scan).fetchall()]
            first = start(revision, rows)
            connection.execute(self._q.append_audit, (first.seq, first.record))
            connection.execute(self._q.audit_started)
            return True

        return self._pool.transact("start the audit log of", body)

    def read_audit(self) -> AuditLog:
        def read(connection: Connection) -> AuditLog:
            # One snapshot: the records, the revision and the entries agree.
            with connection.transaction():
                connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                rows = connection.execute(self._q.audit_all).fetchall()
                state = connection.execute(self._q.audit_state).fetchone()
                entries = connection.execute(self._q.scan).fetchall()
            if state is None:
                raise RegistryCorruptError(f"registry {self.name}: its state row is missing")
            sealed = (self._sealed(row) for row in entries)
            return AuditLog(
                rows=[(int(seq), str(record)) for seq, record in rows],
                revision=int(state[0]),
                entries={row.key: StoredRow(row.revision, row_digest(row)) for row in sealed},
                start_pending=state[1] is not None,
            )

        return self._pool.query("read the audit log of", read)

    def _stored_revision(self, connection: Connection, key: str) -> int | None:
        row = connection.execute(self._q.revision_of, (key,)).fetchone()
        return None if row is None else int(row[0])

    def _row(self, connection: Connection, key: str) -> base.SealedEntry | None:
        row = connection.execute(self._q.read, (key,)).fetchone()
        return None if row is None else self._sealed(row)

    def state(self, name: str) -> str | None:
        row = self._pool.query("read", lambda c: c.execute(self._q.read_state, (name,)).fetchone())
        return None if row is None else str(row[0])

    def scan(self) -> Iterator[base.SealedEntry]:
        rows = self._pool.query("read", lambda c: c.execute(self._q.scan).fetchall())
        for row in rows:
            yield self._sealed(row)

    def keys(self) -> Iterator[str]:
        rows = self._pool.query("read", lambda c: c.execute(self._q.index).fetchall())
        return iter(sorted(str(row[0]) for row in rows))  # code-point order, as scan's

    def rewrite_all(self, rekey: base.Rekey) -> int:
        # Run again from the start if the pool retries on a fresh connection: the
        # count is the committed run's, returned by it.
        def body(connection: Connection) -> tuple[int, int]:
            revision = self._lock_revision(connection)
            rows = connection.execute(self._q.scan_for_update).fetchall()
            changes: list[base.Change] = []
            # Batches keep memory flat and make the rotation's progress visible to a
            # server-side observer; it commits (or not) as a whole either way.
            for start in range(0, len(rows), _ROTATE_BATCH):
                batch = []
                for row in rows[start : start + _ROTATE_BATCH]:
                    revision += 1
                    sealed = self._sealed(row)
                    after = rekey.resealed(sealed, revision)
                    batch.append((Jsonb(after.secrets), revision, sealed.key))
                    changes.append(base.Change(sealed.key, revision, sealed, after))
                with connection.cursor() as cursor:
                    cursor.executemany(self._q.reseal, batch)
            connection.execute(self._q.rotate_state, (revision, rekey.new_key_id))
            if rekey.restate is not None:
                states = {
                    str(name): str(value)
                    for name, value in connection.execute(self._q.all_states).fetchall()
                }
                remapped = rekey.restate(changes, states)
                if remapped:
                    with connection.cursor() as cursor:
                        cursor.executemany(self._q.write_state, list(remapped.items()))
            if rekey.journal is not None:
                self._append_audit(connection, rekey.journal, changes)
            announce(connection, self._target.channel, "*", revision)
            return revision, len(changes)

        revision, count = self._pool.transact("rotate", body)
        self._listener.await_change(revision)
        return count

    def close(self) -> None:
        # The pool first: from now on no connection is opened and nothing retried.
        self._pool.close()
        self._listener.close()


def open_postgres_registry(
    url: str, key: MasterKey | KeyRing, *, read_only: bool = False, **options: str | int
) -> base.EncryptedRegistry:
    """Open (creating or migrating its schema if needed) the registry at *url*;
    *read_only*: one at the current schema, in read-only transactions, writing nothing.

    *options* are the URL's query parameters as keywords, ``schema`` or any libpq
    parameter: ``open_postgres_registry(url, key, schema="team_b", sslmode="verify-full")``.
    """
    store = PostgresStore(url, read_only=read_only, **options)
    return base.EncryptedRegistry(store, key, name=store.name, read_only=read_only)
