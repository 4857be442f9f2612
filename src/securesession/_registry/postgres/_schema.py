"""The tables, their migrations, and every statement run on them."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import psycopg
from psycopg import sql

from ..._exceptions import RegistryError, SchemaVersionError
from ._options import PostgresTarget, first_line
from ._pool import Connection

logger = logging.getLogger("securesession")

#: 2 added the ``states`` and ``audit`` tables; 3 the audit record format 2, whose
#: row digests a log of format 1 (never released) lacks, so migrating from 2 starts
#: the log again.
SCHEMA_VERSION: Final = 3

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
    (
        2,
        (
            """CREATE TABLE IF NOT EXISTS {schema}.states (
                name  text PRIMARY KEY,
                value text NOT NULL
            )""",
            # The record is kept as text, byte for byte: its MAC covers that text.
            """CREATE TABLE IF NOT EXISTS {schema}.audit (
                seq    bigint PRIMARY KEY,
                record text NOT NULL
            )""",
            # Not NULL while the store waits for its log's first record: the revision
            # it was created or migrated at (start_audit clears it with that record).
            "ALTER TABLE {schema}.state ADD COLUMN IF NOT EXISTS audit_from bigint",
        ),
    ),
    (
        3,
        (
            # Record format 2: a log of format 1 (never released) starts again, and
            # the first registry opened with the key lists the entries stored then.
            "DELETE FROM {schema}.audit",
            "UPDATE {schema}.state SET audit_from = revision",
        ),
    ),
)


#: Every query that reads whole rows reads them as PostgresStore._sealed takes them;
#: COLLATE "C": code-point order, the order Python's sorted() gives.
_ROWS: Final = "SELECT key, revision, updated_at, settings, secrets FROM {schema}.entries"
_IN_KEY_ORDER: Final = ' ORDER BY key COLLATE "C"'

#: Every statement of :class:`Queries` (but ``version_table``), by its name there;
#: :meth:`Queries.build` puts the schema's name for ``{schema}``.
_STATEMENTS: Final[Mapping[str, str]] = {
    "read_version": "SELECT max(version) FROM {schema}.schema_version",
    "key_id": "SELECT key_id FROM {schema}.state WHERE id = 1",
    "set_key_id": "UPDATE {schema}.state SET key_id = %s WHERE id = 1 AND key_id IS NULL",
    "lock_state": "SELECT revision FROM {schema}.state WHERE id = 1 FOR UPDATE",
    "set_revision": "UPDATE {schema}.state SET revision = %s WHERE id = 1",
    "rotate_state": "UPDATE {schema}.state SET revision = %s, key_id = %s WHERE id = 1",
    "read": _ROWS + " WHERE key = %s",
    "upsert": (
        "INSERT INTO {schema}.entries (key, revision, updated_at, settings, secrets)"
        " VALUES (%s, %s, %s, %s, %s)"
        " ON CONFLICT (key) DO UPDATE SET revision = EXCLUDED.revision,"
        " updated_at = EXCLUDED.updated_at, settings = EXCLUDED.settings,"
        " secrets = EXCLUDED.secrets"
    ),
    "delete": "DELETE FROM {schema}.entries WHERE key = %s",
    "scan": _ROWS + _IN_KEY_ORDER,
    "scan_for_update": _ROWS + _IN_KEY_ORDER + " FOR UPDATE",
    "reseal": "UPDATE {schema}.entries SET secrets = %s, revision = %s WHERE key = %s",
    "index": "SELECT key, revision FROM {schema}.entries",
    "state_revision": "SELECT revision FROM {schema}.state WHERE id = 1",
    "revision_of": "SELECT revision FROM {schema}.entries WHERE key = %s",
    "read_state": "SELECT value FROM {schema}.states WHERE name = %s",
    "all_states": "SELECT name, value FROM {schema}.states",
    "write_state": (
        "INSERT INTO {schema}.states (name, value) VALUES (%s, %s)"
        " ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value"
    ),
    "last_audit": "SELECT seq, record FROM {schema}.audit ORDER BY seq DESC LIMIT 1",
    "append_audit": "INSERT INTO {schema}.audit (seq, record) VALUES (%s, %s)",
    "audit_all": "SELECT seq, record FROM {schema}.audit ORDER BY seq",
    "audit_state": "SELECT revision, audit_from FROM {schema}.state WHERE id = 1",
    "audit_start_pending": "SELECT audit_from IS NOT NULL FROM {schema}.state WHERE id = 1",
    "audit_started": "UPDATE {schema}.state SET audit_from = NULL WHERE id = 1",
}


@dataclass(frozen=True)
class Queries:
    """Every statement, with the schema name bound once (their text: :data:`_STATEMENTS`)."""

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
    revision_of: sql.Composed
    read_state: sql.Composed
    all_states: sql.Composed
    write_state: sql.Composed
    last_audit: sql.Composed
    append_audit: sql.Composed
    audit_all: sql.Composed
    audit_state: sql.Composed
    audit_start_pending: sql.Composed
    audit_started: sql.Composed

    @classmethod
    def build(cls, schema: str) -> Queries:
        identifier = sql.Identifier(schema)
        return cls(
            version_table=f"{schema}.schema_version",
            **{name: sql.SQL(text).format(schema=identifier) for name, text in _STATEMENTS.items()},
        )


def migrate(
    connection: Connection, target: PostgresTarget, queries: Queries, *, read_only: bool = False
) -> None:
    """Bring the registry's tables to :data:`SCHEMA_VERSION`, creating them if needed.

    Reads first and writes only when needed, so a read-only role can open a current
    registry; the writing runs under an advisory lock, so concurrent first opens do
    not race. *read_only*: never write; a registry not at the current version is refused.
    """
    try:
        version = _schema_version(connection, queries)
    except psycopg.errors.InsufficientPrivilege as exc:
        text = target.redact(first_line(str(exc)))
        raise RegistryError(
            f"cannot open registry {target.name}: permission denied ({text}); a service's "
            f"role needs USAGE on schema {target.schema} and SELECT on its tables"
        ) from exc
    _check_version(version, target)
    if version == SCHEMA_VERSION:
        return
    if read_only and version == 0:
        raise RegistryError(
            f"registry {target.name} does not exist (schema {target.schema} holds no "
            "securesession tables), and a read-only open creates nothing"
        )
    if read_only:
        raise RegistryError(
            f"registry {target.name} needs a schema upgrade (it has version {version}, this "
            f"securesession uses {SCHEMA_VERSION}), which a read-only open does not make; "
            "open it once with write access (the registry's owner role), then again"
        )
    schema = sql.Identifier(target.schema)
    lock_id = int.from_bytes(
        hashlib.sha256(f"securesession schema {target.schema}".encode()).digest()[:8],
        "big",
        signed=True,
    )
    try:
        with connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (lock_id,))
            version = _schema_version(connection, queries)  # someone may have won the race
            _check_version(version, target)
            if version == SCHEMA_VERSION:
                return
            exists = connection.execute("SELECT to_regnamespace(%s)", (target.schema,)).fetchone()
            if exists is None or exists[0] is None:
                # Only when missing: CREATE SCHEMA checks the database privilege
                # even with IF NOT EXISTS, and a DBA may have created it for us.
                connection.execute(sql.SQL("CREATE SCHEMA {}").format(schema))
            for step, statements in _MIGRATIONS:
                if step > version:
                    for statement in statements:
                        connection.execute(sql.SQL(statement).format(schema=schema))
            connection.execute(sql.SQL("DELETE FROM {}.schema_version").format(schema))
            connection.execute(
                sql.SQL("INSERT INTO {}.schema_version VALUES (%s)").format(schema),
                (SCHEMA_VERSION,),
            )
    except psycopg.errors.InsufficientPrivilege as exc:
        text = target.redact(first_line(str(exc)))
        raise RegistryError(
            f"cannot open registry {target.name}: its schema is at version {version}, not "
            f"{SCHEMA_VERSION}, and this role may not create or migrate it ({text}); "
            "open it once with the registry's owner role"
        ) from exc
    logger.info("registry %s: schema migrated to version %d", target.name, SCHEMA_VERSION)


def _schema_version(connection: Connection, queries: Queries) -> int:
    row = connection.execute("SELECT to_regclass(%s)", (queries.version_table,)).fetchone()
    if row is None or row[0] is None:
        return 0
    row = connection.execute(queries.read_version).fetchone()
    return 0 if row is None or row[0] is None else int(row[0])


def _check_version(version: int, target: PostgresTarget) -> None:
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"registry {target.name} has schema version {version}, newer than the "
            f"{SCHEMA_VERSION} this securesession understands; upgrade securesession"
        )
