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
import re
import stat
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

from cryptography.exceptions import InvalidTag

from ._exceptions import DecryptionError, MasterKeyError

if TYPE_CHECKING:  # one annotation; the connection module imports nothing of this one
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from ._vault_connection import VaultConnection
else:
    # The public module re-exports the class from cryptography's Rust binding, but its
    # package imports every other cipher and mode first: 12 M instructions, a tenth of
    # a one-call script's overhead. The class is the same object (tests/core/test_crypto.py
    # checks); a cryptography without it there falls back to the public import.
    try:
        from cryptography.hazmat.bindings._rust import openssl as _rust_openssl

        AESGCM = _rust_openssl.aead.AESGCM
    except (ImportError, AttributeError):  # pragma: no cover - older cryptography
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "KEY_ENV_VAR",
    "KEY_RING_FORMAT",
    "KeyRing",
    "KeyRole",
    "MasterKey",
    "TokenCipher",
    "token_key_id",
]

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
        """Read a base64url key from the environment variable *name* (a key ring's
        text there gives its active key; see :meth:`KeyRing.from_env`)."""
        return KeyRing.from_env(name).active

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> MasterKey:
        """Read a key file written by :meth:`save` (one bare key).

        Refuses a file that group or others may read or write: a key that anyone
        on the host can read protects nothing. A key ring file (:meth:`KeyRing.save`)
        gives its active key; read it with :meth:`KeyRing.from_file` to get the other
        keys too.
        """
        return KeyRing.from_file(path).active

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
        # Imported here: only passphrase keys need scrypt, not every process that decrypts.
        from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

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
        or a file holding it, as made by ``wrap_new_key``. The Transit key never
        leaves the engine.

        The result is cached for the process by engine, mount, key name and wrapped
        text, so Transit is asked once, and again only for a new wrapped text (a
        rewrap under a new key version). The cache does not re-check the caller's
        credentials. ``securesession.vault.unwrap_key`` is this same function, and
        ``TransitKey(url, key_name, wrapped_key).master_key()`` the same call as a key
        source; see ``securesession.vault`` for rotation and rewrapping. Connection
        settings passed here (``token=``, ``approle=``, ...) are deprecated: set them
        on the ``VaultConnection``.
        """
        from ._vault import _Transit  # lazy: one key source of several; hvac is an extra

        return _Transit.at(url, key_name, mount, connection_options).unwrap(wrapped_key)

    # -- storage ---------------------------------------------------------------

    def to_base64(self) -> str:
        """The key as base64url text. The result is the key itself: handle as a secret."""
        return base64.urlsafe_b64encode(self._key).decode("ascii").rstrip("=")

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        """Write the key to *path* with mode 0600, atomically.

        Refuses to replace an existing file unless *overwrite* is true, because
        losing a master key loses every secret encrypted under it.
        """
        from ._files import write_private_file  # writers only

        data = self.to_base64().encode("ascii") + b"\n"
        write_private_file(Path(path), data, overwrite=overwrite, what="key file")

    def to_keyring(self, service: str, name: str) -> None:
        """Store the key in the OS secret store (needs the ``keyring`` extra)."""
        _import_keyring().set_password(service, name, self.to_base64())

    # -- tokens ----------------------------------------------------------------

    def holds(self, key_id: str) -> bool:
        """Whether tokens under *key_id* are this key's to decrypt."""
        return key_id == self.key_id

    def derive(self, label: bytes) -> bytes:
        """A 256-bit subkey for another purpose, named by *label* (HMAC-SHA256 of the
        label under this key): the audit log's MAC key is one. Distinct labels give
        independent keys, and no subkey reveals this key."""
        return hmac.new(self._key, b"securesession derive\x00" + label, hashlib.sha256).digest()

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


class TokenCipher(Protocol):
    """What encrypts and decrypts tokens: a :class:`MasterKey`, or a :class:`KeyRing`
    (which encrypts with its active key and decrypts with the key a token names)."""

    @property
    def key_id(self) -> str:
        """The id of the key :meth:`encrypt` uses."""
        ...

    def holds(self, key_id: str) -> bool:
        """Whether tokens under *key_id* are this cipher's to decrypt."""
        ...

    def encrypt(self, plaintext: bytes, context: bytes) -> str: ...

    def decrypt(self, token: str, context: bytes) -> bytes: ...


