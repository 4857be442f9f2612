"""What is specific to the SQLite backend: the file on disk, its schema, its failures."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from securesession import (
    ConfigurationError,
    Credential,
    EntryRef,
    MasterKey,
    RegistryCorruptError,
    RegistryError,
    SchemaVersionError,
    ServiceEntry,
    open_registry,
)
from securesession._registry.sqlite import SCHEMA_VERSION
from securesession.registry import EncryptedRegistry
from securesession.sqlite import SQLiteStore


def fill(path: Path, key: MasterKey, count: int = 3) -> None:
    registry = open_registry(f"sqlite://{path}", key)
    for index in range(count):
        registry.put(
            ServiceEntry(
                url=f"https://gw.example.test/svc{index}/",
                gateway=Credential(f"gwuser-SECRET-{index}", f"gwpass-SECRET-{index}"),
                request=Credential(f"alice-SECRET-{index}", f"alicepass-SECRET-{index}"),
                secret_headers={"X-Api-Key": f"apikey-SECRET-{index}"},
            )
        )
    registry.close()


def test_nothing_secret_is_on_disk(tmp_path: Path, key: MasterKey) -> None:
    path = tmp_path / "registry.db"
    fill(path, key)
    for file in tmp_path.iterdir():  # the database, and its WAL if one is left
        assert b"SECRET" not in file.read_bytes(), file.name
    strings = subprocess.run(["strings", str(path)], capture_output=True, text=True, check=False)
    if strings.returncode == 0:
        assert "SECRET" not in strings.stdout
    dump = "\n".join(sqlite3.connect(path).iterdump())
    assert "SECRET" not in dump and "svc1" in dump


def test_schema_is_versioned_and_wal(tmp_path: Path, key: MasterKey) -> None:
    path = tmp_path / "registry.db"
    fill(path, key, 1)
    db = sqlite3.connect(path)
    assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert db.execute("SELECT value FROM meta WHERE name = 'key_id'").fetchone() == (key.key_id,)


def test_opening_a_current_registry_takes_no_write_lock(
    tmp_path: Path, key: MasterKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A reader process must start while a writer holds its transaction: opening a
    # registry whose schema is current writes nothing, so it never waits for the lock.
    path = tmp_path / "registry.db"
    fill(path, key, 1)
    monkeypatch.setattr("securesession._registry.sqlite._BUSY_TIMEOUT_S", 0.05)
    with closing(sqlite3.connect(path, isolation_level=None)) as writer:
        writer.execute("BEGIN IMMEDIATE")
        with open_registry(f"sqlite://{path}", key) as registry:
            assert registry.count() == 1
        writer.execute("ROLLBACK")
    # A new file, or one whose schema is older, is still created or migrated under
    # the write lock: with the lock held elsewhere the open fails, naming the cause.
    with closing(sqlite3.connect(path, isolation_level=None)) as writer:
        writer.execute("UPDATE schema_version SET version = version - 1")
        writer.execute("BEGIN IMMEDIATE")
        with pytest.raises(RegistryError, match="locked"):
            open_registry(f"sqlite://{path}", key)
        writer.execute("ROLLBACK")
    with open_registry(f"sqlite://{path}", key) as registry:
        assert registry.count() == 1
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]


def test_newer_schema_is_refused_and_untouched(tmp_path: Path, key: MasterKey) -> None:
    path = tmp_path / "registry.db"
    fill(path, key, 1)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE schema_version SET version = 99")
    before = path.read_bytes()
    newer = f"schema version 99, newer than the {SCHEMA_VERSION}"
    with pytest.raises(SchemaVersionError, match=newer):
        open_registry(f"sqlite://{path}", key)
    assert path.read_bytes() == before


def test_corrupt_file_is_a_clear_error_and_left_alone(tmp_path: Path, key: MasterKey) -> None:
    path = tmp_path / "registry.db"
    path.write_bytes(b"this is not a database, and it must survive" * 100)
    before = path.read_bytes()
    with pytest.raises(RegistryCorruptError, match="not a valid registry"):
        open_registry(f"sqlite://{path}", key)
    assert path.read_bytes() == before


def test_hand_edited_rows_are_clear_errors(tmp_path: Path, key: MasterKey) -> None:
    path = tmp_path / "registry.db"
    fill(path, key, 2)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE entries SET secrets = 'not json' WHERE key LIKE '%svc0'")
        db.execute("UPDATE entries SET settings = '{\"format\": 7}' WHERE key LIKE '%svc1'")
    registry = open_registry(f"sqlite://{path}", key)
    with pytest.raises(RegistryCorruptError, match=r"svc0: secrets is not valid JSON"):
        registry.get("https://gw.example.test/svc0/x")
    with pytest.raises(RegistryCorruptError, match="svc1: unknown settings format"):
        registry.get("https://gw.example.test/svc1/x")


def test_missing_directory_and_bad_urls(tmp_path: Path, key: MasterKey) -> None:
    with pytest.raises(RegistryError, match="directory does not exist"):
        open_registry(f"sqlite://{tmp_path}/missing/registry.db", key)
    with pytest.raises(RegistryError, match="needs a path"):
        open_registry("sqlite://", key)
    with pytest.raises(ConfigurationError, match="has no scheme"):
        open_registry("registry.db", key)
    with pytest.raises(
        ConfigurationError,
        match="no registry backend for scheme 'nope'; known schemes: memory, ",
    ):
        open_registry("nope://x", key)


def test_a_failed_rotation_changes_nothing(
    tmp_path: Path, key: MasterKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "registry.db"
    fill(path, key, 5)
    registry = open_registry(f"sqlite://{path}", key)
    new_key = MasterKey.generate()
    calls = [0]
    original = MasterKey.encrypt

    def failing(self: MasterKey, plaintext: bytes, context: bytes) -> str:
        calls[0] += 1
        if calls[0] == 7:
            raise RuntimeError("simulated crash part way through the rotation")
        return original(self, plaintext, context)

    monkeypatch.setattr(MasterKey, "encrypt", failing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        registry.rotate(new_key)
    monkeypatch.undo()
    registry.close()
    reopened = open_registry(f"sqlite://{path}", key)
    assert len(list(reopened.entries())) == 5


def test_several_processes_write_at_once(tmp_path: Path, key: MasterKey) -> None:
    path = tmp_path / "registry.db"
    open_registry(f"sqlite://{path}", key).close()
    script = textwrap.dedent(
        """
        import sys
        from securesession import Credential, MasterKey, ServiceEntry, open_registry
        key = MasterKey.from_base64(sys.stdin.read())
        registry = open_registry("sqlite://" + sys.argv[1], key)
        for index in range(25):
            url = f"https://h/p{sys.argv[2]}/e{index}"
            registry.put(ServiceEntry(url=url, request=Credential("u", "p-SECRET")))
        """
    )
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(path), str(n)], stdin=subprocess.PIPE, text=True
        )
        for n in range(4)
    ]
    for worker in workers:
        worker.communicate(key.to_base64())
        assert worker.returncode == 0
    registry = open_registry(f"sqlite://{path}", key)
    assert len(list(registry.entries())) == 100


def test_third_party_backends_come_from_entry_points(
    tmp_path: Path, key: MasterKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "fancy_backend.py").write_text(
        textwrap.dedent(
            """
            from securesession.memory import MemoryStore
            from securesession.registry import EncryptedRegistry

            def open_fancy(url, key):
                return EncryptedRegistry(MemoryStore(), key, name=url)

            def open_careful(url, key, *, read_only=False):
                return EncryptedRegistry(MemoryStore(), key, name=url, read_only=read_only)
            """
        )
    )
    dist = tmp_path / "fancy_backend-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fancy-backend\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[securesession.registries]\nfancy = fancy_backend:open_fancy\n"
        "careful = fancy_backend:open_careful\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = open_registry("fancy://anything", key)
    registry.put(ServiceEntry(url="https://h/x/", request=Credential("u", "p-SECRET")))
    assert registry.get("https://h/x/y") is not None
    assert repr(registry) == f"<EncryptedRegistry fancy://anything key_id={key.key_id}>"
    # Read-only (diff) only where the factory takes read_only: opening may write.
    with pytest.raises(ConfigurationError, match="'fancy' cannot open a registry read-only"):
        open_registry("fancy://anything", key, read_only=True)
    careful = open_registry("careful://anything", key, read_only=True)
    assert isinstance(careful, EncryptedRegistry) and careful.read_only


def test_lookup_is_index_probes_never_a_scan(tmp_path: Path, key: MasterKey) -> None:
    """Lookup cost follows the path depth, not the number of entries."""
    path = tmp_path / "registry.db"
    fill(path, key, 3)
    registry = open_registry(f"sqlite://{path}", key)
    statements: list[str] = []
    connection = registry.store._connection()  # type: ignore[attr-defined]
    connection.set_trace_callback(statements.append)
    assert registry.lookup("https://gw.example.test/svc1/a/b") is not None
    connection.set_trace_callback(None)
    (query,) = statements  # the freshness re-check runs on the store's watcher connection
    assert query.count("'https://gw.example.test:443") == 4  # one probe per path prefix
    plan = " ".join(str(row[-1]) for row in connection.execute("EXPLAIN QUERY PLAN " + query))
    assert "USING PRIMARY KEY" in plan and "SCAN" not in plan.replace("SCAN CONSTANT", "")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def clocked(path: Path, key: MasterKey, clock: FakeClock) -> EncryptedRegistry:
    """A registry over a SQLiteStore whose re-check interval runs on *clock*."""
    return EncryptedRegistry(SQLiteStore(path, clock=clock), key, name=f"sqlite://{path}")


def trace(store: Any) -> list[str]:
    """Every statement the calling thread's connection and the watcher run from now on."""
    statements: list[str] = []
    store._connection().set_trace_callback(statements.append)
    if store._watcher is not None:
        store._watcher.set_trace_callback(statements.append)
    return statements


