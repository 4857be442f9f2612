"""The benchmarks must not rot: ``python -m benchmarks.run_all --quick`` runs end to end.

Benchmarks are not timed tests, so no timing is asserted here. What is asserted
is what the benchmarks count, because counts are exact on any machine: the warm
path decrypts nothing, the cold path decrypts once per secret field, one service
takes one TLS handshake, ten client certificates take ten pools with no
cross-use, sixteen simultaneous cold requests decrypt once. The scripts check
these themselves and exit non-zero when one fails; this test also reads the
rows, so a script that silently stopped reporting one fails too.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def _common() -> ModuleType:
    # benchmarks/ is not an installed package; load its helpers from the file (they
    # import only the standard library). Dataclasses need the module registered.
    name = "_securesession_benchmarks_common"
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks/_common.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _rows(output: str) -> list[list[str]]:
    """Cells of every Markdown table row printed after the final combined header."""
    table = output.rsplit(_common().TABLE_HEADER, 1)[1]
    rows = []
    for line in table.splitlines()[2:]:
        if not line.startswith("| "):
            break
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


def test_quick_benchmarks_run_and_their_counts_hold() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.run_all", "--quick"],
        cwd=ROOT,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    assert _common().TABLE_HEADER in result.stdout
    assert "SECRET" not in output  # no benchmark credential reaches the output

    rows = _rows(result.stdout)
    by_measurement = {row[1]: row for row in rows}
    targets = {row[0] for row in rows}
    assert {
        "1 overhead",
        "2 lookup",
        "3 cache",
        "5 memory",
        "6 concurrency",
        "7 cold start",
    } <= targets

    warm = next(row for name, row in by_measurement.items() if name.startswith("warm path"))
    assert warm[2] == "0"
    single_flight = next(row for name, row in by_measurement.items() if "single flight" in name)
    assert single_flight[2] == "1"
    # Every row whose goal is an exact count ("= ...") must be met.
    counted = [row for row in rows if row[5].startswith("=")]
    assert len(counted) >= 3
    assert [row for row in counted if row[6] != "met"] == []
    handshake_rows = [row for row in rows if row[0] == "4 handshakes"]
    if handshake_rows and handshake_rows[0][2] != "not run":
        one = next(row for row in handshake_rows if "to one service" in row[1])
        assert one[2] == "1 / 1"
