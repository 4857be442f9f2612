"""Run every benchmark, each in its own process, and print one combined table.

    python -m benchmarks.run_all [--quick] [--only NAME ...]

``--quick`` is the CI mode: small sizes, well under a minute in all; the numbers
are indicative only, but every script runs end to end and every count it checks
(decryptions, handshakes, pools, single flight) must hold. The exit status is
non-zero if any script fails or any such check does.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as `python benchmarks/run_all.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _common as common

#: In the order of the issue's targets.
SCRIPTS = ("overhead", "lookup", "cache", "handshakes", "memory", "concurrency", "coldstart")
ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI sizes: well under a minute")
    parser.add_argument("--only", nargs="+", choices=SCRIPTS, help="run only these")
    args = parser.parse_args(argv)
    names = args.only or SCRIPTS
    print(f"machine at start: {common.machine()}", flush=True)
    started = time.perf_counter()
    rows: list[common.Row] = []
    problems: list[str] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory() as directory:
        for name in names:
            output = Path(directory) / f"{name}.json"
            command = [sys.executable, "-m", f"benchmarks.{name}", "--json", str(output)]
            if args.quick:
                command.append("--quick")
            begin = time.perf_counter()
            # Output streams through, so a long full run shows progress.
            result = subprocess.run(command, cwd=ROOT, env=os.environ.copy(), check=False)
            took = time.perf_counter() - begin
            print(f"[{name}: exit {result.returncode}, {took:.1f} s]", flush=True)
            if result.returncode != 0:
                problems.append(f"{name} exited with status {result.returncode}")
            if output.exists():
                script_rows, payload = common.rows_from_json(output)
                rows.extend(script_rows)
                notes.extend(f"{name}: {text}" for text in payload["notes"])
            else:
                problems.append(f"{name} wrote no results")
    total = time.perf_counter() - started
    mode = "quick" if args.quick else "full"
    print(f"\n# securesession benchmarks, all targets [{mode}, {total:.0f} s]")
    print(f"machine at end: {common.machine()}")
    common.print_table(rows)
    for text in notes:
        print(f"note: {text}")
    missed = [row for row in rows if row.met is False]
    print(
        f"\n{sum(row.met is True for row in rows)} targets met, {len(missed)} missed"
        + (" (timings; see docs/performance.md)" if missed else "")
    )
    for text in problems:
        print(f"FAILED: {text}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