def test_warm_lookups_run_no_statement(tmp_path: Path, key: MasterKey) -> None:
    path = tmp_path / "registry.db"
    fill(path, key, 2)
    clock = FakeClock()
    reader = clocked(path, key, clock)
    url = "https://gw.example.test/svc1/a"
    first = reader.lookup(url)
    statements = trace(reader.store)
    checked_at = clock.now  # the first lookup re-checked
    for step in range(1000):
        clock.now = checked_at + step * 0.0000099  # 1,000 lookups in 9.9 ms
        assert reader.lookup(url) == first
    assert statements == []
    clock.now = checked_at + 0.010
    assert reader.lookup(url) == first
    assert statements == ["PRAGMA data_version"]  # one re-check, on the watcher
    reader.close()


def test_a_change_elsewhere_is_seen_after_the_recheck_interval_and_not_later(
    tmp_path: Path, key: MasterKey
) -> None:
    """The staleness bound on an injected clock: a commit by another connection (here a
    second SQLiteStore on the same file, as another process would be) is served stale
    for less than ``recheck_interval`` after it returned, and never after."""
    path = tmp_path / "registry.db"
    fill(path, key, 2)
    clock = FakeClock()
    reader = clocked(path, key, clock)
    writer = open_registry(f"sqlite://{path}", key)
    assert reader.store.recheck_interval == 0.010  # type: ignore[attr-defined]
    url = "https://gw.example.test/svc1/a"
    before = reader.lookup(url)
    assert before is not None and before.key.endswith("/svc1")

    checked_at = clock.now  # the lookup above re-checked (the store's first lookup)
    clock.now = checked_at + 0.004
    writer.put(ServiceEntry(url="https://gw.example.test/svc1/a", request=Credential("u", "p")))
    clock.now = checked_at + 0.0099  # 9.9 ms after the re-check: the memo may still be served
    assert reader.lookup(url) == before
    clock.now = checked_at + 0.010  # 10 ms: re-checked, the new entry wins
    after = reader.lookup(url)
    assert after is not None and after.key.endswith("/svc1/a")

    # The worst case: a commit that returns just after a re-check started (that
    # re-check, by the lookup above, read data_version before the commit).
    rechecked_at = clock.now
    assert writer.remove("https://gw.example.test/svc1/a")
    clock.now = rechecked_at + 0.0099
    assert reader.lookup(url) == after  # 9.9 ms after the removal: still within the bound
    clock.now = rechecked_at + 0.010
    found = reader.lookup(url)
    assert found is not None and found.key.endswith("/svc1")  # 10 ms: never later
    reader.close()
    writer.close()


