"""The securesession error tree.

Every error the library raises derives from :class:`SecureSessionError`, so one
``except`` clause catches them all::

    SecureSessionError
    ├── ConfigurationError            a setting is wrong before anything runs
    │   ├── InvalidURLError           (also ValueError) URL cannot be canonicalised
    │   ├── InvalidEntryError         (also ValueError) a ServiceEntry is inconsistent
    │   ├── MasterKeyError            key missing, malformed, or its file too open
    │   └── TLSConfigError            a TLS profile the local OpenSSL cannot honour
    ├── DecryptionError               wrong key, tampered or swapped ciphertext
    ├── RegistryError                 the registry store failed or is unusable
    │   ├── RegistryCorruptError      the store holds data we cannot read
    │   └── SchemaVersionError        the store was written by a newer version
    ├── NoCredentialsError            strict session, URL has no entry
    └── TLSHandshakeError             (also requests.exceptions.SSLError is *not* a base;
                                       see :mod:`securesession._tls`)

Messages name what is wrong (the entry URL, the field, the file) and never carry a
secret value. Lower-level errors are chained with ``raise ... from exc``.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "DecryptionError",
    "InvalidEntryError",
    "InvalidURLError",
    "MasterKeyError",
    "NoCredentialsError",
    "RegistryCorruptError",
    "RegistryError",
    "SchemaVersionError",
    "SecureSessionError",
    "TLSConfigError",
    "TLSHandshakeError",
]


class SecureSessionError(Exception):
    """Base class of every error raised by securesession."""


class ConfigurationError(SecureSessionError):
    """Something the caller configured is wrong; nothing was sent."""


class InvalidURLError(ConfigurationError, ValueError):
    """A URL could not be canonicalised (bad scheme, host, port, or userinfo)."""


class InvalidEntryError(ConfigurationError, ValueError):
    """A :class:`~securesession.ServiceEntry` is inconsistent or incomplete."""


class MasterKeyError(ConfigurationError):
    """The master key is missing, malformed, or stored unsafely."""


class TLSConfigError(ConfigurationError):
    """A TLS profile cannot be turned into a working ``ssl.SSLContext``."""


class DecryptionError(SecureSessionError):
    """A ciphertext did not decrypt: wrong master key, tampered or swapped data."""


class RegistryError(SecureSessionError):
    """The registry store failed (I/O, locking, connection) or is unusable."""


class RegistryCorruptError(RegistryError):
    """The registry store holds data that is not a valid registry."""


class SchemaVersionError(RegistryError):
    """The registry was written by a newer securesession; it is left untouched."""


class NoCredentialsError(SecureSessionError):
    """A strict session was asked to send to a URL that has no registry entry."""


class TLSHandshakeError(SecureSessionError):
    """A TLS handshake with a service failed; the message says why in plain words."""
