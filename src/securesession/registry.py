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
  an :class:`EncryptedRegistry` at all; :class:`ApplyOptions`, the keywords of its
  ``apply``.
* What such a registry may offer besides, one capability each, as
  :class:`EncryptedRegistry` does: :class:`StagedKeyBookkeeping`, for the staged steps
  of ``securesession rotate-key``, and :class:`LegacyEntryUpgrade`, for
  ``securesession upgrade``. The command line checks the capability
  (``isinstance(registry, StagedKeyBookkeeping)``), never the class.
* :class:`RegistryContract` (also importable from :mod:`securesession.testing.contract`,
  imported on first use: it needs pytest) and :data:`OpenRegistry`, the type of its
  ``open_registry`` fixture.

See docs/concepts.md, "Writing a backend".
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypedDict

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
    LegacyEntryUpgrade,
    Registry,
    RegistryStore,
    Rekey,
    Restate,
    SealedEntry,
    SealedWrite,
    StagedKeyBookkeeping,
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
    "ApplyOptions",
    "AuditRow",
    "AuditStart",
    "Batch",
    "BatchesOfOne",
    "Change",
    "EncryptedRegistry",
    "EntryRef",
    "Journal",
    "LegacyEntries",
    "LegacyEntryUpgrade",
    "OpenRegistry",
    "Registry",
    "RegistryContract",
    "RegistryStore",
    "Rekey",
    "Restate",
    "SealedEntry",
    "SealedWrite",
    "StagedKeyBookkeeping",
    "StateText",
    "check_expected",
    "rekeyed_error",
]


# Defined here, not beside Registry in _registry._base: a TypedDict costs about what a
# NamedTuple does to define, and a process that only opens a registry and looks
# entries up never imports this module (docs/performance.md).
class ApplyOptions(TypedDict, total=False):
    """The keyword arguments of :meth:`Registry.apply`, with the same meaning and
    defaults for every registry (:class:`EncryptedRegistry` is where the defaults are,
    and where the values are checked).

    ``operation``  the change's name in the audit log: ``put``, ``remove``, ``import``,
                   ``sync``, ... (a lower-case letter, then up to 31 lower-case
                   letters, digits and ``-``; default ``"put"``)
    ``expect``     entry URL to the revision the caller last saw (``None``: the entry
                   must be absent); if any stored revision differs, the batch raises
                   :class:`~securesession.ConflictError` naming the URLs and changes
                   nothing (default: no check)
    ``state``      ``(name, text)``, stored under *name* in the same transaction
                   (non-secret bookkeeping, such as what a sync last copied;
                   :meth:`Registry.state` reads it back). *text* may be a function of
                   the revisions the writes get (entry URL to revision), called inside
                   the transaction once they are made (:data:`StateText`; default: no
                   state)

    A ``TypedDict``: type checkers check these keywords in ``registry.apply(...)``,
    and code that forwards them can annotate its own ``**kwargs`` with it.
    """

    operation: str
    expect: Mapping[str, int | None] | None
    state: tuple[str, StateText] | None


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
