"""A ``unittest`` example (plain ``python -m unittest`` runs it too): a StubRegistry and a
GatewayServer, no pytest fixtures."""

# unittest-style assertions are the point of this module.
# ruff: noqa: PT009, PT027

from __future__ import annotations

import unittest
from typing import Any

import requests
import responses

from securesession import SecureSession
from securesession.testing import GatewayServer, StubRegistry


def fetch_order(session: requests.Session, base_url: str, order_id: int) -> Any:
    """The code under test: it only knows it gets a requests session."""
    response = session.get(f"{base_url}/api/orders/{order_id}", timeout=5)
    response.raise_for_status()
    return response.json()


class FetchOrderTest(unittest.TestCase):
    gateway: GatewayServer

    @classmethod
    def setUpClass(cls) -> None:
        # One loopback gateway for the class; it answers 401 unless both credentials match.
        cls.gateway = GatewayServer(
            expect_gateway=("gw", "gw-SECRET"), expect_request=("u", "u-SECRET")
        ).start()
        cls.addClassCleanup(cls.gateway.stop)

    def setUp(self) -> None:
        self.gateway.reset()
        self.registry = StubRegistry(
            {
                self.gateway.url + "/api": {
                    "gateway": ("gw", "gw-SECRET"),
                    "request": ("u", "u-SECRET"),
                }
            }
        )
        self.addCleanup(self.registry.close)
        self.session = SecureSession(self.registry)
        self.addCleanup(self.session.close)

    def test_the_gateway_gets_both_credentials(self) -> None:
        self.assertEqual(
            fetch_order(self.session, self.gateway.url, 7),
            {"method": "GET", "path": "/api/orders/7"},
        )
        (sent,) = self.gateway.requests
        self.assertEqual(sent.header("X-Gateway-User"), "gw")
        self.registry.assert_used(self.gateway.url + "/api", times=1)

    def test_wrong_stored_credentials_are_refused(self) -> None:
        self.registry.add(self.gateway.url + "/api", gateway=("gw", "stale-SECRET"))
        with self.assertRaises(requests.HTTPError) as caught:
            fetch_order(self.session, self.gateway.url, 7)
        self.assertEqual(caught.exception.response.status_code, 401)

    def test_with_a_mocked_transport(self) -> None:
        with responses.RequestsMock() as mock:
            mock.get("https://svc.test/api/orders/7", json={"id": 7})
            self.registry.add("https://svc.test/api", request=("u", "u-SECRET"))
            self.assertEqual(fetch_order(self.session, "https://svc.test", 7), {"id": 7})
            self.assertTrue(mock.calls[0].request.headers["Authorization"].startswith("Basic "))


if __name__ == "__main__":
    unittest.main()
