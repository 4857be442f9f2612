"""Mutual TLS end to end: SecureSession and SecureAdapter against loopback TLS gateways."""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from requests.adapters import HTTPAdapter

from securesession import (
    Credential,
    Registry,
    SecureSession,
    ServiceEntry,
    TLSConfigError,
)
from securesession._exceptions import (
    ClientCertificateExpiredError,
    PinMismatchError,
    ServerCertificateError,
)
from securesession._tls import ClientCertificate, TLSProfile
from securesession.testing import CertificateAuthority, GatewayServer

from .tls_helpers import PASSWORD, ConnectProxy, issue, pfx, wait_until

Gateway = Callable[..., GatewayServer]
Put = Callable[..., ServiceEntry]


def _pools(session: SecureSession, server: GatewayServer) -> list[object]:
    """urllib3 pool keys of *session* for *server*'s origin."""
    keys = session.adapter.poolmanager.pools.keys()
    return [k for k in keys if (k.key_host, k.key_port) == ("127.0.0.1", server.port)]


def test_pem_client_certificate_with_encrypted_key(
    ca: CertificateAuthority, gateway: Gateway, put: Put, session: SecureSession, tmp_path: Path
) -> None:
    server = gateway(require_client_cert=True)
    cert = issue(ca, "pem-alice")
    (tmp_path / "alice.pem").write_bytes(cert.chain_pem)
    (tmp_path / "alice.key").write_bytes(cert.encrypted_key_pem(PASSWORD.encode()))
    client = ClientCertificate.from_pem(tmp_path / "alice.pem", tmp_path / "alice.key", PASSWORD)
    put(server.url + "/api", client_cert=client, ca_bundle=ca.cert_pem)
    assert session.get(server.url + "/api/ping").status_code == 200
    assert server.requests[-1].client_cert_subject_cn == "pem-alice"


def test_pkcs12_client_certificate_and_credentials(
    ca: CertificateAuthority, gateway: Gateway, registry: Registry, session: SecureSession
) -> None:
    server = gateway(require_client_cert=True, expect_gateway=("gw-user", "gw-SECRET"))
    registry.put(
        ServiceEntry(
            url=server.url + "/pay",
            gateway=Credential("gw-user", "gw-SECRET"),
            tls=TLSProfile(client_cert=pfx(issue(ca, "pfx-alice")), ca_bundle=ca.cert_pem),
        )
    )
    response = session.get(server.url + "/pay/bills/1")
    assert response.status_code == 200
    assert server.requests[-1].client_cert_subject_cn == "pfx-alice"
    # requests asks urllib3 to load certifi on every new connection; the profile's
    # context must still trust the entry's CA alone.
    entry = registry.get(server.url + "/pay")
    assert entry is not None
    assert session.adapter._context_for(entry).cert_store_stats()["x509_ca"] == 1


def test_pin_match_and_mismatch(
    ca: CertificateAuthority, gateway: Gateway, registry: Registry, session: SecureSession
) -> None:
    server = gateway(require_client_cert=True)
    good = server.server_cert.spki_sha256_pin  # type: ignore[union-attr]
    wrong = ca.spki_sha256_pin  # a real pin, just not the server's key
    client = pfx(issue(ca, "pinned"))
    registry.put(
        ServiceEntry(
            url=server.url + "/good",
            tls=TLSProfile(client_cert=client, ca_bundle=ca.cert_pem, pins=(wrong, good)),
        )
    )
    registry.put(
        ServiceEntry(
            url=server.url + "/bad",
            request=Credential("api-user", "api-SECRET"),
            tls=TLSProfile(client_cert=client, ca_bundle=ca.cert_pem, pins=(wrong,)),
        )
    )
    assert session.get(server.url + "/good").status_code == 200
    server.reset()
    with pytest.raises(PinMismatchError) as info:
        session.get(server.url + "/bad")
    message = str(info.value)
    assert wrong in message and good in message  # expected and actual
    assert info.value.expected == (wrong,) and info.value.actual == (good,)
    assert "SECRET" not in message
    assert wait_until(lambda: server.handshakes == 1)  # the handshake happened...
    assert server.requests == []  # ...and not a byte of the request (or its credentials) followed


