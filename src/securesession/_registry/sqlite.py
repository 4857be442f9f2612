"""``sqlite:///path/to/registry.db``: the embedded default.

One row per entry (public settings as JSON, ciphertext tokens as JSON), keyed by
the canonical prefix so a lookup is a handful of primary-key probes. WAL mode lets
readers proceed while a writer commits; writers take ``BEGIN IMMEDIATE`` so
concurrent processes serialise instead of failing half-way. Each thread uses its
own connection.

Removed and replaced ciphertext does not linger: every connection sets
``PRAGMA secure_delete=ON`` (freed cells and pages are overwritten with zeros), and
a removal or a key rotation ends with ``PRAGMA wal_checkpoint(TRUNCATE)``, so the
page images that still held the old tokens leave the ``-wal`` file too.

Lookups are memoised and the warm path runs no SQL statement: whether another
connection has committed is re-checked at most once per *recheck_interval* (10 ms by
default) for the whole store, on one watcher connection (see :class:`SQLiteStore`).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from .._crypto import KeyRing, MasterKey
from .._exceptions import RegistryCorruptError, RegistryError, SchemaVersionError
from . import _base as base

if TYPE_CHECKING:
    from .._audit import AuditLog

__all__ = ["SQLiteStore", "open_sqlite_registry"]

logger = logging.getLogger("securesession")

#: 2 added the ``states`` and ``audit`` tables; 3 the audit record format 2, whose
#: row digests a log of format 1 (never released) lacks, so migrating from 2 starts
#: the log again. Older files are migrated on open.
SCHEMA_VERSION: Final = 3
_BUSY_TIMEOUT_S: Final = 30.0

_COLUMNS: Final = "key, revision, updated_at, settings, secrets"
_SELECT_ROW: Final = f"SELECT {_COLUMNS} FROM entries WHERE key = ?"  # noqa: S608
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS entries (
    key        TEXT PRIMARY KEY,
    revision   INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    settings   TEXT NOT NULL,
    secrets    TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS states (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit (seq INTEGER PRIMARY KEY, record TEXT NOT NULL);
"""


#: Marks a store waiting for its audit log's first record (created or migrated, no
#: record yet), with the revision it was marked at; start_audit removes it in the
#: transaction that writes the record. Without it an empty log means removed records.
_AWAIT_AUDIT_START: Final = (
    "INSERT OR REPLACE INTO meta SELECT 'audit_from', value FROM meta WHERE name = 'revision'"
)

_MEMO_SIZE: Final = 4096
#: How long a memoised lookup may go without asking SQLite whether another
#: connection has committed: the staleness bound for changes made elsewhere.
RECHECK_INTERVAL_S: Final = 0.010


class _Connection(sqlite3.Connection):
    """A connection that can be weakly referenced, so a finished thread's connection
    is closed when its thread-local storage goes, not kept until :meth:`close`."""


