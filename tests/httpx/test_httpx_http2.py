"""HTTP/2 over an entry's TLS profile (``http2=True``, h2 installed).

Proven here against ``H2Server`` (tests/httpx/httpx_helpers.py, an HTTP/2-only
server on h2's server side, ALPN ``h2``): the profile's context offers ``h2`` and
``http/1.1`` by ALPN; the server negotiates ``h2``; requests travel as HTTP/2 frames
with the entry's client certificate and the injected headers; several requests
share one connection; a wrong pin is refused after the handshake, before the client
sends the HTTP/2 preface (the server sees a handshake and no request). Against
``GatewayServer``, which offers no ALPN, the same client falls back to HTTP/1.1.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterator

import anyio
import pytest

from securesession import PinMismatchError, Registry
from securesession.httpx import SecureAsyncClient, SecureClient, SecureTransport
from securesession.testing import CertificateAuthority, GatewayServer

from .httpx_helpers import H2Server, profile, tagged, tags_in, tags_seen


@pytest.fixture(scope="module")
def h2_ca() -> CertificateAuthority:
    return CertificateAuthority("h2 test CA")


@pytest.fixture
def h2_server(h2_ca: CertificateAuthority) -> Iterator[H2Server]:
    with H2Server(h2_ca) as server:
        yield server


def test_http2_over_the_entrys_profile(
    registry: Registry, h2_server: H2Server, h2_ca: CertificateAuthority
) -> None:
    registry.put(tagged(h2_server.url + "/api", "h2", tls=profile(h2_ca, "h2-client")))
    with SecureClient(registry, http2=True) as client:
        replies = [client.get(h2_server.url + f"/api/{index}") for index in range(3)]
        transport = client._transport
        assert isinstance(transport, SecureTransport)
        (slot,) = transport._slots.values()
    assert [r.http_version for r in replies] == ["HTTP/2"] * 3
    assert [r.json()["protocol"] for r in replies] == ["h2"] * 3
    records = h2_server.requests
    assert [r.path for r in records] == ["/api/0", "/api/1", "/api/2"]
    assert {r.alpn for r in records} == {"h2"}
    assert {r.client_cert_cn for r in records} == {"h2-client"}
    assert len({r.connection_id for r in records}) == 1
    assert all(tags_in(r.headers, ["h2"]) == {"h2"} for r in records)
    assert "x-gateway-password" in records[0].headers  # HTTP/2 names are lower case
    assert slot.context.get_ca_certs()  # the entry's CA, and nothing else
    assert len(slot.context.get_ca_certs()) == 1


@pytest.mark.anyio
async def test_http2_async(
    registry: Registry, h2_server: H2Server, h2_ca: CertificateAuthority
) -> None:
    registry.put(tagged(h2_server.url + "/api", "ah", tls=profile(h2_ca, "h2-async")))
    async with (
        SecureAsyncClient(registry, http2=True) as client,
        anyio.create_task_group() as group,
    ):
        for index in range(4):
            group.start_soon(client.get, h2_server.url + f"/api/{index}")
    records = h2_server.requests
    assert len(records) == 4
    assert {(r.alpn, r.client_cert_cn) for r in records} == {("h2", "h2-async")}
    # Four concurrent requests, one connection: HTTP/2 streams.
    assert len({r.connection_id for r in records}) == 1


@pytest.mark.parametrize("asynchronous", [False, True])
def test_a_wrong_pin_is_refused_before_the_http2_preface(
    registry: Registry,
    h2_server: H2Server,
    h2_ca: CertificateAuthority,
    asynchronous: bool,
) -> None:
    pins = ("sha256/" + "C" * 43 + "=",)
    registry.put(tagged(h2_server.url + "/api", "hp", tls=profile(h2_ca, "h2-pin", pins=pins)))

    async def call_async() -> None:
        async with SecureAsyncClient(registry, http2=True) as client:
            await client.get(h2_server.url + "/api/x")

    def call() -> None:
        if asynchronous:
            anyio.run(call_async)
            return
        with SecureClient(registry, http2=True) as client:
            client.get(h2_server.url + "/api/x")

    with pytest.raises(PinMismatchError):
        call()
    assert h2_server.requests == []
    assert h2_server.handshakes <= 1


def test_a_server_without_alpn_gets_http11(registry: Registry, h2_ca: CertificateAuthority) -> None:
    with GatewayServer(tls=True, ca=h2_ca) as server:
        registry.put(tagged(server.url + "/api", "fb", tls=profile(h2_ca, "fallback")))
        with SecureClient(registry, http2=True) as client:
            reply = client.get(server.url + "/api/x")
        (record,) = server.requests
    assert reply.http_version == "HTTP/1.1"
    assert record.client_cert_subject_cn == "fallback"
    assert tags_seen(record, ["fb"]) == {"fb"}


def test_hpack_debug_logs_show_non_sensitive_header_values(
    registry: Registry, h2_server: H2Server, h2_ca: CertificateAuthority
) -> None:
    """The caveat docs/httpx.md states, checked: over HTTP/2, h2 marks Authorization
    never-indexed (hpack's DEBUG log redacts it) but not the gateway or secret
    headers, whose values hpack's own DEBUG log prints. securesession's, httpx's,
    httpcore's and h2's logs carry none (the conftest checks those)."""
    registry.put(tagged(h2_server.url + "/api", "hk"))
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    hpack = logging.getLogger("hpack")
    handler, level = Keep(), hpack.level
    hpack.addHandler(handler)
    hpack.setLevel(logging.DEBUG)
    try:
        with SecureClient(registry, http2=True, verify=_trusting(h2_ca)) as client:
            client.get(h2_server.url + "/api/x")
    finally:
        hpack.removeHandler(handler)
        hpack.setLevel(level)
    adding = [line for line in lines if line.startswith("Adding b'")]
    assert any("b'x-gateway-password'=b'hk-gw-SECRET'" in line for line in adding)
    assert any("b'authorization'=b'SENSITIVE_REDACTED'" in line for line in adding)


def _trusting(ca: CertificateAuthority) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=ca.cert_pem.decode("ascii"))
