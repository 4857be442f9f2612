"""The audit log on PostgreSQL against a database writer without the master key: an
entry row deleted, rolled back (any revision) or put back after a removal, and the whole
log wiped, all fail verification; the log's first record pins the entries of a
registry that predates the log."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from securesession import AuditError, Credential, MasterKey, Registry, ServiceEntry, open_registry

BASE = "https://gw.example.test"
PAY = BASE + ":443/pay"
ENTRIES = "securesession.entries"


def _sql(url: str, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as connection:
        cursor = connection.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def _two_entries(url: str, key: MasterKey) -> Registry:
    registry = open_registry(url, key)
    registry.put(ServiceEntry(BASE + "/", gateway=Credential("general", "GENERAL-SECRET")))
    registry.put(ServiceEntry(BASE + "/pay", gateway=Credential("pay", "PAY-SECRET-v1")))
    return registry


def _old_row_then_new_password(url: str, registry: Registry) -> tuple[Any, Any]:
    old = _sql(url, f"SELECT settings, secrets FROM {ENTRIES} WHERE key = %s", (PAY,))[0]  # noqa: S608
    registry.put(ServiceEntry(BASE + "/pay", gateway=Credential("pay", "PAY-SECRET-v2")))
    return old[0], old[1]


def _verify_fails(url: str, key: MasterKey, message: str) -> None:
    with open_registry(url, key) as registry, pytest.raises(AuditError, match=message):
        registry.verify_audit()


def test_an_entry_row_deleted_is_detected(postgres_url: str) -> None:
    key = MasterKey.generate()
    _two_entries(postgres_url, key).close()
    _sql(postgres_url, f"DELETE FROM {ENTRIES} WHERE key = %s", (PAY,))  # noqa: S608
    _verify_fails(postgres_url, key, f"entry {PAY} is missing, but record 3 logs it")


@pytest.mark.parametrize("revision", ["revision", "0"], ids=["revision-kept", "revision-0"])
def test_an_entry_rolled_back_is_detected(postgres_url: str, revision: str) -> None:
    key = MasterKey.generate()
    with _two_entries(postgres_url, key) as registry:
        settings, secrets = _old_row_then_new_password(postgres_url, registry)
    _sql(
        postgres_url,
        f"UPDATE {ENTRIES} SET settings = %s, secrets = %s, revision = {revision}"  # noqa: S608
        " WHERE key = %s",
        (Jsonb(settings), Jsonb(secrets), PAY),
    )
    with open_registry(postgres_url, key) as registry:
        entry = registry.get(PAY + "/x")
        assert entry is not None and entry.gateway is not None
        assert entry.gateway.password.reveal() == "PAY-SECRET-v1"  # hosts would use it
    _verify_fails(postgres_url, key, f"entry {PAY} .* is not the row record 4 logs")


def test_a_removed_entry_put_back_is_detected(postgres_url: str) -> None:
    key = MasterKey.generate()
    with _two_entries(postgres_url, key) as registry:
        row = _sql(postgres_url, f"SELECT * FROM {ENTRIES} WHERE key = %s", (PAY,))[0]  # noqa: S608
        registry.remove(BASE + "/pay")
    _sql(
        postgres_url,
        f"INSERT INTO {ENTRIES} VALUES (%s, 0, %s, %s, %s)",  # noqa: S608
        (row[0], row[2], Jsonb(row[3]), Jsonb(row[4])),
    )
    _verify_fails(postgres_url, key, f"entry {PAY} .* is in the registry but not in the log")


def test_a_wiped_log_fails_and_refuses_writes(postgres_url: str) -> None:
    key = MasterKey.generate()
    _two_entries(postgres_url, key).close()
    _sql(postgres_url, "DELETE FROM securesession.audit")
    _verify_fails(postgres_url, key, r"audit log is empty.*its records were removed")
    with (
        open_registry(postgres_url, key) as registry,
        pytest.raises(AuditError, match="has no record"),
    ):
        registry.put(ServiceEntry(BASE + "/new", gateway=Credential("u", "NEW-SECRET")))
    assert _sql(postgres_url, "SELECT count(*) FROM securesession.audit") == [(0,)]


def test_entries_that_predate_the_log_are_pinned(postgres_url: str) -> None:
    """A registry migrated from before the log (here: its log started again by the
    schema-2 migration) lists its entries in record 1; changing one is caught."""
    key = MasterKey.generate()
    _two_entries(postgres_url, key).close()
    _sql(postgres_url, "UPDATE securesession.schema_version SET version = 2")
    with open_registry(postgres_url, key) as registry:
        records = list(registry.audit())
        assert [r.operation for r in records] == ["start"]
        assert records[0].entries is not None and sorted(records[0].entries) == [
            BASE + ":443/",
            PAY,
        ]
        assert registry.verify_audit().predating == 2
    _sql(
        postgres_url,
        f"UPDATE {ENTRIES} SET secrets = (SELECT secrets FROM {ENTRIES} WHERE key = %s)"  # noqa: S608
        " WHERE key = %s",
        (BASE + ":443/", PAY),
    )
    _verify_fails(postgres_url, key, f"entry {PAY} .* is not the row record 1 logs")
