"""The pytest plugin's httpx fixtures, and GatewayServer from async tests."""

from __future__ import annotations

import ssl

import pytest

from securesession import TLSProfile
from securesession.httpx import SecureAsyncClient, SecureClient
from securesession.testing import GatewayServer, StubRegistry


def test_secure_client(
    secure_client: SecureClient,
    securesession_registry: StubRegistry,
    gateway_server: GatewayServer,
) -> None:
    gateway_server.expect_gateway = ("gw", "gw-SECRET")
    securesession_registry.add(gateway_server.url + "/svc", gateway=("gw", "gw-SECRET"))
    assert secure_client.get(gateway_server.url + "/svc/x").status_code == 200
    securesession_registry.assert_used(gateway_server.url + "/svc", times=1)


@pytest.mark.anyio
async def test_secure_async_client_against_the_tls_gateway(
    secure_async_client: SecureAsyncClient,
    securesession_registry: StubRegistry,
    gateway_server_tls: GatewayServer,
) -> None:
    """The gateway serves on its own threads: an async test uses it as it is."""
    gateway_server_tls.expect_gateway = ("gw", "gw-SECRET")
    securesession_registry.add(
        gateway_server_tls.url + "/svc",
        gateway=("gw", "gw-SECRET"),
        tls=TLSProfile(ca_bundle=gateway_server_tls.ca_pem),
    )
    async with secure_async_client as client:
        response = await client.get(gateway_server_tls.url + "/svc/x")
    assert response.status_code == 200
    assert [r.status for r in gateway_server_tls.requests] == [200]


@pytest.mark.anyio
async def test_tls_context_fixture_for_urls_without_a_profile(
    securesession_registry: StubRegistry,
    gateway_server_tls: GatewayServer,
    gateway_server_tls_context: ssl.SSLContext,
) -> None:
    securesession_registry.add(gateway_server_tls.url + "/svc", gateway=("gw", "gw-SECRET"))
    async with SecureAsyncClient(
        securesession_registry, verify=gateway_server_tls_context
    ) as client:
        assert (await client.get(gateway_server_tls.url + "/svc/x")).status_code == 200
    (record,) = gateway_server_tls.requests
    assert record.header("X-Gateway-Password") == "gw-SECRET"


def test_an_async_client_left_open_is_reported(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.fixture
        def anyio_backend():
            return "asyncio"

        @pytest.mark.anyio
        async def test_closes_it(secure_async_client, securesession_registry, gateway_server):
            securesession_registry.add(gateway_server.url + "/a", gateway=("u", "p"))
            async with secure_async_client as client:
                assert (await client.get(gateway_server.url + "/a/x")).status_code == 200

        @pytest.mark.anyio
        async def test_unused(secure_async_client):
            pass

        @pytest.mark.anyio
        async def test_leaves_it_open(secure_async_client, securesession_registry, gateway_server):
            securesession_registry.add(gateway_server.url + "/a", gateway=("u", "p"))
            assert (await secure_async_client.get(gateway_server.url + "/a/x")).status_code == 200
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(["*secure_async_client was used and left open*"])


def test_the_sync_client_fixture_is_open_in_its_test_and_closed_after_it(
    pytester: pytest.Pytester,
) -> None:
    """Through the pytest11 entry point, in a suite of its own: the plugin is found as
    an installed package's, not from this suite's conftest."""
    pytester.makepyfile(
        """
        import httpx

        seen = []

        def test_uses_it(secure_client):
            seen.append(secure_client)
            assert isinstance(secure_client, httpx.Client) and not secure_client.is_closed

        def test_it_was_closed():
            (client,) = seen
            assert client.is_closed
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
