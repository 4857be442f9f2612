"""``securesession sync SRC DST``: the plan by default, ``--apply`` in one transaction
(a failure in the middle leaves DST as it was), ``--delete``, ``--only``, ``--map``,
conflicts against the last-synced revisions and ``--force``, a writer racing the
apply, idempotence, the progress bar, and no secret in any output."""

from __future__ import annotations

import io
import json
import sqlite3
from contextlib import closing
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from securesession import Credential, DecryptionError, ServiceEntry, open_registry
from securesession._registry.sqlite import SQLiteStore
from securesession.cli import _sync
from securesession.cli._output import Progress

from .synchelp import Env, key_args, rotate_key, securesession, sqlite_env

TEST = "https://gw.test.example"
PROD = "https://gw.prod.example"
MAP = ["--map", f"{TEST}={PROD}"]


def entry(base: str, path: str, password: str, **changes: Any) -> ServiceEntry:
    return ServiceEntry(f"{base}/{path}", gateway=Credential("gw", password), **changes)


def three(base: str, version: str = "1") -> list[ServiceEntry]:
    return [entry(base, name, f"{name}SECRET-{version}") for name in ("hr", "pay", "tax")]


@pytest.fixture
def src(tmp_path: Path) -> Env:
    return sqlite_env(tmp_path, "test", three(TEST))


@pytest.fixture
def dst(tmp_path: Path) -> Env:
    return sqlite_env(tmp_path, "prod")


def sync(capsys: pytest.CaptureFixture[str], src: Env, dst: Env, *extra: str) -> Any:
    return securesession(capsys, "sync", src.url, dst.url, *key_args(src, dst), *MAP, *extra)


def prod_urls(*names: str) -> list[str]:
    return [f"https://gw.prod.example:443/{name}" for name in names]


