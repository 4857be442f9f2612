"""The wire guard: which entry a request's own URL matches, and what it may carry.

One :class:`WireGuard` serves one :class:`~securesession.SecureSession` and the
:class:`~securesession.SecureAdapter` it mounts. It runs twice on the common path and
once on every other path into the wire:

* in ``SecureSession.send``, so mocking libraries that replace the transport see the
  injected headers;
* in ``SecureAdapter.send``, the last step before bytes leave, for every request
  whoever built it: a redirect hop, an auth handler's second leg
  (``r.connection.send(copy)``), a re-sent or copied request. For the request the
  session has just guarded, the adapter reuses the session's decision.

Each time, the rule is the same: look the request's URL up, strip every value
injected for any other entry (or an older revision of this one), add this entry's
values where the caller set none, and report the entry, whose TLS profile the adapter
then applies. After a redirect from https to http nothing is injected for the rest of
that chain (the plain-http hop chose where it goes next), though TLS profiles still
apply to https hops.

Chain state travels with the request: requests' ``PreparedRequest.copy()`` keeps only
the HTTP fields, so the session's requests are :class:`GuardedRequest` objects whose
``copy()`` also keeps the chain's downgrade and caller-auth flags.

What does not depend on requests (the lookup, the cache of plans, stale-on-error, the
refusal of URLs with user information that match an entry) is :class:`EntryGuard`,
generic over the plan a front-end builds from a decrypted entry; :class:`WireGuard` is
requests' guard over it, and ``securesession.httpx`` builds its own on the same base.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Container, Iterable, Mapping
from typing import (
    TYPE_CHECKING,
    Any,
    Final,
    Generic,
    NamedTuple,
    Protocol,
    TypedDict,
    TypeVar,
    cast,
    runtime_checkable,
)

import requests
from requests import PreparedRequest, Response

from ._cache import EntryCache, RecentLookups
from ._entry import ServiceEntry
from ._exceptions import InvalidURLError, NoCredentialsError, RegistryError
from ._inject import InjectionPlan, apply_plan, build_plan
from ._registry import EntryRef
from ._urls import redacted_url, without_userinfo

__all__ = [
    "CacheInfo",
    "EntryGuard",
    "EntrySource",
    "GuardControls",
    "GuardOptions",
    "GuardedRequest",
    "InvalidRequestURLError",
    "Snapshot",
    "WireGuard",
    "adopt",
]

logger = logging.getLogger("securesession")


if TYPE_CHECKING:  # a protocol only type checkers use: no class to build at import

    class Plan(Protocol):
        """What every front-end's plan offers the shared code: its entry."""

        @property
        def entry(self) -> ServiceEntry: ...

        @property
        def key(self) -> str: ...


#: What a front-end caches per entry revision: requests' :class:`InjectionPlan`, or
#: another HTTP client's own plan type (anything with ``entry`` and ``key``: ``Plan``).
P = TypeVar("P", bound="Plan")


@runtime_checkable
class EntrySource(Protocol):
    """What a session needs of a registry: which entry a URL matches (cheap, on every
    request) and that entry decrypted (on a cache miss). Every :class:`Registry` is
    one; a test double needs only these two methods.

    A source may also offer ``lookup_stamp()`` (as ``EncryptedRegistry`` does, from
    its store: see ``RegistryStore``), which lets a front-end skip the lookup of a URL
    it has just served while the stamp holds."""

    def lookup(self, url: str) -> EntryRef | None:
        """Which entry *url* matches, without decrypting anything."""

    def load(self, ref: EntryRef) -> ServiceEntry | None:
        """The entry *ref* names, decrypted; ``None`` if it was removed meanwhile."""


