"""Moving and re-keying registries through the real console script: rotate-key,
export and import (round trip, conflicts, dry run, corrupt and tampered bundles)."""

from __future__ import annotations

import io
import json
import stat
from pathlib import Path

import pytest

from securesession import Credential, MasterKey, Secret, ServiceEntry
from securesession.cli._output import Progress

from .clihelp import CLI, one_error_line

PASSPHRASE = "transfer-SECRET-passphrase"


def _seed(cli: CLI, key: MasterKey | None = None) -> None:
    registry = cli.open(key)
    registry.put(
        ServiceEntry(
            "https://pay.example.com/api",
            gateway=Credential("gw", "gwSECRET-a"),
            request=Credential("alice", "reqSECRET-a"),
            secret_headers={"X-Api-Key": "keySECRET-a"},
            description="payments",
        )
    )
    registry.put(
        ServiceEntry(
            "https://hr.example.com/",
            request=Credential.token("tokSECRET-b"),
            request_auth="bearer",
        )
    )
    registry.close()


# -- rotate-key ---------------------------------------------------------------------------


def test_rotate_key_then_only_the_new_key_works(ready: CLI) -> None:
    _seed(ready)
    old_key = ready.key()
    result = ready.ok("rotate-key")
    assert "rotated the registry" in result.stdout
    backups = list(ready.key_file.parent.glob("master.key.*.bak"))
    assert len(backups) == 1
    assert stat.S_IMODE(backups[0].stat().st_mode) == 0o600
    assert stat.S_IMODE(ready.key_file.stat().st_mode) == 0o600
    assert MasterKey.from_file(backups[0]) == old_key
    new_key = ready.key()
    assert new_key != old_key
    assert not (ready.key_file.parent / "master.key.new").exists()

    with_new, with_old = ready.run_many(
        [(["list", "--json"], {}), (["list", "--key-file", str(backups[0])], {})]
    )
    assert len(json.loads(with_new.stdout)) == 2
    assert with_old.code == 1 and "wrong master key" in one_error_line(with_old)
    entry = ready.open(new_key).get("https://pay.example.com/api/x")
    assert entry is not None and entry.secret_headers["X-Api-Key"] == Secret("keySECRET-a")


def test_rotate_key_with_key_from_environment(ready: CLI, tmp_path: Path) -> None:
    _seed(ready)
    env = {"SECURESESSION_KEY_FILE": None, "SECURESESSION_MASTER_KEY": ready.key().to_base64()}
    refused = ready.run("rotate-key", env=env)
    assert refused.code == 2 and "--new-key-file" in one_error_line(refused)
    target = tmp_path / "rotated.key"
    ready.ok("rotate-key", "--new-key-file", str(target), env=env)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert ready.run("list", "--key-file", str(target)).code == 0
    assert ready.run("list", env=env).code == 1  # the environment's key is now the old one


def test_rotate_key_refuses_after_an_interrupted_rotation(ready: CLI) -> None:
    pending = ready.key_file.parent / "master.key.new"
    MasterKey.generate().save(pending)
    result = ready.run("rotate-key")
    assert result.code == 1 and "interrupted" in one_error_line(result)
    assert not list(ready.key_file.parent.glob("*.bak"))


def test_progress_bar_appears_only_on_a_terminal_after_a_moment() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    now = [0.0]
    terminal = Terminal()
    progress = Progress("re-encrypting", 10, stream=terminal, delay=0.5, clock=lambda: now[0])
    progress.advance(3)
    assert terminal.getvalue() == ""  # quick work prints nothing
    now[0] = 1.0
    progress.advance(2)
    progress.close()
    assert "re-encrypting [###############...............] 5/10" in terminal.getvalue()
    assert terminal.getvalue().endswith("\n")

    piped = io.StringIO()
    quiet = Progress("x", 10, stream=piped, delay=0, clock=lambda: now[0])
    now[0] = 5.0
    quiet.advance(10)
    quiet.close()
    assert piped.getvalue() == ""


# -- export / import -------------------------------------------------------------------


@pytest.fixture
def target(tmp_path: Path) -> CLI:
    """A second environment with its own key."""
    other = CLI(tmp_path / "prod")
    other.home.mkdir()
    other.init_direct()
    return other


def test_export_import_round_trip_between_different_keys(
    ready: CLI, target: CLI, tmp_path: Path
) -> None:
    _seed(ready)
    bundle = tmp_path / "bundle.json"
    ready.ok("export", str(bundle), "--passphrase-stdin", input=PASSPHRASE + "\n")
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600
    text = bundle.read_text()
    for clear in ("SECRET", "pay.example.com", "alice", "X-Api-Key"):
        assert clear not in text  # not even the URLs travel in clear
    assert json.loads(text)["protection"]["kind"] == "passphrase"
    assert ready.key() != target.key()

    dry = target.ok(
        "import", str(bundle), "--passphrase-env", "PP", "--dry-run", env={"PP": PASSPHRASE}
    )
    assert "2 added" in dry.stdout and "nothing was written" in dry.stdout
    assert json.loads(target.ok("list", "--json").stdout) == []

    first = target.ok("import", str(bundle), "--passphrase-stdin", input=PASSPHRASE + "\n")
    assert "imported: 2 added, 0 changed, 0 unchanged" in first.stdout
    source_entries = {e.url: e for e in ready.open().entries()}
    target_entries = {e.url: e for e in target.open().entries()}
    assert source_entries == target_entries  # secrets included (constant-time equality)

    again = target.ok("import", str(bundle), "--passphrase-stdin", input=PASSPHRASE + "\n")
    assert "0 added, 0 changed, 2 unchanged" in again.stdout


