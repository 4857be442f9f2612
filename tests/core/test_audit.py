"""The audit log on SQLite: what each write records, and that a store writer without
the master key cannot remove, edit, reorder, replay or import records, nor change,
remove, roll back or add an entry, nor wipe the log, unnoticed."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import pytest

from securesession import (
    AuditError,
    Credential,
    MasterKey,
    Registry,
    ServiceEntry,
    open_registry,
)
from securesession._audit import acting_as, verify
from securesession._crypto import KeyRing
from securesession._registry.sqlite import SQLiteStore
from securesession.registry import EncryptedRegistry

from ..secretscan import leaks

BASE = "https://gw.example.test"
PAY = BASE + ":443/pay"


def _entry(path: str, secret: str = "pw-SECRET-1", **options: object) -> ServiceEntry:
    return ServiceEntry(
        url=BASE + path,
        gateway=Credential("gw-user", secret),
        **options,  # type: ignore[arg-type]
    )


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "registry.db"


@pytest.fixture
def registry(path: Path, key: MasterKey) -> Registry:
    return open_registry(f"sqlite://{path}", key)


def _fill(registry: Registry) -> None:
    registry.put(_entry("/a"))
    registry.put(_entry("/a", "pw-SECRET-2"))  # only the password changes
    registry.put(_entry("/b", description="b"))
    registry.remove(BASE + "/a")


def _sql(path: Path, statement: str, *params: object) -> None:
    with sqlite3.connect(path) as db:
        db.execute(statement, params)


def _rows(path: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT seq, record FROM audit ORDER BY seq").fetchall()


def _row_of(path: Path, key: str) -> tuple[str, str]:
    """An entry's stored settings and secrets, as a store writer copies them."""
    with sqlite3.connect(path) as db:
        row: tuple[str, str] = db.execute(
            "SELECT settings, secrets FROM entries WHERE key = ?", (key,)
        ).fetchone()
    return row


def _password_in_use(registry: Registry) -> str | None:
    entry = registry.get(PAY + "/x")
    return None if entry is None or entry.gateway is None else entry.gateway.password.reveal()


def test_each_write_records_what_changed_and_never_a_value(
    path: Path, key: MasterKey, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="securesession")
    with acting_as("release-bot"):
        registry = open_registry(f"sqlite://{path}", key)
    _fill(registry)
    records = list(registry.audit())
    summary = [(r.operation, r.change, r.entry, r.fields) for r in records]
    assert summary[0] == ("start", "", "*", ())
    assert records[0].entries == {} and records[0].revision == 0  # a new registry
    assert summary[2] == ("put", "changed", BASE + ":443/a", ("gateway.password",))
    assert summary[3][:3] == ("put", "added", BASE + ":443/b")
    assert "description" in summary[3][3] and "gateway.password" in summary[3][3]
    assert summary[4][:3] == ("remove", "removed", BASE + ":443/a")
    assert [r.seq for r in records] == [1, 2, 3, 4, 5]
    assert {r.actor for r in records} == {"release-bot"}
    revisions = [r.revision for r in records[1:] if r.revision is not None]
    assert revisions == sorted(revisions) and len(set(revisions)) == 4
    # Each record commits to the row it found and the row it left.
    assert (records[1].was, records[2].was) == (None, records[1].row)
    assert records[4].was == records[2].row and records[4].row is None
    # No value anywhere: not in the stored records, not in the DEBUG log.
    assert not any(leaks(text) for _, text in _rows(path))
    assert not leaks(caplog.text) and "gw-user" not in caplog.text
    report = registry.verify_audit()
    assert (report.records, report.chain) == (5, records[0].chain)


def test_filters_by_entry_and_time(registry: Registry) -> None:
    _fill(registry)
    of_b = list(registry.audit(entry=BASE + "/b"))
    assert [r.entry for r in of_b] == ["*", BASE + ":443/b"]  # the start record is "*"
    assert list(registry.audit(since=of_b[-1].time + 3600)) == []


