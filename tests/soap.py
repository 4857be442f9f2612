"""The billing service's WSDL and reply that the zeep tests (requests and httpx) serve
from a loopback gateway."""

from __future__ import annotations

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