def test_own_writes_are_seen_at_once_from_every_thread(tmp_path: Path, key: MasterKey) -> None:
    import threading

    path = tmp_path / "registry.db"
    fill(path, key, 2)
    clock = FakeClock()  # never advances: only the store's own commits can count
    registry = clocked(path, key, clock)
    url = "https://gw.example.test/svc1/a"
    first = registry.lookup(url)
    seen: list[EntryRef | None] = []
    thread = threading.Thread(target=lambda: seen.append(registry.lookup(url)))
    thread.start()
    thread.join()
    stored = registry.put(ServiceEntry(url=url, request=Credential("u", "p")))
    assert registry.lookup(url) == EntryRef(stored.url, stored.revision)

    def in_thread() -> None:  # another thread's connection and memo
        seen.append(registry.lookup(url))
        registry.put(
            ServiceEntry(url="https://gw.example.test/svc1/", request=Credential("v", "p"))
        )
        seen.append(registry.lookup("https://gw.example.test/svc1/b"))

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    assert seen[0] == first and seen[1] == EntryRef(stored.url, stored.revision)
    assert seen[2] is not None and seen[2].revision > stored.revision
    assert registry.remove(url)
    assert registry.lookup(url) == EntryRef(seen[2].key, seen[2].revision)
    registry.close()