def test_a_batch_and_a_rotation_are_logged_in_their_transaction(
    registry: Registry, key: MasterKey
) -> None:
    registry.put(_entry("/old"))
    registry.apply([_entry("/x"), _entry("/y")], [BASE + "/old"], operation="import")
    new_key = MasterKey.generate()
    registry.rotate(new_key)
    records = list(registry.audit())
    assert [(r.operation, r.entry) for r in records[2:5]] == [
        ("import", BASE + ":443/x"),
        ("import", BASE + ":443/y"),
        ("import", BASE + ":443/old"),
    ]
    rotation = records[-1]
    assert (rotation.operation, rotation.entry, rotation.key_id) == ("rotate", "*", new_key.key_id)
    assert rotation.since is not None and rotation.revision == rotation.since + 1  # two entries
    assert rotation.entries is not None and sorted(rotation.entries) == [
        BASE + ":443/x",
        BASE + ":443/y",
    ]
    report = registry.verify_audit()
    assert report.authenticated == report.records == 6


def test_records_under_a_retired_key_are_covered_by_later_ones(path: Path, key: MasterKey) -> None:
    registry = open_registry(f"sqlite://{path}", key)
    registry.put(_entry("/a"))
    new_key = MasterKey.generate()
    registry.rotate(new_key)
    registry.put(_entry("/b"))
    registry.close()
    # Only the new key: the two records under the old key cannot be checked alone,
    # but the rotation record's MAC covers their digests through the chain.
    reopened = open_registry(f"sqlite://{path}", new_key)
    report = reopened.verify_audit()
    assert (report.records, report.authenticated) == (4, 2)
    # Editing one of them is still caught: the link after it breaks.
    _sql(path, "UPDATE audit SET record = replace(record, '\"put\"', '\"remove\"') WHERE seq = 2")
    with pytest.raises(AuditError, match="record 3 does not follow record 2"):
        reopened.verify_audit()


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        pytest.param(
            "UPDATE audit SET record = replace(record, 'root', 'mallory') WHERE seq = 3",
            "record 3 failed authentication",
            id="edit-actor",
        ),
        pytest.param(
            "UPDATE audit SET record = replace(record, '\"gateway.password\"', '\"x\"')"
            " WHERE seq = 3",
            "record 3 failed authentication",
            id="edit-fields",
        ),
        pytest.param("DELETE FROM audit WHERE seq = 3", "record 3 is missing", id="remove"),
        pytest.param(
            "UPDATE audit SET record = (SELECT record FROM audit AS other"
            " WHERE other.seq = 7 - audit.seq) WHERE seq IN (3, 4)",
            "record 3 says it is record 4",
            id="reorder",
        ),
        pytest.param(
            "DELETE FROM audit WHERE seq = (SELECT max(seq) FROM audit)",
            "records at the end were removed",
            id="truncate-newest",
        ),
        pytest.param("DELETE FROM audit WHERE seq = 1", "record 1 is missing", id="remove-start"),
        pytest.param("DELETE FROM audit", "its records were removed", id="truncate-all"),
        pytest.param(
            "UPDATE entries SET revision = revision + 100",
            "revision 103.* is not the row record 4 logs",
            id="entry-revision-edited",
        ),
    ],
)
def test_verify_names_the_tampered_record(
    path: Path, key: MasterKey, tamper: str, message: str
) -> None:
    with acting_as("root"):
        registry = open_registry(f"sqlite://{path}", key)
    _fill(registry)
    registry.verify_audit()
    _sql(path, tamper)
    with pytest.raises(AuditError, match=message):
        registry.verify_audit()


# -- entries changed behind securesession's back (the store's rows, not the log) ---------


def _two_entries(path: Path, key: MasterKey) -> Registry:
    registry = open_registry(f"sqlite://{path}", key)
    registry.put(ServiceEntry(BASE + "/", gateway=Credential("general", "GENERAL-SECRET")))
    registry.put(ServiceEntry(BASE + "/pay", gateway=Credential("pay", "PAY-SECRET-v1")))
    return registry


def _rotate_pay_password(registry: Registry) -> None:
    registry.put(ServiceEntry(BASE + "/pay", gateway=Credential("pay", "PAY-SECRET-v2")))


