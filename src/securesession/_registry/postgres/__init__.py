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

The parts, one module each: ``_options`` (the URL and its options), ``_schema``
(tables, migrations, statements), ``_pool`` (connections, the retry on loss),
``_index`` and ``_listener`` (the index and the LISTEN thread, its only owner),
``_store`` (:class:`PostgresStore` and :func:`open_postgres_registry`).
"""

from __future__ import annotations

from ._options import DEFAULT_SCHEMA as DEFAULT_SCHEMA
from ._options import PostgresTarget as PostgresTarget
from ._options import parse_url as parse_url
from ._schema import SCHEMA_VERSION
from ._store import PostgresStore, open_postgres_registry

__all__ = ["SCHEMA_VERSION", "PostgresStore", "open_postgres_registry"]
