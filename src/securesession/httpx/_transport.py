"""``SecureTransport`` and ``AsyncSecureTransport``: the guard and each entry's TLS, at
the one place every httpx request passes.

For every request: the guard (:class:`~._core.HttpxGuard`) makes it carry exactly its
own URL's entry; then it goes out through

* the inner transport given as ``transport=`` or, by default, an
  ``httpx.HTTPTransport`` built from ``verify``/``cert``/``http2``/``limits``/``proxy``,
  for URLs with no entry and entries without a TLS profile;
* for an entry with a TLS profile, a transport of that profile's own: one
  ``ssl.SSLContext`` built by :func:`~securesession._tls.build_context` (client
  certificate, versions, CA scope, CRL), one connection pool over it, and a network
  backend that checks the server key pins after the handshake, before the first
  request byte (:mod:`._network`). A new profile (a rotated certificate) gets a new
  context and pool; the old pool is closed.

Challenge handlers (Digest, NTLM) are driven here, leg by leg, on the request's own
URL and over its entry's transport, so they never answer a challenge from another
URL and every leg travels on the entry's keep-alive connection. A 401 or 407 from a
matched entry reloads the entry once and retries once if the stored credentials
changed (first request of a chain only, replayable bodies only).

The async transport never blocks its event loop on registry I/O or decryption once
an entry is warm: the lookup is the registry's hot path (memory, a memoised SQLite
probe, a LISTEN-fed index), the cache read never waits, and a miss (decryption,
building a context, diagnosing a handshake failure) runs in a worker thread, one
per entry revision however many tasks miss together. A registry whose lookup does
network I/O can be sent to a worker thread too: ``offload_lookups=True``.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple, NoReturn, TypeVar

import anyio
import anyio.to_thread
import httpx

from .._compat import Unpack
from .._entry import ServiceEntry
from .._exceptions import ConfigurationError, TLSConfigError
from .._guard import (
    GUARD_OPTIONS,
    EntrySource,
    GuardControls,
    GuardOptions,
    Snapshot,
    refuse_unknown_keywords,
    split_guard_options,
)
from .._registry import EntryRef
from .._tls import (
    ProfileContext,
    TLSProfile,
    build_context,
    describe_iis_403,
    diagnose,
    find_ssl_error,
    iis_substatus,
)
from .._urls import redacted_url as where
from ._core import EXTENSION, REDIRECTS, Chain, HttpxGuard
from ._network import CheckingAsyncBackend, CheckingBackend
from ._options import TransportOptions
from ._plan import HttpxPlan

__all__ = ["AsyncSecureTransport", "SecureTransport"]

logger = logging.getLogger("securesession")

_REFRESH_STATUSES: Final = frozenset({401, 407})
# A 403 body larger than this is not searched for an IIS sub-status.
_MAX_403_BODY: Final = 64 * 1024
#: An inline lookup slower than this (seconds) blocked the event loop: say so, once.
_SLOW_LOOKUP: Final = 0.001
#: Inline lookups watched together; a tenth of them slow is a slow registry.
_LOOKUP_WINDOW: Final = 100

T = TypeVar("T")
Transport = TypeVar("Transport", httpx.BaseTransport, httpx.AsyncBaseTransport)


@dataclass(frozen=True)
class _Slot:
    profile: TLSProfile
    revision: int
    context: ProfileContext
    transport: Any  # httpx.HTTPTransport or httpx.AsyncHTTPTransport


#: Where a request goes: a transport, and the profile context it applies (if any).
_RouteTo = tuple[Any, ProfileContext | None]


class _Warm(NamedTuple):
    """A URL's answer kept for the warm path (:meth:`_Route._warm_start`): the plan it
    was served with and its route, reusable until *until* while the guard's
    :meth:`~securesession._guard.EntryGuard.still_holds` says *snapshot* holds. The
    plan (decrypted values) is held weakly: only the cache keeps it alive, so its TTL
    still bounds how long the values stay in memory."""

    snapshot: Snapshot
    until: float
    plan: weakref.ref[HttpxPlan]
    route: _RouteTo


#: Where a request's way through a route starts, warm or cold: the plan it matched,
#: the plan it is served with (``None`` after an https → http hop), its redirect chain,
#: whether the caller gave ``auth=``, whether the plan's challenge handler answers,
#: whether a 401 may reload the entry, and its route (``None``: the entry's profile
#: slot must be built first). A plain tuple: a NamedTuple's constructor is one more
#: Python call on the warm path.
_Start = tuple[HttpxPlan | None, HttpxPlan | None, Chain | None, bool, bool, bool, _RouteTo | None]


#: URLs whose answers a route keeps for the warm path (all forgotten when it fills).
_WARM_URLS: Final = 1024

# The warm path's key is the parsed URL httpx keeps (a tuple: scheme, user
# information, host, port, path, query, fragment) without its query and fragment,
# which no lookup reads; it is what str(request.url) is made of. Checked once, here.
_probe = httpx.URL("https://u@h:1/p?q#f")._uri_reference
if not (
    isinstance(_probe, tuple) and _probe[:5] == ("https", "u", "h", 1, "/p")
):  # pragma: no cover
    raise ImportError(
        f"securesession.httpx does not support httpx {httpx.__version__}: its URL "
        "layout changed; install a version the 'httpx' extra names"
    )
del _probe


_DEFAULT_LIMITS: Final = httpx.Limits(max_connections=100, max_keepalive_connections=20)


@dataclass(frozen=True)
class _Options:
    """How inner transports are built: the ``httpx.HTTPTransport`` arguments of
    :class:`~._options.TransportOptions`, with httpx's defaults."""

    verify: Any = True
    cert: Any = None
    trust_env: bool = True
    http1: bool = True
    http2: bool = False
    # httpx.Limits defines __eq__ without __hash__, which a dataclass default may not.
    limits: httpx.Limits = field(default_factory=lambda: _DEFAULT_LIMITS)
    proxy: Any = None
    retries: int = 0

    @classmethod
    def of_route(cls, arguments: Mapping[str, Any], proxy: Any = None) -> _Options:
        """The options of one route of a client: those among *arguments* (the client's
        keywords, or what httpx passes its transport hooks), through the route's own
        *proxy*."""
        known = {name: value for name, value in arguments.items() if name in _OPTION_NAMES}
        known["proxy"] = proxy
        return cls(**known)

    def default_transport(self, *, asynchronous: bool) -> Any:
        """The inner transport for URLs without a TLS profile: httpx's own."""
        return self._transport(
            asynchronous, verify=self.verify, cert=self.cert, trust_env=self.trust_env
        )

    def profile_transport(self, context: ProfileContext, *, asynchronous: bool) -> Any:
        """The transport of one TLS profile: its context, and the pins checked."""
        transport = self._transport(asynchronous, verify=context, cert=None, trust_env=False)
        pool = getattr(transport, "_pool", None)
        backend = getattr(pool, "_network_backend", None)
        if backend is None:  # pragma: no cover - an httpx/httpcore the extra does not name
            raise TLSConfigError(
                f"entry {context.where}: this httpx/httpcore does not let securesession check "
                "the server key pins before a request is written; install the versions the "
                "'httpx' extra names"
            )
        checking = CheckingAsyncBackend if asynchronous else CheckingBackend
        pool._network_backend = checking(backend)  # type: ignore[union-attr]
        return transport

    def _transport(self, asynchronous: bool, *, verify: Any, cert: Any, trust_env: bool) -> Any:
        kind = httpx.AsyncHTTPTransport if asynchronous else httpx.HTTPTransport
        return kind(
            verify=verify,
            cert=cert,
            trust_env=trust_env,
            http1=self.http1,
            http2=self.http2,
            limits=self.limits,
            proxy=self.proxy,
            retries=self.retries,
        )


