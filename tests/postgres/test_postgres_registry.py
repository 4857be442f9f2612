"""What is specific to the PostgreSQL backend: URL, schema, roles, connection loss, LISTEN."""

from __future__ import annotations

import os
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest

from securesession import (
    ConfigurationError,
    Credential,
    KeyRing,
    MasterKey,
    Registry,
    RegistryError,
    SchemaVersionError,
    SecureSession,
    ServiceEntry,
    open_registry,
)
from securesession._registry import _base, _codec
from securesession._registry.postgres import (
    SCHEMA_VERSION,
    PostgresStore,
    open_postgres_registry,
    parse_url,
)
from securesession._registry.postgres._index import Index
from securesession.cli._app import run
from securesession.registry import EncryptedRegistry
from securesession.testing import GatewayServer

from .. import pgcluster

BASE = "https://gw.example.test:8443"
DOCS = Path(__file__).parents[2] / "docs" / "deployment.md"


def entry(path: str, tag: str, base: str = BASE) -> ServiceEntry:
    return ServiceEntry(
        url=base + path,
        gateway=Credential(f"gw-{tag}", f"gw-SECRET-{tag}"),
        request=Credential(f"req-{tag}", f"req-SECRET-{tag}"),
    )


def tag_of(registry: Registry, url: str) -> str | None:
    found = registry.get(url)
    return None if found is None or found.gateway is None else found.gateway.username[3:]


def dbname(url: str) -> str:
    return url.rsplit("/", 1)[1]


def with_password(url: str, password: str) -> str:
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{password}@")


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def exception_texts(exc: BaseException) -> str:
    """The message and repr of *exc* and of everything chained to it."""
    texts = []
    seen: BaseException | None = exc
    while seen is not None:
        texts += [str(seen), repr(seen)]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(texts)


class Outage:
    """Make one database refuse and drop every connection, as if the server went away."""

    def __init__(self, cluster: pgcluster.PostgresCluster, database: str) -> None:
        self.cluster = cluster
        self.database = database

    def kick(self) -> None:
        """Drop every current connection (they may reconnect at once)."""
        with self.cluster.admin() as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (self.database,),
            )

    def begin(self) -> None:
        with self.cluster.admin() as admin:
            admin.execute(f'ALTER DATABASE "{self.database}" ALLOW_CONNECTIONS false')
        self.kick()

    def end(self) -> None:
        with self.cluster.admin() as admin:
            admin.execute(f'ALTER DATABASE "{self.database}" ALLOW_CONNECTIONS true')


@pytest.fixture
def key() -> MasterKey:
    return MasterKey.generate()


@pytest.fixture
def registry(postgres_url: str, key: MasterKey) -> Iterator[Registry]:
    with open_registry(postgres_url, key) as registry:
        yield registry


@pytest.fixture
def outage(postgres_cluster: pgcluster.PostgresCluster, postgres_url: str) -> Iterator[Outage]:
    outage = Outage(postgres_cluster, dbname(postgres_url))
    yield outage
    outage.end()


# -- URL ------------------------------------------------------------------------------


def test_postgres_alias_and_schemas_are_separate_registries(
    postgres_url: str, key: MasterKey
) -> None:
    alias = postgres_url.replace("postgresql://", "postgres://")
    other_key = MasterKey.generate()
    with (
        open_registry(alias, key) as first,
        open_registry(postgres_url + "?schema=team_b", other_key) as second,
    ):
        first.put(entry("/a", "first"))
        second.put(entry("/a", "second"))
        assert tag_of(first, BASE + "/a/x") == "first"
        assert tag_of(second, BASE + "/a/x") == "second"
        assert "?schema=team_b" in repr(second)


@pytest.mark.parametrize(
    ("suffix", "message"),
    [
        ("?schema=Bad-Name", "schema 'Bad-Name' is not a lower-case identifier"),
        ("?schema=" + "s" * 41, "at most 40 characters"),
        ("?sslmode=nonsense-SECRET", "invalid"),
    ],
)
def test_bad_url_is_a_configuration_error(
    postgres_url: str, key: MasterKey, suffix: str, message: str
) -> None:
    with pytest.raises((ConfigurationError, RegistryError), match=message) as caught:
        open_registry(with_password(postgres_url, "pw-SECRET") + suffix, key)
    assert "pw-SECRET" not in exception_texts(caught.value)


