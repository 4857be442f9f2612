from __future__ import annotations

from collections.abc import Iterator

import pytest

from securesession import MasterKey, Registry, SecureSession, open_registry
from securesession.testing import GatewayServer


@pytest.fixture
def key() -> MasterKey:
    return MasterKey.generate()


@pytest.fixture
def registry(key: MasterKey) -> Iterator[Registry]:
    registry = open_registry("memory://", key)
    yield registry
    registry.close()


@pytest.fixture(scope="module")
def _servers() -> Iterator[tuple[GatewayServer, GatewayServer]]:
    with GatewayServer() as first, GatewayServer() as second:
        yield first, second


@pytest.fixture
def server(_servers: tuple[GatewayServer, GatewayServer]) -> GatewayServer:
    """A loopback HTTP server that records what it receives; reset per test."""
    first = _servers[0]
    first.reset()
    first.clear_routes()
    return first


@pytest.fixture
def other_server(_servers: tuple[GatewayServer, GatewayServer]) -> GatewayServer:
    """A second origin, for redirects across origins."""
    second = _servers[1]
    second.reset()
    second.clear_routes()
    return second


@pytest.fixture
def session(registry: Registry) -> Iterator[SecureSession]:
    with SecureSession(registry) as session:
        yield session
