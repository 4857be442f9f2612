"""zeep over a SecureSession: the WS-Security UsernameToken comes from the entry of the URL
each envelope is posted to, over that entry's mutual TLS, and its password is never sent
as HTTP, never logged, and never re-sent to a redirect's location."""

from __future__ import annotations

import base64
import hashlib
import logging
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import zeep
from zeep.exceptions import TransportError
from zeep.wsse import utils as wsse_utils
from zeep.wsse.username import UsernameToken

from securesession import (
    ClientCertificate,
    Credential,
    MasterKey,
    Registry,
    SecureSession,
    ServiceEntry,
    TLSProfile,
    open_registry,
)
from securesession.integrations.zeep import REDACTED, SecureTransport, wsse_credential
from securesession.testing import CertificateAuthority, GatewayServer, RecordedRequest

from ..secretscan import leaks
from ..soap import REPLY, WSDL, XML

WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
PROFILE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
BINDING = "{urn:example:billing}BillingBinding"

ALICE = ("soap-alice", "alice-wsse-SECRET")  # /billing: request credential, mode wsse
BOB = ("soap-bob", "bob-wsse-SECRET")  # /payroll: gateway credential, mode wsse
BOB_HTTP = ("bob-http", "bob-basic-SECRET")  # /payroll: request credential, HTTP Basic


@dataclass(frozen=True)
class Token:
    """The UsernameToken of a recorded envelope."""

    username: str | None
    password: str | None
    password_type: str | None
    nonce: str | None
    created: str | None
    count: int  # UsernameToken elements in the envelope


def token_of(record: RecordedRequest) -> Token | None:
    if not record.body:
        return None
    envelope = ET.fromstring(record.body)  # noqa: S314 - zeep's envelope, recorded here
    tokens = envelope.findall(f".//{{{WSSE}}}UsernameToken")
    if not tokens:
        return None
    token = tokens[0]
    password = token.find(f"{{{WSSE}}}Password")
    return Token(
        username=token.findtext(f"{{{WSSE}}}Username"),
        password=None if password is None else password.text,
        password_type=None if password is None else password.get("Type"),
        nonce=token.findtext(f"{{{WSSE}}}Nonce"),
        created=token.findtext(f"{{{WSU}}}Created"),
        count=len(tokens),
    )


def headers_text(record: RecordedRequest) -> str:
    """Every header name and value of *record*, with base64 chunks left for leaks()."""
    return " ".join(f"{name}: {value}" for name, value in record.headers.items())


def serve_soap(server: GatewayServer, prefix: str, balance: str) -> str:
    """Serve the WSDL (pointing at ``<prefix>/endpoint``) and the SOAP reply under
    *prefix*; return the WSDL's URL."""
    server.respond(
        f"{prefix}/service.wsdl",
        body=WSDL.format(address=f"{server.url}{prefix}/endpoint"),
        headers=XML,
    )
    server.respond(f"{prefix}/endpoint", body=REPLY.format(balance=balance), headers=XML)
    return f"{server.url}{prefix}/service.wsdl"


def posts(server: GatewayServer, path: str) -> list[RecordedRequest]:
    return [r for r in server.requests if r.method == "POST" and r.path == path]


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority("zeep test CA")


def profile(ca: CertificateAuthority, cn: str) -> TLSProfile:
    issued = ca.issue_client(cn)
    cert = ClientCertificate.from_pkcs12(issued.pkcs12(b"p12-SECRET"), "p12-SECRET")
    return TLSProfile(client_cert=cert, ca_bundle=ca.cert_pem)


@pytest.fixture(scope="module")
def profiles(ca: CertificateAuthority) -> dict[str, TLSProfile]:
    return {cn: profile(ca, cn) for cn in ("billing-service", "payroll-service", "reports")}


@pytest.fixture
def soap(ca: CertificateAuthority) -> Iterator[GatewayServer]:
    """A SOAP service that insists on a client certificate."""
    with GatewayServer(tls=True, ca=ca, require_client_cert=True) as server:
        yield server


@pytest.fixture
def registry(soap: GatewayServer, profiles: dict[str, TLSProfile]) -> Iterator[Registry]:
    registry = open_registry("memory://", MasterKey.generate())
    registry.put(
        ServiceEntry(
            url=soap.url + "/billing",
            request=Credential(*ALICE),
            request_auth="wsse",
            tls=profiles["billing-service"],
        )
    )
    registry.put(
        ServiceEntry(
            url=soap.url + "/payroll",
            gateway=Credential(*BOB),
            gateway_auth="wsse",
            request=Credential(*BOB_HTTP),  # HTTP Basic on top of the SOAP token
            tls=profiles["payroll-service"],
        )
    )
    registry.put(ServiceEntry(url=soap.url + "/reports", tls=profiles["reports"]))
    yield registry
    registry.close()


@pytest.fixture
def session(registry: Registry) -> Iterator[SecureSession]:
    with SecureSession(registry) as session:
        yield session


