"""The keyword arguments of the httpx front-end's constructors, as typed dictionaries.

Each constructor takes ``**options: Unpack[...]`` of one of these: type checkers check
every keyword as they would on httpx's own signature, and the guard's keywords
(:class:`~securesession.GuardOptions`) are declared once for every front-end.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypedDict

import httpx

from .._guard import GuardOptions

if TYPE_CHECKING:
    # httpx's own annotations of these arguments (not exported by httpx; only read here).
    from httpx._types import (
        AuthTypes,
        CertTypes,
        CookieTypes,
        HeaderTypes,
        ProxyTypes,
        QueryParamTypes,
        TimeoutTypes,
    )

__all__ = ["AsyncClientOptions", "ClientOptions", "TransportOptions"]


class _ConnectionOptions(TypedDict, total=False):
    """How connections are made: the arguments ``httpx.Client`` and
    ``httpx.HTTPTransport`` share (they apply to URLs whose entry has no TLS profile)."""

    verify: ssl.SSLContext | str | bool
    cert: CertTypes | None
    trust_env: bool
    http1: bool
    http2: bool
    limits: httpx.Limits
    proxy: ProxyTypes | None


class TransportOptions(GuardOptions, _ConnectionOptions, total=False):
    """The keyword arguments of :class:`~securesession.httpx.SecureTransport` and
    :class:`~securesession.httpx.AsyncSecureTransport` (besides ``transport=``, and
    ``offload_lookups=`` of the async one).

    The keys of :class:`~securesession.GuardOptions` (*cache_ttl*, *cache_maxsize*,
    *strict*, *timer*, *stale_on_error*), and ``httpx.HTTPTransport``'s *verify*,
    *cert*, *trust_env*, *http1*, *http2*, *limits*, *proxy* and *retries*, with
    httpx's meanings and defaults; they build the inner transport, for URLs whose entry
    has no TLS profile (a profile decides all of TLS for its entry).
    """

    retries: int


class _ClientOptions(GuardOptions, _ConnectionOptions, total=False):
    """What ``httpx.Client`` and ``httpx.AsyncClient`` take alike."""

    auth: AuthTypes | None
    params: QueryParamTypes | None
    headers: HeaderTypes | None
    cookies: CookieTypes | None
    timeout: TimeoutTypes
    follow_redirects: bool
    max_redirects: int
    event_hooks: Mapping[str, list[Callable[..., Any]]] | None
    base_url: httpx.URL | str
    default_encoding: str | Callable[[bytes], str]


class ClientOptions(_ClientOptions, total=False):
    """The keyword arguments of :class:`~securesession.httpx.SecureClient`.

    The keys of :class:`~securesession.GuardOptions` (*cache_ttl*, *cache_maxsize*,
    *strict*, *timer*, *stale_on_error*), and every keyword argument of
    ``httpx.Client``, which means what it means there: *auth*, *params*, *headers*,
    *cookies*, *verify*, *cert*, *trust_env*, *http1*, *http2*, *proxy*, *mounts*,
    *timeout*, *follow_redirects*, *limits*, *max_redirects*, *event_hooks*,
    *base_url*, *transport*, *default_encoding*.
    """

    mounts: Mapping[str, httpx.BaseTransport | None] | None
    transport: httpx.BaseTransport | None


class AsyncClientOptions(_ClientOptions, total=False):
    """The keyword arguments of :class:`~securesession.httpx.SecureAsyncClient` (besides
    ``offload_lookups=``): :class:`ClientOptions`' keys, with ``httpx.AsyncClient``'s
    async transports for *mounts* and *transport*."""

    mounts: Mapping[str, httpx.AsyncBaseTransport | None] | None
    transport: httpx.AsyncBaseTransport | None
