"""The securesession error tree.

Every error the library raises derives from :class:`SecureSessionError`, so one
``except`` clause catches them all::

    SecureSessionError
    ├── ConfigurationError            a setting is wrong before anything runs
    │   ├── InvalidURLError           (also ValueError) URL cannot be canonicalised
    │   ├── InvalidEntryError         (also ValueError) a ServiceEntry is inconsistent
    │   ├── MasterKeyError            key missing, malformed, or its file too open
    │   └── TLSConfigError            a TLS profile the local OpenSSL cannot honour
    │       └── ClientCertificateExpiredError  our client certificate is expired or
    │                                          not yet valid: refused, nothing sent
    ├── DecryptionError               wrong key, tampered or swapped ciphertext
    ├── RegistryError                 the registry store failed or is unusable
    │   ├── RegistryCorruptError      the store holds data we cannot read
    │   │   └── LegacyEntryError      an entry in the unauthenticated 0.1.0 format,
    │   │                             refused unless opted in (legacy_entries="accept")
    │   ├── SchemaVersionError        the store was written by a newer version
    │   ├── ConflictError             a batch expected revisions the store no longer has
    │   ├── AuditError                the audit log fails verification (edited, removed,
    │   │                             reordered or foreign records)
    │   └── VaultError                Vault/OpenBao sealed, unreachable or forbidding
    ├── NoCredentialsError            strict session, URL has no entry
    └── TLSHandshakeError             a TLS handshake failed (requests.exceptions.SSLError
        │                             is *not* a base; see :mod:`securesession._tls`)
        ├── ClientCertificateRequiredError  server demanded a client certificate, none set
        ├── ClientCertificateRejectedError  server refused ours: unknown CA, expired, revoked
        ├── ProtocolVersionMismatchError    no TLS version both sides accept
        ├── ServerCertificateError          server certificate untrusted, revoked, wrong host
        └── PinMismatchError                server key matches none of the entry's pins
                                            (raised before any request byte is sent)

Messages name what is wrong (the entry URL, the field, the file) and never carry a
secret value. Lower-level errors are chained with ``raise ... from exc``.
"""

from __future__ import annotations

__all__ = [
    "AuditError",
    "ClientCertificateExpiredError",
    "ClientCertificateRejectedError",
    "ClientCertificateRequiredError",
    "ConfigurationError",
    "ConflictError",
    "DecryptionError",
    "InvalidEntryError",
    "InvalidURLError",
    "LegacyEntryError",
    "MasterKeyError",
    "NoCredentialsError",
    "PinMismatchError",
    "ProtocolVersionMismatchError",
    "RegistryCorruptError",
    "RegistryError",
    "SchemaVersionError",
    "SecureSessionError",
    "ServerCertificateError",
    "TLSConfigError",
    "TLSHandshakeError",
    "VaultError",
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


class ClientCertificateExpiredError(TLSConfigError):
    """The entry's client certificate is expired (or not valid yet); nothing was sent."""


class DecryptionError(SecureSessionError):
    """A ciphertext did not decrypt: wrong master key, tampered or swapped data."""


class RegistryError(SecureSessionError):
    """The registry store failed (I/O, locking, connection) or is unusable."""


class RegistryCorruptError(RegistryError):
    """The registry store holds data that is not a valid registry."""


class LegacyEntryError(RegistryCorruptError):
    """A stored entry is in the legacy format of securesession 0.1.0: no entry tag, so
    its settings (injection modes, header names, TLS profile) and its set of secret
    fields are not authenticated, and a store writer without the key could have made
    or changed them. It is refused (nothing is sent to its URL, and no shorter prefix
    stands in for it) unless the registry was opened with ``legacy_entries="accept"``;
    an entry with neither a tag nor a secret field authenticates nothing and is refused
    always. ``securesession upgrade`` (or ``rotate-key``) authenticates legacy entries.

    :attr:`url` is the entry's prefix."""

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message)
        self.url = url


class SchemaVersionError(RegistryError):
    """The registry was written by a newer securesession; it is left untouched."""


class ConflictError(RegistryError):
    """A batch (:meth:`~securesession.Registry.apply`) expected an entry at a revision
    it no longer has: another writer changed it meanwhile, and nothing was written.

    :attr:`urls` names the entries that differ (never a value)."""

    def __init__(self, message: str, *, urls: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.urls = urls


class AuditError(RegistryError):
    """The registry's audit log failed verification: a record was edited, removed,
    reordered, replayed or copied from another registry, or an entry changed without
    its record. The message names the first record (by sequence number) at fault."""


class VaultError(RegistryError):
    """Vault or OpenBao failed or refused a request.

    :attr:`reason` says which, for code that branches on it: ``"sealed"``,
    ``"network"`` (unreachable or timed out), ``"forbidden"`` (a policy denies the
    path the message names), ``"token"`` (invalid, expired or revoked token, or no
    credentials), ``"conflict"`` (check-and-set kept losing) or ``"error"``.
    The message never carries a token or secret.
    """

    def __init__(self, message: str, *, reason: str = "error", path: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.path = path
        """The engine path involved (``kv/data/app/index``), if any: never a secret."""


class NoCredentialsError(SecureSessionError):
    """A strict session was asked to send to a URL that has no registry entry."""


class TLSHandshakeError(SecureSessionError):
    """A TLS handshake with a service failed; the message says why in plain words."""


class ClientCertificateRequiredError(TLSHandshakeError):
    """The server demanded a client certificate, and the entry has none configured."""


class ClientCertificateRejectedError(TLSHandshakeError):
    """The server refused the client certificate we presented.

    :attr:`reason` is ``"unknown_ca"``, ``"revoked"``, ``"expired"`` or ``"refused"``.
    """

    reason: str = "refused"


class ProtocolVersionMismatchError(TLSHandshakeError):
    """Client and server have no TLS protocol version in common.

    :attr:`ours` is the range the entry allows; :attr:`theirs` what the server
    accepted when probed (empty if it could not be probed).
    """

    ours: tuple[str, ...] = ()
    theirs: tuple[str, ...] = ()


class ServerCertificateError(TLSHandshakeError):
    """The server's certificate is not trusted, is revoked, or names another host.

    :attr:`verify_code` is OpenSSL's X.509 verification code (0 if unknown).
    """

    verify_code: int = 0


class PinMismatchError(TLSHandshakeError):
    """The server's public key matches none of the entry's pins; nothing was sent.

    :attr:`expected` are the entry's pins, :attr:`actual` the server's
    (``sha256/<base64>`` form; public values, safe to log).
    """

    expected: tuple[str, ...] = ()
    actual: tuple[str, ...] = ()
