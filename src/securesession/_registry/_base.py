"""The registry contract, the storage seam under it, and the encryption between them.

Two extension points, one per concern:

* :class:`Registry` is what sessions and tools use: put, look up, remove, list and
  rotate entries. Every backend presents it; :class:`EncryptedRegistry` is the one
  implementation the built-in backends share.
* :class:`RegistryStore` is what a storage backend writes: sealed rows (public
  settings plus ciphertext tokens), an indexed probe of candidate keys, and one
  atomic rewrite for key rotation. It never sees a clear secret or a key, so a
  new backend (SQL, KV, ...) cannot get the cryptography wrong.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, runtime_checkable

from .._crypto import MasterKey, token_key_id
from .._entry import ServiceEntry
from .._exceptions import DecryptionError, RegistryCorruptError, TLSConfigError
from .._secret import Credential, Secret
from .._tls import ClientCertificate, TLSProfile
from .._urls import canonicalize

__all__ = ["EncryptedRegistry", "EntryRef", "Registry", "RegistryStore", "SealedEntry"]

logger = logging.getLogger("securesession")

#: Version of the settings/secrets layout inside one sealed entry.
ENTRY_FORMAT: Final = 1
#: Entries with a TLS profile are written as format 2: a version that predates TLS
#: profiles refuses them instead of silently dropping their pins and CA bundle.
ENTRY_FORMAT_TLS: Final = 2
_READABLE_FORMATS: Final = frozenset({ENTRY_FORMAT, ENTRY_FORMAT_TLS})
#: The reserved secret field that authenticates a whole entry: an AES-GCM token of an
#: empty plaintext whose associated data is the entry key, its settings and every other
#: field token. An entry that has it is an *authenticated* (v3) entry; one without it
#: was written by securesession 0.1.0 and is read as a *legacy* entry.
ENTRY_TAG_FIELD: Final = "$entry"


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

    def rotate(self, new_key: MasterKey, *, progress: Callable[[], None] | None = None) -> None:
        """Re-encrypt every secret under *new_key* in one transaction; *progress*, if
        given, is called once per entry re-encrypted (for a progress bar).

        Every entry is rewritten in the current, authenticated format, so this is also
        how a registry with legacy (unauthenticated) entries is upgraded; *new_key* may
        be the current key."""

    def close(self) -> None:
        """Release connections; the registry is unusable afterwards."""


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

    def rewrite_all(self, reseal: Callable[[SealedEntry], dict[str, str]], new_key_id: str) -> None:
        """Replace every entry's secrets by ``reseal(entry)`` and record *new_key_id*,
        all in one transaction: either everything changes or nothing does. The
        settings are kept exactly as stored (the new secrets authenticate them)."""

    def close(self) -> None: ...


class EncryptedRegistry:
    """A :class:`Registry` over any :class:`RegistryStore`: seals and opens entries.

    Each secret field is one AES-256-GCM token whose associated data is the entry's
    canonical key and the field's name, so tokens cannot be moved between entries
    or fields; one more token (:data:`ENTRY_TAG_FIELD`) authenticates the entry as a
    whole: its key, its settings and the exact set of its field tokens. Thread-safe
    if the store is.
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

    def put(self, entry: ServiceEntry) -> ServiceEntry:
        settings, secrets = seal(entry, self._key)
        sealed = self._store.write(entry.url, settings, secrets, key_id=self._key.key_id)
        logger.debug(
            "registry %s: stored entry %s (revision %d)", self._name, entry.url, sealed.revision
        )
        return entry.with_metadata(revision=sealed.revision, updated_at=sealed.updated_at)

    def lookup(self, url: str) -> EntryRef | None:
        return self._store.find(canonicalize(url).prefix_keys)

    def load(self, ref: EntryRef) -> ServiceEntry | None:
        sealed = self._store.read(ref.key)
        return None if sealed is None else unseal(sealed, self._key)

    def get(self, url: str) -> ServiceEntry | None:
        ref = self.lookup(url)
        return None if ref is None else self.load(ref)

    def remove(self, url: str) -> bool:
        removed = self._store.delete(canonicalize(url).key)
        logger.debug("registry %s: remove %s: %s", self._name, url, removed)
        return removed

    def entries(self) -> Iterator[ServiceEntry]:
        for sealed in self._store.scan():
            yield unseal(sealed, self._key)

    def rotate(self, new_key: MasterKey, *, progress: Callable[[], None] | None = None) -> None:
        old_key = self._key
        upgraded: set[str] = set()

        def reseal(sealed: SealedEntry) -> dict[str, str]:
            # Authenticate first (a tampered authenticated entry stops the rotation; it
            # must not come out of it re-authenticated), then seal in the current format
            # over the settings exactly as stored, which rewrite_all keeps.
            _check_format(sealed)
            clear, legacy = _open_fields(sealed, old_key)
            tokens = _seal_fields(sealed.key, sealed.settings, clear, new_key)
            if legacy:
                upgraded.add(sealed.key)
            if progress is not None:
                progress()
            return tokens

        self._store.rewrite_all(reseal, new_key.key_id)
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
        self._store.close()


