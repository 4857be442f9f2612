"""The registry contract, the storage seam under it, and the encryption between them.

Two extension points, one per concern:

* :class:`Registry` is what sessions and tools use: put, look up, remove, list and
  rotate entries. Every backend presents it; :class:`EncryptedRegistry` is the one
  implementation the built-in backends share.
* :class:`RegistryStore` is what a storage backend writes: sealed rows (public
  settings plus ciphertext tokens), an indexed probe of candidate keys, and one
  atomic rewrite for key rotation. It never sees a clear secret or a key, so a
  new backend (SQL, KV, ...) cannot get the cryptography wrong.

How an entry becomes a row (the format, its versions, the entry tag, legacy rows) is
the codec's, :mod:`._codec`. Backend authors import these names from
:mod:`securesession.registry`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .._crypto import MasterKey, token_key_id
from .._entry import ServiceEntry
from .._exceptions import DecryptionError, RegistryCorruptError, RegistryError
from .._urls import canonicalize
from ._codec import reseal, seal, unseal

__all__ = [
    "EncryptedRegistry",
    "EntryRef",
    "Registry",
    "RegistryStore",
    "SealedEntry",
    "dumps",
    "loads",
    "now",
    "rekeyed_error",
]

logger = logging.getLogger("securesession")


@dataclass(frozen=True, slots=True)
class EntryRef:
    """What a cheap lookup returns: which entry, and which revision of it."""

    key: str
    revision: int


@dataclass(frozen=True, slots=True)
class SealedEntry:
    """An entry as stored: public settings, and ciphertext tokens for every secret."""

    key: str
    revision: int
    updated_at: float
    settings: dict[str, Any]
    secrets: dict[str, str]


@runtime_checkable
class Registry(Protocol):
    """An encrypted credential registry. Backends are opened with :func:`open_registry`."""

    @property
    def key_id(self) -> str:
        """Id of the master key the registry's secrets are encrypted under."""

    def put(self, entry: ServiceEntry) -> ServiceEntry:
        """Add or replace the entry for ``entry.url``; return it with its new revision."""

    def get(self, url: str) -> ServiceEntry | None:
        """The decrypted entry whose prefix matches *url* longest, if any."""

    def lookup(self, url: str) -> EntryRef | None:
        """Which entry *url* matches, without decrypting anything (the hot path)."""

    def load(self, ref: EntryRef) -> ServiceEntry | None:
        """Decrypt the entry *ref* names; ``None`` if it was removed since the lookup."""

    def remove(self, url: str) -> bool:
        """Remove the entry whose prefix is exactly *url*; tell whether one existed."""

    def entries(self) -> Iterator[ServiceEntry]:
        """Every entry, decrypted, in key order."""

    def urls(self) -> Iterator[str]:
        """The URL (canonical prefix, ``entry.url``) of every entry, in key order,
        without decrypting anything: for listings, near-miss reports, progress bars."""

    def count(self) -> int:
        """How many entries the registry holds, without decrypting anything."""

    def rotate(self, new_key: MasterKey, *, progress: Callable[[], None] | None = None) -> None:
        """Re-encrypt every secret under *new_key* in one transaction; *progress*, if
        given, is called once per entry re-encrypted (for a progress bar).

        Every entry is rewritten in the current, authenticated format, so this is also
        how a registry with legacy (unauthenticated) entries is upgraded; *new_key* may
        be the current key."""

    def close(self) -> None:
        """Release connections. Closing twice is harmless; every other method of a
        closed registry raises :class:`~securesession.RegistryError`."""


class RegistryStore(Protocol):
    """Storage for sealed entries: what a backend author implements.

    Every method is atomic on its own; :meth:`rewrite_all` is one transaction.
    """

    def stored_key_id(self) -> str | None:
        """The key id recorded by the last writer, or ``None`` for a new store."""

    def record_key_id(self, key_id: str) -> None:
        """Record *key_id* if the store has none yet (first open)."""

    def find(self, keys: Sequence[str]) -> EntryRef | None:
        """The longest of *keys* (all prefixes of one URL) that is stored."""

    def read(self, key: str) -> SealedEntry | None: ...

    def write(
        self, key: str, settings: dict[str, Any], secrets: dict[str, str], *, key_id: str
    ) -> SealedEntry:
        """Insert or replace *key* under a new registry-wide revision.

        *key_id* is the key the secrets are encrypted under: in the same transaction,
        refuse (with :func:`rekeyed_error`) if the registry has meanwhile been rotated
        to another key, so a process holding the old key never writes an entry that
        the new key cannot read."""

    def delete(self, key: str) -> bool: ...

    def scan(self) -> Iterator[SealedEntry]:
        """Every stored entry in key order."""

    def keys(self) -> Iterator[str]:
        """The key of every stored entry in key order (those :meth:`scan` yields),
        without reading the entries where the store can avoid it: listings and
        progress bars use it, and must not cost one read per entry."""

    def rewrite_all(self, reseal: Callable[[SealedEntry], dict[str, str]], new_key_id: str) -> None:
        """Replace every entry's secrets by ``reseal(entry)`` and record *new_key_id*,
        all in one transaction: either everything changes or nothing does. The
        settings are kept exactly as stored (the new secrets authenticate them)."""

    def close(self) -> None:
        """Release the store's connections. It may be called more than once."""


