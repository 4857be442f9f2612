"""``postgresql://user@host:port/db``: a registry shared by many hosts.

Needs psycopg 3.2 or newer (the ``securesession[postgres]`` extra). The database sees only
what :class:`~securesession.EncryptedRegistry` hands any store: public settings and
ciphertext tokens.

Layout (schema ``securesession`` by default; ``?schema=name`` picks another, so one
database can hold several registries):

* ``schema_version``: one row; created and migrated by the library under an advisory
  lock, so concurrent first opens do not race. A newer version is refused with
  :class:`SchemaVersionError` and left untouched. A current schema is only *read* on
  open, so a read-only role can open the registry.
* ``state``: one row, the registry-wide revision counter and the master key id.
* ``entries``: one row per entry, keyed by the canonical prefix.

Every change runs in one transaction that first locks the ``state`` row, bumps the
revision and ends with ``pg_notify``. Taking that lock first serialises writers (a
credential registry is written rarely) with two payoffs: revisions increase in
commit order, which is the order notifications arrive in, and no two writers can
deadlock. A write bumps the counter by one, so a listener that sees a gap knows it
missed something and reloads; a rotation bumps it by the number of entries and
tells listeners to reload.

The hot path, :meth:`PostgresStore.find`, never touches the network: each store
keeps an in-process index ``key -> revision`` and answers with O(path depth) dict
probes. A background thread LISTENs on the registry's channel and applies every
change, so other processes' writes are visible within milliseconds (the promise
is: within a second). Its own writes are visible to the writer as soon as ``put`` returns:
the writer waits for its listener to apply them.

Failures: a read or write that loses its connection is retried once on a fresh one
(a write only if the loss happened before COMMIT was sent: after that its outcome
is unknown, and the error says so). If the listener loses its connection, lookups
wait briefly for one immediate reconnect; if that fails they raise
:class:`RegistryError` at once (no stale answers: a session decides whether to serve
its warm cache, see ``SecureSession(stale_on_error=...)``) while the thread keeps
reconnecting in the background and rebuilds the index when it succeeds. A peer
that vanishes without closing the connection is noticed through TCP keepalives
and a heartbeat within about 15 s. Messages name the registry as
``postgresql://user@host:port/db`` and never carry the password.

Connections use no server-side prepared statements; LISTEN needs a direct
connection or a session-mode pooler. docs/deployment.md has roles, grants, backups
and the rotation procedure.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import logging
import re
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.json import Jsonb

from .._crypto import MasterKey
from .._exceptions import (
    ConfigurationError,
    RegistryCorruptError,
    RegistryError,
    SchemaVersionError,
)
from ._base import EncryptedRegistry, EntryRef, SealedEntry, now, rekeyed_error

__all__ = ["SCHEMA_VERSION", "PostgresStore", "open_postgres_registry"]

logger = logging.getLogger("securesession")

SCHEMA_VERSION: Final = 1
DEFAULT_SCHEMA: Final = "securesession"

T = TypeVar("T")
Connection = psycopg.Connection[tuple[Any, ...]]

# Lower-case identifiers only, so they need no quoting anywhere; short enough that
# the notification channel ("securesession_" + schema) fits in 63 bytes.
_SCHEMA_NAME: Final = re.compile(r"[a-z_][a-z0-9_]{0,39}")
# libpq settings we add when the URL does not set them: fail fast on a dead host and
# notice a silently vanished peer (keepalives while idle, tcp_user_timeout while
# waiting for an answer) instead of hanging for the kernel's 15 minutes.
_CONNECT_DEFAULTS: Final = {
    "connect_timeout": "5",
    "keepalives": "1",
    "keepalives_idle": "5",
    "keepalives_interval": "2",
    "keepalives_count": "3",
    "application_name": "securesession",
}
_TCP_USER_TIMEOUT_MS: Final = "10000"
#: How long a lookup waits for the listener's immediate reconnect after a loss.
_LOOKUP_WAIT_S: Final = 2.0
#: How long a writer waits for its own change to reach its index.
_OWN_WRITE_WAIT_S: Final = 5.0
#: Idle time after which the listener checks its connection with a query.
_HEARTBEAT_S: Final = 5.0
#: Reconnect back-off ceiling: a recovered database is noticed within this long.
_MAX_BACKOFF_S: Final = 1.0
#: Rows re-encrypted per UPDATE batch during a rotation.
_ROTATE_BATCH: Final = 200
#: NOTIFY payloads must stay under 8000 bytes; longer keys make listeners reload.
_MAX_PAYLOAD: Final = 7900
_MAX_IDLE_CONNECTIONS: Final = 8

# Class 08 (connection exception) and the shutdown/startup states of class 57.
_CONNECTION_SQLSTATES: Final = frozenset({"57P01", "57P02", "57P03"})

_MIGRATIONS: Final[tuple[tuple[int, tuple[str, ...]], ...]] = (
    (
        1,
        (
            "CREATE TABLE IF NOT EXISTS {schema}.schema_version (version integer NOT NULL)",
            """CREATE TABLE IF NOT EXISTS {schema}.state (
                id       smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
                revision bigint NOT NULL DEFAULT 0,
                key_id   text
            )""",
            "INSERT INTO {schema}.state (id) VALUES (1) ON CONFLICT DO NOTHING",
            """CREATE TABLE IF NOT EXISTS {schema}.entries (
                key        text PRIMARY KEY,
                revision   bigint NOT NULL,
                updated_at double precision NOT NULL,
                settings   jsonb NOT NULL,
                secrets    jsonb NOT NULL
            )""",
        ),
    ),
)


# -- the URL -----------------------------------------------------------------------


@dataclass(frozen=True)
class PostgresTarget:
    """A parsed registry URL: what to connect to, and how to name it safely."""

    conninfo: str
    schema: str
    #: ``postgresql://user@host:port/db``: for messages; never holds the password.
    name: str
    #: Strings to blank out of any message (the password, raw and decoded).
    hidden: tuple[str, ...]

    def redact(self, text: str) -> str:
        for secret in self.hidden:
            text = text.replace(secret, "***")
        return text


def parse_url(url: str) -> PostgresTarget:
    """Split a ``postgresql://`` (or ``postgres://``) URL into libpq conninfo and our options.

    The only option of ours is ``schema``; every other query parameter goes to libpq
    (``sslmode``, ``sslrootcert``, ``connect_timeout``, ...).
    """
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("postgresql", "postgres"):
        raise ConfigurationError("a PostgreSQL registry URL starts with postgresql://")
    raw_password = parts.password or ""
    hidden = tuple(sorted({raw_password, unquote(raw_password)} - {""}, key=len, reverse=True))
    schema = DEFAULT_SCHEMA
    passed: list[tuple[str, str]] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "schema":
            schema = value
        else:
            passed.append((name, value))
    if not _SCHEMA_NAME.fullmatch(schema):
        raise ConfigurationError(
            f"registry schema {schema!r} is not a lower-case identifier of at most 40 characters"
        )
    conninfo = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(passed), ""))
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.Error as exc:
        text = _first_line(str(exc))
        for secret in hidden:
            text = text.replace(secret, "***")
        raise ConfigurationError(f"invalid PostgreSQL registry URL: {text}") from None
    user = params.get("user")
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port")
    name = (
        f"postgresql://{f'{user}@' if user else ''}{host}{f':{port}' if port else ''}"
        f"/{params.get('dbname') or ''}"
    )
    if schema != DEFAULT_SCHEMA:
        name += f"?schema={schema}"
    return PostgresTarget(conninfo, schema, name, hidden)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


# -- connections -------------------------------------------------------------------


class _Pool:
    """A few idle autocommit connections, shared by the threads of one store."""

    def __init__(self, connect: Callable[[], Connection]) -> None:
        self._connect = connect
        self._idle: list[Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def take(self) -> Connection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._connect()

    def give(self, connection: Connection) -> None:
        reusable = (
            not connection.closed
            and connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        )
        with self._lock:
            if reusable and not self._closed and len(self._idle) < _MAX_IDLE_CONNECTIONS:
                self._idle.append(connection)
                return
        connection.close()

    def discard_idle(self) -> None:
        """Close every idle connection: after one died, the others likely did too."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self.discard_idle()


