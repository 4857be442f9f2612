"""Envelope encryption with Vault/OpenBao Transit: the master key wrapped by a Transit key.

The registry's 32-byte data key (a :class:`MasterKey`) is kept only as Transit
ciphertext (``vault:v<N>:...``, "the wrapped key"), in a file or a setting.
:class:`TransitKey` is the key source (:class:`~securesession._keysource.KeySource`)
for it: :func:`unwrap_key` (``MasterKey.from_vault_transit``) asks Transit to
decrypt it once per process and caches the result by the wrapped text, so the
engine is asked again only when that text changes, which is what :func:`rewrap_key`
does after the Transit key is rotated. The Transit key itself never leaves the engine.

Every function takes the engine as a :class:`VaultConnection` (address, TLS,
namespace, timeout, credentials), or as its address alone, with the credentials from
the environment. The connection lives in :mod:`securesession._vault_connection` and
is re-exported here, its old place.

Concurrent unwraps of one wrapped text ask Transit once (the others wait for that
answer); no lock is held while Transit answers, so different texts unwrap in parallel.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, NamedTuple

from ._cache import EntryCache
from ._crypto import MasterKey
from ._exceptions import MasterKeyError
from ._files import write_private_file
from ._vault_connection import AppRole, VaultConnection, check_loose_options, engine_url

__all__ = [
    "AppRole",
    "TransitKey",
    "VaultConnection",
    "clear_key_cache",
    "rewrap_key",
    "transit_key_version",
    "unwrap_key",
    "wrap_new_key",
]

logger = logging.getLogger("securesession")

_WRAPPED: Final = re.compile(r"vault:v(\d+):[A-Za-z0-9+/=]+")
_KEY_LEN: Final = 32
# Unwrapped keys by engine, mount, Transit key name and wrapped text, with the session
# cache's single flight: concurrent misses on one slot ask Transit once, the others
# wait for that answer (or, if it failed, ask themselves), and no lock is held while
# Transit answers. Never expires: a slot's key cannot change, so every slot stays at
# revision 0. The size is far more wrapped texts than one process ever unwraps.
_unwrapped: EntryCache[MasterKey] = EntryCache(ttl=math.inf, maxsize=1024)


def clear_key_cache() -> None:
    """Forget every unwrapped key, so the next :func:`unwrap_key` asks Transit again."""
    _unwrapped.clear()


def transit_key_version(wrapped: str) -> int:
    """The Transit key version a wrapped key was encrypted under (``vault:v3:...`` is 3)."""
    match = _WRAPPED.fullmatch(wrapped.strip())
    if match is None:
        raise MasterKeyError("a wrapped key is Transit ciphertext of the form vault:v<N>:<base64>")
    return int(match[1])


def _read_wrapped(wrapped_key: str | os.PathLike[str]) -> tuple[str, Path | None]:
    """The wrapped key text, and the file it came from (``None`` for a value)."""
    if isinstance(wrapped_key, str) and wrapped_key.strip().startswith("vault:v"):
        text, path = wrapped_key.strip(), None
    else:
        path = Path(wrapped_key)
        try:
            text = path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            raise MasterKeyError(
                f"wrapped key file {str(path)!r} does not exist (a wrapped key value "
                "starts with 'vault:v')"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not ASCII text"
            raise MasterKeyError(f"cannot read wrapped key file {str(path)!r}: {reason}") from None
    try:
        transit_key_version(text)
    except MasterKeyError as exc:
        where = "wrapped key" if path is None else f"wrapped key file {str(path)!r}"
        raise MasterKeyError(f"{where}: {exc}") from None
    return text, path


def _write_wrapped(path: Path, text: str, *, overwrite: bool) -> None:
    """Write *text* to *path* atomically (mode 0600: not a secret, but nobody else's business)."""
    write_private_file(
        path, text.encode("ascii") + b"\n", overwrite=overwrite, what="wrapped key file"
    )


class _Transit(NamedTuple):
    """Transit key *key_name* at *mount* of the engine *url* names: what every operation
    below shares, the one way they open the connection and ask Transit.

    *url* is a :class:`VaultConnection`, or the engine's address: then a connection, with
    the credentials from the environment or *options* (the deprecated loose settings),
    is made for each request and closed after it.
    """

    url: str | VaultConnection
    key_name: str
    mount: str
    options: Mapping[str, Any]

    @classmethod
    def at(
        cls,
        url: str | VaultConnection,
        key_name: str,
        mount: str,
        options: Mapping[str, Any] = MappingProxyType({}),
    ) -> _Transit:
        """The key, once the loose *options* are checked (warned about beside an
        address, refused beside a connection)."""
        check_loose_options(url, options)
        return cls(url, key_name, mount.strip("/"), options)

    def __repr__(self) -> str:
        # The loose options may hold a token: their names only (a traceback that shows
        # locals shows this record as every method's self).
        loose = f", options={sorted(self.options)}" if self.options else ""
        return f"_Transit({self.engine!r}, {self.key_name!r}, mount={self.mount!r}{loose})"

    def __reduce__(self) -> str:
        raise TypeError("_Transit cannot be pickled (its options may hold credentials)")

    @property
    def engine(self) -> str:
        """The engine's address, ``scheme://host:port``."""
        return self.url.url if isinstance(self.url, VaultConnection) else engine_url(self.url)

    def slot(self, text: str) -> str:
        """The cache slot of the key that wrapped text *text* unwraps to."""
        return "\0".join((self.engine, self.mount, self.key_name, text))

    def call(self, operation: str, data: dict[str, str], *, action: str) -> Any:
        """Run one Transit *operation* (encrypt, decrypt, rewrap) with this key on *data*;
        its response's ``data``."""
        url, mount, key_name = self.url, self.mount, self.key_name
        connection = (
            url if isinstance(url, VaultConnection) else VaultConnection(url, **self.options)
        )
        try:
            response = connection.call(
                lambda client: getattr(client.secrets.transit, f"{operation}_data")(
                    name=key_name, mount_point=mount, **data
                ),
                action=f"{action} with Transit key {key_name!r}",
                path=f"{mount}/{operation}/{key_name}",
                capability="update",
            )
        finally:
            if connection is not url:
                connection.close()
        return response["data"]

    def unwrap(self, wrapped_key: str | os.PathLike[str]) -> MasterKey:
        """:func:`unwrap_key`: the cached key of the wrapped text, else Transit's."""
        text, _ = _read_wrapped(wrapped_key)

        def unwrap() -> MasterKey:
            data = self.call("decrypt", {"ciphertext": text}, action="unwrap the master key")
            try:
                raw = base64.b64decode(data["plaintext"], validate=True)
            except (KeyError, TypeError, binascii.Error):
                raise MasterKeyError(
                    f"Transit key {self.key_name!r} returned no usable plaintext for the "
                    "wrapped key"
                ) from None
            if len(raw) != _KEY_LEN:
                raise MasterKeyError(
                    f"the wrapped key decrypts to {len(raw)} bytes, not a {_KEY_LEN}-byte "
                    "master key: was it made by wrap_new_key?"
                )
            key = MasterKey(raw)
            logger.info(
                "unwrapped master key id %s with Transit key %r version %d at %s",
                key.key_id,
                self.key_name,
                transit_key_version(text),
                self.engine,
            )
            return key

        return _unwrapped.get_or_load(self.slot(text), 0, unwrap)

    def wrap_new(
        self, path: str | os.PathLike[str] | None, *, overwrite: bool
    ) -> tuple[str, MasterKey]:
        """:func:`wrap_new_key`: a new key, wrapped (and written to *path*, if given)."""
        key = MasterKey.generate()
        raw = base64.urlsafe_b64decode(key.to_base64() + "=")
        plaintext = base64.b64encode(raw).decode("ascii")
        data = self.call("encrypt", {"plaintext": plaintext}, action="wrap a new master key")
        text = str(data["ciphertext"])
        transit_key_version(text)
        if path is not None:
            _write_wrapped(Path(path), text, overwrite=overwrite)
        _unwrapped.get_or_load(self.slot(text), 0, lambda: key)
        logger.info("wrapped new master key id %s with Transit key %r", key.key_id, self.key_name)
        return text, key

    def rewrap(self, wrapped_key: str | os.PathLike[str]) -> str:
        """:func:`rewrap_key`: the wrapped text under the newest key version (the file
        replaced, if it came from one)."""
        text, file = _read_wrapped(wrapped_key)
        data = self.call("rewrap", {"ciphertext": text}, action="rewrap the master key")
        new_text = str(data["ciphertext"])
        old_version, new_version = transit_key_version(text), transit_key_version(new_text)
        if file is not None and new_text != text:
            _write_wrapped(file, new_text, overwrite=True)
        logger.info(
            "rewrapped master key from Transit key %r version %d to %d",
            self.key_name,
            old_version,
            new_version,
        )
        return new_text


unwrap_key: Final = MasterKey.from_vault_transit
"""The data key that Transit key *key_name* wrapped: the same function as
:meth:`MasterKey.from_vault_transit` (one definition, two names), whose docstring
has the parameters and the process-wide cache."""


@dataclass(frozen=True)
class TransitKey:
    """The master key that Transit key *key_name* wrapped, as a key source.

    *url* is a :class:`VaultConnection` or the engine's address (credentials from
    the environment); *wrapped_key* the Transit ciphertext (``vault:v1:...``) or a
    file holding it, read on each :meth:`master_key`, so a rewrapped file is picked
    up. Nothing is read or sent until then.
    """

    url: str | VaultConnection
    key_name: str
    wrapped_key: str | os.PathLike[str]
    _: KW_ONLY
    mount: str = "transit"

    def master_key(self) -> MasterKey:
        """The unwrapped key; Transit is asked once per process and wrapped text."""
        return _Transit.at(self.url, self.key_name, self.mount).unwrap(self.wrapped_key)


def wrap_new_key(
    url: str | VaultConnection,
    key_name: str,
    *,
    path: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    mount: str = "transit",
    **connection_options: Any,
) -> tuple[str, MasterKey]:
    """Generate a new master key and wrap it with Transit key *key_name*.

    Returns the wrapped text (safe to store anywhere: only Transit can unwrap it)
    and the key. With *path*, the wrapped text is also written there (atomically;
    an existing file is kept unless *overwrite*). Needs ``update`` on
    ``<mount>/encrypt/<key_name>``; the key must exist in Transit. *url* and the
    deprecated *connection_options* are as for :func:`unwrap_key`.
    """
    transit = _Transit.at(url, key_name, mount, connection_options)
    return transit.wrap_new(path, overwrite=overwrite)


def rewrap_key(
    url: str | VaultConnection,
    key_name: str,
    wrapped_key: str | os.PathLike[str],
    *,
    mount: str = "transit",
    **connection_options: Any,
) -> str:
    """Re-encrypt a wrapped key under the newest version of Transit key *key_name*.

    The master key itself does not change, so no registry entry is re-encrypted;
    the engine never returns the plaintext. If *wrapped_key* is a file it is
    replaced atomically. Returns the new wrapped text. Needs ``update`` on
    ``<mount>/rewrap/<key_name>``. Run it after ``bao write -f
    transit/keys/<key_name>/rotate``; once every wrapped key is rewrapped, old
    versions can be retired with ``min_decryption_version``. *url* and the
    deprecated *connection_options* are as for :func:`unwrap_key`.
    """
    return _Transit.at(url, key_name, mount, connection_options).rewrap(wrapped_key)
