"""Target 3: the decrypted-entry cache: decryptions counted, and what each one costs.

    python -m benchmarks.cache [--quick]

Decryptions are counted by the master key itself (a subclass that counts its
``decrypt`` calls), under requests sent to the lean server of ``_server.py``:

* warm path: every request after the first must decrypt nothing (count = 0);
* cold path: after ``clear_cache()``, one request decrypts exactly one token per
  secret field of the entry (the count of stored tokens), and no more;
* a cached session (``cache_ttl=300``) against one that decrypts on every request
  (``cache_ttl=0``), alternating, shows what the cache saves per request.

Then the unit costs: one AES-256-GCM decryption, one cache miss (read the sealed
row, decrypt every field, rebuild the entry and its injection plan) for the memory
and SQLite backends and for an entry with a TLS profile, and each way of loading
the master key, scrypt (``MasterKey.from_passphrase``) separately: it costs
hundreds of milliseconds and 128 MiB on purpose, once per process.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python benchmarks/cache.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _common as common

PATH = "/api/v1/orders/42"


def counting_key() -> Any:
    """A MasterKey that counts its decryptions (``.decryptions``)."""
    from securesession import MasterKey

    class CountingKey(MasterKey):
        __slots__ = ("decryptions",)

        def __init__(self, key: bytes) -> None:
            super().__init__(key)
            self.decryptions = 0

        def decrypt(self, token: str, context: bytes) -> bytes:
            self.decryptions += 1
            return super().decrypt(token, context)

    return CountingKey(os.urandom(32))


def entry_for(base_url: str, **extra: Any) -> Any:
    from securesession import Credential, Secret, ServiceEntry

    return ServiceEntry(
        url=base_url + "/api",
        gateway=Credential("bench-gw", "bench-gw-SECRET"),
        request=Credential("bench-user", "bench-SECRET"),
        secret_headers={"X-Api-Key": Secret("bench-api-key-SECRET")},
        **extra,
    )


def counts(report: common.Report, quick: bool) -> None:
    """Decryptions on the warm and cold paths, counted, and cached vs uncached A/B."""
    from securesession import SecureSession, open_registry

    key = counting_key()
    warm_requests = 100 if quick else 1000
    with common.lean_server(require_headers=["Authorization", "X-Api-Key"]) as server:
        registry = open_registry("memory://", key)
        registry.put(entry_for(server.http))
        url = server.http + PATH
        ref = registry.lookup(url)
        assert ref is not None
        fields = len(registry.store.read(ref.key).secrets)  # type: ignore[attr-defined]
        session = SecureSession(registry, cache_ttl=300)

        key.decryptions = 0
        first = session.get(url)
        report.check(first.status_code == 200, f"first request answered {first.status_code}")
        cold_first = key.decryptions

        key.decryptions = 0
        before = session.cache_info()
        for _ in range(warm_requests):
            session.get(url)
        warm = key.decryptions
        after = session.cache_info()
        report.add(
            common.Row(
                "3 cache",
                f"warm path: decryptions in {warm_requests:,} requests",
                str(warm),
                "",
                None,
                "= 0",
                warm == 0,
            )
        )
        report.check(warm == 0, f"warm path decrypted {warm} times in {warm_requests} requests")
        report.check(
            after.hits - before.hits == warm_requests and after.loads == before.loads,
            f"cache_info moved from {before} to {after}",
        )

        session.clear_cache()
        key.decryptions = 0
        session.get(url)
        cold = key.decryptions
        report.add(
            common.Row(
                "3 cache",
                "cold path: decryptions for one request (first request / after clear_cache)",
                f"{cold_first} / {cold}",
                f"{fields} secret fields",
                None,
                "= 1 per secret field",
                cold == fields and cold_first == fields,
            )
        )
        report.check(cold == fields, f"cold path decrypted {cold} tokens, the entry has {fields}")

        uncached = SecureSession(registry, cache_ttl=0)
        per_block, blocks = (50, 6) if quick else (100, 40)

        def block(target: Any) -> Any:
            def run() -> int:
                for _ in range(per_block):
                    target.get(url)
                return per_block

            return lambda: common.timed_block(run)

        uncached.get(url)
        samples = common.alternate({"cached": block(session), "ttl=0": block(uncached)}, blocks)
        cached_rate = common.median([b.rate for b in samples["cached"]])
        uncached_rate = common.median([b.rate for b in samples["ttl=0"]])
        cached_cpu = common.median([b.cpu_us for b in samples["cached"]])
        uncached_cpu = common.median([b.cpu_us for b in samples["ttl=0"]])
        report.add(
            common.Row(
                "3 cache",
                f"cached vs decrypt-every-request session (cache_ttl=0), {fields} fields",
                common.fmt_rate(cached_rate),
                common.fmt_rate(uncached_rate),
                cached_rate / uncached_rate,
                "info",
            )
        )
        report.add(
            common.Row(
                "3 cache",
                "client CPU per request: cached vs cache_ttl=0",
                common.fmt_us(cached_cpu),
                common.fmt_us(uncached_cpu),
                uncached_cpu / cached_cpu,
                "info",
            )
        )
        session.close()
        uncached.close()
        registry.close()


def unit_costs(report: common.Report, quick: bool, directory: Path) -> None:
    """µs per decryption and per cache miss (load + plan), by backend."""
    from securesession import MasterKey, open_registry
    from securesession._inject import build_plan

    key = MasterKey.generate()
    context = b"securesession entry\x00https://bench.example:443/api\x00request.password"
    token = key.encrypt(b"bench-SECRET-password-of-ordinary-length", context)
    calls, rounds = (500, 5) if quick else (5000, 15)
    decrypt = common.median(
        [common.per_call_us(lambda: key.decrypt(token, context), calls) for _ in range(rounds)]
    )
    encrypt = common.median(
        [common.per_call_us(lambda: key.encrypt(b"x" * 40, context), calls) for _ in range(rounds)]
    )
    report.add(
        common.Row(
            "3 cache",
            "one AES-256-GCM field decryption (MasterKey.decrypt)",
            common.fmt_us(decrypt),
            f"encrypt {common.fmt_us(encrypt)}",
        )
    )

    variants: list[tuple[str, str, dict[str, Any]]] = [
        ("memory", "memory://", {}),
        ("sqlite", f"sqlite://{directory}/units.db", {}),
    ]
    missing = common.tls_missing()
    pki = None
    if missing is None:
        pki = common.make_pki(directory, clients=1)
        variants.append(("sqlite, with a TLS profile", f"sqlite://{directory}/tls.db", {}))
    for label, url, _ in variants:
        registry = open_registry(url, key)
        extra: dict[str, Any] = {}
        if "TLS" in label and pki is not None:
            extra["tls"] = pki.profile(0)
        base = "https://bench.example"
        registry.put(entry_for(base, **extra))
        ref = registry.lookup(base + PATH)
        assert ref is not None
        fields = len(registry.store.read(ref.key).secrets)  # type: ignore[attr-defined]
        load_calls = max(20, calls // (50 if extra else 10))

        def cache_miss(registry: Any = registry, ref: Any = ref) -> object:
            return build_plan(registry.load(ref), lambda plan, response: False)

        miss = common.median([common.per_call_us(cache_miss, load_calls) for _ in range(rounds)])
        report.add(
            common.Row(
                "3 cache",
                f"one cache miss: load + decrypt + plan, {label} ({fields} fields)",
                common.fmt_us(miss),
                f"{common.fmt_us(miss / fields)} per field",
            )
        )
        registry.close()
    if missing is not None:
        report.note(f"cache miss of an entry with a TLS profile not measured: TLS {missing}")


def key_loads(report: common.Report, quick: bool, directory: Path) -> None:
    """What getting the master key costs: file, environment, base64, and scrypt."""
    from securesession import MasterKey

    key = MasterKey.generate()
    path = directory / "master.key"
    key.save(path)
    os.environ["BENCH_SECURESESSION_KEY"] = key.to_base64()
    text = key.to_base64()
    calls, rounds = (200, 5) if quick else (2000, 15)
    for label, load in (
        ("MasterKey.from_file", lambda: MasterKey.from_file(path)),
        ("MasterKey.from_env", lambda: MasterKey.from_env("BENCH_SECURESESSION_KEY")),
        ("MasterKey.from_base64", lambda: MasterKey.from_base64(text)),
    ):
        value = common.median([common.per_call_us(load, calls) for _ in range(rounds)])
        report.add(common.Row("3 cache", f"master key load: {label}", common.fmt_us(value)))
    del os.environ["BENCH_SECURESESSION_KEY"]
    salt = os.urandom(16)
    timings = []
    for _ in range(1 if quick else 5):
        start = time.perf_counter()
        MasterKey.from_passphrase("bench-SECRET-passphrase", salt)
        timings.append((time.perf_counter() - start) * 1e6)
    report.add(
        common.Row(
            "3 cache",
            "master key load: MasterKey.from_passphrase (scrypt N=2^17, r=8: once per process)",
            common.fmt_us(common.median(timings)),
            "",
            None,
            "paid once",
        )
    )


def main(argv: list[str] | None = None) -> int:
    args = common.parse_args(__doc__, argv)
    common.clean_environment()
    report = common.Report("3. cache: decryptions and their cost", args.quick)
    counts(report, args.quick)
    with tempfile.TemporaryDirectory() as directory:
        unit_costs(report, args.quick, Path(directory))
        key_loads(report, args.quick, Path(directory))
    return report.finish(args.json)


if __name__ == "__main__":
    sys.exit(main())
