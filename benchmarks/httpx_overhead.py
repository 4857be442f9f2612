"""securesession.httpx against a hand-configured httpx client, over loopback mutual TLS.

    python -m benchmarks.httpx_overhead [--quick]

Keep-alive GETs to the lean server of ``_server.py`` (its own process), with TLS and
a client certificate it demands, answering 401 unless ``Authorization`` and
``X-Gateway-Password`` arrived. The entry (memory registry, 1,000 filler entries,
the URL three segments below it) injects gateway headers and HTTP Basic and carries
a TLS profile with the client certificate. The baseline is the same client
configured by hand: ``verify=`` an ``ssl.SSLContext`` with the CA and the client
certificate loaded, ``headers=`` the gateway headers, ``auth=`` the Basic
credential. Both sides get the same ``httpx.Limits`` (64 keep-alive connections).

Four pairs, each alternating in blocks (A B, B A, ...), medians over blocks:

* ``SecureClient`` vs ``httpx.Client``, 1 request at a time, and 64 at a time from
  64 threads sharing the client;
* ``SecureAsyncClient`` vs ``httpx.AsyncClient``, 1 task, and 64 tasks on one loop.

The server reports every negotiated (TLS version, cipher): the sides must agree.

For information, what securesession adds with no network at all (both sides over
``httpx.MockTransport``), sync and async, and sync once more with the CPU caches
evicted before each request, as a network wait evicts them in one-at-a-time traffic.
"""

from __future__ import annotations

import functools
import ssl
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python benchmarks/httpx_overhead.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _common as common

USER, PASSWORD = "bench-user", "bench-SECRET-password"
GATEWAY_USER, GATEWAY_PASSWORD = "bench-gw", "bench-gw-SECRET"
PATH = "/api/v1/orders/42"
TARGET_RATIO = 0.97
CONCURRENCY = 64
#: Twice the last-level cache of common servers (32 MiB here): copying it evicts the rest.
_EVICTION_BYTES = 64 * 1024 * 1024


def _sizes(quick: bool) -> dict[str, int]:
    if quick:
        return {"sequential": 40, "blocks": 6, "per_worker": 2, "warmup": 10}
    return {"sequential": 100, "blocks": 30, "per_worker": 4, "warmup": 100}


def missing() -> str | None:
    try:
        import anyio  # noqa: F401
        import httpx  # noqa: F401
    except ImportError:
        return "need the 'httpx' extra (pip install 'securesession[httpx]')"
    return common.tls_missing()


class _Failures:
    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def add(self, status: int) -> None:
        if status != 200:
            with self._lock:
                self.count += 1


def _sync_block(client: Any, url: str, count: int, failures: _Failures) -> Callable[[], int]:
    get = client.get

    def run() -> int:
        for _ in range(count):
            failures.add(get(url).status_code)
        return count

    return run


def _threaded_block(
    client: Any, url: str, per_worker: int, pool: ThreadPoolExecutor, failures: _Failures
) -> Callable[[], int]:
    get = client.get

    def worker() -> None:
        for _ in range(per_worker):
            failures.add(get(url).status_code)

    def run() -> int:
        for future in [pool.submit(worker) for _ in range(CONCURRENCY)]:
            future.result()
        return CONCURRENCY * per_worker

    return run


def _async_block(
    client: Any, url: str, tasks: int, per_task: int, portal: Any, failures: _Failures
) -> Callable[[], int]:
    import anyio

    async def one_task() -> None:
        for _ in range(per_task):
            failures.add((await client.get(url)).status_code)

    async def block() -> None:
        async with anyio.create_task_group() as group:
            for _ in range(tasks):
                group.start_soon(one_task)

    def run() -> int:
        portal.call(block)
        return tasks * per_task

    return run


def _fill(client: Any, url: str, count: int) -> None:
    """Give *client*'s pool exactly *count* keep-alive connections: hold *count*
    streamed responses open at once (each keeps its connection busy), then close them.

    httpcore's pool walks all its connections (and, for each, all of them again) on
    every request it assigns, under a lock; with 64 concurrent requests that walk is
    most of the cost of a request. How many connections a pool ends up with depends
    on how the threads or tasks happened to be scheduled, so the pools are filled to
    the same size first, or the comparison measures that instead."""
    responses = [client.send(client.build_request("GET", url), stream=True) for _ in range(count)]
    for response in responses:
        response.read()
        response.close()


