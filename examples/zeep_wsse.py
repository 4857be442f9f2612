"""zeep and WS-Security: a SOAP call whose UsernameToken comes from the registry, over the
entry's mutual TLS.

Runs anywhere with no network: the SOAP service is a local TLS server on 127.0.0.1 that
demands a client certificate, serves a one-operation WSDL and answers every call; every
key and certificate is generated at run time by a throw-away test CA.

    pip install 'securesession[zeep]'
    python examples/zeep_wsse.py

The entry holds the client certificate and, in mode ``"wsse"``, the credential the
service wants in the SOAP envelope. ``SecureTransport`` sends zeep's WSDL download and
the call through the ``SecureSession`` (so both present the certificate) and fills the
envelope's UsernameToken from the entry of the URL it is posted to. The application
code never sees the password.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET

import zeep

from securesession import (
    ClientCertificate,
    Credential,
    MasterKey,
    SecureSession,
    ServiceEntry,
    TLSProfile,
    open_registry,
)
from securesession.integrations.zeep import SecureTransport
from securesession.testing import CertificateAuthority, GatewayServer

PFX_PASSWORD = "example-pfx-password"
WSSE_USER, WSSE_PASSWORD = "soap-alice", "wsse-secret"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
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
  <message name="In"><part name="parameters" element="tns:GetBalance"/></message>
  <message name="Out"><part name="parameters" element="tns:GetBalanceResponse"/></message>
  <portType name="BillingPort">
    <operation name="GetBalance"><input message="tns:In"/><output message="tns:Out"/></operation>
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
<GetBalanceResponse xmlns="urn:example:billing"><balance>42.00</balance></GetBalanceResponse>
</soap:Body></soap:Envelope>"""


def main() -> None:
    ca = CertificateAuthority("example SOA gateway CA")
    issued = ca.issue_client("billing-service")
    client_cert = ClientCertificate.from_pkcs12(issued.pkcs12(PFX_PASSWORD.encode()), PFX_PASSWORD)
    registry = open_registry("memory://", MasterKey.generate())

    with GatewayServer(tls=True, ca=ca, require_client_cert=True) as service:
        endpoint = f"{service.url}/billing/endpoint"
        service.respond("/billing/service.wsdl", body=WSDL.format(address=endpoint), headers=XML)
        service.respond("/billing/endpoint", body=REPLY, headers=XML)
        registry.put(
            ServiceEntry(
                url=f"{service.url}/billing/",
                request=Credential(WSSE_USER, WSSE_PASSWORD),
                request_auth="wsse",  # for the SOAP envelope: never sent as HTTP
                tls=TLSProfile(client_cert=client_cert, ca_bundle=ca.cert_pem),
            )
        )

        with SecureSession(registry) as session:
            client = zeep.Client(
                f"{service.url}/billing/service.wsdl", transport=SecureTransport(session)
            )
            balance = client.service.GetBalance(account="A-1")
        print(f"GetBalance(A-1) -> {balance}")

        # What the service received: the WSDL download and the call, both over the
        # entry's client certificate, and the UsernameToken in the envelope only.
        for record in service.requests:
            cn = record.client_cert_subject_cn
            if record.method == "GET":
                print(f"GET  {record.path}: client certificate {cn}")
                continue
            envelope = ET.fromstring(record.body)  # noqa: S314 - our own loopback server's record
            token = envelope.find(f".//{{{WSSE}}}UsernameToken")
            assert token is not None
            assert token.findtext(f"{{{WSSE}}}Password") == WSSE_PASSWORD  # checked, not printed
            username = token.findtext(f"{{{WSSE}}}Username")
            print(f"POST {record.path}: client certificate {cn}, UsernameToken for {username}")
            in_headers = any(WSSE_PASSWORD in value for value in record.headers.values())
            print(f"wsse password in an HTTP header: {in_headers}")
    registry.close()
    print("ok")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    main()
