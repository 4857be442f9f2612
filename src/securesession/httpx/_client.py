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

from collections.abc import Coroutine, Mapping
from typing import Any, Final, Generic, TypeVar

import httpx

from .._compat import Unpack
from .._entry import ServiceEntry
from .._guard import EntrySource, GuardControls, split_guard_options
from ._core import EXTENSION, Chain, HttpxGuard
from ._options import AsyncClientOptions, ClientOptions
from ._transport import AsyncSecureTransport, SecureTransport, _Options

__all__ = ["SecureAsyncClient", "SecureClient"]

_MOUNTS_ARGUMENT = "mounts"

#: The guarded transport of a client's routes.
R = TypeVar("R", SecureTransport, AsyncSecureTransport)


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


class _GuardedClient(GuardControls[HttpxGuard], Generic[R]):
    """What :class:`SecureClient` and :class:`SecureAsyncClient` share: one guard, and
    every route of the client (its default one, each proxy, each ``mounts=``
    transport) a guarded transport over it, built by the client's :meth:`_route`."""

    def _guarded(self, registry: EntrySource, options: Mapping[str, Any]) -> dict[str, Any]:
        """Make the client's guard from the guard's keywords among *options*; return the
        others, for httpx, with each ``mounts=`` transport routed through the guard."""
        guard_options, client_options = split_guard_options(options)
        self._guard = HttpxGuard(registry, **guard_options)
        mounts = client_options.get(_MOUNTS_ARGUMENT)
        if mounts is not None:
            route_options = _Options.of_route(client_options)
            client_options[_MOUNTS_ARGUMENT] = {
                pattern: None if transport is None else self._route(transport, route_options)
                for pattern, transport in mounts.items()
            }
        return client_options

    def _route(self, transport: Any, options: _Options) -> R:
        """A route over *transport* (``None``: httpx's own, built from *options*)."""
        raise NotImplementedError

    # httpx's construction hooks, called with its transport arguments as keywords.

    def _init_transport(self, *args: Any, **kwargs: Any) -> R:
        return self._route(kwargs.get("transport"), _Options.of_route(kwargs))

    def _init_proxy_transport(self, proxy: Any, *args: Any, **kwargs: Any) -> R:
        return self._route(None, _Options.of_route(kwargs, proxy))


class SecureClient(_GuardedClient[SecureTransport], httpx.Client):
    """An ``httpx.Client`` that looks every request's URL up in *registry* and injects
    the matching entry's credentials, over the entry's TLS profile.

    The guard runs in the transport, for every request whoever built it: each redirect
    hop (httpx copies headers across hops; the guard removes another entry's values and
    adds the new URL's own), a Digest or NTLM leg, ``client.send(response.request)``,
    headers copied from a response to another call. After an https → http hop nothing
    is injected for the rest of the chain. A header or ``auth=`` the caller gives wins.

    The keyword arguments are :class:`ClientOptions`: the guard's
    (:class:`~securesession.GuardOptions`: *cache_ttl*, *cache_maxsize*, *strict*,
    *timer*, *stale_on_error*) and ``httpx.Client``'s, which mean what they mean there
    (``verify=``/``cert=`` apply to URLs whose entry has no TLS profile); a keyword
    that is neither raises ``TypeError``. ``transport=`` replaces the inner transport
    of the default route (``httpx.MockTransport`` in tests); ``mounts=`` transports
    are wrapped the same way.

    The client does not close *registry*: whoever opened it closes it.
    """

    def __init__(self, registry: EntrySource, **options: Unpack[ClientOptions]) -> None:
        super().__init__(**self._guarded(registry, options))

    def _route(self, transport: httpx.BaseTransport | None, options: _Options) -> SecureTransport:
        return SecureTransport._sharing(self._guard, transport, options)

    def send(
        self, request: httpx.Request, *, auth: Any = httpx.USE_CLIENT_DEFAULT, **kwargs: Any
    ) -> httpx.Response:
        return super().send(request, auth=_caller_auth(request, auth, self.auth), **kwargs)

    def entry_for(self, url: str) -> ServiceEntry | None:
        """The decrypted entry *url* matches (from this client's cache, at the
        registry's current revision), or ``None`` if no entry matches."""
        plan = self._guard.plan_for(url)
        return None if plan is None else plan.entry


class SecureAsyncClient(_GuardedClient[AsyncSecureTransport], httpx.AsyncClient):
    """The ``httpx.AsyncClient`` twin of :class:`SecureClient`; its keyword arguments
    are :class:`AsyncClientOptions`, and *offload_lookups*.

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
        offload_lookups: bool = False,
        **options: Unpack[AsyncClientOptions],
    ) -> None:
        self._offload_lookups = offload_lookups
        # One single-flight table for every route of the client: they share the cache.
        self._flights: dict[Any, Any] = {}
        super().__init__(**self._guarded(registry, options))

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