def rekeyed_error(name: str, stored: str | None, ours: str) -> DecryptionError:
    """What a store raises when a write comes with a key the registry no longer uses."""
    return DecryptionError(
        f"registry {name} was re-keyed to key id {stored} (by another process?), but this "
        f"process holds key id {ours}: wrong master key; reopen the registry with the new key"
    )


# -- sealing -----------------------------------------------------------------------


# An entry is sealed in the current format ("v3") as:
#
# * one token per secret field, associated data  _FIELD_V3 + key + NUL + field name;
# * one more field, ENTRY_TAG_FIELD: a token of an empty plaintext whose associated
#   data is _TAG_V3 + the canonical JSON of {key, settings, [[field, token], ...]}
#   (every other field, sorted). Editing a setting, adding, dropping or swapping a
#   field token, or moving the row to another key changes that associated data, so
#   the tag fails to authenticate and the entry is refused before anything is built.
#
# Entries written by securesession 0.1.0 ("legacy") have no tag and their field
# tokens use _LEGACY; the labels differ, so a v3 token never opens as a legacy one:
# stripping the tag from a v3 entry does not turn it into a legacy entry.
_LEGACY: Final = b"securesession entry\x00"
_FIELD_V3: Final = b"securesession entry v3\x00"
_TAG_V3: Final = b"securesession entry tag v3\x00"
_TAG_PLAINTEXT: Final = b""

_legacy_warned: set[tuple[str, int]] = set()
_legacy_warned_lock = threading.Lock()


def _legacy_context(key: str, field_name: str) -> bytes:
    return _LEGACY + key.encode() + b"\x00" + field_name.encode()


def _field_context(key: str, field_name: str) -> bytes:
    return _FIELD_V3 + key.encode() + b"\x00" + field_name.encode()