class GuardOptions(TypedDict, total=False):
    """The keyword arguments every front-end passes to its guard:
    :class:`~securesession.SecureSession`, ``CachedSecureSession``, and
    ``securesession.httpx``'s clients and transports all take them, with the same
    meaning and the same defaults.

    ``cache_ttl``       seconds a decrypted entry is served from the cache, on *timer*'s
                        clock (default 300; 0 disables the cache)
    ``cache_maxsize``   how many decrypted entries the cache holds at most; the one
                        decrypted longest ago goes first (default 1024)
    ``strict``          refuse a URL (or a redirect hop) that no entry matches with
                        :class:`~securesession.NoCredentialsError`, before a byte is sent
                        (default False)
    ``timer``           the clock of *cache_ttl* and *stale_on_error*, in seconds
                        (default ``time.monotonic``; tests pass a fake one)
    ``stale_on_error``  0 fails closed when the registry cannot be reached (the
                        :class:`~securesession.RegistryError` propagates); N > 0 keeps
                        serving, for a URL looked up in the last N seconds, the entry it
                        matched then, if it was decrypted at most N seconds ago; N cannot
                        exceed *cache_ttl* (default 0)

    A ``TypedDict``: type checkers check these keywords where a constructor takes
    ``**options: Unpack[GuardOptions]`` (or a ``TypedDict`` built on this one), and code
    that forwards them can annotate its own ``**kwargs`` the same way.
    """

    cache_ttl: float
    cache_maxsize: int
    strict: bool
    timer: Callable[[], float]
    stale_on_error: float


#: The names of :class:`GuardOptions`' keys.
GUARD_OPTIONS: Final = GuardOptions.__optional_keys__


def refuse_unknown_keywords(where: object, options: Iterable[str], known: Container[str]) -> None:
    """The ``TypeError`` Python raises for a keyword a callable does not take, naming
    *where* (the front-end the caller called: its class), not the internal object the
    keywords are passed on to."""
    for name in options:
        if name not in known:
            raise TypeError(f"{type(where).__name__}() got an unexpected keyword argument {name!r}")


def split_guard_options(options: Mapping[str, Any]) -> tuple[GuardOptions, dict[str, Any]]:
    """A front-end's keyword arguments *options*: the guard's (:class:`GuardOptions`),
    and the rest, for whatever else the front-end builds."""
    guard: dict[str, Any] = {}
    rest: dict[str, Any] = {}
    for name, value in options.items():
        (guard if name in GUARD_OPTIONS else rest)[name] = value
    return cast(GuardOptions, guard), rest


class GuardedRequest(PreparedRequest):
    """A ``PreparedRequest`` whose copies keep the redirect chain's state.

    ``downgraded``: this request follows an https → http hop of its chain;
    ``caller_auth``: the caller gave ``auth=`` for it. Both survive ``copy()``, which
    redirects and auth handlers use; ``copy()`` also gives the copy its own hook
    lists, so binding hooks on one hop never edits another's.
    """

    securesession_downgraded: bool = False
    securesession_caller_auth: bool = False

    def copy(self) -> GuardedRequest:
        clone = super().copy()
        clone.__class__ = GuardedRequest
        clone.hooks = {event: list(hooks) for event, hooks in self.hooks.items()}
        clone.__dict__["securesession_downgraded"] = self.securesession_downgraded
        clone.__dict__["securesession_caller_auth"] = self.securesession_caller_auth
        return clone  # type: ignore[return-value]


def adopt(request: PreparedRequest) -> None:
    """Make a plain ``PreparedRequest`` a :class:`GuardedRequest`, in place (same
    object, same fields: the class only adds state that copies keep)."""
    if type(request) is PreparedRequest:
        request.__class__ = GuardedRequest


def is_downgraded(request: PreparedRequest) -> bool:
    return getattr(request, "securesession_downgraded", False)


class InvalidRequestURLError(InvalidURLError, requests.exceptions.InvalidURL):
    """An :class:`InvalidURLError` met while sending: also requests' ``InvalidURL``, so
    code written for requests catches it as it would catch requests' own."""


class Snapshot(NamedTuple):
    """What one request's lookup and cache read depended on, read before them
    (:meth:`EntryGuard.snapshot`): the registry's lookup stamp and the cache's change
    count."""

    registry: object
    cache: int