def test_unreachable_server_names_it_without_the_password(key: MasterKey) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql://svc:pw%2FSECRET@127.0.0.1:{port}/registry?connect_timeout=2"
    with pytest.raises(RegistryError) as caught:
        open_registry(url, key)
    text = exception_texts(caught.value)
    assert f"cannot open registry postgresql://svc@127.0.0.1:{port}/registry" in str(caught.value)
    assert "SECRET" not in text


def test_open_postgres_registry_takes_the_url_options_as_keywords(
    postgres_cluster: pgcluster.PostgresCluster, postgres_url: str, key: MasterKey
) -> None:
    with (
        open_postgres_registry(postgres_url, key) as first,
        open_postgres_registry(
            postgres_url, key, schema="team_b", application_name="svc_orders", connect_timeout=3
        ) as second,
    ):
        assert isinstance(second.store, PostgresStore)
        assert "?schema=team_b" in repr(second)
        second.put(entry("/a", "second"))
        assert tag_of(second, BASE + "/a/x") == "second"
        assert first.lookup(BASE + "/a/x") is None  # another schema, another registry
        with postgres_cluster.admin() as admin:
            rows = admin.execute(
                "SELECT application_name FROM pg_stat_activity WHERE datname = %s",
                (dbname(postgres_url),),
            ).fetchall()
        names = {name for (name,) in rows}
        assert {"svc_orders", "securesession"} <= names  # ours where the caller sets none


def test_an_option_is_given_once_and_a_keyword_password_is_never_shown(key: MasterKey) -> None:
    url = "postgresql://svc@db.example.test/registry?schema=team_a"
    with pytest.raises(ConfigurationError, match="'schema' is given both in the URL and as a"):
        open_postgres_registry(url, key, schema="team_b")
    target = parse_url(url, {"password": "pw/SECRET"})
    assert target.name == "postgresql://svc@db.example.test/registry?schema=team_a"
    said = target.redact(f"failed for pw/SECRET and {quote_plus('pw/SECRET')}")
    assert "SECRET" not in said


def test_missing_psycopg_names_the_extra(monkeypatch: pytest.MonkeyPatch, key: MasterKey) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)
    # As in a fresh interpreter: the backend package and every one of its modules unloaded.
    package = "securesession._registry.postgres"
    for name in [name for name in sys.modules if name.startswith(package)]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(ConfigurationError, match=re.escape("securesession[postgres]")):
        open_registry("postgresql://svc@127.0.0.1:1/registry", key)


# -- schema ---------------------------------------------------------------------------


def test_schema_is_created_versioned_and_holds_only_ciphertext(
    postgres_cluster: pgcluster.PostgresCluster, postgres_url: str, registry: Registry
) -> None:
    registry.put(entry("/a", "a"))
    with postgres_cluster.admin(dbname(postgres_url)) as admin:
        assert admin.execute("SELECT version FROM securesession.schema_version").fetchall() == [
            (SCHEMA_VERSION,)
        ]
        dump = admin.execute("SELECT settings::text, secrets::text FROM securesession.entries")
        text = repr(dump.fetchall())
    assert "SECRET" not in text and "gw-" not in text
    assert "format" in text  # the public settings are there, in the clear


def test_newer_schema_is_refused_and_left_untouched(
    postgres_cluster: pgcluster.PostgresCluster, postgres_url: str, key: MasterKey
) -> None:
    with open_registry(postgres_url, key) as registry:
        registry.put(entry("/a", "a"))
    with postgres_cluster.admin(dbname(postgres_url)) as admin:
        admin.execute("UPDATE securesession.schema_version SET version = 99")
        before = admin.execute("SELECT * FROM securesession.entries").fetchall()
    newer = f"schema version 99, newer than the {SCHEMA_VERSION}"
    with pytest.raises(SchemaVersionError, match=newer):
        open_registry(postgres_url, key)
    with postgres_cluster.admin(dbname(postgres_url)) as admin:
        assert admin.execute("SELECT version FROM securesession.schema_version").fetchall() == [
            (99,)
        ]
        assert admin.execute("SELECT * FROM securesession.entries").fetchall() == before


def test_concurrent_first_opens_create_the_schema_once(postgres_url: str, key: MasterKey) -> None:
    opened: list[Registry] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def open_one() -> None:
        barrier.wait()
        try:
            opened.append(open_registry(postgres_url, key))
        except BaseException as exc:  # collected and checked below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for registry in opened:
        registry.close()
    assert errors == []
    assert len(opened) == 6


