"""injected_header_names: the redaction list for recorders, caches and tracers."""

from __future__ import annotations

from securesession import Credential, MasterKey, SecureSession, ServiceEntry, open_registry
from securesession.integrations import injected_header_names


def test_names_cover_every_mode_and_secret_header() -> None:
    registry = open_registry("memory://", MasterKey.generate())
    registry.put(
        ServiceEntry(
            url="https://gw.example/a",
            gateway=Credential("g", "g-SECRET"),
            request=Credential("u", "u-SECRET"),
            secret_headers={"X-Api-Key": "k-SECRET"},
        )
    )
    registry.put(
        ServiceEntry(
            url="https://gw.example/b",
            gateway=Credential("", "t-SECRET"),
            gateway_headers=("X-Bridge-User", "x-bridge-key"),
            request=Credential("u", "u-SECRET"),
            request_auth="headers",
            request_headers=("X-Request-User", "X-Request-Token"),
        )
    )
    expected = (
        "Authorization",
        "Proxy-Authorization",
        "X-Api-Key",
        "x-bridge-key",
        "X-Bridge-User",
        "X-Gateway-Password",
        "X-Gateway-User",
        "X-Request-Token",
        "X-Request-User",
    )
    assert injected_header_names(registry) == expected
    with SecureSession(registry) as session:
        assert injected_header_names(session) == expected
    assert injected_header_names(list(registry.entries())[:1]) == (
        "Authorization",
        "Proxy-Authorization",
        "X-Api-Key",
        "X-Gateway-Password",
        "X-Gateway-User",
    )
    registry.close()


def test_an_empty_registry_still_redacts_authorization() -> None:
    registry = open_registry("memory://", MasterKey.generate())
    assert injected_header_names(registry) == ("Authorization", "Proxy-Authorization")
    registry.close()