def test_two_entries_on_one_host_use_their_own_certificates_and_pools(
    ca: CertificateAuthority, gateway: Gateway, put: Put, session: SecureSession
) -> None:
    server = gateway(require_client_cert=True)
    put(server.url + "/alice", client_cert=pfx(issue(ca, "alice")), ca_bundle=ca.cert_pem)
    put(server.url + "/bob", client_cert=pfx(issue(ca, "bob")), ca_bundle=ca.cert_pem)
    for _ in range(3):
        assert session.get(server.url + "/alice/x").status_code == 200
        assert session.get(server.url + "/bob/y").status_code == 200
    seen = {(r.path.split("/")[1], r.client_cert_subject_cn) for r in server.requests}
    assert seen == {("alice", "alice"), ("bob", "bob")}
    connections = {
        name: {r.connection_id for r in server.requests if r.path.startswith("/" + name)}
        for name in ("alice", "bob")
    }
    assert len(connections["alice"]) == len(connections["bob"]) == 1
    assert connections["alice"].isdisjoint(connections["bob"])
    assert server.handshakes == 2
    pools = _pools(session, server)
    assert len(pools) == 2 and pools[0].key_ssl_context is not pools[1].key_ssl_context  # type: ignore[attr-defined]


def test_one_thousand_requests_cost_one_handshake(
    ca: CertificateAuthority, gateway: Gateway, put: Put, session: SecureSession
) -> None:
    server = gateway(require_client_cert=True)
    put(server.url + "/", client_cert=pfx(issue(ca, "busy")), ca_bundle=ca.cert_pem)
    for i in range(1000):
        response = session.get(f"{server.url}/items/{i}")
        assert response.status_code == 200
    assert len(server.requests) == 1000
    assert server.handshakes == 1
    assert server.connections == 1


def test_redirect_to_another_service_never_presents_the_first_certificate(
    ca: CertificateAuthority,
    gateway: Gateway,
    put: Put,
    session: SecureSession,
    ca_file: str,
) -> None:
    first = gateway(require_client_cert=True)
    with_entry = gateway()  # asks for a certificate, records any it gets
    without_entry = gateway()
    put(first.url + "/", client_cert=pfx(issue(ca, "first-service")), ca_bundle=ca.cert_pem)
    put(with_entry.url + "/", client_cert=pfx(issue(ca, "second-service")), ca_bundle=ca.cert_pem)
    first.redirect("/to-second", with_entry.url + "/landing")
    first.redirect("/to-third", without_entry.url + "/landing")

    response = session.get(first.url + "/to-second")
    assert response.status_code == 200 and len(response.history) == 1
    assert first.requests[-1].client_cert_subject_cn == "first-service"
    assert with_entry.requests[-1].client_cert_subject_cn == "second-service"

    # The third origin has no entry: requests' own TLS settings apply there.
    response = session.get(first.url + "/to-third", verify=ca_file)
    assert response.status_code == 200
    assert without_entry.requests[-1].client_cert_subject_cn is None


def test_rotated_certificate_gets_a_new_context_and_the_old_pool_is_closed(
    ca: CertificateAuthority, gateway: Gateway, put: Put, session: SecureSession
) -> None:
    server = gateway(require_client_cert=True)
    put(server.url + "/", client_cert=pfx(issue(ca, "before")), ca_bundle=ca.cert_pem)
    session.get(server.url + "/a")
    (old_key,) = _pools(session, server)
    old_pool = session.adapter.poolmanager.pools[old_key]
    put(server.url + "/", client_cert=pfx(issue(ca, "after")), ca_bundle=ca.cert_pem)
    session.get(server.url + "/b")
    assert [r.client_cert_subject_cn for r in server.requests] == ["before", "after"]
    (new_key,) = _pools(session, server)
    assert new_key.key_ssl_context is not old_key.key_ssl_context  # type: ignore[attr-defined]
    assert old_pool.pool is None  # closed


def test_new_revision_with_the_same_profile_keeps_the_connection(
    ca: CertificateAuthority, gateway: Gateway, registry: Registry, session: SecureSession
) -> None:
    server = gateway(require_client_cert=True)
    profile = TLSProfile(client_cert=pfx(issue(ca, "steady")), ca_bundle=ca.cert_pem)
    registry.put(
        ServiceEntry(url=server.url + "/", request=Credential("u", "one-SECRET"), tls=profile)
    )
    session.get(server.url + "/a")
    registry.put(
        ServiceEntry(url=server.url + "/", request=Credential("u", "two-SECRET"), tls=profile)
    )
    session.get(server.url + "/b")
    assert server.handshakes == 1


def test_expired_client_certificate_is_refused_before_connecting(
    ca: CertificateAuthority, gateway: Gateway, put: Put, session: SecureSession
) -> None:
    server = gateway(require_client_cert=True)
    put(server.url + "/", client_cert=pfx(issue(ca, "old", days=-2)), ca_bundle=ca.cert_pem)
    with pytest.raises(ClientCertificateExpiredError, match="has expired; nothing was sent"):
        session.get(server.url + "/x")
    assert server.connections == 0