_OPTION_NAMES: Final = frozenset(_Options.__dataclass_fields__)


def _split_options(where: object, options: Mapping[str, Any]) -> tuple[GuardOptions, _Options]:
    """A transport's keyword arguments: the guard's, and how its inner transports are
    built (a keyword that is neither raises ``TypeError``, naming it and *where*)."""
    refuse_unknown_keywords(where, options, GUARD_OPTIONS | _OPTION_NAMES)
    guard_options, transport_options = split_guard_options(options)
    return guard_options, _Options(**transport_options)


def _route_through(slot: _Slot) -> _RouteTo:
    """The route through a profile's *slot*, once its client certificate is found valid
    now (:class:`~securesession.ClientCertificateExpiredError`: nothing is sent)."""
    context = slot.context
    context.refuse_if_expired()
    return slot.transport, context


def _profile_context(entry: ServiceEntry, *, http2: bool) -> ProfileContext:
    assert entry.tls is not None
    context = build_context(entry.tls, where=entry.url)
    # httpcore sets ALPN on every new connection; setting the same value here keeps
    # that write a no-op on a context shared between connections.
    context.set_alpn_protocols(["http/1.1", "h2"] if http2 else ["http/1.1"])
    return context


class _Route(GuardControls[HttpxGuard]):
    """What the sync and async transports share: the guard, the inner transport and
    the profile slots of one route (the client's default route, or one proxy), and
    every step of a request that is not I/O. Each transport keeps only its I/O calls.

    Its guard's controls (``registry``, ``strict``, ``cache_info()``...) are the
    clients' and ``SecureSession``'s."""

    #: Whether this route's transports are httpx's async ones.
    _asynchronous: bool
    #: Whether lookups run in a worker thread (async only): then no answer is kept,
    #: since checking one reads the registry's stamp, on the loop.
    offload_lookups: bool = False
    _inner: Any
    _custom: bool
    _mocked: bool
    _options: _Options
    _slots: dict[str, _Slot]
    _slots_lock: threading.Lock

    def _setup(self, guard: HttpxGuard, transport: Any, options: _Options) -> None:
        if isinstance(transport, _Route):
            raise ConfigurationError(
                "transport= is already a securesession transport; give the registry to it "
                "alone (or to SecureClient), not one guard inside another"
            )
        self._guard = guard
        self._custom = transport is not None
        self._mocked = isinstance(transport, httpx.MockTransport)
        self._inner = (
            options.default_transport(asynchronous=self._asynchronous)
            if transport is None
            else transport
        )
        self._inner_route: _RouteTo = (self._inner, None)
        self._options = options
        self._slots = {}
        self._slots_lock = threading.Lock()
        self._warm: dict[tuple[Any, ...], _Warm] = {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} registry={self._guard.registry!r}>"

    # -- TLS slots ---------------------------------------------------------------------------

    def _slot_for(self, entry: ServiceEntry) -> _Slot | None:
        """The slot serving *entry*'s profile now, or ``None`` if one must be built."""
        profile = entry.tls
        slot = self._slots.get(entry.url)
        if slot is None:
            return None
        if slot.profile is profile:
            return slot
        if slot.profile == profile or entry.revision < slot.revision:
            # Same profile in another revision, or a request still holding an older
            # revision: the slot's context is the right one.
            return slot
        return None

    def _build_slot(self, plan: HttpxPlan | None) -> tuple[_RouteTo, Any]:
        """Build (or find, if another thread was quicker) the slot of *plan*'s entry,
        for which :meth:`_ready_route` found none; return the route through it and the
        transport it replaced, which the caller closes. Blocking (context build)."""
        assert plan is not None
        entry = plan.entry
        with self._slots_lock:
            slot = self._slot_for(entry)
            if slot is not None:
                if slot.profile is not entry.tls and entry.revision > slot.revision:
                    assert entry.tls is not None
                    slot = _Slot(entry.tls, entry.revision, slot.context, slot.transport)
                    self._slots[entry.url] = slot
                return _route_through(slot), None
            assert entry.tls is not None
            context = _profile_context(entry, http2=self._options.http2)
            transport = self._options.profile_transport(context, asynchronous=self._asynchronous)
            old = self._slots.get(entry.url)
            slot = self._slots[entry.url] = _Slot(entry.tls, entry.revision, context, transport)
            if old is not None:
                self._warm.clear()  # no kept answer may name the transport closed below
        if old is not None:
            logger.info("entry %s: TLS profile changed; closing the old connections", entry.url)
            return _route_through(slot), old.transport
        return _route_through(slot), None

    def _ready_route(self, plan: HttpxPlan | None) -> _RouteTo | None:
        """The transport (and profile context) *plan*'s request goes through, or
        ``None`` when the entry's profile slot must be built first (blocking)."""
        if plan is None or plan.entry.tls is None or self._mocked:
            return self._inner_route
        if self._custom:
            self._refuse_custom(plan)
        slot = self._slot_for(plan.entry)
        return None if slot is None else _route_through(slot)

    # -- the warm path ------------------------------------------------------------------------

    def _warm_start(self, request: httpx.Request) -> _Start | None:
        """*request*'s start from the answer its URL got here last time, without a
        lookup or a cache read, when nothing that answer depends on changed since (the
        rule applied to it, the certificate's validity checked); ``None``: the full
        path. Only a request of no redirect chain qualifies (a hop's rule depends on the
        hops before it)."""
        warm = self._warm.get(request.url._uri_reference[:5])
        if warm is None or EXTENSION in request.extensions or self.offload_lookups:
            return None
        plan = warm.plan()
        guard = self._guard
        if plan is None or not guard.still_holds(warm.snapshot, warm.until, plan):
            return None
        context = warm.route[1]
        if context is not None:
            context.refuse_if_expired()
        answer = guard.apply(request, plan, caller_auth=False)
        return plan, plan, None, False, answer, True, warm.route

    def _begin(
        self, request: httpx.Request
    ) -> tuple[tuple[Chain | None, bool], str, Snapshot | None]:
        """The full path's first steps: :meth:`HttpxGuard.begin`'s chain and hop, the
        URL, and what its lookup will depend on (``None``, and the answer is not kept:
        in a chain, since a hop's answer depends on the hops before it, and with
        *offload_lookups*)."""
        guard = self._guard
        begun = guard.begin(request)
        keep = begun[0] is None and not self.offload_lookups
        return begun, str(request.url), guard.snapshot() if keep else None

    def _cold_start(
        self,
        request: httpx.Request,
        url: str,
        plan: HttpxPlan | None,
        begun: tuple[Chain | None, bool],
        before: Snapshot | None,
    ) -> _Start:
        """*request*'s start on the full path: its URL *url* matched *plan* (looked up
        after *before*; *begun* is :meth:`HttpxGuard.begin`'s). The rule is applied and,
        when the route is ready, the answer kept for the next request to the URL."""
        chain, hop = begun
        served, caller_auth, answer = self._guard.admit(request, url, plan, chain, hop)
        route = self._ready_route(plan)
        if route is not None and before is not None and served is not None:
            self._keep_warm(request, before, served, route)
        return plan, served, chain, caller_auth, answer, not hop, route

    def _keep_warm(
        self, request: httpx.Request, before: Snapshot, plan: HttpxPlan, route: _RouteTo
    ) -> None:
        """Keep what *request* got (*plan* over *route*, found after *before*) for the
        next request to its URL, if it may be reused."""
        until = self._guard.reusable_until(plan)
        if until is None:
            return
        warm = self._warm
        if len(warm) >= _WARM_URLS:
            warm.clear()
        warm[request.url._uri_reference[:5]] = _Warm(before, until, weakref.ref(plan), route)

    def _refuse_custom(self, plan: HttpxPlan) -> NoReturn:
        raise TLSConfigError(
            f"entry {plan.key} has a TLS profile, but this transport sends through "
            f"{type(self._inner).__name__}, which cannot apply it; nothing was sent. Leave "
            "transport= unset (or use httpx.MockTransport in tests)"
        )

    def _take_transports(self) -> list[Any]:
        """Every transport this route holds (the inner one first), for closing; the
        slots are forgotten."""
        with self._slots_lock:
            slots = list(self._slots.values())
            self._slots.clear()
            self._warm.clear()
        return [self._inner, *(slot.transport for slot in slots)]

    # -- after the response ------------------------------------------------------------------

    def _next_step(
        self,
        request: httpx.Request,
        response: httpx.Response,
        served: HttpxPlan | None,
        chain: Chain | None,
        *,
        refresh: bool,
    ) -> int:
        """What *response* to *request* (which *served* injected) calls for: a
        redirect is noted for the next hop, a 403 whose headers give an IIS sub-status
        explained; then :data:`_REFRESH` (a 401/407, when *refresh* allows one),
        :data:`_READ_403` or :data:`_DONE`."""
        status = response.status_code
        if status in REDIRECTS:
            self._guard.finish(request, response, chain)
        if served is None:
            return _DONE
        if status in _REFRESH_STATUSES and refresh:
            return _REFRESH
        if status != 403:
            return _DONE
        substatus = iis_substatus(dict(response.headers))
        if substatus is not None:
            self._explain_403(served, request, substatus)
            return _DONE
        length = response.headers.get("content-length", "")
        return _READ_403 if length.isdigit() and int(length) <= _MAX_403_BODY else _DONE

    def _refreshed(
        self, request: httpx.Request, response: httpx.Response, plan: HttpxPlan
    ) -> HttpxPlan | None:
        """:meth:`HttpxGuard.refreshed` for *response* (blocking)."""
        replayable = isinstance(request.stream, httpx.ByteStream)
        return self._guard.refreshed(
            plan, str(request.url), response.status_code, replayable=replayable
        )

    # -- failures and 403s ---------------------------------------------------------------------

    def _diagnosis(
        self, exc: BaseException, request: httpx.Request, plan: HttpxPlan, context: Any
    ) -> Callable[[], Any]:
        url = request.url
        return functools.partial(
            diagnose,
            _diagnosable(exc),
            where=plan.key,
            host=url.host,
            port=url.port or (443 if url.scheme == "https" else 80),
            profile=plan.entry.tls,
            context=context,
            probe=self._options.proxy is None and not self._custom,
        )

    @staticmethod
    def _explain_403(plan: HttpxPlan | None, request: httpx.Request, substatus: int | None) -> None:
        """Log what an IIS-style 403 sub-status says of *plan*'s client certificate."""
        assert plan is not None
        if substatus is None:
            return
        url = request.url
        message = describe_iis_403(
            substatus,
            where=plan.key,
            url=f"{url.scheme}://{url.netloc.decode('ascii')}{url.path}",
            profile=plan.entry.tls,
        )
        if message is not None:
            logger.warning("%s", message)


