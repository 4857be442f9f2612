"""The entry codec: how a :class:`ServiceEntry` becomes a stored row and back.

:func:`seal` splits an entry into public settings and one AES-256-GCM token per
secret field, plus the entry tag (:data:`ENTRY_TAG_FIELD`) that authenticates the
whole entry; :func:`unseal` authenticates and decrypts a stored row; :func:`reseal`
re-encrypts a row under another key for a rotation; :func:`changed_secret_fields`
tells the audit log which secret fields a change changed. The format versions and the
legacy (securesession 0.1.0) format are handled here and nowhere else: a store only
ever carries the rows, and :class:`~securesession.registry.EncryptedRegistry` only
calls these functions.

The current format ("v3") is:

* one token per secret field, associated data  ``_FIELD_V3 + key + NUL + field name``;
* one more field, :data:`ENTRY_TAG_FIELD`: a token of an empty plaintext whose
  associated data is ``_TAG_V3`` + the canonical JSON of ``{key, settings,
  [[field, token], ...]}`` (every other field, sorted). Editing a setting, adding,
  dropping or swapping a field token, or moving the row to another key changes that
  associated data, so the tag fails to authenticate and the entry is refused before
  anything is built.

Entries written by securesession 0.1.0 ("legacy") have no tag and their field tokens
use ``_LEGACY``; the labels differ, so a v3 token never opens as a legacy one:
stripping the tag from a v3 entry does not turn it into a legacy entry.

A legacy row authenticates its secrets only, not its settings: anyone who can write
the store can give it other settings, or make one from nothing (a row without any
field needs no key at all). So a legacy row is opened only when the caller says
``accept_legacy`` (a registry opened with ``legacy_entries="accept"``, or the upgrade
itself), and a legacy row without any secret field never: it would authenticate
nothing. Every refusal is a :class:`LegacyEntryError` naming the entry and the fix.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from typing import TYPE_CHECKING, Any, Final

from .._crypto import TokenCipher, token_key_id
from .._entry import ServiceEntry
from .._exceptions import DecryptionError, LegacyEntryError, RegistryCorruptError, TLSConfigError
from .._secret import Credential, Secret
from .._tls.model import ClientCertificate, TLSProfile

if TYPE_CHECKING:
    from ._base import SealedEntry

__all__ = [
    "ENTRY_FORMAT",
    "ENTRY_FORMAT_TLS",
    "ENTRY_TAG_FIELD",
    "changed_secret_fields",
    "entry_fields",
    "is_legacy",
    "reseal",
    "seal",
    "unseal",
]

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

_LEGACY: Final = b"securesession entry\x00"
_FIELD_V3: Final = b"securesession entry v3\x00"
_TAG_V3: Final = b"securesession entry tag v3\x00"
_TAG_PLAINTEXT: Final = b""
#: The client certificate's public facts (JSON), written since 0.2; encrypted like the
#: certificate itself, so a store reader learns no more than before.
_CERT_FACTS_FIELD: Final = "tls.client_cert.facts"

_legacy_warned: set[tuple[str, int]] = set()
_legacy_warned_lock = threading.Lock()


# -- the three operations --------------------------------------------------------------


def seal(entry: ServiceEntry, key: TokenCipher) -> tuple[dict[str, Any], dict[str, str]]:
    """Split *entry* into public settings and encrypted secret fields, the entry tag
    (:data:`ENTRY_TAG_FIELD`) among them."""
    settings, clear = entry_fields(entry)
    return settings, _seal_fields(entry.url, settings, clear, key)


def entry_fields(entry: ServiceEntry) -> tuple[dict[str, Any], dict[str, str]]:
    """*entry*'s public settings, and its secret fields in clear (field name -> value):
    exactly what :func:`seal` stores in the clear and encrypts, so a tool that compares
    entries (``securesession diff``) sees them as the registry does. The clear values
    are for comparison in memory only."""
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
    return settings, clear


def unseal(sealed: SealedEntry, key: TokenCipher, *, accept_legacy: bool = False) -> ServiceEntry:
    """Authenticate and decrypt a stored entry; any failure names the entry (and the
    field, when one is to blame), never a value. Nothing is built from the settings
    before the entry tag has authenticated them.

    A legacy (0.1.0) row raises :class:`LegacyEntryError` unless *accept_legacy*;
    then it is read, with a warning, its secrets authenticated but not its settings."""
    _check_format(sealed)
    clear, legacy = _open_fields(sealed, key, accept_legacy=accept_legacy)
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
            tls=_unseal_tls(settings.get("tls"), clear, authenticated=not legacy),
        )
    except TLSConfigError as exc:
        raise TLSConfigError(f"entry {sealed.key}: stored TLS profile: {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise RegistryCorruptError(f"entry {sealed.key}: invalid stored settings ({exc})") from None
    return entry.with_metadata(revision=sealed.revision, updated_at=sealed.updated_at)


def is_legacy(sealed: SealedEntry) -> bool:
    """Whether *sealed* is a legacy (0.1.0) row: one without the entry tag. Nothing is
    decrypted; :func:`unseal` and :func:`reseal` decide whether it may be opened."""
    return ENTRY_TAG_FIELD not in sealed.secrets


def reseal(
    sealed: SealedEntry,
    old_key: TokenCipher,
    new_key: TokenCipher,
    *,
    accept_legacy: bool = False,
) -> tuple[dict[str, str], bool]:
    """The secret fields of *sealed* re-encrypted under *new_key*, in the current
    (authenticated) format, over its settings exactly as stored; and whether the row
    was a legacy one (so was just upgraded: only with *accept_legacy*, else it raises
    :class:`LegacyEntryError`, as :func:`unseal` does).

    *old_key* may be a key ring: each token is opened with the key it names. The row
    is authenticated under it first: a tampered authenticated entry
    stops the rotation; it must not come out of it re-authenticated."""
    _check_format(sealed)
    clear, legacy = _open_fields(sealed, old_key, accept_legacy=accept_legacy)
    return _seal_fields(sealed.key, sealed.settings, clear, new_key), legacy


def changed_secret_fields(before: SealedEntry, after: SealedEntry, key: TokenCipher) -> set[str]:
    """The names of the secret fields whose *decrypted* value differs between two rows of
    one entry (a field only one of them has counts as changed); never a value. Tokens are
    randomised, so comparing the tokens would call every field changed.

    Each row is authenticated first (*key* may be a key ring): a row that does not open
    raises :class:`DecryptionError` or :class:`RegistryCorruptError`, as :func:`unseal`
    would. The clear values live only inside this function.

    Legacy rows are opened too (a put or an upgrade replacing one): only the names
    of fields come out of here, nothing is built from the row's settings."""
    old, _ = _open_fields(before, key, accept_legacy=True)
    new, _ = _open_fields(after, key, accept_legacy=True)
    return {name for name in old.keys() | new.keys() if old.get(name) != new.get(name)}


