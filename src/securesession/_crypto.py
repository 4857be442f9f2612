"""The master key and the token format of every encrypted field.

A token is ``base64url(version || key_id || nonce || AES-256-GCM(ciphertext+tag))``:

======== ======= ==========================================================
field    bytes   meaning
======== ======= ==========================================================
version  1       token format, currently ``0x01``
key_id   8       first 8 bytes of HMAC-SHA256(key, "securesession key id")
nonce    12      random per token
body     n + 16  AES-256-GCM ciphertext and tag
======== ======= ==========================================================

The GCM associated data is the token header followed by the caller's context
(the registry binds each field to its entry key and field name), so a token
copied to another entry or field, or re-labelled with another key id, fails to
decrypt. Every failure is one :class:`DecryptionError`; only a key-id mismatch
is named, because "this is the wrong key" is the diagnosis operators need.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import stat
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from ._exceptions import DecryptionError, MasterKeyError
from ._files import write_private_file

if TYPE_CHECKING:  # one annotation; the connection module imports nothing of this one
    from ._vault_connection import VaultConnection

__all__ = ["KEY_ENV_VAR", "MasterKey", "token_key_id"]

#: The environment variable :meth:`MasterKey.from_env` reads by default.
KEY_ENV_VAR: Final = "SECURESESSION_MASTER_KEY"

_VERSION: Final = 1
_KEY_ID_LEN: Final = 8
_NONCE_LEN: Final = 12
_HEADER_LEN: Final = 1 + _KEY_ID_LEN
_MIN_TOKEN_LEN: Final = _HEADER_LEN + _NONCE_LEN + 16
_KEY_LEN: Final = 32
# OWASP's scrypt floor (N=2**17, r=8, p=1): ~128 MiB and a fraction of a second, once per process.
_SCRYPT_N: Final = 2**17
_SCRYPT_R: Final = 8
_SCRYPT_P: Final = 1
_MIN_SALT_LEN: Final = 16


class MasterKey:
    """A 256-bit AES key that encrypts every secret of a registry.

    Build one with :meth:`generate`, :meth:`from_file`, :meth:`from_env`,
    :meth:`from_passphrase`, :meth:`from_keyring` or :meth:`from_vault_transit`.
    Its ``repr`` shows only the key id, which identifies the key without revealing it.
    """

    __slots__ = ("_aead", "_key", "key_id")

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes) or len(key) != _KEY_LEN:
            raise MasterKeyError(f"a master key is exactly {_KEY_LEN} bytes")
        self._key = key
        self._aead = AESGCM(key)
        self.key_id: str = hmac.new(key, b"securesession key id", hashlib.sha256).hexdigest()[
            : 2 * _KEY_ID_LEN
        ]

    def __repr__(self) -> str:
        return f"MasterKey(key_id={self.key_id!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MasterKey):
            return NotImplemented
        return hmac.compare_digest(self._key, other._key)

    def __hash__(self) -> int:
        return hash(self.key_id)

    def __reduce__(self) -> str:
        raise TypeError("MasterKey cannot be pickled")

    # -- sources ---------------------------------------------------------------

    @classmethod
    def generate(cls) -> MasterKey:
        """A new random key from the operating system's CSPRNG."""
        return cls(os.urandom(_KEY_LEN))

    @classmethod
    def from_base64(cls, text: str) -> MasterKey:
        """Decode a key from its base64url text form (as written by :meth:`save`)."""
        raw = text.strip().encode("ascii", "replace")
        try:
            key = base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
        except (binascii.Error, ValueError):
            raise MasterKeyError("master key is not valid base64url") from None
        if len(key) != _KEY_LEN:
            raise MasterKeyError(
                f"master key decodes to {len(key)} bytes; a master key is {_KEY_LEN} bytes"
            )
        return cls(key)

    @classmethod
    def from_env(cls, name: str = KEY_ENV_VAR) -> MasterKey:
        """Read a base64url key from the environment variable *name*."""
        value = os.environ.get(name)
        if not value:
            raise MasterKeyError(f"environment variable {name} is not set")
        try:
            return cls.from_base64(value)
        except MasterKeyError as exc:
            raise MasterKeyError(f"environment variable {name}: {exc}") from None

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> MasterKey:
        """Read a key file written by :meth:`save`.

        Refuses a file that group or others may read or write: a key that anyone
        on the host can read protects nothing.
        """
        path = Path(path)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            raise MasterKeyError(f"key file {str(path)!r} does not exist") from None
        except OSError as exc:
            raise MasterKeyError(f"cannot open key file {str(path)!r}: {exc.strerror}") from None
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            raise MasterKeyError(f"key file {str(path)!r} is not a regular file")
        if sys.platform != "win32" and mode & (stat.S_IRWXG | stat.S_IRWXO):
            os.close(fd)
            raise MasterKeyError(
                f"key file {str(path)!r} is accessible by group or others "
                f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {path}"
            )
        with os.fdopen(fd, "rb") as handle:
            text = handle.read(4096).decode("ascii", "replace")
        try:
            return cls.from_base64(text)
        except MasterKeyError as exc:
            raise MasterKeyError(f"key file {str(path)!r}: {exc}") from None

    @classmethod
    def from_passphrase(
        cls, passphrase: str | bytes, salt: bytes, *, n: int = _SCRYPT_N, r: int = _SCRYPT_R
    ) -> MasterKey:
        """Derive a key from a passphrase with scrypt (N=2**17, r=8, p=1 by default).

        *salt* must be at least 16 random bytes, stored beside whatever the key
        protects; the same passphrase and salt always give the same key.
        """
        if len(salt) < _MIN_SALT_LEN:
            raise MasterKeyError(f"scrypt salt must be at least {_MIN_SALT_LEN} bytes")
        if not passphrase:
            raise MasterKeyError("passphrase is empty")
        secret = passphrase.encode() if isinstance(passphrase, str) else passphrase
        kdf = Scrypt(salt=salt, length=_KEY_LEN, n=n, r=r, p=_SCRYPT_P)
        return cls(kdf.derive(secret))

    @classmethod
    def from_keyring(cls, service: str, name: str) -> MasterKey:
        """Read a base64url key from the OS secret store (needs the ``keyring`` extra)."""
        keyring = _import_keyring()
        value = keyring.get_password(service, name)
        if value is None:
            raise MasterKeyError(f"no key named {name!r} for service {service!r} in the keyring")
        try:
            return cls.from_base64(value)
        except MasterKeyError as exc:
            raise MasterKeyError(f"keyring entry {service!r}/{name!r}: {exc}") from None

    @classmethod
    def from_vault_transit(
        cls,
        url: str | VaultConnection,
        key_name: str,
        wrapped_key: str | os.PathLike[str],
        *,
        mount: str = "transit",
        **connection_options: Any,
    ) -> MasterKey:
        """Unwrap a key with Vault/OpenBao Transit key *key_name* (needs the ``vault`` extra).

        *url* is a ``VaultConnection`` (address, TLS, namespace, timeout and
        credentials, shareable with the ``vault+https`` registry), or the engine's
        address (``https://vault:8200``) with the credentials from the environment
        (``VAULT_TOKEN``, ...). *wrapped_key* is Transit ciphertext (``vault:v1:...``)
        or a file holding it, as made by ``wrap_new_key``. Transit is asked once per
        process per wrapped text; the Transit key never leaves the engine. The same
        as ``TransitKey(url, key_name, wrapped_key).master_key()``; see
        ``securesession._vault`` for rotation and rewrapping. Connection settings
        passed here (``token=``, ``approle=``, ...) are deprecated: set them on the
        ``VaultConnection``.
        """
        from ._vault import unwrap_key  # lazy: one key source of several; hvac is an extra

        return unwrap_key(url, key_name, wrapped_key, mount=mount, **connection_options)

    # -- storage ---------------------------------------------------------------

    def to_base64(self) -> str:
        """The key as base64url text. The result is the key itself: handle as a secret."""
        return base64.urlsafe_b64encode(self._key).decode("ascii").rstrip("=")

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        """Write the key to *path* with mode 0600, atomically.

        Refuses to replace an existing file unless *overwrite* is true, because
        losing a master key loses every secret encrypted under it.
        """
        data = self.to_base64().encode("ascii") + b"\n"
        write_private_file(Path(path), data, overwrite=overwrite, what="key file")

    def to_keyring(self, service: str, name: str) -> None:
        """Store the key in the OS secret store (needs the ``keyring`` extra)."""
        _import_keyring().set_password(service, name, self.to_base64())

    # -- tokens ----------------------------------------------------------------

    def encrypt(self, plaintext: bytes, context: bytes) -> str:
        """Encrypt *plaintext*, bound to *context* (the associated data)."""
        header = bytes([_VERSION]) + bytes.fromhex(self.key_id)
        nonce = os.urandom(_NONCE_LEN)
        body = self._aead.encrypt(nonce, plaintext, header + context)
        return base64.urlsafe_b64encode(header + nonce + body).decode("ascii")

    def decrypt(self, token: str, context: bytes) -> bytes:
        """Decrypt a token made by :meth:`encrypt` with the same key and *context*."""
        raw = _token_bytes(token)
        if raw is None:
            raise DecryptionError("ciphertext is not a securesession token")
        if len(raw) < _MIN_TOKEN_LEN or raw[0] != _VERSION:
            raise DecryptionError("ciphertext is truncated or of an unknown token version")
        carried = raw[1:_HEADER_LEN].hex()
        if carried != self.key_id:
            raise DecryptionError(
                f"ciphertext was encrypted under key id {carried}, "
                f"but the master key has id {self.key_id}: wrong master key"
            )
        nonce = raw[_HEADER_LEN : _HEADER_LEN + _NONCE_LEN]
        try:
            return self._aead.decrypt(
                nonce, raw[_HEADER_LEN + _NONCE_LEN :], raw[:_HEADER_LEN] + context
            )
        except InvalidTag:
            raise DecryptionError(
                "ciphertext failed authentication: tampered, truncated, or moved "
                "from another entry or field"
            ) from None


def token_key_id(token: str) -> str | None:
    """The key id a token says it was encrypted under, or ``None`` if *token* is not a
    well-formed token of a known version. Nothing is decrypted, so nothing is proven:
    this tells which key to expect (a registry that lost its recorded key id), never
    that the token is authentic."""
    raw = _token_bytes(token)
    if raw is None or len(raw) < _MIN_TOKEN_LEN or raw[0] != _VERSION:
        return None
    return raw[1:_HEADER_LEN].hex()


def _token_bytes(token: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(token.encode("ascii"))
    except (binascii.Error, ValueError, UnicodeEncodeError, AttributeError):
        return None


def _import_keyring() -> ModuleType:
    try:
        import keyring
    except ImportError:
        raise MasterKeyError(
            "the OS keyring needs the 'keyring' extra: pip install 'securesession[keyring]'"
        ) from None
    return keyring
