"""``SecureClient`` and ``SecureAsyncClient``: ``httpx.Client`` and ``httpx.AsyncClient``
whose every transport is a guarded one.

httpx picks a transport per URL: the default one, one per proxy (``proxy=``, or the
``HTTPS_PROXY``-style variables with ``trust_env``) and whatever ``mounts=`` names.
A redirect from an entry's URL to a URL served by an unguarded transport would carry
the entry's headers there, so these clients build every one of them as a
:class:`~._transport.SecureTransport` (or its async twin) over one shared guard:
the default and proxy transports through httpx's own construction hooks (so env
proxies, ``NO_PROXY`` and ``proxy=`` behave exactly as with httpx), and each
``mounts=`` transport wrapped as the inner transport of a guarded one.

They also tell the guard, before the first leg, that the caller gave ``auth=``
(which a bare transport can only infer from an ``Authorization`` header, too late for
a Digest handshake of the caller's own).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import httpx

from .._entry import ServiceEntry
from .._guard import EntrySource
from .._session import CacheInfo
from ._core import EXTENSION, Chain, HttpxGuard
from ._transport import AsyncSecureTransport, SecureTransport, _Options, _options

__all__ = ["SecureAsyncClient", "SecureClient"]

_MOUNTS_ARGUMENT = "mounts"


def _mark_caller_auth(request: httpx.Request, auth: Any, client_auth: Any) -> None:
    """Tell the transport whether this send has an ``auth=`` of the caller's."""
    given = client_auth if auth is httpx.USE_CLIENT_DEFAULT else auth
    caller = given is not None
    chain = request.extensions.get(EXTENSION)
    if type(chain) is Chain:
        chain.caller_auth = chain.hop_caller_auth = caller
    elif caller:
        request.extensions[EXTENSION] = Chain(caller_auth=True)
    # else: no chain is the same as one without caller auth (see HttpxGuard.begin)


class _Front:
    """What both clients add to httpx's: the cache and the settings of the guard."""

    _securesession: HttpxGuard

    @property
    def registry(self) -> EntrySource:
        return self._securesession.registry

    @property
    def strict(self) -> bool:
        return self._securesession.strict

    @strict.setter
    def strict(self, value: bool) -> None:
        self._securesession.strict = value

    @property
    def stale_on_error(self) -> float:
        return self._securesession.stale_on_error

    def clear_cache(self) -> None:
        """Forget every decrypted entry; the next request to each decrypts again."""
        self._securesession.cache.clear()

    def cache_info(self) -> CacheInfo:
        cache = self._securesession.cache
        return CacheInfo(cache.hits, cache.loads, len(cache))


def _guard(
    registry: EntrySource,
    cache_ttl: float,
    cache_maxsize: int,
    strict: bool,
    timer: Callable[[], float],
    stale_on_error: float,
) -> HttpxGuard:
    return HttpxGuard(
        registry,
        cache_ttl=cache_ttl,
        cache_maxsize=cache_maxsize,
        strict=strict,
        timer=timer,
        stale_on_error=stale_on_error,
    )


def _route_options(kwargs: Mapping[str, Any], proxy: Any = None) -> _Options:
    """httpx's transport arguments (as it passes them to its hooks) as our options."""
    return _options(
        kwargs.get("verify", True),
        kwargs.get("cert"),
        kwargs.get("trust_env", True),
        kwargs.get("http1", True),
        kwargs.get("http2", False),
        kwargs.get("limits", httpx.Limits(max_connections=100, max_keepalive_connections=20)),
        proxy,
        0,
    )


