"""Client-side instructions per request, securesession.httpx against hand-configured httpx.

    python -m benchmarks.httpx_instructions        # needs valgrind (apt-get install valgrind)
    python -m benchmarks.httpx_instructions --tls  # the same over loopback mutual TLS

The httpx twin of ``benchmarks/instructions.py``: wall time on a shared machine moves by
tens of percent, instruction counts do not. Both sides send GETs to a URL three segments
below an entry with gateway headers and HTTP Basic (memory registry), over
``httpx.MockTransport`` (no sockets: only client-side Python is counted); the plain side
is the same client configured by hand (``headers=``, ``auth=``). Under
``valgrind --tool=callgrind`` the difference between 1,100 and 100 requests, divided by
1,000, is the cost of one request. String hashing is seeded (``PYTHONHASHSEED=0``) and
garbage collection is off in the counted loop (run once before it), so that runs repeat
to within a few instructions and a difference of 0.1 % shows. Sync and async, the ratio
plain / securesession.

``--tls`` counts the target case of ``benchmarks/httpx_overhead.py`` instead: keep-alive
GETs over loopback mutual TLS to the lean server (its own process, not counted), the
entry carrying the client certificate as its TLS profile and 1,000 filler entries, the
plain side an ``ssl.SSLContext`` with the same certificate; garbage collection stays on,
as in a real client. It is what the throughput ratio measures, without the noise of a
shared machine: the client's work per request, TLS record layer included.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

if __package__ in (None, ""):  # run as `python benchmarks/httpx_instructions.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _common as common

FEW, MANY = 100, 1100
TLS_FEW, TLS_MANY = 20, 220
_COLLECTED = re.compile(r"Collected : (\d+)")

# "python -c WORKLOAD <sync|async> <secure|plain> <n>"
WORKLOAD = """
import gc, sys
import anyio, httpx
from securesession import Credential, MasterKey, ServiceEntry, open_registry
from securesession.httpx import SecureAsyncClient, SecureClient

kind, side, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
registry = open_registry("memory://", MasterKey.generate())
registry.put(ServiceEntry(url="http://gw.example/api", gateway=Credential("g", "gw-SECRET"),
                          request=Credential("u", "pw-SECRET")))
by_hand = {"headers": {"X-Gateway-User": "g", "X-Gateway-Password": "gw-SECRET"},
           "auth": ("u", "pw-SECRET")}
url = "http://gw.example/api/v1/orders/42"

def answer(request):
    return httpx.Response(200, text="ok")

async def answer_async(request):
    return httpx.Response(200, text="ok")

if kind == "sync":
    mock = httpx.MockTransport(answer)
    client = (SecureClient(registry, transport=mock) if side == "secure"
              else httpx.Client(transport=mock, **by_hand))
    client.get(url)
    gc.collect()
    gc.disable()
    for _ in range(count):
        client.get(url)
else:
    async def main():
        mock = httpx.MockTransport(answer_async)
        client = (SecureAsyncClient(registry, transport=mock) if side == "secure"
                  else httpx.AsyncClient(transport=mock, **by_hand))
        await client.get(url)
        gc.collect()
        gc.disable()
        for _ in range(count):
            await client.get(url)
    anyio.run(main)
"""


# "python -c TLS_WORKLOAD <sync|async> <secure|plain> <n> <base URL> <cert> <key> <CA>"
TLS_WORKLOAD = """
import ssl, sys
import anyio, httpx
from securesession import (ClientCertificate, Credential, MasterKey, ServiceEntry,
                           TLSProfile, open_registry)
from securesession.httpx import SecureAsyncClient, SecureClient

kind, side, count, base, cert, key, ca = sys.argv[1], sys.argv[2], int(sys.argv[3]), *sys.argv[4:]
chain, key_pem, ca_pem = (open(path, "rb").read() for path in (cert, key, ca))
limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
registry = open_registry("memory://", MasterKey.generate())
for index in range(1000):
    registry.put(ServiceEntry(url=f"https://svc{index:06d}.bench.example/api/v1"))
registry.put(ServiceEntry(
    url=base + "/api", gateway=Credential("bench-gw", "bench-gw-SECRET"),
    request=Credential("bench-user", "bench-SECRET-password"),
    tls=TLSProfile(client_cert=ClientCertificate.from_pem(chain, key_pem), ca_bundle=ca_pem)))
context = ssl.create_default_context(cafile=ca)
context.load_cert_chain(cert, key)
by_hand = {"verify": context, "limits": limits, "auth": ("bench-user", "bench-SECRET-password"),
           "headers": {"X-Gateway-User": "bench-gw", "X-Gateway-Password": "bench-gw-SECRET"}}
url = base + "/api/v1/orders/42"

if kind == "sync":
    client = (SecureClient(registry, limits=limits, cache_ttl=3600) if side == "secure"
              else httpx.Client(**by_hand))
    for _ in range(10):
        assert client.get(url).status_code == 200
    for _ in range(count):
        client.get(url)
else:
    async def main():
        client = (SecureAsyncClient(registry, limits=limits, cache_ttl=3600) if side == "secure"
                  else httpx.AsyncClient(**by_hand))
        for _ in range(10):
            assert (await client.get(url)).status_code == 200
        for _ in range(count):
            await client.get(url)
    anyio.run(main)
"""


def instructions(workload: str, kind: str, side: str, count: int, *extra: str) -> int:
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        "-c",
        workload,
        kind,
        side,
        str(count),
        *extra,
    ]
    environment = {**os.environ, "PYTHONHASHSEED": "0"}
    result = subprocess.run(command, capture_output=True, text=True, check=True, env=environment)
    match = _COLLECTED.search(result.stderr)
    if match is None:
        raise RuntimeError("callgrind printed no instruction count")
    return int(match.group(1))


def count_all(workload: str, few: int, many: int, *extra: str) -> None:
    """Print the table: per request, the difference between *many* and *few* requests."""
    runs = [
        (kind, side, count)
        for kind in ("sync", "async")
        for side in ("plain", "secure")
        for count in (few, many)
    ]
    with ThreadPoolExecutor(max(1, (os.cpu_count() or 1) // 2)) as pool:
        counted = dict(
            zip(runs, pool.map(lambda run: instructions(workload, *run, *extra), runs), strict=True)
        )
    print("| client | hand-configured httpx | securesession.httpx | ratio | added |")
    print("|---|---|---|---|---|")
    for kind in ("sync", "async"):
        plain, secure = (
            (counted[(kind, side, many)] - counted[(kind, side, few)]) // (many - few)
            for side in ("plain", "secure")
        )
        label = "httpx.Client" if kind == "sync" else "httpx.AsyncClient"
        print(f"| {label} | {plain:,} | {secure:,} | {plain / secure:.3f} | {secure - plain:+,} |")


def main() -> int:
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: apt-get install valgrind")
        return 0
    if "--tls" not in sys.argv[1:]:
        count_all(WORKLOAD, FEW, MANY)
        return 0
    with tempfile.TemporaryDirectory() as directory:
        pki = common.make_pki(Path(directory))
        with common.lean_server(
            require_headers=["Authorization", "X-Gateway-Password"], tls=pki.server_files
        ) as server:
            cert, key = pki.client_files[0]
            print("over loopback mutual TLS, keep-alive, client process only:")
            count_all(
                TLS_WORKLOAD, TLS_FEW, TLS_MANY, server.https, str(cert), str(key), str(pki.ca_file)
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