def test_the_plan_writes_nothing_and_apply_carries_it_out(
    src: Env, dst: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = sync(capsys, src, dst)
    assert plan.code == 0, plan
    assert [line.split()[:2] for line in plan.stdout.splitlines()[2:5]] == [
        ["add", url] for url in prod_urls("hr", "pay", "tax")
    ]
    assert "plan: 3 to add, 0 to update, 0 to remove, 0 conflicts" in plan.stdout
    assert dst.snapshot() == {}

    applied = sync(capsys, src, dst, "--apply")
    assert applied.code == 0, applied
    assert "synced: 3 added, 0 updated, 0 removed" in applied.stdout
    stored = dst.snapshot()
    assert sorted(stored) == prod_urls("hr", "pay", "tax")
    for url, (_, copied) in stored.items():
        original = src.entry(url.replace("gw.prod.example", "gw.test.example"))
        assert original is not None
        assert copied == ServiceEntry(url, gateway=original.gateway)
    # Re-encrypted under DST's key: SRC's key does not open DST.
    with pytest.raises(DecryptionError):
        open_registry(dst.url, src.key)


def test_the_writes_and_the_sync_state_are_one_transaction(
    src: Env, dst: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sync(capsys, src, dst, "--apply").code == 0
    with closing(dst.open()) as registry:
        records = [record for record in registry.audit() if record.operation == "sync"]
        revisions = {entry.url: entry.revision for entry in registry.entries()}
        state = _sync.SyncState.load(registry, _sync.source_identity(src.url))
    # One record per entry written, none for a state-only batch after them; and the
    # state holds the revisions the writes got, so it was written with them.
    assert sorted((record.entry, record.revision) for record in records) == sorted(
        revisions.items()
    )
    assert state.revisions == revisions


def test_a_second_sync_plans_nothing_and_writes_nothing(
    src: Env, dst: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sync(capsys, src, dst, "--apply").code == 0
    before = dst.snapshot()
    again = sync(capsys, src, dst, "--apply", "--json")
    assert again.code == 0, again
    document = json.loads(again.stdout)
    assert document["steps"] == []
    assert document["summary"] == {
        "add": 0,
        "update": 0,
        "remove": 0,
        "keep": 0,
        "conflicts": 0,
        "unchanged": 3,
    }
    assert "nothing to sync" in again.stderr
    assert dst.snapshot() == before


def test_updates_are_synced_and_the_plan_shows_them_without_values(
    src: Env, dst: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sync(capsys, src, dst, "--apply").code == 0
    src.put(entry(TEST, "pay", "paySECRET-2", description="v2"))
    plan = sync(capsys, src, dst)
    assert plan.code == 0, plan
    assert f"update           {prod_urls('pay')[0]}  (from {TEST}:443/pay)" in plan.stdout
    assert '    description: src "v2", dst ""' in plan.stdout
    assert "    secret gateway.password: differs" in plan.stdout
    assert sync(capsys, src, dst, "--apply").code == 0
    synced = dst.entry(prod_urls("pay")[0])
    assert synced is not None and synced.description == "v2"
    assert synced.gateway is not None and synced.gateway.password.reveal() == "paySECRET-2"


def test_delete_removes_what_src_no_longer_has_and_only_when_asked(
    src: Env, dst: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sync(capsys, src, dst, "--apply").code == 0
    src.remove(f"{TEST}/tax")
    kept = sync(capsys, src, dst, "--apply")
    assert kept.code == 0
    assert f"keep             {prod_urls('tax')[0]}  (only in DST; --delete removes it)" in (
        kept.stdout
    )
    assert prod_urls("tax")[0] in dst.snapshot()
    removed = sync(capsys, src, dst, "--apply", "--delete")
    assert removed.code == 0, removed
    assert "synced: 0 added, 0 updated, 1 removed" in removed.stdout
    assert sorted(dst.snapshot()) == prod_urls("hr", "pay")


def test_only_limits_both_the_copies_and_the_removals(
    src: Env, dst: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    dst.put(entry(PROD, "legacy", "legacySECRET"), entry(PROD, "pay/old", "oldSECRET"))
    only = ["--only", f"{TEST}/pay", "--delete", "--force"]
    result = sync(capsys, src, dst, "--apply", *only)
    assert result.code == 0, result
    # /pay copied, /pay/old (under the mapped prefix, not in SRC) removed; /legacy, /hr and
    # /tax (outside --only) left alone.
    assert sorted(dst.snapshot()) == prod_urls("legacy", "pay")


def test_a_dst_entry_changed_since_the_last_sync_is_a_conflict_until_forced(
    src: Env, dst: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sync(capsys, src, dst, "--apply").code == 0
    synced_revision = dst.snapshot()[prod_urls("pay")[0]][0]
    (hotfix,) = dst.put(entry(PROD, "pay", "paySECRET-hotfix"))
    src.put(entry(TEST, "pay", "paySECRET-2"), entry(TEST, "hr", "hrSECRET-2"))
    before = dst.snapshot()

    blocked = sync(capsys, src, dst, "--apply")
    assert blocked.code == 1, blocked
    assert f"conflict update  {prod_urls('pay')[0]}" in blocked.stdout
    assert (
        f"changed in DST since the last sync (revision {synced_revision} then, "
        f"{hotfix.revision} now)" in blocked.stdout
    )
    assert "1 conflict blocks the sync" in blocked.stderr
    assert "nothing was written" in blocked.stderr
    assert dst.snapshot() == before  # not even the entry that is not in conflict

    forced = sync(capsys, src, dst, "--apply", "--force")
    assert forced.code == 0, forced
    synced = dst.entry(prod_urls("pay")[0])
    assert synced is not None and synced.gateway is not None
    assert synced.gateway.password.reveal() == "paySECRET-2"
    assert hotfix.revision != synced.revision
    assert "conflict " not in sync(capsys, src, dst).stdout


def test_an_entry_sync_never_wrote_is_a_conflict(
    src: Env, dst: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    dst.put(entry(PROD, "pay", "paySECRET-prod"), entry(PROD, "prod-only", "prodSECRET"))
    plan = sync(capsys, src, dst, "--delete")
    assert plan.code == 1
    assert f"conflict update  {prod_urls('pay')[0]}" in plan.stdout
    assert f"conflict remove  {prod_urls('prod-only')[0]}" in plan.stdout
    assert plan.stdout.count("DST's entry was not written by a sync from SRC") == 2
    # An identical entry is no conflict: it is recorded as synced.
    dst.put(entry(PROD, "pay", "paySECRET-1"))
    assert sync(capsys, src, dst, "--apply").code == 0
    dst.put(entry(PROD, "pay", "paySECRET-changed"))
    assert "changed in DST since the last sync" in sync(capsys, src, dst).stdout


def test_an_entry_removed_from_dst_since_the_last_sync_is_not_brought_back_unasked(
    src: Env, dst: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sync(capsys, src, dst, "--apply").code == 0
    dst.remove(prod_urls("pay")[0])
    blocked = sync(capsys, src, dst, "--apply")
    assert blocked.code == 1
    assert f"conflict add     {prod_urls('pay')[0]}" in blocked.stdout
    assert "removed from DST since the last sync" in blocked.stdout
    assert sorted(dst.snapshot()) == prod_urls("hr", "tax")
    assert sync(capsys, src, dst, "--apply", "--force").code == 0
    assert sorted(dst.snapshot()) == prod_urls("hr", "pay", "tax")


def test_a_failure_in_the_middle_of_the_apply_leaves_dst_unchanged(
    src: Env, dst: Env, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert sync(capsys, src, dst, "--apply").code == 0
    src.put(*three(TEST, version="2"))
    src.put(entry(TEST, "new", "newSECRET"))
    before = dst.snapshot()
    real = SQLiteStore._next_revision
    calls = {"n": 0}

    def fail_on_the_third_row(self: SQLiteStore, connection: sqlite3.Connection) -> int:
        calls["n"] += 1
        if calls["n"] == 3:  # two rows already written in this transaction
            raise sqlite3.OperationalError("disk I/O error")
        return real(self, connection)

    monkeypatch.setattr(SQLiteStore, "_next_revision", fail_on_the_third_row)
    failed = sync(capsys, src, dst, "--apply")
    assert failed.code == 1, failed
    assert calls["n"] == 3
    assert dst.snapshot() == before
    monkeypatch.undo()
    # The state was not advanced either: the same plan, and it goes through now.
    retried = sync(capsys, src, dst, "--apply")
    assert retried.code == 0, retried
    assert "synced: 1 added, 3 updated, 0 removed" in retried.stdout


def test_a_writer_between_the_plan_and_the_apply_makes_the_sync_fail_whole(
    src: Env, dst: Env, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert sync(capsys, src, dst, "--apply").code == 0
    src.put(*three(TEST, version="2"))
    real_plan = _sync.plan_sync

    def plan_then_race(*args: Any, **kwargs: Any) -> list[_sync.Step]:
        steps = real_plan(*args, **kwargs)
        dst.put(entry(PROD, "tax", "taxSECRET-racer"))  # after the plan, before the apply
        return steps

    monkeypatch.setattr(_sync, "plan_sync", plan_then_race)
    raced = sync(capsys, src, dst, "--apply")
    assert raced.code == 1, raced
    assert "DST changed while the sync was planned" in raced.stderr
    assert "https://gw.prod.example:443/tax" in raced.stderr
    stored = dst.snapshot()
    assert stored[prod_urls("pay")[0]][1].gateway == Credential("gw", "paySECRET-1")
    assert stored[prod_urls("tax")[0]][1].gateway == Credential("gw", "taxSECRET-racer")


def test_the_plan_as_json(src: Env, dst: Env, capsys: pytest.CaptureFixture[str]) -> None:
    dst.put(entry(PROD, "pay", "paySECRET-prod"))
    result = sync(capsys, src, dst, "--json")
    assert result.code == 1  # the conflict
    document = json.loads(result.stdout)
    assert document["apply"] is False
    steps = {step["url"]: step for step in document["steps"]}
    assert steps[prod_urls("hr")[0]]["action"] == "add"
    assert steps[prod_urls("hr")[0]]["conflict"] is None
    assert steps[prod_urls("pay")[0]]["action"] == "update"
    assert "not written by a sync" in steps[prod_urls("pay")[0]]["conflict"]
    assert {"name": "gateway.password", "status": "differs", "in_src": True, "in_dst": True} in (
        steps[prod_urls("pay")[0]]["secrets"]
    )


def test_the_progress_bar_on_a_terminal(
    tmp_path: Path, dst: Env, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    many = sqlite_env(tmp_path, "many", [entry(TEST, f"svc{i}", f"SECRET-{i}") for i in range(40)])

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(_sync, "Progress", partial(Progress, stream=terminal, delay=0.0))
    assert sync(capsys, many, dst, "--apply").code == 0
    drawn = terminal.getvalue()
    assert "reading SRC [" in drawn and "40/40" in drawn
    assert "SECRET" not in drawn


def test_the_same_registry_under_another_name_is_another_source(
    src: Env, dst: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    """The sync state is per source: a copy of SRC syncing into DST finds DST's entries
    not written by it, so it does not overwrite them unasked."""
    assert sync(capsys, src, dst, "--apply").code == 0
    other = sqlite_env(Path(src.key_file).parent, "other", three(TEST, version="other"))
    result = sync(capsys, other, dst)
    assert result.code == 1
    assert result.stdout.count("DST's entry was not written by a sync from SRC") == 3


def test_the_map_is_checked_over_every_src_entry_even_with_only(
    src: Env, dst: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    """Synced alone, /pay/admin would raise no objection; beside /pay, the map takes it
    out of /pay's subtree, so it is refused whatever --only says."""
    src.put(entry(TEST, "pay/admin", "adminSECRET"))
    result = securesession(
        capsys,
        "sync",
        src.url,
        dst.url,
        *key_args(src, dst),
        "--map",
        f"{TEST}/pay/admin={PROD}/admin",
        "--only",
        f"{TEST}/pay/admin",
        "--apply",
    )
    assert result.code == 2, result
    assert "--map changes which entry URLs use" in result.stderr
    assert dst.snapshot() == {}


@pytest.mark.parametrize("steps", [[""], ["--stage", "--commit"]], ids=["plain", "staged"])
def test_a_key_rotation_of_dst_is_no_change_to_the_next_sync(
    src: Env, dst: Env, capsys: pytest.CaptureFixture[str], steps: list[str]
) -> None:
    """A rotation gives every DST entry a new revision, and in the same transaction
    moves the sync state's revisions with them: the next sync is no conflict. A DST
    change the state had not seen, before the rotation or after it, still is one."""
    assert sync(capsys, src, dst, "--apply").code == 0
    dst.put(entry(PROD, "hr", "hrSECRET-hotfix"))  # a real DST change, then the rotation
    rotate_key(capsys, dst, steps)
    src.put(entry(TEST, "pay", "paySECRET-2"))

    plan = sync(capsys, src, dst)
    assert plan.code == 1, plan
    assert f"conflict update  {prod_urls('hr')[0]}" in plan.stdout
    assert f"\nupdate           {prod_urls('pay')[0]}  (from " in plan.stdout  # no conflict
    assert "1 to update, 0 to remove, 1 conflict, 1 unchanged" in plan.stdout

    applied = sync(capsys, src, dst, "--apply", "--only", f"{TEST}/pay")
    assert applied.code == 0, applied
    synced = dst.entry(prod_urls("pay")[0])
    assert synced is not None and synced.gateway is not None
    assert synced.gateway.password.reveal() == "paySECRET-2"

    dst.put(entry(PROD, "tax", "taxSECRET-hotfix"))  # a real DST change after the rotation
    after = sync(capsys, src, dst, "--only", f"{TEST}/tax")
    assert after.code == 1, after
    assert f"conflict update  {prod_urls('tax')[0]}" in after.stdout
