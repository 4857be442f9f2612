"""requests-cache over a :class:`~securesession.SecureSession`: :class:`CachedSecureSession`.

``class S(CacheMixin, SecureSession)`` works, but it writes every injected header
(``X-Gateway-Password``, ``X-Api-Key``, ...) in clear into the cache, since
requests-cache redacts only the names in ``ignored_parameters`` (``Authorization``,
case-sensitively, by default); and it keys responses by URL only, so a response fetched
with one entry's credentials is served for another entry, or for no entry at all (after
the entry was removed). :class:`CachedSecureSession` is the supported combination:

* **Nothing injected is written.** Before a response is stored, every header value the
  session injected (whatever its name) and every header of the redaction list
  (:func:`~securesession.integrations.injected_header_names`, plus *redact_headers*;
  names compared case-insensitively) is removed from the stored request, from each
  redirect's request and from the next request of an unfollowed redirect. Injected values
  never enter a cache key either, not even hashed with ``match_headers``.
* **A response is keyed by the entry that fetched it**: the registry (its master key id),
  the entry and its revision are part of every cache key. A response cached for one
  entry is never served for another entry, for a URL without an entry, or after the
  entry changed (any ``put``, a credential rotation included).
* **Credentials of the caller's own are never cached**: a request with ``auth=`` (or
  ``session.auth``) or with a value of its own in a header of the redaction list is sent
  without reading or writing the cache (``response.from_cache`` is false), since its
  response depends on a credential the cache key cannot hold.
* A strict session raises :class:`~securesession.NoCredentialsError` for a URL without
  an entry before the cache is read.

``requests_cache.install_cache()`` is not supported with securesession; see
``docs/integrations.md``.
"""

from __future__ import annotations

import hashlib
import logging
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NoReturn, TypeVar

import attrs
from requests import PreparedRequest, Response
from requests.structures import CaseInsensitiveDict
from requests_cache import AnyResponse, BackendSpecifier, CacheMixin, create_key
from requests_cache.backends.base import BaseCache
from requests_cache.models.response import OriginalResponse
from requests_cache.policy.actions import CacheActions
from requests_cache.policy.directives import CacheDirectives
from requests_cache.session import get_504_response

from .. import (
    GuardOptions,
    Registry,
    SecureAdapter,
    SecureSession,
    ServiceEntry,
    injected_by,
    redacted_url,
)
from ._names import injected_header_names

__all__ = ["CachedSecureSession"]

logger = logging.getLogger("securesession")

if issubclass(SecureSession, CacheMixin):  # pragma: no cover - exercised in a subprocess
    raise ImportError(
        "securesession was imported after requests_cache.install_cache() had replaced "
        "requests.Session, so SecureSession itself caches, keyed by URL only and with the "
        "injected credentials in the stored requests. Do not call install_cache() in a "
        "process that uses securesession; use "
        "securesession.integrations.requests_cache.CachedSecureSession instead."
    )

# The request attribute that carries which entry a request matched, set by
# CachedSecureSession.send before requests-cache computes the request's key.
_STAMP = "securesession_cache_stamp"
# requests-cache's own keyword arguments of send(), which requests' send() refuses.
_CACHE_SEND_OPTIONS = ("expire_after", "only_if_cached", "refresh", "force_refresh")

_R = TypeVar("_R")

#: SecureSession's own keywords, taken out of requests-cache's.
_GUARD_KEYS: Final = GuardOptions.__optional_keys__


@dataclass(frozen=True)
class _Stamp:
    """Which entry (and revision) a request matched; ``key`` is ``None`` for none."""

    identity: str
    key: str | None = None
    revision: int | None = None


_NO_ENTRY = _Stamp("no entry")


class _SecureBase(SecureSession):
    """SecureSession's constructor, with its arguments stashed on the instance (see
    :meth:`CachedSecureSession.__init__`)."""

    def __init__(self) -> None:
        super().__init__(**self.__dict__.pop("_securesession_init"))