async def _fill_async(client: Any, url: str, count: int) -> None:
    responses = [
        await client.send(client.build_request("GET", url), stream=True) for _ in range(count)
    ]
    for response in responses:
        await response.aread()
        await response.aclose()


def connections(client: Any) -> int:
    """Connections in the pool serving the benchmark's URL (the entry's profile pool
    for the securesession side)."""
    transport = client._transport
    slots = getattr(transport, "_slots", None)
    if slots:
        transport = next(iter(slots.values())).transport
    return len(transport._pool.connections)


def added_without_network(registry: Any, url: str, by_hand: dict[str, Any], rounds: int) -> Any:
    """µs securesession adds per request with no network at all: both sides over
    ``httpx.MockTransport`` (the securesession side's guard, lookup, cache read and
    header work included; no TLS, no pool), sync and async, alternating."""
    import anyio
    import httpx

    from securesession.httpx import SecureAsyncClient, SecureClient

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="ok")

    async def answer_async(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="ok")

    hand = {key: value for key, value in by_hand.items() if key in ("headers", "auth")}
    sync_sides = {
        "securesession": SecureClient(registry, transport=httpx.MockTransport(answer)),
        "plain": httpx.Client(transport=httpx.MockTransport(answer), **hand),
    }
    async_sides = {
        "securesession": SecureAsyncClient(registry, transport=httpx.MockTransport(answer_async)),
        "plain": httpx.AsyncClient(transport=httpx.MockTransport(answer_async), **hand),
    }
    count = 200

    def sync_block(client: Any) -> float:
        started = time.perf_counter()
        for _ in range(count):
            client.get(url)
        return (time.perf_counter() - started) / count * 1e6

    async def async_block(client: Any) -> float:
        started = time.perf_counter()
        for _ in range(count):
            await client.get(url)
        return (time.perf_counter() - started) / count * 1e6

    # Over the network, each request of one-at-a-time traffic starts after a wait in which
    # the server and the kernel ran: the client's code and data are out of the caches.
    # Streaming through twice the last-level cache between requests reproduces that here.
    evictor = bytearray(_EVICTION_BYTES)
    cold_count = 20

    def cold_block(client: Any) -> float:
        spent = 0
        for _ in range(cold_count):
            bytes(evictor)
            started = time.perf_counter_ns()
            client.get(url)
            spent += time.perf_counter_ns() - started
        return spent / cold_count / 1e3

    results = {}
    for client in sync_sides.values():
        sync_block(client)
    for kind, block in (("sync", sync_block), ("sync, caches evicted before each", cold_block)):
        results[kind] = common.alternate(
            {name: functools.partial(block, client) for name, client in sync_sides.items()},
            rounds,
        )

    async def run_async() -> dict[str, list[float]]:
        for client in async_sides.values():
            await async_block(client)
        collected: dict[str, list[float]] = {name: [] for name in async_sides}
        for index in range(rounds):
            order = list(async_sides) if index % 2 == 0 else list(reversed(async_sides))
            for name in order:
                collected[name].append(await async_block(async_sides[name]))
        for client in async_sides.values():
            await client.aclose()
        return collected

    results["async"] = anyio.run(run_async)
    for client in sync_sides.values():
        client.close()
    return {
        kind: (
            common.median(samples["securesession"]),
            common.median(samples["plain"]),
        )
        for kind, samples in results.items()
    }


