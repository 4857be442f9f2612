"""betamax over a SecureSession: entries without a TLS profile record and replay, with every
injected header replaced by a placeholder (``betamax_redacting``); a TLS-profile entry is
refused with a clear TLSConfigError before anything is sent."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from betamax import Betamax
from betamax.cassette import Cassette

from securesession import (
    ClientCertificate,
    Credential,
    MasterKey,
    Registry,
    SecureSession,
    ServiceEntry,
    TLSConfigError,
    TLSProfile,
    open_registry,
)
from securesession.integrations import betamax_before_record, betamax_redacting
from securesession.testing import CertificateAuthority, GatewayServer

from ..secretscan import leaks

GATEWAY = ("bridge", "gw-SECRET")
REQUEST = ("alice", "alice-SECRET")
API_KEY = "key-SECRET"
BASIC = base64.b64encode(f"{REQUEST[0]}:{REQUEST[1]}".encode()).decode()
SECRET_VALUES = (GATEWAY[1], REQUEST[1], API_KEY, BASIC)
INJECTED = ("Authorization", "X-Api-Key", "X-Gateway-Password", "X-Gateway-User")
ECHO = {"method": "GET", "path": "/orders/7"}


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority("betamax test CA")


@pytest.fixture
def registry() -> Iterator[Registry]:
    registry = open_registry("memory://", MasterKey.generate())
    yield registry
    registry.close()


@pytest.fixture(autouse=True)
def _no_hook_left_behind() -> Iterator[None]:
    before = list(Cassette.hooks["before_record"])
    yield
    assert Cassette.hooks["before_record"] == before


def gateway(ca: CertificateAuthority, tls: bool) -> GatewayServer:
    return GatewayServer(
        tls=tls,
        ca=ca if tls else None,
        expect_gateway=GATEWAY,
        expect_request=REQUEST,
    )


def put(registry: Registry, server: GatewayServer, tls: TLSProfile | None = None) -> None:
    registry.put(
        ServiceEntry(
            url=server.url + "/orders",
            gateway=Credential(*GATEWAY),
            request=Credential(*REQUEST),
            secret_headers={"X-Api-Key": API_KEY},
            tls=tls,
        )
    )


def verify_for(tls: bool, ca: CertificateAuthority, tmp_path: Path) -> bool | str:
    if not tls:
        return True
    path = tmp_path / "ca.pem"
    path.write_bytes(ca.cert_pem)
    return str(path)


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_record_then_replay_with_the_server_gone(
    tls: bool, ca: CertificateAuthority, registry: Registry, tmp_path: Path
) -> None:
    verify = verify_for(tls, ca, tmp_path)
    cassettes = tmp_path / "cassettes"
    cassettes.mkdir()
    with gateway(ca, tls) as server:
        put(registry, server)
        url = server.url + "/orders/7"
        with SecureSession(registry) as session, betamax_redacting(registry):
            with Betamax(session, cassette_library_dir=str(cassettes)) as recorder:
                recorder.use_cassette("orders", record="once")
                response = session.get(url, verify=verify, timeout=5)
                assert response.status_code == 200
            # betamax sent it through the session's SecureAdapter: every credential.
            (sent,) = server.requests
            assert sent.status == 200 and sent.header("X-Api-Key") == API_KEY

    text = (cassettes / "orders.json").read_text(encoding="utf-8")
    assert not leaks(text)
    for value in SECRET_VALUES:
        assert value not in text
    (interaction,) = json.loads(text)["http_interactions"]
    for name in INJECTED:
        assert interaction["request"]["headers"][name] == ["[REDACTED]"]

    # The server is gone: anything but a replay would fail to connect.
    with (
        SecureSession(registry) as session,
        Betamax(session, cassette_library_dir=str(cassettes)) as recorder,
    ):
        recorder.use_cassette("orders", record="none")
        response = session.get(url, verify=verify, timeout=5)
    assert response.status_code == 200
    assert response.json() == ECHO


def test_without_the_hook_the_cassette_would_hold_the_secrets(
    ca: CertificateAuthority, registry: Registry, tmp_path: Path
) -> None:
    with gateway(ca, tls=False) as server, SecureSession(registry) as session:
        put(registry, server)
        with Betamax(session, cassette_library_dir=str(tmp_path)) as recorder:
            recorder.use_cassette("plain")
            session.get(server.url + "/orders/7", timeout=5)
    assert leaks((tmp_path / "plain.json").read_text(encoding="utf-8"))


def test_the_hook_alone_and_its_placeholder(registry: Registry) -> None:
    registry.put(
        ServiceEntry(
            url="https://gw.example/a",
            gateway=Credential(*GATEWAY),
            gateway_headers=("X-Bridge-User", "X-Bridge-Key"),
        )
    )
    hook = betamax_before_record(registry, placeholder="<gone>")

    class Interaction:
        data = {  # noqa: RUF012 - the shape betamax hands its hooks
            "request": {
                "headers": {
                    "x-bridge-key": ["gw-SECRET"],
                    "X-Bridge-User": ["bridge"],
                    "Accept": ["*/*"],
                }
            }
        }

    interaction = Interaction()
    hook(interaction, None)
    assert interaction.data["request"]["headers"] == {
        "x-bridge-key": ["<gone>"],
        "X-Bridge-User": ["<gone>"],
        "Accept": ["*/*"],
    }


def test_a_tls_profile_entry_is_refused_and_nothing_is_sent(
    ca: CertificateAuthority, registry: Registry, tmp_path: Path
) -> None:
    issued = ca.issue_client("recorder", not_after=datetime.now(timezone.utc) + timedelta(days=365))
    client = ClientCertificate.from_pkcs12(issued.pkcs12(b"pfx-SECRET"), "pfx-SECRET")
    with GatewayServer(tls=True, ca=ca, require_client_cert=True) as server:
        put(registry, server, TLSProfile(client_cert=client, ca_bundle=ca.cert_pem))
        with (
            SecureSession(registry) as session,
            betamax_redacting(registry),
            Betamax(session, cassette_library_dir=str(tmp_path)) as recorder,
        ):
            recorder.use_cassette("orders")
            with pytest.raises(TLSConfigError) as info:
                session.get(server.url + "/orders/7", timeout=5)
            assert recorder.current_cassette.interactions == []
        message = str(info.value)
        assert "has a TLS profile" in message and "BetamaxAdapter" in message
        assert "nothing was sent" in message
        assert not leaks(message)
        assert server.requests == [] and server.connections == 0
    cassette = tmp_path / "orders.json"
    assert not cassette.exists() or json.loads(cassette.read_text())["http_interactions"] == []
