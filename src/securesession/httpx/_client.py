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
from typing import Any, Final

import httpx

from .._entry import ServiceEntry
from .._guard import EntrySource, GuardControls
from ._core import EXTENSION, Chain, HttpxGuard
from ._transport import AsyncSecureTransport, SecureTransport, _Options

__all__ = ["SecureAsyncClient", "SecureClient"]

_MOUNTS_ARGUMENT = "mounts"


#: httpx's own "no authentication" (what it sends with when there is no ``auth=`` and
#: no user information in the URL).
_NO_AUTH: Final = httpx.Auth()


def _caller_auth(request: httpx.Request, auth: Any, client_auth: Any) -> Any:
    """Tell the transport whether this send has an ``auth=`` of the caller's (the
    call's, or the client's); return the ``auth=`` to hand on to httpx's ``send``.

    That is *auth* itself, except when there is none at all and the URL has no user
    information: then httpx's no-op ``Auth()``, which httpx would resolve it to
    anyway, after parsing the URL's (empty) user name and password on every request.
    A URL with user information keeps httpx's own handling (Basic from it), whose
    ``Authorization`` header the transport then sees as the caller's."""
    given = client_auth if auth is httpx.USE_CLIENT_DEFAULT else auth
    chain = request.extensions.get(EXTENSION)
    if given is None:
        if type(chain) is Chain:
            chain.caller_auth = chain.hop_caller_auth = False
        # else: no chain is the same as one without caller auth (see HttpxGuard.begin)
        return auth if request.url.userinfo else _NO_AUTH
    if type(chain) is Chain:
        chain.caller_auth = chain.hop_caller_auth = True
    else:
        request.extensions[EXTENSION] = Chain(caller_auth=True)
    return auth


def _route_options(kwargs: Mapping[str, Any], proxy: Any = None) -> _Options:
    """httpx's transport arguments (as it passes them to its hooks) as our options."""
    return _Options(
        kwargs.get("verify", True),
        kwargs.get("cert"),
        kwargs.get("trust_env", True),
        kwargs.get("http1", True),
        kwargs.get("http2", False),
        kwargs.get("limits", httpx.Limits(max_connections=100, max_keepalive_connections=20)),
        proxy,
        0,
    )


class SecureClient(GuardControls[HttpxGuard], httpx.Client):
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
        self._guard = HttpxGuard(registry, cache_ttl, cache_maxsize, strict, timer, stale_on_error)
        mounts = client_options.pop(_MOUNTS_ARGUMENT, None)
        if mounts is not None:
            options = _route_options(client_options)
            client_options[_MOUNTS_ARGUMENT] = {
                pattern: None
                if transport is None
                else SecureTransport._sharing(self._guard, transport, options)
                for pattern, transport in mounts.items()
            }
        super().__init__(**client_options)

    def _init_transport(self, *args: Any, **kwargs: Any) -> httpx.BaseTransport:
        transport = kwargs.get("transport")
        return SecureTransport._sharing(self._guard, transport, _route_options(kwargs))

    def _init_proxy_transport(self, proxy: Any, *args: Any, **kwargs: Any) -> httpx.BaseTransport:
        return SecureTransport._sharing(self._guard, None, _route_options(kwargs, proxy))

    def send(
        self, request: httpx.Request, *, auth: Any = httpx.USE_CLIENT_DEFAULT, **kwargs: Any
    ) -> httpx.Response:
        return super().send(request, auth=_caller_auth(request, auth, self.auth), **kwargs)

    def entry_for(self, url: str) -> ServiceEntry | None:
        """The decrypted entry *url* matches (from this client's cache, at the
        registry's current revision), or ``None`` if no entry matches."""
        plan = self._guard.plan_for(url)
        return None if plan is None else plan.entry


class SecureAsyncClient(GuardControls[HttpxGuard], httpx.AsyncClient):
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
        self._guard = HttpxGuard(registry, cache_ttl, cache_maxsize, strict, timer, stale_on_error)
        self._offload_lookups = offload_lookups
        # One single-flight table for every route of the client: they share the cache.
        self._flights: dict[Any, Any] = {}
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
            self._guard,
            transport,
            options,
            offload_lookups=self._offload_lookups,
            flights=self._flights,
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
        return super().send(request, auth=_caller_auth(request, auth, self.auth), **kwargs)

    async def entry_for(self, url: str) -> ServiceEntry | None:
        """The decrypted entry *url* matches, or ``None``; decrypts off the event loop."""
        transport = self._transport
        assert isinstance(transport, AsyncSecureTransport)
        plan = await transport._plan_for(url)
        return None if plan is None else plan.entry
