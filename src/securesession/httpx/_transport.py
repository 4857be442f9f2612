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

import copy
import functools
import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, NoReturn, TypeVar

import anyio
import anyio.to_thread
import httpx

from .._entry import ServiceEntry
from .._exceptions import ConfigurationError, TLSConfigError
from .._guard import EntrySource
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


@dataclass(frozen=True)
class _Options:
    """How inner transports are built (the httpx.HTTPTransport arguments)."""

    verify: Any
    cert: Any
    trust_env: bool
    http1: bool
    http2: bool
    limits: httpx.Limits
    proxy: Any
    retries: int

    def profile_transport(self, context: ProfileContext, *, asynchronous: bool) -> Any:
        kind = httpx.AsyncHTTPTransport if asynchronous else httpx.HTTPTransport
        transport = kind(
            verify=context,
            http1=self.http1,
            http2=self.http2,
            limits=self.limits,
            proxy=self.proxy,
            retries=self.retries,
            trust_env=False,
        )
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


def _profile_context(entry: ServiceEntry, *, http2: bool) -> ProfileContext:
    assert entry.tls is not None
    context = build_context(entry.tls, where=entry.url)
    # httpcore sets ALPN on every new connection; setting the same value here keeps
    # that write a no-op on a context shared between connections.
    context.set_alpn_protocols(["http/1.1", "h2"] if http2 else ["http/1.1"])
    return context


