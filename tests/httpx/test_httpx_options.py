"""The keyword arguments of SecureClient, SecureAsyncClient and the transports: typed
(GuardOptions plus httpx's own), refused when unknown, and each handed to the guard
or to httpx."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest

from securesession import GuardOptions, Registry
from securesession.httpx import (
    AsyncClientOptions,
    AsyncSecureTransport,
    ClientOptions,
    SecureAsyncClient,
    SecureClient,
    SecureTransport,
    TransportOptions,
)
from securesession.httpx._transport import _Options

from ..guard_options import Clock, add_entries, check_guard_options, guard_options

GUARD_KEYS = GuardOptions.__optional_keys__


def _keywords(function: Callable[..., Any]) -> set[str]:
    parameters = inspect.signature(function).parameters.values()
    return {p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}


def test_every_guard_keyword_reaches_the_clients_guard(registry: Registry) -> None:
    add_entries(registry)
    clock = Clock()
    with SecureClient(registry, timeout=3, **guard_options(clock)) as client:
        check_guard_options(clock, client, client.entry_for, lambda: client.cache_info().loads)
        assert client.timeout == httpx.Timeout(3)


def test_every_guard_keyword_reaches_the_async_clients_guard(registry: Registry) -> None:
    add_entries(registry)
    clock = Clock()
    client = SecureAsyncClient(registry, offload_lookups=True, **guard_options(clock))
    assert client._offload_lookups is True

    def entry_for(url: str) -> object:
        return anyio.run(client.entry_for, url)

    check_guard_options(clock, client, entry_for, lambda: client.cache_info().loads)
    anyio.run(client.aclose)


@pytest.mark.parametrize("kind", [SecureTransport, AsyncSecureTransport])
def test_every_keyword_of_a_transport_reaches_its_guard_or_httpx(
    registry: Registry, kind: type[SecureTransport] | type[AsyncSecureTransport]
) -> None:
    add_entries(registry)
    clock = Clock()
    limits = httpx.Limits(max_connections=3)
    transport = kind(
        registry, verify=False, http2=True, limits=limits, retries=2, **guard_options(clock)
    )
    lookup = transport._guard.plan_for
    check_guard_options(clock, transport, lookup, lambda: transport.cache_info().loads)
    assert transport._options == _Options(verify=False, http2=True, limits=limits, retries=2)


def test_the_0_1_0_keyword_calls_still_work(registry: Registry) -> None:
    with SecureClient(
        registry, cache_ttl=5, timeout=3, headers={"X-App": "a"}, follow_redirects=True
    ) as client:
        assert client.headers["X-App"] == "a"
        assert client.follow_redirects is True
    transport = AsyncSecureTransport(registry, strict=True, offload_lookups=True, http2=True)
    assert transport.strict and transport.offload_lookups


def test_unknown_keywords_raise_type_error_naming_them(registry: Registry) -> None:
    # Each ignore is itself checked: mypy --strict reports it unused if the keyword
    # stopped being a type error.
    with pytest.raises(TypeError, match="'timeuot'"):
        SecureClient(registry, timeuot=3)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="'cache_tl'"):
        SecureAsyncClient(registry, cache_tl=3)  # type: ignore[call-arg]
    # The message names the class the caller called, not an internal one.
    with pytest.raises(TypeError, match=r"^SecureTransport\(\) got an .* argument 'retry'$"):
        SecureTransport(registry, retry=2)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"^AsyncSecureTransport\(\) .* 'follow_redirects'$"):
        AsyncSecureTransport(registry, follow_redirects=True)  # type: ignore[call-arg]


def test_the_options_are_httpx_own_plus_the_guards() -> None:
    """The typed dictionaries, the transports' _Options and httpx's signatures stay in
    step (a new httpx keyword shows here first)."""
    assert TransportOptions.__optional_keys__ >= GUARD_KEYS
    transport_keys = TransportOptions.__optional_keys__ - GUARD_KEYS
    assert transport_keys == {field.name for field in dataclasses.fields(_Options)}
    assert transport_keys <= set(inspect.signature(httpx.HTTPTransport).parameters)
    for options, client in ((ClientOptions, httpx.Client), (AsyncClientOptions, httpx.AsyncClient)):
        assert options.__optional_keys__ >= GUARD_KEYS
        assert options.__optional_keys__ - GUARD_KEYS == _keywords(client.__init__)