# -- roles: the GRANTs of docs/deployment.md -----------------------------------------


def _docs_sql(marker: str) -> str:
    text = DOCS.read_text(encoding="utf-8")
    match = re.search(r"```sql\n-- " + re.escape(marker) + r"\n(.*?)```", text, re.DOTALL)
    assert match, f"docs/deployment.md has no sql block starting with '-- {marker}'"
    return match.group(1)


def test_a_role_without_grants_is_told_what_it_lacks(
    postgres_cluster: pgcluster.PostgresCluster, postgres_url: str, key: MasterKey
) -> None:
    database = dbname(postgres_url)
    with open_registry(postgres_url, key):
        pass
    with postgres_cluster.admin() as admin:
        admin.execute("CREATE ROLE nobody_in_particular LOGIN")
    with pytest.raises(RegistryError, match="needs USAGE on schema securesession"):
        open_registry(postgres_cluster.url(database, user="nobody_in_particular"), key)
    with postgres_cluster.admin(database) as admin:
        for statement in _docs_sql("existing tables").split(";"):
            if statement.strip():
                admin.execute(statement.replace("securesession_reader", "nobody_in_particular"))
        admin.execute("GRANT USAGE ON SCHEMA securesession TO nobody_in_particular")
    with open_registry(postgres_cluster.url(database, user="nobody_in_particular"), key) as reg:
        assert list(reg.entries()) == []