class _Route:
    """What the sync and async transports share: the guard, the inner transport and
    the profile slots of one route (the client's default route, or one proxy)."""

    _guard: HttpxGuard
    _inner: Any
    _custom: bool
    _mocked: bool
    _options: _Options
    _slots: dict[str, _Slot]
    _slots_lock: threading.Lock

    def _setup(
        self,
        guard: HttpxGuard,
        *,
        transport: Any,
        default: Callable[[], Any],
        options: _Options,
    ) -> None:
        if isinstance(transport, _Route):
            raise ConfigurationError(
                "transport= is already a securesession transport; give the registry to it "
                "alone (or to SecureClient), not one guard inside another"
            )
        self._guard = guard
        self._custom = transport is not None
        self._mocked = isinstance(transport, httpx.MockTransport)
        self._inner = default() if transport is None else transport
        self._options = options
        self._slots = {}
        self._slots_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} registry={self._guard.registry!r}>"

    # -- the cache, for the clients -----------------------------------------------------

    @property
    def registry(self) -> EntrySource:
        return self._guard.registry

    @property
    def guard(self) -> HttpxGuard:
        return self._guard

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

    def _build_slot(self, entry: ServiceEntry, *, asynchronous: bool) -> tuple[_Slot, Any]:
        """Build (or find, if another thread was quicker) *entry*'s slot; return it and
        the transport it replaced, which the caller closes. Blocking (context build)."""
        with self._slots_lock:
            slot = self._slot_for(entry)
            if slot is not None:
                if slot.profile is not entry.tls and entry.revision > slot.revision:
                    assert entry.tls is not None
                    slot = _Slot(entry.tls, entry.revision, slot.context, slot.transport)
                    self._slots[entry.url] = slot
                return slot, None
            assert entry.tls is not None
            context = _profile_context(entry, http2=self._options.http2)
            transport = self._options.profile_transport(context, asynchronous=asynchronous)
            old = self._slots.get(entry.url)
            slot = self._slots[entry.url] = _Slot(entry.tls, entry.revision, context, transport)
        if old is not None:
            logger.info("entry %s: TLS profile changed; closing the old connections", entry.url)
            return slot, old.transport
        return slot, None

    def _ready_route(self, plan: HttpxPlan | None) -> tuple[Any, ProfileContext | None] | None:
        """The transport (and profile context) *plan*'s request goes through, or
        ``None`` when the entry's profile slot must be built first (blocking)."""
        if plan is None or plan.entry.tls is None or self._mocked:
            return self._inner, None
        if self._custom:
            self._refuse_custom(plan)
        slot = self._slot_for(plan.entry)
        if slot is None:
            return None
        context = slot.context
        context.refuse_if_expired()
        return slot.transport, context

    def _refuse_custom(self, plan: HttpxPlan) -> NoReturn:
        raise TLSConfigError(
            f"entry {plan.key} has a TLS profile, but this transport sends through "
            f"{type(self._inner).__name__}, which cannot apply it; nothing was sent. Leave "
            "transport= unset (or use httpx.MockTransport in tests)"
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
    def _substatus_from_headers(response: httpx.Response) -> tuple[int | None, bool]:
        """The IIS sub-status from the headers; and whether the body is worth reading."""
        substatus = iis_substatus(dict(response.headers))
        if substatus is not None:
            return substatus, False
        length = response.headers.get("content-length", "")
        return None, length.isdigit() and int(length) <= _MAX_403_BODY

    @staticmethod
    def _explain_403(plan: HttpxPlan, request: httpx.Request, substatus: int | None) -> None:
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

    @staticmethod
    def _replayable(request: httpx.Request) -> bool:
        return isinstance(request.stream, httpx.ByteStream)


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


def _log_match(url: str, plan: HttpxPlan | None, downgraded: bool) -> None:
    if plan is None:
        logger.debug("no registry entry for %s; sending without credentials", where(url))
    elif downgraded:
        logger.debug(
            "entry %s matched after an https-to-http redirect; injecting nothing", plan.key
        )


def _unchanged(plan: HttpxPlan, fresh: HttpxPlan | None, status: int) -> bool:
    if fresh is None or fresh.entry == plan.entry:
        logger.debug("entry %s: %d, and the stored credentials are unchanged", plan.key, status)
        return True
    return False


def _options(
    verify: Any,
    cert: Any,
    trust_env: bool,
    http1: bool,
    http2: bool,
    limits: httpx.Limits,
    proxy: Any,
    retries: int,
) -> _Options:
    return _Options(verify, cert, trust_env, http1, http2, limits, proxy, retries)


_DEFAULT_LIMITS: Final = httpx.Limits(max_connections=100, max_keepalive_connections=20)


class SecureTransport(_Route, httpx.BaseTransport):
    """An ``httpx.BaseTransport`` that injects *registry* credentials and applies each
    entry's TLS profile, for every request that passes it.

    ``httpx.Client(transport=SecureTransport(registry))`` guards every request of that
    client, redirect hops included; :class:`~securesession.httpx.SecureClient` is that,
    plus env proxies, ``proxy=`` and ``mounts=`` routed through the same guard and
    ``auth=`` recognised before its first leg. The cache and strict-mode arguments
    are :class:`~securesession.SecureSession`'s; the transport arguments are
    ``httpx.HTTPTransport``'s and apply to URLs with no TLS profile (a profile decides
    all of TLS for its entry). ``transport=`` replaces the inner transport (an
    ``httpx.MockTransport`` in tests, which then also serves entries with a profile).
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
        transport: httpx.BaseTransport | None = None,
        verify: Any = True,
        cert: Any = None,
        trust_env: bool = True,
        http1: bool = True,
        http2: bool = False,
        limits: httpx.Limits = _DEFAULT_LIMITS,
        proxy: Any = None,
        retries: int = 0,
    ) -> None:
        guard = HttpxGuard(
            registry,
            cache_ttl=cache_ttl,
            cache_maxsize=cache_maxsize,
            strict=strict,
            timer=timer,
            stale_on_error=stale_on_error,
        )
        self._route_setup(
            guard,
            transport,
            _options(verify, cert, trust_env, http1, http2, limits, proxy, retries),
        )

    @classmethod
    def _sharing(
        cls, guard: HttpxGuard, transport: httpx.BaseTransport | None, options: _Options
    ) -> SecureTransport:
        """Another route of the client that owns *guard* (a proxy, a mount)."""
        route = cls.__new__(cls)
        route._route_setup(guard, transport, options)
        return route

    def _route_setup(
        self, guard: HttpxGuard, transport: httpx.BaseTransport | None, options: _Options
    ) -> None:
        def default() -> httpx.HTTPTransport:
            return httpx.HTTPTransport(
                verify=options.verify,
                cert=options.cert,
                trust_env=options.trust_env,
                http1=options.http1,
                http2=options.http2,
                limits=options.limits,
                proxy=options.proxy,
                retries=options.retries,
            )

        self._setup(guard, transport=transport, default=default, options=options)

    # -- httpx.BaseTransport -----------------------------------------------------------------

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        guard = self._guard
        chain = request.extensions.get(EXTENSION)
        hop = False
        if chain is not None:
            chain, hop = guard.begin(request)
        url = str(request.url)
        plan = guard.resolve(url)
        downgraded = hop and chain is not None and chain.downgraded
        if guard.strict:
            guard.refuse(url, plan, downgraded)
        if logger.isEnabledFor(logging.DEBUG):
            _log_match(url, plan, downgraded)
        caller_auth = chain is not None and chain.hop_caller_auth
        answer = guard.apply(request, None if downgraded else plan, caller_auth=caller_auth)
        response = self._send(request, plan, answer)
        status = response.status_code
        if status in REDIRECTS:
            guard.finish(request, response, chain)
        if plan is None or downgraded:
            return response
        if status in _REFRESH_STATUSES and not hop:
            return self._refresh(request, response, plan, chain, caller_auth)
        if status == 403:
            self._check_403(plan, request, response)
        return response

    def _send(self, request: httpx.Request, plan: HttpxPlan | None, answer: bool) -> httpx.Response:
        route = self._ready_route(plan)
        if route is None:
            assert plan is not None
            _, old = self._build_slot(plan.entry, asynchronous=False)
            if old is not None:
                old.close()
            route = self._ready_route(plan)
            assert route is not None
        transport, context = route
        try:
            if answer:
                assert plan is not None and plan.auth is not None
                return self._challenge(plan.auth, transport, request)
            response: httpx.Response = transport.handle_request(request)
            return response
        except (httpx.TransportError, OSError) as exc:
            # OSError: anyio lets an ssl.SSLError of a read (a TLS 1.3 alert) through.
            if plan is None:
                raise
            error = self._diagnosis(exc, request, plan, context)()
            if error is None:
                raise
            raise error from exc

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

    def _refresh(
        self,
        request: httpx.Request,
        response: httpx.Response,
        plan: HttpxPlan,
        chain: Chain | None,
        caller_auth: bool,
    ) -> httpx.Response:
        guard = self._guard
        guard.invalidate(plan.key)
        fresh = guard.plan_for(str(request.url))
        if _unchanged(plan, fresh, response.status_code):
            return response
        assert fresh is not None
        if not self._replayable(request):
            logger.warning(
                "entry %s changed after %d, but the body cannot be replayed",
                plan.key,
                response.status_code,
            )
            return response
        logger.info(
            "entry %s changed since it was cached; retrying once after %d",
            plan.key,
            response.status_code,
        )
        response.read()
        response.close()
        answer = guard.apply(request, fresh, caller_auth=caller_auth)
        retried = self._send(request, fresh, answer)
        guard.finish(request, retried, chain)
        return retried

    def _check_403(self, plan: HttpxPlan, request: httpx.Request, response: httpx.Response) -> None:
        substatus, read_body = self._substatus_from_headers(response)
        if read_body:
            try:
                substatus = iis_substatus({}, response.read())
            except httpx.HTTPError:
                return  # the caller meets the same error reading it
        self._explain_403(plan, request, substatus)

    def close(self) -> None:
        self._inner.close()
        with self._slots_lock:
            slots = list(self._slots.values())
            self._slots.clear()
        for slot in slots:
            slot.transport.close()


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
        transport: httpx.AsyncBaseTransport | None = None,
        verify: Any = True,
        cert: Any = None,
        trust_env: bool = True,
        http1: bool = True,
        http2: bool = False,
        limits: httpx.Limits = _DEFAULT_LIMITS,
        proxy: Any = None,
        retries: int = 0,
    ) -> None:
        guard = HttpxGuard(
            registry,
            cache_ttl=cache_ttl,
            cache_maxsize=cache_maxsize,
            strict=strict,
            timer=timer,
            stale_on_error=stale_on_error,
        )
        self._route_setup(
            guard,
            transport,
            _options(verify, cert, trust_env, http1, http2, limits, proxy, retries),
            offload_lookups=offload_lookups,
        )

    @classmethod
    def _sharing(
        cls,
        guard: HttpxGuard,
        transport: httpx.AsyncBaseTransport | None,
        options: _Options,
        *,
        offload_lookups: bool = False,
        flights: dict[tuple[str, int], anyio.Event] | None = None,
    ) -> AsyncSecureTransport:
        route = cls.__new__(cls)
        route._route_setup(guard, transport, options, offload_lookups=offload_lookups)
        if flights is not None:
            route._flights = flights
        return route

    def _route_setup(
        self,
        guard: HttpxGuard,
        transport: httpx.AsyncBaseTransport | None,
        options: _Options,
        *,
        offload_lookups: bool,
    ) -> None:
        def default() -> httpx.AsyncHTTPTransport:
            return httpx.AsyncHTTPTransport(
                verify=options.verify,
                cert=options.cert,
                trust_env=options.trust_env,
                http1=options.http1,
                http2=options.http2,
                limits=options.limits,
                proxy=options.proxy,
                retries=options.retries,
            )

        self._setup(guard, transport=transport, default=default, options=options)
        self.offload_lookups = offload_lookups
        self._flights: dict[tuple[str, int], anyio.Event] = {}
        self._lookups_seen = self._slow_lookups = 0

    # -- plans without blocking the loop ---------------------------------------------------

    async def _plan_for(self, url: str) -> HttpxPlan | None:
        guard = self._guard
        if self.offload_lookups:
            found = await anyio.to_thread.run_sync(guard.match, url)
        else:
            started = time.perf_counter()
            found = guard.match(url)
            if self._lookups_seen >= 0:
                self._watch_lookup(time.perf_counter() - started, url)
        if type(found) is not EntryRef:
            return found  # type: ignore[return-value]
        plan = guard.cached(found)
        if plan is not None:
            return plan
        return await self._load(found, url)

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
        # The warm path is inlined here (the lookup, the cache read, the route): every
        # coroutine frame between httpx and the pool is resumed again at each await of
        # the request's I/O.
        guard = self._guard
        chain = request.extensions.get(EXTENSION)
        hop = False
        if chain is not None:
            chain, hop = guard.begin(request)
        url = str(request.url)
        if self.offload_lookups:
            found = await anyio.to_thread.run_sync(guard.match, url)
        else:
            started = time.perf_counter()
            found = guard.match(url)
            if self._lookups_seen >= 0:
                self._watch_lookup(time.perf_counter() - started, url)
        if type(found) is EntryRef:
            plan = guard.cached(found)
            if plan is None:
                plan = await self._load(found, url)
        else:
            plan = found  # type: ignore[assignment]
        downgraded = hop and chain is not None and chain.downgraded
        if guard.strict:
            guard.refuse(url, plan, downgraded)
        if logger.isEnabledFor(logging.DEBUG):
            _log_match(url, plan, downgraded)
        caller_auth = chain is not None and chain.hop_caller_auth
        answer = guard.apply(request, None if downgraded else plan, caller_auth=caller_auth)
        route = self._ready_route(plan)
        if route is None:
            route = await self._built_route(plan)
        transport, context = route
        try:
            if answer:
                assert plan is not None and plan.auth is not None
                response = await self._challenge(plan.auth, transport, request)
            else:
                response = await transport.handle_async_request(request)
        except (httpx.TransportError, OSError) as exc:
            # OSError: anyio lets an ssl.SSLError of a read (a TLS 1.3 alert) through.
            if plan is None:
                raise
            error = await self._off_loop(self._diagnosis(exc, request, plan, context))
            if error is None:
                raise
            raise error from exc
        status = response.status_code
        if status in REDIRECTS:
            guard.finish(request, response, chain)
        if plan is None or downgraded:
            return response
        if status in _REFRESH_STATUSES and not hop:
            return await self._refresh(request, response, plan, chain, caller_auth)
        if status == 403:
            await self._check_403(plan, request, response)
        return response

    async def _built_route(self, plan: HttpxPlan | None) -> tuple[Any, ProfileContext | None]:
        """Build *plan*'s profile slot off the loop (a context build reads files and
        runs key derivation); close the transport of the profile it replaces."""
        assert plan is not None
        build = functools.partial(self._build_slot, plan.entry, asynchronous=True)
        _, old = await self._off_loop(build)
        if old is not None:
            await old.aclose()
        route = self._ready_route(plan)
        assert route is not None
        return route

    async def _send(
        self, request: httpx.Request, plan: HttpxPlan | None, answer: bool
    ) -> httpx.Response:
        """What :meth:`handle_async_request` does from the route on (for the retry)."""
        route = self._ready_route(plan)
        if route is None:
            route = await self._built_route(plan)
        transport, context = route
        try:
            if answer:
                assert plan is not None and plan.auth is not None
                return await self._challenge(plan.auth, transport, request)
            response: httpx.Response = await transport.handle_async_request(request)
            return response
        except (httpx.TransportError, OSError) as exc:
            if plan is None:
                raise
            error = await self._off_loop(self._diagnosis(exc, request, plan, context))
            if error is None:
                raise
            raise error from exc

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

    async def _refresh(
        self,
        request: httpx.Request,
        response: httpx.Response,
        plan: HttpxPlan,
        chain: Chain | None,
        caller_auth: bool,
    ) -> httpx.Response:
        guard = self._guard
        guard.invalidate(plan.key)
        fresh = await self._plan_for(str(request.url))
        if _unchanged(plan, fresh, response.status_code):
            return response
        assert fresh is not None
        if not self._replayable(request):
            logger.warning(
                "entry %s changed after %d, but the body cannot be replayed",
                plan.key,
                response.status_code,
            )
            return response
        logger.info(
            "entry %s changed since it was cached; retrying once after %d",
            plan.key,
            response.status_code,
        )
        await response.aread()
        await response.aclose()
        answer = guard.apply(request, fresh, caller_auth=caller_auth)
        retried = await self._send(request, fresh, answer)
        guard.finish(request, retried, chain)
        return retried

    async def _check_403(
        self, plan: HttpxPlan, request: httpx.Request, response: httpx.Response
    ) -> None:
        substatus, read_body = self._substatus_from_headers(response)
        if read_body:
            try:
                substatus = iis_substatus({}, await response.aread())
            except httpx.HTTPError:
                return
        self._explain_403(plan, request, substatus)

    async def aclose(self) -> None:
        await self._inner.aclose()
        with self._slots_lock:
            slots = list(self._slots.values())
            self._slots.clear()
        for slot in slots:
            await slot.transport.aclose()
