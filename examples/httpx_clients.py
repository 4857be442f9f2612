"""httpx: SecureClient, SecureAsyncClient and zeep's AsyncClient over an entry's mutual TLS.

Runs anywhere with no network: the gateway is a local TLS server on 127.0.0.1 that
demands a client certificate and both credentials, and serves the billing WSDL of
``zeep_wsse.py``; every key and certificate is generated at run time by a throw-away
test CA.

    pip install 'securesession[httpx,zeep]'
    python examples/httpx_clients.py

One entry holds the gateway credential, the request credential (HTTP Basic) and a TLS
profile: the client certificate, the gateway's CA and a pin of its key. The sync and the
async client send a few calls each; zeep's ``AsyncClient`` downloads the WSDL and calls
the service through them. Then an entry whose pin names another key: the client refuses
it after the handshake, before a byte of the request is written.
"""

from __future__ import annotations

import asyncio
import logging

import zeep
from zeep.transports import AsyncTransport
from zeep_wsse import REPLY, WSDL, XML

from securesession import (
    ClientCertificate,
    Credential,
    MasterKey,
    PinMismatchError,
    Registry,
    ServiceEntry,
    TLSProfile,
    open_registry,
    spki_pin,
)
from securesession.httpx import SecureAsyncClient, SecureClient
from securesession.testing import CertificateAuthority, GatewayServer

PFX_PASSWORD = "example-pfx-password"
GATEWAY = ("billing-gw", "gw-secret")
REQUEST = ("alice", "alice-secret")


async def call_async(registry: Registry, base: str) -> None:
    async with SecureAsyncClient(registry) as client:
        responses = await asyncio.gather(
            *(client.get(f"{base}/billing/invoices/{number}") for number in range(3))
        )
    print(f"async: 3 concurrent GETs -> {sorted({r.status_code for r in responses})}")

    # zeep's AsyncTransport: an AsyncClient for the calls, a Client for the WSDL.
    transport = AsyncTransport(
        client=SecureAsyncClient(registry), wsdl_client=SecureClient(registry)
    )
    try:
        soap = zeep.AsyncClient(f"{base}/billing/service.wsdl", transport=transport)
        balance = await soap.service.GetBalance(account="A-1")
    finally:
        await transport.aclose()
        transport.wsdl_client.close()
    print(f"zeep AsyncClient: GetBalance(A-1) -> {balance}")


def main() -> None:
    ca = CertificateAuthority("example gateway CA")
    issued = ca.issue_client("billing-service")
    client_cert = ClientCertificate.from_pkcs12(issued.pkcs12(PFX_PASSWORD.encode()), PFX_PASSWORD)
    registry = open_registry("memory://", MasterKey.generate())

    # The gateway answers 401 unless both credentials arrive, and 403 without the certificate.
    with GatewayServer(
        tls=True, ca=ca, require_client_cert=True, expect_gateway=GATEWAY, expect_request=REQUEST
    ) as gateway:
        assert gateway.server_cert is not None
        endpoint = f"{gateway.url}/billing/endpoint"
        gateway.respond("/billing/service.wsdl", body=WSDL.format(address=endpoint), headers=XML)
        gateway.respond("/billing/endpoint", body=REPLY, headers=XML)
        profile = TLSProfile(
            client_cert=client_cert,
            ca_bundle=ca.cert_pem,
            pins=(spki_pin(gateway.server_cert.cert_pem),),
        )
        registry.put(
            ServiceEntry(
                url=f"{gateway.url}/billing/",
                gateway=Credential(*GATEWAY),
                request=Credential(*REQUEST),
                tls=profile,
            )
        )

        with SecureClient(registry) as client:
            for number in range(3):
                response = client.get(f"{gateway.url}/billing/invoices/{number}")
                print(f"sync: GET invoices/{number} -> {response.status_code}")
        asyncio.run(call_async(registry, gateway.url))
        seen = {r.client_cert_subject_cn or "(none)" for r in gateway.requests}
        count = len(gateway.requests)
        print(f"gateway saw client certificate(s) {sorted(seen)} on {count} requests")

        # The same gateway under an entry whose pin names another key: refused after the
        # handshake, before the request is written.
        other_key = ca.issue_server()
        registry.put(
            ServiceEntry(
                url=f"{gateway.url}/reports/",
                tls=TLSProfile(
                    client_cert=client_cert,
                    ca_bundle=ca.cert_pem,
                    pins=(spki_pin(other_key.cert_pem),),
                ),
            )
        )
        before = len(gateway.requests)
        with SecureClient(registry) as client:
            try:
                client.get(f"{gateway.url}/reports/daily")
            except PinMismatchError as exc:
                print(f"{type(exc).__name__}: {exc}")
        print(f"requests the gateway received for it: {len(gateway.requests) - before}")
    registry.close()
    print("ok")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    main()
