"""Every example in examples/ runs as a user would run it, and prints no secret."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .secretscan import leaks

EXAMPLES = Path(__file__).parents[1] / "examples"

#: What each example's output must show (besides exiting 0).
EXPECTED: dict[str, list[str]] = {
    "quickstart.py": ["GET /payments/bills/42 -> 200", "GET /public -> 401 (nothing injected)"],
    "mutual_tls.py": [
        "gateway saw client certificate(s) ['billing-service'] over 1 TLS handshake(s)",
        "ClientCertificateRequiredError: entry https://127.0.0.1:",
        "ok",
    ],
    "testing_with_stub.py": ["unregistered URL: 401", "ok"],
    "httpx_clients.py": [
        "sync: GET invoices/2 -> 200",
        "async: 3 concurrent GETs -> [200]",
        "zeep AsyncClient: GetBalance(A-1) -> 42.00",
        "gateway saw client certificate(s) ['billing-service'] on 8 requests",
        "PinMismatchError: entry https://127.0.0.1:",
        "requests the gateway received for it: 0",
        "ok",
    ],
    "shared_registry_postgres.py": [
        "host B    GET /billing/invoices/1 -> 401 (no entry yet)",
        "host B    sees host A's new entry after ",
        "host B    GET /billing/invoices/1 -> 200",
        "cluster stopped: GET /billing/invoices/1 -> 200 (warm entry, from cache)",
        "cluster stopped: GET /billing/invoices/2 -> RegistryError (cold URL: fails closed)",
        "cluster stopped and removed",
        "ok",
    ],
    "vault_envelope.py": [
        "wrapped   master.key.wrapped: Transit key version 1",
        "GET /billing/invoices/1 -> 200",
        "rewrapped master.key.wrapped: Transit key version 1 -> 2",
        "(same key: True)",
        "after rotation GET /billing/invoices/2 -> 200",
        "bao dev server stopped",
    ],
    "zeep_wsse.py": [
        "GetBalance(A-1) -> 42.00",
        "GET  /billing/service.wsdl: client certificate billing-service",
        "POST /billing/endpoint: client certificate billing-service, UsernameToken for soap-alice",
        "wsse password in an HTTP header: False",
        "ok",
    ],
}
#: Clear values the examples use, which their output must never show.
SECRETS = [
    "gw-secret",
    "alice-secret",
    "example-pfx-password",
    "example-root-token",
    "wsse-secret",
]


def test_every_example_is_listed() -> None:
    assert sorted(path.name for path in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs(name: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")}
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for expected in EXPECTED[name]:
        assert expected in result.stdout
    for secret in SECRETS:
        assert secret not in result.stdout + result.stderr
    assert not leaks(result.stdout + result.stderr)  # the "SECRET"-marked test values