class EntryGuard(Generic[P]):
    """Registry lookups, the decrypted-entry cache and the stale-on-error rule, for any
    HTTP front-end: its subclass's ``_build_plan`` turns a decrypted entry into that
    front-end's plan (what the cache keeps per entry revision). Nothing here knows an
    HTTP library.

    :meth:`plan_for` is the whole path in one blocking call. A front-end that must not
    block (an event loop) uses its steps instead: :meth:`match` (the cheap registry
    lookup), :meth:`cached` (a cache read that never waits) and, off the loop,
    :meth:`load`.
    """

    #: What :meth:`plan_for` raises for a URL that cannot be matched safely.
    invalid_url_error: type[InvalidURLError] = InvalidURLError

    def __init__(
        self,
        registry: EntrySource,
        *,
        cache_ttl: float = 300.0,
        cache_maxsize: int = 1024,
        strict: bool = False,
        timer: Callable[[], float] = time.monotonic,
        stale_on_error: float = 0.0,
    ) -> None:
        """The keyword arguments are :class:`GuardOptions`' (this is where their
        defaults are, and where they are checked): every front-end passes its own."""
        if not 0 <= stale_on_error <= cache_ttl:
            raise ValueError(
                "stale_on_error must be between 0 (fail closed) and cache_ttl: "
                "a decrypted entry is never kept past its TTL"
            )
        self.registry = registry
        self.strict = strict
        self.stale_on_error = stale_on_error
        self.cache: EntryCache[P] = EntryCache(ttl=cache_ttl, maxsize=cache_maxsize, timer=timer)
        # Only a guard that may serve stale entries remembers what URLs matched.
        self._lookups: RecentLookups[EntryRef | None] | None = (
            RecentLookups(ttl=stale_on_error, maxsize=4 * cache_maxsize, timer=timer)
            if stale_on_error > 0
            else None
        )
        self._serving_stale = False
        self._timer = timer
        # A guard that may serve stale entries records every lookup: it never skips one.
        self._lookup_stamp: Callable[[], object | None] | None = (
            getattr(registry, "lookup_stamp", None) if self._lookups is None else None
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} registry={self.registry!r} strict={self.strict}>"

    def _build_plan(self, entry: ServiceEntry) -> P:
        """The front-end's plan for a freshly decrypted *entry* (called once per entry
        revision, on a cache miss)."""
        raise NotImplementedError

    # -- the whole path ------------------------------------------------------------------

    def plan_for(self, url: str, *, retry: bool = True) -> P | None:
        """The plan *url* gets (cached), or ``None`` if no entry matches; blocking on a
        miss (registry I/O and decryption): :meth:`match`, :meth:`cached`, :meth:`load`."""
        found = self.match(url)
        if type(found) is not EntryRef:
            return found  # type: ignore[return-value]  # None, or a stale-on-error plan
        plan = self.cache.get(found.key, found.revision)
        if plan is None:
            return self.load(found, url, retry=retry)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("cache hit: entry %s (revision %d)", found.key, found.revision)
        return plan

    # -- the warm path: an answer reused while nothing it depends on changed -------------

    def snapshot(self) -> Snapshot | None:
        """What a lookup and cache read starting now depend on; ``None`` when the
        registry cannot tell (no ``lookup_stamp``, or it answered ``None``) or this
        guard serves stale entries: then no answer may be reused."""
        stamp_of = self._lookup_stamp
        if stamp_of is None:
            return None
        stamp = stamp_of()
        return None if stamp is None else Snapshot(stamp, self.cache.changes)

    def reusable_until(self, plan: P) -> float | None:
        """Until when (on the timer) *plan*, just served from the cache, may be served
        again without a lookup while :meth:`still_holds`; ``None``: not at all (the
        cache no longer holds it)."""
        return self.cache.expires_at(plan.key, plan.entry.revision, plan)

    def still_holds(self, before: Snapshot, until: float, plan: P) -> bool:
        """Whether *plan*, found after *before* and reusable until *until*, is still
        what its URL gets: the registry's stamp is the same object, the cache
        unchanged and the TTL running. Counts (and logs) a cache hit when it holds,
        as :meth:`plan_for` does."""
        stamp_of = self._lookup_stamp
        if (
            stamp_of is None
            or stamp_of() is not before.registry
            or self.cache.changes != before.cache
            or self._timer() >= until
        ):
            return False
        self.cache.hits += 1
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("cache hit: entry %s (revision %d)", plan.key, plan.entry.revision)
        return True

    # -- the same path in steps, for front-ends that must not block ------------------------

    def match(self, url: str) -> EntryRef | P | None:
        """Which entry *url* matches: its :class:`EntryRef` (then :meth:`cached` or
        :meth:`load` gives the plan), ``None`` for no entry, or, while the registry
        is unreachable and *stale_on_error* allows it, the plan served from the cache.
        Only the registry's lookup runs: no decryption, no waiting on the cache."""
        if not url[:8].lower().startswith(("https://", "http://")):
            return None
        if "@" in url and (bare := without_userinfo(url)) != url:
            if self.match(bare) is not None:
                raise self._userinfo_error(bare)
            return None
        try:
            ref = self.registry.lookup(url)
        except RegistryError as exc:
            return self._stale_plan(url, exc)
        except InvalidURLError as exc:
            raise self.invalid_url_error(str(exc)) from None
        if self._lookups is not None:
            self._remember(url, ref)
        return ref

    def cached(self, ref: EntryRef) -> P | None:
        """The cached plan of *ref*'s revision, or ``None``; never loads, never waits
        (a load under way in another thread counts as a miss)."""
        # No log line here: the caller logs the match (a warm path pays for it).
        return self.cache.get(ref.key, ref.revision)

    def load(self, ref: EntryRef, url: str, *, retry: bool = True) -> P | None:
        """The plan of *ref* (matched by *url*), decrypted once however many callers
        ask at the same time; blocking (registry I/O and decryption), so an event
        loop calls it from a worker thread. ``None`` when the entry was removed
        meanwhile and *url* now matches nothing."""
        try:
            return self.cache.get_or_load(ref.key, ref.revision, lambda: self._decrypt(ref))
        except _EntryRemoved:
            return self._removed(url, ref, retry=retry)

    def invalidate(self, key: str) -> None:
        """Forget every cached revision of entry *key* (the 401 refresh)."""
        self.cache.invalidate(key)

    def refreshed(self, plan: P, url: str, status: int, *, replayable: bool) -> P | None:
        """After a 401 or 407 from the service of *plan* (for *url*): drop the entry
        from the cache and load it again (blocking). Returns the new plan when the
        stored credentials changed and the request can be sent again (*replayable*:
        its body is not a consumed stream), else ``None``: the response stands."""
        key, entry = plan.key, plan.entry
        self.invalidate(key)
        fresh = self.plan_for(url)
        if fresh is None or fresh.entry == entry:
            logger.debug("entry %s: %d, and the stored credentials are unchanged", key, status)
            return None
        if not replayable:
            logger.warning(
                "entry %s changed after %d, but the body cannot be replayed", key, status
            )
            return None
        logger.info("entry %s changed since it was cached; retrying once after %d", key, status)
        return fresh

    # -- shared steps ------------------------------------------------------------------------

    def _decrypt(self, ref: EntryRef) -> P:
        logger.debug("cache miss: decrypting entry %s (revision %d)", ref.key, ref.revision)
        entry = self.registry.load(ref)
        if entry is None:
            raise _EntryRemoved
        return self._build_plan(entry)

    def _removed(self, url: str, ref: EntryRef, *, retry: bool) -> P | None:
        # Removed between our lookup and the load (by another process): what the
        # URL matches now is the answer; if the registry still names the removed
        # entry (a change feed not caught up), there is no entry to send.
        logger.debug("entry %s was removed while it was loaded; looking up again", ref.key)
        return self.plan_for(url, retry=False) if retry else None

    def _remember(self, url: str, ref: EntryRef | None) -> None:
        assert self._lookups is not None
        self._lookups.remember(url, ref)
        if self._serving_stale:
            self._serving_stale = False
            logger.warning("registry reachable again; no longer serving cached entries")

    def _userinfo_error(self, bare: str) -> InvalidURLError:
        return self.invalid_url_error(
            f"URL {redacted_url(bare)} carries user information (user:password@) and matches "
            "a registry entry; keep credentials in the registry, not in the URL"
        )

    def _stale_plan(self, url: str, error: RegistryError) -> P | None:
        """What *url* matched before the registry failed, if still fresh enough;
        otherwise re-raise *error* (fail closed)."""
        recalled = self._lookups.recall(url) if self._lookups is not None else None
        if recalled is None:
            raise error
        ref = recalled[0]
        plan = None
        if ref is not None:
            plan = self.cache.peek(ref.key, ref.revision, max_age=self.stale_on_error)
            if plan is None:
                raise error
        if not self._serving_stale:
            self._serving_stale = True
            logger.warning(
                "registry unavailable (%s); serving cached entries for up to %g s",
                error,
                self.stale_on_error,
            )
        logger.debug("registry unavailable; %s served from cache", redacted_url(url))
        return plan