# -- fields and the entry tag ------------------------------------------------------------


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
    key: str, settings: dict[str, Any], clear: dict[str, str], master: TokenCipher
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


def _open_field(sealed: SealedEntry, name: str, key: TokenCipher, *, legacy: bool) -> str:
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


def _opens(token: str, key: TokenCipher, context: bytes) -> bool:
    try:
        key.decrypt(token, context)
    except DecryptionError:
        return False
    return True


def _verify_tag(sealed: SealedEntry, key: TokenCipher) -> None:
    """Raise unless the entry's tag authenticates its key, settings and field tokens."""
    tag = sealed.secrets[ENTRY_TAG_FIELD]
    try:
        plaintext = key.decrypt(tag, _tag_context(sealed.key, sealed.settings, sealed.secrets))
    except DecryptionError as exc:
        carried = token_key_id(tag)
        if carried is not None and not key.holds(carried):
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


def _open_fields(
    sealed: SealedEntry, key: TokenCipher, *, accept_legacy: bool
) -> tuple[dict[str, str], bool]:
    """Every secret field of *sealed* in clear, once the entry is authenticated (or read
    as a legacy entry, if *accept_legacy*); and whether it is a legacy entry."""
    legacy = is_legacy(sealed)
    if legacy:
        _check_legacy(sealed, key, accept_legacy=accept_legacy)
    else:
        _verify_tag(sealed, key)
    clear = {
        name: _open_field(sealed, name, key, legacy=legacy)
        for name in sealed.secrets
        if name != ENTRY_TAG_FIELD
    }
    return clear, legacy


