"""The audit log on SQLite: what each write records, and that a store writer without
the master key cannot remove, edit, reorder, replay or import records unnoticed."""

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
from securesession._audit import acting_as
from securesession._crypto import KeyRing
from securesession.registry import EncryptedRegistry

from ..secretscan import leaks

BASE = "https://gw.example.test"


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


def test_each_write_records_what_changed_and_never_a_value(
    registry: Registry, path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="securesession")
    with acting_as("release-bot"):
        registry = open_registry(f"sqlite://{path}", registry.key_ring)  # type: ignore[attr-defined]
    _fill(registry)
    records = list(registry.audit())
    summary = [(r.operation, r.change, r.entry, r.fields) for r in records]
    assert summary[0] == ("start", "", "*", ())
    assert summary[2] == ("put", "changed", BASE + ":443/a", ("gateway.password",))
    assert summary[3][:3] == ("put", "added", BASE + ":443/b")
    assert "description" in summary[3][3] and "gateway.password" in summary[3][3]
    assert summary[4][:3] == ("remove", "removed", BASE + ":443/a")
    assert [r.seq for r in records] == [1, 2, 3, 4, 5]
    assert {r.actor for r in records} == {"release-bot"}
    revisions = [r.revision for r in records[1:] if r.revision is not None]
    assert revisions == sorted(revisions) and len(set(revisions)) == 4
    # No value anywhere: not in the stored records, not in the DEBUG log.
    assert not any(leaks(text) for _, text in _rows(path))
    assert not leaks(caplog.text) and "gw-user" not in caplog.text
    assert registry.verify_audit().records == 5


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
        pytest.param("DELETE FROM audit", "its records were removed", id="truncate-all"),
        pytest.param(
            "UPDATE entries SET revision = revision + 100",
            "which no record logs",
            id="entry-edited",
        ),
    ],
)
def test_verify_names_the_tampered_record(
    registry: Registry, path: Path, tamper: str, message: str
) -> None:
    with acting_as("root"):
        registry = open_registry(f"sqlite://{path}", registry.key_ring)  # type: ignore[attr-defined]
    _fill(registry)
    registry.verify_audit()
    _sql(path, tamper)
    with pytest.raises(AuditError, match=message):
        registry.verify_audit()


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


def test_a_registry_from_before_the_log_opens_and_starts_one(path: Path, key: MasterKey) -> None:
    registry = open_registry(f"sqlite://{path}", key)
    registry.put(_entry("/old"))
    registry.close()
    # Back to schema version 1, as securesession before the audit log left it.
    with sqlite3.connect(path) as db:
        db.executescript(
            "DROP TABLE audit; DROP TABLE states; DELETE FROM meta WHERE name = 'audit_from';"
            " UPDATE schema_version SET version = 1;"
        )
    upgraded = open_registry(f"sqlite://{path}", key)
    assert upgraded.verify_audit().predating == 1  # nothing logged yet; /old predates
    upgraded.put(_entry("/new"))
    report = upgraded.verify_audit()
    assert (report.records, report.predating) == (2, 1)
    assert [r.operation for r in upgraded.audit()] == ["start", "put"]


def test_verify_needs_the_key_of_the_newest_records(path: Path, key: MasterKey) -> None:
    registry = open_registry(f"sqlite://{path}", key)
    registry.put(_entry("/a"))
    other = KeyRing(MasterKey.generate())
    from securesession._audit import verify
    from securesession._registry.sqlite import SQLiteStore

    log = SQLiteStore(path).read_audit()
    with pytest.raises(AuditError, match="cannot be authenticated"):
        verify(log, other.get, name="test")