class EncryptedRegistry:
    """A :class:`Registry` over any :class:`RegistryStore`: seals and opens entries.

    Each secret field is one AES-256-GCM token whose associated data is the entry's
    canonical key and the field's name, so tokens cannot be moved between entries
    or fields; one more token, the entry tag, authenticates the entry as a whole: its
    key, its settings and the exact set of its field tokens (the format is
    :mod:`._codec`'s). Thread-safe if the store is. Once closed, it refuses every call
    with :class:`~securesession.RegistryError`, whatever the store would do.
    """

    def __init__(self, store: RegistryStore, key: MasterKey, *, name: str) -> None:
        stored = store.stored_key_id()
        if stored is None:
            # No key id recorded (a new store, or one whose record was lost): never
            # adopt ours over entries that say they are under another key.
            found = _key_id_of_entries(store)
            if found is not None and found != key.key_id:
                store.close()
                raise DecryptionError(
                    f"registry {name} records no key id, but its entries are encrypted "
                    f"under key id {found}, and the master key has id {key.key_id}: "
                    "wrong master key"
                )
            store.record_key_id(key.key_id)
            stored = store.stored_key_id()  # another process may have recorded first
        if stored is not None and stored != key.key_id:
            store.close()
            raise DecryptionError(
                f"registry {name} is encrypted under key id {stored}, "
                f"but the master key has id {key.key_id}: wrong master key"
            )
        self._store = store
        self._key = key
        self._name = name
        self._closed = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._name} key_id={self._key.key_id}>"

    def __enter__(self) -> EncryptedRegistry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def key_id(self) -> str:
        return self._key.key_id

    @property
    def store(self) -> RegistryStore:
        """The storage under this registry (for tools that copy sealed rows)."""
        return self._store

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def _open_store(self) -> RegistryStore:
        if self._closed:
            raise RegistryError(f"registry {self._name} is closed")
        return self._store

    def put(self, entry: ServiceEntry) -> ServiceEntry:
        store = self._open_store()
        settings, secrets = seal(entry, self._key)
        sealed = store.write(entry.url, settings, secrets, key_id=self._key.key_id)
        logger.debug(
            "registry %s: stored entry %s (revision %d)", self._name, entry.url, sealed.revision
        )
        return entry.with_metadata(revision=sealed.revision, updated_at=sealed.updated_at)

    def lookup(self, url: str) -> EntryRef | None:
        return self._open_store().find(canonicalize(url).prefix_keys)

    def load(self, ref: EntryRef) -> ServiceEntry | None:
        sealed = self._open_store().read(ref.key)
        return None if sealed is None else unseal(sealed, self._key)

    def get(self, url: str) -> ServiceEntry | None:
        ref = self.lookup(url)
        return None if ref is None else self.load(ref)

    def remove(self, url: str) -> bool:
        removed = self._open_store().delete(canonicalize(url).key)
        logger.debug("registry %s: remove %s: %s", self._name, url, removed)
        return removed

    def entries(self) -> Iterator[ServiceEntry]:
        rows = self._open_store().scan()
        return (unseal(sealed, self._key) for sealed in rows)

    def urls(self) -> Iterator[str]:
        return self._open_store().keys()

    def count(self) -> int:
        return sum(1 for _ in self.urls())

    def rotate(self, new_key: MasterKey, *, progress: Callable[[], None] | None = None) -> None:
        store = self._open_store()
        old_key = self._key
        upgraded: set[str] = set()

        def resealed(sealed: SealedEntry) -> dict[str, str]:
            tokens, legacy = reseal(sealed, old_key, new_key)
            if legacy:
                upgraded.add(sealed.key)
            if progress is not None:
                progress()
            return tokens

        store.rewrite_all(resealed, new_key.key_id)
        self._key = new_key
        logger.info(
            "registry %s: rotated from key id %s to %s", self._name, old_key.key_id, new_key.key_id
        )
        if upgraded:
            logger.info(
                "registry %s: %d legacy entr%s upgraded to the authenticated format",
                self._name,
                len(upgraded),
                "y" if len(upgraded) == 1 else "ies",
            )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._store.close()


def rekeyed_error(name: str, stored: str | None, ours: str) -> DecryptionError:
    """What a store's :meth:`~RegistryStore.write` raises when it comes with a key the
    registry no longer uses (*stored* is the store's key id, *ours* the writer's)."""
    return DecryptionError(
        f"registry {name} was re-keyed to key id {stored} (by another process?), but this "
        f"process holds key id {ours}: wrong master key; reopen the registry with the new key"
    )


def _key_id_of_entries(store: RegistryStore) -> str | None:
    """The key id the first stored token carries, if the store holds any token."""
    try:
        for sealed in store.scan():
            for name in sorted(sealed.secrets):
                found = token_key_id(sealed.secrets[name])
                if found is not None:
                    return found
    except RegistryCorruptError:
        # A store that cannot list entries before a key id is recorded (Vault: no
        # index document yet) holds none that could be read.
        return None
    return None


def now() -> float:
    """Wall-clock time of a change, for "last changed" displays only (never for TTLs)."""
    return time.time()


def dumps(value: dict[str, Any] | dict[str, str]) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def loads(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        raise RegistryCorruptError(f"{what} is not valid JSON") from None
    if not isinstance(value, dict):
        raise RegistryCorruptError(f"{what} is not a JSON object")
    return value
