"""Client-side instructions per request, securesession against a plain requests.Session.

    python -m benchmarks.instructions          # needs valgrind (Debian: apt-get install valgrind)

Wall time on a shared machine moves by tens of percent; instruction counts do not. Each
side runs ``N`` requests through a transport stubbed below the adapter (so only
client-side Python is counted, no sockets), under ``valgrind --tool=callgrind``; the
difference between 600 and 100 requests, divided by 500, is the cost of one request.
Printed as a table with the ratio plain / securesession.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

FEW, MANY = 100, 600
_COLLECTED = re.compile(r"Collected : (\d+)")

# The workload: "python -c WORKLOAD <case> <n>".
WORKLOAD = """
import sys
import requests, requests.adapters
from securesession import Credential, MasterKey, SecureSession, ServiceEntry, open_registry

def stub_send(self, request, **kwargs):
    response = requests.Response()
    response.status_code, response._content = 200, b""
    response.request, response.url, response.connection = request, request.url, self
    return response

requests.adapters.HTTPAdapter.send = stub_send
case, count = sys.argv[1], int(sys.argv[2])
registry = open_registry("memory://", MasterKey.generate())
registry.put(ServiceEntry(url="http://gw.example/api", gateway=Credential("g", "gw-SECRET"),
                          request=Credential("u", "pw-SECRET")))
if case == "plain-basic":
    session = requests.Session()
    session.auth = ("u", "pw-SECRET")
    session.headers.update({"X-Gateway-User": "g", "X-Gateway-Password": "gw-SECRET"})
elif case == "plain":
    session = requests.Session()
else:
    session = SecureSession(registry)
url = "http://gw.example/" + ("public" if case in ("plain", "secure-none") else "api") + "/v1/x"
for _ in range(count):
    session.get(url)
"""

CASES = [
    ("URL with no entry", "plain", "secure-none"),
    ("gateway headers + HTTP Basic", "plain-basic", "secure-basic"),
]


def callgrind_instructions(command: list[str], environment: Mapping[str, str]) -> int:
    """The instructions *command* executed, counted by ``valgrind --tool=callgrind``."""
    counted = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *command]
    result = subprocess.run(counted, capture_output=True, text=True, check=True, env=environment)
    match = _COLLECTED.search(result.stderr)
    if match is None:
        raise RuntimeError("callgrind printed no instruction count")
    return int(match.group(1))


def instructions(case: str, count: int) -> int:
    return callgrind_instructions(
        [sys.executable, "-c", WORKLOAD, case, str(count)], environment=os.environ
    )


def per_request(case: str) -> int:
    return (instructions(case, MANY) - instructions(case, FEW)) // (MANY - FEW)


def main() -> int:
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: apt-get install valgrind")
        return 0
    print("| request | plain requests.Session | securesession | ratio |")
    print("|---|---|---|---|")
    for label, plain_case, secure_case in CASES:
        plain, secure = per_request(plain_case), per_request(secure_case)
        print(f"| {label} | {plain:,} | {secure:,} | {plain / secure:.3f} |")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
