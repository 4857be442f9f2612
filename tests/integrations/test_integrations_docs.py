"""Every Python block of docs/integrations.md runs, as a user would paste it, and prints
no secret. A block starts with ``# example: <name>``; every Python block must be one."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ..secretscan import leaks

DOC = Path(__file__).parents[2] / "docs" / "integrations.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
_NAME = re.compile(r"# example: ([a-z0-9_-]+)\n")


def _blocks() -> dict[str, str]:
    blocks: dict[str, str] = {}
    for code in _BLOCK.findall(DOC.read_text(encoding="utf-8")):
        match = _NAME.match(code)
        assert match, f"a Python block of {DOC.name} has no '# example: <name>' line:\n{code}"
        assert match.group(1) not in blocks, f"two blocks are named {match.group(1)}"
        blocks[match.group(1)] = code
    return blocks


BLOCKS = _blocks()


def test_the_page_has_examples() -> None:
    assert len(BLOCKS) >= 1


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_example_runs(name: str, tmp_path: Path) -> None:
    script = tmp_path / f"{name}.py"
    script.write_text(BLOCKS[name], encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")}
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert result.stdout.rstrip().endswith("ok"), output
    assert not leaks(output), f"example {name} printed a secret"
