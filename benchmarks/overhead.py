"""Target 1: request overhead of SecureSession against a hand-configured plain Session.

    python -m benchmarks.overhead [--quick] [--profile]

Keep-alive, sequential small GETs to the lean server of ``_server.py`` (its own
process, so its CPU does not share the client's GIL), which answers 401 unless
the credentials arrived, so a side that stopped injecting cannot look fast.

* HTTP Basic over plain HTTP, registry in memory and in SQLite (1,000 filler
  entries): SecureSession vs ``requests.Session`` with ``auth=(user, password)``,
  and vs the physical floor, a Session whose ``Authorization`` header is
  precomputed (no per-request auth work at all).
* HTTPS with a client certificate (needs the TLS profiles of ``_tls.py``): gateway
  headers, Basic and a client certificate from the entry's TLSProfile, vs a plain
  Session with the same headers, ``auth=``, ``cert=`` and ``verify=`` set by hand.
  The server reports every negotiated (TLS version, cipher): both sides must use
  the same one, or the comparison is not like for like.

Blocks of requests alternate between the sides (A B, B A, ...); the table shows
the median throughput over blocks and the ratio securesession / baseline.
"""

from __future__ import annotations

import base64
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python benchmarks/overhead.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _common as common

USER, PASSWORD = common.BENCH_USER
PATH = "/api/v1/orders/42"  # below the entry's /api prefix: a lookup probes 5 keys
TARGET_RATIO = 0.95


def _sizes(quick: bool) -> tuple[int, int, int]:
    """(requests per block, blocks per side, warm-up requests)."""
    # Full: 2 x 5,000 sequential requests per side, in 100 alternating blocks of 100;
    # small blocks, so a burst of load from elsewhere lands on every side alike.
    return (50, 8, 20) if quick else (100, 100, 200)


def throughput(
    session: Any, url: str, count: int, report: common.Report
) -> Callable[[], common.Block]:
    """A block of *count* sequential GETs through *session*."""
    get = session.get

    def run() -> int:
        failed = 0
        for _ in range(count):
            if get(url).status_code != 200:
                failed += 1
        report.check(failed == 0, f"{failed} of {count} requests were not answered 200")
        return count

    return lambda: common.timed_block(run)


def sequential(session: Any, url: str, count: int) -> None:
    """The driver of :func:`common.breakdown`: *count* GETs, one after another."""
    for _ in range(count):
        session.get(url)


def compare(
    report: common.Report,
    label: str,
    sides: dict[str, Any],
    url: str,
    quick: bool,
    *,
    goal: float = TARGET_RATIO,
) -> dict[str, common.Block]:
    """Alternate the sides; add rows against the ``plain`` side (the target, judged
    against *goal*) and any other baseline; return the median block of each side."""
    per_block, blocks, warmup = _sizes(quick)
    for session in sides.values():
        for _ in range(warmup):
            session.get(url)
    samples = common.alternate(
        {name: throughput(session, url, per_block, report) for name, session in sides.items()},
        blocks,
    )
    medians = {
        name: common.Block(
            common.median([block.rate for block in values]),
            common.median([block.cpu_us for block in values]),
        )
        for name, values in samples.items()
    }
    secure, plain = medians["securesession"], medians["plain"]
    sent = f"{blocks} x {per_block} req/side"
    for name, side in medians.items():
        if name == "securesession":
            continue
        ratio = secure.rate / side.rate
        is_target = name == "plain"
        report.add(
            common.Row(
                "1 overhead",
                f"{label}: throughput vs {name} ({sent})",
                common.fmt_rate(secure.rate),
                common.fmt_rate(side.rate),
                ratio,
                f"≥ {goal}" if is_target else "floor (info)",
                (ratio >= goal) if is_target else None,
            )
        )
    report.add(
        common.Row(
            "1 overhead",
            f"{label}: client CPU per request (ratio = CPU-bound throughput)",
            common.fmt_us(secure.cpu_us),
            common.fmt_us(plain.cpu_us),
            plain.cpu_us / secure.cpu_us,
            "info: steadier under load",
        )
    )
    report.add(
        common.Row(
            "1 overhead",
            f"{label}: added per request, wall / CPU",
            f"{(1 / secure.rate - 1 / plain.rate) * 1e6:+.1f} / "
            f"{secure.cpu_us - plain.cpu_us:+.1f} µs",
        )
    )
    return medians