def test_a_read_rechecks_at_once(tmp_path: Path, key: MasterKey) -> None:
    """``read`` (a cache miss, the reload after a 401) re-checks before it reads, so the
    lookup that follows sees every commit made before the read, with no clock advance."""
    path = tmp_path / "registry.db"
    fill(path, key, 2)
    clock = FakeClock()
    reader = clocked(path, key, clock)
    writer = open_registry(f"sqlite://{path}", key)
    url = "https://gw.example.test/svc1/a"
    ref = reader.lookup(url)
    assert ref is not None
    writer.put(ServiceEntry(url="https://gw.example.test/svc1/", request=Credential("new", "p")))
    writer.put(ServiceEntry(url="https://gw.example.test/svc1/a", request=Credential("u", "p")))
    assert reader.lookup(url) == ref  # within the interval: the memo is served
    loaded = reader.load(ref)  # the row is always read fresh ...
    assert loaded is not None and loaded.request is not None
    assert loaded.request.username == "new" and loaded.revision > ref.revision
    fresh = reader.lookup(url)  # ... and the read re-checked: the next lookup is current
    assert fresh is not None and fresh.key.endswith("/svc1/a")
    assert writer.remove("https://gw.example.test/svc1/a")
    assert reader.load(fresh) is None  # removed: the guard then looks up again
    again = reader.lookup(url)
    assert again is not None and again.key.endswith("/svc1")
    reader.close()
    writer.close()


def test_recheck_interval_is_validated_and_zero_checks_every_lookup(
    tmp_path: Path, key: MasterKey
) -> None:
    path = tmp_path / "registry.db"
    for bad in (-0.001, 0.2):
        with pytest.raises(ValueError, match="recheck_interval"):
            SQLiteStore(path, recheck_interval=bad)
    fill(path, key, 1)
    store = SQLiteStore(path, recheck_interval=0, clock=FakeClock())
    keys = ["https://gw.example.test:443/svc0", "https://gw.example.test:443"]
    assert store.find(keys) is not None
    statements = trace(store)
    assert store.find(keys) is not None
    assert statements == ["PRAGMA data_version"]
    store.recheck()  # on demand, whatever the interval
    assert statements == ["PRAGMA data_version"] * 2
    store.close()


def test_finished_threads_leave_no_open_connection(tmp_path: Path, key: MasterKey) -> None:
    import gc
    import threading

    path = tmp_path / "registry.db"
    fill(path, key, 1)
    registry = open_registry(f"sqlite://{path}", key)
    for _ in range(20):
        thread = threading.Thread(target=registry.lookup, args=("https://gw.example.test/svc0/",))
        thread.start()
        thread.join()
    gc.collect()
    assert len(registry.store._connections) <= 2  # type: ignore[attr-defined]
    registry.close()