def _connection_lost(exc: BaseException, connection: Connection | None) -> bool:
    """Whether *exc* means the connection (not the statement) failed."""
    if connection is None or connection.closed:
        return True
    if not isinstance(exc, psycopg.OperationalError):
        return False
    sqlstate = exc.sqlstate or ""
    return not sqlstate or sqlstate.startswith("08") or sqlstate in _CONNECTION_SQLSTATES


@dataclass(frozen=True)
class _Queries:
    """Every statement, with the schema name bound once."""

    version_table: str
    read_version: sql.Composed
    key_id: sql.Composed
    set_key_id: sql.Composed
    lock_state: sql.Composed
    set_revision: sql.Composed
    rotate_state: sql.Composed
    read: sql.Composed
    upsert: sql.Composed
    delete: sql.Composed
    scan: sql.Composed
    scan_for_update: sql.Composed
    reseal: sql.Composed
    index: sql.Composed
    state_revision: sql.Composed

    @classmethod
    def build(cls, schema: str) -> _Queries:
        def q(text: str) -> sql.Composed:
            return sql.SQL(text).format(schema=sql.Identifier(schema))

        return cls(
            version_table=f"{schema}.schema_version",
            read_version=q("SELECT max(version) FROM {schema}.schema_version"),
            key_id=q("SELECT key_id FROM {schema}.state WHERE id = 1"),
            set_key_id=q("UPDATE {schema}.state SET key_id = %s WHERE id = 1 AND key_id IS NULL"),
            lock_state=q("SELECT revision FROM {schema}.state WHERE id = 1 FOR UPDATE"),
            set_revision=q("UPDATE {schema}.state SET revision = %s WHERE id = 1"),
            rotate_state=q("UPDATE {schema}.state SET revision = %s, key_id = %s WHERE id = 1"),
            read=q(
                "SELECT key, revision, updated_at, settings, secrets"
                " FROM {schema}.entries WHERE key = %s"
            ),
            upsert=q(
                "INSERT INTO {schema}.entries (key, revision, updated_at, settings, secrets)"
                " VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (key) DO UPDATE SET revision = EXCLUDED.revision,"
                " updated_at = EXCLUDED.updated_at, settings = EXCLUDED.settings,"
                " secrets = EXCLUDED.secrets"
            ),
            delete=q("DELETE FROM {schema}.entries WHERE key = %s"),
            # COLLATE "C": code-point order, the order Python's sorted() gives.
            scan=q(
                "SELECT key, revision, updated_at, settings, secrets"
                ' FROM {schema}.entries ORDER BY key COLLATE "C"'
            ),
            scan_for_update=q(
                "SELECT key, revision, updated_at, settings, secrets"
                ' FROM {schema}.entries ORDER BY key COLLATE "C" FOR UPDATE'
            ),
            reseal=q("UPDATE {schema}.entries SET secrets = %s, revision = %s WHERE key = %s"),
            index=q("SELECT key, revision FROM {schema}.entries"),
            state_revision=q("SELECT revision FROM {schema}.state WHERE id = 1"),
        )