def test_the_soap_call_carries_the_entrys_username_token_over_mutual_tls(
    soap: GatewayServer, session: SecureSession
) -> None:
    wsdl = serve_soap(soap, "/billing", "42.00")
    client = zeep.Client(wsdl, transport=SecureTransport(session))

    assert client.service.GetBalance(account="A-1") == "42.00"

    (post,) = posts(soap, "/billing/endpoint")
    assert post.client_cert_subject_cn == "billing-service"
    assert token_of(post) == Token(ALICE[0], ALICE[1], f"{PROFILE}#PasswordText", None, None, 1)
    for record in soap.requests:  # the WSDL GET and the POST
        assert ALICE[1] not in headers_text(record) and not leaks(headers_text(record))
        assert record.header("Authorization") is None


def test_the_wsdl_fetch_and_the_post_both_go_over_the_entrys_tls(
    soap: GatewayServer, session: SecureSession
) -> None:
    wsdl = serve_soap(soap, "/billing", "42.00")
    client = zeep.Client(wsdl, transport=SecureTransport(session))
    client.service.GetBalance(account="A-1")

    seen = [(r.method, r.path, r.client_cert_subject_cn, r.tls_version) for r in soap.requests]
    tls = soap.requests[0].tls_version
    assert seen == [
        ("GET", "/billing/service.wsdl", "billing-service", tls),
        ("POST", "/billing/endpoint", "billing-service", tls),
    ]
    assert tls in ("TLSv1.2", "TLSv1.3")
    assert soap.handshakes == 1  # one pool for the entry's profile, kept alive
    assert token_of(soap.requests[0]) is None  # the WSDL GET carries no token


def test_each_address_gets_its_own_entrys_token_and_client_certificate(
    soap: GatewayServer, session: SecureSession
) -> None:
    wsdl = serve_soap(soap, "/billing", "42.00")
    serve_soap(soap, "/payroll", "7.00")
    serve_soap(soap, "/reports", "0.00")
    client = zeep.Client(wsdl, transport=SecureTransport(session))
    payroll = client.create_service(BINDING, soap.url + "/payroll/endpoint")
    reports = client.create_service(BINDING, soap.url + "/reports/endpoint")

    assert client.service.GetBalance(account="A-1") == "42.00"
    assert payroll.GetBalance(account="B-2") == "7.00"
    assert reports.GetBalance(account="C-3") == "0.00"
    assert client.service.GetBalance(account="A-4") == "42.00"

    billing_posts = posts(soap, "/billing/endpoint")
    assert [token_of(r).username for r in billing_posts] == [ALICE[0], ALICE[0]]  # type: ignore[union-attr]
    assert {r.client_cert_subject_cn for r in billing_posts} == {"billing-service"}

    (payroll_post,) = posts(soap, "/payroll/endpoint")
    assert payroll_post.client_cert_subject_cn == "payroll-service"
    payroll_token = token_of(payroll_post)
    assert payroll_token is not None
    assert (payroll_token.username, payroll_token.password) == BOB  # the gateway credential
    expected_basic = base64.b64encode(":".join(BOB_HTTP).encode()).decode()
    assert payroll_post.header("Authorization") == f"Basic {expected_basic}"  # HTTP as usual
    assert BOB[1] not in headers_text(payroll_post)

    (reports_post,) = posts(soap, "/reports/endpoint")
    assert reports_post.client_cert_subject_cn == "reports"
    assert token_of(reports_post) is None  # its entry holds no wsse credential
    assert b"Security" not in reports_post.body
    for record in soap.requests:
        assert ALICE[1] not in headers_text(record) and BOB[1] not in headers_text(record)


def test_a_rotated_wsse_password_is_used_on_the_next_call(
    soap: GatewayServer, registry: Registry, session: SecureSession, profiles: dict[str, TLSProfile]
) -> None:
    wsdl = serve_soap(soap, "/billing", "42.00")
    client = zeep.Client(wsdl, transport=SecureTransport(session))
    client.service.GetBalance(account="A-1")
    registry.put(
        ServiceEntry(
            url=soap.url + "/billing",
            request=Credential(ALICE[0], "alice-rotated-SECRET"),
            request_auth="wsse",
            tls=profiles["billing-service"],
        )
    )
    client.service.GetBalance(account="A-1")
    passwords = [token_of(r).password for r in posts(soap, "/billing/endpoint")]  # type: ignore[union-attr]
    assert passwords == [ALICE[1], "alice-rotated-SECRET"]


def test_password_digest(soap: GatewayServer, session: SecureSession) -> None:
    wsdl = serve_soap(soap, "/billing", "42.00")
    client = zeep.Client(wsdl, transport=SecureTransport(session, use_digest=True))
    client.service.GetBalance(account="A-1")
    client.service.GetBalance(account="A-2")

    tokens = [token_of(r) for r in posts(soap, "/billing/endpoint")]
    for token in tokens:
        assert token is not None and token.username == ALICE[0]
        assert token.password_type == f"{PROFILE}#PasswordDigest"
        assert token.nonce is not None and token.created is not None
        nonce = base64.b64decode(token.nonce)
        expected = hashlib.sha1(
            nonce + token.created.encode() + ALICE[1].encode(), usedforsecurity=False
        ).digest()  # the UsernameToken profile's digest is SHA-1
        assert token.password == base64.b64encode(expected).decode()
    assert tokens[0].nonce != tokens[1].nonce  # type: ignore[union-attr]
    for record in soap.requests:
        assert ALICE[1].encode() not in record.body and not leaks(record.body.decode())


