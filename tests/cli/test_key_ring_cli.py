"""rotate-key --stage / --commit / --retire: what each step refuses, what it leaves in
the key file and the registry, and that no key ever reaches the output or the log."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from securesession import Credential, KeyRing, MasterKey, ServiceEntry, open_registry
from securesession._crypto import token_key_id
from securesession.cli import main
from securesession.registry import EncryptedRegistry, Rekey

from .clihelp import CLI, one_error_line

URL = "https://pay.example.test/api"


class Host:
    """A key file and a SQLite registry, and the command run in this process."""

    def __init__(self, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.key_file = home / "keys" / "master.key"
        self.key_file.parent.mkdir(mode=0o700)
        self.url = f"sqlite://{home / 'registry.db'}"
        self._capsys = capsys
        self.first_key = MasterKey.generate()
        self.first_key.save(self.key_file)
        with contextlib.closing(self.open()) as registry:
            registry.put(ServiceEntry(URL, gateway=Credential("gw", "gw-SECRET-1")))
        self.seen: list[MasterKey] = [self.first_key]

    def open(self, key: MasterKey | KeyRing | None = None) -> EncryptedRegistry:
        registry = open_registry(self.url, key or KeyRing.from_file(self.key_file))
        assert isinstance(registry, EncryptedRegistry)
        return registry

    def ring(self) -> KeyRing:
        ring = KeyRing.from_file(self.key_file)
        self.seen.extend(key for key in (ring.active, ring.staged, *ring.previous) if key)
        return ring

    def run(self, *args: str) -> tuple[int, str]:
        """Run ``rotate-key ARGS``; the exit code and the output (stdout and stderr)."""
        code = main(["--registry", self.url, "--key-file", str(self.key_file), *args])
        captured = self._capsys.readouterr()
        output = captured.out + captured.err
        for key in self.seen:
            assert key.to_base64() not in output
        return code, output

    def stored_key_ids(self) -> set[str | None]:
        with contextlib.closing(self.open()) as registry:
            return {token_key_id(t) for s in registry.store.scan() for t in s.secrets.values()}


@pytest.fixture
def host(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Host:
    return Host(tmp_path, capsys)


def test_stage_adds_a_decrypt_only_key_and_records_it(host: Host) -> None:
    code, output = host.run("rotate-key", "--stage")
    assert code == 0, output
    ring = host.ring()
    assert ring.active == host.first_key and ring.staged is not None
    assert f"staged key id {ring.staged.key_id}" in output and "rotate-key --commit" in output
    assert stat.S_IMODE(host.key_file.stat().st_mode) == 0o600
    assert sorted(p.name for p in host.key_file.parent.iterdir()) == ["master.key"]
    with contextlib.closing(host.open()) as registry:
        assert registry.key_id == host.first_key.key_id  # nothing re-encrypted yet
        assert registry.staged_key_id == ring.staged.key_id
        assert json.loads(registry.state("key-ring") or "{}") == {"staged": ring.staged.key_id}
    code, output = host.run("rotate-key", "--stage")
    assert code == 1 and "staged already" in output
    assert host.ring().key_ids == ring.key_ids


def test_commit_needs_a_staged_key(host: Host) -> None:
    before = host.key_file.read_bytes()
    code, output = host.run("rotate-key", "--commit")
    assert code == 1 and "has no staged key: run rotate-key --stage first" in output
    assert host.key_file.read_bytes() == before
    assert host.stored_key_ids() == {host.first_key.key_id}


def test_commit_then_retire(host: Host) -> None:
    assert host.run("rotate-key", "--stage")[0] == 0
    new = host.ring().staged
    assert new is not None
    code, output = host.run("rotate-key", "--commit")
    assert code == 0, output
    assert f"moved from key id {host.first_key.key_id} to {new.key_id}" in output
    ring = host.ring()
    assert ring.active == new and ring.previous == (host.first_key,)
    assert host.stored_key_ids() == {new.key_id}
    code, output = host.run("rotate-key", "--retire", new.key_id)
    assert code == 1 and "is the active key" in output
    code, output = host.run("rotate-key", "--retire", host.first_key.key_id)
    assert code == 0, output
    assert host.ring().key_ids == (new.key_id,)
    backups = list(host.key_file.parent.glob("master.key.*.bak"))
    assert len(backups) == 1 and stat.S_IMODE(backups[0].stat().st_mode) == 0o600
    assert KeyRing.from_file(backups[0]).key_ids == ring.key_ids  # the retired key kept aside
    with contextlib.closing(host.open(new)) as registry:
        entry = registry.get(URL)
        assert entry is not None and entry.gateway is not None
        assert entry.gateway.password.reveal() == "gw-SECRET-1"


def test_retire_is_refused_while_an_entry_still_uses_the_key(host: Host) -> None:
    old = host.first_key
    with contextlib.closing(host.open()) as registry:
        before = next(registry.store.scan())  # a backup's row, under the old key
    assert host.run("rotate-key", "--stage")[0] == 0
    assert host.run("rotate-key", "--commit")[0] == 0
    with contextlib.closing(host.open()) as registry:
        store = registry.store
        # Put the old row back as it was (a partial restore): raw, past the key check.
        store.rewrite_all(Rekey(lambda sealed: before.secrets, registry.key_id))
    after = host.key_file.read_bytes()
    code, output = host.run("rotate-key", "--retire", old.key_id)
    assert code == 1 and f"1 entry still holds tokens under key id {old.key_id}" in output
    assert host.key_file.read_bytes() == after
    assert not list(host.key_file.parent.glob("*.bak"))


def test_retire_is_refused_while_the_registry_is_under_the_key(host: Host) -> None:
    assert host.run("rotate-key", "--stage")[0] == 0
    host.ring().commit().save(host.key_file, overwrite=True)  # edited, never committed
    code, output = host.run("rotate-key", "--retire", host.first_key.key_id)
    assert code == 1 and "still under key id" in output and "--commit first" in output
    code, output = host.run("rotate-key", "--retire", "0123456789abcdef")
    assert code == 1 and "has no key id 0123456789abcdef" in output


def test_retiring_the_staged_key_withdraws_the_staging(host: Host) -> None:
    assert host.run("rotate-key", "--stage")[0] == 0
    staged = host.ring().staged
    assert staged is not None
    code, output = host.run("rotate-key", "--retire", staged.key_id)
    assert code == 0 and "(the staged key)" in output
    assert host.ring().key_ids == (host.first_key.key_id,)
    with contextlib.closing(host.open()) as registry:
        assert registry.staged_key_id is None
    assert host.run("rotate-key", "--commit")[0] == 1


def test_commit_refuses_a_key_file_that_stages_another_key(host: Host) -> None:
    assert host.run("rotate-key", "--stage")[0] == 0
    # Another operator's key file: the same active key, another staged one.
    other = KeyRing(host.first_key).stage(MasterKey.generate())
    host.seen.append(other.staged)  # type: ignore[arg-type]
    other.save(host.key_file, overwrite=True)
    code, output = host.run("rotate-key", "--commit")
    assert code == 1 and "records key id" in output and "nothing changed" in output
    assert host.stored_key_ids() == {host.first_key.key_id}


def test_commit_finishes_one_interrupted_after_the_transaction(host: Host) -> None:
    assert host.run("rotate-key", "--stage")[0] == 0
    ring = host.ring()
    assert ring.staged is not None
    with contextlib.closing(host.open(ring)) as registry:
        registry.rotate(ring.staged)  # as if rotate-key died before rewriting the key file
    code, output = host.run("rotate-key", "--commit")
    assert code == 0 and "under key id" in output and "already" in output
    assert host.ring().active == ring.staged


def test_plain_rotate_key_refuses_while_a_key_is_staged(host: Host) -> None:
    assert host.run("rotate-key", "--stage")[0] == 0
    before = host.key_file.read_bytes()
    code, output = host.run("rotate-key")
    assert code == 1 and "finish the staged rotation" in output
    assert host.key_file.read_bytes() == before


def test_the_staged_steps_need_a_key_file(
    host: Host, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SECURESESSION_MASTER_KEY", host.first_key.to_base64())
    monkeypatch.delenv("SECURESESSION_KEY_FILE", raising=False)
    for step in (["--stage"], ["--commit"], ["--retire", host.first_key.key_id]):
        assert main(["--registry", host.url, "rotate-key", *step]) == 2
        captured = capsys.readouterr()
        assert "keep the key ring in a key file" in captured.err
        assert host.first_key.to_base64() not in captured.out + captured.err
    assert main(["--registry", host.url, "rotate-key", "--stage", "--new-key-file", "x"]) == 2


def test_one_rotate_key_at_a_time_per_key_file(host: Host) -> None:
    with _locked(host.key_file.parent):
        code, output = host.run("rotate-key", "--stage")
    assert code == 1 and "another rotate-key is changing" in output
    assert host.ring().staged is None


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def test_the_whole_rotation_through_the_console_script_logs_no_key(ready: CLI) -> None:
    registry = ready.open()
    registry.put(ServiceEntry(URL, gateway=Credential("gw", "gw-SECRET-2")))
    registry.close()
    old = ready.key()
    outputs = [ready.ok("--debug", "rotate-key", "--stage").output]
    staged = KeyRing.from_file(ready.key_file).staged
    assert staged is not None
    outputs.append(ready.ok("--debug", "rotate-key", "--commit").output)
    outputs.append(ready.ok("--debug", "rotate-key", "--retire", old.key_id).output)
    outputs.append(ready.ok("--debug", "list").output)
    text = "\n".join(outputs)
    assert "DEBUG" in text or "debug" in text.lower()  # the library's log was on
    for key in (old, staged):
        assert key.to_base64() not in text
        assert key.to_base64()[:16] not in text
    # A refusal with --debug prints its traceback: ids and paths, never a key.
    failed = ready.run("--debug", "rotate-key", "--retire", staged.key_id)
    assert failed.code == 1 and "is the active key" in failed.stderr
    assert "Traceback" in failed.stderr and staged.to_base64() not in failed.output
    failed = ready.run("rotate-key", "--commit")
    assert failed.code == 1 and "no staged key" in one_error_line(failed)


def test_a_staging_whose_key_file_was_lost_can_be_withdrawn(host: Host) -> None:
    before = host.key_file.read_bytes()
    assert host.run("rotate-key", "--stage")[0] == 0
    lost = host.ring().staged
    assert lost is not None
    host.key_file.write_bytes(before)  # the staging host's key file is gone; ours never had it
    code, output = host.run("rotate-key", "--stage")
    assert code == 1 and f"records key id {lost.key_id} as staged" in output
    code, output = host.run("rotate-key", "--retire", lost.key_id)
    assert code == 0 and "no longer records" in output
    assert host.key_file.read_bytes() == before
    assert host.run("rotate-key", "--stage")[0] == 0
    code, output = host.run("rotate-key", "--retire", "0123456789abcdef")
    assert code == 1 and "has no key id 0123456789abcdef" in output


def test_commit_needs_the_staging_recorded_in_this_registry(host: Host, tmp_path: Path) -> None:
    assert host.run("rotate-key", "--stage")[0] == 0
    staged = host.ring().staged
    assert staged is not None
    with contextlib.closing(host.open()) as registry:
        registry.record_staged_key_id(None, operation="retire")  # as if never staged here
    code, output = host.run("rotate-key", "--commit")
    assert code == 1 and "records no staged key" in output and "nothing changed" in output
    assert host.stored_key_ids() == {host.first_key.key_id}
    code, output = host.run("rotate-key", "--stage")  # records the key file's staged key
    assert code == 0 and f"stages key id {staged.key_id} already" in output
    assert host.ring().staged == staged  # no second key generated
    assert host.run("rotate-key", "--commit")[0] == 0
    assert host.stored_key_ids() == {staged.key_id}


@pytest.mark.parametrize("text", ["not json", '{"staged": 7}'], ids=["not-json", "no-key-id"])
def test_an_unreadable_staging_record_names_the_registry_and_reset_stage_clears_it(
    host: Host, text: str
) -> None:
    """A key-ring state written outside securesession blocks every staged step, with an
    error naming the registry and the way out; --reset-stage takes it, recording that
    no key is staged (the state holds a key id only), and the steps work again."""
    path = host.url.removeprefix("sqlite://")
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("INSERT OR REPLACE INTO states VALUES ('key-ring', ?)", (text,))
    before = host.key_file.read_bytes()
    for step in (["--stage"], ["--retire", "0123456789abcdef"]):
        code, output = host.run("rotate-key", *step)
        assert code == 1, output
        assert f"registry {host.url}: its 'key-ring' state" in output
        assert "rotate-key --reset-stage" in output
    assert host.key_file.read_bytes() == before

    code, output = host.run("rotate-key", "--reset-stage")
    assert code == 0, output
    assert "records no staged key now (it recorded an unreadable record" in output
    assert host.key_file.read_bytes() == before  # no key file changed
    with contextlib.closing(host.open()) as registry:
        assert registry.staged_key_id is None
        assert [record.operation for record in registry.audit()][-1] == "reset-stage"
        registry.verify_audit()
    assert host.run("rotate-key", "--stage")[0] == 0
    assert host.run("rotate-key", "--commit")[0] == 0


def test_reset_stage_forgets_a_recorded_staging_and_says_how_to_record_it_again(
    host: Host,
) -> None:
    assert host.run("rotate-key", "--stage")[0] == 0
    staged = host.ring().staged
    assert staged is not None
    code, output = host.run("rotate-key", "--reset-stage")
    assert code == 0 and f"it recorded key id {staged.key_id} as staged" in output
    code, output = host.run("rotate-key", "--commit")
    assert code == 1 and "records no staged key" in output
    code, output = host.run("rotate-key", "--stage")
    assert code == 0 and f"stages key id {staged.key_id} already: recorded it" in output
    assert host.run("rotate-key", "--commit")[0] == 0
