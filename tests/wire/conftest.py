"""Fixtures of the wire-guard tests: loopback origins started once per session (https
ones asking for client certificates, one answering HTTP Digest; plain http ones), reset
per test, and a memory registry."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from securesession import MasterKey, Registry, open_registry
from securesession.testing import CertificateAuthority, GatewayServer

from .wire_helpers import DIGEST_PASSWORD, DIGEST_USER, NTLM_PASSWORD, NTLM_USER, Origins


@pytest.fixture(scope="session")
def wire_ca() -> CertificateAuthority:
    return CertificateAuthority("wire test CA")


@pytest.fixture(scope="session")
def origins_once(
    wire_ca: CertificateAuthority, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Origins]:
    ca_file = str(wire_ca.write_cert_pem(tmp_path_factory.mktemp("wire-ca")))
    servers = [
        GatewayServer(tls=True, ca=wire_ca),
        GatewayServer(tls=True, ca=wire_ca),
        GatewayServer(
            tls=True,
            ca=wire_ca,
            expect_digest=(DIGEST_USER, DIGEST_PASSWORD),
        ),
        GatewayServer(),
        GatewayServer(),
        GatewayServer(tls=True, ca=wire_ca, expect_ntlm=(NTLM_USER, NTLM_PASSWORD)),
    ]
    for server in servers:
        server.start()
    try:
        yield Origins(wire_ca, ca_file, *servers)
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def origins(origins_once: Origins) -> Origins:
    """The shared origins, with their records and routes reset."""
    origins_once.reset()
    return origins_once


@pytest.fixture
def registry() -> Iterator[Registry]:
    registry = open_registry("memory://", MasterKey.generate())
    yield registry
    registry.close()
