"""Tests of the test harness itself: throw-away PKI, GatewayServer, SilentServer."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import logging
import socket
import ssl
import stat
import time
import warnings
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from securesession import ClientCertificate, SecureSession, TLSProfile
from securesession._tls import EXPIRY_WARNING_DAYS
from securesession.testing import (
    CertificateAuthority,
    GatewayServer,
    IssuedCert,
    RecordedRequest,
    SilentServer,
    StubRegistry,
    _certs,
)

from .private_writes import spy_private_writes, umask_zero


def _wait_until(predicate: Callable[[], bool], timeout: float = 2.0) -> bool:
    """Poll ``predicate``: server threads may record an error just after the client gave up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def _ca_file(server: GatewayServer, directory: Path) -> str:
    path = directory / "trusted-ca.pem"
    path.write_bytes(server.ca_pem)
    return str(path)


def _client_files(cert: IssuedCert, directory: Path) -> tuple[str, str]:
    cert_path, key_path = cert.write_pem(directory)
    return str(cert_path), str(key_path)


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority()


@pytest.fixture
def http_server() -> Iterator[GatewayServer]:
    with GatewayServer() as server:
        yield server


# -- certificates --------------------------------------------------------------


def test_issue_server_sans_and_eku(ca: CertificateAuthority) -> None:
    issued = ca.issue_server(("127.0.0.1", "localhost", "::1"))
    cert = x509.load_pem_x509_certificate(issued.cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]
    assert cert.serial_number == issued.serial
    assert issued.subject_cn == "127.0.0.1"
    assert issued.chain_pem == issued.cert_pem + ca.cert_pem
    # Signed by the CA.
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.cert_pem))


def test_issue_client_eku_and_expired_window(ca: CertificateAuthority) -> None:
    past = datetime.now(timezone.utc) - timedelta(days=2)
    issued = ca.issue_client("alice", not_after=past)
    cert = issued.certificate
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.not_valid_after_utc == past.replace(microsecond=0)
    assert cert.not_valid_before_utc < cert.not_valid_after_utc
    assert cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value == "alice"


def test_default_validity_is_clear_of_the_expiry_warning(ca: CertificateAuthority) -> None:
    now = datetime.now(timezone.utc)
    for issued in (ca.issue_client("default-client"), ca.issue_server()):
        lifetime = issued.certificate.not_valid_after_utc - now
        assert lifetime > timedelta(days=EXPIRY_WARNING_DAYS + 300)
        # The CA outlives what it issues by default.
        assert issued.certificate.not_valid_after_utc <= ca.cert.not_valid_after_utc
    explicit = ca.issue_client("short", not_after=now + timedelta(days=3))
    assert explicit.certificate.not_valid_after_utc == (now + timedelta(days=3)).replace(
        microsecond=0
    )


def _expiry_warnings(
    ca: CertificateAuthority, issued: IssuedCert, caplog: pytest.LogCaptureFixture
) -> list[str]:
    """Send one request through SecureSession with *issued* as the entry's client
    certificate; return the expiry warnings logged."""
    password = "pfx-SECRET"
    profile = TLSProfile(
        client_cert=ClientCertificate.from_pkcs12(issued.pkcs12(password.encode()), password),
        ca_bundle=ca.cert_pem,
    )
    with GatewayServer(tls=True, ca=ca, require_client_cert=True) as server:
        registry = StubRegistry({server.url: {"gateway": ("gw", "gw-SECRET"), "tls": profile}})
        caplog.clear()
        with (
            caplog.at_level(logging.WARNING, logger="securesession"),
            SecureSession(registry) as session,
        ):
            assert session.get(server.url + "/x", timeout=5).status_code == 200
        assert server.requests[-1].client_cert_subject_cn == issued.subject_cn
    return [r.getMessage() for r in caplog.records if "expires in" in r.getMessage()]


