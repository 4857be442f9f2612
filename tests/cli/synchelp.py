"""What the ``diff`` and ``sync`` tests share: registries with keys of their own, and
the command run in-process (parsed, dispatched and mapped to an exit code exactly as
``securesession`` does), its output checked for test secrets on every run."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest

from securesession import KeyRing, MasterKey, Registry, ServiceEntry, open_registry
from securesession.cli._app import run

from ..secretscan import leaks
from .clihelp import Result


@dataclass
class Env:
    """One environment's registry and the key file that opens it."""

    name: str
    url: str
    key_file: Path
    key: MasterKey

    def open(self) -> Registry:
        return open_registry(self.url, self.key)

    def put(self, *entries: ServiceEntry) -> list[ServiceEntry]:
        with closing(self.open()) as registry:
            return [registry.put(entry) for entry in entries]

    def remove(self, url: str) -> None:
        with closing(self.open()) as registry:
            assert registry.remove(url)

    def snapshot(self) -> dict[str, tuple[int, ServiceEntry]]:
        """Every entry with its revision: equal snapshots mean nothing was written."""
        with closing(self.open()) as registry:
            return {entry.url: (entry.revision, entry) for entry in registry.entries()}

    def entry(self, url: str) -> ServiceEntry | None:
        with closing(self.open()) as registry:
            found = registry.get(url)
            return found if found is not None and found.url == url else None


def sqlite_env(directory: Path, name: str, entries: Iterable[ServiceEntry] = ()) -> Env:
    """A new SQLite registry under a new key of its own."""
    key = MasterKey.generate()
    key_file = directory / f"{name}.key"
    key.save(key_file)
    env = Env(name, f"sqlite://{directory / f'{name}.db'}", key_file, key)
    open_registry(env.url, key).close()
    env.put(*entries)
    return env


def key_args(src: Env, dst: Env) -> list[str]:
    return ["--src-key-file", str(src.key_file), "--dst-key-file", str(dst.key_file)]


def securesession(capsys: pytest.CaptureFixture[str], *argv: str) -> Result:
    """Run ``securesession ARGV`` in-process; fail the test if a test secret shows."""
    capsys.readouterr()
    code = run(list(argv))
    captured = capsys.readouterr()
    result = Result(code, captured.out, captured.err)
    assert not leaks(result.output), f"a test secret was printed: {result!r}"
    return result


def rotate_key(capsys: pytest.CaptureFixture[str], env: Env, steps: list[str]) -> None:
    """Rotate *env*'s key with rotate-key, plain (``[""]``) or in steps (``["--stage",
    "--commit"]``), and take the new key from its key file."""
    where = ["--registry", env.url, "--key-file", str(env.key_file)]
    old_key_id = env.key.key_id
    for step in steps:
        result = securesession(capsys, "rotate-key", *where, *([step] if step else []))
        assert result.code == 0, result
    env.key = KeyRing.from_file(env.key_file).active
    assert env.key.key_id != old_key_id
