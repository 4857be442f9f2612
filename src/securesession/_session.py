"""``SecureSession``: a ``requests.Session`` that injects registry credentials."""

from __future__ import annotations

import copy
import warnings
from typing import Any, Final, NoReturn

import requests
from requests import PreparedRequest, Request, Response
from requests import sessions as requests_sessions
from requests.adapters import BaseAdapter
from requests.auth import AuthBase, HTTPBasicAuth
from requests.utils import get_auth_from_url

from ._adapter import SecureAdapter
from ._compat import Unpack
from ._entry import ServiceEntry
from ._exceptions import TLSConfigError
from ._guard import (
    GUARD_OPTIONS,
    EntrySource,
    GuardControls,
    GuardOptions,
    WireGuard,
    adopt,
    is_downgraded,
    refuse_unknown_keywords,
)
from ._inject import InjectionPlan

__all__ = ["SecureSession"]


_REFRESH_STATUSES = frozenset({401, 407})


class SecureSession(GuardControls[WireGuard], requests.Session):
    """A ``requests.Session`` that looks every outgoing URL up in *registry* and
    injects the matching entry's gateway and request credentials.

    * Every request carries exactly its own URL's entry, on every path into the
      wire: ``session.get(...)``, ``session.send(prepared)``, each redirect hop, the
      second leg of a Digest or NTLM exchange, a re-sent or copied request. The
      mounted :class:`SecureAdapter` applies the same rule as the last step before
      bytes leave (see ``docs/injection.md``).
    * Injection happens in :meth:`send` too, so mocking libraries that replace the
      transport see the injected headers.
    * A header or ``auth=`` the caller gives wins over the registry; ``~/.netrc``
      (with ``trust_env``) applies only to URLs that have no entry.
    * A URL with no entry is sent untouched, or refused with
      :class:`NoCredentialsError` when *strict* is true.
    * On every redirect hop, what was injected for another entry is removed and the
      new URL's own entry applied. Once a chain has gone from https to http, nothing
      is injected for the rest of it.
    * Decrypted entries are cached for *cache_ttl* seconds on *timer*'s clock,
      keyed by entry revision, so an updated entry is never served stale.
    * A 401 (or 407) from a matched service drops the entry from the cache,
      reloads it once, and retries once if the stored credentials changed.
    * When the registry cannot be reached (a lookup raises :class:`RegistryError`),
      the session fails closed by default: the error propagates and nothing is
      sent. With *stale_on_error* = N > 0 it instead keeps serving, for a URL it
      looked up in the last N seconds, the entry it matched then, if that entry was
      decrypted at most N seconds ago (N cannot exceed *cache_ttl*: a decrypted
      entry never outlives its TTL). A failure to *load* an entry the registry
      says has changed always propagates: that entry is known to be stale.
    * A :class:`SecureAdapter` serves one session: *adapter* (or one mounted later)
      must not be mounted on another ``SecureSession``. Sessions cannot be pickled
      or copied; open a new one over the same registry instead.

    The keyword arguments besides *adapter* are :class:`~securesession.GuardOptions`:
    *cache_ttl*, *cache_maxsize*, *strict*, *timer* and *stale_on_error* (their meanings
    and defaults are listed there); any other keyword raises ``TypeError``.

    The session does not close *registry*: whoever opened it closes it.
    """

    def __init__(
        self,
        registry: EntrySource,
        *,
        adapter: SecureAdapter | None = None,
        **options: Unpack[GuardOptions],
    ) -> None:
        refuse_unknown_keywords(self, options, GUARD_OPTIONS)
        self._guard = WireGuard(registry, **options)
        self.adapter = adapter or SecureAdapter()
        self.adapter._bind(self._guard)
        super().__init__()
        self.mount("https://", self.adapter)
        self.mount("http://", self.adapter)

    def __repr__(self) -> str:
        return f"<SecureSession registry={self.registry!r} strict={self.strict}>"

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise TypeError(_NOT_COPIED)

    def __copy__(self) -> NoReturn:
        raise TypeError(_NOT_COPIED)

    def __deepcopy__(self, memo: object) -> NoReturn:
        raise TypeError(_NOT_COPIED)

    def entry_for(self, url: str) -> ServiceEntry | None:
        """The decrypted entry *url* matches (from the session's cache, at the
        registry's current revision), or ``None`` if no entry matches."""
        plan = self._guard.plan_for(url)
        return None if plan is None else plan.entry

    def plan_for(self, url: str) -> InjectionPlan | None:
        """Deprecated: use :meth:`entry_for`. The injection plan is an internal type."""
        warnings.warn(
            "SecureSession.plan_for() is deprecated and will be removed in 0.3: use "
            "entry_for(url), which returns the matched ServiceEntry",
            DeprecationWarning,
            stacklevel=2,
        )
        return self._guard.plan_for(url)

    # -- requests hooks ------------------------------------------------------------

    def close(self) -> None:
        """Close every mounted adapter once (ours is mounted for both schemes)."""
        closed: list[BaseAdapter] = []
        for adapter in self.adapters.values():
            if not any(adapter is done for done in closed):
                closed.append(adapter)
                adapter.close()

    def mount(self, prefix: str | bytes, adapter: BaseAdapter) -> None:
        if isinstance(adapter, SecureAdapter):
            adapter._bind(self._guard)
        super().mount(prefix, adapter)

    def prepare_request(self, request: Request) -> PreparedRequest:
        caller_auth = request.auth is not None or self.auth is not None
        if not caller_auth and self.trust_env:
            # requests would read ~/.netrc here for every URL, and a netrc Authorization
            # would then pass for the caller's own and beat the registry. send() applies
            # it instead, only to URLs without an entry, which also spares the registered
            # ones the file-system probes.
            request = _shallow_copy(request)
            request.auth = _DEFER_NETRC
        prepared = super().prepare_request(request)
        adopt(prepared)
        if caller_auth:
            prepared.__dict__["securesession_caller_auth"] = True
        return prepared

    def send(self, request: PreparedRequest, **kwargs: Any) -> Response:
        adopt(request)
        state = request.__dict__
        if not state.pop("securesession_redirect_hop", False) and state.get(
            "securesession_downgraded"
        ):
            # Sent anew by the caller: the chain this request came from is over.
            state["securesession_downgraded"] = False
        netrc = state.pop("securesession_netrc", False)
        plan, response = self._send_guarded(request, kwargs, netrc=netrc)
        if (
            plan is not None
            and response.status_code in _REFRESH_STATUSES
            and not response.history
            and not is_downgraded(request)
        ):
            return self._refresh_and_retry(request, response, plan, kwargs)
        return response

    def _send_guarded(
        self, request: PreparedRequest, kwargs: dict[str, Any], *, netrc: bool = False
    ) -> tuple[InjectionPlan | None, Response]:
        url = request.url or ""
        plan = self._guard.guard(request, run_auth=True)
        if plan is None:
            if netrc:
                _apply_netrc(request)
        elif plan.entry.tls is not None:
            self._check_adapter(url, plan)
        state = request.__dict__
        # The adapter reuses this decision for this very request, and only for it.
        state["securesession_hint"] = (url, plan)
        try:
            return plan, super().send(request, **kwargs)
        finally:
            state.pop("securesession_hint", None)

    def _check_adapter(self, url: str, plan: InjectionPlan) -> None:
        """The adapter for *url* must be a SecureAdapter serving this session, since
        only it applies the entry's TLS profile."""
        adapter = self.get_adapter(url)
        if isinstance(adapter, SecureAdapter):
            adapter._bind(self._guard)
            return
        raise TLSConfigError(
            f"entry {plan.key} has a TLS profile, but the adapter mounted for this URL "
            f"({type(adapter).__name__}) is not a SecureAdapter and cannot apply it; "
            f"nothing was sent"
        )

    def rebuild_auth(self, prepared_request: PreparedRequest, response: Response) -> None:
        """Carry the chain's state to the next hop; its :meth:`send` applies the new
        URL's entry (and strips every other entry's values). Replaces requests' own
        step, whose netrc lookup would otherwise override the registry."""
        previous = response.request
        previous_url = previous.url or ""
        new_url = prepared_request.url or ""
        state = prepared_request.__dict__
        state["securesession_redirect_hop"] = True
        downgraded = is_downgraded(previous) or (
            previous_url[:6].lower() == "https:" and new_url[:5].lower() == "http:"
        )
        state["securesession_downgraded"] = downgraded
        if self.should_strip_auth(previous_url, new_url):  # type: ignore[no-untyped-call]
            # The caller's auth was for the previous origin: drop it (the registry's
            # own values are the guard's business) and let the new origin's entry in.
            state["securesession_caller_auth"] = False
            authorization = prepared_request.headers.get("Authorization")
            if authorization is not None and getattr(authorization, "plan", None) is None:
                del prepared_request.headers["Authorization"]
        if self.trust_env and not downgraded:
            state["securesession_netrc"] = True

    # -- 401 refresh -----------------------------------------------------------------

    def _refresh_and_retry(
        self,
        request: PreparedRequest,
        response: Response,
        plan: InjectionPlan,
        kwargs: dict[str, Any],
    ) -> Response:
        replayable = isinstance(request.body, (bytes, str, type(None)))
        fresh = self._guard.refreshed(
            plan, request.url or "", response.status_code, replayable=replayable
        )
        if fresh is None:
            return response
        _ = response.content
        response.close()
        # The copy keeps the chain's state; the guard swaps the old revision's values
        # for the new ones.
        _, new_response = self._send_guarded(request.copy(), kwargs)
        new_response.history.insert(0, response)
        return new_response