def test_import_conflict_policies(ready: CLI, target: CLI, tmp_path: Path) -> None:
    _seed(ready)
    bundle = tmp_path / "bundle.json"
    ready.ok("export", str(bundle), "--to-key-file", str(target.key_file))
    assert json.loads(bundle.read_text())["protection"] == {
        "kind": "key",
        "key_id": target.key().key_id,
    }
    registry = target.open()
    registry.put(ServiceEntry("https://hr.example.com/", request=Credential.token("oldSECRET")))
    registry.close()

    failed = target.run("import", str(bundle))  # default: --on-conflict fail
    assert failed.code == 1 and "nothing was imported" in one_error_line(failed)
    assert "conflict   https://hr.example.com:443/" in failed.stdout
    assert target.open().get("https://pay.example.com/api") is None  # not even the new one

    skipped = target.ok("import", str(bundle), "--on-conflict", "skip")
    assert "1 added, 1 changed (skipped)" in skipped.stdout
    hr = target.open().get("https://hr.example.com/")
    assert hr is not None and hr.request == Credential.token("oldSECRET")

    replaced = target.ok("import", str(bundle), "--on-conflict", "replace")
    assert "0 added, 1 changed (replaced), 1 unchanged" in replaced.stdout
    hr = target.open().get("https://hr.example.com/")
    assert hr is not None and hr.request == Credential.token("tokSECRET-b")

    # A key bundle for another environment's key is refused by name (key id).
    wrong = ready.run("import", str(bundle))
    assert wrong.code == 1 and "key id" in one_error_line(wrong)


def _tampered(bundle: Path, tmp_path: Path) -> dict[str, Path]:
    original = json.loads(bundle.read_text())
    variants: dict[str, Path] = {}

    def write(name: str, content: str | bytes) -> None:
        path = tmp_path / f"{name}.json"
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        variants[name] = path

    payload = original["payload"]
    flipped = payload[:40] + ("A" if payload[40] != "A" else "B") + payload[41:]
    write("payload-byte", json.dumps({**original, "payload": flipped}))
    write("header-field", json.dumps({**original, "created_at": "2000-01-01T00:00:00Z"}))
    salt = original["protection"]["salt"]
    other_salt = ("B" if salt[0] == "A" else "A") + salt[1:]
    protection = original["protection"]
    write("salt", json.dumps({**original, "protection": {**protection, "salt": other_salt}}))
    write("truncated-payload", json.dumps({**original, "payload": payload[:-20]}))
    write("truncated-file", bundle.read_bytes()[:200])
    write("not-json", b"\x00\x01garbage")
    write("not-a-bundle", json.dumps({"entries": []}))
    write("future-version", json.dumps({**original, "version": 99}))
    write("huge-scrypt", json.dumps({**original, "protection": {**protection, "n": 2**30}}))
    return variants


def test_corrupt_or_tampered_bundles_import_nothing(
    ready: CLI, target: CLI, tmp_path: Path
) -> None:
    _seed(ready)
    bundle = tmp_path / "bundle.json"
    ready.ok("export", str(bundle), "--passphrase-stdin", input=PASSPHRASE + "\n")
    variants = _tampered(bundle, tmp_path)
    calls: list[tuple[list[str], dict[str, object]]] = [
        (["import", str(path), "--passphrase-stdin"], {"input": PASSPHRASE + "\n"})
        for path in variants.values()
    ]
    calls.append((["import", str(bundle), "--passphrase-stdin"], {"input": "wrong-SECRET\n"}))
    calls.append((["import", str(tmp_path / "missing.json"), "--passphrase-stdin"], {}))
    results = target.run_many(calls)
    for name, result in zip([*variants, "wrong passphrase", "missing"], results, strict=True):
        assert result.code == 1, (name, result)
        line = one_error_line(result)
        assert "nothing was imported" in line or name == "missing", (name, line)
    assert "failed authentication" in results[0].stderr
    assert json.loads(target.ok("list", "--json").stdout) == []


