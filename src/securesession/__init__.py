"""securesession: requests sessions with per-service credentials from an encrypted registry.

Quick start::

    from securesession import Credential, MasterKey, SecureSession, ServiceEntry, open_registry

    key = MasterKey.from_file("master.key")
    registry = open_registry("sqlite:///var/lib/app/registry.db", key)
    with SecureSession(registry) as session:
        session.get("https://gw.example.com:8443/payments/bills/42")
"""

from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Names imported "as" themselves are the deprecated ones of _MOVED: typed, so code
# that uses them still type-checks while it moves to their new homes.
if TYPE_CHECKING:
    from ._adapter import SecureAdapter
    from ._cache import EntryCache as EntryCache
    from ._crypto import KEY_ENV_VAR, KeyRing, MasterKey
    from ._entry import AuthMode, ServiceEntry
    from ._exceptions import (
        AuditError,
        ClientCertificateExpiredError,
        ClientCertificateRejectedError,
        ClientCertificateRequiredError,
        ConfigurationError,
        ConflictError,
        DecryptionError,
        InvalidEntryError,
        InvalidURLError,
        LegacyEntryError,
        MasterKeyError,
        NoCredentialsError,
        PinMismatchError,
        ProtocolVersionMismatchError,
        RegistryCorruptError,
        RegistryError,
        SchemaVersionError,
        SecureSessionError,
        ServerCertificateError,
        TLSConfigError,
        TLSHandshakeError,
        VaultError,
    )
    from ._guard import CacheInfo, EntrySource, GuardOptions
    from ._inject import InjectionPlan as InjectionPlan
    from ._inject import injected_by
    from ._keysource import KeySource
    from ._registry import ENTRY_POINT_GROUP as ENTRY_POINT_GROUP
    from ._registry import EncryptedRegistry as EncryptedRegistry
    from ._registry import EntryRef, Registry, open_registry
    from ._registry import RegistryStore as RegistryStore
    from ._registry import SealedEntry as SealedEntry
    from ._registry.memory import MemoryStore as MemoryStore
    from ._registry.sqlite import SQLiteStore as SQLiteStore
    from ._registry.vault import open_vault_registry as open_vault_registry
    from ._secret import Credential, Secret
    from ._session import SecureSession
    from ._tls import ClientCertificate, TLSProfile, TLSVersionName, spki_pin
    from ._urls import CanonicalURL as CanonicalURL
    from ._urls import canonicalize as canonicalize
    from ._urls import redacted_url
    from ._vault import AppRole as AppRole
    from ._vault import VaultConnection as VaultConnection
    from ._vault import rewrap_key as rewrap_key
    from ._vault import transit_key_version as transit_key_version
    from ._vault import unwrap_key as unwrap_key
    from ._vault import wrap_new_key as wrap_new_key

