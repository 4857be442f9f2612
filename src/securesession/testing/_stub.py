"""``StubRegistry``: a real, encrypted, in-memory registry built in one line from plain data.

It is an :class:`~securesession.EncryptedRegistry` over the ``memory://`` store, so
matching, sealing and every error are the ones a production backend gives (it runs
the same backend contract suite). On top it records every :meth:`lookup`, so a test
can assert which entries its code actually used::

    registry = StubRegistry({
        "https://svc.test/api/": {"gateway": ("gw", "gw-pw"), "request": ("u", "u-pw")},
    })
    with SecureSession(registry) as session:
        ...
    registry.assert_used("https://svc.test/api/", times=1)
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any, Final, NamedTuple, TypeAlias

from .. import (
    Credential,
    EntryRef,
    MasterKey,
    Secret,
    ServiceEntry,
    TLSProfile,
    redacted_url,
)
from .._urls import canonicalize
from ..memory import MemoryStore
from ..registry import EncryptedRegistry, RegistryStore

__all__ = ["CredentialSpec", "EntriesSpec", "EntrySpec", "Lookup", "StubRegistry"]

#: A credential in plain data: ``(user, password)``, a bare token (``str`` or
#: :class:`~securesession.Secret`, for bearer or password-only header modes),
#: a :class:`~securesession.Credential`, or ``None`` for none.
CredentialSpec: TypeAlias = tuple[str, str] | list[str] | str | Secret | Credential | None
#: One entry in plain data (``ServiceEntry`` keyword arguments without ``url``), or a
#: ready :class:`~securesession.ServiceEntry`.
EntrySpec: TypeAlias = Mapping[str, Any] | ServiceEntry
#: Many entries: ``{url: EntrySpec}``, or an iterable of :class:`~securesession.ServiceEntry`.
#: (The mapping's values are typed ``Any`` because a literal mixing entry forms infers
#: as ``dict[str, object]``; each value is checked when the entry is built.)
EntriesSpec: TypeAlias = Mapping[str, Any] | Iterable[ServiceEntry]

_OPTIONS: Final = frozenset(
    {
        "gateway",
        "request",
        "gateway_auth",
        "request_auth",
        "gateway_headers",
        "request_headers",
        "secret_headers",
        "description",
        "tls",
    }
)


class Lookup(NamedTuple):
    """One :meth:`StubRegistry.lookup`: the URL asked for, and the key of the entry it
    matched (the entry's canonical URL) or ``None``."""

    url: str
    key: str | None


class StubRegistry(EncryptedRegistry):
    """An in-memory registry for tests, filled from plain data, recording its lookups.

    *entries* is ``{url: spec}`` where *spec* holds ``ServiceEntry`` keyword
    arguments (``gateway``, ``request``, ``gateway_auth``, ``request_auth``,
    ``gateway_headers``, ``request_headers``, ``secret_headers``, ``description``,
    ``tls``), credentials given as ``(user, password)`` tuples or bare tokens and
    ``tls`` as a :class:`~securesession.TLSProfile` (client certificate, trust, pins:
    the entry's mutual TLS, exactly as in production); a spec may also
    be a ready :class:`~securesession.ServiceEntry`, and *entries* may be an iterable
    of them. *key* defaults to a fresh random key. Pass another stub's :attr:`store`
    (and key) to reopen the same entries, as a second process would.

    Like every backend, a closed stub refuses further use with
    :class:`~securesession.RegistryError`.
    """

    def __init__(
        self,
        entries: EntriesSpec | None = None,
        *,
        key: MasterKey | None = None,
        store: RegistryStore | None = None,
        name: str = "stub://",
    ) -> None:
        super().__init__(
            MemoryStore() if store is None else store,
            MasterKey.generate() if key is None else key,
            name=name,
        )
        self._lookups: list[Lookup] = []
        self._lookups_lock = threading.Lock()
        if entries is not None:
            self.add_entries(entries)

    def __repr__(self) -> str:
        state = " closed" if self.closed else ""
        return f"<StubRegistry {self._name} key_id={self.key_id}{state}>"

    def __enter__(self) -> StubRegistry:
        return self

    # -- filling -----------------------------------------------------------------

    @property
    def key(self) -> MasterKey:
        """The master key the entries are sealed under (the new one after :meth:`rotate`)."""
        return self._key.active

    def add(
        self,
        url: str,
        gateway: CredentialSpec = None,
        request: CredentialSpec = None,
        **options: Any,
    ) -> ServiceEntry:
        """Store one entry from plain data and return it (with its revision)::

        registry.add(server.url + "/api", gateway=("gw", "pw"),
                     request="token", request_auth="bearer")
        """
        return self.put(entry_from_spec(url, {"gateway": gateway, "request": request, **options}))

    def add_entries(self, entries: EntriesSpec) -> list[ServiceEntry]:
        """Store every entry of *entries* (the constructor's format); return them stored."""
        return [self.put(entry) for entry in entries_from_spec(entries)]

    # -- lookup record -------------------------------------------------------------

    @property
    def lookups(self) -> list[Lookup]:
        """Every lookup so far, oldest first (a copy). A :class:`~securesession.SecureSession`
        looks up once per request it sends (redirect hops and 401 retries included)."""
        with self._lookups_lock:
            return list(self._lookups)

    @property
    def misses(self) -> list[str]:
        """URLs looked up that matched no entry (what a strict session would refuse)."""
        return [lookup.url for lookup in self.lookups if lookup.key is None]

    def clear_lookups(self) -> None:
        """Forget the lookups recorded so far."""
        with self._lookups_lock:
            self._lookups.clear()

    def uses(self, entry_url: str) -> int:
        """How many lookups matched the entry stored under *entry_url*."""
        key = canonicalize(entry_url).key
        return sum(1 for lookup in self.lookups if lookup.key == key)

    def assert_used(self, entry_url: str, *, times: int | None = None) -> None:
        """Assert that a lookup matched the entry stored under *entry_url* (exactly
        *times* times, if given). *entry_url* is the entry's URL, not a request URL."""
        used = self.uses(entry_url)
        ok = used > 0 if times is None else used == times
        if not ok:
            wanted = "at least once" if times is None else f"{times} time(s)"
            raise AssertionError(
                f"entry {canonicalize(entry_url).key} was matched {used} time(s), "
                f"expected {wanted}; lookups: {self._describe()}"
            )

    def assert_not_used(self, entry_url: str) -> None:
        """Assert that no lookup matched the entry stored under *entry_url*."""
        self.assert_used(entry_url, times=0)

    def _describe(self) -> str:
        # Origin and path only: a query string may carry a token, even in tests.
        shown = [f"{redacted_url(lookup.url)} -> {lookup.key}" for lookup in self.lookups]
        return "[" + ", ".join(shown) + "]" if shown else "none"

    # -- Registry ------------------------------------------------------------------

    def lookup(self, url: str) -> EntryRef | None:
        ref = super().lookup(url)
        with self._lookups_lock:
            self._lookups.append(Lookup(url, None if ref is None else ref.key))
        return ref


# -- plain data -> ServiceEntry ---------------------------------------------------------


def entries_from_spec(entries: EntriesSpec) -> list[ServiceEntry]:
    """Turn ``{url: spec}`` or an iterable of entries into :class:`ServiceEntry` objects."""
    if isinstance(entries, ServiceEntry):
        return [entries]
    if isinstance(entries, Mapping):
        return [entry_from_spec(url, spec) for url, spec in entries.items()]
    if isinstance(entries, (str, bytes)):
        raise TypeError("entries must be a {url: spec} mapping or ServiceEntry objects, not str")
    result: list[ServiceEntry] = []
    for entry in entries:
        if not isinstance(entry, ServiceEntry):
            raise TypeError(
                "entries given as a sequence must be ServiceEntry objects, "
                f"not {type(entry).__name__}; use a {{url: spec}} mapping for plain data"
            )
        result.append(entry)
    return result


def entry_from_spec(url: str, spec: EntrySpec) -> ServiceEntry:
    """One :class:`ServiceEntry` for *url* from plain data (see :class:`StubRegistry`)."""
    if isinstance(spec, ServiceEntry):
        if spec.url != canonicalize(url).key:
            raise ValueError(
                f"entry given under {canonicalize(url).key} has url {spec.url}; they must match"
            )
        return spec
    if not isinstance(spec, Mapping):
        raise TypeError(
            f"entry {url}: expected a mapping of ServiceEntry options or a ServiceEntry, "
            f"not {type(spec).__name__}"
        )
    unknown = sorted(set(spec) - _OPTIONS)
    if unknown:
        raise TypeError(
            f"entry {url}: unknown option(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(_OPTIONS))}"
        )
    options = dict(spec)
    for role in ("gateway", "request"):
        options[role] = _credential(url, role, options.get(role))
    if "secret_headers" in options:
        options["secret_headers"] = {
            name: Secret(value) for name, value in dict(options["secret_headers"]).items()
        }
    for names in ("gateway_headers", "request_headers"):
        if names in options:
            options[names] = tuple(options[names])
    tls = options.get("tls")
    if tls is not None and not isinstance(tls, TLSProfile):
        # Never echo the value: it may hold a certificate's password or key.
        raise TypeError(f"entry {url}: tls must be a TLSProfile or None, not {type(tls).__name__}")
    return ServiceEntry(url=url, **options)


def _credential(url: str, role: str, value: object) -> Credential | None:
    if value is None or isinstance(value, Credential):
        return value
    if isinstance(value, (str, Secret)):
        return Credential.token(value)
    if isinstance(value, (tuple, list)) and len(value) == 2:
        username, password = value
        if isinstance(username, str) and isinstance(password, (str, Secret)):
            return Credential(username, password)
    # Never echo the value: it is a credential, however malformed.
    raise TypeError(
        f"entry {url}: {role} must be (user, password), a token string, a Credential "
        f"or None, not {type(value).__name__}"
    )