def _check_legacy(sealed: SealedEntry, key: TokenCipher, *, accept_legacy: bool) -> None:
    """Raise unless the legacy row *sealed* may be opened (see the module docstring)."""
    if not sealed.secrets:
        raise LegacyEntryError(
            f"entry {sealed.key} has neither an entry authentication field "
            f"({ENTRY_TAG_FIELD!r}) nor any secret field: a legacy entry without secret "
            "fields authenticates nothing (anyone who can write the registry store can "
            "make one), so it is refused whatever legacy_entries says, and nothing is sent "
            "to its URL; remove it (securesession remove URL) and put it again if it is yours",
            url=sealed.key,
        )
    # A current-format row stripped of its tag says so (its first field token opens
    # under the current associated data), whether legacy rows are accepted or not.
    first = min(sealed.secrets)
    if _opens(sealed.secrets[first], key, _field_context(sealed.key, first)):
        _open_field(sealed, first, key, legacy=True)  # raises, naming the removed tag
    if not accept_legacy:
        raise LegacyEntryError(
            f"entry {sealed.key} is in the legacy format of securesession 0.1.0: its "
            "settings (injection modes, header names, TLS profile) and its set of secret "
            "fields are not authenticated, so it is refused and nothing is sent to its "
            "URL; if this registry really was written by 0.1.0, run `securesession "
            "upgrade` (or `securesession rotate-key`) to authenticate it, after checking "
            "it (`securesession show URL`); until then, open the registry with "
            "legacy_entries='accept' to read it",
            url=sealed.key,
        )


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
        "change them unnoticed; run `securesession upgrade` (or `securesession rotate-key`) to "
        "authenticate it, then open the registry without legacy_entries='accept'",
        sealed.key,
    )


# -- the TLS profile ------------------------------------------------------------------------


def _seal_tls(profile: TLSProfile, clear: dict[str, str]) -> dict[str, Any]:
    """Public TLS settings; the certificate bundle (its key inside) and its password
    go into *clear*, to be encrypted like every other secret field."""
    cert = profile.client_cert
    if cert is not None:
        clear["tls.client_cert"] = base64.b64encode(cert.data).decode("ascii")
        if cert.password is not None:
            clear["tls.client_cert.password"] = cert.password.reveal()
        # Subject, issuer, validity, fingerprint: loading the entry reads no certificate.
        clear[_CERT_FACTS_FIELD] = json.dumps(cert._stored_facts(), sort_keys=True)
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


def _unseal_tls(settings: Any, clear: dict[str, str], *, authenticated: bool) -> TLSProfile | None:
    """The stored profile. An authenticated entry's certificate facts, CA bundle and CRL
    are taken as stored (the tag vouches for them; they were checked when the entry was
    put), so nothing is parsed until a context is built; a legacy entry's are read again."""
    if settings is None:
        return None  # written before TLS profiles existed, or an entry without one
    if not isinstance(settings, dict):
        raise TypeError("tls settings are not an object")
    cert: ClientCertificate | None = None
    if settings["client_cert_format"] is not None:
        material = (
            settings["client_cert_format"],
            base64.b64decode(clear["tls.client_cert"], validate=True),
            clear.get("tls.client_cert.password"),
        )
        if authenticated:
            facts = clear.get(_CERT_FACTS_FIELD)
            stored = None if facts is None else json.loads(facts)
            cert = ClientCertificate._stored(*material, stored)
        else:
            cert = ClientCertificate(*material)
    ca_bundle, crl = settings["ca_bundle"], settings["crl"]
    fields: dict[str, Any] = {
        "client_cert": cert,
        "version": settings["version"],
        "min_version": settings["min_version"],
        "max_version": settings["max_version"],
        "ca_bundle": ca_bundle if ca_bundle in (None, "system") else ca_bundle.encode("ascii"),
        "pins": tuple(settings["pins"]),
        "crl": None if crl is None else crl.encode("ascii"),
        "crl_scope": settings["crl_scope"],
        "check_revocation": settings["check_revocation"],
        "allow_legacy": settings["allow_legacy"],
    }
    return TLSProfile._stored(**fields) if authenticated else TLSProfile(**fields)