# The application tier: each public name and the private module that defines it.
# Names are imported on first use (PEP 562): the pytest plugin makes every test run
# import this package, and a suite that never touches securesession should not pay
# for requests and cryptography. Backend authors' names live in
# ``securesession.registry``; each backend's own names in its module
# (``securesession.sqlite``, ``.postgres``, ``.vault``, ``.memory``).
_EXPORTS: dict[str, str] = {
    "SecureAdapter": "_adapter",
    "KEY_ENV_VAR": "_crypto",
    "KeyRing": "_crypto",
    "MasterKey": "_crypto",
    "AuthMode": "_entry",
    "ServiceEntry": "_entry",
    "AuditError": "_exceptions",
    "ClientCertificateExpiredError": "_exceptions",
    "ClientCertificateRejectedError": "_exceptions",
    "ClientCertificateRequiredError": "_exceptions",
    "ConfigurationError": "_exceptions",
    "ConflictError": "_exceptions",
    "DecryptionError": "_exceptions",
    "InvalidEntryError": "_exceptions",
    "InvalidURLError": "_exceptions",
    "LegacyEntryError": "_exceptions",
    "MasterKeyError": "_exceptions",
    "NoCredentialsError": "_exceptions",
    "PinMismatchError": "_exceptions",
    "ProtocolVersionMismatchError": "_exceptions",
    "RegistryCorruptError": "_exceptions",
    "RegistryError": "_exceptions",
    "SchemaVersionError": "_exceptions",
    "SecureSessionError": "_exceptions",
    "ServerCertificateError": "_exceptions",
    "TLSConfigError": "_exceptions",
    "TLSHandshakeError": "_exceptions",
    "VaultError": "_exceptions",
    "CacheInfo": "_guard",
    "EntrySource": "_guard",
    "GuardOptions": "_guard",
    "injected_by": "_inject",
    "KeySource": "_keysource",
    "EntryRef": "_registry",
    "Registry": "_registry",
    "open_registry": "_registry",
    "Credential": "_secret",
    "Secret": "_secret",
    "SecureSession": "_session",
    "ClientCertificate": "_tls",
    "TLSProfile": "_tls",
    "TLSVersionName": "_tls",
    "spki_pin": "_tls",
    "redacted_url": "_urls",
}

# Names 0.1.0 exported from here, and where they live now: they still resolve, with a
# DeprecationWarning, until 0.3. (module that defines it, where to import it from)
_MOVED: dict[str, tuple[str, str]] = {
    "ENTRY_POINT_GROUP": ("_registry", "securesession.registry"),
    "EncryptedRegistry": ("_registry", "securesession.registry"),
    "RegistryStore": ("_registry", "securesession.registry"),
    "SealedEntry": ("_registry", "securesession.registry"),
    "MemoryStore": ("_registry.memory", "securesession.memory"),
    "SQLiteStore": ("_registry.sqlite", "securesession.sqlite"),
    "open_vault_registry": ("_registry.vault", "securesession.vault"),
    "AppRole": ("_vault", "securesession.vault"),
    "VaultConnection": ("_vault", "securesession.vault"),
    "rewrap_key": ("_vault", "securesession.vault"),
    "transit_key_version": ("_vault", "securesession.vault"),
    "unwrap_key": ("_vault", "securesession.vault"),
    "wrap_new_key": ("_vault", "securesession.vault"),
    "CanonicalURL": ("_urls", ""),
    "canonicalize": ("_urls", ""),
    "EntryCache": ("_cache", ""),
    "InjectionPlan": ("_inject", ""),
}

__all__ = [
    "KEY_ENV_VAR",
    "AuditError",
    "AuthMode",
    "CacheInfo",
    "ClientCertificate",
    "ClientCertificateExpiredError",
    "ClientCertificateRejectedError",
    "ClientCertificateRequiredError",
    "ConfigurationError",
    "ConflictError",
    "Credential",
    "DecryptionError",
    "EntryRef",
    "EntrySource",
    "GuardOptions",
    "InvalidEntryError",
    "InvalidURLError",
    "KeyRing",
    "KeySource",
    "LegacyEntryError",
    "MasterKey",
    "MasterKeyError",
    "NoCredentialsError",
    "PinMismatchError",
    "ProtocolVersionMismatchError",
    "Registry",
    "RegistryCorruptError",
    "RegistryError",
    "SchemaVersionError",
    "Secret",
    "SecureAdapter",
    "SecureSession",
    "SecureSessionError",
    "ServerCertificateError",
    "ServiceEntry",
    "TLSConfigError",
    "TLSHandshakeError",
    "TLSProfile",
    "TLSVersionName",
    "VaultError",
    "__version__",
    "injected_by",
    "open_registry",
    "redacted_url",
    "spki_pin",
]


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        moved = _MOVED.get(name)
        if moved is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        module, new_home = moved
        where = f"import it from {new_home}" if new_home else "it is internal"
        warnings.warn(
            f"securesession.{name} is deprecated here and goes in 0.3: {where}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(f".{module}", __name__), name)
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
