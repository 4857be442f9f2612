"""Fixtures of the httpx front-end tests. Async tests run on anyio's pytest plugin
(``@pytest.mark.anyio``), on asyncio.

Besides the suite-wide log guard (securesession, urllib3), the httpx, httpcore and h2
loggers are watched at DEBUG here: no line may carry a test secret. (hpack, which
h2 uses, is not: see test_httpx_http2.py for why and what is checked instead.)
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from securesession import MasterKey, Registry, open_registry
from securesession.testing import CertificateAuthority, GatewayServer

from ..secretscan import leaks

WATCHED = ("httpx", "httpcore", "h2")


class Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture(autouse=True)
def httpx_log_lines() -> Iterator[list[str]]:
    collector = Collector()
    loggers = [logging.getLogger(name) for name in WATCHED]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(collector)
        logger.setLevel(logging.DEBUG)
    try:
        yield collector.lines
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(collector)
            logger.setLevel(level)
    leaked = [line for line in collector.lines if leaks(line)]
    assert not leaked, f"{len(leaked)} httpx/httpcore/h2 log line(s) carried a test secret"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def ca() -> CertificateAuthority:
    return CertificateAuthority("httpx test CA")


@pytest.fixture(scope="session")
def _tls_server(ca: CertificateAuthority) -> Iterator[GatewayServer]:
    with GatewayServer(tls=True, ca=ca) as server:
        yield server


@pytest.fixture(scope="session")
def _plain_server() -> Iterator[GatewayServer]:
    with GatewayServer() as server:
        yield server


def _pristine(server: GatewayServer) -> GatewayServer:
    server.reset()
    server.clear_routes()
    server.expect_gateway = server.expect_request = None
    return server


@pytest.fixture
def tls_server(_tls_server: GatewayServer) -> Iterator[GatewayServer]:
    """HTTPS, asks for an optional client certificate; pristine for this test."""
    yield _pristine(_tls_server)
    _pristine(_tls_server)


@pytest.fixture
def plain_server(_plain_server: GatewayServer) -> Iterator[GatewayServer]:
    yield _pristine(_plain_server)
    _pristine(_plain_server)


@pytest.fixture
def registry() -> Iterator[Registry]:
    registry = open_registry("memory://", MasterKey.generate())
    yield registry
    registry.close()