@pytest.mark.parametrize(
    ("column", "cell", "problem"),
    [
        ("revision", "'x'", "revision is not an integer"),
        ("revision", "1.5", "revision is not an integer"),
        ("revision", "x'00'", "revision is not an integer"),
        ("updated_at", "'x'", "updated_at is not a number"),
        ("updated_at", "x'00'", "updated_at is not a number"),
    ],
)
def test_corrupt_revision_or_updated_at_cells_are_registry_corrupt_errors(
    tmp_path: Path, key: MasterKey, column: str, cell: str, problem: str
) -> None:
    path = tmp_path / "registry.db"
    fill(path, key, 2)
    with sqlite3.connect(path) as db:
        db.execute(f"UPDATE entries SET {column} = {cell} WHERE key LIKE '%svc0'")  # noqa: S608
    registry = open_registry(f"sqlite://{path}", key)
    store = registry.store  # type: ignore[attr-defined]
    entry_key = "https://gw.example.test:443/svc0"
    message = rf"registry {re.escape(str(path))}, entry {re.escape(entry_key)}: {problem}"
    url = "https://gw.example.test/svc0/x"
    if column == "revision":  # lookup reads the revision; find is what it calls
        with pytest.raises(RegistryCorruptError, match=message):
            registry.lookup(url)
        with pytest.raises(RegistryCorruptError, match=message):
            store.find([entry_key])
    else:
        assert registry.lookup(url) == EntryRef(entry_key, 1)
    with pytest.raises(RegistryCorruptError, match=message):
        store.read(entry_key)
    with pytest.raises(RegistryCorruptError, match=message):
        registry.load(EntryRef(entry_key, 1))
    with pytest.raises(RegistryCorruptError, match=message):
        registry.get(url)
    with pytest.raises(RegistryCorruptError, match=message):
        list(store.scan())
    with pytest.raises(RegistryCorruptError, match=message):
        list(registry.entries())
    # The other entry is untouched and still readable on its own.
    assert registry.get("https://gw.example.test/svc1/x") is not None
    registry.close()


def test_a_missing_revision_counter_is_a_registry_corrupt_error(
    tmp_path: Path, key: MasterKey
) -> None:
    """Every write takes the next registry revision from meta's 'revision' row: with
    the row gone (a hand edit, a broken copy), writes and rotations are refused by
    name, and nothing is written."""
    path = tmp_path / "registry.db"
    fill(path, key, 1)
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM meta WHERE name = 'revision'")
    message = rf"registry {re.escape(str(path))}: its revision counter .* is missing"
    with closing(open_registry(f"sqlite://{path}", key)) as registry:
        before = [(entry.url, entry.revision) for entry in registry.entries()]
        with pytest.raises(RegistryCorruptError, match=message):
            registry.put(ServiceEntry(url="https://gw.example.test/new/"))
        with pytest.raises(RegistryCorruptError, match=message):
            registry.rotate(MasterKey.generate())
        assert [(entry.url, entry.revision) for entry in registry.entries()] == before
        assert registry.key_id == key.key_id


def test_a_read_only_open_reads_and_never_writes(tmp_path: Path, key: MasterKey) -> None:
    path = tmp_path / "registry.db"
    url = f"sqlite://{path}"
    with pytest.raises(RegistryError, match="does not exist"):
        open_registry(url, key, read_only=True)
    assert not path.exists()  # not created either
    path.touch()
    with pytest.raises(RegistryCorruptError, match="not a registry"):
        open_registry(url, key, read_only=True)
    assert path.read_bytes() == b""
    path.unlink()
    fill(path, key, 2)
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM meta WHERE name = 'key_id'")
    before = path.read_bytes()
    with closing(open_registry(url, key, read_only=True)) as registry:
        assert isinstance(registry, EncryptedRegistry) and registry.read_only
        assert registry.key_id == key.key_id  # from the entries' tokens, not recorded
        assert len(list(registry.entries())) == 2
        with pytest.raises(RegistryError, match="is open read-only"):
            registry.put(ServiceEntry(url="https://gw.example.test/new/"))
        with pytest.raises(RegistryError, match="is open read-only"):
            registry.rotate(MasterKey.generate())
        with pytest.raises(RegistryError, match="readonly database"):  # SQLite's mode=ro
            registry.store.write("k", {}, {}, key_id=key.key_id)
    assert path.read_bytes() == before