def _pair(
    report: common.Report,
    label: str,
    runs: dict[str, Callable[[], int]],
    blocks: int,
    sent: str,
) -> None:
    """Alternate the two sides; the ratio is the median of the per-round ratios (each
    round runs both sides back to back, so a round's ratio compares like with like
    even when the machine's speed drifts between rounds)."""
    samples = common.alternate(
        {name: functools.partial(common.timed_block, run) for name, run in runs.items()}, blocks
    )
    ours, theirs = samples["securesession"], samples["plain"]
    secure = common.Block(
        common.median([b.rate for b in ours]), common.median([b.cpu_us for b in ours])
    )
    plain = common.Block(
        common.median([b.rate for b in theirs]), common.median([b.cpu_us for b in theirs])
    )
    ratios = sorted(a.rate / b.rate for a, b in zip(ours, theirs, strict=True))
    cpu_ratios = sorted(b.cpu_us / a.cpu_us for a, b in zip(ours, theirs, strict=True))
    ratio = common.median(ratios)
    quartiles = f"{ratios[len(ratios) // 4]:.3f} to {ratios[(3 * len(ratios)) // 4]:.3f}"
    report.add(
        common.Row(
            "httpx",
            f"{label}: throughput vs hand-configured httpx ({sent}; middle half of the "
            f"per-round ratios {quartiles})",
            common.fmt_rate(secure.rate),
            common.fmt_rate(plain.rate),
            ratio,
            f"≥ {TARGET_RATIO}",
            ratio >= TARGET_RATIO,
        )
    )
    report.add(
        common.Row(
            "httpx",
            f"{label}: client CPU per request (ratio = CPU-bound throughput)",
            common.fmt_us(secure.cpu_us),
            common.fmt_us(plain.cpu_us),
            common.median(cpu_ratios),
            "info: steadier under load",
        )
    )