def _tag_context(key: str, settings: dict[str, Any], secrets: dict[str, str]) -> bytes:
    fields = sorted([name, token] for name, token in secrets.items() if name != ENTRY_TAG_FIELD)
    document = {"key": key, "settings": settings, "fields": fields}
    try:
        canonical = json.dumps(
            document, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise RegistryCorruptError(f"entry {key}: invalid stored settings ({exc})") from None
    return _TAG_V3 + canonical.encode("ascii")


def _seal_fields(
    key: str, settings: dict[str, Any], clear: dict[str, str], master: MasterKey
) -> dict[str, str]:
    """The field tokens of an entry and the tag that authenticates them with *settings*."""
    tokens = {
        name: master.encrypt(value.encode(), _field_context(key, name))
        for name, value in clear.items()
    }
    tokens[ENTRY_TAG_FIELD] = master.encrypt(_TAG_PLAINTEXT, _tag_context(key, settings, tokens))
    return tokens


def _check_format(sealed: SealedEntry) -> None:
    settings = sealed.settings
    if not isinstance(settings, dict) or settings.get("format") not in _READABLE_FORMATS:
        raise RegistryCorruptError(f"entry {sealed.key}: unknown settings format")


def _open_field(sealed: SealedEntry, name: str, key: MasterKey, *, legacy: bool) -> str:
    token = sealed.secrets[name]
    context = _legacy_context if legacy else _field_context
    try:
        return key.decrypt(token, context(sealed.key, name)).decode()
    except DecryptionError as exc:
        if legacy and _opens(token, key, _field_context(sealed.key, name)):
            raise DecryptionError(
                f"entry {sealed.key}: its authentication field {ENTRY_TAG_FIELD!r} was "
                "removed outside securesession (its fields are in the authenticated "
                "format); restore the entry from a backup or put it again"
            ) from None
        raise DecryptionError(f"entry {sealed.key}, field {name!r}: {exc}") from None
    except UnicodeDecodeError:
        raise RegistryCorruptError(f"entry {sealed.key}, field {name!r}: not UTF-8") from None


def _opens(token: str, key: MasterKey, context: bytes) -> bool:
    try:
        key.decrypt(token, context)
    except DecryptionError:
        return False
    return True


def _verify_tag(sealed: SealedEntry, key: MasterKey) -> None:
    """Raise unless the entry's tag authenticates its key, settings and field tokens."""
    tag = sealed.secrets[ENTRY_TAG_FIELD]
    try:
        plaintext = key.decrypt(tag, _tag_context(sealed.key, sealed.settings, sealed.secrets))
    except DecryptionError as exc:
        carried = token_key_id(tag)
        if carried is not None and carried != key.key_id:
            raise DecryptionError(f"entry {sealed.key}: {exc}") from None
        # Say which field, if one of them is the reason (tampered, or moved here).
        for name in sorted(sealed.secrets):
            if name != ENTRY_TAG_FIELD:
                _open_field(sealed, name, key, legacy=False)
        raise RegistryCorruptError(
            f"entry {sealed.key}: invalid stored settings or fields (entry authentication "
            "failed): they were changed outside securesession; restore the entry from a "
            "backup or put it again"
        ) from None
    if plaintext != _TAG_PLAINTEXT:
        raise RegistryCorruptError(f"entry {sealed.key}: invalid entry authentication field")


def _open_fields(sealed: SealedEntry, key: MasterKey) -> tuple[dict[str, str], bool]:
    """Every secret field of *sealed* in clear, once the entry is authenticated (or read
    as a legacy entry); and whether it is a legacy entry."""
    legacy = ENTRY_TAG_FIELD not in sealed.secrets
    if not legacy:
        _verify_tag(sealed, key)
    clear = {
        name: _open_field(sealed, name, key, legacy=legacy)
        for name in sealed.secrets
        if name != ENTRY_TAG_FIELD
    }
    return clear, legacy


def _warn_legacy(sealed: SealedEntry) -> None:
    marker = (sealed.key, sealed.revision)
    with _legacy_warned_lock:
        if marker in _legacy_warned:
            return
        _legacy_warned.add(marker)
    logger.warning(
        "entry %s is in the legacy format of securesession 0.1.0: its settings (injection "
        "modes, header names, TLS profile: CA bundle, pins, CRL, versions) and its set of "
        "secret fields are not authenticated, so whoever can write the registry store can "
        "change them unnoticed; run `securesession rotate-key` to upgrade the registry",
        sealed.key,
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


def seal(entry: ServiceEntry, key: MasterKey) -> tuple[dict[str, Any], dict[str, str]]:
    """Split *entry* into public settings and encrypted secret fields, the entry tag
    (:data:`ENTRY_TAG_FIELD`) among them."""
    clear: dict[str, str] = {}
    for role, credential in (("gateway", entry.gateway), ("request", entry.request)):
        if credential is not None:
            clear[f"{role}.username"] = credential.username
            clear[f"{role}.password"] = credential.password.reveal()
    for header, value in entry.secret_headers.items():
        clear[f"header.{header}"] = value.reveal()
    settings: dict[str, Any] = {
        "format": ENTRY_FORMAT if entry.tls is None else ENTRY_FORMAT_TLS,
        "gateway_auth": entry.gateway_auth,
        "request_auth": entry.request_auth,
        "gateway_headers": list(entry.gateway_headers),
        "request_headers": list(entry.request_headers),
        "description": entry.description,
    }
    if entry.tls is not None:
        settings["tls"] = _seal_tls(entry.tls, clear)
    return settings, _seal_fields(entry.url, settings, clear, key)


def unseal(sealed: SealedEntry, key: MasterKey) -> ServiceEntry:
    """Authenticate and decrypt a stored entry; any failure names the entry (and the
    field, when one is to blame), never a value. Nothing is built from the settings
    before the entry tag has authenticated them."""
    _check_format(sealed)
    clear, legacy = _open_fields(sealed, key)
    if legacy:
        _warn_legacy(sealed)
    settings = sealed.settings

    def credential(role: str) -> Credential | None:
        if f"{role}.password" not in clear:
            return None
        return Credential(clear.get(f"{role}.username", ""), clear[f"{role}.password"])

    headers = {
        name[len("header.") :]: Secret(value)
        for name, value in clear.items()
        if name.startswith("header.")
    }
    try:
        entry = ServiceEntry(
            url=sealed.key,
            gateway=credential("gateway"),
            request=credential("request"),
            gateway_auth=settings["gateway_auth"],
            request_auth=settings["request_auth"],
            gateway_headers=tuple(settings["gateway_headers"]),
            request_headers=tuple(settings["request_headers"]),
            secret_headers=headers,
            description=settings.get("description", ""),
            tls=_unseal_tls(settings.get("tls"), clear),
        )
    except TLSConfigError as exc:
        raise TLSConfigError(f"entry {sealed.key}: stored TLS profile: {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise RegistryCorruptError(f"entry {sealed.key}: invalid stored settings ({exc})") from None
    return entry.with_metadata(revision=sealed.revision, updated_at=sealed.updated_at)


def _seal_tls(profile: TLSProfile, clear: dict[str, str]) -> dict[str, Any]:
    """Public TLS settings; the certificate bundle (its key inside) and its password
    go into *clear*, to be encrypted like every other secret field."""
    cert = profile.client_cert
    if cert is not None:
        clear["tls.client_cert"] = base64.b64encode(cert.data).decode("ascii")
        if cert.password is not None:
            clear["tls.client_cert.password"] = cert.password.reveal()
    return {
        "client_cert_format": None if cert is None else cert.format,
        "version": profile.version,
        "min_version": profile.min_version,
        "max_version": profile.max_version,
        # PEM text, "system" (the OS trust store) or None (certifi)
        "ca_bundle": profile.ca_bundle.decode("ascii")
        if isinstance(profile.ca_bundle, bytes)
        else profile.ca_bundle,
        "pins": list(profile.pins),
        "crl": None if profile.crl is None else profile.crl.decode("ascii"),
        "crl_scope": profile.crl_scope,
        "check_revocation": profile.check_revocation,
        "allow_legacy": profile.allow_legacy,
    }


def _unseal_tls(settings: Any, clear: dict[str, str]) -> TLSProfile | None:
    if settings is None:
        return None  # written before TLS profiles existed, or an entry without one
    if not isinstance(settings, dict):
        raise TypeError("tls settings are not an object")
    cert: ClientCertificate | None = None
    if settings["client_cert_format"] is not None:
        cert = ClientCertificate(
            settings["client_cert_format"],
            base64.b64decode(clear["tls.client_cert"], validate=True),
            clear.get("tls.client_cert.password"),
        )
    ca_bundle, crl = settings["ca_bundle"], settings["crl"]
    return TLSProfile(
        client_cert=cert,
        version=settings["version"],
        min_version=settings["min_version"],
        max_version=settings["max_version"],
        ca_bundle=ca_bundle if ca_bundle in (None, "system") else ca_bundle.encode("ascii"),
        pins=tuple(settings["pins"]),
        crl=None if crl is None else crl.encode("ascii"),
        crl_scope=settings["crl_scope"],
        check_revocation=settings["check_revocation"],
        allow_legacy=settings["allow_legacy"],
    )


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
