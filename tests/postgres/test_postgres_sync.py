"""``securesession sync`` from a SQLite registry into a PostgreSQL one: the entries
arrive re-encrypted under PostgreSQL's key in one transaction, ``diff`` then finds the
two the same, a second sync plans nothing, a change made in PostgreSQL since is a
conflict, and the URL's password never reaches the output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from securesession import Credential, MasterKey, Secret, ServiceEntry, open_registry

from ..cli.synchelp import Env, key_args, rotate_key, securesession, sqlite_env

TEST = "https://gw.test.example"
PROD = "https://gw.prod.example:8443"
MAP = ["--map", f"{TEST}={PROD}"]


def entries(base: str) -> list[ServiceEntry]:
    return [
        ServiceEntry(
            f"{base}/{name}",
            gateway=Credential("gw", f"{name}SECRET-pg"),
            secret_headers={"X-Api-Key": Secret(f"{name}SECRET-key")},
        )
        for name in ("hr", "pay", "tax")
    ]


@pytest.fixture
def postgres_env(postgres_url: str, tmp_path: Path) -> Env:
    # The password is ignored by the test cluster (trust), but it is in the URL the
    # commands get: it must appear in no output (the runs scan for "SECRET").
    user, rest = postgres_url.removeprefix("postgresql://").split("@", 1)
    url = f"postgresql://{user}:pwSECRET-pg@{rest}"
    key = MasterKey.generate()
    key_file = tmp_path / "prod.key"
    key.save(key_file)
    open_registry(url, key).close()
    return Env("prod", url, key_file, key)


def test_sync_from_sqlite_to_postgresql(
    tmp_path: Path, postgres_env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    src = sqlite_env(tmp_path, "test", entries(TEST))
    dst = postgres_env
    sync = ["sync", src.url, dst.url, *key_args(src, dst), *MAP]

    applied = securesession(capsys, *sync, "--apply")
    assert applied.code == 0, applied
    assert "synced: 3 added, 0 updated, 0 removed" in applied.stdout
    assert "pwSECRET" not in applied.output
    stored = dst.snapshot()
    assert sorted(stored) == [f"https://gw.prod.example:8443/{n}" for n in ("hr", "pay", "tax")]
    for url, (_, copied) in stored.items():
        original = src.entry(url.replace("gw.prod.example:8443", "gw.test.example:443"))
        assert original is not None
        assert copied.gateway == original.gateway
        assert copied.secret_headers == original.secret_headers

    same = securesession(capsys, "diff", src.url, dst.url, *key_args(src, dst), *MAP, "--json")
    assert same.code == 0, same
    document = json.loads(same.stdout)
    assert document["summary"]["same"] == 3
    # Named without user or password.
    host_and_db = dst.url.split("@", 1)[1]
    assert document["dst"]["registry"] == f"postgresql://{host_and_db}"

    before = dst.snapshot()
    again = securesession(capsys, *sync, "--apply")
    assert again.code == 0 and "nothing to sync" in again.stdout
    assert dst.snapshot() == before


def test_a_change_made_in_postgresql_since_the_sync_is_a_conflict(
    tmp_path: Path, postgres_env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    src = sqlite_env(tmp_path, "test", entries(TEST))
    dst = postgres_env
    sync = ["sync", src.url, dst.url, *key_args(src, dst), *MAP, "--delete"]
    assert securesession(capsys, *sync, "--apply").code == 0

    dst.put(ServiceEntry(f"{PROD}/pay", gateway=Credential("gw", "paySECRET-hotfix")))
    src.put(ServiceEntry(f"{TEST}/pay", gateway=Credential("gw", "paySECRET-v2")))
    src.remove(f"{TEST}/tax")
    before = dst.snapshot()
    blocked = securesession(capsys, *sync, "--apply")
    assert blocked.code == 1, blocked
    assert "conflict update  https://gw.prod.example:8443/pay" in blocked.stdout
    assert dst.snapshot() == before  # the removal of /tax waits with the rest

    forced = securesession(capsys, *sync, "--apply", "--force")
    assert forced.code == 0, forced
    assert "synced: 0 added, 1 updated, 1 removed" in forced.stdout
    pay = dst.entry(f"{PROD}/pay")
    assert pay is not None and pay.gateway == Credential("gw", "paySECRET-v2")
    assert dst.entry(f"{PROD}/tax") is None


def test_a_key_rotation_of_postgresql_is_no_change_to_the_next_sync(
    tmp_path: Path, postgres_env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    """The staged commit re-encrypts every entry (new revisions) and moves the sync
    state's revisions with them in its transaction; a later change in PostgreSQL is
    still a conflict."""
    src = sqlite_env(tmp_path, "test", entries(TEST))
    dst = postgres_env
    sync = ["sync", src.url, dst.url, *key_args(src, dst), *MAP]
    assert securesession(capsys, *sync, "--apply").code == 0
    rotate_key(capsys, dst, ["--stage", "--commit"])
    src.put(
        ServiceEntry(
            f"{TEST}/pay",
            gateway=Credential("gw", "paySECRET-2"),
            secret_headers={"X-Api-Key": Secret("paySECRET-key")},
        )
    )

    applied = securesession(capsys, *sync, "--apply")
    assert applied.code == 0, applied
    assert "synced: 0 added, 1 updated, 0 removed, 2 unchanged" in applied.stdout
    pay = dst.entry("https://gw.prod.example:8443/pay")
    assert pay is not None and pay.gateway is not None
    assert pay.gateway.password.reveal() == "paySECRET-2"

    dst.put(ServiceEntry(f"{PROD}/tax", gateway=Credential("gw", "taxSECRET-hotfix")))
    blocked = securesession(capsys, *sync)
    assert blocked.code == 1, blocked
    assert "conflict update  https://gw.prod.example:8443/tax" in blocked.stdout