def test_an_entry_row_deleted_in_the_store_is_detected(path: Path, key: MasterKey) -> None:
    registry = _two_entries(path, key)
    _sql(path, "DELETE FROM entries WHERE key = ?", PAY)
    assert _password_in_use(registry) == "GENERAL-SECRET"  # the broader entry takes over
    with pytest.raises(AuditError, match=f"entry {PAY} is missing, but record 3 logs it"):
        registry.verify_audit()


@pytest.mark.parametrize("revision", ["revision", "0"], ids=["revision-kept", "revision-0"])
def test_an_entry_rolled_back_to_an_older_row_is_detected(
    path: Path, key: MasterKey, revision: str
) -> None:
    """An authentic older row of the entry opens fine (its tag is valid): only the
    record's commitment to the current row tells. Revision 0 would once have made it
    'predate the log'."""
    registry = _two_entries(path, key)
    old = _row_of(path, PAY)
    _rotate_pay_password(registry)
    _sql(
        path,
        f"UPDATE entries SET settings = ?, secrets = ?, revision = {revision} WHERE key = ?",  # noqa: S608
        *old,
        PAY,
    )
    assert _password_in_use(registry) == "PAY-SECRET-v1"
    with pytest.raises(AuditError, match=f"entry {PAY} .* is not the row record 4 logs"):
        registry.verify_audit()


def test_a_removed_entry_put_back_in_the_store_is_detected(path: Path, key: MasterKey) -> None:
    registry = _two_entries(path, key)
    with sqlite3.connect(path) as db:
        row = db.execute("SELECT * FROM entries WHERE key = ?", (PAY,)).fetchone()
    registry.remove(BASE + "/pay")
    _sql(path, "INSERT INTO entries VALUES (?, 0, ?, ?, ?)", row[0], *row[2:])
    assert _password_in_use(registry) == "PAY-SECRET-v1"
    with pytest.raises(AuditError, match=f"entry {PAY} .* is in the registry but not in the log"):
        registry.verify_audit()


def test_a_store_change_overwritten_since_is_still_detected(path: Path, key: MasterKey) -> None:
    """Rolled back, used by hosts, then overwritten by a put: the put's record found a
    row other than the log's, and says so."""
    registry = _two_entries(path, key)
    old = _row_of(path, PAY)
    _rotate_pay_password(registry)
    _sql(path, "UPDATE entries SET settings = ?, secrets = ? WHERE key = ?", *old, PAY)
    registry.put(ServiceEntry(BASE + "/pay", gateway=Credential("pay", "PAY-SECRET-v3")))
    with pytest.raises(AuditError, match=r"record 5 .* found a row other than the one record 4"):
        registry.verify_audit()


def test_a_store_change_before_a_rotation_is_detected(path: Path, key: MasterKey) -> None:
    """A rotation re-encrypts whatever it finds: its record's digest of what it found
    shows the rolled-back row it laundered."""
    registry = _two_entries(path, key)
    old = _row_of(path, PAY)
    _rotate_pay_password(registry)
    _sql(path, "UPDATE entries SET settings = ?, secrets = ? WHERE key = ?", *old, PAY)
    registry.rotate(MasterKey.generate())
    with pytest.raises(AuditError, match="record 5 \\(rotate\\) found entries other than"):
        registry.verify_audit()


# -- the whole log removed, or replaced ----------------------------------------------------


def test_a_wiped_log_fails_and_refuses_writes(path: Path, key: MasterKey) -> None:
    """The review's wipe: every record removed and the log's starting point moved up to
    the current revision, with an entry rolled back."""
    registry = _two_entries(path, key)
    old = _row_of(path, PAY)
    _rotate_pay_password(registry)
    registry.close()
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM audit")
        db.execute(
            "UPDATE meta SET value = (SELECT value FROM meta WHERE name = 'revision')"
            " WHERE name = 'audit_from'"
        )
        db.execute("UPDATE entries SET settings = ?, secrets = ? WHERE key = ?", (*old, PAY))
    reopened = open_registry(f"sqlite://{path}", key)  # does not start a new log
    with pytest.raises(AuditError, match=r"audit log is empty.*its records were removed"):
        reopened.verify_audit()
    with pytest.raises(AuditError, match=r"has no record.*nothing was written"):
        reopened.put(_entry("/new"))
    assert reopened.count() == 2 and _rows(path) == []