def test_documented_grants_give_services_read_only_access(
    postgres_cluster: pgcluster.PostgresCluster,
    postgres_url: str,
    key: MasterKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    database = dbname(postgres_url)
    with postgres_cluster.admin() as admin:
        for statement in _docs_sql("roles").split(";"):
            if statement.strip():
                admin.execute(statement.replace("registry", database))
    with postgres_cluster.admin(database) as admin:
        for statement in _docs_sql("schema").split(";"):
            if statement.strip():
                admin.execute(statement)
    owner_url = postgres_cluster.url(database, user="securesession_owner")
    reader_url = postgres_cluster.url(database, user="securesession_reader")

    # A service cannot create the registry...
    with pytest.raises(RegistryError, match="open it once with the registry's owner role"):
        open_registry(reader_url, key)
    # ... the owner creates and fills it; the default privileges let services read it.
    with open_registry(owner_url, key) as owner:
        owner.put(entry("/svc", "v1"))
    with open_registry(reader_url, key) as reader:
        assert tag_of(reader, BASE + "/svc/x") == "v1"
        with pytest.raises(RegistryError, match="permission denied"):
            reader.put(entry("/svc", "v2"))
        with pytest.raises(RegistryError, match="permission denied"):
            reader.remove(BASE + "/svc")
        with pytest.raises(RegistryError, match="permission denied"):
            reader.rotate(MasterKey.generate())
        with open_registry(owner_url, key) as owner:
            owner.put(entry("/svc", "v3"))
        # The reader's index follows the owner's change through LISTEN.
        assert wait_until(lambda: tag_of(reader, BASE + "/svc/x") == "v3", 2)
        # A refused read is an answer, not a lost connection: no retry on a new one.
        with postgres_cluster.admin(database) as admin:
            admin.execute("REVOKE SELECT ON securesession.entries FROM securesession_reader")
        ref = reader.lookup(BASE + "/svc/x")
        assert ref is not None
        caplog.clear()
        with pytest.raises(RegistryError, match="permission denied"):
            reader.load(ref)
        assert "retrying once" not in caplog.text


# -- connection loss ------------------------------------------------------------------


def test_dropped_connections_are_retried_transparently(
    registry: Registry, outage: Outage, caplog: pytest.LogCaptureFixture
) -> None:
    registry.put(entry("/a", "v1"))
    ref = registry.lookup(BASE + "/a")
    assert ref is not None
    outage.kick()
    loaded = registry.load(ref)  # the read retries once on its dropped connection
    assert loaded is not None and loaded.gateway is not None
    assert loaded.gateway.username[3:] == "v1"
    outage.kick()
    registry.put(entry("/a", "v2"))  # so does a write that never reached COMMIT

    def current_tag() -> str | None:
        # Lookups come from the listener's index, which fails closed for the few
        # milliseconds until the listener has reconnected (see the next test).
        try:
            return tag_of(registry, BASE + "/a")
        except RegistryError:
            return None

    assert wait_until(lambda: current_tag() == "v2", 5)
    assert "retrying once" in caplog.text
    assert "reconnected, index reloaded" in caplog.text


def test_unreachable_database_fails_fast_and_recovers_with_a_fresh_index(
    postgres_url: str, key: MasterKey, outage: Outage
) -> None:
    url = with_password(postgres_url, "pw-SECRET")  # trust auth: never sent, never shown
    with open_registry(url, key) as registry:
        registry.put(entry("/a", "v1"))
        ref = registry.lookup(BASE + "/a")
        assert ref is not None
        outage.begin()
        started = time.monotonic()
        # The listener notices the drop within milliseconds, retries once, then
        # lookups fail (before that, the index is still current: nobody can write).
        errors: list[RegistryError] = []
        assert wait_until(lambda: _lookup_fails(registry, BASE + "/a", errors), 5)
        assert time.monotonic() - started < 3
        assert "cannot look up in registry" in str(errors[-1])
        port = url.split(":")[3]
        assert f"registry postgresql://postgres@127.0.0.1:{port}" in str(errors[-1])
        assert "SECRET" not in exception_texts(errors[-1])
        started = time.monotonic()
        with pytest.raises(RegistryError, match="cannot look up"):
            registry.lookup(BASE + "/a")  # now without waiting
        assert time.monotonic() - started < 0.5
        with pytest.raises(RegistryError, match="cannot read registry") as caught:
            registry.load(ref)
        assert "SECRET" not in exception_texts(caught.value)

        outage.end()
        with open_registry(postgres_url, key) as other:  # a change while it was away
            other.put(entry("/a", "v2"))
            other.put(entry("/b", "b1"))
        assert wait_until(lambda: _quiet_tag(registry, BASE + "/b") == "b1", 3)
        assert tag_of(registry, BASE + "/a") == "v2"


def _lookup_fails(registry: Registry, url: str, errors: list[RegistryError]) -> bool:
    try:
        registry.lookup(url)
    except RegistryError as exc:
        errors.append(exc)
        return True
    return False


def _quiet_tag(registry: Registry, url: str) -> str | None:
    try:
        return tag_of(registry, url)
    except RegistryError:
        return None


def test_session_serves_its_warm_cache_during_an_outage_only_if_asked(
    postgres_url: str, key: MasterKey, outage: Outage
) -> None:
    with GatewayServer() as server, open_registry(postgres_url, key) as registry:
        registry.put(entry("/svc", "v1", base=server.url))
        with (
            SecureSession(registry, stale_on_error=30) as tolerant,
            SecureSession(registry) as strict,
        ):
            tolerant.get(server.url + "/svc/a")
            strict.get(server.url + "/svc/a")
            outage.begin()
            assert wait_until(lambda: _lookup_fails(registry, server.url + "/svc/a", []), 5)
            assert tolerant.get(server.url + "/svc/a").status_code == 200
            with pytest.raises(RegistryError):
                strict.get(server.url + "/svc/a")
            with pytest.raises(RegistryError):
                tolerant.get(server.url + "/svc/never-seen")
        passwords = [r.header("X-Gateway-Password") for r in server.requests]
    assert passwords == ["gw-SECRET-v1"] * 3


# -- the index and its notifications ------------------------------------------------


def test_index_follows_hand_made_changes_announced_on_the_channel(
    postgres_cluster: pgcluster.PostgresCluster, postgres_url: str, registry: Registry
) -> None:
    registry.put(entry("/a", "a"))
    with postgres_cluster.admin(dbname(postgres_url)) as admin:
        # An operator restores a row from a backup and tells listeners to reload.
        admin.execute(
            "INSERT INTO securesession.entries"
            " SELECT key || 'copy', revision + 100, updated_at, settings, '{}'::jsonb"
            " FROM securesession.entries"
        )
        admin.execute("NOTIFY securesession_securesession, '*'")
    assert wait_until(lambda: registry.lookup(BASE + "/acopy/x") is not None, 2)
    with postgres_cluster.admin(dbname(postgres_url)) as admin:
        admin.execute("DELETE FROM securesession.entries WHERE key LIKE '%copy'")
        admin.execute("NOTIFY securesession_securesession, 'garbage'")  # reloads too
    assert wait_until(lambda: registry.lookup(BASE + "/acopy/x") is None, 2)
    # A notification that skips a revision makes the listener reload, not guess.
    with postgres_cluster.admin(dbname(postgres_url)) as admin:
        admin.execute("UPDATE securesession.state SET revision = revision + 5")
        admin.execute(
            "INSERT INTO securesession.entries"
            " SELECT key || 'gap', (SELECT revision FROM securesession.state), updated_at,"
            " settings, '{}'::jsonb FROM securesession.entries WHERE key NOT LIKE '%gap'"
        )
        revision = admin.execute("SELECT revision FROM securesession.state").fetchone()
        assert revision is not None
        admin.execute(
            "SELECT pg_notify('securesession_securesession', %s)", (f"u {revision[0]} nowhere",)
        )
    assert wait_until(lambda: registry.lookup(BASE + "/agap/x") is not None, 2)
    assert registry.lookup(BASE + "/nowhere") is None


def test_a_row_removed_behind_the_index_is_dropped_when_read(
    postgres_cluster: pgcluster.PostgresCluster, postgres_url: str, registry: Registry
) -> None:
    """The race read() guards: a lookup finds an entry whose row is already gone,
    before the removal's notification reaches the index."""
    registry.put(entry("/a", "parent"))
    registry.put(entry("/a/b", "child"))
    ref = registry.lookup(BASE + "/a/b/x")
    assert ref is not None
    with postgres_cluster.admin(dbname(postgres_url)) as admin:
        # No notification: the index hears of it only through the read.
        admin.execute("DELETE FROM securesession.entries WHERE key = %s", (ref.key,))
    assert registry.lookup(BASE + "/a/b/x") == ref
    assert registry.load(ref) is None
    assert tag_of(registry, BASE + "/a/b/x") == "parent"
    registry.put(entry("/a/b", "again"))  # the index still follows the channel
    assert tag_of(registry, BASE + "/a/b/x") == "again"


def test_forgetting_a_key_keeps_a_change_applied_since_it_was_read() -> None:
    index = Index()
    index.put("k", 1)
    seen = index.get("k")  # read() notes the revision, then finds the row gone ...
    assert seen == 1
    index.put("k", 2)  # ... while the listener applies the key's re-adding
    index.forget("k", seen)
    assert index.find(["x", "k"]) is not None and index.get("k") == 2
    index.forget("k", 2)
    assert index.find(["k"]) is None
    index.put("k", None)  # a removal of what is not there is a no-op
    assert index.get("k") is None


def test_lookup_is_served_from_memory(
    postgres_cluster: pgcluster.PostgresCluster, postgres_url: str, registry: Registry
) -> None:
    registry.put(entry("/a", "a"))

    def statements() -> int:
        with postgres_cluster.admin(dbname(postgres_url)) as admin:
            row = admin.execute(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
            ).fetchone()
        assert row is not None
        commits = row[0]
        assert isinstance(commits, int)
        return commits

    before = statements()
    for _ in range(500):
        assert registry.lookup(BASE + "/a/deep/path/x") is not None
    # Stats are approximate and our own two admin sessions count: far fewer than 500.
    assert statements() - before < 20


def test_close_stops_the_listener(postgres_url: str, key: MasterKey) -> None:
    registry = open_registry(postgres_url, key)
    assert isinstance(registry, EncryptedRegistry)
    assert any(t.name.startswith("securesession-listen") for t in threading.enumerate())
    registry.close()
    assert not any(t.name.startswith("securesession-listen") for t in threading.enumerate())
    with pytest.raises(RegistryError, match="closed"):
        registry.lookup(BASE + "/a")
    registry.close()  # idempotent


def test_rotation_reaches_other_processes_indexes(postgres_url: str, key: MasterKey) -> None:
    with open_registry(postgres_url, key) as writer, open_registry(postgres_url, key) as reader:
        for index in range(3):
            writer.put(entry(f"/s{index}", str(index)))
        assert wait_until(lambda: reader.lookup(BASE + "/s2") is not None, 2)
        before = {i: reader.lookup(BASE + f"/s{i}") for i in range(3)}
        writer.rotate(MasterKey.generate())
        assert wait_until(
            lambda: all(reader.lookup(BASE + f"/s{i}") != before[i] for i in range(3)), 2
        )


@pytest.mark.parametrize("steps", [[""], ["--stage", "--commit"]], ids=["plain", "staged"])
def test_a_rotation_retried_after_a_lost_connection_counts_its_entries_once(
    postgres_cluster: pgcluster.PostgresCluster,
    postgres_url: str,
    key: MasterKey,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    steps: list[str],
) -> None:
    """The rotation's backend is terminated after 3 entries were re-encrypted: the pool
    runs the whole body again on a fresh connection, and rotate-key reports what the
    committed transaction did, not every re-encryption both runs made."""
    key_file = tmp_path / "master.key"
    key.save(key_file)
    with open_registry(postgres_url, key) as registry:
        for index in range(5):
            registry.put(entry(f"/s{index}", str(index)))
    resealing = _codec.reseal  # as _base imported it
    calls = 0

    def terminated_on_the_third(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:  # inside the rotation's transaction, in its first run
            with postgres_cluster.admin() as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s"
                    " AND state LIKE 'idle in transaction%%'",
                    (dbname(postgres_url),),
                )
        return resealing(*args, **kwargs)

    where = ["--registry", postgres_url, "--key-file", str(key_file)]
    for step in steps[:-1]:
        assert run(["rotate-key", *where, step]) == 0
    monkeypatch.setattr(_base, "reseal", terminated_on_the_third)
    capsys.readouterr()
    assert run(["rotate-key", *where, *([steps[-1]] if steps[-1] else [])]) == 0
    output = capsys.readouterr()
    assert calls == 2 * 5  # each run re-encrypts its batch, then sends it: the first fails
    assert "retrying once" in output.err
    assert "(5 entries re-encrypted)" in output.out, output
    new_key = KeyRing.from_file(key_file)
    assert new_key.key_id != key.key_id
    with open_registry(postgres_url, new_key) as registry:
        assert registry.key_id == new_key.key_id
        assert [tag_of(registry, BASE + f"/s{i}") for i in range(5)] == list("01234")


def test_a_read_only_open_writes_nothing_and_the_server_refuses_writes(
    postgres_cluster: pgcluster.PostgresCluster, postgres_url: str, key: MasterKey
) -> None:
    with pytest.raises(RegistryError, match=r"does not exist .* a read-only open creates nothing"):
        open_registry(postgres_url, key, read_only=True)
    with open_registry(postgres_url, key) as writer:
        writer.put(entry("/a", "v1"))
    with postgres_cluster.admin(dbname(postgres_url)) as admin:
        admin.execute("UPDATE securesession.state SET key_id = NULL")  # a lost record
    with open_registry(postgres_url, key, read_only=True) as reader:
        assert isinstance(reader, EncryptedRegistry) and reader.read_only
        assert tag_of(reader, BASE + "/a/x") == "v1" and reader.key_id == key.key_id
        with pytest.raises(RegistryError, match="is open read-only"):
            reader.put(entry("/b", "v1"))
        with pytest.raises(RegistryError, match="read-only transaction"):
            reader.store.write("k", {}, {}, key_id=key.key_id)  # the server says no too
        with postgres_cluster.admin(dbname(postgres_url)) as admin:
            stored = admin.execute("SELECT key_id FROM securesession.state").fetchone()
        assert stored == (None,)  # the reader's open recorded nothing
        with open_registry(postgres_url, key) as writer:  # the index follows a change
            writer.put(entry("/a", "v2"))
        assert wait_until(lambda: tag_of(reader, BASE + "/a/x") == "v2")


def test_an_sql_ascii_database_reads_text_as_text(
    postgres_cluster: pgcluster.PostgresCluster,
) -> None:
    """On an SQL_ASCII database psycopg returns bytes unless the client asks for UTF-8;
    the stored key id then read as "b'...'" and a reopen looked like a wrong key."""
    cluster = postgres_cluster
    name = "ascii_" + os.urandom(4).hex()
    with cluster.admin() as connection:
        connection.execute(
            f"CREATE DATABASE {name} ENCODING 'SQL_ASCII' TEMPLATE template0 "
            "LC_COLLATE 'C' LC_CTYPE 'C'"
        )
    url = cluster.url(name)
    key = MasterKey.generate()
    with open_registry(url, key) as first:
        first.put(entry("/a", "v1"))
    with open_registry(url, key) as second:
        found = second.get(BASE + "/a/x")
        assert found is not None and second.key_id == key.key_id