# -- deleted and replaced ciphertext leaves the file and the WAL --------------------------


def _stored_tokens(path: Path) -> list[str]:
    """The ciphertext tokens as stored, read straight from the secrets column."""
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT secrets FROM entries").fetchall()
    finally:
        db.close()
    tokens = [token for (secrets,) in rows for token in json.loads(secrets).values()]
    assert tokens and all(isinstance(token, str) and len(token) > 40 for token in tokens)
    return tokens


def _files_holding(path: Path, tokens: list[str]) -> list[str]:
    """Which of the database's files (``.db``, ``-wal``, ``-shm``) hold any of *tokens*,
    whole or by their middle part."""
    found = []
    for file in sorted(path.parent.glob(path.name + "*")):
        data = file.read_bytes()
        for token in tokens:
            middle = token[len(token) // 2 - 12 : len(token) // 2 + 12]
            if token.encode() in data or middle.encode() in data:
                found.append(file.name)
                break
    return found


def _other_process_connection(path: Path) -> sqlite3.Connection:
    """An idle connection, as another process holds: with it open the WAL is not
    deleted when the registry closes, so only a checkpoint can empty it."""
    db = sqlite3.connect(path)
    db.execute("SELECT count(*) FROM entries").fetchone()
    return db


@pytest.fixture
def secure_delete_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every new connection starts with secure_delete OFF, SQLite's own default (some
    builds, Debian's among them, are compiled with it ON): the store must turn it on."""
    connect = sqlite3.connect

    def connect_off(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        connection: sqlite3.Connection = connect(*args, **kwargs)
        connection.execute("PRAGMA secure_delete=OFF")
        return connection

    monkeypatch.setattr(sqlite3, "connect", connect_off)


@pytest.mark.usefixtures("secure_delete_off_by_default")
def test_sqlite_connections_use_secure_delete(tmp_path: Path, key: MasterKey) -> None:
    import threading

    probe = sqlite3.connect(":memory:")
    assert probe.execute("PRAGMA secure_delete").fetchone() == (0,)  # the fixture works
    probe.close()
    registry = open_registry(f"sqlite://{tmp_path / 'registry.db'}", key)
    store = registry.store  # type: ignore[attr-defined]
    values = [store._connection().execute("PRAGMA secure_delete").fetchone()]
    thread = threading.Thread(
        target=lambda: values.append(store._connection().execute("PRAGMA secure_delete").fetchone())
    )
    thread.start()
    thread.join()
    assert values == [(1,), (1,)]  # this thread's connection and another thread's
    registry.close()


@pytest.mark.usefixtures("secure_delete_off_by_default")
@pytest.mark.parametrize("other_process", [False, True], ids=["alone", "wal-kept-open"])
def test_removed_entry_leaves_no_token_in_the_file_or_wal(
    tmp_path: Path, key: MasterKey, other_process: bool
) -> None:
    path = tmp_path / "registry.db"
    fill(path, key, 1)
    tokens = _stored_tokens(path)
    assert _files_holding(path, tokens)  # the scan does find tokens that are there
    other = _other_process_connection(path) if other_process else None
    registry = open_registry(f"sqlite://{path}", key)
    assert registry.remove("https://gw.example.test/svc0/")
    registry.close()
    try:
        assert _files_holding(path, tokens) == []
    finally:
        if other is not None:
            other.close()
    assert _files_holding(path, tokens) == []


@pytest.mark.usefixtures("secure_delete_off_by_default")
@pytest.mark.parametrize("other_process", [False, True], ids=["alone", "wal-kept-open"])
def test_rotation_leaves_no_old_key_token_in_the_file_or_wal(
    tmp_path: Path, key: MasterKey, other_process: bool
) -> None:
    path = tmp_path / "registry.db"
    fill(path, key, 3)
    old_tokens = _stored_tokens(path)
    other = _other_process_connection(path) if other_process else None
    registry = open_registry(f"sqlite://{path}", key)
    registry.rotate(MasterKey.generate())
    registry.close()
    try:
        assert _files_holding(path, old_tokens) == []
        assert _files_holding(path, _stored_tokens(path)) == ["registry.db"]
    finally:
        if other is not None:
            other.close()
    assert _files_holding(path, old_tokens) == []
