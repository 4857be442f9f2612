"""``securesession log`` through the real console script: listing, filters, --json,
--actor, and --verify's exit codes on an intact and on a tampered log."""

from __future__ import annotations

import json
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from securesession import Credential, ServiceEntry

from .clihelp import CLI, one_error_line

URL = "https://pay.example.com/api"


def _seed(cli: CLI) -> None:
    with closing(cli.open()) as registry:
        registry.put(ServiceEntry(URL, gateway=Credential("gw", "gwSECRET-a")))
        registry.put(ServiceEntry(URL, gateway=Credential("gw", "gwSECRET-b"), description="d"))
        registry.put(ServiceEntry("https://hr.example.com/", request=Credential("u", "uSECRET")))


def test_log_lists_records_without_values(ready: CLI) -> None:
    _seed(ready)
    ready.ok("remove", URL, "--actor", "ops-alice")
    listing = ready.ok("log")
    lines = listing.stdout.splitlines()
    assert lines[0].split() == [
        "SEQ", "TIME", "OPERATION", "CHANGE", "ENTRY", "REVISION", "ACTOR", "FIELDS"
    ]  # fmt: skip
    assert len(lines) == 1 + 5  # start, three puts, the removal
    assert "description, gateway.password" in lines[3]
    assert "remove" in lines[5] and "ops-alice" in lines[5]
    records = json.loads(ready.ok("log", "--json").stdout)
    assert [r["operation"] for r in records] == ["start", "put", "put", "put", "remove"]
    assert records[-1]["actor"] == "ops-alice" and records[-1]["change"] == "removed"
    only = json.loads(ready.ok("log", "--json", "--entry", "https://hr.example.com/").stdout)
    assert [r["entry"] for r in only] == ["*", "https://hr.example.com:443/"]
    assert json.loads(ready.ok("log", "--json", "--since", "1d").stdout) == records
    assert ready.ok("log", "--json", "--since", "2999-01-01").stdout.strip() == "[]"


def test_verify_passes_then_fails_on_a_tampered_record(ready: CLI) -> None:
    _seed(ready)
    verified = ready.ok("log", "--verify")
    assert "audit log verified: 4 records" in verified.stdout
    assert "(chain " in verified.stdout and "--expect-head" in verified.stderr
    head = verified.stdout.split("head: record ")[1].split()
    seq, digest = head[0].rstrip(","), head[2]
    ready.ok("log", "--verify", "--expect-head", f"{seq}:{digest}")
    with sqlite3.connect(ready.registry_path) as db:
        db.execute(
            "UPDATE audit SET record = replace(record, '\"put\"', '\"rotate\"') WHERE seq = 2"
        )
    failed = ready.run("log", "--verify")
    assert failed.code == 1
    assert "record 2 failed authentication" in one_error_line(failed)
    as_json = ready.run("log", "--verify", "--json")
    assert as_json.code == 1 and "record 2" in one_error_line(as_json)


def _head(cli: CLI) -> str:
    """``SEQ:SHA256`` of the head ``log --verify`` prints (it always prints one)."""
    words = cli.ok("log", "--verify").stdout.split("head: record ")[1].split()
    return f"{words[0].rstrip(',')}:{words[2]}"


def test_verify_fails_on_a_wiped_log(ready: CLI) -> None:
    """Every record removed and the log's starting point moved to the current revision
    (the review's wipe): exit 1, not '0 records'."""
    _seed(ready)
    with sqlite3.connect(ready.registry_path) as db:
        db.execute("DELETE FROM audit")
        db.execute(
            "UPDATE meta SET value = (SELECT value FROM meta WHERE name = 'revision')"
            " WHERE name = 'audit_from'"
        )
    failed = ready.run("log", "--verify")
    assert failed.code == 1 and "0 records" not in failed.stdout
    assert "audit log is empty" in one_error_line(failed)


def test_only_a_head_kept_elsewhere_detects_a_rollback_of_the_whole_database(
    ready: CLI, tmp_path: Path
) -> None:
    """A copy of the database from earlier, log included, is a consistent state: it
    verifies on its own, and fails against the head taken since."""
    _seed(ready)
    backup = tmp_path / "backup.db"
    shutil.copy(ready.registry_path, backup)
    ready.ok("remove", URL)
    head = _head(ready)
    shutil.copy(backup, ready.registry_path)
    assert ready.ok("log", "--verify").stdout.startswith("audit log verified: 4 records")
    failed = ready.run("log", "--verify", "--expect-head", head)
    assert failed.code == 1 and "record 5, is not in the log" in one_error_line(failed)


@pytest.mark.parametrize(
    "make_it_look_new",
    [
        pytest.param(
            "DROP TABLE audit; DELETE FROM meta WHERE name = 'audit_from';"
            " UPDATE schema_version SET version = 1;",
            id="as-from-before-the-log",
        ),
        pytest.param(
            "DELETE FROM audit; INSERT INTO meta SELECT 'audit_from', value FROM meta"
            " WHERE name = 'revision';",
            id="as-waiting-for-its-first-record",
        ),
    ],
)
def test_a_log_started_again_is_caught_by_the_head(ready: CLI, make_it_look_new: str) -> None:
    """A store writer who makes the registry look as if it had no log yet gets a new log
    listing the entries as they are (nothing in the database can tell it from a real
    upgrade): a new chain and start time, which the head kept elsewhere does not match."""
    _seed(ready)
    head = _head(ready)
    with sqlite3.connect(ready.registry_path) as db:
        db.executescript(make_it_look_new)
    restarted = ready.ok("log", "--verify").stdout
    assert "audit log verified: 1 record" in restarted and head.split(":")[1] not in restarted
    failed = ready.run("log", "--verify", "--expect-head", head)
    assert failed.code == 1 and "not in the log" in one_error_line(failed)


def test_verify_with_a_head_that_is_gone_fails(ready: CLI) -> None:
    _seed(ready)
    failed = ready.run("log", "--verify", "--expect-head", "9:" + "0" * 64)
    assert failed.code == 1 and "record 9, is not in the log" in one_error_line(failed)


def test_log_usage_errors(ready: CLI) -> None:
    for args in (
        ["log", "--since", "yesterday"],
        ["log", "--verify", "--since", "1d"],
        ["log", "--expect-head", "1:" + "0" * 64],
        ["log", "--verify", "--expect-head", "nope"],
        ["--actor", "bad\nname", "log"],
    ):
        result = ready.run(*args)
        assert result.code == 2, (args, result)