def _raise_diagnosed(exc: BaseException, error: BaseException | None) -> NoReturn:
    """Raise what the handshake diagnosis made of *exc* (chained to it), or *exc*."""
    if error is None:
        raise exc
    raise error from exc


#: What a response calls for (:meth:`_Route._next_step`).
_DONE: Final = 0
_REFRESH: Final = 1
#: A 403 whose IIS sub-status may be in its (small) body: read it, then explain it.
_READ_403: Final = 2
#: The statuses :meth:`_Route._next_step` has anything to do for.
_FOLLOW_UP: Final = REDIRECTS | _REFRESH_STATUSES | {403}


def _diagnosable(exc: BaseException) -> BaseException:
    """*exc*, or what ended the stream under it when *exc* would mislead the diagnosis.

    anyio's TLS stream raises its errors while it handles ``SSLWantReadError`` (which
    only means "read more"), so that error sits in their ``__context__``, where
    :func:`diagnose` would take it for the failure. What ended the stream is at the
    end of the chain of wrapped errors (``__cause__``, or httpcore's first argument):
    a reset, an EOF or the server's alert. It is handed over without its context
    (the original stays chained to what is raised).
    """
    if not isinstance(find_ssl_error(exc), (ssl.SSLWantReadError, ssl.SSLWantWriteError)):
        return exc
    cause: BaseException = exc
    for _ in range(16):  # wrapped: by __cause__, or as the first argument (httpcore)
        inner = cause.__cause__
        if inner is None:
            inner = next((arg for arg in cause.args if isinstance(arg, BaseException)), None)
        if inner is None:
            break
        cause = inner
    if cause is exc:
        return exc
    return copy.copy(cause)