def test_caller_verify_false_does_not_weaken_a_profile(
    other_ca: CertificateAuthority,
    gateway: Gateway,
    put: Put,
    session: SecureSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = gateway()
    put(server.url + "/", ca_bundle=other_ca.cert_pem)  # does not trust the server's CA
    with (
        caplog.at_level(logging.WARNING, logger="securesession"),
        pytest.raises(ServerCertificateError, match="not accepted"),
    ):
        session.get(server.url + "/x", verify=False)
    assert any(
        "verify=False / cert= of this call are ignored" in r.getMessage() for r in caplog.records
    )
    assert server.requests == []


def test_entry_with_profile_behind_a_foreign_adapter_is_refused(
    ca: CertificateAuthority, gateway: Gateway, put: Put, session: SecureSession
) -> None:
    server = gateway()
    put(server.url + "/", ca_bundle=ca.cert_pem)
    session.mount(server.url, HTTPAdapter())
    with pytest.raises(TLSConfigError, match="not a SecureAdapter"):
        session.get(server.url + "/x")
    assert server.connections == 0


def _local_tls10() -> str | None:
    """Why this machine cannot do a TLS 1.0 handshake with itself, or None if it can."""
    if not (ssl.HAS_TLSv1 and hasattr(ssl.TLSVersion, "TLSv1")):
        return f"{ssl.OPENSSL_VERSION} was built without TLS 1.0"
    return None


def test_legacy_tls10_gateway_with_explicit_opt_in(
    ca: CertificateAuthority, gateway: Gateway, put: Put, session: SecureSession,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    reason = _local_tls10()
    if reason is not None:
        pytest.skip(reason)
    tls10 = ssl.TLSVersion.TLSv1
    try:
        server = gateway(require_client_cert=True, legacy=True, tls_versions=(tls10, tls10))
    except (ssl.SSLError, ValueError) as exc:
        pytest.skip(f"the local OpenSSL cannot serve TLS 1.0: {exc}")
    client = pfx(issue(ca, "legacy-client"))
    with pytest.raises(TLSConfigError, match="allow_legacy=True"):
        TLSProfile(client_cert=client, version="1.0")
    put(
        server.url + "/",
        client_cert=client,
        ca_bundle=ca.cert_pem,
        version="1.0",
        allow_legacy=True,
    )
    with caplog.at_level(logging.WARNING, logger="securesession"):
        try:
            response = session.get(server.url + "/old")
        except TLSConfigError as exc:
            pytest.skip(f"the local OpenSSL refuses TLS 1.0 even at security level 0: {exc}")
        session.get(server.url + "/old-again")  # same connection: no second warning
        session.adapter.close()
        session.get(server.url + "/old-new-connection")
    assert response.status_code == 200
    assert server.requests[-1].tls_version == "TLSv1"
    assert server.requests[-1].client_cert_subject_cn == "legacy-client"
    warnings = [r.getMessage() for r in caplog.records if "legacy TLSv1" in r.getMessage()]
    assert len(warnings) == 2  # one per new connection


def test_profile_and_pins_apply_through_an_http_proxy(
    ca: CertificateAuthority, gateway: Gateway, put: Put, session: SecureSession
) -> None:
    server = gateway(require_client_cert=True)
    client = pfx(issue(ca, "proxied"))
    pin = server.server_cert.spki_sha256_pin  # type: ignore[union-attr]
    put(server.url + "/ok", client_cert=client, ca_bundle=ca.cert_pem, pins=(pin,))
    put(server.url + "/bad", client_cert=client, ca_bundle=ca.cert_pem, pins=(ca.spki_sha256_pin,))
    proxy = ConnectProxy()
    try:
        proxies = {"https": proxy.url}
        assert session.get(server.url + "/ok", proxies=proxies).status_code == 200
        assert server.requests[-1].client_cert_subject_cn == "proxied"
        with pytest.raises(PinMismatchError):
            session.get(server.url + "/bad", proxies=proxies)
    finally:
        proxy.close()
    assert proxy.tunnels == [f"127.0.0.1:{server.port}"] * 2
    assert [r.path for r in server.requests] == ["/ok"]


def test_threads_sharing_a_session_keep_certificates_apart(
    ca: CertificateAuthority, gateway: Gateway, put: Put, session: SecureSession
) -> None:
    server = gateway(require_client_cert=True)
    for name in ("red", "blue"):
        put(f"{server.url}/{name}", client_cert=pfx(issue(ca, name)), ca_bundle=ca.cert_pem)
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            for i in range(40):
                assert session.get(f"{server.url}/{name}/{i}").status_code == 200
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in ("red", "blue") * 4]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(server.requests) == 320
    assert all(r.path.split("/")[1] == r.client_cert_subject_cn for r in server.requests)
    assert server.handshakes <= 8  # at most one connection per thread, reused
