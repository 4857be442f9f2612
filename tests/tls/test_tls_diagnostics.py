"""Handshake failures explained: each maps to its TLSHandshakeError subclass."""

from __future__ import annotations

import ipaddress
import logging
import ssl
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from securesession import Registry, SecureSession, ServiceEntry, TLSHandshakeError
from securesession._exceptions import (
    ClientCertificateRejectedError,
    ClientCertificateRequiredError,
    ProtocolVersionMismatchError,
    ServerCertificateError,
)
from securesession.testing import CertificateAuthority, GatewayServer, IssuedCert

from .tls_helpers import issue, pfx

Gateway = Callable[..., GatewayServer]
Put = Callable[..., ServiceEntry]
TLS12, TLS13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3


def test_tls12_pin_against_a_tls13_only_server(
    ca: CertificateAuthority, gateway: Gateway, put: Put, session: SecureSession
) -> None:
    server = gateway(require_client_cert=True, tls_versions=(TLS13, TLS13))
    put(server.url, client_cert=pfx(issue(ca, "v12")), ca_bundle=ca.cert_pem, version="1.2")
    with pytest.raises(ProtocolVersionMismatchError) as info:
        session.get(server.url + "/x")
    message = str(info.value)
    assert "this entry allows TLS 1.2 only" in message
    assert "the server accepts TLS 1.3 only" in message
    assert "include TLS 1.3" in message
    assert info.value.ours == ("1.2",) and info.value.theirs == ("1.3",)


def test_tls13_pin_against_a_tls12_only_server(
    ca: CertificateAuthority, gateway: Gateway, put: Put, session: SecureSession
) -> None:
    server = gateway(tls_versions=(TLS12, TLS12))
    put(server.url, ca_bundle=ca.cert_pem, version="1.3")
    with pytest.raises(ProtocolVersionMismatchError, match=r"accepts TLS 1\.2 only") as info:
        session.get(server.url + "/x")
    assert info.value.theirs == ("1.2",)


@pytest.mark.parametrize("version", [TLS12, TLS13], ids=["tls1.2", "tls1.3"])
def test_missing_client_certificate(
    ca: CertificateAuthority,
    gateway: Gateway,
    put: Put,
    session: SecureSession,
    version: ssl.TLSVersion,
) -> None:
    server = gateway(require_client_cert=True, tls_versions=(version, version))
    put(server.url, ca_bundle=ca.cert_pem)
    with pytest.raises(ClientCertificateRequiredError, match="demands a client certificate"):
        session.get(server.url + "/x")
    assert server.requests == []


def test_missing_client_certificate_on_an_entry_without_profile(
    gateway: Gateway, registry: Registry, session: SecureSession, ca_file: str
) -> None:
    server = gateway(require_client_cert=True)
    registry.put(ServiceEntry(url=server.url + "/api"))
    with pytest.raises(ClientCertificateRequiredError, match="has none configured"):
        session.get(server.url + "/api/x", verify=ca_file)


@pytest.mark.parametrize("version", [TLS12, TLS13], ids=["tls1.2", "tls1.3"])
def test_revoked_client_certificate(
    ca: CertificateAuthority,
    gateway: Gateway,
    put: Put,
    session: SecureSession,
    version: ssl.TLSVersion,
) -> None:
    revoked = issue(ca, "revoked-client")
    server = gateway(
        require_client_cert=True, crl_pem=ca.crl([revoked]), tls_versions=(version, version)
    )
    put(server.url, client_cert=pfx(revoked), ca_bundle=ca.cert_pem)
    with pytest.raises(ClientCertificateRejectedError, match="reports the certificate as revoked"):
        session.get(server.url + "/x")
    put(server.url, client_cert=pfx(issue(ca, "fresh-client")), ca_bundle=ca.cert_pem)
    assert session.get(server.url + "/x").status_code == 200  # the CRL is checked, not broken


def test_client_certificate_from_an_unknown_ca(
    ca: CertificateAuthority,
    other_ca: CertificateAuthority,
    gateway: Gateway,
    put: Put,
    session: SecureSession,
) -> None:
    server = gateway(require_client_cert=True)
    put(server.url, client_cert=pfx(issue(other_ca, "stranger")), ca_bundle=ca.cert_pem)
    with pytest.raises(ClientCertificateRejectedError) as info:
        session.get(server.url + "/x")
    assert info.value.reason == "unknown_ca"
    assert "CN=some other CA" in str(info.value)


