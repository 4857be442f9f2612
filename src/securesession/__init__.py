"""securesession: requests sessions with per-service credentials from an encrypted registry.

Quick start::

    from securesession import Credential, MasterKey, SecureSession, ServiceEntry, open_registry

    key = MasterKey.from_file("master.key")
    registry = open_registry("sqlite:///var/lib/app/registry.db", key)
    with SecureSession(registry) as session:
        session.get("https://gw.example.com:8443/payments/bills/42")
"""

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
from ._inject import Injected, InjectionPlan
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

__version__ = "0.1.0"

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
    "Injected",
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
