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
    ConfigurationError,
    DecryptionError,
    InvalidEntryError,
    InvalidURLError,
    MasterKeyError,
    NoCredentialsError,
    RegistryCorruptError,
    RegistryError,
    SchemaVersionError,
    SecureSessionError,
    TLSConfigError,
    TLSHandshakeError,
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
from ._secret import Credential, Secret
from ._session import CacheInfo, SecureSession
from ._urls import CanonicalURL, canonicalize

__version__ = "0.1.0"

__all__ = [
    "ENTRY_POINT_GROUP",
    "KEY_ENV_VAR",
    "AuthMode",
    "CacheInfo",
    "CanonicalURL",
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
    "NoCredentialsError",
    "Registry",
    "RegistryCorruptError",
    "RegistryError",
    "RegistryStore",
    "SchemaVersionError",
    "SealedEntry",
    "Secret",
    "SecureAdapter",
    "SecureSession",
    "SecureSessionError",
    "ServiceEntry",
    "TLSConfigError",
    "TLSHandshakeError",
    "__version__",
    "canonicalize",
    "open_registry",
]