class CachedSecureSession(CacheMixin, _SecureBase):
    """A :class:`~securesession.SecureSession` with requests-cache's caching, that
    never writes an injected credential to the cache and never serves a response across
    registry entries (see the module documentation).

    *registry*, *adapter* and the keyword arguments of
    :class:`~securesession.GuardOptions` (*cache_ttl*, *cache_maxsize*, *strict*, *timer*,
    *stale_on_error*: its cache of decrypted entries) are
    :class:`~securesession.SecureSession`'s; *cache_name*, *backend* and every other
    keyword are :class:`requests_cache.CachedSession`'s (``expire_after``,
    ``match_headers``, ``allowable_codes``, ``serializer``, backend options, ...).
    *redact_headers* adds header names to the redaction list, which is otherwise every
    name :func:`~securesession.integrations.injected_header_names` reads from *registry*
    when the session is created (values injected under names added later are removed
    all the same: they are recognised by type). A ``key_fn`` of yours is called with
    the injected headers already removed, and its key is combined with the entry's.

    The keywords are typed ``Any``: requests-cache hands the ones it does not name to
    the backend, an open set a ``TypedDict`` cannot describe (PEP 692 has no extra keys).

    One backend instance serves one session: requests-cache keeps its settings on the
    backend. Two sessions may share a cache *file* (even over different registries).
    """

    def __init__(
        self,
        registry: Registry,
        cache_name: str | Path = "http_cache",
        backend: BackendSpecifier | None = None,
        *,
        adapter: SecureAdapter | None = None,
        redact_headers: Iterable[str] = (),
        **options: Any,
    ) -> None:
        names = {name.lower() for name in injected_header_names(registry)}
        names.update(name.lower() for name in redact_headers)
        self._redacted: frozenset[str] = frozenset(names)
        cache_options = dict(options)
        guard_options = {name: cache_options.pop(name) for name in _GUARD_KEYS & options.keys()}
        # requests-cache hands every keyword it does not know to the backend, and calls
        # the next __init__ in the MRO with the ones that match its signature: the
        # session's own arguments go through _SecureBase instead.
        self.__dict__["_securesession_init"] = {
            "registry": registry,
            "adapter": adapter,
            **guard_options,
        }
        inner_key_fn = cache_options.pop("key_fn", None) or create_key
        super().__init__(
            cache_name,
            backend,
            key_fn=_KeyFunction(self, inner_key_fn),
            **cache_options,
        )
        _scrub_on_save(self.cache, self)

    def __repr__(self) -> str:
        return (
            f"<CachedSecureSession registry={self.registry!r} strict={self.strict} "
            f"cache={type(self.cache).__name__}>"
        )

    @classmethod
    def wrap(cls, original_session: Any, **kwargs: Any) -> NoReturn:
        """Not supported: it would replace the session's :class:`SecureAdapter`."""
        raise TypeError(
            "CachedSecureSession.wrap() would replace the SecureAdapter (and its TLS "
            "profiles) with another session's adapters; create "
            "CachedSecureSession(registry, ...) instead"
        )

    # -- requests hooks ------------------------------------------------------------

    def send(self, request: PreparedRequest, **kwargs: Any) -> AnyResponse:  # type: ignore[override]
        if self._carries_caller_credentials(request):
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "request to %s carries credentials of the caller's own: not cached",
                    redacted_url(request.url or ""),
                )
            return self._send_uncached(request, kwargs)
        downgraded = bool(getattr(request, "securesession_downgraded", False))
        entry = None if downgraded else self.entry_for(request.url or "")
        if self.strict and entry is None:
            # SecureSession.send raises NoCredentialsError, before anything is sent.
            return self._send_uncached(request, kwargs)
        request.__dict__[_STAMP] = self._stamp(entry)
        response: AnyResponse = super().send(request, **kwargs)
        return response

    # -- internals -------------------------------------------------------------------

    def _stamp(self, entry: ServiceEntry | None) -> _Stamp:
        if entry is None:
            return _NO_ENTRY
        key_id = str(getattr(self.registry, "key_id", ""))
        identity = "\0".join(
            ("entry", key_id, entry.url, str(entry.revision), repr(entry.updated_at))
        )
        return _Stamp(identity, entry.url, entry.revision)

    def _stamp_for(self, request: Any) -> _Stamp:
        """The stamp *request* carries, or the one its URL gets now (for requests
        requests-cache builds itself: ``cache.contains(url=...)``, cached requests)."""
        stamp = getattr(request, "__dict__", {}).get(_STAMP)
        if isinstance(stamp, _Stamp):
            return stamp
        if getattr(request, "securesession_downgraded", False):
            return _NO_ENTRY
        return self._stamp(self.entry_for(getattr(request, "url", None) or ""))

    def _carries_caller_credentials(self, request: PreparedRequest) -> bool:
        if getattr(request, "securesession_caller_auth", False):
            return True
        return any(
            name.lower() in self._redacted and not _injected(value)
            for name, value in request.headers.items()
        )

    def _send_uncached(self, request: PreparedRequest, kwargs: dict[str, Any]) -> AnyResponse:
        options = {name: kwargs.pop(name, None) for name in _CACHE_SEND_OPTIONS}
        request.__dict__.pop(_STAMP, None)
        # Reads (and drops) requests-cache's private header; request() turns its
        # only_if_cached= into a Cache-Control directive.
        directives = CacheDirectives.from_headers(request.headers)
        if options["only_if_cached"] or directives.only_if_cached:
            return get_504_response(request)
        response = SecureSession.send(self, request, **kwargs)
        return OriginalResponse.wrap_response(response, CacheActions(skip_write=True))


