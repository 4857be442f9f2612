"""Fixtures of the behaviour suite: every test runs once per front-end (``client_kind``:
requests, httpx, httpx-async) against the same loopback origins, started once per
session and made pristine per test.

The suite-wide log guard (tests/conftest.py) watches securesession and urllib3; here
httpx, httpcore, h2 and hpack are watched as well, at DEBUG.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal

from securesession import MasterKey, Registry, open_registry
from securesession.testing import CertificateAuthority, GatewayServer

from ..secretscan import leaks
from .behaviour_clients import KINDS, Factory, factory
from .behaviour_helpers import Origins

_SETTINGS = (
    "expect_gateway",
    "expect_request",
    "expect_digest",
    "expect_ntlm",
    "gateway_headers",
)
_HTTPX_LOGGERS = ("httpx", "httpcore", "h2", "hpack")


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture(autouse=True)
def _no_secret_in_httpx_logs() -> Iterator[None]:
    collector = _Collector()
    loggers = [logging.getLogger(name) for name in _HTTPX_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(collector)
        logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(collector)
            logger.setLevel(level)
    leaked = [line for line in collector.lines if leaks(line)]
    assert not leaked, f"{len(leaked)} httpx/httpcore log line(s) carried a test secret"


@pytest.fixture(scope="session")
def behaviour_ca() -> CertificateAuthority:
    return CertificateAuthority("behaviour test CA")


@pytest.fixture(scope="session")
def _origins(
    behaviour_ca: CertificateAuthority, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Origins]:
    ca_file = str(behaviour_ca.write_cert_pem(tmp_path_factory.mktemp("behaviour-ca")))
    servers = [
        GatewayServer(tls=True, ca=behaviour_ca),
        GatewayServer(tls=True, ca=behaviour_ca),
        GatewayServer(),
        GatewayServer(),
    ]
    for server in servers:
        server.start()
    try:
        yield Origins(behaviour_ca, ca_file, *servers)
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def origins(_origins: Origins) -> Iterator[Origins]:
    """The shared origins, their records, routes and expected credentials cleared."""

    def restore() -> None:
        for server in _origins.all():
            server.reset()
            server.clear_routes()
            for name in _SETTINGS:
                setattr(server, name, None if name != "gateway_headers" else _GATEWAY_HEADERS)

    restore()
    yield _origins
    restore()


_GATEWAY_HEADERS = ("X-Gateway-User", "X-Gateway-Password")


@pytest.fixture(scope="session")
def portal() -> Iterator[BlockingPortal]:
    """An asyncio event loop in a thread of its own, for the async client."""
    with start_blocking_portal("asyncio") as running:
        yield running


@pytest.fixture(params=KINDS)
def client_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
def make_client(client_kind: str, portal: BlockingPortal) -> Iterator[Factory]:
    """``make_client(registry, ca_file=..., **options)``: the front-end under test, closed
    after the test."""
    made = []
    make = factory(client_kind, portal)

    def build(*args: object, **kwargs: object) -> object:
        client = make(*args, **kwargs)
        made.append(client)
        return client

    yield build  # type: ignore[misc]
    for client in made:
        client.close()


@pytest.fixture
def registry() -> Iterator[Registry]:
    registry = open_registry("memory://", MasterKey.generate())
    yield registry
    registry.close()