class SecureTransport(_Route, httpx.BaseTransport):
    """An ``httpx.BaseTransport`` that injects *registry* credentials and applies each
    entry's TLS profile, for every request that passes it.

    ``httpx.Client(transport=SecureTransport(registry))`` guards every request of that
    client, redirect hops included; :class:`~securesession.httpx.SecureClient` is that,
    plus env proxies, ``proxy=`` and ``mounts=`` routed through the same guard and
    ``auth=`` recognised before its first leg.

    The keyword arguments besides ``transport=`` are :class:`TransportOptions`: the
    guard's (:class:`~securesession.GuardOptions`) and ``httpx.HTTPTransport``'s, which
    apply to URLs with no TLS profile (a profile decides all of TLS for its entry).
    ``transport=`` replaces the inner transport (an ``httpx.MockTransport`` in tests,
    which then also serves entries with a profile).
    """

    _asynchronous = False

    def __init__(
        self,
        registry: EntrySource,
        *,
        transport: httpx.BaseTransport | None = None,
        **options: Unpack[TransportOptions],
    ) -> None:
        guard_options, transport_options = _split_options(self, options)
        self._setup(HttpxGuard(registry, **guard_options), transport, transport_options)

    @classmethod
    def _sharing(
        cls, guard: HttpxGuard, transport: httpx.BaseTransport | None, options: _Options
    ) -> SecureTransport:
        """Another route of the client that owns *guard* (a proxy, a mount)."""
        route = cls.__new__(cls)
        route._setup(guard, transport, options)
        return route

    # -- httpx.BaseTransport -----------------------------------------------------------------

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        guard = self._guard
        start = self._warm_start(request)
        if start is None:
            begun, url, before = self._begin(request)
            start = self._cold_start(request, url, guard.plan_for(url), begun, before)
        plan, served, chain, caller_auth, answer, refresh, route = start
        while True:
            if route is None:
                route, old = self._build_slot(plan)
                if old is not None:
                    old.close()
            transport, context = route
            try:
                if answer:
                    assert served is not None and served.auth is not None
                    response = self._challenge(served.auth, transport, request)
                else:
                    response = transport.handle_request(request)
            except (httpx.TransportError, OSError) as exc:
                # OSError: anyio lets an ssl.SSLError of a read (a TLS 1.3 alert) through.
                if plan is None:
                    raise
                _raise_diagnosed(exc, self._diagnosis(exc, request, plan, context)())
            if response.status_code not in _FOLLOW_UP:
                return response
            step = self._next_step(request, response, served, chain, refresh=refresh)
            if step == _READ_403:
                # A failed read: the caller meets the same error reading the body.
                with contextlib.suppress(httpx.HTTPError):
                    body = response.read()
                    self._explain_403(served, request, iis_substatus({}, body))
            if step != _REFRESH:
                return response
            assert served is not None
            fresh = self._refreshed(request, response, served)
            if fresh is None:
                return response
            response.read()
            response.close()
            # Once: the retry's own 401 stands.
            plan = served = fresh
            answer = guard.apply(request, fresh, caller_auth=caller_auth)
            refresh, route = False, self._ready_route(fresh)

    def _challenge(
        self, auth: httpx.Auth, transport: httpx.BaseTransport, request: httpx.Request
    ) -> httpx.Response:
        """Drive *auth*'s flow on *request*'s own URL, every leg over *transport*."""
        flow = auth.sync_auth_flow(request)
        try:
            leg = next(flow)
            while True:
                self._guard.note_answer(leg)
                response = transport.handle_request(leg)
                response.request = leg  # the handler reads its cookies
                try:
                    leg = flow.send(response)
                except StopIteration:
                    return response
                response.read()
                response.close()
        finally:
            flow.close()

    def close(self) -> None:
        for transport in self._take_transports():
            transport.close()