class SQLiteStore(base.BatchesOfOne):
    """Sealed entries in one SQLite file.

    Lookups are memoised per thread; a warm lookup is a clock read and a dict probe,
    with no SQL statement (a statement costs microseconds and releases the GIL).
    Every memo is dropped when the store's *generation* moves, which happens:

    * at once after every commit made through this store, from any thread;
    * when a re-check finds that another connection (another process, or another
      ``SQLiteStore`` on the same file) has committed. The re-check is
      ``PRAGMA data_version`` on one watcher connection that never writes, run by
      the first lookup that starts *recheck_interval* seconds (on *clock*) or more
      after the previous re-check started; one thread runs it for all. So a commit
      made elsewhere is seen by every lookup that starts *recheck_interval* or
      more after the commit returned: that is the staleness bound (10 ms by
      default; 0 re-checks on every lookup);
    * at once after :meth:`read`, which re-checks (:meth:`recheck`) before reading
      its row. A read is what a cache miss and the reload after a 401/407 do, so the
      lookup that follows a reload sees every commit made before it.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        recheck_interval: float = RECHECK_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        read_only: bool = False,
    ) -> None:
        if not 0 <= recheck_interval <= 0.1:
            raise ValueError("recheck_interval must be between 0 and 0.1 seconds")
        self.path = Path(path)
        #: Every connection opened with SQLite's ``mode=ro``: the file is never written
        #: (no schema created or migrated, no WAL checkpoint into it).
        self.read_only = read_only
        self.recheck_interval = recheck_interval
        self._clock = clock
        self._local = threading.local()
        self._connections: weakref.WeakSet[_Connection] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._closed = False
        # Moves on every change the memos must not survive (see the class docstring).
        self._generation = 0
        # The watcher: its data_version changes whenever any other connection commits.
        self._watcher: sqlite3.Connection | None = None
        self._watcher_lock = threading.Lock()
        self._data_version: int | None = None
        self._recheck_due = -float("inf")
        self._migrate()

    def __repr__(self) -> str:
        return f"<SQLiteStore {str(self.path)!r}>"

    # -- connections -----------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is not None:
            return connection
        connection = self._open()
        self._local.connection = connection
        self._local.memo = {}
        self._local.generation = None
        return connection

    def _open(self) -> _Connection:
        if self._closed:
            raise RegistryError(f"registry {self.path} is closed")
        try:
            connection = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=ro" if self.read_only else self.path,
                timeout=_BUSY_TIMEOUT_S,
                isolation_level=None,
                check_same_thread=False,
                factory=_Connection,
                uri=self.read_only,
            )
            if not self.read_only:  # a file's journal mode is the writers' to set
                connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            # Deleted content (a removed entry, the old-key tokens a rotation
            # replaced) is overwritten with zeros instead of left in free space.
            connection.execute("PRAGMA secure_delete=ON")
        except sqlite3.Error as exc:
            raise self._error("cannot open", exc) from exc
        with self._lock:
            self._connections.add(connection)
        return connection

    def _error(self, action: str, exc: sqlite3.Error) -> RegistryError:
        if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
            return RegistryCorruptError(
                f"{action} registry {self.path}: not a valid registry ({exc})"
            )
        return RegistryError(f"{action} registry {self.path}: {exc}")

    def _migrate(self) -> None:
        if not self.path.parent.is_dir():
            raise RegistryError(f"cannot open registry {self.path}: directory does not exist")
        if self.read_only:
            self._check_schema()
            return
        connection = self._connection()
        try:
            if self._schema_version(connection) == SCHEMA_VERSION:
                # The common open: no write lock taken, no DDL parsed.
                return
            connection.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    connection.execute(statement)
            row = connection.execute("SELECT max(version) FROM schema_version").fetchone()
            version = row[0]
            if version is None:
                connection.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
                connection.execute("INSERT OR IGNORE INTO meta VALUES ('revision', '0')")
                connection.execute(_AWAIT_AUDIT_START)
            elif version > SCHEMA_VERSION:
                connection.execute("ROLLBACK")
                raise SchemaVersionError(
                    f"registry {self.path} has schema version {version}, newer than the "
                    f"{SCHEMA_VERSION} this securesession understands; upgrade securesession"
                )
            elif version < SCHEMA_VERSION:
                # The new tables were created above; the version says so from now on,
                # and a securesession that predates them refuses to write here.
                connection.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
                # The log starts again in record format 2 (a log of format 1 was never
                # released); the first registry opened with the key writes its first
                # record, which lists the entries stored then (start_audit).
                connection.execute("DELETE FROM audit")
                connection.execute(_AWAIT_AUDIT_START)
                logger.info("registry %s: schema migrated to version %d", self.path, SCHEMA_VERSION)
            connection.execute("COMMIT")
        except sqlite3.Error as exc:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            self.close()
            raise self._error("cannot open", exc) from exc
        except SchemaVersionError:
            self.close()
            raise

    @staticmethod
    def _schema_version(connection: sqlite3.Connection) -> object:
        """The stored schema version, read without a transaction; ``None`` if there is
        no schema yet (a new file), which :meth:`_migrate` then creates."""
        try:
            return connection.execute("SELECT max(version) FROM schema_version").fetchone()[0]
        except sqlite3.OperationalError:
            return None

    def _check_schema(self) -> None:
        """What :meth:`_migrate` is for a read-only store: the schema must be current
        already, since upgrading it would write."""
        if not self.path.is_file():
            raise RegistryError(f"cannot open registry {self.path}: it does not exist")
        try:
            connection = self._connection()
            tables = connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
            ).fetchone()
            row = None
            if tables is not None:
                row = connection.execute("SELECT max(version) FROM schema_version").fetchone()
        except sqlite3.Error as exc:
            self.close()
            raise self._error("cannot open", exc) from exc
        version = None if row is None else row[0]
        if version == SCHEMA_VERSION:
            return
        self.close()
        if tables is None:
            raise RegistryCorruptError(
                f"cannot open registry {self.path}: not a registry (no schema_version table)"
            )
        if isinstance(version, int) and version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"registry {self.path} has schema version {version}, newer than the "
                f"{SCHEMA_VERSION} this securesession understands; upgrade securesession"
            )
        raise RegistryError(
            f"registry {self.path} needs a schema upgrade (it has version {version or 0}, "
            f"this securesession uses {SCHEMA_VERSION}), which a read-only open does not "
            "make; open it once with write access (securesession list, say), then again"
        )

    # -- RegistryStore -----------------------------------------------------------

    def _meta(self, name: str) -> str | None:
        row = (
            self._connection().execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        )
        return None if row is None else str(row[0])

    def stored_key_id(self) -> str | None:
        try:
            return self._meta("key_id")
        except sqlite3.Error as exc:
            raise self._error("cannot read", exc) from exc

    def record_key_id(self, key_id: str) -> None:
        with self._transaction("write") as connection:
            connection.execute("INSERT OR IGNORE INTO meta VALUES ('key_id', ?)", (key_id,))

    def find(self, keys: Sequence[str]) -> base.EntryRef | None:
        connection = self._connection()
        local = self._local
        memo: dict[tuple[str, ...], base.EntryRef | None] = local.memo
        # Read before the query below: a result memoised under this generation is
        # dropped by the next lookup if the generation moves meanwhile.
        generation = self._current_generation()
        if generation != local.generation or len(memo) >= _MEMO_SIZE:
            memo.clear()
            local.generation = generation
        probe = tuple(keys)
        try:
            return memo[probe]
        except KeyError:
            pass
        memo[probe] = found = self._query_longest(connection, probe)
        return found

    def lookup_stamp(self) -> object | None:
        """The generation (see the class docstring), re-checked first when due, so a
        front-end that skips lookups while it holds keeps the same staleness bound;
        ``None`` once the store is closed."""
        return None if self._closed else self._current_generation()

    def _current_generation(self) -> int:
        """The generation, after the re-check for other connections' commits if one
        is due."""
        if self._clock() >= self._recheck_due:
            self._recheck(force=False)
        return self._generation

    def recheck(self) -> None:
        """Ask SQLite now whether another connection has committed: every lookup that
        starts after this returns sees every commit that returned before it was called
        (as :meth:`read` does before it reads)."""
        self._recheck(force=True)

    def _recheck(self, *, force: bool) -> None:
        """Ask SQLite whether another connection has committed since the last
        re-check, and if so move the generation (every thread's memo goes).

        Unless *force*d, skipped when another thread's re-check started, while this
        one waited for the lock, within *recheck_interval* of now: that one saw every
        commit this lookup must see."""
        with self._watcher_lock:
            started = self._clock()
            if not force and started < self._recheck_due:
                return
            try:
                watcher = self._watcher
                if watcher is None:
                    watcher = self._watcher = self._open()
                version = watcher.execute("PRAGMA data_version").fetchone()[0]
            except sqlite3.Error as exc:
                raise self._error("cannot read", exc) from exc
            if version != self._data_version:
                self._data_version = version
                self._advance()
            # Published last: a lookup that sees the new due time sees the new generation.
            self._recheck_due = started + self.recheck_interval

    def _advance(self) -> None:
        with self._lock:
            self._generation += 1

    def _query_longest(
        self, connection: sqlite3.Connection, keys: tuple[str, ...]
    ) -> base.EntryRef | None:
        # Every candidate is a prefix of the next-longer one, so the longest stored
        # key wins; each IN probe is a primary-key lookup, never a scan.
        placeholders = ",".join("?" * len(keys))  # only "?"s: the keys are bound parameters
        query = (
            f"SELECT key, revision FROM entries WHERE key IN ({placeholders})"  # noqa: S608
            " ORDER BY length(key) DESC LIMIT 1"
        )
        try:
            row = connection.execute(query, keys).fetchone()
        except sqlite3.Error as exc:
            raise self._error("cannot read", exc) from exc
        if row is None:
            return None
        return base.EntryRef(row[0], self._revision(row[0], row[1]))

    def read(self, key: str) -> base.SealedEntry | None:
        # Off the warm path (a cache miss, or the reload after a 401/407): re-check
        # now, so the lookup that follows sees every commit made before this read.
        self.recheck()
        try:
            row = (
                self._connection()
                .execute(
                    _SELECT_ROW,
                    (key,),
                )
                .fetchone()
            )
        except sqlite3.Error as exc:
            raise self._error("cannot read", exc) from exc
        return None if row is None else self._sealed(row)

    def _sealed(self, row: tuple[Any, ...]) -> base.SealedEntry:
        key, revision, updated_at, settings, secrets = row
        where = f"registry {self.path}, entry {key}"
        tokens = base.loads(secrets, f"{where}: secrets")
        if not all(isinstance(token, str) for token in tokens.values()):
            raise RegistryCorruptError(f"{where}: secrets are not tokens")
        # A hand-edited cell may hold any type (SQLite keeps text 'x' in an INTEGER
        # column): refuse it by name instead of letting int()/float() raise ValueError.
        if isinstance(updated_at, bool) or not isinstance(updated_at, (int, float)):
            raise RegistryCorruptError(f"{where}: updated_at is not a number")
        return base.SealedEntry(
            key,
            self._revision(key, revision),
            float(updated_at),
            base.loads(settings, f"{where}: settings"),
            tokens,
        )

    def _revision(self, key: str, revision: object) -> int:
        if isinstance(revision, bool) or not isinstance(revision, int):
            raise RegistryCorruptError(
                f"registry {self.path}, entry {key}: revision is not an integer"
            )
        return revision

    def _next_revision(self, connection: sqlite3.Connection) -> int:
        connection.execute(
            "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE name = 'revision'"
        )
        row = connection.execute("SELECT value FROM meta WHERE name = 'revision'").fetchone()
        try:
            return int(row[0])
        except (TypeError, ValueError):
            # Raised inside the transaction: it is rolled back, nothing is written.
            raise RegistryCorruptError(
                f"registry {self.path}: its revision counter (the 'revision' row of its "
                "meta table) is missing; restore the file from a backup"
            ) from None

    def apply(self, batch: base.Batch) -> base.Applied:
        updated_at = base.now()
        with self._transaction("write") as connection:
            # BEGIN IMMEDIATE holds the write lock: no rotation or other writer can
            # change what is checked here before COMMIT.
            stored = connection.execute("SELECT value FROM meta WHERE name = 'key_id'").fetchone()
            if batch.key_id is not None and stored is not None and stored[0] != batch.key_id:
                raise base.rekeyed_error(str(self.path), stored[0], batch.key_id)
            base.check_expected(
                str(self.path), batch.expect, lambda key: self._stored_revision(connection, key)
            )
            journal = batch.journal
            changes: list[base.Change] = []
            written: list[base.SealedEntry] = []
            for write in batch.writes:
                before = self._locked_row(connection, write.key) if journal else None
                revision = self._next_revision(connection)
                row = base.SealedEntry(
                    write.key, revision, updated_at, write.settings, write.secrets
                )
                connection.execute(
                    "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?)",
                    (
                        write.key,
                        revision,
                        updated_at,
                        base.dumps(write.settings),
                        base.dumps(write.secrets),
                    ),
                )
                changes.append(base.Change(write.key, revision, before, row))
                written.append(row)
            removed: list[str] = []
            for key in batch.removes:
                before = self._locked_row(connection, key) if journal else None
                if connection.execute("DELETE FROM entries WHERE key = ?", (key,)).rowcount:
                    changes.append(base.Change(key, self._next_revision(connection), before, None))
                    removed.append(key)
            state = batch.state_after(written)
            if state is not None:
                connection.execute("INSERT OR REPLACE INTO states VALUES (?, ?)", state)
            if journal is not None and (changes or batch.state is not None):
                self._append_audit(connection, journal(changes, self._last_audit(connection)))
        if removed:
            self._checkpoint("removal")
        return base.Applied(written, removed)

    def _stored_revision(self, connection: sqlite3.Connection, key: str) -> int | None:
        row = connection.execute("SELECT revision FROM entries WHERE key = ?", (key,)).fetchone()
        return None if row is None else self._revision(key, row[0])

    def _locked_row(self, connection: sqlite3.Connection, key: str) -> base.SealedEntry | None:
        row = connection.execute(_SELECT_ROW, (key,)).fetchone()
        return None if row is None else self._sealed(row)

    def _last_audit(self, connection: sqlite3.Connection) -> base.AuditRow | None:
        row = connection.execute(
            "SELECT seq, record FROM audit ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        return None if row is None else base.AuditRow(int(row[0]), str(row[1]))

    def _append_audit(
        self, connection: sqlite3.Connection, records: Sequence[base.AuditRow]
    ) -> None:
        connection.executemany(
            "INSERT INTO audit VALUES (?, ?)", [(record.seq, record.record) for record in records]
        )

    #: SQLite keeps the audit log, in the ``audit`` table.
    keeps_audit: Final = True

    def start_audit(self, start: base.AuditStart) -> bool:
        try:
            if self._meta("audit_from") is None:
                return False  # the common case, one primary-key probe: not waiting
        except sqlite3.Error as exc:
            raise self._error("cannot read", exc) from exc
        with self._transaction("start the audit log of") as connection:
            # Under the write lock: another process may have started it meanwhile.
            waiting = connection.execute("SELECT 1 FROM meta WHERE name = 'audit_from'").fetchone()
            if waiting is None or self._last_audit(connection) is not None:
                return False
            revision = int(
                connection.execute("SELECT value FROM meta WHERE name = 'revision'").fetchone()[0]
            )
            rows = connection.execute(
                f"SELECT {_COLUMNS} FROM entries ORDER BY key"  # noqa: S608
            ).fetchall()
            first = start(revision, [self._sealed(row) for row in rows])
            self._append_audit(connection, [first])
            connection.execute("DELETE FROM meta WHERE name = 'audit_from'")
        return True

    def read_audit(self) -> AuditLog:
        connection = self._connection()
        try:
            # One read transaction: the records, the revision and the entries agree.
            connection.execute("BEGIN")
            try:
                rows = connection.execute("SELECT seq, record FROM audit ORDER BY seq").fetchall()
                meta = dict(
                    connection.execute(
                        "SELECT name, value FROM meta WHERE name IN ('revision', 'audit_from')"
                    ).fetchall()
                )
                entries = connection.execute(
                    f"SELECT {_COLUMNS} FROM entries"  # noqa: S608
                ).fetchall()
            finally:
                connection.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._error("cannot read the audit log of", exc) from exc
        try:
            revision = int(meta["revision"])
            audit_rows = [(int(seq), str(record)) for seq, record in rows]
        except (KeyError, TypeError, ValueError):
            raise RegistryCorruptError(
                f"registry {self.path}: its revision or audit records are not numbers"
            ) from None
        from .._audit import AuditLog, StoredRow, row_digest  # audit readers only

        sealed = (self._sealed(row) for row in entries)
        return AuditLog(
            rows=audit_rows,
            revision=revision,
            entries={row.key: StoredRow(row.revision, row_digest(row)) for row in sealed},
            start_pending="audit_from" in meta,
        )

    def state(self, name: str) -> str | None:
        try:
            row = (
                self._connection()
                .execute("SELECT value FROM states WHERE name = ?", (name,))
                .fetchone()
            )
        except sqlite3.Error as exc:
            raise self._error("cannot read", exc) from exc
        return None if row is None else str(row[0])

    def scan(self) -> Iterator[base.SealedEntry]:
        try:
            rows = (
                self._connection()
                .execute(
                    f"SELECT {_COLUMNS} FROM entries ORDER BY key"  # noqa: S608
                )
                .fetchall()
            )
        except sqlite3.Error as exc:
            raise self._error("cannot read", exc) from exc
        for row in rows:
            yield self._sealed(row)

    def keys(self) -> Iterator[str]:
        try:
            rows = self._connection().execute("SELECT key FROM entries ORDER BY key").fetchall()
        except sqlite3.Error as exc:
            raise self._error("cannot read", exc) from exc
        return iter([str(key) for (key,) in rows])

    def rewrite_all(self, rekey: base.Rekey) -> int:
        with self._transaction("rotate") as connection:
            rows = connection.execute(
                f"SELECT {_COLUMNS} FROM entries"  # noqa: S608
            ).fetchall()
            changes: list[base.Change] = []
            for row in rows:
                sealed = self._sealed(row)
                revision = self._next_revision(connection)
                after = rekey.resealed(sealed, revision)
                connection.execute(
                    "UPDATE entries SET secrets = ?, revision = ? WHERE key = ?",
                    (base.dumps(after.secrets), revision, sealed.key),
                )
                changes.append(base.Change(sealed.key, revision, sealed, after))
            connection.execute(
                "INSERT OR REPLACE INTO meta VALUES ('key_id', ?)", (rekey.new_key_id,)
            )
            if rekey.restate is not None:
                states = dict(connection.execute("SELECT name, value FROM states").fetchall())
                connection.executemany(
                    "UPDATE states SET value = ? WHERE name = ?",
                    [(text, name) for name, text in rekey.restate(changes, states).items()],
                )
            if rekey.journal is not None:
                last = self._last_audit(connection)
                self._append_audit(connection, rekey.journal(changes, last))
        self._checkpoint("rotation")
        return len(changes)

    def _checkpoint(self, after: str) -> None:
        """Copy the WAL into the database and truncate it to zero bytes, so the page
        images written before *after* (holding tokens now deleted or re-encrypted)
        are gone from the ``-wal`` file. The change is committed already: a failed
        checkpoint is reported, never raised (the next one will get them)."""
        try:
            row = self._connection().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as exc:
            logger.warning(
                "registry %s: WAL checkpoint after the %s failed (%s); old ciphertext stays "
                "in %s-wal until the next checkpoint",
                self.path,
                after,
                exc,
                self.path,
            )
            return
        if row is not None and row[0]:
            logger.warning(
                "registry %s: WAL checkpoint after the %s was blocked by another connection; "
                "old ciphertext stays in %s-wal until the next checkpoint",
                self.path,
                after,
                self.path,
            )

    def _transaction(self, action: str) -> _Transaction:
        return _Transaction(self, action)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            connections = list(self._connections)
            self._connections = weakref.WeakSet()
        for connection in connections:
            connection.close()
        self._watcher = None
        self._local = threading.local()


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any error, mapped to ours."""

    def __init__(self, store: SQLiteStore, action: str) -> None:
        self._store = store
        self._action = action
        self._connection: sqlite3.Connection | None = None

    def __enter__(self) -> sqlite3.Connection:
        self._connection = self._store._connection()
        try:
            self._connection.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._store._error(f"cannot {self._action}", exc) from exc
        return self._connection

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        assert self._connection is not None
        if exc_type is None:
            try:
                self._connection.execute("COMMIT")
                # Seen by every thread's next lookup, without waiting for a re-check.
                self._store._advance()
                return
            except sqlite3.Error as commit_error:
                self._rollback()
                raise self._store._error(f"cannot {self._action}", commit_error) from commit_error
        self._rollback()
        if isinstance(exc, sqlite3.Error):
            raise self._store._error(f"cannot {self._action}", exc) from exc

    def _rollback(self) -> None:
        # SQLite rolls some failures back by itself (SQLITE_FULL, an I/O error): a
        # second ROLLBACK would raise and hide the error that matters.
        assert self._connection is not None
        if self._connection.in_transaction:
            self._connection.execute("ROLLBACK")


def open_sqlite_registry(
    url: str, key: MasterKey | KeyRing, *, read_only: bool = False
) -> base.EncryptedRegistry:
    """Open (creating if needed) the registry file named by ``sqlite:///path``;
    *read_only*: an existing one, at the current schema, without writing to it."""
    path = url.partition("://")[2]
    if not path:
        raise RegistryError("sqlite registry URL needs a path: sqlite:///path/to/registry.db")
    store = SQLiteStore(path, read_only=read_only)
    return base.EncryptedRegistry(store, key, name=f"sqlite://{path}", read_only=read_only)
