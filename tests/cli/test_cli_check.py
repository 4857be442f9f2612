"""``check`` sends no request, whatever fails: in-process, against loopback gateways
that record every request they receive.

Each failure path below must end with the handshake's diagnosis and an empty record:
no HTTP request, so none of the entry's credentials, ever leaves (the diagnosis may
handshake again, and nothing more).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import requests

from securesession import (
    ClientCertificate,
    Credential,
    MasterKey,
    Registry,
    ServiceEntry,
    TLSProfile,
    open_registry,
)
from securesession.cli import _check
from securesession.testing import CertificateAuthority, GatewayServer

GW = ("gw-user", "gwSECRET-check")
REQ = ("alice", "reqSECRET-check")
UNLOCK = "pfxSECRET-check"
WRONG_PIN = "sha256/" + "A" * 43 + "="


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority("check test CA")


@pytest.fixture(scope="module")
def mtls(ca: CertificateAuthority) -> Iterator[GatewayServer]:
    with GatewayServer(tls=True, ca=ca, require_client_cert=True) as server:
        yield server


@pytest.fixture(scope="module")
def tls12_only(ca: CertificateAuthority) -> Iterator[GatewayServer]:
    versions = (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2)
    with GatewayServer(tls=True, ca=ca, tls_versions=versions) as server:
        yield server


@pytest.fixture
def registry() -> Iterator[Registry]:
    registry = open_registry("memory://", MasterKey.generate())
    yield registry
    registry.close()


@pytest.fixture(autouse=True)
def no_http(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail loudly if anything in ``check`` reaches for the HTTP stack."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("check sent an HTTP request")

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", refuse)


def _client_cert(ca: CertificateAuthority, *, expired: bool = False) -> ClientCertificate:
    now = datetime.now(timezone.utc)
    if expired:
        client = ca.issue_client(
            "check-expired", not_before=now - timedelta(days=30), not_after=now - timedelta(days=1)
        )
    else:
        client = ca.issue_client("check-client")
    return ClientCertificate.from_pkcs12(client.pkcs12(UNLOCK.encode()), UNLOCK)


def _put(registry: Registry, url: str, profile: TLSProfile) -> None:
    registry.put(ServiceEntry(url, gateway=Credential(*GW), request=Credential(*REQ), tls=profile))


def _check_fails(registry: Registry, server: GatewayServer, url: str, wanted: str) -> None:
    server.reset()
    result = _check.run_check(registry, url, timeout=5)
    assert result["ok"] is False, result
    assert wanted in result["error"], result["error"]
    assert server.requests == []


def test_no_request_when_the_server_demands_a_certificate(
    registry: Registry, ca: CertificateAuthority, mtls: GatewayServer
) -> None:
    _put(registry, mtls.url + "/nocert", TLSProfile(ca_bundle=ca.cert_pem))
    _check_fails(registry, mtls, mtls.url + "/nocert/x", "demands a client certificate")


def test_no_request_when_the_server_rejects_our_certificate(
    registry: Registry, ca: CertificateAuthority, mtls: GatewayServer
) -> None:
    stranger = _client_cert(CertificateAuthority("a CA the gateway does not know"))
    _put(registry, mtls.url + "/stranger", TLSProfile(client_cert=stranger, ca_bundle=ca.cert_pem))
    _check_fails(registry, mtls, mtls.url + "/stranger/x", "rejected our client certificate")


def test_no_request_when_the_server_certificate_is_untrusted(
    registry: Registry, ca: CertificateAuthority, mtls: GatewayServer
) -> None:
    _put(registry, mtls.url + "/untrusted", TLSProfile(client_cert=_client_cert(ca)))
    _check_fails(registry, mtls, mtls.url + "/untrusted/x", "was not accepted")


def test_no_request_when_no_pin_matches(
    registry: Registry, ca: CertificateAuthority, mtls: GatewayServer
) -> None:
    profile = TLSProfile(client_cert=_client_cert(ca), ca_bundle=ca.cert_pem, pins=(WRONG_PIN,))
    _put(registry, mtls.url + "/pinned", profile)
    _check_fails(registry, mtls, mtls.url + "/pinned/x", "none of the entry's pins")


def test_no_request_when_no_tls_version_is_common(
    registry: Registry, ca: CertificateAuthority, tls12_only: GatewayServer
) -> None:
    _put(registry, tls12_only.url + "/v13", TLSProfile(ca_bundle=ca.cert_pem, version="1.3"))
    _check_fails(registry, tls12_only, tls12_only.url + "/v13/x", "no TLS version in common")


def test_no_request_when_our_certificate_has_expired(
    registry: Registry, ca: CertificateAuthority, mtls: GatewayServer
) -> None:
    expired = _client_cert(ca, expired=True)
    _put(registry, mtls.url + "/expired", TLSProfile(client_cert=expired, ca_bundle=ca.cert_pem))
    _check_fails(registry, mtls, mtls.url + "/expired/x", "has expired")
    assert mtls.connections == 0  # refused before connecting


def test_no_request_for_a_url_without_an_entry(registry: Registry, mtls: GatewayServer) -> None:
    _check_fails(registry, mtls, mtls.url + "/elsewhere", "not accepted")


def test_no_request_when_the_server_drops_the_connection_after_the_handshake(
    registry: Registry,
    ca: CertificateAuthority,
    mtls: GatewayServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The failure that used to be diagnosed by sending the request: a server that
    drops the connection once the handshake is done, and would take a request on
    the next one. The diagnosis asks the server again with a handshake and stops."""

    def dropped(sock: ssl.SSLSocket) -> None:
        raise ConnectionResetError(104, "Connection reset by peer")

    monkeypatch.setattr(_check, "_await_verdict", dropped)
    _put(
        registry,
        mtls.url + "/dropped",
        TLSProfile(client_cert=_client_cert(ca), ca_bundle=ca.cert_pem),
    )
    _check_fails(registry, mtls, mtls.url + "/dropped/x", "Connection reset by peer")
    assert mtls.handshakes >= 2  # our handshake, then the diagnosis's probe: no request