def test_a_default_client_certificate_logs_no_expiry_warning(
    ca: CertificateAuthority, caplog: pytest.LogCaptureFixture
) -> None:
    assert _expiry_warnings(ca, ca.issue_client("default-client"), caplog) == []
    soon = ca.issue_client("soon-client", not_after=datetime.now(timezone.utc) + timedelta(days=10))
    (warning,) = _expiry_warnings(ca, soon, caplog)
    assert "CN=soon-client" in warning
    assert "expires in 10 day(s); renew it" in warning


def test_spki_pin_matches_independent_digest(ca: CertificateAuthority) -> None:
    with GatewayServer(tls=True, ca=ca) as server:
        # Fetch what the server really presents on the wire.
        context = ssl.create_default_context(cadata=server.ca_pem.decode())
        with (
            socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            der = tls.getpeercert(binary_form=True)
        assert der is not None
        assert server.server_cert is not None
        pin = server.server_cert.spki_sha256_pin
    spki = (
        x509.load_der_x509_certificate(der)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    expected = "sha256/" + base64.b64encode(hashlib.sha256(spki).digest()).decode()
    assert pin == expected
    assert ca.spki_sha256_pin != expected


@pytest.mark.parametrize("legacy", [False, True])
def test_pkcs12_round_trip(ca: CertificateAuthority, legacy: bool) -> None:
    issued = ca.issue_client("p12-user")
    blob = issued.pkcs12(b"s3cret", legacy=legacy)
    key, cert, extra = pkcs12.load_key_and_certificates(blob, b"s3cret")
    assert key is not None
    assert cert is not None
    assert cert.public_bytes(serialization.Encoding.PEM) == issued.cert_pem
    assert key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == issued.certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert [c.public_bytes(serialization.Encoding.PEM) for c in extra] == [ca.cert_pem]
    assert pkcs12.load_pkcs12(blob, b"s3cret").cert is not None
    with pytest.raises(ValueError, match=r"(?i)password|invalid|decrypt"):
        pkcs12.load_key_and_certificates(blob, b"wrong")


def test_encrypted_key_round_trip(ca: CertificateAuthority) -> None:
    issued = ca.issue_client("enc-user")
    pem = issued.encrypted_key_pem(b"passphrase")
    assert b"ENCRYPTED PRIVATE KEY" in pem
    key = serialization.load_pem_private_key(pem, password=b"passphrase")
    assert (
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        == issued.key_pem
    )
    with pytest.raises((ValueError, TypeError)):
        serialization.load_pem_private_key(pem, password=b"nope")


def test_crl_is_signed_and_lists_revoked(ca: CertificateAuthority) -> None:
    revoked = ca.issue_client("mallory")
    kept = ca.issue_client("alice")
    crl = x509.load_pem_x509_crl(ca.crl([revoked]))
    assert crl.is_signature_valid(ca.key.public_key())
    assert crl.get_revoked_certificate_by_serial_number(revoked.serial) is not None
    assert crl.get_revoked_certificate_by_serial_number(kept.serial) is None


def test_repr_has_no_key_material(ca: CertificateAuthority) -> None:
    issued = ca.issue_client("repr-user")
    for text in (repr(ca), repr(issued), str(issued)):
        assert "PRIVATE KEY" not in text
        assert "BEGIN" not in text
    assert "repr-user" in repr(issued)


def test_write_pem_key_is_private(
    ca: CertificateAuthority, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key goes through the library's one private-file writer: 0600 from its first
    byte whatever the umask, and written again (the same serial) it is replaced."""
    writes = spy_private_writes(monkeypatch, _certs)
    issued = ca.issue_client("file-user")
    with umask_zero():
        for _ in range(2):
            cert_path, key_path = issued.write_pem(tmp_path)
    assert cert_path.read_bytes() == issued.cert_pem
    assert key_path.read_bytes() == issued.key_pem
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert [(w.path, w.overwrite, w.existed, w.mode) for w in writes] == [
        (key_path, True, False, 0o600),
        (key_path, True, True, 0o600),
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == [cert_path.name, key_path.name]


def test_write_pem_never_writes_the_key_through_a_planted_symlink(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    issued = ca.issue_client("symlink-user")
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (tmp_path / f"key-{issued.serial:x}.pem").symlink_to(victim)
    _, key_path = issued.write_pem(tmp_path)
    assert victim.read_bytes() == b"precious"
    assert not key_path.is_symlink() and key_path.read_bytes() == issued.key_pem
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600


# -- plain HTTP ----------------------------------------------------------------


def test_http_default_echo_and_record(http_server: GatewayServer) -> None:
    assert http_server.url == f"http://127.0.0.1:{http_server.port}"
    response = requests.post(
        http_server.url + "/echo?x=1", data=b"payload", headers={"X-Custom": "v"}, timeout=5
    )
    assert response.status_code == 200
    assert response.json() == {"method": "POST", "path": "/echo?x=1"}
    (record,) = http_server.requests
    assert isinstance(record, RecordedRequest)
    assert record.method == "POST"
    assert record.path == "/echo?x=1"
    assert record.body == b"payload"
    assert record.headers["X-Custom"] == "v"
    assert record.header("x-custom") == "v"
    assert record.header("missing", "d") == "d"
    assert record.client_cert_subject_cn is None
    assert record.tls_version is None
    assert record.status == 200
    assert record.connection_id >= 1
    assert record.peer_port > 0
    http_server.reset()
    assert http_server.requests == []
    assert http_server.connections == 0


def test_http_chunked_body_and_keepalive(http_server: GatewayServer) -> None:
    with requests.Session() as session:
        response = session.put(http_server.url + "/up", data=iter([b"ab", b"cd", b"ef"]), timeout=5)
        assert response.status_code == 200
        session.get(http_server.url + "/after", timeout=5)
    first, second = http_server.requests
    assert first.header("Transfer-Encoding") == "chunked"
    assert first.body == b"abcdef"
    # The body was consumed fully, so the same connection served the next request.
    assert second.path == "/after"
    assert second.connection_id == first.connection_id
    assert http_server.connections == 1


def test_tls_only_options_need_tls() -> None:
    with pytest.raises(ValueError, match="require_client_cert"):
        GatewayServer(require_client_cert=True)
    with pytest.raises(RuntimeError):
        GatewayServer().ca_pem  # noqa: B018 - property access is the test


# -- credentials -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status", "reason"),
    [
        ({}, 401, "missing"),
        ({"X-Gateway-User": "gw"}, 401, "missing"),
        ({"X-Gateway-User": "gw", "X-Gateway-Password": "wrong"}, 401, "mismatch"),
        ({"X-Gateway-User": "other", "X-Gateway-Password": "gw-pass"}, 401, "mismatch"),
        ({"x-gateway-user": "gw", "x-gateway-password": "gw-pass"}, 200, None),
    ],
)
def test_gateway_header_check(headers: dict[str, str], status: int, reason: str | None) -> None:
    with GatewayServer(expect_gateway=("gw", "gw-pass")) as server:
        response = requests.get(server.url + "/svc", headers=headers, timeout=5)
    assert response.status_code == status
    if reason is not None:
        assert response.headers["WWW-Authenticate"] == 'Basic realm="gateway"'
        body = response.json()
        assert body["check"] == "gateway"
        assert body["reason"] == reason
        assert "gw-pass" not in response.text
        assert "wrong" not in response.text
    assert server.requests[-1].status == status


def test_custom_gateway_header_names() -> None:
    with GatewayServer(expect_gateway=("u", "p"), gateway_headers=("X-Api-User", "X-Api-Key")) as s:
        ok = requests.get(s.url, headers={"X-Api-User": "u", "X-Api-Key": "p"}, timeout=5)
        default_names = requests.get(
            s.url, headers={"X-Gateway-User": "u", "X-Gateway-Password": "p"}, timeout=5
        )
    assert ok.status_code == 200
    assert default_names.status_code == 401
    # The redacting repr keeps the key out of failure output.
    assert "'p'" not in repr(s.requests[0])


def test_request_basic_auth_check() -> None:
    with GatewayServer(expect_request=("alice", "pw")) as server:
        right = requests.get(server.url, auth=("alice", "pw"), timeout=5)
        wrong = requests.get(server.url, auth=("alice", "nope"), timeout=5)
        missing = requests.get(server.url, timeout=5)
        malformed = requests.get(server.url, headers={"Authorization": "Basic !!!"}, timeout=5)
        bearer = requests.get(server.url, headers={"Authorization": "Bearer x"}, timeout=5)
    assert right.status_code == 200
    assert [r.status_code for r in (wrong, missing, malformed, bearer)] == [401] * 4
    assert wrong.json() == {
        "error": "unauthorized",
        "check": "request",
        "reason": "mismatch",
        "detail": "HTTP Basic credentials mismatch",
    }
    assert missing.json()["reason"] == "missing"
    assert malformed.json()["reason"] == "malformed"
    assert bearer.json()["reason"] == "malformed"
    assert "nope" not in wrong.text
    # The redacting repr keeps credentials out of assertion messages.
    token = base64.b64encode(b"alice:pw").decode()
    assert token in server.requests[0].headers["Authorization"]
    assert token not in repr(server.requests[0])
    assert "<redacted>" in repr(server.requests[0])


def test_both_checks_gateway_first() -> None:
    with GatewayServer(expect_gateway=("gw", "gp"), expect_request=("u", "p")) as server:
        good_gateway = {"X-Gateway-User": "gw", "X-Gateway-Password": "gp"}
        only_request = requests.get(server.url, auth=("u", "p"), timeout=5)
        only_gateway = requests.get(server.url, headers=good_gateway, timeout=5)
        both = requests.get(server.url, headers=good_gateway, auth=("u", "p"), timeout=5)
    assert only_request.json()["check"] == "gateway"
    assert only_gateway.json()["check"] == "request"
    assert both.status_code == 200


# -- routes ------------------------------------------------------------------------


def test_respond_longest_prefix_and_head(http_server: GatewayServer) -> None:
    http_server.respond("/api", 201, body=b"generic", headers={"Content-Type": "text/plain"})
    http_server.respond("/api/special", 418, body="teapot")
    generic = requests.get(http_server.url + "/api/x", timeout=5)
    special = requests.get(http_server.url + "/api/special/y", timeout=5)
    head = requests.head(http_server.url + "/api/x", timeout=5)
    assert (generic.status_code, generic.text) == (201, "generic")
    assert generic.headers["Content-Type"] == "text/plain"
    assert (special.status_code, special.text) == (418, "teapot")
    assert head.status_code == 201
    assert head.content == b""
    assert head.headers["Content-Length"] == "7"
    http_server.respond("/api", 202)  # a later rule for the same prefix wins
    assert requests.get(http_server.url + "/api/x", timeout=5).status_code == 202
    http_server.clear_routes()
    assert requests.get(http_server.url + "/api/x", timeout=5).status_code == 200


def test_redirect(http_server: GatewayServer) -> None:
    http_server.redirect("/old", "/new", status=301)
    raw = requests.get(http_server.url + "/old/page", allow_redirects=False, timeout=5)
    assert raw.status_code == 301
    assert raw.headers["Location"] == "/new"
    followed = requests.get(http_server.url + "/old/page", timeout=5)
    assert followed.status_code == 200
    assert followed.json()["path"] == "/new"
    assert [r.path for r in http_server.requests] == ["/old/page", "/old/page", "/new"]


@pytest.mark.parametrize(
    ("substatus", "text"),
    [
        (7, "403.7 - Forbidden: Client certificate required"),
        (13, "403.13 - Forbidden: Client certificate revoked"),
        (16, "403.16 - Forbidden: Client certificate is untrusted or invalid"),
    ],
)
def test_forbid_iis_substatus(substatus: int, text: str) -> None:
    # Forbid rules apply before credential checks, as IIS SSL settings do.
    with GatewayServer(expect_request=("u", "p")) as server:
        server.forbid("/secure", substatus)
        response = requests.get(server.url + "/secure/thing", timeout=5)
        other = requests.get(server.url + "/open", auth=("u", "p"), timeout=5)
    assert response.status_code == 403
    assert response.headers["X-IIS-SubStatus"] == str(substatus)
    assert text in response.text
    assert other.status_code == 200


# -- TLS -----------------------------------------------------------------------------


def test_https_server_trust(ca: CertificateAuthority, tmp_path: Path) -> None:
    with GatewayServer(tls=True, ca=ca) as server:
        assert server.url.startswith("https://127.0.0.1:")
        assert server.ca_pem == ca.cert_pem
        response = requests.get(server.url + "/x", verify=_ca_file(server, tmp_path), timeout=5)
        assert response.status_code == 200
        record = server.requests[-1]
        assert record.tls_version in ("TLSv1.2", "TLSv1.3")
        assert record.client_cert_subject_cn is None
        # A client trusting some other CA refuses the server certificate.
        other = tmp_path / "other-ca.pem"
        other.write_bytes(CertificateAuthority("other").cert_pem)
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(server.url, verify=str(other), timeout=5)
        assert _wait_until(lambda: any("TLS handshake failed" in e for e in server.errors))


def test_client_cert_required(ca: CertificateAuthority, tmp_path: Path) -> None:
    client = ca.issue_client("svc-client")
    with GatewayServer(tls=True, ca=ca, require_client_cert=True) as server:
        verify = _ca_file(server, tmp_path)
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(server.url, verify=verify, timeout=5)
        assert server.requests == []
        response = requests.get(
            server.url + "/mtls", verify=verify, cert=_client_files(client, tmp_path), timeout=5
        )
        assert response.status_code == 200
        assert server.requests[-1].client_cert_subject_cn == "svc-client"
        assert _wait_until(lambda: len(server.errors) >= 1)


def test_optional_client_cert_is_recorded(ca: CertificateAuthority, tmp_path: Path) -> None:
    client = ca.issue_client("optional-client")
    with GatewayServer(tls=True, ca=ca) as server:
        verify = _ca_file(server, tmp_path)
        requests.get(server.url, verify=verify, cert=_client_files(client, tmp_path), timeout=5)
        requests.get(server.url, verify=verify, timeout=5)
    assert [r.client_cert_subject_cn for r in server.requests] == ["optional-client", None]


def test_client_cert_from_untrusted_ca_rejected(tmp_path: Path, ca: CertificateAuthority) -> None:
    stranger = CertificateAuthority("stranger CA").issue_client("stranger")
    with GatewayServer(tls=True, ca=ca, require_client_cert=True) as server:
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(
                server.url,
                verify=_ca_file(server, tmp_path),
                cert=_client_files(stranger, tmp_path),
                timeout=5,
            )
        assert _wait_until(lambda: len(server.errors) == 1)
    assert server.requests == []


def test_expired_client_cert_rejected(ca: CertificateAuthority, tmp_path: Path) -> None:
    expired = ca.issue_client("expired", not_after=datetime.now(timezone.utc) - timedelta(hours=1))
    with GatewayServer(tls=True, ca=ca, require_client_cert=True) as server:
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(
                server.url,
                verify=_ca_file(server, tmp_path),
                cert=_client_files(expired, tmp_path),
                timeout=5,
            )
        assert _wait_until(lambda: any("expired" in e for e in server.errors))


def test_crl_rejects_revoked_client(ca: CertificateAuthority, tmp_path: Path) -> None:
    revoked = ca.issue_client("revoked-client")
    good = ca.issue_client("good-client")
    with GatewayServer(
        tls=True, ca=ca, require_client_cert=True, crl_pem=ca.crl([revoked])
    ) as server:
        verify = _ca_file(server, tmp_path)
        ok = requests.get(server.url, verify=verify, cert=_client_files(good, tmp_path), timeout=5)
        assert ok.status_code == 200
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(
                server.url, verify=verify, cert=_client_files(revoked, tmp_path), timeout=5
            )
        assert _wait_until(lambda: any("revoked" in e for e in server.errors))
    assert [r.client_cert_subject_cn for r in server.requests] == ["good-client"]


def test_tls_version_limits(ca: CertificateAuthority, tmp_path: Path) -> None:
    versions = (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2)
    with GatewayServer(tls=True, ca=ca, tls_versions=versions) as server:
        requests.get(server.url, verify=_ca_file(server, tmp_path), timeout=5)
        assert server.requests[-1].tls_version == "TLSv1.2"
        context = ssl.create_default_context(cadata=server.ca_pem.decode())
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        with (
            socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw,
            pytest.raises(ssl.SSLError),
        ):
            context.wrap_socket(raw, server_hostname="127.0.0.1")


def test_legacy_mode_offers_tls10_where_openssl_permits(ca: CertificateAuthority) -> None:
    with GatewayServer(tls=True, ca=ca, legacy=True) as server:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            context = ssl.create_default_context(cadata=server.ca_pem.decode())
            context.set_ciphers("DEFAULT:@SECLEVEL=0")
            context.minimum_version = ssl.TLSVersion.TLSv1
            context.maximum_version = ssl.TLSVersion.TLSv1
        try:
            with (
                socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw,
                context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
            ):
                tls.sendall(b"GET /old HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                head = tls.recv(64)
        except ssl.SSLError as exc:
            pytest.skip(f"this OpenSSL build refuses TLS 1.0: {exc}")
        assert head.startswith(b"HTTP/1.1 200")
        assert server.requests[-1].tls_version == "TLSv1"


def test_handshake_count_with_keepalive(ca: CertificateAuthority, tmp_path: Path) -> None:
    client = ca.issue_client("keepalive-client")
    with GatewayServer(tls=True, ca=ca, require_client_cert=True) as server:
        verify = _ca_file(server, tmp_path)
        cert = _client_files(client, tmp_path)
        with requests.Session() as session:
            # verify per request: a session-level verify loses to REQUESTS_CA_BUNDLE.
            session.cert = cert
            for i in range(50):
                response = session.get(f"{server.url}/n/{i}", verify=verify, timeout=5)
                assert response.status_code == 200
        assert server.handshakes == 1
        assert server.connections == 1
        records = server.requests
        assert len(records) == 50
        assert len({r.connection_id for r in records}) == 1
        assert {r.client_cert_subject_cn for r in records} == {"keepalive-client"}
        with requests.Session() as other:
            other.get(server.url, verify=verify, cert=cert, timeout=5)
        assert server.handshakes == 2
        server.reset()
        assert (server.handshakes, server.requests, server.errors) == (0, [], [])


def test_handshake_errors_are_quiet(
    ca: CertificateAuthority, capfd: pytest.CaptureFixture[str]
) -> None:
    with GatewayServer(tls=True, ca=ca, require_client_cert=True) as server:
        # Plain HTTP to a TLS port, then a bare connect-and-close.
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(f"http://127.0.0.1:{server.port}/", timeout=5)
        socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
        assert _wait_until(lambda: len(server.errors) >= 2)
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err
    assert captured.err == ""


def test_stop_closes_idle_keepalive_connections(http_server: GatewayServer) -> None:
    session = requests.Session()
    session.get(http_server.url, timeout=5)  # leaves an idle pooled connection
    started = time.monotonic()
    http_server.stop()
    assert time.monotonic() - started < 2
    http_server.stop()  # idempotent
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(http_server.url, timeout=2)
    session.close()


def test_json_echo_is_valid_json(http_server: GatewayServer) -> None:
    raw = requests.delete(http_server.url + "/item/1", timeout=5)
    assert json.loads(raw.content) == {"method": "DELETE", "path": "/item/1"}
    assert raw.headers["Content-Type"] == "application/json"


# -- silent server ------------------------------------------------------------


def test_silent_server_times_out_clients() -> None:
    with SilentServer() as silent:
        assert silent.url == f"http://127.0.0.1:{silent.port}"
        started = time.monotonic()
        with pytest.raises(requests.exceptions.ReadTimeout):
            requests.get(silent.url, timeout=(2, 0.2))
        with pytest.raises(requests.exceptions.Timeout):
            # TLS: the ServerHello never comes; urllib3 counts the handshake
            # against the connect timeout, so keep both short.
            requests.get(silent.https_url, timeout=0.2)
        assert time.monotonic() - started < 3
        assert _wait_until(lambda: silent.connections >= 2)