def test_a_log_copied_from_another_registry_is_detected(tmp_path: Path, key: MasterKey) -> None:
    """Same key, same history shape: the copied log's row digests are another
    registry's rows (only copying the entries too goes unseen: docs/security.md)."""
    paths = [tmp_path / "ours.db", tmp_path / "theirs.db"]
    for each in paths:
        with open_registry(f"sqlite://{each}", key) as registry:
            _fill(registry)
    with sqlite3.connect(paths[0]) as db:
        db.execute("DELETE FROM audit")
        db.executemany("INSERT INTO audit VALUES (?, ?)", _rows(paths[1]))
    with (
        open_registry(f"sqlite://{paths[0]}", key) as ours,
        pytest.raises(AuditError, match=f"entry {BASE}:443/b .* is not the row record 4 logs"),
    ):
        ours.verify_audit()


def test_a_replayed_record_does_not_link(registry: Registry, path: Path) -> None:
    _fill(registry)
    old = dict(_rows(path))[2]
    # Renumbered to fit, as a store writer would: its MAC and link then fail.
    record = json.loads(old)
    record["seq"] = 6
    _sql(
        path,
        "INSERT INTO audit VALUES (6, ?)",
        json.dumps(record, sort_keys=True, separators=(",", ":")),
    )
    with pytest.raises(AuditError, match="record 6 does not follow record 5"):
        registry.verify_audit()


def test_records_of_another_registry_under_the_same_key_are_refused(
    tmp_path: Path, key: MasterKey
) -> None:
    ours = open_registry(f"sqlite://{tmp_path / 'ours.db'}", key)
    theirs = open_registry(f"sqlite://{tmp_path / 'theirs.db'}", key)
    for registry in (ours, theirs):
        _fill(registry)
    foreign = dict(_rows(tmp_path / "theirs.db"))
    _sql(tmp_path / "ours.db", "UPDATE audit SET record = ? WHERE seq = 3", foreign[3])
    with pytest.raises(AuditError, match="record 3 belongs to another registry's log"):
        ours.verify_audit()


def test_a_write_behind_securesessions_back_has_no_record(registry: Registry) -> None:
    _fill(registry)
    assert isinstance(registry, EncryptedRegistry)
    sealed = registry.store.read(BASE + ":443/b")
    assert sealed is not None
    registry.store.write(sealed.key, sealed.settings, sealed.secrets, key_id=registry.key_id)
    with pytest.raises(AuditError, match="records at the end were removed, or the registry was"):
        registry.verify_audit()


# -- registries from before the log ---------------------------------------------------------


def _to_schema_1(path: Path) -> None:
    """Back to schema version 1, as securesession before the audit log left it."""
    with sqlite3.connect(path) as db:
        db.executescript(
            "DROP TABLE audit; DROP TABLE states; DELETE FROM meta WHERE name = 'audit_from';"
            " UPDATE schema_version SET version = 1;"
        )


