"""A PostgreSQL registry of schema version 1, as securesession wrote it before the audit
log, is migrated to version 2 on open: its entries are intact, the log starts with
the next change, and verification passes before and after it."""

from __future__ import annotations

import threading
from contextlib import closing

import psycopg
import pytest
from psycopg.types.json import Jsonb

from securesession import Credential, MasterKey, RegistryError, ServiceEntry, open_registry
from securesession._registry._codec import seal
from securesession._registry.postgres._schema import SCHEMA_VERSION

from .. import pgcluster

#: The schema open_registry uses when the URL names none.
SCHEMA = "securesession"

#: Schema version 1, exactly as securesession created it before the audit log
#: (src/securesession/_registry/postgres/_schema.py at 4290cae): written out here as
#: test data of a released layout, not taken from the current migrations.
_VERSION_1_DDL = (
    "CREATE SCHEMA securesession",
    "CREATE TABLE IF NOT EXISTS securesession.schema_version (version integer NOT NULL)",
    """CREATE TABLE IF NOT EXISTS securesession.state (
        id       smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
        revision bigint NOT NULL DEFAULT 0,
        key_id   text
    )""",
    "INSERT INTO securesession.state (id) VALUES (1) ON CONFLICT DO NOTHING",
    """CREATE TABLE IF NOT EXISTS securesession.entries (
        key        text PRIMARY KEY,
        revision   bigint NOT NULL,
        updated_at double precision NOT NULL,
        settings   jsonb NOT NULL,
        secrets    jsonb NOT NULL
    )""",
    "INSERT INTO securesession.schema_version VALUES (1)",
)

BASE = "https://gw.example.test"
#: The three entries the version-1 registry holds, at revisions 1, 2 and 3.
_OLD = ("/payments", "/billing", "/reports")


def _entry(path: str, password: str = "gw-SECRET-1") -> ServiceEntry:
    return ServiceEntry(
        url=BASE + path,
        gateway=Credential("gw-user", password),
        request=Credential("CORP\\user", "req-SECRET-1"),
        secret_headers={"X-Api-Key": "api-SECRET"},
        description=f"{path} service",
    )


@pytest.fixture
def database(postgres_url: str) -> str:
    """The name of the test's database."""
    return postgres_url.rsplit("/", 1)[1].split("?")[0]


@pytest.fixture
def key() -> MasterKey:
    return MasterKey.generate()


@pytest.fixture
def version_1(
    postgres_cluster: pgcluster.PostgresCluster, database: str, key: MasterKey
) -> list[ServiceEntry]:
    """The test's database holds a version-1 registry of the three :data:`_OLD` entries
    under *key*, as an older securesession wrote it (the entry rows are in the entry
    format, which the schema change left alone); the entries as put."""
    entries = [_entry(path) for path in _OLD]
    with postgres_cluster.admin(database) as admin, admin.transaction():
        for statement in _VERSION_1_DDL:
            admin.execute(statement)
        for revision, entry in enumerate(entries, start=1):
            settings, secrets = seal(entry, key)
            admin.execute(
                "INSERT INTO securesession.entries VALUES (%s, %s, %s, %s, %s)",
                (entry.url, revision, 1_700_000_000.0 + revision, Jsonb(settings), Jsonb(secrets)),
            )
        admin.execute(
            "UPDATE securesession.state SET revision = %s, key_id = %s",
            (len(entries), key.key_id),
        )
    return entries


def _schema(cluster: pgcluster.PostgresCluster, database: str) -> tuple[int, set[str]]:
    """The schema version and the tables."""
    with cluster.admin(database) as admin:
        version = admin.execute("SELECT max(version) FROM securesession.schema_version").fetchone()
        tables = admin.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (SCHEMA,)
        ).fetchall()
    assert version is not None
    return int(str(version[0])), {str(row[0]) for row in tables}


def test_the_fixture_is_a_version_1_registry(
    postgres_cluster: pgcluster.PostgresCluster, database: str, version_1: list[ServiceEntry]
) -> None:
    """What the other tests migrate: version 1, with no states or audit table."""
    assert _schema(postgres_cluster, database) == (1, {"schema_version", "state", "entries"})


def test_opening_migrates_and_keeps_every_entry(
    postgres_cluster: pgcluster.PostgresCluster,
    postgres_url: str,
    database: str,
    key: MasterKey,
    version_1: list[ServiceEntry],
) -> None:
    with closing(open_registry(postgres_url, key)) as registry:
        version, tables = _schema(postgres_cluster, database)
        assert version == SCHEMA_VERSION > 1
        assert {"states", "audit"} <= tables
        assert registry.key_id == key.key_id
        assert list(registry.urls()) == sorted(entry.url for entry in version_1)
        for revision, entry in enumerate(version_1, start=1):
            stored = registry.get(entry.url + "/x")
            assert stored == entry
            assert stored is not None and stored.revision == revision
        # No change logged, and none missing: the three entries predate the log.
        assert registry.verify_audit().predating == 3
        assert [r.operation for r in registry.audit() if r.operation != "start"] == []