def http_basic(report: common.Report, quick: bool, backend: str, profile: bool) -> None:
    from requests import Session

    from securesession import Credential, MasterKey, SecureSession, ServiceEntry, open_registry

    key = MasterKey.generate()
    with (
        tempfile.TemporaryDirectory() as directory,
        common.lean_server(require_headers=["Authorization"]) as server,
    ):
        registry = open_registry(
            "memory://" if backend == "memory" else f"sqlite://{directory}/registry.db", key
        )
        template = ServiceEntry(
            url=server.http + "/api",
            request=Credential(USER, PASSWORD),
            request_auth="basic",
        )
        common.fill_registry(registry, key, 1000, template)
        registry.put(template)
        secure = SecureSession(registry)
        plain = Session()
        plain.auth = (USER, PASSWORD)
        floor = Session()
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        floor.headers["Authorization"] = f"Basic {token}"
        url = server.http + PATH
        compare(
            report,
            f"HTTP Basic, {backend} registry",
            {"securesession": secure, "plain": plain, "static header": floor},
            url,
            quick,
        )
        info = secure.cache_info()
        report.check(info.loads == 1, f"HTTP Basic ({backend}): {info.loads} decryptions, not 1")
        if profile:
            print(f"\n### Where the time goes: HTTP Basic, {backend} registry")
            print(common.breakdown({"securesession": secure, "plain": plain}, url, sequential))
            print(f"\n### cProfile, securesession side, HTTP Basic, {backend} registry")
            print(common.profile(lambda: secure.get(url), 3000, "securesession|requests"))
        for session in (secure, plain, floor):
            session.close()
        registry.close()


def https_client_cert(report: common.Report, quick: bool, profile: bool) -> None:
    missing = common.tls_missing()
    if missing is not None:
        report.add(
            common.Row("1 overhead", "HTTPS + client certificate", "not run", "", None, "", None)
        )
        report.note(f"HTTPS + client certificate not measured: TLS profiles {missing}")
        return
    from securesession import SecureSession

    with common.mutual_tls_pair() as pair:
        secure, plain = SecureSession(pair.registry), pair.plain
        url = pair.base_url + PATH
        compare(
            report,
            "HTTPS + client cert, SQLite registry",
            {"securesession": secure, "plain": plain},
            url,
            quick,
            goal=common.TLS_TARGET_RATIO,
        )
        stats = common.server_stats(plain, pair.base_url)
        negotiated = {tuple(pair) for pair in stats["tls"]}
        report.check(
            len(negotiated) == 1,
            f"the two sides negotiated different TLS parameters: {sorted(negotiated)}",
        )
        report.check(
            stats["handshakes"] == 2,
            f"expected one handshake per side (2), the server counted {stats['handshakes']}",
        )
        report.note(
            "HTTPS: both sides negotiated "
            + ", ".join(f"{version} {cipher}" for version, cipher in sorted(negotiated))
            + f"; {stats['handshakes']} handshakes for {stats['requests']} requests"
        )
        if profile:
            print("\n### Where the time goes: HTTPS + client certificate")
            print(common.breakdown({"securesession": secure, "plain": plain}, url, sequential))
            print("\n### cProfile, securesession side, HTTPS + client certificate")
            print(common.profile(lambda: secure.get(url), 3000, "securesession|requests"))
        secure.close()


def main(argv: list[str] | None = None) -> int:
    args = common.parse_args(
        __doc__, argv, profile="cProfile the securesession side and print its hot spots"
    )
    common.clean_environment()
    report = common.Report("1. request overhead: keep-alive, sequential GETs", args.quick)
    for backend in ("memory", "sqlite"):
        http_basic(report, args.quick, backend, args.profile)
    https_client_cert(report, args.quick, args.profile)
    return report.finish(args.json)


if __name__ == "__main__":
    sys.exit(main())
