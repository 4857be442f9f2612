"""vcrpy over a SecureSession: record and replay over http, https and a TLS profile (client
certificate, pins); a replay opens no connection; a recorded connection is checked like any
other; and a cassette built with ``vcr_options`` holds no secret."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import vcr
import yaml
from vcr.errors import CannotOverwriteExistingCassetteException

from securesession import (
    ClientCertificate,
    Credential,
    MasterKey,
    PinMismatchError,
    Registry,
    SecureSession,
    ServiceEntry,
    TLSProfile,
    open_registry,
)
from securesession.integrations import injected_header_names, vcr_options
from securesession.testing import CertificateAuthority, GatewayServer

from ..secretscan import leaks

GATEWAY = ("bridge", "gw-SECRET")
REQUEST = ("alice", "alice-SECRET")
API_KEY = "key-SECRET"
BASIC = base64.b64encode(f"{REQUEST[0]}:{REQUEST[1]}".encode()).decode()
SECRET_VALUES = (GATEWAY[1], REQUEST[1], API_KEY, BASIC)
INJECTED = ("Authorization", "X-Api-Key", "X-Gateway-Password", "X-Gateway-User")
ECHO = {"method": "GET", "path": "/orders/7"}

# http; https with requests' own TLS (verify=); https with a TLS profile (client
# certificate, the entry's CA, a pin on the server's key).
MODES = ("http", "https", "profile")


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority("vcr test CA")


@pytest.fixture(scope="module")
def client(ca: CertificateAuthority) -> ClientCertificate:
    issued = ca.issue_client("recorder", not_after=datetime.now(timezone.utc) + timedelta(days=365))
    return ClientCertificate.from_pkcs12(issued.pkcs12(b"pfx-SECRET"), "pfx-SECRET")


@pytest.fixture
def registry() -> Iterator[Registry]:
    registry = open_registry("memory://", MasterKey.generate())
    yield registry
    registry.close()


def gateway(ca: CertificateAuthority, mode: str) -> GatewayServer:
    return GatewayServer(
        tls=mode != "http",
        ca=ca if mode != "http" else None,
        require_client_cert=mode == "profile",
        expect_gateway=GATEWAY,
        expect_request=REQUEST,
    )


def put(
    registry: Registry,
    server: GatewayServer,
    mode: str,
    client: ClientCertificate,
    ca: CertificateAuthority,
    *,
    pins: tuple[str, ...] | None = None,
) -> None:
    tls = None
    if mode == "profile":
        assert server.server_cert is not None
        tls = TLSProfile(
            client_cert=client,
            ca_bundle=ca.cert_pem,
            pins=pins if pins is not None else (server.server_cert.spki_sha256_pin,),
        )
    registry.put(
        ServiceEntry(
            url=server.url + "/orders",
            gateway=Credential(*GATEWAY),
            request=Credential(*REQUEST),
            secret_headers={"X-Api-Key": API_KEY},
            tls=tls,
        )
    )


def verify_for(mode: str, ca: CertificateAuthority, tmp_path: Path) -> bool | str:
    """requests' verify= for the mode (a profile ignores it and trusts its own CA)."""
    if mode != "https":
        return True
    path = tmp_path / "ca.pem"
    path.write_bytes(ca.cert_pem)
    return str(path)