def test_the_clients_own_username_token_wins(soap: GatewayServer, session: SecureSession) -> None:
    wsdl = serve_soap(soap, "/billing", "42.00")
    own = UsernameToken("caller", "caller-own-SECRET")
    client = zeep.Client(wsdl, transport=SecureTransport(session), wsse=own)
    client.service.GetBalance(account="A-1")

    (post,) = posts(soap, "/billing/endpoint")
    token = token_of(post)
    assert token is not None and token.count == 1
    assert (token.username, token.password) == ("caller", "caller-own-SECRET")
    assert ALICE[1].encode() not in post.body


class AddsTimestamp:
    """A client ``wsse=`` object (as zeep's Signature would be) adding to the header."""

    def apply(self, envelope: Any, headers: dict[str, str]) -> tuple[Any, dict[str, str]]:
        security = wsse_utils.get_security_header(envelope)
        security.append(wsse_utils.WSU.Timestamp(wsse_utils.WSU.Created("2030-01-01T00:00:00Z")))
        return envelope, headers

    def verify(self, envelope: Any) -> None:
        pass


def test_the_token_is_prepended_to_what_the_clients_wsse_added(
    soap: GatewayServer, session: SecureSession
) -> None:
    wsdl = serve_soap(soap, "/billing", "42.00")
    client = zeep.Client(wsdl, transport=SecureTransport(session), wsse=AddsTimestamp())
    client.service.GetBalance(account="A-1")

    (post,) = posts(soap, "/billing/endpoint")
    security = ET.fromstring(post.body).find(f".//{{{WSSE}}}Security")  # noqa: S314
    assert security is not None
    assert [child.tag for child in security] == [
        f"{{{WSSE}}}UsernameToken",
        f"{{{WSU}}}Timestamp",
    ]
    assert token_of(post) == Token(ALICE[0], ALICE[1], f"{PROFILE}#PasswordText", None, None, 1)


def test_a_redirect_is_not_followed_with_the_token(
    ca: CertificateAuthority, soap: GatewayServer, session: SecureSession
) -> None:
    wsdl = serve_soap(soap, "/billing", "42.00")
    with GatewayServer(tls=True, ca=ca) as elsewhere:
        soap.redirect("/billing/endpoint", elsewhere.url + "/steal", status=307)
        client = zeep.Client(wsdl, transport=SecureTransport(session))
        with pytest.raises(TransportError, match=r"307 .*not followed") as caught:
            client.service.GetBalance(account="A-1")
        assert caught.value.status_code == 307
        assert elsewhere.requests == []
    assert len(posts(soap, "/billing/endpoint")) == 1


def test_no_log_line_shows_the_wsse_password(
    soap: GatewayServer, session: SecureSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="zeep")
    caplog.set_level(logging.DEBUG, logger="securesession")
    wsdl = serve_soap(soap, "/billing", "42.00")
    client = zeep.Client(wsdl, transport=SecureTransport(session))
    client.service.GetBalance(account="A-1")

    lines = [record.getMessage() for record in caplog.records]
    envelope_logs = [line for line in lines if line.startswith("HTTP Post to")]
    assert len(envelope_logs) == 1  # ours; zeep's transport logger did not see the envelope
    assert f">{REDACTED}</wsse:Password>" in envelope_logs[0]
    assert f"<wsse:Username>{ALICE[0]}</wsse:Username>" in envelope_logs[0]
    assert not [line for line in lines if leaks(line)]


def test_without_an_entry_zeep_behaves_as_usual() -> None:
    registry = open_registry("memory://", MasterKey.generate())
    with GatewayServer() as plain, SecureSession(registry) as session:
        wsdl = serve_soap(plain, "/api", "1.00")
        client = zeep.Client(wsdl, transport=SecureTransport(session))
        assert client.service.GetBalance(account="Z") == "1.00"  # no entry at all
        (post,) = posts(plain, "/api/endpoint")
        assert b"Security" not in post.body
    registry.close()


def test_the_transport_needs_a_secure_session() -> None:
    import requests

    with requests.Session() as plain, pytest.raises(TypeError, match="needs a SecureSession"):
        SecureTransport(plain)  # type: ignore[arg-type]


def test_wsse_credential_picks_the_wsse_role() -> None:
    url = "https://soap.example/svc"
    assert wsse_credential(ServiceEntry(url=url, gateway=Credential("g", "g-SECRET"))) is None
    request_wsse = ServiceEntry(url=url, request=Credential(*ALICE), request_auth="wsse")
    assert wsse_credential(request_wsse) == Credential(*ALICE)
    gateway_wsse = ServiceEntry(
        url=url, gateway=Credential(*BOB), gateway_auth="wsse", request=Credential(*BOB_HTTP)
    )
    assert wsse_credential(gateway_wsse) == Credential(*BOB)
