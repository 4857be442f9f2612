"""OpenTelemetry's requests instrumentation with header capture on: with the sanitize list
of ``otel_sanitize_fields`` every injected header is "[REDACTED]" on the span; without it
the secrets are span attributes (the leak the list closes)."""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pytest
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util.http import SanitizeValue

from securesession import (
    Credential,
    MasterKey,
    Registry,
    SecureSession,
    ServiceEntry,
    open_registry,
)
from securesession.integrations import injected_header_names, otel_sanitize_fields
from securesession.integrations.otel import SANITIZE_FIELDS_ENV
from securesession.testing import GatewayServer

from ..secretscan import leaks

CAPTURE_ENV = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST"
GATEWAY = ("bridge", "gw-SECRET")
REQUEST = ("alice", "alice-SECRET")
BASIC = "Basic " + base64.b64encode(f"{REQUEST[0]}:{REQUEST[1]}".encode()).decode()
# span attribute -> the value injected for it
INJECTED = {
    "http.request.header.x_gateway_user": GATEWAY[0],
    "http.request.header.x_gateway_password": GATEWAY[1],
    "http.request.header.authorization": BASIC,
}
ORDERS_KEY = ("http.request.header.x_api_key", "key-SECRET")
BILLING_KEY = ("http.request.header.x_billing_token", "billing-SECRET")
CAPTURE = {
    "all": ".*",
    "a list": "User-Agent,X-Gateway-User,X-Gateway-Password,Authorization,X-Api-Key,"
    "X-Billing-Token",
}


@pytest.fixture
def registry() -> Iterator[Registry]:
    registry = open_registry("memory://", MasterKey.generate())
    yield registry
    registry.close()


@pytest.fixture
def server() -> Iterator[GatewayServer]:
    with GatewayServer(expect_gateway=GATEWAY, expect_request=REQUEST) as server:
        yield server


def put(registry: Registry, server: GatewayServer) -> None:
    for path, (_, value), name in (
        ("/orders", ORDERS_KEY, "X-Api-Key"),
        ("/billing", BILLING_KEY, "X-Billing-Token"),
    ):
        registry.put(
            ServiceEntry(
                url=server.url + path,
                gateway=Credential(*GATEWAY),
                request=Credential(*REQUEST),
                secret_headers={name: value},
            )
        )


@contextmanager
def traced(
    monkeypatch: pytest.MonkeyPatch, capture: str, sanitize: str | None
) -> Iterator[InMemorySpanExporter]:
    """RequestsInstrumentor, reading the environment as it does: at instrument()."""
    monkeypatch.setenv(CAPTURE_ENV, capture)
    if sanitize is None:
        monkeypatch.delenv(SANITIZE_FIELDS_ENV, raising=False)
    else:
        monkeypatch.setenv(SANITIZE_FIELDS_ENV, sanitize)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = RequestsInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        yield exporter
    finally:
        instrumentor.uninstrument()
        provider.shutdown()


def attributes(exporter: InMemorySpanExporter) -> list[Mapping[str, Any]]:
    spans = exporter.get_finished_spans()
    return [dict(span.attributes or {}) for span in sorted(spans, key=lambda s: s.start_time or 0)]


def call(registry: Registry, server: GatewayServer) -> None:
    """Two requests under two entries (two spans), each accepted by the gateway."""
    with SecureSession(registry) as session:
        for path in ("/orders/7", "/billing/7"):
            assert session.get(server.url + path, timeout=5).status_code == 200
    assert [r.path for r in server.requests] == ["/orders/7", "/billing/7"]
    assert [r.header("X-Billing-Token") for r in server.requests] == [None, BILLING_KEY[1]]


@pytest.mark.parametrize("capture", sorted(CAPTURE), ids=sorted(CAPTURE))
def test_the_sanitize_list_redacts_every_injected_header(
    capture: str, registry: Registry, server: GatewayServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    put(registry, server)
    with traced(monkeypatch, CAPTURE[capture], otel_sanitize_fields(registry)) as exporter:
        call(registry, server)
    orders, billing = attributes(exporter)
    for span, (key, _) in ((orders, ORDERS_KEY), (billing, BILLING_KEY)):
        assert not leaks(repr(span))
        for name in (*INJECTED, key):
            assert span[name] == ("[REDACTED]",)
        # Capture is on, and the list redacts only what it names.
        assert span["http.request.header.user_agent"][0].startswith("python-requests/")


def test_without_the_sanitize_list_the_secrets_are_span_attributes(
    registry: Registry, server: GatewayServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    put(registry, server)
    with traced(monkeypatch, ".*", None) as exporter:
        call(registry, server)
    orders, billing = attributes(exporter)
    for span, (key, value) in ((orders, ORDERS_KEY), (billing, BILLING_KEY)):
        assert leaks(repr(span))
        for name, injected in (*INJECTED.items(), (key, value)):
            assert span[name] == (injected,)


def test_sanitize_fields_match_their_headers_as_opentelemetry_reads_them() -> None:
    entry = ServiceEntry(
        url="https://gw.example/a",
        gateway=Credential(*GATEWAY),
        gateway_headers=("X-Bridge.User", "X-Key$"),
        secret_headers={"X-Api-Key": "key-SECRET", "X|Token*": "t-SECRET"},
    )
    fields = otel_sanitize_fields([entry])
    assert fields.split(",")[:3] == ["Authorization", "Proxy-Authorization", "X-Api-Key"]
    sanitizer = SanitizeValue(fields.split(","))
    for name in injected_header_names([entry]):
        assert sanitizer.sanitize_header_value(name, "v") == "[REDACTED]"
        assert sanitizer.sanitize_header_value(name.lower(), "v") == "[REDACTED]"
    assert sanitizer.sanitize_header_value("Accept", "v") == "v"
    # Unescaped, "X-Key$" would be a pattern that does not match the header X-Key$.
    assert SanitizeValue(["X-Key$"]).sanitize_header_value("X-Key$", "v") == "v"