def wait_until(predicate: Callable[[], bool], timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def assert_no_secret(text: str) -> None:
    assert not leaks(text)
    for value in SECRET_VALUES:
        assert value not in text


def recorded_headers(cassette: Path) -> dict[str, list[str]]:
    (interaction,) = yaml.safe_load(cassette.read_text(encoding="utf-8"))["interactions"]
    headers: dict[str, list[str]] = interaction["request"]["headers"]
    return headers


@pytest.mark.parametrize("mode", MODES)
def test_record_then_replay_with_the_server_gone(
    mode: str,
    ca: CertificateAuthority,
    client: ClientCertificate,
    registry: Registry,
    tmp_path: Path,
) -> None:
    cassette = tmp_path / "orders.yaml"
    verify = verify_for(mode, ca, tmp_path)
    server = gateway(ca, mode).start()
    try:
        put(registry, server, mode, client, ca)
        url = server.url + "/orders/7"
        options = vcr_options(registry)
        with (
            SecureSession(registry) as session,
            vcr.use_cassette(str(cassette), record_mode="once", **options) as recorded,
        ):
            response = session.get(url, verify=verify, timeout=5)
            assert response.status_code == 200, response.text
            assert len(recorded) == 1  # vcrpy saw it...
        # ...and so did the server: every credential, over the client certificate.
        (sent,) = server.requests
        assert sent.status == 200  # expect_gateway and expect_request both passed
        assert sent.header("X-Api-Key") == API_KEY
        assert sent.client_cert_subject_cn == ("recorder" if mode == "profile" else None)
    finally:
        server.stop()

    assert_no_secret(cassette.read_text(encoding="utf-8"))
    headers = recorded_headers(cassette)
    for name in INJECTED:
        assert headers[name] == ["[REDACTED]"]

    # The server is gone: anything but a replay would fail to connect.
    with (
        SecureSession(registry) as session,
        vcr.use_cassette(str(cassette), record_mode="none", **options) as replayed,
    ):
        response = session.get(url, verify=verify, timeout=5)
        assert replayed.play_count == 1 and replayed.all_played
    assert response.status_code == 200
    assert response.json() == ECHO
    assert len(server.requests) == 1


def test_a_warm_connection_is_not_used_by_a_replay(
    ca: CertificateAuthority, client: ClientCertificate, registry: Registry, tmp_path: Path
) -> None:
    """A keep-alive connection opened before the cassette must not carry the replayed
    request (vcrpy drops pooled connections that are not its stub's); after the
    cassette, real requests go out over the profile again."""
    cassette = tmp_path / "orders.yaml"
    with gateway(ca, "profile") as server, SecureSession(registry) as session:
        put(registry, server, "profile", client, ca)
        url = server.url + "/orders/7"
        options = vcr_options(registry)
        with vcr.use_cassette(str(cassette), record_mode="once", **options):
            assert session.get(url, timeout=5).status_code == 200
        assert session.get(url, timeout=5).status_code == 200  # a real one, kept alive
        assert len(server.requests) == 2
        assert wait_until(lambda: server.connections == 2)

        with vcr.use_cassette(str(cassette), record_mode="none", **options) as replayed:
            assert session.get(url, timeout=5).json() == ECHO
            assert replayed.play_count == 1
        assert len(server.requests) == 2  # nothing reached the server
        assert server.connections == 2

        assert session.get(url, timeout=5).status_code == 200  # real again
        assert len(server.requests) == 3
        assert server.requests[-1].client_cert_subject_cn == "recorder"


def test_a_recorded_connection_still_checks_the_pins(
    ca: CertificateAuthority, client: ClientCertificate, registry: Registry, tmp_path: Path
) -> None:
    cassette = tmp_path / "orders.yaml"
    with gateway(ca, "profile") as server:
        # A real pin, just not the server's key.
        put(registry, server, "profile", client, ca, pins=(ca.spki_sha256_pin,))
        with (
            SecureSession(registry) as session,
            vcr.use_cassette(str(cassette), record_mode="all", **vcr_options(registry)) as c,
        ):
            with pytest.raises(PinMismatchError):
                session.get(server.url + "/orders/7", timeout=5)
            assert len(c) == 0
        assert wait_until(lambda: server.handshakes == 1)  # the handshake happened...
        assert server.requests == []  # ...and not a byte of the request followed
    assert not cassette.exists()


def test_a_request_missing_from_the_cassette_is_refused_not_sent(
    ca: CertificateAuthority, client: ClientCertificate, registry: Registry, tmp_path: Path
) -> None:
    cassette = tmp_path / "orders.yaml"
    with gateway(ca, "profile") as server, SecureSession(registry) as session:
        put(registry, server, "profile", client, ca)
        options = vcr_options(registry)
        with vcr.use_cassette(str(cassette), **options):
            session.get(server.url + "/orders/7", timeout=5)
        with (
            vcr.use_cassette(str(cassette), record_mode="none", **options),
            pytest.raises(CannotOverwriteExistingCassetteException),
        ):
            session.get(server.url + "/orders/8", timeout=5)
        assert [r.path for r in server.requests] == ["/orders/7"]
        assert server.handshakes == 1


UNFILTERED_YAML = """
import sys

import vcr
import yaml

from securesession import Credential, MasterKey, SecureSession, ServiceEntry, open_registry
from securesession.testing import GatewayServer

registry = open_registry("memory://", MasterKey.generate())
with GatewayServer() as server, SecureSession(registry) as session:
    registry.put(ServiceEntry(url=server.url, gateway=Credential("bridge", "gw-SECRET")))
    try:
        with vcr.use_cassette(sys.argv[1]):
            session.get(server.url + "/orders/7", timeout=5)
    except yaml.representer.RepresenterError as error:
        assert "Cassette not saved" in str(error)
        print("refused")
    else:
        print("saved")
"""


def test_without_the_filter_a_cassette_would_hold_the_secrets(
    ca: CertificateAuthority, client: ClientCertificate, registry: Registry, tmp_path: Path
) -> None:
    """What vcr_options prevents: without the filter, vcrpy's JSON serializer writes the
    injected values in clear; its YAML serializer writes them too or refuses to save."""
    with gateway(ca, "http") as server, SecureSession(registry) as session:
        put(registry, server, "http", client, ca)
        url = server.url + "/orders/7"
        plain = tmp_path / "plain.json"
        with vcr.use_cassette(str(plain), serializer="json"):
            session.get(url, timeout=5)
        assert leaks(plain.read_text(encoding="utf-8"))

        filtered = tmp_path / "filtered.json"
        with vcr.use_cassette(str(filtered), serializer="json", **vcr_options(session)):
            session.get(url, timeout=5)
        text = filtered.read_text(encoding="utf-8")
        assert_no_secret(text)
        (interaction,) = json.loads(text)["interactions"]
        assert interaction["request"]["headers"]["X-Gateway-Password"] == ["[REDACTED]"]

    # YAML: vcrpy 9.4 refuses to save a cassette holding them (they are str subclasses),
    # vcrpy 7 writes them in clear under a python/object tag. In a child process: after
    # the refusal vcrpy 9.4 leaves its patches in place (its __exit__ saves, then unpatches).
    unfiltered = tmp_path / "unfiltered.yaml"
    result = subprocess.run(
        [sys.executable, "-c", UNFILTERED_YAML, str(unfiltered)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    if result.stdout.strip() == "refused":
        assert not unfiltered.exists()
    else:
        assert result.stdout.strip() == "saved"
        assert leaks(unfiltered.read_text(encoding="utf-8"))


def test_vcr_options_keeps_the_callers_filters_and_options(registry: Registry) -> None:
    registry.put(
        ServiceEntry(
            url="https://gw.example/a",
            gateway=Credential(*GATEWAY),
            gateway_headers=("X-Bridge-User", "X-Bridge-Key"),
            secret_headers={"X-Api-Key": API_KEY},
        )
    )
    options = vcr_options(
        registry,
        record_mode="none",
        filter_headers=["x-api-key", ("Authorization", "<token>"), "Cookie"],
    )
    assert options["record_mode"] == "none"
    assert options["filter_headers"] == [
        "x-api-key",
        ("Authorization", "<token>"),
        "Cookie",
        ("Proxy-Authorization", "[REDACTED]"),
        ("X-Bridge-Key", "[REDACTED]"),
        ("X-Bridge-User", "[REDACTED]"),
    ]
    removed = vcr_options(registry, placeholder=None)["filter_headers"]
    assert removed == [(name, None) for name in injected_header_names(registry)]


def test_the_pool_follows_vcrpys_stub_only(tmp_path: Path) -> None:
    """Under a cassette the pool's class is vcrpy's stub over ours; any other
    replacement of urllib3's class (not a recording stub, not a class) is ignored."""
    from unittest import mock

    from urllib3.connection import HTTPSConnection
    from urllib3.connectionpool import HTTPSConnectionPool
    from vcr.stubs import VCRHTTPSConnection

    from securesession._adapter import _ProfileHTTPSConnection, _ProfileHTTPSConnectionPool

    pool = _ProfileHTTPSConnectionPool("127.0.0.1", 1)
    assert pool.ConnectionCls is _ProfileHTTPSConnection
    with vcr.use_cassette(str(tmp_path / "none.yaml")):
        during = pool.ConnectionCls
        assert during is _ProfileHTTPSConnectionPool.ConnectionCls  # stable per cassette
    assert issubclass(during, VCRHTTPSConnection)
    assert during._baseclass is _ProfileHTTPSConnection  # type: ignore[attr-defined]
    assert pool.ConnectionCls is _ProfileHTTPSConnection

    class Other(HTTPSConnection):
        pass

    for replacement in (Other, mock.Mock()):
        with mock.patch.object(HTTPSConnectionPool, "ConnectionCls", replacement):
            assert pool.ConnectionCls is _ProfileHTTPSConnection
    pool.close()
