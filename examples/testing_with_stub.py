"""Test code that uses SecureSession without a key file, a database or a real gateway.

Run it: ``python examples/testing_with_stub.py``. It starts a loopback HTTPS gateway
(with a CA generated at run time) that refuses requests without the right gateway
and request credentials, fills a StubRegistry in one line, and checks that the code
under test sends exactly the stored credentials, and only to the right service.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import requests

from securesession import SecureSession
from securesession.testing import GatewayServer, StubRegistry


def fetch_order(session: requests.Session, base_url: str, order_id: int, **kwargs: Any) -> Any:
    """The code under test: it gets a session and knows nothing about credentials."""
    response = session.get(f"{base_url}/orders/{order_id}", timeout=5, **kwargs)
    response.raise_for_status()
    return response.json()


def main() -> None:
    gateway = GatewayServer(
        tls=True,
        expect_gateway=("svc-gw", "gw-SECRET"),  # X-Gateway-User / X-Gateway-Password
        expect_request=("alice", "alice-SECRET"),  # HTTP Basic
    )
    with gateway, tempfile.TemporaryDirectory() as tmp:
        # Trust the run-time CA per request: requests ignores Session.verify when
        # REQUESTS_CA_BUNDLE is set in the environment.
        ca_file = Path(tmp) / "gateway-ca.pem"
        ca_file.write_bytes(gateway.ca_pem)

        registry = StubRegistry(
            {
                gateway.url + "/orders": {
                    "gateway": ("svc-gw", "gw-SECRET"),
                    "request": ("alice", "alice-SECRET"),
                }
            }
        )
        with registry, SecureSession(registry) as session:
            order = fetch_order(session, gateway.url, 42, verify=str(ca_file))
            print("order:", order)

            # A URL outside the entry gets nothing injected, and the gateway refuses it.
            public = session.get(gateway.url + "/status", verify=str(ca_file), timeout=5)
            print("unregistered URL:", public.status_code)

        (sent, refused) = gateway.requests
        assert sent.header("X-Gateway-User") == "svc-gw"
        assert (sent.header("Authorization") or "").startswith("Basic ")
        assert refused.header("X-Gateway-User") is None and refused.status == 401
        registry.assert_used(gateway.url + "/orders", times=1)
        print("lookups:", [(lookup.url, lookup.key) for lookup in registry.lookups])
        print("recorded:", sent)  # credential headers are redacted in the repr
        print("ok")


if __name__ == "__main__":
    main()
