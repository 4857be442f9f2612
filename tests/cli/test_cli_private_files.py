"""The CLI's private files (the bundle of ``export``, the key backup of ``rotate-key``,
the PKCS#12 of ``demo``) are written by the library's one writer: 0600, all or nothing,
and a file planted at the temporary name (a symlink to someone's file) is refused,
never written through.

The commands run in-process (parsed and dispatched as ``securesession`` does), so the
test can stand in for whoever plants the file."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from securesession import Credential, ServiceEntry
from securesession.cli import _demo
from securesession.cli._app import build_parser
from securesession.cli._common import CommandError

from ..private_writes import spy_private_writes, umask_zero
from .clihelp import CLI

PASSPHRASE = "transfer-SECRET-files"


def _run(cli: CLI, monkeypatch: pytest.MonkeyPatch, *argv: str) -> int:
    monkeypatch.setenv("SECURESESSION_REGISTRY", cli.registry_url)
    monkeypatch.setenv("SECURESESSION_KEY_FILE", str(cli.key_file))
    monkeypatch.setenv("PP", PASSPHRASE)
    args = build_parser().parse_args(list(argv))
    result: int = args.handler(args)
    return result


def _plant_symlinks_at_temporaries(monkeypatch: pytest.MonkeyPatch, victim: Path) -> list[Path]:
    planted: list[Path] = []
    real_open = os.open

    def planting_open(path: Any, flags: int, mode: int = 0o777, **kwargs: Any) -> int:
        if Path(path).name.endswith(".tmp"):
            Path(path).symlink_to(victim)
            planted.append(Path(path))
        return real_open(path, flags, mode, **kwargs)

    monkeypatch.setattr(os, "open", planting_open)
    return planted


@pytest.fixture
def seeded(ready: CLI) -> CLI:
    registry = ready.open()
    registry.put(ServiceEntry("https://hr.example.com/", request=Credential("u", "uSECRET-f")))
    registry.close()
    return ready


COMMANDS = {
    "export": lambda cli, tmp: ["export", str(tmp / "out.json"), "--passphrase-env", "PP"],
    "rotate-key": lambda cli, tmp: ["rotate-key"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_private_files_are_0600_and_leave_no_temporary(
    seeded: CLI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    written_in = {"export": tmp_path, "rotate-key": seeded.key_file.parent}[command]
    before = set(written_in.iterdir())
    assert _run(seeded, monkeypatch, *COMMANDS[command](seeded, tmp_path)) == 0
    new = set(written_in.iterdir()) - before
    assert new and not [p for p in new if p.name.endswith(".tmp")]
    for path in new | {seeded.key_file}:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_file_planted_at_the_temporary_name_is_refused(
    seeded: CLI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    key_before = seeded.key_file.read_bytes()
    planted = _plant_symlinks_at_temporaries(monkeypatch, victim)
    with pytest.raises(CommandError, match="cannot write"):
        _run(seeded, monkeypatch, *COMMANDS[command](seeded, tmp_path))
    assert planted and victim.read_bytes() == b"precious"
    assert seeded.key_file.read_bytes() == key_before  # rotate-key stopped before anything
    assert not (tmp_path / "out.json").exists()
    assert [e.url for e in seeded.open().entries()] == ["https://hr.example.com:443/"]


def test_the_demo_writes_its_pkcs12_through_the_one_writer(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The client certificate and key the demo hands to ``add`` are 0600 from their first
    byte (never written with the default mode and chmod-ed after), in a fresh file."""
    writes = spy_private_writes(monkeypatch, _demo)
    with umask_zero():
        args = build_parser().parse_args(["demo"])
        assert args.handler(args) == 0
    assert "client certificate CN=demo-client" in capsys.readouterr().out
    [write] = writes
    assert write.path.name == "client.p12"
    assert (write.overwrite, write.existed, write.mode) == (False, False, 0o600)