_NOT_COPIED = (
    "a SecureSession holds an open registry, decrypted credentials and TLS contexts, "
    "which cannot be pickled or copied; open a new SecureSession(registry) instead"
)


class _DeferNetrc(AuthBase):
    """Stands in for requests' netrc step at prepare time: marks the request so that
    :meth:`SecureSession.send` applies netrc if, and only if, no entry matches."""

    def __call__(self, request: PreparedRequest) -> PreparedRequest:
        request.__dict__["securesession_netrc"] = True
        return request


_DEFER_NETRC: Final = _DeferNetrc()


def _shallow_copy(request: Request) -> Request:
    """``copy.copy(request)``, without its generic ``__reduce_ex__`` round trip
    (2 µs against 0.5 µs, on every request) when *request* is a plain ``Request``,
    which has no ``__slots__`` or copy hooks: a new instance sharing its attributes."""
    if type(request) is not Request:
        return copy.copy(request)
    clone: Request = object.__new__(Request)
    clone.__dict__.update(request.__dict__)
    return clone


def _apply_netrc(request: PreparedRequest) -> None:
    """What requests' prepare step would have done for a URL without an entry: netrc
    credentials, else the URL's own ``user:password@``."""
    if "Authorization" in request.headers:
        return
    url = request.url or ""
    # Looked up at call time, where requests' own tests (and users) patch it.
    credentials = requests_sessions.get_netrc_auth(url)
    if not credentials:
        from_url = get_auth_from_url(url)
        credentials = from_url if any(from_url) else None
    if credentials:
        HTTPBasicAuth(*credentials)(request)
