"""zeep's AsyncClient over securesession.httpx: the WSDL is fetched by a SecureClient and
the operations posted by a SecureAsyncClient, both over the entry's mutual TLS, with
the entry's headers injected (docs/httpx.md, "zeep's AsyncClient")."""

from __future__ import annotations

import pytest

from securesession import Registry
from securesession.httpx import SecureAsyncClient, SecureClient
from securesession.testing import CertificateAuthority, GatewayServer

from ..soap import REPLY, WSDL, XML
from .httpx_helpers import profile, tagged, tags_seen

zeep = pytest.importorskip("zeep")
transports = pytest.importorskip("zeep.transports")


@pytest.mark.anyio
async def test_zeep_async_client_over_mutual_tls(registry: Registry) -> None:
    ca = CertificateAuthority("zeep httpx CA")
    with GatewayServer(
        tls=True,
        ca=ca,
        require_client_cert=True,
        expect_gateway=("zp-gw-user", "zp-gw-SECRET"),
    ) as server:
        server.respond(
            "/billing/service.wsdl",
            body=WSDL.format(address=server.url + "/billing/endpoint"),
            headers=XML,
        )
        server.respond("/billing/endpoint", body=REPLY.format(balance="42.00"), headers=XML)
        registry.put(tagged(server.url + "/billing", "zp", tls=profile(ca, "billing-client")))

        transport = transports.AsyncTransport(
            client=SecureAsyncClient(registry), wsdl_client=SecureClient(registry)
        )
        client = zeep.AsyncClient(server.url + "/billing/service.wsdl", transport=transport)
        try:
            balance = await client.service.GetBalance(account="DE-1")
        finally:
            await transport.aclose()
            transport.wsdl_client.close()
        records = server.requests
    assert balance == "42.00"
    assert [(r.method, r.path) for r in records] == [
        ("GET", "/billing/service.wsdl"),
        ("POST", "/billing/endpoint"),
    ]
    assert {r.client_cert_subject_cn for r in records} == {"billing-client"}
    assert all(tags_seen(r, ["zp"]) == {"zp"} for r in records)
    assert b"GetBalance" in records[1].body
