"""zeep's AsyncClient over securesession.httpx: the WSDL is fetched by a SecureClient and
the operations posted by a SecureAsyncClient, both over the entry's mutual TLS, with
the entry's headers injected (docs/httpx.md, "zeep's AsyncClient")."""

from __future__ import annotations

import pytest

from securesession import Registry
from securesession.httpx import SecureAsyncClient, SecureClient
from securesession.testing import CertificateAuthority, GatewayServer

from .httpx_helpers import profile, tagged, tags_seen

zeep = pytest.importorskip("zeep")
transports = pytest.importorskip("zeep.transports")

XML = {"Content-Type": "text/xml; charset=utf-8"}
WSDL = """<?xml version="1.0" encoding="UTF-8"?>
<definitions xmlns="http://schemas.xmlsoap.org/wsdl/"
    xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/"
    xmlns:xsd="http://www.w3.org/2001/XMLSchema"
    xmlns:tns="urn:example:billing" targetNamespace="urn:example:billing">
  <types>
    <xsd:schema targetNamespace="urn:example:billing" elementFormDefault="qualified">
      <xsd:element name="GetBalance"><xsd:complexType><xsd:sequence>
        <xsd:element name="account" type="xsd:string"/>
      </xsd:sequence></xsd:complexType></xsd:element>
      <xsd:element name="GetBalanceResponse"><xsd:complexType><xsd:sequence>
        <xsd:element name="balance" type="xsd:string"/>
      </xsd:sequence></xsd:complexType></xsd:element>
    </xsd:schema>
  </types>
  <message name="GetBalanceIn"><part name="parameters" element="tns:GetBalance"/></message>
  <message name="GetBalanceOut"><part name="parameters" element="tns:GetBalanceResponse"/></message>
  <portType name="BillingPort">
    <operation name="GetBalance">
      <input message="tns:GetBalanceIn"/><output message="tns:GetBalanceOut"/>
    </operation>
  </portType>
  <binding name="BillingBinding" type="tns:BillingPort">
    <soap:binding style="document" transport="http://schemas.xmlsoap.org/soap/http"/>
    <operation name="GetBalance">
      <soap:operation soapAction="urn:example:billing/GetBalance"/>
      <input><soap:body use="literal"/></input><output><soap:body use="literal"/></output>
    </operation>
  </binding>
  <service name="BillingService">
    <port name="BillingPort" binding="tns:BillingBinding">
      <soap:address location="{address}"/>
    </port>
  </service>
</definitions>
"""
REPLY = """<?xml version="1.0" encoding="UTF-8"?>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>
<GetBalanceResponse xmlns="urn:example:billing"><balance>{balance}</balance></GetBalanceResponse>
</soap:Body></soap:Envelope>"""


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