def test_the_log_starts_with_the_first_change_after_the_migration(
    postgres_url: str, key: MasterKey, version_1: list[ServiceEntry]
) -> None:
    payments, billing, _ = version_1
    with closing(open_registry(postgres_url, key)) as registry:
        added = registry.put(_entry("/new"))
        # An old row is opened to name what changed: only the password did.
        changed = registry.put(_entry("/payments", "gw-SECRET-2"))
        assert registry.remove(billing.url)
        records = list(registry.audit())
        assert [(r.seq, r.operation, r.change, r.entry, r.revision) for r in records] == [
            (1, "start", "", "*", 3),
            (2, "put", "added", added.url, 4),
            (3, "put", "changed", payments.url, changed.revision),
            (4, "remove", "removed", billing.url, changed.revision + 1),
        ]
        assert records[2].fields == ("gateway.password",)
        report = registry.verify_audit()
        assert (report.records, report.authenticated) == (4, 4)
    # A second open migrates nothing again, nor starts another log.
    with closing(open_registry(postgres_url, key)) as reopened:
        assert reopened.verify_audit().records == 4
        assert [r.seq for r in reopened.audit()] == [1, 2, 3, 4]


def test_concurrent_first_opens_migrate_once(
    postgres_cluster: pgcluster.PostgresCluster,
    postgres_url: str,
    database: str,
    key: MasterKey,
    version_1: list[ServiceEntry],
) -> None:
    """Hosts restarted together on the new version: each opens, one migrates (under the
    advisory lock), and one log starts, after the old revision."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def open_and_write(index: int) -> None:
        try:
            barrier.wait()
            with closing(open_registry(postgres_url, key)) as registry:
                registry.put(_entry(f"/host{index}"))
        except BaseException as exc:  # collected and re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=open_and_write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert _schema(postgres_cluster, database)[0] == SCHEMA_VERSION
    with closing(open_registry(postgres_url, key)) as registry:
        report = registry.verify_audit()
        assert (report.records, report.predating) == (5, 3)
        records = list(registry.audit())
        assert [(r.operation, r.revision) for r in records[:1]] == [("start", 3)]
        assert sorted(r.revision or 0 for r in records[1:]) == [4, 5, 6, 7]


def test_a_role_that_may_only_read_is_told_to_migrate_with_the_owner(
    postgres_cluster: pgcluster.PostgresCluster,
    database: str,
    key: MasterKey,
    version_1: list[ServiceEntry],
) -> None:
    """A service's read-only role cannot migrate: it is refused, saying so, and the
    registry stays at version 1 for the owner to open."""
    reader = f"reader_{database}"
    with postgres_cluster.admin(database) as admin:
        admin.execute(f'CREATE ROLE "{reader}" LOGIN')
        admin.execute(f'GRANT USAGE ON SCHEMA securesession TO "{reader}"')
        admin.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA securesession TO "{reader}"')
    with pytest.raises(
        RegistryError, match=rf"version 1, not {SCHEMA_VERSION}.*owner role"
    ) as caught:
        open_registry(postgres_cluster.url(database, user=reader), key)
    assert "SECRET" not in str(caught.value)
    assert _schema(postgres_cluster, database)[0] == 1
    with psycopg.connect(postgres_cluster.url(database, user=reader)) as connection:
        rows = connection.execute("SELECT count(*) FROM securesession.entries").fetchone()
        assert rows == (3,)


def test_a_read_only_open_does_not_migrate_and_says_so(
    postgres_cluster: pgcluster.PostgresCluster,
    postgres_url: str,
    database: str,
    key: MasterKey,
    version_1: list[ServiceEntry],
) -> None:
    """What diff does: a registry that needs a schema upgrade is refused, saying so,
    and stays at version 1, even for the owner role, which could migrate it."""
    with pytest.raises(RegistryError, match=r"needs a schema upgrade \(it has version 1"):
        open_registry(postgres_url, key, read_only=True)
    assert _schema(postgres_cluster, database) == (1, {"schema_version", "state", "entries"})
    with open_registry(postgres_url, key) as registry:  # a writer's open migrates
        assert registry.count() == len(version_1)
    with open_registry(postgres_url, key, read_only=True) as registry:
        assert sorted(entry.url for entry in registry.entries()) == sorted(
            entry.url for entry in version_1
        )