#: A key ring's roles: ``active`` encrypts (and decrypts); ``staged`` is the next
#: active key, decrypt-only until ``rotate-key --commit``; ``previous`` keys are the
#: former active ones, decrypt-only until retired.
KeyRole = Literal["active", "staged", "previous"]
_ROLES: Final[tuple[KeyRole, ...]] = ("active", "staged", "previous")
#: The key ring text format written by :meth:`KeyRing.to_text` (its ``version`` line).
KEY_RING_FORMAT: Final = 1
_MAX_KEY_TEXT: Final = 64 * 1024
_KEY_ID_COMMENT: Final = re.compile(r"key id ([0-9a-f]{16})")
_RING_BANNER: Final = (
    "# securesession key ring: one key per line, '<role> <base64url key>'. Roles: active\n"
    "# (encrypts and decrypts), staged (decrypts; the next active key), previous\n"
    "# (decrypts only, until retired). Every key line is a secret: keep this file 0600.\n"
)


class KeyRing:
    """The keys a registry may be read with, and the one it is written with.

    One *active* key encrypts; every key of the ring decrypts the tokens that name
    it (a token carries its key's id). Besides the active key a ring holds at most
    one *staged* key (the next active key: hosts read with it before any entry is
    written under it) and any number of *previous* keys (former active keys, kept
    until retired). A ring quacks like a :class:`MasterKey` wherever tokens are made
    or opened (:class:`TokenCipher`): its ``key_id`` is the active key's.

    Rings are immutable: :meth:`stage`, :meth:`commit`, :meth:`retire` and
    :meth:`rotated_to` return new ones. The ``repr`` shows key ids only; a ring
    cannot be pickled, like its keys.
    """

    __slots__ = ("_active", "_by_id", "_previous", "_staged")

    def __init__(
        self,
        active: MasterKey,
        *,
        staged: MasterKey | None = None,
        previous: Iterable[MasterKey] = (),
    ) -> None:
        keys = [active, *([] if staged is None else [staged]), *previous]
        if not all(isinstance(key, MasterKey) for key in keys):
            raise TypeError("a key ring holds MasterKey objects")
        by_id: dict[str, MasterKey] = {}
        for key in keys:
            if key.key_id in by_id:
                raise MasterKeyError(f"key id {key.key_id} is in the key ring twice")
            by_id[key.key_id] = key
        self._active = active
        self._staged = staged
        self._previous = tuple(keys[2 if staged is not None else 1 :])
        self._by_id = by_id

    @classmethod
    def of(cls, key: MasterKey | KeyRing) -> KeyRing:
        """*key* itself if it is a ring, else the ring whose only key it is."""
        if isinstance(key, KeyRing):
            return key
        if isinstance(key, MasterKey):
            return cls(key)
        raise TypeError(f"expected a MasterKey or a KeyRing, not {type(key).__name__}")

    def __repr__(self) -> str:
        staged = "" if self._staged is None else f", staged={self._staged.key_id!r}"
        previous = "" if not self._previous else f", previous={self.previous_ids!r}"
        return f"KeyRing(active={self._active.key_id!r}{staged}{previous})"

    def __reduce__(self) -> str:
        raise TypeError("KeyRing cannot be pickled")

    # -- what it holds ---------------------------------------------------------

    @property
    def active(self) -> MasterKey:
        """The key that encrypts."""
        return self._active

    @property
    def staged(self) -> MasterKey | None:
        """The next active key (decrypt-only until committed), if one is staged."""
        return self._staged

    @property
    def previous(self) -> tuple[MasterKey, ...]:
        """Former active keys, decrypt-only until retired."""
        return self._previous

    @property
    def key_id(self) -> str:
        """The active key's id: the id of every token :meth:`encrypt` makes."""
        return self._active.key_id

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Every key's id: the active key's, the staged key's, then the previous ones."""
        return tuple(self._by_id)

    @property
    def previous_ids(self) -> tuple[str, ...]:
        return tuple(key.key_id for key in self._previous)

    def role(self, key_id: str) -> KeyRole | None:
        """The role of the key *key_id* in this ring, or ``None`` if it is not here."""
        if key_id == self._active.key_id:
            return "active"
        if self._staged is not None and key_id == self._staged.key_id:
            return "staged"
        return "previous" if key_id in self._by_id else None

    def get(self, key_id: str) -> MasterKey | None:
        """The key whose id is *key_id*, if the ring holds it."""
        return self._by_id.get(key_id)

    def holds(self, key_id: str) -> bool:
        return key_id in self._by_id

    def describe(self) -> str:
        """The ring's key ids and roles, for messages: ``1a2b... (active), 3c4d... (staged)``."""
        return ", ".join(f"{key_id} ({self.role(key_id)})" for key_id in self._by_id)

    # -- transitions -----------------------------------------------------------

    def stage(self, key: MasterKey) -> KeyRing:
        """This ring with *key* staged (decrypt-only) as the next active key."""
        if self._staged is not None:
            raise MasterKeyError(
                f"key id {self._staged.key_id} is staged already: commit it or retire it first"
            )
        return KeyRing(self._active, staged=key, previous=self._previous)

    def commit(self) -> KeyRing:
        """The staged key made active; the active key becomes a previous one."""
        if self._staged is None:
            raise MasterKeyError("the key ring has no staged key to commit")
        return KeyRing(self._staged, previous=(self._active, *self._previous))

    def for_writing(self, key_id: str) -> KeyRing | None:
        """The ring that encrypts under *key_id*: this one if it is the active key, the
        committed ring if it is the staged key; ``None`` for a previous key or an
        unknown one, which must never encrypt again (a registry that records one as
        its active key was restored from a backup, or tampered with)."""
        if key_id == self._active.key_id:
            return self
        if self._staged is not None and key_id == self._staged.key_id:
            return self.commit()
        return None

    def retire(self, key_id: str) -> KeyRing:
        """This ring without the staged or previous key *key_id*."""
        role = self.role(key_id)
        if role is None:
            raise MasterKeyError(f"the key ring has no key id {key_id}")
        if role == "active":
            raise MasterKeyError(f"key id {key_id} is the active key; it cannot be retired")
        staged = None if role == "staged" else self._staged
        previous = [key for key in self._previous if key.key_id != key_id]
        return KeyRing(self._active, staged=staged, previous=previous)

    def rotated_to(self, key: MasterKey) -> KeyRing:
        """The ring after every token was re-encrypted under *key*: *key* active, the
        former active key (and any other but the staged one) previous."""
        if key.key_id == self._active.key_id:
            return self
        if self._staged is not None and key.key_id == self._staged.key_id:
            return self.commit()
        others = [other for other in self._by_id.values() if other.key_id != key.key_id]
        staged = self._staged
        previous = [other for other in others if staged is None or other is not staged]
        return KeyRing(key, staged=staged, previous=previous)

    # -- tokens ----------------------------------------------------------------

    def encrypt(self, plaintext: bytes, context: bytes) -> str:
        """Encrypt with the active key (see :meth:`MasterKey.encrypt`)."""
        return self._active.encrypt(plaintext, context)

    def decrypt(self, token: str, context: bytes) -> bytes:
        """Decrypt with the key whose id *token* carries (see :meth:`MasterKey.decrypt`)."""
        carried = token_key_id(token)
        if carried is None or len(self._by_id) == 1:
            # Not a well-formed token (it raises), or a ring of one key: its own messages.
            return self._active.decrypt(token, context)
        key = self._by_id.get(carried)
        if key is None:
            raise DecryptionError(
                f"ciphertext was encrypted under key id {carried}, which is not in the key "
                f"ring ({self.describe()}): wrong master key"
            )
        return key.decrypt(token, context)

    # -- text, files, environment ---------------------------------------------------

    def to_text(self) -> str:
        """The ring in its text form (format :data:`KEY_RING_FORMAT`), as :meth:`save`
        writes it. The result holds every key: handle it as a secret."""
        lines = [_RING_BANNER + f"version {KEY_RING_FORMAT}"]
        for key_id, key in self._by_id.items():
            lines.append(f"{self.role(key_id):<8} {key.to_base64()}  # key id {key_id}")
        return "\n".join(lines) + "\n"

    @classmethod
    def from_text(cls, text: str, *, where: str = "key ring") -> KeyRing:
        """Parse a ring's text: lines ``<role> <base64url key>`` after an optional
        ``version 1`` line, or one bare base64url key (the one-key format, which
        :meth:`MasterKey.save` writes), as the active key. ``;`` also ends a line (so
        a ring fits one environment variable) and ``#`` starts a comment. Errors name
        *where* and the line, never any of its text."""
        return _parse_ring(text, where)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> KeyRing:
        """Read a key file: a ring written by :meth:`save`, or one bare key.

        Refuses a file that group or others may read or write: a key that anyone
        on the host can read protects nothing."""
        path = Path(path)
        return _parse_ring(_read_key_file(path), f"key file {str(path)!r}")

    @classmethod
    def from_env(cls, name: str = KEY_ENV_VAR) -> KeyRing:
        """Read a ring (or one bare base64url key) from the environment variable *name*."""
        value = os.environ.get(name)
        if not value:
            raise MasterKeyError(f"environment variable {name} is not set")
        return _parse_ring(value, f"environment variable {name}")

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        """Write the ring to *path* with mode 0600, atomically: the file holds the old
        text or the new, never a part (see :func:`~securesession._files.write_private_file`).
        Refuses to replace an existing file unless *overwrite* is true."""
        from ._files import write_private_file  # writers only

        data = self.to_text().encode("ascii")
        write_private_file(Path(path), data, overwrite=overwrite, what="key file")


