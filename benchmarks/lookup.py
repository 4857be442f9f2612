"""Target 2: registry lookup time against registry size (memory and SQLite).

    python -m benchmarks.lookup [--quick]

``Registry.lookup(url)`` is the only registry call on the warm request path: it
turns a URL into (entry key, revision) without decrypting anything. Registries of
10, 1,000 and 100,000 entries (one host each, prefix ``/api/v1``) are timed on
URLs two segments below an entry (``.../api/v1/orders/42``: five candidate keys,
the third matches), in rounds that alternate between the sizes.

* "repeated URLs": 256 URLs looked up over and over; their canonical forms are in
  the parse cache, so this is the registry's own cost (the target).
* "unique URLs": every lookup is a URL never seen before (a new order id), so it
  also pays canonicalisation, as REST traffic with ids in the path does.
* "miss": a URL under no entry, which probes every candidate key.

Quick mode uses 10,000 entries instead of 100,000.
"""

from __future__ import annotations

import random
import sys
import tempfile
from collections.abc import Callable, Iterator
from itertools import count, cycle, repeat
from pathlib import Path

if __package__ in (None, ""):  # run as `python benchmarks/lookup.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _common as common

TARGET_US = 20.0
TARGET_FLATNESS = 1.5


def _from(lookup: Callable[[str], object], urls: Iterator[str]) -> Callable[[], object]:
    """One lookup of the next URL of *urls* per call."""
    return lambda: lookup(next(urls))


def _unique_urls(base: str) -> Iterator[str]:
    """URLs never seen before; the query does not matter to a lookup, the id does. The
    ids start apart per registry, so no size meets a URL another size parsed."""
    offset = abs(hash(base)) % 10**12 * 10**6
    for number in count(offset):
        yield f"{base}{number}?page=1"


def _batch(function: Callable[[], object], calls: int) -> Callable[[], float]:
    return lambda: common.per_call_us(function, calls)


def measure_backend(
    report: common.Report, backend: str, sizes: list[int], quick: bool, directory: Path
) -> None:
    from securesession import Credential, MasterKey, ServiceEntry, open_registry

    key = MasterKey.generate()
    template = ServiceEntry(
        url="https://template.bench.example/api/v1",
        gateway=Credential("bench-gw", "bench-gw-SECRET"),
        request=Credential("bench-user", "bench-SECRET"),
    )
    rng = random.Random(6)
    calls, rounds = (500, 7) if quick else (2000, 25)
    repeated: dict[int, Callable[[], float]] = {}
    unique: dict[int, Callable[[], float]] = {}
    miss: dict[int, Callable[[], float]] = {}
    registries = []
    for size in sizes:
        url = "memory://" if backend == "memory" else f"sqlite://{directory}/{size}.db"
        registry = open_registry(url, key)
        registries.append(registry)
        common.fill_registry(registry, key, size, template)
        targets = [common.filler_key(rng.randrange(size)) + "/orders/42" for _ in range(256)]
        for target in targets:  # warm: parse cache, SQLite page cache, statement cache
            if registry.lookup(target) is None:
                raise RuntimeError(f"no match for {target}")
        lookup = registry.lookup
        repeated[size] = _batch(_from(lookup, cycle(targets)), calls)
        base = common.filler_key(size // 2) + "/orders/"
        unique[size] = _batch(_from(lookup, _unique_urls(base)), calls)
        absent = "https://nobody.bench.example:443/api/v1/orders/42"
        report.check(registry.lookup(absent) is None, f"{backend} {size}: a miss matched")
        miss[size] = _batch(_from(lookup, repeat(absent)), calls)

    for label, variants, goal in (
        ("repeated URLs", repeated, True),
        ("unique URLs", unique, False),
        ("miss", miss, False),
    ):
        samples = common.alternate({str(size): variants[size] for size in sizes}, rounds)
        medians = {int(size): common.median(values) for size, values in samples.items()}
        smallest = medians[sizes[0]]
        for size in sizes:
            value = medians[size]
            ratio = value / smallest
            is_target = goal and size == sizes[-1]
            report.add(
                common.Row(
                    "2 lookup",
                    f"{backend}, {size:,} entries, {label}",
                    common.fmt_us(value),
                    f"{common.fmt_us(smallest)} @ {sizes[0]}",
                    ratio,
                    f"≤ {TARGET_FLATNESS} and < {TARGET_US:.0f} µs" if is_target else "",
                    (ratio <= TARGET_FLATNESS and value < TARGET_US) if is_target else None,
                )
            )
            if goal and size != sizes[-1]:
                report.rows[-1].goal = f"< {TARGET_US:.0f} µs"
                report.rows[-1].met = value < TARGET_US
    for registry in registries:
        registry.close()


def main(argv: list[str] | None = None) -> int:
    args = common.parse_args(__doc__, argv)
    report = common.Report("2. lookup scaling: median µs per Registry.lookup", args.quick)
    sizes = [10, 1_000, 10_000] if args.quick else [10, 1_000, 100_000]
    with tempfile.TemporaryDirectory() as directory:
        for backend in ("memory", "sqlite"):
            measure_backend(report, backend, sizes, args.quick, Path(directory))
    report.note("ratio = time at this size / time at 10 entries")
    return report.finish(args.json)


if __name__ == "__main__":
    sys.exit(main())