class SecureClient(_Front, httpx.Client):
    """An ``httpx.Client`` that looks every request's URL up in *registry* and injects
    the matching entry's credentials, over the entry's TLS profile.

    The guard runs in the transport, for every request whoever built it: each redirect
    hop (httpx copies headers across hops; the guard removes another entry's values and
    adds the new URL's own), a Digest or NTLM leg, ``client.send(response.request)``,
    headers copied from a response to another call. After an https → http hop nothing
    is injected for the rest of the chain. A header or ``auth=`` the caller gives wins.

    *cache_ttl*, *cache_maxsize*, *strict*, *timer* and *stale_on_error* are
    :class:`~securesession.SecureSession`'s; every other argument is ``httpx.Client``'s
    and means what it means there (``verify=``/``cert=`` apply to URLs whose entry has
    no TLS profile). ``transport=`` replaces the inner transport of the default route
    (``httpx.MockTransport`` in tests); ``mounts=`` transports are wrapped the same way.

    The client does not close *registry*: whoever opened it closes it.
    """

    def __init__(
        self,
        registry: EntrySource,
        *,
        cache_ttl: float = 300.0,
        cache_maxsize: int = 1024,
        strict: bool = False,
        timer: Callable[[], float] = time.monotonic,
        stale_on_error: float = 0.0,
        **client_options: Any,
    ) -> None:
        self._securesession = _guard(
            registry, cache_ttl, cache_maxsize, strict, timer, stale_on_error
        )
        mounts = client_options.pop(_MOUNTS_ARGUMENT, None)
        if mounts is not None:
            options = _route_options(client_options)
            client_options[_MOUNTS_ARGUMENT] = {
                pattern: None
                if transport is None
                else SecureTransport._sharing(self._securesession, transport, options)
                for pattern, transport in mounts.items()
            }
        super().__init__(**client_options)

    def _init_transport(self, *args: Any, **kwargs: Any) -> httpx.BaseTransport:
        transport = kwargs.get("transport")
        return SecureTransport._sharing(self._securesession, transport, _route_options(kwargs))

    def _init_proxy_transport(self, proxy: Any, *args: Any, **kwargs: Any) -> httpx.BaseTransport:
        return SecureTransport._sharing(self._securesession, None, _route_options(kwargs, proxy))

    def send(
        self, request: httpx.Request, *, auth: Any = httpx.USE_CLIENT_DEFAULT, **kwargs: Any
    ) -> httpx.Response:
        _mark_caller_auth(request, auth, self.auth)
        return super().send(request, auth=auth, **kwargs)

    def entry_for(self, url: str) -> ServiceEntry | None:
        """The decrypted entry *url* matches (from this client's cache, at the
        registry's current revision), or ``None`` if no entry matches."""
        plan = self._securesession.plan_for(url)
        return None if plan is None else plan.entry


class SecureAsyncClient(_Front, httpx.AsyncClient):
    """The ``httpx.AsyncClient`` twin of :class:`SecureClient`.

    Registry I/O and decryption stay off the event loop: warm requests do neither (the
    registry's lookup is its in-memory hot path, the cache read never waits); a miss
    decrypts in a worker thread, once however many tasks miss the same entry.
    *offload_lookups* sends every lookup to a worker thread as well, for a registry
    whose lookups do network I/O.
    """

    def __init__(
        self,
        registry: EntrySource,
        *,
        cache_ttl: float = 300.0,
        cache_maxsize: int = 1024,
        strict: bool = False,
        timer: Callable[[], float] = time.monotonic,
        stale_on_error: float = 0.0,
        offload_lookups: bool = False,
        **client_options: Any,
    ) -> None:
        self._securesession = _guard(
            registry, cache_ttl, cache_maxsize, strict, timer, stale_on_error
        )
        self._offload_lookups = offload_lookups
        # One single-flight table for every route of the client: they share the cache.
        self._securesession_flights: dict[Any, Any] = {}
        mounts = client_options.pop(_MOUNTS_ARGUMENT, None)
        if mounts is not None:
            options = _route_options(client_options)
            client_options[_MOUNTS_ARGUMENT] = {
                pattern: None if transport is None else self._route(transport, options)
                for pattern, transport in mounts.items()
            }
        super().__init__(**client_options)

    def _route(
        self, transport: httpx.AsyncBaseTransport | None, options: _Options
    ) -> AsyncSecureTransport:
        return AsyncSecureTransport._sharing(
            self._securesession,
            transport,
            options,
            offload_lookups=self._offload_lookups,
            flights=self._securesession_flights,
        )

    def _init_transport(self, *args: Any, **kwargs: Any) -> httpx.AsyncBaseTransport:
        return self._route(kwargs.get("transport"), _route_options(kwargs))

    def _init_proxy_transport(
        self, proxy: Any, *args: Any, **kwargs: Any
    ) -> httpx.AsyncBaseTransport:
        return self._route(None, _route_options(kwargs, proxy))

    def send(
        self, request: httpx.Request, *, auth: Any = httpx.USE_CLIENT_DEFAULT, **kwargs: Any
    ) -> Coroutine[Any, Any, httpx.Response]:
        # Not a coroutine of its own: httpx's send, returned as is, so no extra frame
        # is resumed at each await of the request's I/O.
        _mark_caller_auth(request, auth, self.auth)
        return super().send(request, auth=auth, **kwargs)

    async def entry_for(self, url: str) -> ServiceEntry | None:
        """The decrypted entry *url* matches, or ``None``; decrypts off the event loop."""
        transport = self._transport
        assert isinstance(transport, AsyncSecureTransport)
        plan = await transport._plan_for(url)
        return None if plan is None else plan.entry