class _KeyFunction:
    """requests-cache's ``key_fn``: the inner key of the request without its injected
    headers, combined with the entry the request matched."""

    def __init__(self, session: CachedSecureSession, inner: Callable[..., str]) -> None:
        self._session = weakref.ref(session)
        self._inner = inner

    def __repr__(self) -> str:
        return f"<securesession key_fn over {self._inner!r}>"

    def __call__(self, request: Any, **kwargs: Any) -> str:
        session = self._session()
        if session is None:
            stamp = _Stamp("closed session")  # matches nothing ever stored
            redacted: frozenset[str] = frozenset()
        else:
            stamp = session._stamp_for(request)
            redacted = session._redacted
        inner = self._inner(request=_without_injected(request, redacted), **kwargs)
        digest = hashlib.blake2b(digest_size=8)
        digest.update(inner.encode())
        digest.update(b"\0")
        digest.update(stamp.identity.encode())
        return digest.hexdigest()


def _scrub_on_save(cache: BaseCache, session: CachedSecureSession) -> None:
    """Make *cache* store a copy of each response without injected values."""
    original = cache.save_response
    owner = weakref.ref(session)

    def save_response(response: Response, cache_key: str | None = None, expires: Any = None) -> Any:
        current = owner()
        redacted = current._redacted if current is not None else frozenset()
        if current is not None and _fetched_under_another_entry(current, response):
            logger.debug("entry changed while the request was in flight: response not cached")
            return None
        return original(_scrubbed_response(response, redacted), cache_key, expires)

    cache.save_response = save_response  # type: ignore[method-assign]


def _fetched_under_another_entry(session: CachedSecureSession, response: Response) -> bool:
    """Whether *response* was fetched with another entry's (or revision's) values than
    the one its request was keyed under (the entry changed in between, or a 401 made
    the session retry with updated credentials)."""
    request = response.request
    stamp = getattr(request, "__dict__", {}).get(_STAMP)
    if not isinstance(stamp, _Stamp):
        return False
    for value in request.headers.values():
        entry = injected_by(value)
        if entry is not None and (entry.url, entry.revision) != (stamp.key, stamp.revision):
            return True
    return False


def _injected(value: object) -> bool:
    """Whether *value* is a header value a session injected (it remembers its entry)."""
    return injected_by(value) is not None


def _clean_headers(
    headers: Mapping[str, Any], redacted: frozenset[str]
) -> CaseInsensitiveDict[Any]:
    return CaseInsensitiveDict(
        {
            name: value
            for name, value in headers.items()
            if name.lower() not in redacted and not _injected(value)
        }
    )


def _without_injected(request: _R, redacted: frozenset[str]) -> _R:
    """A copy of *request* (prepared, cached or not prepared) without injected headers
    and headers of the redaction list; *request* itself is left as is."""
    if request is None:
        return request
    headers = getattr(request, "headers", None) or {}
    clean = _clean_headers(headers, redacted)
    if attrs.has(type(request)):  # a CachedRequest
        clone: Any = attrs.evolve(request, headers=clean)  # type: ignore[misc]
        return clone  # type: ignore[no-any-return]
    clone = object.__new__(type(request))
    clone.__dict__.update(request.__dict__)
    clone.headers = clean if isinstance(request, PreparedRequest) else dict(clean)
    return clone  # type: ignore[no-any-return]


def _scrubbed_response(response: Response, redacted: frozenset[str]) -> Response:
    """A copy of *response* whose request, redirect history and next request carry no
    injected value; *response* (which the caller gets) is left as is."""
    clone = object.__new__(type(response))
    clone.__dict__.update(response.__dict__)
    clone.request = _without_injected(response.request, redacted)
    following = response.__dict__.get("_next")
    if following is not None:
        clone.__dict__["_next"] = _without_injected(following, redacted)
    clone.history = [_scrubbed_response(hop, redacted) for hop in response.history]
    return clone