def test_export_selection_and_refusals(ready: CLI, tmp_path: Path) -> None:
    _seed(ready)
    bundle = tmp_path / "hr.json"
    ready.ok(
        "export",
        str(bundle),
        "--under",
        "https://hr.example.com/",
        "--passphrase-env",
        "PP",
        env={"PP": PASSPHRASE},
    )
    exists, none, no_source = ready.run_many(
        [
            (["export", str(bundle), "--passphrase-env", "PP"], {"env": {"PP": PASSPHRASE}}),
            (
                ["export", str(tmp_path / "x.json"), "--under", "https://nothing.example.com/"],
                {},
            ),
            (["export", str(tmp_path / "y.json")], {}),  # no terminal to prompt on
        ]
    )
    assert exists.code == 1 and "--force" in one_error_line(exists)
    assert none.code == 1 and "no entries" in one_error_line(none)
    assert no_source.code == 2 and "--passphrase-stdin" in one_error_line(no_source)
    assert not (tmp_path / "y.json").exists()

    other = CLI(tmp_path / "other")
    other.home.mkdir()
    other.init_direct()
    imported = other.ok("import", str(bundle), "--passphrase-stdin", input=PASSPHRASE + "\n")
    assert "1 added" in imported.stdout
    assert [e.url for e in other.open().entries()] == ["https://hr.example.com:443/"]


# -- scrypt parameters a bundle may ask for ----------------------------------------------

#: (n, r, p) a crafted bundle header asks for; each needs more than 128 MiB (or p > 1).
GREEDY_SCRYPT = [
    pytest.param(2**21, 8, 1, id="n=2**21,r=8:2GiB"),
    pytest.param(2**20, 16, 1, id="n=2**20,r=16:2GiB"),
    pytest.param(2**20, 8, 1, id="n=2**20,r=8:1GiB"),
    pytest.param(2**17, 16, 1, id="n=2**17,r=16:256MiB"),
    pytest.param(2, 2**20, 1, id="n=2,r=2**20:256MiB"),
    pytest.param(2**17, 8, 2, id="p=2"),
]


def _header_asking(n: int, r: int, p: int) -> dict[str, object]:
    return {
        "format": "securesession-bundle",
        "version": 1,
        "created_at": "2024-05-01T12:00:03Z",
        "protection": {
            "kind": "passphrase",
            "kdf": "scrypt",
            "salt": "AAAAAAAAAAAAAAAAAAAAAA",
            "n": n,
            "r": r,
            "p": p,
        },
        "payload": "not-even-a-token",
    }


@pytest.mark.parametrize(("n", "r", "p"), GREEDY_SCRYPT)
def test_bundle_scrypt_memory_is_capped_at_128_mib_before_any_derivation(
    n: int, r: int, p: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from cryptography.hazmat.primitives.kdf import scrypt

    from securesession.cli import _bundle
    from securesession.cli._common import CommandError

    def no_scrypt(*args: object, **kwargs: object) -> None:
        raise AssertionError("scrypt was called for a bundle that asks for too much memory")

    monkeypatch.setattr(scrypt, "Scrypt", no_scrypt)  # MasterKey imports it when it derives
    header = _header_asking(n, r, p)
    data = json.dumps(header).encode()
    refusal = r"allows at most 128 MiB \(128 \* n \* r bytes\) and p=1; nothing was imported"
    started = time.perf_counter()
    with pytest.raises(CommandError, match=refusal):  # the clear header, checked first
        _bundle.read_header(data, "crafted.json")
    with pytest.raises(CommandError, match=refusal):  # and where the key is derived
        _bundle.transfer_from_passphrase(header["protection"], PASSPHRASE, "crafted.json")  # type: ignore[arg-type]
    assert time.perf_counter() - started < 0.2  # arithmetic only: nothing was allocated


def test_bundle_scrypt_parameters_within_the_cap_are_accepted() -> None:
    from securesession.cli import _bundle

    for n, r in ((2**17, 8), (2**16, 16), (2**10, 8)):  # 128, 128 and 1 MiB
        assert _bundle.read_header(json.dumps(_header_asking(n, r, 1)).encode(), "b.json")


def test_import_of_a_greedy_scrypt_bundle_is_refused_before_the_passphrase(
    ready: CLI, target: CLI, tmp_path: Path
) -> None:
    _seed(ready)
    bundle = tmp_path / "bundle.json"
    ready.ok("export", str(bundle), "--passphrase-stdin", input=PASSPHRASE + "\n")
    original = json.loads(bundle.read_text())
    crafted = tmp_path / "crafted.json"
    crafted.write_text(
        json.dumps({**original, "protection": {**original["protection"], "n": 2**20, "r": 16}})
    )
    # No passphrase option and no terminal: the refusal comes before any prompt.
    refused = target.run("import", str(crafted))
    assert refused.code == 1, refused
    line = one_error_line(refused)
    assert "n=1048576, r=16, p=1 (2048 MiB)" in line and "at most 128 MiB" in line, line
    assert json.loads(target.ok("list", "--json").stdout) == []


def test_a_bundle_under_a_previous_key_of_the_ring_imports(
    ready: CLI, target: CLI, tmp_path: Path
) -> None:
    _seed(ready)
    bundle = tmp_path / "bundle.json"
    ready.ok("export", str(bundle), "--to-key-file", str(target.key_file))
    # The target rotates after the bundle was made: its old key is now a previous one.
    target.ok("rotate-key", "--stage")
    target.ok("rotate-key", "--commit")
    imported = target.ok("import", str(bundle))
    assert "2 added" in imported.stdout
    hr = target.open().get("https://hr.example.com/")
    assert hr is not None and hr.request == Credential.token("tokSECRET-b")
