"""Client-side instructions per request, securesession.httpx against hand-configured httpx.

    python -m benchmarks.httpx_instructions        # needs valgrind (apt-get install valgrind)

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
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

FEW, MANY = 100, 1100
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


def instructions(kind: str, side: str, count: int) -> int:
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        "-c",
        WORKLOAD,
        kind,
        side,
        str(count),
    ]
    environment = {**os.environ, "PYTHONHASHSEED": "0"}
    result = subprocess.run(command, capture_output=True, text=True, check=True, env=environment)
    match = _COLLECTED.search(result.stderr)
    if match is None:
        raise RuntimeError("callgrind printed no instruction count")
    return int(match.group(1))


def main() -> int:
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: apt-get install valgrind")
        return 0
    runs = [
        (kind, side, count)
        for kind in ("sync", "async")
        for side in ("plain", "secure")
        for count in (FEW, MANY)
    ]
    with ThreadPoolExecutor(max(1, (os.cpu_count() or 1) // 2)) as pool:
        counted = dict(zip(runs, pool.map(lambda run: instructions(*run), runs), strict=True))
    print("| client | hand-configured httpx | securesession.httpx | ratio | added |")
    print("|---|---|---|---|---|")
    for kind in ("sync", "async"):
        plain, secure = (
            (counted[(kind, side, MANY)] - counted[(kind, side, FEW)]) // (MANY - FEW)
            for side in ("plain", "secure")
        )
        label = "httpx.Client" if kind == "sync" else "httpx.AsyncClient"
        print(f"| {label} | {plain:,} | {secure:,} | {plain / secure:.3f} | {secure - plain:+,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