def run(report: common.Report, quick: bool) -> None:
    why = missing()
    if why is not None:
        report.add(common.Row("httpx", "mutual TLS keep-alive", "not run", "", None, "", None))
        report.note(f"httpx overhead not measured: {why}")
        return
    import httpx
    from anyio.from_thread import start_blocking_portal

    from securesession import Credential, MasterKey, ServiceEntry, open_registry
    from securesession.httpx import SecureAsyncClient, SecureClient

    sizes = _sizes(quick)
    key = MasterKey.generate()
    # Idle connections outlive the other side's block (a 64-task block can take seconds).
    limits = httpx.Limits(
        max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY, keepalive_expiry=600
    )
    failures = _Failures()
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        pki = common.make_pki(directory, clients=1)
        with (
            common.lean_server(
                require_headers=["Authorization", "X-Gateway-Password"], tls=pki.server_files
            ) as server,
            start_blocking_portal("asyncio") as portal,
            ThreadPoolExecutor(CONCURRENCY) as pool,
        ):
            registry = open_registry("memory://", key)
            template = ServiceEntry(
                url=server.https + "/api",
                gateway=Credential(GATEWAY_USER, GATEWAY_PASSWORD),
                request=Credential(USER, PASSWORD),
                tls=pki.profile(0),
            )
            common.fill_registry(registry, key, 1000, ServiceEntry(url=server.https + "/api"))
            registry.put(template)

            def context() -> ssl.SSLContext:
                made = ssl.create_default_context(cafile=str(pki.ca_file))
                made.load_cert_chain(*(str(path) for path in pki.client_files[0]))
                return made

            by_hand: dict[str, Any] = {
                "verify": context(),
                "headers": {"X-Gateway-User": GATEWAY_USER, "X-Gateway-Password": GATEWAY_PASSWORD},
                "auth": (USER, PASSWORD),
                "limits": limits,
            }
            # A full run takes minutes: the TTL must not end in the middle of it.
            secure = SecureClient(registry, limits=limits, cache_ttl=3600)
            plain = httpx.Client(**by_hand)
            secure_async = SecureAsyncClient(registry, limits=limits, cache_ttl=3600)
            plain_async = httpx.AsyncClient(**{**by_hand, "verify": context()})
            url = server.https + PATH
            # Each pair is warmed up right before it runs: the one-at-a-time pairs run on
            # one keep-alive connection per client, the concurrent ones on exactly 64
            # (see _fill).
            sequential, blocks, per = sizes["sequential"], sizes["blocks"], sizes["per_worker"]
            for client in (secure, plain):
                _sync_block(client, url, sizes["warmup"], failures)()
            _pair(
                report,
                "sync, 1 at a time",
                {
                    "securesession": _sync_block(secure, url, sequential, failures),
                    "plain": _sync_block(plain, url, sequential, failures),
                },
                blocks,
                f"{blocks} x {sequential} req/side",
            )
            for client in (secure, plain):
                _fill(client, url, CONCURRENCY)
                _threaded_block(client, url, 2, pool, failures)()
            _pair(
                report,
                f"sync, {CONCURRENCY} threads",
                {
                    "securesession": _threaded_block(secure, url, per, pool, failures),
                    "plain": _threaded_block(plain, url, per, pool, failures),
                },
                blocks,
                f"{blocks} x {CONCURRENCY * per} req/side",
            )
            for async_client in (secure_async, plain_async):
                _async_block(async_client, url, 1, sizes["warmup"], portal, failures)()
            _pair(
                report,
                "async, 1 task",
                {
                    "securesession": _async_block(
                        secure_async, url, 1, sequential, portal, failures
                    ),
                    "plain": _async_block(plain_async, url, 1, sequential, portal, failures),
                },
                blocks,
                f"{blocks} x {sequential} req/side",
            )
            for async_client in (secure_async, plain_async):
                portal.call(_fill_async, async_client, url, CONCURRENCY)
                _async_block(async_client, url, CONCURRENCY, 2, portal, failures)()
            _pair(
                report,
                f"async, {CONCURRENCY} tasks",
                {
                    "securesession": _async_block(
                        secure_async, url, CONCURRENCY, per, portal, failures
                    ),
                    "plain": _async_block(plain_async, url, CONCURRENCY, per, portal, failures),
                },
                blocks,
                f"{blocks} x {CONCURRENCY * per} req/side",
            )
            for kind, (ours, theirs) in added_without_network(
                registry, url, by_hand, sizes["blocks"]
            ).items():
                report.add(
                    common.Row(
                        "httpx",
                        f"{kind}: per request with no network (both over httpx.MockTransport): "
                        f"securesession adds {ours - theirs:+.1f} µs",
                        common.fmt_us(ours),
                        common.fmt_us(theirs),
                        theirs / ours,
                        "info: the client-side work alone",
                    )
                )
            pools = [connections(c) for c in (secure, plain, secure_async, plain_async)]
            report.check(
                pools == [CONCURRENCY] * 4,
                f"pools of unequal size (sync secure, plain; async secure, plain): {pools}",
            )
            report.note(f"httpx: every pool held {CONCURRENCY} connections at the end: {pools}")
            stats = common.server_stats(plain, server.https)
            negotiated = {tuple(pair) for pair in stats["tls"]}
            report.check(failures.count == 0, f"{failures.count} requests were not answered 200")
            report.check(
                len(negotiated) == 1,
                f"the two sides negotiated different TLS parameters: {sorted(negotiated)}",
            )
            limit = 4 * CONCURRENCY + 1  # 64 keep-alive connections per client, and /__stats
            report.check(
                stats["handshakes"] <= limit,
                f"{stats['handshakes']} handshakes: connections were not kept alive",
            )
            report.check(
                secure.cache_info().loads == 1 and secure_async.cache_info().loads == 1,
                "the warm path decrypted: loads "
                f"{secure.cache_info().loads} / {secure_async.cache_info().loads}, not 1 / 1",
            )
            report.note(
                "httpx: both sides negotiated "
                + ", ".join(f"{version} {cipher}" for version, cipher in sorted(negotiated))
                + f"; {stats['handshakes']} handshakes for {stats['requests']} requests"
            )
            secure.close()
            plain.close()
            portal.call(secure_async.aclose)
            portal.call(plain_async.aclose)
            registry.close()


def main(argv: list[str] | None = None) -> int:
    args = common.parse_args(__doc__, argv)
    common.clean_environment()
    report = common.Report(
        "httpx: SecureClient / SecureAsyncClient vs hand-configured httpx, mutual TLS",
        args.quick,
    )
    run(report, args.quick)
    return report.finish(args.json)


if __name__ == "__main__":
    sys.exit(main())
