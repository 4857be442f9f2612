"""Target 5: peak RSS with a 100,000-entry SQLite registry, against a plain Session.

    python -m benchmarks.memory [--quick]

Each side runs in a fresh child process that calls the same 100 services (100
paths on the lean server, each with its own Basic credentials) and reports its
peak resident set size (``VmHWM``):

* ``plain``: ``requests.Session``, credentials passed by hand per call; the child
  checks that securesession was never imported;
* ``import``: the same, plus loading securesession's code (``SecureSession``,
  ``open_registry``, ``MasterKey``: cryptography, idna, ...), which separates the
  cost of the code from the cost of using it;
* ``secure``: SecureSession over an SQLite registry of 100,000 entries (100 live
  ones, the rest filler), master key from the environment;
* ``secure, small``: the same over a registry of only the 100 live entries.

The registry is not loaded whole if the 100,000-entry child needs (almost) no
more memory than the 100-entry one: the growth must stay under a tenth of the
database file. Quick mode uses 10,000 entries.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as `python benchmarks/memory.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _common as common

SERVICES = 100
KEY_VARIABLE = "SECURESESSION_MASTER_KEY"


def _credentials(index: int) -> tuple[str, str]:
    return f"svc{index}-user", f"svc{index}-SECRET"


# -- the child ---------------------------------------------------------------------------


def child(mode: str, base_url: str, registry_path: str, repeats: int) -> int:
    """Call every service *repeats* times; print peak RSS and what was imported."""
    import requests

    if mode == "import":
        # `import securesession` alone loads nothing (its names load on first use);
        # these are the names a SecureSession process touches.
        from securesession import MasterKey, SecureSession, open_registry
    failed = 0
    if mode in ("plain", "import"):
        session = requests.Session()
        for _ in range(repeats):
            for index in range(SERVICES):
                response = session.get(f"{base_url}/svc{index}/items/1", auth=_credentials(index))
                failed += response.status_code != 200
    else:
        from securesession import MasterKey, SecureSession, open_registry

        registry = open_registry(f"sqlite://{registry_path}", MasterKey.from_env(KEY_VARIABLE))
        session = SecureSession(registry)
        for _ in range(repeats):
            for index in range(SERVICES):
                failed += session.get(f"{base_url}/svc{index}/items/1").status_code != 200
        loads = session.cache_info().loads
        if loads != SERVICES:
            failed += 1
    print(
        json.dumps(
            {
                "maxrss": _peak_rss(),
                "failed": failed,
                "securesession_imported": "securesession" in sys.modules,
            }
        )
    )
    return 0


def _peak_rss() -> int:
    """Peak RSS of this process in bytes: VmHWM, the high-water mark of this process's
    own address space. (``ru_maxrss`` would not do: Linux carries the parent's peak
    over through fork and exec, so every child would report the benchmark's.)"""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (
        1 if sys.platform == "darwin" else 1024
    )


# -- the parent --------------------------------------------------------------------------


def build_registry(path: Path, key: object, base_url: str, fillers: int) -> None:
    from securesession import Credential, ServiceEntry, open_registry

    registry = open_registry(f"sqlite://{path}", key)  # type: ignore[arg-type]
    template = ServiceEntry(
        url="https://template.bench.example/api/v1",
        gateway=Credential("bench-gw", "bench-gw-SECRET"),
        request=Credential("bench-user", "bench-SECRET"),
    )
    common.fill_registry(registry, key, fillers, template)  # type: ignore[arg-type]
    for index in range(SERVICES):
        registry.put(
            ServiceEntry(
                url=f"{base_url}/svc{index}",
                request=Credential(*_credentials(index)),
                gateway_auth="none",
            )
        )
    registry.close()


def run_child(
    mode: str, base_url: str, registry: Path, repeats: int, key_text: str
) -> dict[str, object]:
    env = os.environ.copy()
    env.pop(KEY_VARIABLE, None)
    if mode.startswith("secure"):
        env[KEY_VARIABLE] = key_text  # never on the command line, where ps shows it
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        mode,
        base_url,
        str(registry),
        str(repeats),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"memory child {mode!r} failed: {result.stderr[-2000:]}")
    payload: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return payload


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        return child(argv[1], argv[2], argv[3], int(argv[4]))
    args = common.parse_args(__doc__, argv)
    common.clean_environment()
    from securesession import MasterKey

    report = common.Report("5. memory: peak RSS of one process calling 100 services", args.quick)
    total = 10_000 if args.quick else 100_000
    repeats, runs = (1, 1) if args.quick else (3, 3)
    key = MasterKey.generate()
    with (
        tempfile.TemporaryDirectory() as name,
        common.lean_server(require_headers=["Authorization"]) as server,
    ):
        directory = Path(name)
        big, small = directory / "big.db", directory / "small.db"
        build_registry(big, key, server.http, total - SERVICES)
        build_registry(small, key, server.http, 0)
        size = sum(p.stat().st_size for p in directory.glob("big.db*"))
        modes = {"plain": small, "import": small, "secure": big, "secure, small": small}
        samples = common.alternate(
            {
                mode: functools.partial(
                    run_child, mode.split(",")[0], server.http, path, repeats, key.to_base64()
                )
                for mode, path in modes.items()
            },
            runs,
        )
    peak: dict[str, float] = {}
    for mode, results in samples.items():
        peak[mode] = common.median([float(r["maxrss"]) for r in results])  # type: ignore[arg-type]
        failed = sum(int(r["failed"]) for r in results)  # type: ignore[call-overload]
        report.check(failed == 0, f"{mode}: {failed} failed requests or wrong decryption count")
        imported = any(bool(r["securesession_imported"]) for r in results)
        report.check(imported == (mode != "plain"), f"{mode}: securesession imported={imported}")
    plain = peak["plain"]
    report.add(
        common.Row(
            "5 memory",
            f"peak RSS, SecureSession + {total:,}-entry SQLite registry vs plain Session",
            common.fmt_mib(peak["secure"]),
            common.fmt_mib(plain),
            peak["secure"] / plain,
            "info",
        )
    )
    report.add(
        common.Row(
            "5 memory",
            "of which: securesession's code (SecureSession, open_registry, MasterKey loaded)",
            f"+{common.fmt_mib(peak['import'] - plain)}",
            common.fmt_mib(plain),
            peak["import"] / plain,
            "info",
        )
    )
    report.add(
        common.Row(
            "5 memory",
            "of which: registry open, 100 entries decrypted, session",
            f"+{common.fmt_mib(peak['secure'] - peak['import'])}",
            common.fmt_mib(peak["import"]),
            peak["secure"] / peak["import"],
            "info",
        )
    )
    growth = peak["secure"] - peak["secure, small"]
    report.add(
        common.Row(
            "5 memory",
            f"registry not loaded whole: RSS({total:,} entries) - RSS(100 entries)",
            f"{growth / 2**20:+,.1f} MiB",
            f"file {common.fmt_mib(size)}",
            growth / size,
            "< 0.1 x file size",
            growth < 0.1 * size,
        )
    )
    report.note(f"peak RSS is the median of {runs} child process(es) per side, alternating")
    return report.finish(args.json)


if __name__ == "__main__":
    sys.exit(main())