def _read_key_file(path: Path) -> str:
    """The text of the key file *path*, once its type and mode are checked."""
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
        data = handle.read(_MAX_KEY_TEXT + 1)
    if len(data) > _MAX_KEY_TEXT:
        raise MasterKeyError(
            f"key file {str(path)!r} is over {_MAX_KEY_TEXT} bytes: not a key file"
        )
    return data.decode("ascii", "replace")


def _parse_ring(text: str, where: str) -> KeyRing:
    # (where in the text, its words, the key id its "# key id ..." comment names)
    lines: list[tuple[str, list[str], str | None]] = []
    for number, line in enumerate(text.replace("\r", "").split("\n"), 1):
        content, _, comment = line.partition("#")
        named = _KEY_ID_COMMENT.fullmatch(comment.strip())
        parts = content.split(";")
        for index, part in enumerate(parts, 1):
            if words := part.split():
                label = f"line {number}" if len(parts) == 1 else f"line {number}, part {index}"
                lines.append((label, words, named[1] if named and len(parts) == 1 else None))
    if not lines:
        raise MasterKeyError(f"{where} holds no key")
    if len(lines) == 1 and len(lines[0][1]) == 1:  # one bare key: the one-key format
        return KeyRing(_decode_key(lines[0][1][0], where, lines[0][2]))
    label, words, _ = lines[0]
    if words[0] == "version":
        if len(words) != 2 or not words[1].isdigit():
            raise MasterKeyError(f"{where}, {label}: expected 'version {KEY_RING_FORMAT}'")
        if int(words[1]) != KEY_RING_FORMAT:
            raise MasterKeyError(
                f"{where} is in key ring format {int(words[1])}; this securesession reads "
                f"format {KEY_RING_FORMAT}: upgrade securesession"
            )
        lines = lines[1:]
    found: dict[str, list[MasterKey]] = {role: [] for role in _ROLES}
    seen: dict[str, str] = {}
    for label, words, named_id in lines:
        # Never echo a word: a misplaced key would end up in a log.
        if len(words) != 2:
            raise MasterKeyError(f"{where}, {label}: expected '<role> <key>'")
        role, encoded = words
        if role not in _ROLES:
            raise MasterKeyError(
                f"{where}, {label}: unknown role (expected active, staged or previous)"
            )
        key = _decode_key(encoded, f"{where}, {label}", named_id)
        if key.key_id in seen:
            raise MasterKeyError(
                f"{where}, {label}: the same key as {seen[key.key_id]} (key id {key.key_id})"
            )
        seen[key.key_id] = label
        found[role].append(key)
    if len(found["active"]) != 1:
        raise MasterKeyError(f"{where} has {len(found['active'])} active keys; a ring has one")
    if len(found["staged"]) > 1:
        raise MasterKeyError(
            f"{where} has {len(found['staged'])} staged keys; a ring has one at most"
        )
    staged = found["staged"][0] if found["staged"] else None
    return KeyRing(found["active"][0], staged=staged, previous=found["previous"])


def _decode_key(encoded: str, where: str, named_id: str | None = None) -> MasterKey:
    try:
        key = MasterKey.from_base64(encoded)
    except MasterKeyError as exc:
        raise MasterKeyError(f"{where}: {exc}") from None
    # The comment is what an operator reads (and retires by): it must not lie.
    if named_id is not None and named_id != key.key_id:
        raise MasterKeyError(
            f"{where}: its comment names key id {named_id}, but the key's id is {key.key_id}"
        )
    return key


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
