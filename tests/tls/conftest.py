"""Fixtures for the mutual-TLS tests: a throw-away PKI, loopback TLS gateways and
sessions over a memory registry. Every key is generated at test time."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from securesession import MasterKey, Registry, SecureSession, ServiceEntry, open_registry
from securesession._tls import TLSProfile
from securesession.testing import CertificateAuthority, GatewayServer


@pytest.fixture(scope="session")
def ca() -> CertificateAuthority:
    return CertificateAuthority("tls test CA")


@pytest.fixture(scope="session")
def other_ca() -> CertificateAuthority:
    return CertificateAuthority("some other CA")


@pytest.fixture
def gateway(ca: CertificateAuthority) -> Iterator[Callable[..., GatewayServer]]:
    """Start TLS GatewayServers (keyword arguments as GatewayServer's; the server
    certificate comes from ``ca`` unless given); all are stopped after the test."""
    started: list[GatewayServer] = []

    def start(**kwargs: object) -> GatewayServer:
        if "server_cert" not in kwargs:
            kwargs.setdefault("ca", ca)
        server = GatewayServer(tls=True, **kwargs)  # type: ignore[arg-type]
        started.append(server.start())
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def registry() -> Iterator[Registry]:
    registry = open_registry("memory://", MasterKey.generate())
    yield registry
    registry.close()


@pytest.fixture
def session(registry: Registry) -> Iterator[SecureSession]:
    with SecureSession(registry) as session:
        yield session


@pytest.fixture
def put(registry: Registry) -> Callable[..., ServiceEntry]:
    """Store an entry for *url* whose TLS profile is built from the keyword arguments."""

    def put(url: str, **profile: object) -> ServiceEntry:
        return registry.put(ServiceEntry(url=url, tls=TLSProfile(**profile)))  # type: ignore[arg-type]

    return put


@pytest.fixture
def ca_file(tmp_path: Path, ca: CertificateAuthority) -> str:
    """The test CA as a file, for ``verify=`` on URLs without a TLS profile."""
    return str(ca.write_cert_pem(tmp_path))