class AsyncSecureTransport(_Route, httpx.AsyncBaseTransport):
    """The ``httpx.AsyncBaseTransport`` twin of :class:`SecureTransport`.

    On the warm path nothing blocks the event loop: the registry lookup is inline
    (its hot path is in memory or one indexed probe), the cache read never waits, and
    a miss runs in a worker thread, once per entry revision however many tasks miss
    together; a cancelled request leaves the cache as it was or with the complete
    entry, never half of one. ``offload_lookups=True`` sends the lookups to a worker
    thread too, for a registry whose lookup does network I/O (at the price of a
    thread hop per request); without it, a tenth of 100 inline lookups taking over
    1 ms logs a warning, once.
    """

    _asynchronous = True

    def __init__(
        self,
        registry: EntrySource,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        offload_lookups: bool = False,
        **options: Unpack[TransportOptions],
    ) -> None:
        guard_options, transport_options = _split_options(self, options)
        self._setup(HttpxGuard(registry, **guard_options), transport, transport_options)
        self._setup_async(offload_lookups, flights={})

    @classmethod
    def _sharing(
        cls,
        guard: HttpxGuard,
        transport: httpx.AsyncBaseTransport | None,
        options: _Options,
        *,
        offload_lookups: bool,
        flights: dict[tuple[str, int], anyio.Event],
    ) -> AsyncSecureTransport:
        """Another route of the client that owns *guard* (a proxy, a mount), sharing
        its single-flight table *flights*."""
        route = cls.__new__(cls)
        route._setup(guard, transport, options)
        route._setup_async(offload_lookups, flights)
        return route

    def _setup_async(
        self, offload_lookups: bool, flights: dict[tuple[str, int], anyio.Event]
    ) -> None:
        """The async route's own state, after :meth:`_Route._setup`."""
        self.offload_lookups = offload_lookups
        self._flights = flights
        self._lookups_seen = self._slow_lookups = 0

    # -- plans without blocking the loop ---------------------------------------------------

    async def _plan_for(self, url: str) -> HttpxPlan | None:
        """The plan *url* gets: :meth:`HttpxGuard.plan_for`, with the loads (and the
        lookups too, with *offload_lookups*) run off the event loop."""
        guard = self._guard
        if self.offload_lookups:
            found = await anyio.to_thread.run_sync(guard.match, url)
        else:
            found = self._match_on_loop(url)
        if type(found) is not EntryRef:
            return found  # type: ignore[return-value]
        plan = guard.cached(found)
        if plan is not None:
            return plan
        return await self._load(found, url)

    def _match_on_loop(self, url: str) -> EntryRef | HttpxPlan | None:
        """:meth:`HttpxGuard.match`, inline on the event loop, timed: see
        :meth:`_watch_lookup`."""
        started = time.perf_counter()
        found = self._guard.match(url)
        if self._lookups_seen >= 0:
            self._watch_lookup(time.perf_counter() - started, url)
        return found

    def _watch_lookup(self, took: float, url: str) -> None:
        """Warn, once, when inline lookups are slow in earnest: a tenth of a window of
        lookups over 1 ms. A single slow one is the machine (a first call, the
        process descheduled), not the registry."""
        self._lookups_seen += 1
        if took > _SLOW_LOOKUP:
            self._slow_lookups += 1
        if self._lookups_seen < _LOOKUP_WINDOW:
            return
        if self._slow_lookups * 10 >= _LOOKUP_WINDOW:
            self._lookups_seen = -1  # said once; stop watching
            logger.warning(
                "registry %r took over 1 ms to look URLs up on the event loop (%d of the "
                "last %d lookups, %s the last); if its lookups do network I/O, pass "
                "offload_lookups=True",
                self._guard.registry,
                self._slow_lookups,
                _LOOKUP_WINDOW,
                where(url),
            )
            return
        self._lookups_seen = self._slow_lookups = 0

    async def _load(self, ref: EntryRef, url: str) -> HttpxPlan | None:
        """The cold path: one worker thread per entry revision; other tasks wait for it."""
        guard = self._guard
        slot = (ref.key, ref.revision)
        flights = self._flights
        while True:
            flight = flights.get(slot)
            if flight is None:
                break
            await flight.wait()
            plan = guard.cached(ref)
            if plan is not None:
                return plan
        flight = flights[slot] = anyio.Event()
        try:
            # abandon_on_cancel: a cancelled request returns at once; the thread ends
            # its load on its own and stores the complete entry, or nothing.
            return await anyio.to_thread.run_sync(guard.load, ref, url, abandon_on_cancel=True)
        finally:
            if flights.get(slot) is flight:
                del flights[slot]
            flight.set()

    async def _off_loop(self, function: Callable[[], T]) -> T:
        return await anyio.to_thread.run_sync(function)

    # -- httpx.AsyncBaseTransport ------------------------------------------------------------------

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        # The warm path runs here without a coroutine of its own (the lookup and the
        # route are plain calls, the cache read inline): every coroutine frame between
        # httpx and the pool is resumed again at each await of the request's I/O.
        guard = self._guard
        start = self._warm_start(request)
        if start is None:
            begun, url, before = self._begin(request)
            if self.offload_lookups:
                found = await anyio.to_thread.run_sync(guard.match, url)
            else:
                found = self._match_on_loop(url)
            if type(found) is EntryRef:
                plan = guard.cached(found)
                if plan is None:
                    plan = await self._load(found, url)
            else:
                plan = found  # type: ignore[assignment]
            start = self._cold_start(request, url, plan, begun, before)
        plan, served, chain, caller_auth, answer, refresh, route = start
        while True:
            if route is None:
                built: tuple[_RouteTo, Any] = await self._off_loop(
                    functools.partial(self._build_slot, plan)
                )
                route, old = built
                if old is not None:
                    await old.aclose()
            transport, context = route
            try:
                if answer:
                    assert served is not None and served.auth is not None
                    response = await self._challenge(served.auth, transport, request)
                else:
                    response = await transport.handle_async_request(request)
            except (httpx.TransportError, OSError) as exc:
                # OSError: anyio lets an ssl.SSLError of a read (a TLS 1.3 alert) through.
                if plan is None:
                    raise
                diagnosis = self._diagnosis(exc, request, plan, context)
                _raise_diagnosed(exc, await self._off_loop(diagnosis))
            if response.status_code not in _FOLLOW_UP:
                return response
            step = self._next_step(request, response, served, chain, refresh=refresh)
            if step == _READ_403:
                with contextlib.suppress(httpx.HTTPError):
                    body = await response.aread()
                    self._explain_403(served, request, iis_substatus({}, body))
            if step != _REFRESH:
                return response
            assert served is not None
            refreshed = functools.partial(self._refreshed, request, response, served)
            fresh = await self._off_loop(refreshed)
            if fresh is None:
                return response
            await response.aread()
            await response.aclose()
            # Once: the retry's own 401 stands.
            plan = served = fresh
            answer = guard.apply(request, fresh, caller_auth=caller_auth)
            refresh, route = False, self._ready_route(fresh)

    async def _challenge(
        self, auth: httpx.Auth, transport: httpx.AsyncBaseTransport, request: httpx.Request
    ) -> httpx.Response:
        flow = auth.async_auth_flow(request)
        try:
            leg = await flow.__anext__()
            while True:
                self._guard.note_answer(leg)
                response = await transport.handle_async_request(leg)
                response.request = leg  # the handler reads its cookies
                try:
                    leg = await flow.asend(response)
                except StopAsyncIteration:
                    return response
                await response.aread()
                await response.aclose()
        finally:
            await flow.aclose()

    async def aclose(self) -> None:
        for transport in self._take_transports():
            await transport.aclose()
