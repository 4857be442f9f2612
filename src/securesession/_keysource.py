"""Where a master key comes from: the :class:`KeySource` protocol.

A key source says where a key lives and fetches it when asked, so it can be handed
around (configuration, dependency injection) before any key is read. Anything with
a ``master_key()`` method returning a :class:`~securesession.MasterKey` is one:
Vault/OpenBao Transit (:class:`securesession._vault.TransitKey`) is the built-in
provider; a cloud KMS or a secrets manager of your own is another. The
``MasterKey.from_*`` classmethods read a key at once instead.

A key file or environment variable may hold a key ring (an active key and the staged
or previous keys of a rotation): ``KeyRing.from_file`` and ``KeyRing.from_env`` read
all of it, and ``open_registry`` takes the ring. A source gives one key; during a
staged rotation, build the ring from its keys: ``KeyRing(active, staged=...)``.
Nothing re-reads a source by itself when a token names a key the ring lacks: see
docs/security.md, "Key rings and key ids".

The Transit provider depends on this module and :mod:`securesession._crypto`, never
the other way round at import time: only the thin entry point
``MasterKey.from_vault_transit`` loads the Vault code, when it is called.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ._crypto import MasterKey

__all__ = ["KeySource"]


@runtime_checkable
class KeySource(Protocol):
    """A source of the registry's master key."""

    def master_key(self) -> MasterKey:
        """The key: fetched, unwrapped or derived as the source needs (and may cache)."""
        ...