# -- the store ---------------------------------------------------------------------


class PostgresStore:
    """Sealed entries in PostgreSQL, with an in-process index kept fresh by LISTEN."""

    def __init__(self, url: str) -> None:
        self._target = parse_url(url)
        self.name = self._target.name
        self._q = _Queries.build(self._target.schema)
        self._channel = f"securesession_{self._target.schema}"
        self._connect_options = dict(_CONNECT_DEFAULTS)
        if psycopg.pq.version() >= 120000:  # libpq 12 added tcp_user_timeout
            self._connect_options["tcp_user_timeout"] = _TCP_USER_TIMEOUT_MS
        given = conninfo_to_dict(self._target.conninfo)
        for option in given:
            self._connect_options.pop(option, None)
        self._conninfo = make_conninfo(self._target.conninfo, **self._connect_options)

        self._pool = _Pool(self._connect)
        self._closed = False
        # The index and what the listener has applied; only the listener thread
        # mutates them (and readers only do dict probes, atomic under the GIL).
        self._index: dict[str, int] = {}
        self._applied = 0
        self._applied_changed = threading.Condition()
        self._inbox: collections.deque[str] = collections.deque()
        self._live = threading.Event()
        self._settled = threading.Event()  # live, or the immediate reconnect failed
        self._problem = ""
        self._problem_since = 0.0
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._listener: Connection | None = None
        self._thread: threading.Thread | None = None
        try:
            connection = self._pool.take()
            try:
                self._migrate(connection)
            finally:
                self._pool.give(connection)
            self._listener = self._open_listener()
        except psycopg.Error as exc:
            self.close()
            raise self._error("open", exc) from exc
        except BaseException:
            self.close()
            raise
        self._thread = threading.Thread(
            target=self._listen, name=f"securesession-listen {self.name}", daemon=True
        )
        self._thread.start()

    def __repr__(self) -> str:
        return f"<PostgresStore {self.name}>"

    # -- connections and errors -------------------------------------------------------

    def _connect(self) -> Connection:
        if self._closed:
            raise RegistryError(f"registry {self.name} is closed")
        # UTF-8 whatever the database's encoding: on an SQL_ASCII database psycopg
        # would otherwise return text columns (keys, key ids) as bytes.
        return psycopg.connect(
            self._conninfo, autocommit=True, prepare_threshold=None, client_encoding="utf8"
        )

    def _error(self, action: str, exc: psycopg.Error) -> RegistryError:
        text = self._target.redact(_first_line(str(exc)) or type(exc).__name__)
        where = f"cannot {action} registry {self.name}"
        if isinstance(exc, psycopg.errors.InsufficientPrivilege):
            return RegistryError(f"{where}: permission denied ({text})")
        if isinstance(exc, (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn)):
            return RegistryCorruptError(f"{where}: its tables are missing or altered ({text})")
        return RegistryError(f"{where}: {text}")

    def _query(self, action: str, run: Callable[[Connection], T]) -> T:
        """Run a read-only *run*, retrying once on a fresh connection if it was lost."""
        return self._attempt(action, run, transaction=False)

    def _transact(self, action: str, body: Callable[[Connection], T]) -> T:
        """Run *body* in one transaction, retrying once if the connection was lost
        before COMMIT; a loss during COMMIT leaves the outcome unknown and says so."""
        return self._attempt(action, body, transaction=True)

    def _attempt(self, action: str, body: Callable[[Connection], T], *, transaction: bool) -> T:
        for attempt in (1, 2):
            connection: Connection | None = None
            committing = False
            try:
                connection = self._pool.take()
                if transaction:
                    with connection.transaction():
                        result = body(connection)
                        committing = True
                else:
                    result = body(connection)
            except psycopg.Error as exc:
                # Judge the connection before closing it: a closed one always looks lost.
                lost = _connection_lost(exc, connection)
                if connection is not None:
                    connection.close()
                if committing and lost:
                    text = self._target.redact(_first_line(str(exc)))
                    raise RegistryError(
                        f"cannot {action} registry {self.name}: the connection was lost while "
                        f"committing, so the change may or may not have been applied ({text})"
                    ) from exc
                if attempt == 1 and not self._closed and lost:
                    self._retrying(action, exc)
                    continue
                raise self._error(action, exc) from exc
            except BaseException:
                if connection is not None:
                    connection.close()
                raise
            self._pool.give(connection)
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _retrying(self, action: str, exc: psycopg.Error) -> None:
        self._pool.discard_idle()
        logger.warning(
            "registry %s: connection lost during %s (%s); retrying once",
            self.name,
            action,
            self._target.redact(_first_line(str(exc))),
        )

    # -- schema ---------------------------------------------------------------------------

    def _schema_version(self, connection: Connection) -> int:
        row = connection.execute("SELECT to_regclass(%s)", (self._q.version_table,)).fetchone()
        if row is None or row[0] is None:
            return 0
        row = connection.execute(self._q.read_version).fetchone()
        return 0 if row is None or row[0] is None else int(row[0])

    def _check_version(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"registry {self.name} has schema version {version}, newer than the "
                f"{SCHEMA_VERSION} this securesession understands; upgrade securesession"
            )

    def _migrate(self, connection: Connection) -> None:
        # Read first, write only when needed: a read-only role can open a current registry.
        try:
            version = self._schema_version(connection)
        except psycopg.errors.InsufficientPrivilege as exc:
            text = self._target.redact(_first_line(str(exc)))
            raise RegistryError(
                f"cannot open registry {self.name}: permission denied ({text}); a service's "
                f"role needs USAGE on schema {self._target.schema} and SELECT on its tables"
            ) from exc
        self._check_version(version)
        if version == SCHEMA_VERSION:
            return
        schema = self._target.schema
        lock_id = int.from_bytes(
            hashlib.sha256(f"securesession schema {schema}".encode()).digest()[:8],
            "big",
            signed=True,
        )
        try:
            with connection.transaction():
                connection.execute("SELECT pg_advisory_xact_lock(%s)", (lock_id,))
                version = self._schema_version(connection)  # someone may have won the race
                self._check_version(version)
                if version == SCHEMA_VERSION:
                    return
                exists = connection.execute("SELECT to_regnamespace(%s)", (schema,)).fetchone()
                if exists is None or exists[0] is None:
                    # Only when missing: CREATE SCHEMA checks the database privilege
                    # even with IF NOT EXISTS, and a DBA may have created it for us.
                    connection.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
                for target, statements in _MIGRATIONS:
                    if target > version:
                        for statement in statements:
                            connection.execute(
                                sql.SQL(statement).format(schema=sql.Identifier(schema))
                            )
                connection.execute(
                    sql.SQL("DELETE FROM {}.schema_version").format(sql.Identifier(schema))
                )
                connection.execute(
                    sql.SQL("INSERT INTO {}.schema_version VALUES (%s)").format(
                        sql.Identifier(schema)
                    ),
                    (SCHEMA_VERSION,),
                )
        except psycopg.errors.InsufficientPrivilege as exc:
            text = self._target.redact(_first_line(str(exc)))
            raise RegistryError(
                f"cannot open registry {self.name}: its schema is at version {version}, not "
                f"{SCHEMA_VERSION}, and this role may not create or migrate it ({text}); "
                "open it once with the registry's owner role"
            ) from exc
        logger.info("registry %s: schema migrated to version %d", self.name, SCHEMA_VERSION)

    # -- the listener and the index -----------------------------------------------------

    def _open_listener(self) -> Connection:
        """Connect, LISTEN, then load the index: in that order, so no change can fall
        between the snapshot and the first notification."""
        connection = self._connect()
        try:
            connection.add_notify_handler(self._on_notify)
            connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
            self._reload(connection)
        except BaseException:
            connection.close()
            raise
        self._problem = ""
        self._live.set()
        self._settled.set()
        return connection

    def _on_notify(self, notify: psycopg.Notify) -> None:
        # Called inside psycopg while the listener runs a query; applied by _drain.
        if notify.channel == self._channel:
            self._inbox.append(notify.payload)

    def _reload(self, connection: Connection) -> None:
        with connection.transaction():
            connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            row = connection.execute(self._q.state_revision).fetchone()
            rows = connection.execute(self._q.index).fetchall()
        if row is None:
            raise RegistryCorruptError(f"registry {self.name}: its state row is missing")
        self._index = {str(key): int(revision) for key, revision in rows}
        self._set_applied(int(row[0]))
        self._drain(connection)

    def _set_applied(self, revision: int) -> None:
        with self._applied_changed:
            self._applied = revision
            self._applied_changed.notify_all()

    def _drain(self, connection: Connection) -> None:
        while self._inbox:
            self._apply(self._inbox.popleft(), connection)

    def _apply(self, payload: str, connection: Connection) -> None:
        op, _, rest = payload.partition(" ")
        revision_text, _, key = rest.partition(" ")
        if op == "*" and not key and (not rest or rest.isdigit()):
            # A rotation (or an operator's manual "*"): reload unless already newer.
            if not rest or int(rest) > self._applied:
                self._reload(connection)
            return
        if op not in ("u", "d") or not key or not revision_text.isdigit():
            logger.debug("registry %s: unexpected notification; reloading the index", self.name)
            self._reload(connection)
            return
        revision = int(revision_text)
        if revision <= self._applied:
            return  # already in the snapshot
        if revision != self._applied + 1:
            # Every change bumps the counter by one: a gap means we missed one.
            logger.info("registry %s: missed a change; reloading the index", self.name)
            self._reload(connection)
            return
        if op == "u":
            self._index[key] = revision
        else:
            self._index.pop(key, None)
        self._set_applied(revision)

    def _listen(self) -> None:
        connection = self._listener
        try:
            while not self._stop.is_set():
                if connection is None:
                    connection = self._reconnect()
                    continue
                try:
                    self._pump(connection)
                except Exception as exc:
                    # Whatever went wrong, the index can no longer be trusted: fail
                    # lookups closed and rebuild it from a fresh connection.
                    if self._stop.is_set():
                        break
                    self._lost(exc)
                    connection.close()
                    connection = None
        finally:
            # Also on an unexpected exit: never leave a stale index looking live.
            self._live.clear()
            self._settled.set()
            if not self._stop.is_set():
                self._problem = "its change listener stopped"
            if connection is not None:
                connection.close()

    def _pump(self, connection: Connection) -> None:
        """Wait for notifications (and the wake-up socket); heartbeat when idle."""
        pgconn = connection.pgconn
        fd = connection.fileno()
        wake = self._wake_r.fileno()
        while not self._stop.is_set():
            ready, _, _ = select.select([fd, wake], [], [], _HEARTBEAT_S)
            if self._stop.is_set():
                return
            if fd in ready:
                pgconn.consume_input()  # raises once the server has gone
                while (notify := pgconn.notifies()) is not None:
                    if notify.relname.decode() == self._channel:
                        self._inbox.append(notify.extra.decode())
                if pgconn.status != psycopg.pq.ConnStatus.OK:
                    raise psycopg.OperationalError("the connection was closed")
                self._drain(connection)
            elif not ready:
                connection.execute("SELECT 1")
                self._drain(connection)

    def _lost(self, exc: BaseException) -> None:
        text = self._target.redact(_first_line(str(exc)) or type(exc).__name__)
        self._problem = f"connection lost ({text})"
        self._problem_since = time.monotonic()
        self._settled.clear()
        self._live.clear()
        with self._applied_changed:
            self._applied_changed.notify_all()
        logger.warning("registry %s: %s; reconnecting", self.name, self._problem)

    def _reconnect(self) -> Connection | None:
        delay = 0.0
        failures = 0
        while not self._stop.wait(delay):
            try:
                connection = self._open_listener()
            except Exception as exc:
                failures += 1
                text = self._target.redact(_first_line(str(exc)) or type(exc).__name__)
                self._problem = f"unreachable ({text})"
                self._settled.set()  # lookups stop waiting and fail fast from now on
                if failures == 1:
                    logger.warning(
                        "registry %s: %s; lookups fail until it is back", self.name, self._problem
                    )
                delay = min(0.1 * 2**failures, _MAX_BACKOFF_S)
                continue
            self._pool.discard_idle()
            logger.warning("registry %s: reconnected, index reloaded", self.name)
            return connection
        return None

    def _await_own_change(self, revision: int) -> None:
        """Make a writer's own change visible to its own lookups before it returns."""
        with self._applied_changed:
            done = self._applied_changed.wait_for(
                lambda: self._applied >= revision or not self._live.is_set() or self._closed,
                timeout=_OWN_WRITE_WAIT_S,
            )
        if not done:
            logger.warning(
                "registry %s: change %d not yet seen by this process's listener",
                self.name,
                revision,
            )

    # -- RegistryStore --------------------------------------------------------------------

    def stored_key_id(self) -> str | None:
        row = self._query("read", lambda c: c.execute(self._q.key_id).fetchone())
        return None if row is None or row[0] is None else str(row[0])

    def record_key_id(self, key_id: str) -> None:
        self._transact("write", lambda c: c.execute(self._q.set_key_id, (key_id,)))

    def find(self, keys: Sequence[str]) -> EntryRef | None:
        if not self._live.is_set():
            self._await_listener()
        index = self._index
        for key in keys:
            revision = index.get(key)
            if revision is not None:
                return EntryRef(key, revision)
        return None

    def _await_listener(self) -> None:
        if self._closed:
            raise RegistryError(f"registry {self.name} is closed")
        self._settled.wait(_LOOKUP_WAIT_S)
        if self._live.is_set():
            return
        since = time.monotonic() - self._problem_since
        raise RegistryError(
            f"cannot look up in registry {self.name}: {self._problem or 'reconnecting'} "
            f"for {since:.1f} s; reconnecting in the background"
        )

    def read(self, key: str) -> SealedEntry | None:
        indexed = self._index.get(key)
        row = self._query("read", lambda c: c.execute(self._q.read, (key,)).fetchone())
        if row is None:
            # The row is gone but its removal's notification has not arrived yet: drop
            # it from the index now, so the next lookup finds the entry that really
            # matches (unless the listener changed it meanwhile).
            if indexed is not None and self._index.get(key) == indexed:
                self._index.pop(key, None)
            return None
        return self._sealed(row)

    def _sealed(self, row: tuple[Any, ...]) -> SealedEntry:
        key, revision, updated_at, settings, secrets = row
        where = f"registry {self.name}, entry {key}"
        if not isinstance(settings, dict):
            raise RegistryCorruptError(f"{where}: settings are not a JSON object")
        if not isinstance(secrets, dict) or not all(
            isinstance(name, str) and isinstance(token, str) for name, token in secrets.items()
        ):
            raise RegistryCorruptError(f"{where}: secrets are not a JSON object of tokens")
        return SealedEntry(str(key), int(revision), float(updated_at), settings, secrets)

    def _notify(self, connection: Connection, op: str, revision: int, key: str = "") -> None:
        payload = f"{op} {revision} {key}" if key else f"{op} {revision}"
        if len(payload.encode()) > _MAX_PAYLOAD:
            payload = f"* {revision}"
        connection.execute("SELECT pg_notify(%s, %s)", (self._channel, payload))

    def _lock_revision(self, connection: Connection) -> int:
        row = connection.execute(self._q.lock_state).fetchone()
        if row is None:
            raise RegistryCorruptError(f"registry {self.name}: its state row is missing")
        return int(row[0])

    def write(
        self, key: str, settings: dict[str, Any], secrets: dict[str, str], *, key_id: str
    ) -> SealedEntry:
        updated_at = now()

        def body(connection: Connection) -> int:
            revision = self._lock_revision(connection) + 1
            # The state row is locked now, so no rotation can slip in before COMMIT.
            stored = connection.execute(self._q.key_id).fetchone()
            if stored is not None and stored[0] is not None and stored[0] != key_id:
                raise rekeyed_error(self.name, stored[0], key_id)
            connection.execute(self._q.set_revision, (revision,))
            connection.execute(
                self._q.upsert, (key, revision, updated_at, Jsonb(settings), Jsonb(secrets))
            )
            self._notify(connection, "u", revision, key)
            return revision

        revision = self._transact("write", body)
        self._await_own_change(revision)
        return SealedEntry(key, revision, updated_at, settings, secrets)

    def delete(self, key: str) -> bool:
        def body(connection: Connection) -> int | None:
            revision = self._lock_revision(connection) + 1
            if connection.execute(self._q.delete, (key,)).rowcount == 0:
                return None
            connection.execute(self._q.set_revision, (revision,))
            self._notify(connection, "d", revision, key)
            return revision

        revision = self._transact("write", body)
        if revision is None:
            return False
        self._await_own_change(revision)
        return True

    def scan(self) -> Iterator[SealedEntry]:
        rows = self._query("read", lambda c: c.execute(self._q.scan).fetchall())
        for row in rows:
            yield self._sealed(row)

    def rewrite_all(self, reseal: Callable[[SealedEntry], dict[str, str]], new_key_id: str) -> None:
        def body(connection: Connection) -> int:
            revision = self._lock_revision(connection)
            rows = connection.execute(self._q.scan_for_update).fetchall()
            # Batches keep memory flat and make the rotation's progress visible to a
            # server-side observer; it commits (or not) as a whole either way.
            for start in range(0, len(rows), _ROTATE_BATCH):
                batch = []
                for row in rows[start : start + _ROTATE_BATCH]:
                    revision += 1
                    sealed = self._sealed(row)
                    batch.append((Jsonb(reseal(sealed)), revision, sealed.key))
                with connection.cursor() as cursor:
                    cursor.executemany(self._q.reseal, batch)
            connection.execute(self._q.rotate_state, (revision, new_key_id))
            self._notify(connection, "*", revision)
            return revision

        revision = self._transact("rotate", body)
        self._await_own_change(revision)

    def close(self) -> None:
        self._closed = True
        self._stop.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(10)
        elif self._listener is not None:
            self._listener.close()
        self._live.clear()
        self._settled.set()
        with self._applied_changed:
            self._applied_changed.notify_all()
        self._pool.close()
        self._wake_r.close()
        self._wake_w.close()


def open_postgres_registry(url: str, key: MasterKey) -> EncryptedRegistry:
    """Open (creating or migrating its schema if needed) the registry at *url*."""
    store = PostgresStore(url)
    return EncryptedRegistry(store, key, name=store.name)
