"""The testing example stays runnable."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parents[2] / "examples" / "testing_with_stub.py"


def test_testing_with_stub_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    out = capsys.readouterr().out
    assert out.rstrip().endswith("ok")
    assert "unregistered URL: 401" in out
    assert "SECRET" not in out  # the recorded request prints with credentials redacted
