"""Helpers that drive the real ``securesession`` command in subprocesses.

Every run gets an environment whose HOME, XDG directories, registry and key file
all point into the test's ``tmp_path``: the real home is never touched. Every run's
stdout and stderr are checked for the test-secret marker (in clear and base64)
unless the test expects a secret to be shown.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from securesession import MasterKey, Registry, open_registry

from ..secretscan import leaks

_TIMEOUT = 60


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def __repr__(self) -> str:
        return f"Result(code={self.code}, stdout={self.stdout!r}, stderr={self.stderr!r})"


def one_error_line(result: Result) -> str:
    """The single ``securesession: error: ...`` line of a failed run."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("securesession: error: ")]
    assert len(errors) == 1, result
    assert "Traceback" not in result.stderr, result
    return errors[0]


#: Set by the session fixture: where subprocesses keep compiled bytecode. With
#: PYTHONDONTWRITEBYTECODE (common in containers) every run would otherwise compile
#: the package from source again, which doubles the time of each command.
PYCACHE_PREFIX: Path | None = None


class CLI:
    """Runs ``python -m securesession`` with an isolated environment."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.registry_path = home / "registry.db"
        self.key_file = home / "keys" / "master.key"
        clean = {k: v for k, v in os.environ.items() if not k.startswith("SECURESESSION_")}
        self.env: dict[str, str] = {
            **clean,
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / "xdg-config"),
            "XDG_DATA_HOME": str(home / "xdg-data"),
            "SECURESESSION_REGISTRY": f"sqlite://{self.registry_path}",
            "SECURESESSION_KEY_FILE": str(self.key_file),
            "PYTHONUNBUFFERED": "1",
        }
        if PYCACHE_PREFIX is not None:
            self.env.pop("PYTHONDONTWRITEBYTECODE", None)
            self.env["PYTHONPYCACHEPREFIX"] = str(PYCACHE_PREFIX)
        # The gateway servers in these tests are on 127.0.0.1; a proxy setting of the
        # host running the tests must not capture them.
        self.env["NO_PROXY"] = self.env["no_proxy"] = "127.0.0.1,localhost"

    @property
    def registry_url(self) -> str:
        return f"sqlite://{self.registry_path}"

    def command(self, args: Sequence[str]) -> list[str]:
        return [sys.executable, "-m", "securesession", *args]

    def environment(self, env: Mapping[str, str | None] | None) -> dict[str, str]:
        merged = dict(self.env)
        for name, value in (env or {}).items():
            if value is None:
                merged.pop(name, None)
            else:
                merged[name] = value
        return merged

    def run(
        self,
        *args: str,
        input: str | None = None,
        env: Mapping[str, str | None] | None = None,
        secret_ok: bool = False,
    ) -> Result:
        completed = subprocess.run(
            self.command(args),
            input=input if input is not None else "",
            capture_output=True,
            text=True,
            env=self.environment(env),
            timeout=_TIMEOUT,
            check=False,
        )
        result = Result(completed.returncode, completed.stdout, completed.stderr)
        if not secret_ok:
            assert not leaks(result.output), f"a test secret was printed: {result!r}"
        return result

    def ok(self, *args: str, **kwargs: object) -> Result:
        result = self.run(*args, **kwargs)  # type: ignore[arg-type]
        assert result.code == 0, result
        return result

    def run_many(self, calls: Sequence[tuple[Sequence[str], dict[str, object]]]) -> list[Result]:
        """Run several commands at once (each is independent): the suite stays fast."""
        workers = max(1, min(len(calls), 2 * (os.cpu_count() or 1)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(self.run, *args, **kwargs) for args, kwargs in calls]  # type: ignore[arg-type]
            return [future.result() for future in futures]

    # -- direct access through the library, to check what the CLI stored ----------

    def key(self) -> MasterKey:
        return MasterKey.from_file(self.key_file)

    def open(self, key: MasterKey | None = None) -> Registry:
        return open_registry(self.registry_url, key or self.key())

    def init_direct(self) -> MasterKey:
        """Create key and registry through the library (fast setup, not under test)."""
        self.key_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = MasterKey.generate()
        key.save(self.key_file)
        open_registry(self.registry_url, key).close()
        return key
