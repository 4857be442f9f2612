"""For backend authors: the storage protocol, the shared encryption, the contract suite.

A backend stores *sealed* entries and never sees a clear secret or a key::

    from securesession.registry import EncryptedRegistry, RegistryStore, SealedEntry

    class MineStore:                      # implements RegistryStore
        ...

    def open_mine(url: str, key: MasterKey) -> EncryptedRegistry:
        return EncryptedRegistry(MineStore(url), key, name=url)

registered under ``ENTRY_POINT_GROUP`` (``securesession.registries``) so that
``open_registry("mine://...", key)`` finds it, and proved with the contract suite::

    from securesession.registry import RegistryContract

    class TestMine(RegistryContract):
        @pytest.fixture
        def open_registry(self, tmp_path):
            return lambda key: open_mine(f"mine://{tmp_path}", key)

* :class:`RegistryStore`: what the store implements; :class:`SealedEntry` and
  :class:`EntryRef` are what it returns; a write under a key the store has since been
  rotated away from raises :func:`rekeyed_error`; :class:`Rekey` is what a key
  rotation hands :meth:`RegistryStore.rewrite_all`.
* :meth:`RegistryStore.apply`'s records: the :class:`Batch` it is given (its
  :class:`SealedWrite` writes, its :data:`StateText` state, its :class:`Journal`), the
  :class:`Applied` it returns, the :class:`Change` and :class:`AuditRow` a journal
  sees; :func:`check_expected` raises the :class:`~securesession.ConflictError` of a
  batch's ``expect``; :class:`BatchesOfOne` gives a store ``write`` and ``delete`` as
  batches of one through its ``apply``. :data:`AuditStart` and :data:`Restate` are the
  callbacks :meth:`RegistryStore.start_audit` and a :class:`Rekey` carry.
* :data:`ENTRY_REVISIONS`: the member by which a state (``Registry.apply(state=...)``)
  declares the entry revisions it records, so that a key rotation, which gives every
  entry a new revision, remaps them in its transaction (a sync's state does).
* :class:`EncryptedRegistry`: the :class:`Registry` over any store, sealing and
  opening entries (one implementation of the cryptography for every backend).
* :data:`LegacyEntries`: the type of ``legacy_entries=`` (``"refuse"`` or ``"accept"``),
  what :class:`EncryptedRegistry` and :func:`~securesession.open_registry` do with
  entries written by securesession 0.1.0.
* :class:`Registry`: the interface sessions and tools use, for a backend that is not
  an :class:`EncryptedRegistry` at all.
* :class:`RegistryContract` (also importable from :mod:`securesession.testing.contract`,
  imported on first use: it needs pytest) and :data:`OpenRegistry`, the type of its
  ``open_registry`` fixture.

See docs/concepts.md, "Writing a backend".
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._registry import ENTRY_POINT_GROUP
from ._registry._base import (
    ENTRY_REVISIONS,
    Applied,
    AuditRow,
    AuditStart,
    Batch,
    BatchesOfOne,
    Change,
    EncryptedRegistry,
    EntryRef,
    Journal,
    LegacyEntries,
    Registry,
    RegistryStore,
    Rekey,
    Restate,
    SealedEntry,
    SealedWrite,
    StateText,
    check_expected,
    rekeyed_error,
)

if TYPE_CHECKING:
    from .testing.contract import OpenRegistry, RegistryContract

__all__ = [
    "ENTRY_POINT_GROUP",
    "ENTRY_REVISIONS",
    "Applied",
    "AuditRow",
    "AuditStart",
    "Batch",
    "BatchesOfOne",
    "Change",
    "EncryptedRegistry",
    "EntryRef",
    "Journal",
    "LegacyEntries",
    "OpenRegistry",
    "Registry",
    "RegistryContract",
    "RegistryStore",
    "Rekey",
    "Restate",
    "SealedEntry",
    "SealedWrite",
    "StateText",
    "check_expected",
    "rekeyed_error",
]

# Test-suite names, imported on first use: production code that implements a store
# must not need pytest.
_CONTRACT = frozenset({"OpenRegistry", "RegistryContract"})


def __getattr__(name: str) -> Any:
    if name not in _CONTRACT:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(".testing.contract", __package__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
