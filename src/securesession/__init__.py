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
from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from ._adapter import SecureAdapter
    from ._cache import EntryCache
    from ._crypto import KEY_ENV_VAR, MasterKey
    from ._entry import AuthMode, ServiceEntry
    from ._exceptions import (
        ClientCertificateExpiredError,
        ClientCertificateRejectedError,
        ClientCertificateRequiredError,
        ConfigurationError,
        DecryptionError,
        InvalidEntryError,
        InvalidURLError,
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
    from ._inject import InjectionPlan
    from ._registry import (
        ENTRY_POINT_GROUP,
        EncryptedRegistry,
        EntryRef,
        Registry,
        RegistryStore,
        SealedEntry,
        open_registry,
    )
    from ._registry.memory import MemoryStore
    from ._registry.sqlite import SQLiteStore
    from ._registry.vault import open_vault_registry
    from ._secret import Credential, Secret
    from ._session import CacheInfo, SecureSession
    from ._tls import ClientCertificate, TLSProfile, TLSVersionName, spki_pin
    from ._urls import CanonicalURL, canonicalize
    from ._vault import (
        AppRole,
        VaultConnection,
        rewrap_key,
        transit_key_version,
        unwrap_key,
        wrap_new_key,
    )

# Each public name and the private module that defines it. Names are imported on
# first use (PEP 562): the pytest plugin makes every test run import this package,
# and a suite that never touches securesession should not pay for requests and
# cryptography.
_EXPORTS: dict[str, str] = {
    "SecureAdapter": "_adapter",
    "EntryCache": "_cache",
    "KEY_ENV_VAR": "_crypto",
    "MasterKey": "_crypto",
    "AuthMode": "_entry",
    "ServiceEntry": "_entry",
    "ClientCertificateExpiredError": "_exceptions",
    "ClientCertificateRejectedError": "_exceptions",
    "ClientCertificateRequiredError": "_exceptions",
    "ConfigurationError": "_exceptions",
    "DecryptionError": "_exceptions",
    "InvalidEntryError": "_exceptions",
    "InvalidURLError": "_exceptions",
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
    "InjectionPlan": "_inject",
    "ENTRY_POINT_GROUP": "_registry",
    "EncryptedRegistry": "_registry",
    "EntryRef": "_registry",
    "Registry": "_registry",
    "RegistryStore": "_registry",
    "SealedEntry": "_registry",
    "open_registry": "_registry",
    "MemoryStore": "_registry.memory",
    "SQLiteStore": "_registry.sqlite",
    "open_vault_registry": "_registry.vault",
    "Credential": "_secret",
    "Secret": "_secret",
    "CacheInfo": "_session",
    "SecureSession": "_session",
    "ClientCertificate": "_tls",
    "TLSProfile": "_tls",
    "TLSVersionName": "_tls",
    "spki_pin": "_tls",
    "CanonicalURL": "_urls",
    "canonicalize": "_urls",
    "AppRole": "_vault",
    "VaultConnection": "_vault",
    "rewrap_key": "_vault",
    "transit_key_version": "_vault",
    "unwrap_key": "_vault",
    "wrap_new_key": "_vault",
}

__all__ = [
    "ENTRY_POINT_GROUP",
    "KEY_ENV_VAR",
    "AppRole",
    "AuthMode",
    "CacheInfo",
    "CanonicalURL",
    "ClientCertificate",
    "ClientCertificateExpiredError",
    "ClientCertificateRejectedError",
    "ClientCertificateRequiredError",
    "ConfigurationError",
    "Credential",
    "DecryptionError",
    "EncryptedRegistry",
    "EntryCache",
    "EntryRef",
    "InjectionPlan",
    "InvalidEntryError",
    "InvalidURLError",
    "MasterKey",
    "MasterKeyError",
    "MemoryStore",
    "NoCredentialsError",
    "PinMismatchError",
    "ProtocolVersionMismatchError",
    "Registry",
    "RegistryCorruptError",
    "RegistryError",
    "RegistryStore",
    "SQLiteStore",
    "SchemaVersionError",
    "SealedEntry",
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
    "VaultConnection",
    "VaultError",
    "__version__",
    "canonicalize",
    "open_registry",
    "open_vault_registry",
    "rewrap_key",
    "spki_pin",
    "transit_key_version",
    "unwrap_key",
    "wrap_new_key",
]


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