def test_untrusted_server_certificate(
    other_ca: CertificateAuthority, gateway: Gateway, put: Put, session: SecureSession
) -> None:
    server = gateway()
    put(server.url, ca_bundle=other_ca.cert_pem)
    with pytest.raises(ServerCertificateError, match="entry's CA bundle") as info:
        session.get(server.url + "/x")
    assert info.value.verify_code in (19, 20)
    assert server.requests == []


def test_server_certificate_for_another_host(
    ca: CertificateAuthority, gateway: Gateway, put: Put, session: SecureSession
) -> None:
    server = gateway(server_cert=ca.issue_server(("gateway.internal",)))
    put(server.url, ca_bundle=ca.cert_pem)
    with pytest.raises(ServerCertificateError, match="does not name the IP address") as info:
        session.get(server.url + "/x")
    assert info.value.verify_code == 64


def test_server_certificate_revoked_by_the_entry_crl(
    ca: CertificateAuthority, gateway: Gateway, put: Put, session: SecureSession
) -> None:
    server_cert = ca.issue_server()
    server = gateway(server_cert=server_cert)
    put(server.url + "/a", ca_bundle=ca.cert_pem, crl=ca.crl([server_cert]))
    put(server.url + "/b", ca_bundle=ca.cert_pem, crl=ca.crl())
    with pytest.raises(ServerCertificateError, match="lists the server certificate as revoked"):
        session.get(server.url + "/a")
    assert session.get(server.url + "/b").status_code == 200


def _server_cert_with_crl_point(ca: CertificateAuthority) -> IssuedCert:
    """A server certificate naming a CRL distribution point (the test CA adds none)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(timezone.utc)
    point = x509.DistributionPoint(
        full_name=[x509.UniformResourceIdentifier("http://crl.invalid/ca.crl")],
        relative_name=None,
        reasons=None,
        crl_issuer=None,
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.CRLDistributionPoints([point]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return IssuedCert(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        ca_pem=ca.cert_pem,
        serial=cert.serial_number,
        subject_cn="127.0.0.1",
    )


def test_unchecked_crl_distribution_point_warns_unless_opted_out(
    ca: CertificateAuthority,
    gateway: Gateway,
    put: Put,
    session: SecureSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = gateway(server_cert=_server_cert_with_crl_point(ca))
    put(server.url + "/checked", ca_bundle=ca.cert_pem)
    put(server.url + "/opted-out", ca_bundle=ca.cert_pem, check_revocation=False)
    with caplog.at_level(logging.WARNING, logger="securesession"):
        session.get(server.url + "/opted-out")
        session.get(server.url + "/checked")
        session.adapter.poolmanager.clear()
        session.get(server.url + "/checked")  # same context, new connection: no warning
        session.adapter.close()  # forgets the context: a new one warns again
        session.get(server.url + "/checked")
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2  # closing the adapter forgot the context: a new one warns again
    assert "http://crl.invalid/ca.crl" in warnings[0] and "check_revocation=False" in warnings[0]


@pytest.mark.parametrize(
    ("substatus", "words"),
    [(7, "client certificate required"), (13, "revoked"), (16, "untrusted")],
)
def test_iis_client_certificate_substatus_is_logged_by_name(
    ca: CertificateAuthority,
    gateway: Gateway,
    put: Put,
    session: SecureSession,
    caplog: pytest.LogCaptureFixture,
    substatus: int,
    words: str,
) -> None:
    server = gateway()
    server.forbid("/iis", substatus)
    put(server.url, ca_bundle=ca.cert_pem)
    with caplog.at_level(logging.WARNING, logger="securesession"):
        response = session.get(server.url + "/iis/page?token=abc")
    assert response.status_code == 403
    assert f"403.{substatus} - Forbidden" in response.text  # the body is still there
    (message,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert f"HTTP 403.{substatus}" in message and words in message
    assert "token=abc" not in message


def test_iis_substatus_found_in_the_body_only(
    ca: CertificateAuthority,
    gateway: Gateway,
    put: Put,
    session: SecureSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = gateway()
    server.respond("/page", 403, body="<h2>HTTP Error 403.7 - Forbidden</h2>")
    put(server.url, ca_bundle=ca.cert_pem)
    with caplog.at_level(logging.WARNING, logger="securesession"):
        session.get(server.url + "/page", stream=True)
    assert any("HTTP 403.7" in r.getMessage() for r in caplog.records)


def test_url_without_entry_keeps_requests_exceptions(
    gateway: Gateway, session: SecureSession
) -> None:
    server = gateway()
    with pytest.raises(requests.exceptions.SSLError) as info:
        session.get(server.url + "/x")  # the test CA is not in the default store
    assert not isinstance(info.value, TLSHandshakeError)