class CacheInfo(NamedTuple):
    """Counters of a session's (or client's) decrypted-entry cache."""

    hits: int
    loads: int
    size: int


#: A front-end's guard type.
G = TypeVar("G", bound="EntryGuard[Any]")


class GuardControls(Generic[G]):
    """What every front-end (:class:`~securesession.SecureSession` and the httpx
    clients) exposes of its guard: the registry, the settings and the cache."""

    _guard: G

    @property
    def registry(self) -> EntrySource:
        return self._guard.registry

    @property
    def strict(self) -> bool:
        return self._guard.strict

    @strict.setter
    def strict(self, value: bool) -> None:
        self._guard.strict = value

    @property
    def stale_on_error(self) -> float:
        return self._guard.stale_on_error

    def clear_cache(self) -> None:
        """Forget every decrypted entry; the next request to each decrypts again."""
        self._guard.cache.clear()

    def cache_info(self) -> CacheInfo:
        """Hits, loads (decryptions) and size of the decrypted-entry cache."""
        cache = self._guard.cache
        return CacheInfo(cache.hits, cache.loads, len(cache))


class WireGuard(EntryGuard[InjectionPlan]):
    """Registry lookups, the decrypted-entry cache and the injection rule of one session."""

    invalid_url_error = InvalidRequestURLError

    def _build_plan(self, entry: ServiceEntry) -> InjectionPlan:
        return build_plan(entry, self.owns)

    # -- the rule ----------------------------------------------------------------------

    def guard(self, request: PreparedRequest, *, run_auth: bool) -> InjectionPlan | None:
        """Make *request* carry exactly its own URL's injection; return the entry's plan
        (for its TLS profile), or ``None`` when no entry matches.

        Raises :class:`NoCredentialsError` in strict mode for a URL with no entry or a
        downgraded hop, :class:`InvalidURLError` for a URL that cannot be matched
        safely, and :class:`RegistryError` when the registry fails (fail closed)."""
        url = request.url or ""
        plan = self.plan_for(url)
        downgraded = is_downgraded(request)
        if self.strict and (plan is None or downgraded):
            raise NoCredentialsError(no_entry_message(url, downgraded))
        apply_plan(
            request,
            None if downgraded else plan,
            caller_auth=getattr(request, "securesession_caller_auth", False),
            run_auth=run_auth,
        )
        if logger.isEnabledFor(logging.DEBUG):  # spares redacted_url()'s parse when off
            if plan is None or downgraded:
                log_nothing_injected(url, None if plan is None else plan.key)
            else:
                injected = [
                    name
                    for name, value in request.headers.items()
                    if getattr(value, "plan", None) is plan
                ]
                logger.debug(
                    "entry %s matched; injected %s", plan.key, ", ".join(injected) or "nothing"
                )
        return plan

    def owns(self, plan: InjectionPlan, response: Response) -> bool:
        """Whether *response* answers a request that *plan*'s entry governs: what an
        entry-bound auth handler asks before it answers a challenge."""
        request = response.request
        if request is None or is_downgraded(request):
            return False
        try:
            ref = self.registry.lookup(request.url or "")
        except (RegistryError, InvalidURLError):
            return False  # fail closed: never answer a challenge we cannot place
        return ref is not None and ref.key == plan.key


class _EntryRemoved(Exception):
    """Raised inside a cache load when the entry went away after its lookup."""


def no_entry_message(url: str, downgraded: bool) -> str:
    """Why strict mode refuses *url*: no entry matches it, or it follows an https →
    http hop of its redirect chain."""
    if downgraded:
        return f"strict session: refusing redirect from https to http ({redacted_url(url)})"
    return f"strict session: no registry entry matches {redacted_url(url)}"


def log_nothing_injected(url: str, key: str | None) -> None:
    """Debug-log why a request to *url* carries no credentials: no entry matches it
    (*key* ``None``), or entry *key* matched after an https → http hop."""
    if key is None:
        logger.debug("no registry entry for %s; sending without credentials", redacted_url(url))
    else:
        logger.debug("entry %s matched after an https-to-http redirect; injecting nothing", key)