def test_a_registry_from_before_the_log_starts_one_listing_its_entries(
    path: Path, key: MasterKey
) -> None:
    with open_registry(f"sqlite://{path}", key) as registry:
        registry.put(_entry("/old"))
        registry.put(_entry("/kept"))
    _to_schema_1(path)
    upgraded = open_registry(f"sqlite://{path}", key)
    start = next(iter(upgraded.audit()))
    assert start.operation == "start" and start.revision == 2
    assert start.entries is not None and sorted(start.entries) == [
        BASE + ":443/kept",
        BASE + ":443/old",
    ]
    assert upgraded.verify_audit().predating == 2
    upgraded.put(_entry("/old", "pw-SECRET-2"))
    report = upgraded.verify_audit()
    assert (report.records, report.predating) == (2, 2)
    assert [r.operation for r in upgraded.audit()] == ["start", "put"]


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        pytest.param(
            "UPDATE entries SET secrets = (SELECT secrets FROM entries WHERE key LIKE '%old')"
            " WHERE key LIKE '%kept'",
            f"entry {BASE}:443/kept .* is not the row record 1 logs",
            id="predating-entry-changed",
        ),
        pytest.param(
            "DELETE FROM entries WHERE key LIKE '%kept'",
            f"entry {BASE}:443/kept is missing, but record 1 logs it",
            id="predating-entry-removed",
        ),
        pytest.param(
            "INSERT INTO entries SELECT replace(key, 'kept', 'extra'), 0, updated_at,"
            " settings, secrets FROM entries WHERE key LIKE '%kept'",
            f"entry {BASE}:443/extra .* is in the registry but not in the log",
            id="entry-slipped-in-as-predating",
        ),
    ],
)
def test_entries_that_predate_the_log_are_pinned_by_its_first_record(
    path: Path, key: MasterKey, tamper: str, message: str
) -> None:
    with open_registry(f"sqlite://{path}", key) as registry:
        registry.put(_entry("/old"))
        registry.put(_entry("/kept"))
    _to_schema_1(path)
    open_registry(f"sqlite://{path}", key).close()  # migrates, and starts the log
    _sql(path, tamper)
    with (
        open_registry(f"sqlite://{path}", key) as upgraded,
        pytest.raises(AuditError, match=message),
    ):
        upgraded.verify_audit()


def test_a_log_of_record_format_1_starts_again(path: Path, key: MasterKey) -> None:
    """This round's unreleased format (schema 2): its records lack row digests, so the
    migration starts a new log that lists the entries as they are."""
    with open_registry(f"sqlite://{path}", key) as registry:
        registry.put(_entry("/a"))
    with sqlite3.connect(path) as db:
        db.execute("UPDATE schema_version SET version = 2")
        db.execute("DELETE FROM audit")
        db.execute("INSERT INTO audit VALUES (1, '{\"v\":1}')")
    with open_registry(f"sqlite://{path}", key) as migrated:
        records = list(migrated.audit())
        assert [(r.operation, r.entries) for r in records] == [
            ("start", {BASE + ":443/a": records[0].entries[BASE + ":443/a"]})  # type: ignore[index]
        ]
        assert migrated.verify_audit().predating == 1


def test_a_store_waiting_for_its_first_record_says_so(path: Path, key: MasterKey) -> None:
    """A store opened without a key (or by a role that may not write) has no record yet:
    verify fails, saying the log has not started rather than that it was removed."""
    store = SQLiteStore(path)
    try:
        log = store.read_audit()
    finally:
        store.close()
    assert log.start_pending and not log.rows
    with pytest.raises(AuditError, match="has not started"):
        verify(log, KeyRing(key).get, name="test")


def test_verify_needs_the_key_of_the_newest_records(path: Path, key: MasterKey) -> None:
    registry = open_registry(f"sqlite://{path}", key)
    registry.put(_entry("/a"))
    other = KeyRing(MasterKey.generate())
    store = SQLiteStore(path)
    try:
        log = store.read_audit()
    finally:
        store.close()
    with pytest.raises(AuditError, match="cannot be authenticated"):
        verify(log, other.get, name="test")


def test_the_actor_is_the_one_in_force_when_the_registry_was_opened(
    path: Path, key: MasterKey
) -> None:
    import threading

    from securesession._actor import os_user

    open_registry(f"sqlite://{path}", key).close()  # the log is started: no write at open
    with acting_as("release-bot"):
        inside = open_registry(f"sqlite://{path}", key)
    outside = open_registry(f"sqlite://{path}", key)
    # Written outside the block, and from a thread the block's context never reached.
    inside.put(_entry("/a"))
    writer = threading.Thread(target=inside.put, args=(_entry("/b"),))
    writer.start()
    writer.join()
    with acting_as("release-bot"):  # too late for a registry opened before
        outside.put(_entry("/c"))
    actors = {record.entry.rsplit("/", 1)[-1]: record.actor for record in outside.audit()}
    assert actors["a"] == actors["b"] == "release-bot"
    assert actors["c"] == os_user()  # the OS user
