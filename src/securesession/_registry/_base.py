"""The registry contract, the storage seam under it, and the encryption between them.

Two extension points, one per concern:

* :class:`Registry` is what sessions and tools use: put, look up, remove, list and
  rotate entries. Every backend presents it; :class:`EncryptedRegistry` is the one
  implementation the built-in backends share.
* :class:`RegistryStore` is what a storage backend writes: sealed rows (public
  settings plus ciphertext tokens), an indexed probe of candidate keys, one atomic
  batch of changes (:meth:`RegistryStore.apply`: every put and remove goes through
  it) and one atomic rewrite for key rotation. It never sees a clear secret or a
  key, so a new backend (SQL, KV, ...) cannot get the cryptography wrong.

How an entry becomes a row (the format, its versions, the entry tag, legacy rows) is
the codec's, :mod:`._codec`. Backend authors import these names from
:mod:`securesession.registry`.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import (
    TYPE_CHECKING,
    Any,
    Final,
    Literal,
    NamedTuple,
    Protocol,
    TypeAlias,
    TypeVar,
    runtime_checkable,
)

from .._actor import check_actor, chosen_actor, os_user
from .._crypto import KeyRing, MasterKey, token_key_id
from .._entry import ServiceEntry
from .._exceptions import ConflictError, DecryptionError, RegistryCorruptError, RegistryError
from .._urls import canonicalize
from ._codec import ENTRY_TAG_FIELD, changed_secret_fields, is_legacy, reseal, seal, unseal

# The audit code (and getpass, for the default actor) loads where records are written
# or read: a process that only looks entries up never needs it.
if TYPE_CHECKING:
    from .._audit import AuditLog, AuditRecord, AuditReport
    from .._compat import Unpack
    from ..registry import ApplyOptions

# No __all__: the backend authors' names are listed once, in securesession.registry;
# the rest are the stores' shared helpers, imported by name.

logger = logging.getLogger("securesession")

_T = TypeVar("_T")

#: What a registry does with a legacy (securesession 0.1.0) row, whose settings are not
#: authenticated: ``"refuse"`` it (the default: :class:`~securesession.LegacyEntryError`)
#: or ``"accept"`` it, with a warning, until it is upgraded.
LegacyEntries: TypeAlias = Literal["refuse", "accept"]


def check_legacy_entries(policy: object) -> LegacyEntries:
    """*policy* if it is a :data:`LegacyEntries` value, else :class:`ValueError`."""
    if policy == "refuse" or policy == "accept":
        return policy
    raise ValueError(f"legacy_entries must be 'refuse' or 'accept', not {policy!r}")


# The records a store and its registry pass each other (lookups, rows, writes, changes,
# audit rows, batches and what they did) are NamedTuples, not dataclasses: every
# process defines them at import, and a NamedTuple costs a sixth of a frozen dataclass
# to define (docs/performance.md).
class EntryRef(NamedTuple):
    """What a cheap lookup returns: which entry, and which revision of it."""

    key: str
    revision: int


class SealedEntry(NamedTuple):
    """An entry as stored: public settings, and ciphertext tokens for every secret.
    (A copy with other values: ``row._replace(settings=...)``.)"""

    key: str
    revision: int
    updated_at: float
    settings: dict[str, Any]
    secrets: dict[str, str]


class SealedWrite(NamedTuple):
    """One entry to store, sealed: what a batch hands the store for a put."""

    key: str
    settings: dict[str, Any]
    secrets: dict[str, str]


class Change(NamedTuple):
    """One change a batch made, as the store hands it to the batch's journal: the
    entry's row before (``None``: it was added) and after (``None``: removed), and the
    registry revision the change was given."""

    key: str
    revision: int
    before: SealedEntry | None
    after: SealedEntry | None


class Journal(Protocol):
    """What a store calls inside a batch's transaction, after its changes and before
    COMMIT, to get the audit records to append in that same transaction.

    *changes* are the batch's changes in order; *last* is the newest stored record
    (``None`` for an empty log). It returns the records to append, in order, each with
    the next sequence number; an exception aborts the whole batch."""

    def __call__(self, changes: Sequence[Change], last: AuditRow | None) -> Sequence[AuditRow]: ...


class AuditRow(NamedTuple):
    """One stored audit record: its sequence number and its canonical text (which the
    store keeps byte for byte; :mod:`securesession._audit` parses and checks it)."""

    seq: int
    record: str


#: What a store calls, in the transaction that starts its audit log, with the
#: registry revision and every stored entry: it returns the log's first record.
AuditStart: TypeAlias = "Callable[[int, Sequence[SealedEntry]], AuditRow]"


#: A state text, or a function of the revisions a batch's writes get (entry key to
#: revision) that returns it, evaluated inside the batch's transaction: so a state
#: can record what the writes became, atomically with them.
StateText: TypeAlias = "str | Callable[[Mapping[str, int]], str]"


#: What :meth:`RegistryStore.rewrite_all` calls in its transaction once every entry has
#: its new revision: given the rewrite's changes and every stored state (name to text),
#: it returns the states to store anew (name to text) in that same transaction.
Restate: TypeAlias = "Callable[[Sequence[Change], Mapping[str, str]], Mapping[str, str]]"

#: The member by which a state declares the entry revisions it records: a state whose
#: text is a JSON object with an object under this name (entry key to revision) keeps
#: pointing at the same entries across a rewrite (a key rotation gives every entry a
#: new revision), which remaps them in its transaction (:func:`restated`).
ENTRY_REVISIONS: Final = "entry_revisions"


class Batch(NamedTuple):
    """Changes a store applies in one transaction (:meth:`RegistryStore.apply`).

    * *writes* are inserted or replaced, *removes* deleted (a key that is not stored is
      no change); a key appears at most once in the two together.
    * *key_id* is the key the secrets (and audit records) are under: refused with
      :func:`rekeyed_error` if the registry has meanwhile been rotated to another key
      (``None``, for a store writer's raw removal only, skips the check).
    * *expect* maps entry keys to the revision the caller last saw (``None``: absent);
      any stored revision that differs raises :class:`~securesession.ConflictError`
      (use :func:`check_expected`) and nothing is written.
    * *state* is ``(name, text)``, stored under *name* in the same transaction
      (:meth:`RegistryStore.state` reads it back); *text* may be a function of the
      revisions the writes get (:meth:`state_after` evaluates it, after the writes).
    * *journal*, if given, is called once the changes are made, in the transaction,
      and the records it returns are appended to the audit log before COMMIT.
    """

    key_id: str | None
    writes: Sequence[SealedWrite] = ()
    removes: Sequence[str] = ()
    expect: Mapping[str, int | None] = MappingProxyType({})
    state: tuple[str, StateText] | None = None
    journal: Journal | None = None

    def state_after(self, written: Sequence[SealedEntry]) -> tuple[str, str] | None:
        """The state to store once *written* (this batch's writes) have their revisions."""
        if self.state is None:
            return None
        name, text = self.state
        if callable(text):
            text = text({row.key: row.revision for row in written})
        if not isinstance(text, str):
            raise TypeError("the state text must be a str")
        return name, text


class Applied(NamedTuple):
    """What a batch did: the rows it wrote (with their new revisions), in the order
    given, and the keys it removed (those that were stored)."""

    written: list[SealedEntry]
    removed: list[str]


class Rekey(NamedTuple):
    """A key rotation's rewrite of every entry, in one transaction
    (:meth:`RegistryStore.rewrite_all`).

    * *reseal* gives an entry's secrets under the new key; the settings are kept
      exactly as stored (the new secrets authenticate them): :meth:`resealed` makes
      the row to store.
    * *new_key_id* is the key id the store records as the registry's, in the
      transaction.
    * *journal*, as for :class:`Batch`, is called with one change per entry (each entry
      gets a new revision), and the records it returns are appended in the transaction.
    * *restate*, if given, is called with those changes and every stored state; the
      states it returns are stored in the transaction too.
    """

    reseal: Callable[[SealedEntry], dict[str, str]]
    new_key_id: str
    journal: Journal | None = None
    restate: Restate | None = None

    def resealed(self, sealed: SealedEntry, revision: int) -> SealedEntry:
        """*sealed* as the rewrite stores it: its secrets resealed, under *revision*."""
        secrets = self.reseal(sealed)
        return SealedEntry(sealed.key, revision, sealed.updated_at, sealed.settings, secrets)


@runtime_checkable
class Registry(Protocol):
    """An encrypted credential registry. Backends are opened with :func:`open_registry`."""

    @property
    def key_id(self) -> str:
        """Id of the master key the registry's secrets are encrypted under."""

    def put(self, entry: ServiceEntry) -> ServiceEntry:
        """Add or replace the entry for ``entry.url``; return it with its new revision."""

    def get(self, url: str) -> ServiceEntry | None:
        """The decrypted entry whose prefix matches *url* longest, if any."""

    def lookup(self, url: str) -> EntryRef | None:
        """Which entry *url* matches, without decrypting anything (the hot path)."""

    def load(self, ref: EntryRef) -> ServiceEntry | None:
        """Decrypt the entry *ref* names; ``None`` if it was removed since the lookup."""

    def remove(self, url: str) -> bool:
        """Remove the entry whose prefix is exactly *url*; tell whether one existed."""

    def apply(
        self,
        puts: Sequence[ServiceEntry] = (),
        removes: Sequence[str] = (),
        **options: Unpack[ApplyOptions],
    ) -> list[ServiceEntry]:
        """Write *puts* and remove the entries whose prefix is exactly each of
        *removes*, all in one transaction of the store: on any failure (I/O, disk full,
        a killed process, a lost connection, a conflict) nothing changes. A URL may
        appear once in *puts* and *removes* together. Returns the written entries with
        their new revisions, in order.

        The keyword arguments are :class:`~securesession.registry.ApplyOptions`:
        *operation* (the audit log's name for the change), *expect* (the revisions the
        caller last saw, else :class:`~securesession.ConflictError`) and *state* (a
        text stored with the batch, read back by :meth:`state`)."""

    def state(self, name: str) -> str | None:
        """The text last stored under *name* by :meth:`apply`, if any."""

    def audit(
        self, *, since: float | None = None, entry: str | None = None
    ) -> Iterator[AuditRecord]:
        """The audit log's records, oldest first: those at or after time *since* (Unix
        seconds), of the entry whose prefix is exactly *entry* (and the registry-wide
        ones, ``"*"``). Nothing is verified: :meth:`verify_audit` does that."""

    def verify_audit(self) -> AuditReport:
        """Check the whole audit log (links, MACs, the revisions of the registry and of
        every entry); raise :class:`~securesession.AuditError` naming the first record
        at fault."""

    def entries(self) -> Iterator[ServiceEntry]:
        """Every entry, decrypted, in key order."""

    def urls(self) -> Iterator[str]:
        """The URL (canonical prefix, ``entry.url``) of every entry, in key order,
        without decrypting anything: for listings, near-miss reports, progress bars."""

    def count(self) -> int:
        """How many entries the registry holds, without decrypting anything."""

    def rotate(self, new_key: MasterKey, *, progress: Callable[[], None] | None = None) -> int:
        """Re-encrypt every secret under *new_key* in one transaction; *progress*, if
        given, is called once per entry re-encrypted (for a progress bar; a store that
        retries after a lost connection calls it again for each entry). Returns how
        many entries the transaction re-encrypted.

        Every entry is rewritten in the current, authenticated format, so this also
        upgrades legacy (0.1.0, unauthenticated) entries, on a registry opened with
        ``legacy_entries="accept"`` (otherwise the first one stops the rotation, and
        nothing changes); *new_key* may be the current key. Each entry gets a new
        revision, and the states that record entry revisions (:data:`ENTRY_REVISIONS`:
        a sync's) are remapped to them in the same transaction, so a rotation is no
        change to them."""

    def close(self) -> None:
        """Release connections. Closing twice is harmless; every other method of a
        closed registry raises :class:`~securesession.RegistryError`."""

    def __enter__(self) -> Registry:
        """The registry itself: ``with open_registry(...) as registry:`` closes it."""

    def __exit__(self, *exc_info: object) -> None:
        """Close the registry."""


# What a registry may offer besides Registry, one capability each: the CLI checks the
# capability a command needs (isinstance), never the class that has it.
@runtime_checkable
class StagedKeyBookkeeping(Protocol):
    """The key bookkeeping of a staged key rotation, which a registry may keep besides
    :class:`Registry`: which key is staged for the next rotation (a key id, never a
    key), and which keys its entries' secrets are under. :class:`EncryptedRegistry` keeps
    it, in a state of its store; a backend whose registry is not an
    :class:`EncryptedRegistry` implements these three members to offer it.

    ``securesession rotate-key`` uses it in the staged steps of a fleet's rotation
    (``--stage``, ``--commit``, ``--retire``, ``--reset-stage``), and refuses them,
    naming the registry's type, for a registry without it (plain ``rotate-key`` needs
    only :class:`Registry`).

    ``isinstance(registry, StagedKeyBookkeeping)`` looks for the two methods:
    :attr:`staged_key_id` is declared for type checkers only, since on Python 3.10 and
    3.11 ``isinstance`` reads every property a protocol declares, and reading this one
    reads the store (and raises, for an unreadable record).
    """

    if TYPE_CHECKING:  # see above: not a member isinstance() reads

        @property
        def staged_key_id(self) -> str | None:
            """The key id recorded as staged for the next rotation; ``None`` if none is,
            or once it is the active key (:attr:`Registry.key_id`: committed). An
            unreadable record raises :class:`~securesession.RegistryCorruptError`
            naming the registry."""

    def record_staged_key_id(self, key_id: str | None, *, operation: str) -> None:
        """Record *key_id* (``None``: none) as the staged key, in one transaction with
        the audit record of *operation* (``stage``, ``retire``, ``reset-stage``), as
        :meth:`Registry.apply` stores a state. Key ids only, never a key."""

    def key_usage(self) -> dict[str, int]:
        """How many entries hold a secret under each key id (key id to count), read
        without decrypting anything: whether a key may be retired."""


@runtime_checkable
class LegacyEntryUpgrade(Protocol):
    """The upgrade of legacy entries (written by securesession 0.1.0: their settings are
    not authenticated), which a registry may offer besides :class:`Registry`: telling
    them apart, and authenticating them under the key the registry already uses.
    :class:`EncryptedRegistry` offers it; a backend whose registry is not an
    :class:`EncryptedRegistry` implements these two methods to offer it.

    ``securesession upgrade`` uses it (``--dry-run`` calls :meth:`legacy_urls` only),
    and refuses, naming the registry's type, a registry without it.
    :func:`~securesession.open_registry` sets :attr:`legacy_entries` where it is asked
    to accept legacy entries, and refuses that for a registry without it; commands that
    show or re-seal legacy entries (``show``, ``rotate-key``) ask it only of a registry
    that has it, and on any other serve what the registry itself reads.

    On Python 3.10 and 3.11 ``isinstance(registry, LegacyEntryUpgrade)`` reads
    :attr:`legacy_entries`: it must be cheap, and must not raise (a closed registry
    included).
    """

    #: What reading a legacy entry does: ``"refuse"`` (raise
    #: :class:`~securesession.LegacyEntryError`) or ``"accept"`` (read it, warning).
    legacy_entries: LegacyEntries

    def legacy_urls(self) -> list[str]:
        """The URLs of the legacy entries, in key order; nothing is decrypted, nothing
        changes."""

    def upgrade_legacy_entries(self) -> list[str]:
        """Authenticate every legacy entry under the current key, in one transaction
        (audit operation ``upgrade``), whatever the registry's ``legacy_entries`` says:
        calling this is the opt-in. Returns the URLs upgraded, in key order (none: no
        change at all)."""


class RegistryStore(Protocol):
    """Storage for sealed entries: what a backend author implements.

    Every method is atomic on its own; :meth:`rewrite_all` is one transaction.

    A store may also offer ``lookup_stamp() -> object | None``, for the front-ends'
    warm path: a token read *before* a :meth:`find`, which stays the very same object
    (``is``) for as long as every :meth:`find` would answer as it did, and is another
    object from the moment a change could make any answer differ (its own writes,
    and another process's within the store's staleness bound); ``None`` when it cannot
    tell. A front-end that saw the same stamp before two lookups of one URL may skip
    the second. The async httpx client reads it on its event loop, so it must not
    block: at most an occasional cheap check, as SQLite's re-check is. A store
    without the method is looked up on every request. The contract suite checks the
    method where a store has it.
    """

    def stored_key_id(self) -> str | None:
        """The key id recorded by the last writer, or ``None`` for a new store."""

    def record_key_id(self, key_id: str) -> None:
        """Record *key_id* if the store has none yet (first open)."""

    def find(self, keys: Sequence[str]) -> EntryRef | None:
        """The longest of *keys* (all prefixes of one URL) that is stored."""

    def read(self, key: str) -> SealedEntry | None: ...

    def write(
        self, key: str, settings: dict[str, Any], secrets: dict[str, str], *, key_id: str
    ) -> SealedEntry:
        """Insert or replace *key* under a new registry-wide revision.

        *key_id* is the key the secrets are encrypted under: in the same transaction,
        refuse (with :func:`rekeyed_error`) if the registry has meanwhile been rotated
        to another key, so a process holding the old key never writes an entry that
        the new key cannot read."""

    def delete(self, key: str) -> bool: ...

    def apply(self, batch: Batch) -> Applied:
        """Apply *batch* in one transaction: either every change (and its state and
        audit records) is committed, or none is. See :class:`Batch` for what it holds.

        :class:`EncryptedRegistry` writes only through this method; :meth:`write` and
        :meth:`delete` are a store writer's raw access (tools, tests), with no audit
        record, and may be implemented as a batch of one."""

    def state(self, name: str) -> str | None:
        """The text a batch last stored under *name*, if any."""

    @property
    def keeps_audit(self) -> bool:
        """Whether this store keeps the audit log: if so, every batch comes with a
        journal, and :meth:`read_audit` returns what the journals appended."""

    def start_audit(self, start: AuditStart) -> bool:
        """Start the audit log if the store is waiting for its first record (it was
        created, or migrated from a schema without the log, and no record was written
        since): in one transaction that sees every entry and holds the write lock, call
        *start* with the registry revision and every stored entry, append the record it
        returns and stop waiting. Otherwise (a log exists, or it was not waiting: an
        empty log then means its records were removed) do nothing. Tell whether it
        started the log. A store that keeps no audit log returns ``False``."""

    def read_audit(self) -> AuditLog:
        """Every audit record, the registry-wide revision, each entry's revision and
        :func:`~securesession._audit.row_digest`, and whether the log is still to be
        started, read in one snapshot. A store that keeps no audit log raises
        :class:`~securesession.RegistryError` saying so."""

    def scan(self) -> Iterator[SealedEntry]:
        """Every stored entry in key order."""

    def keys(self) -> Iterator[str]:
        """The key of every stored entry in key order (those :meth:`scan` yields),
        without reading the entries where the store can avoid it: listings and
        progress bars use it, and must not cost one read per entry."""

    def rewrite_all(self, rekey: Rekey) -> int:
        """Apply *rekey* in one transaction: every entry's secrets replaced by
        ``rekey.reseal(entry)`` (:meth:`Rekey.resealed`), each entry a new revision, and
        ``rekey.new_key_id`` recorded; either everything changes or nothing does. See
        :class:`Rekey` for what it holds. Returns how many entries the committed
        transaction rewrote (a store that runs its body again, after a lost connection,
        counts the last run only)."""

    def close(self) -> None:
        """Release the store's connections. It may be called more than once."""


if TYPE_CHECKING:  # a protocol only type checkers use: no class to build at import

    class _Applies(Protocol):
        def apply(self, batch: Batch) -> Applied: ...


class BatchesOfOne:
    """A store's :meth:`~RegistryStore.write` and :meth:`~RegistryStore.delete` as
    batches of one through its own :meth:`~RegistryStore.apply`, as every built-in
    store has them."""

    def write(
        self: _Applies, key: str, settings: dict[str, Any], secrets: dict[str, str], *, key_id: str
    ) -> SealedEntry:
        return self.apply(Batch(key_id, writes=[SealedWrite(key, settings, secrets)])).written[0]

    def delete(self: _Applies, key: str) -> bool:
        return bool(self.apply(Batch(None, removes=[key])).removed)


class EncryptedRegistry:
    """A :class:`Registry` over any :class:`RegistryStore`: seals and opens entries.

    Each secret field is one AES-256-GCM token whose associated data is the entry's
    canonical key and the field's name, so tokens cannot be moved between entries
    or fields; one more token, the entry tag, authenticates the entry as a whole: its
    key, its settings and the exact set of its field tokens (the format is
    :mod:`._codec`'s). Thread-safe if the store is. Once closed, it refuses every call
    with :class:`~securesession.RegistryError`, whatever the store would do.

    *legacy_entries* says what reading a legacy row (written by securesession 0.1.0:
    its settings are not authenticated) does: ``"refuse"``, the default, raises
    :class:`~securesession.LegacyEntryError` naming the entry, in :meth:`load`,
    :meth:`entries` and :meth:`rotate` alike; ``"accept"`` reads it, with a warning, and
    :meth:`rotate` upgrades it. :meth:`upgrade_legacy_entries` authenticates legacy rows
    under the current key whatever this says.

    *read_only* opens it for reading only (``diff``, a sync's plan): the open records no
    key id and starts no audit log, and every write raises
    :class:`~securesession.RegistryError`. The store must be opened read-only too
    (``SQLiteStore(read_only=True)``, ...), so that it neither migrates nor writes.
    """

    def __init__(
        self,
        store: RegistryStore,
        key: MasterKey | KeyRing,
        *,
        name: str,
        actor: str | None = None,
        legacy_entries: LegacyEntries = "refuse",
        read_only: bool = False,
    ) -> None:
        # As documented for acting_as(), the actor is settled now; the OS user, if it
        # is the one, is looked up at the first write (getpass is for writers only).
        self._actor: str | None = chosen_actor() if actor is None else check_actor(actor)
        self.legacy_entries = legacy_entries
        self._read_only = read_only
        ring = KeyRing.of(key)
        stored = store.stored_key_id()
        if stored is None and read_only:
            # Nothing recorded: the key of the entries, if any, else the ring's own; a
            # read-only open records nothing (the next writer does).
            stored = _key_id_of_entries(store)
        elif stored is None:
            # No key id recorded (a new store, or one whose record was lost): never
            # adopt ours over entries that say they are under another key.
            found = _key_id_of_entries(store)
            if found is not None and not ring.holds(found):
                store.close()
                raise DecryptionError(
                    f"registry {name} records no key id, but its entries are encrypted "
                    f"under key id {found}, and {_holding(ring)}: wrong master key"
                )
            store.record_key_id(ring.key_id if found is None else found)
            stored = store.stored_key_id()  # another process may have recorded first
        if stored is not None and not ring.holds(stored):
            store.close()
            raise DecryptionError(
                f"registry {name} is encrypted under key id {stored}, "
                f"but {_holding(ring)}: wrong master key"
            )
        self._store = store
        # The store's stamp speaks for this class's lookup (the store's find): a subclass
        # that replaces lookup (StubRegistry records each one) gets none, so that every
        # lookup of its runs.
        self._stamp_of: Callable[[], object | None] | None = (
            getattr(store, "lookup_stamp", None)
            if type(self).lookup is EncryptedRegistry.lookup
            else None
        )
        self._name = name
        self._closed = False
        # The store's active key id as last seen, and the ring that writes under it
        # (the given ring, or its commit when the store already uses the staged key).
        # A store whose active key is one of the ring's previous keys is read, never
        # written: see _writing.
        self._stored_key_id = ring.key_id if stored is None else stored
        self._key = ring.for_writing(self._stored_key_id) or ring
        self._follow_lock = threading.Lock()
        if self._key.key_id != self._stored_key_id:
            logger.warning("%s", self._previous_key_error())
        elif not read_only:
            self._start_audit()
        self._warn_if_staged_key_missing(ring)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._name} key_id={self._stored_key_id}>"

    def __enter__(self) -> EncryptedRegistry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def key_id(self) -> str:
        return self._stored_key_id

    @property
    def legacy_entries(self) -> LegacyEntries:
        """What reading a legacy (0.1.0) row does: ``"refuse"`` or ``"accept"`` (see the
        class docstring); :func:`~securesession.open_registry` sets it."""
        return self._legacy_entries

    @legacy_entries.setter
    def legacy_entries(self, policy: LegacyEntries) -> None:
        self._legacy_entries = check_legacy_entries(policy)
        self._accept_legacy = policy == "accept"

    @property
    def key_ring(self) -> KeyRing:
        """The keys this registry reads with; its active key is the one it writes with
        (once the store's active key is a ring's staged key, the ring as committed)."""
        return self._key

    @property
    def store(self) -> RegistryStore:
        """The storage under this registry (for tools that copy sealed rows)."""
        return self._store

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @property
    def read_only(self) -> bool:
        """Whether this registry was opened read-only: every write is refused, and the
        open itself wrote nothing (no key id recorded, no audit log started)."""
        return self._read_only

    def _open_store(self) -> RegistryStore:
        if self._closed:
            raise RegistryError(f"registry {self._name} is closed")
        return self._store

    def _writable_store(self) -> RegistryStore:
        store = self._open_store()
        if self._read_only:
            raise RegistryError(
                f"registry {self._name} is open read-only: no change is made through it"
            )
        return store

    def put(self, entry: ServiceEntry) -> ServiceEntry:
        return self.apply([entry], operation="put")[0]

    def apply(
        self,
        puts: Sequence[ServiceEntry] = (),
        removes: Sequence[str] = (),
        *,
        operation: str = "put",
        expect: Mapping[str, int | None] | None = None,
        state: tuple[str, StateText] | None = None,
    ) -> list[ServiceEntry]:
        """:meth:`Registry.apply`; the keyword arguments are
        :class:`~securesession.registry.ApplyOptions`' (this is where their defaults
        are, and where they are checked)."""
        written, _ = self._apply(puts, removes, operation, expect, state)
        return written

    def _apply(
        self,
        puts: Sequence[ServiceEntry],
        removes: Sequence[str],
        operation: str,
        expect: Mapping[str, int | None] | None,
        state: tuple[str, StateText] | None,
    ) -> tuple[list[ServiceEntry], list[str]]:
        """The one write path: every put, remove and batch comes through here."""
        store = self._writable_store()
        if not isinstance(operation, str) or not re.fullmatch(_OPERATION, operation):
            raise ValueError(f"operation must match {_OPERATION}, not {operation!r}")
        if state is not None:
            _check_state_name(state[0])
            if not isinstance(state[1], str) and not callable(state[1]):
                raise TypeError("the state text must be a str or a function returning one")
        remove_keys = [canonicalize(url).key for url in removes]
        keys = [entry.url for entry in puts] + remove_keys
        if len(set(keys)) != len(keys):
            twice = sorted({key for key in keys if keys.count(key) > 1})
            raise ValueError(f"a batch names each entry once; given more than once: {twice}")
        expected = {canonicalize(url).key: revision for url, revision in (expect or {}).items()}

        def batch(key: KeyRing) -> Applied:
            writes = [SealedWrite(entry.url, *seal(entry, key)) for entry in puts]
            return store.apply(
                Batch(
                    key_id=key.key_id,
                    writes=writes,
                    removes=remove_keys,
                    expect=expected,
                    state=state,
                    journal=self._journal(operation, key, state),
                )
            )

        applied = self._writing(batch)
        by_key = {sealed.key: sealed for sealed in applied.written}
        written = [
            entry.with_metadata(
                revision=by_key[entry.url].revision, updated_at=by_key[entry.url].updated_at
            )
            for entry in puts
        ]
        logger.debug(
            "registry %s: %s: %d written, %d removed (revisions %s)",
            self._name,
            operation,
            len(written),
            len(applied.removed),
            ", ".join(f"{entry.url}={entry.revision}" for entry in written) or "-",
        )
        return written, applied.removed

    def state(self, name: str) -> str | None:
        _check_state_name(name)
        return self._open_store().state(name)

    def lookup(self, url: str) -> EntryRef | None:
        return self._open_store().find(canonicalize(url).prefix_keys)

    def lookup_stamp(self) -> object | None:
        """The store's ``lookup_stamp()`` (see :class:`RegistryStore`): what tells a
        front-end that a lookup would answer as the last one did; ``None`` when the
        store cannot tell, the registry is closed (then the lookup runs, and says so)
        or its :meth:`lookup` was replaced (by a subclass, or on the instance: a test
        that wraps it)."""
        stamp_of = self._stamp_of
        if stamp_of is None or self._closed or "lookup" in self.__dict__:
            return None
        return stamp_of()

    def load(self, ref: EntryRef) -> ServiceEntry | None:
        store = self._open_store()
        sealed = self._reading(lambda: store.read(ref.key))
        if sealed is None:
            return None
        return unseal(sealed, self._key, accept_legacy=self._accept_legacy)

    def get(self, url: str) -> ServiceEntry | None:
        ref = self.lookup(url)
        return None if ref is None else self.load(ref)

    def remove(self, url: str) -> bool:
        _, removed = self._apply((), [url], "remove", None, None)
        return bool(removed)

    def entries(self) -> Iterator[ServiceEntry]:
        rows = self._open_store().scan()
        accept_legacy = self._accept_legacy
        return (unseal(sealed, self._key, accept_legacy=accept_legacy) for sealed in rows)

    def urls(self) -> Iterator[str]:
        return self._open_store().keys()

    def count(self) -> int:
        return sum(1 for _ in self.urls())

    def rotate(self, new_key: MasterKey, *, progress: Callable[[], None] | None = None) -> int:
        store = self._writable_store()
        old_key, old_key_id = self._key, self._stored_key_id
        # Per entry, whether its row was legacy: a store that runs its body again (a
        # lost connection) overwrites the first run's answers, it does not add to them.
        legacy_rows: dict[str, bool] = {}
        accept_legacy = self._accept_legacy

        def resealed(sealed: SealedEntry) -> dict[str, str]:
            # Opened with whichever key of the ring each token names.
            tokens, legacy = reseal(sealed, old_key, new_key, accept_legacy=accept_legacy)
            legacy_rows[sealed.key] = legacy
            if progress is not None:
                progress()
            return tokens

        journal = self._journal("rotate", KeyRing.of(new_key), None)
        count = store.rewrite_all(Rekey(resealed, new_key.key_id, journal, restated))
        upgraded = [key for key, legacy in legacy_rows.items() if legacy]
        with self._follow_lock:
            self._key = old_key.rotated_to(new_key)
            self._stored_key_id = new_key.key_id
        logger.info(
            "registry %s: rotated from key id %s to %s", self._name, old_key_id, new_key.key_id
        )
        if upgraded:
            logger.info(
                "registry %s: %d legacy entr%s upgraded to the authenticated format",
                self._name,
                len(upgraded),
                "y" if len(upgraded) == 1 else "ies",
            )
        return count

    def legacy_urls(self) -> list[str]:
        """The URLs of the legacy (0.1.0) rows, in key order; nothing is decrypted."""
        return [sealed.key for sealed in self._legacy_rows()]

    def _legacy_rows(self) -> list[SealedEntry]:
        return [sealed for sealed in self._open_store().scan() if is_legacy(sealed)]

    def upgrade_legacy_entries(self) -> list[str]:
        """Authenticate every legacy (0.1.0) row under the current key, in one
        transaction (audit operation ``upgrade``), whatever :attr:`legacy_entries` says:
        calling this is the opt-in. Returns the URLs upgraded, in key order (none: no
        change at all). Each row's settings are authenticated *as stored*: check them
        first (``securesession show``) if the store may have been written by others.

        Authenticated rows are left as they are. A legacy row without any secret field
        (it authenticates nothing) raises :class:`~securesession.LegacyEntryError` and
        nothing changes; so does a row rewritten meanwhile by another writer
        (:class:`~securesession.ConflictError`). Unlike :meth:`rotate`, no key changes,
        so hosts need nothing new; legacy rows from older backups of the registry stay
        refused wherever legacy entries are."""
        store = self._writable_store()
        legacy_rows = self._legacy_rows()
        if not legacy_rows:
            return []

        def batch(key: KeyRing) -> Applied:
            writes = [
                SealedWrite(
                    sealed.key, sealed.settings, reseal(sealed, key, key, accept_legacy=True)[0]
                )
                for sealed in legacy_rows
            ]
            return store.apply(
                Batch(
                    key_id=key.key_id,
                    writes=writes,
                    expect={sealed.key: sealed.revision for sealed in legacy_rows},
                    journal=self._journal("upgrade", key, None),
                )
            )

        applied = self._writing(batch)
        upgraded = [row.key for row in applied.written]
        logger.info(
            "registry %s: %d legacy entr%s upgraded to the authenticated format: %s",
            self._name,
            len(upgraded),
            "y" if len(upgraded) == 1 else "ies",
            ", ".join(upgraded),
        )
        return upgraded

    # -- the audit log -------------------------------------------------------------

    @property
    def actor(self) -> str:
        """Who the audit records of this registry's writes name (default: the OS user)."""
        if self._actor is None:
            self._actor = os_user()
        return self._actor

    @actor.setter
    def actor(self, actor: str) -> None:
        self._actor = check_actor(actor)

    def _start_audit(self) -> None:
        """Write the log's first record if the store is waiting for it (created, or
        upgraded from before the log): it lists every entry stored now, so those that
        predate the log are pinned under the master key's MAC from here on."""
        store = self._store
        if not store.keeps_audit:
            return
        signer = self._key.active

        def start(revision: int, rows: Sequence[SealedEntry]) -> AuditRow:
            from .._audit import start_record  # called only when the log is to be started

            record = start_record(revision, rows, key=signer, actor=self.actor, now=time.time())
            return AuditRow(*record)

        try:
            started = store.start_audit(start)
        except RegistryError as exc:
            # A role that may read but not write (PostgreSQL) must still open it; the
            # log starts at the next open by a writer, and verify says it has not.
            logger.warning(
                "registry %s: its audit log is to be started, and this process could not "
                "write its first record (%s); open it once with a role that may write",
                self._name,
                exc,
            )
            return
        if started:
            # Loud when entries exist: a real upgrade, or a log removed and the store
            # made to look new; only the head kept elsewhere tells (docs/security.md).
            count = self.count()
            logger.log(
                logging.WARNING if count else logging.INFO,
                "registry %s: audit log started, its first record listing the %d entr%s "
                "stored now%s",
                self._name,
                count,
                "y" if count == 1 else "ies",
                " (an upgrade from before the log; if this registry had a log, it was "
                "removed: compare with the head you kept)"
                if count
                else "",
            )

    def _journal(
        self, operation: str, key: KeyRing, state: tuple[str, StateText] | None
    ) -> Journal | None:
        """What appends the audit records of one batch signed by *key*'s active key, if
        the store keeps an audit log. It runs inside the store's transaction."""
        if not self._store.keeps_audit:
            return None
        from .._audit import Pending, entries_digest, new_records, row_digest

        actor, name = self.actor, self._name
        signer = key.active

        def journal(changes: Sequence[Change], last: AuditRow | None) -> list[AuditRow]:
            if operation == "rotate":
                # One record for the whole rotation: the rows it found (their digest,
                # checked against the log's) and every row it wrote.
                revisions = [change.revision for change in changes]
                pending = [
                    Pending(
                        "rotate",
                        "*",
                        max(revisions, default=None),
                        min(revisions, default=None),
                        ("secrets",),
                        was=entries_digest(
                            {c.key: row_digest(c.before) for c in changes if c.before}
                        ),
                        entries={c.key: row_digest(c.after) for c in changes if c.after},
                    )
                ]
            else:
                pending = [
                    Pending(
                        operation,
                        change.key,
                        change.revision,
                        fields=_changed(change, key),
                        change=_kind(change),
                        was=None if change.before is None else row_digest(change.before),
                        row=None if change.after is None else row_digest(change.after),
                    )
                    for change in changes
                ]
                if state is not None and not changes:
                    pending.append(Pending(operation, "*", None, None, (f"state:{state[0]}",)))
            records = new_records(
                pending,
                None if last is None else (last.seq, last.record),
                key=signer,
                actor=actor,
                now=time.time(),
                name=name,
            )
            return [AuditRow(seq, text) for seq, text in records]

        return journal

    def _read_audit(self) -> AuditLog:
        store = self._open_store()
        if not store.keeps_audit:
            raise RegistryError(
                f"registry {self._name} keeps no audit log (its backend does not; see "
                "docs/vault.md, 'Audit')"
            )
        return store.read_audit()

    def audit(
        self, *, since: float | None = None, entry: str | None = None
    ) -> Iterator[AuditRecord]:
        from .._audit import records as audit_records

        wanted = None if entry is None else canonicalize(entry).key
        log = self._read_audit()
        return (
            record
            for record in audit_records(log)
            if (since is None or record.time >= since)
            and (wanted is None or record.entry in (wanted, "*"))
        )

    def verify_audit(self) -> AuditReport:
        from .._audit import verify as verify_log

        return verify_log(self._read_audit(), self._key.get, name=self._name)

    @property
    def staged_key_id(self) -> str | None:
        """The key id ``rotate-key --stage`` recorded as the registry's next key, unless
        it is the active key already (committed) or none was staged."""
        text = self._open_store().state(KEY_RING_STATE)
        return _staged_key_id(text, self._stored_key_id, self._name)

    def record_staged_key_id(self, key_id: str | None, *, operation: str) -> None:
        """Record *key_id* (``None``: none) as the staged key, in one transaction with
        the audit record of *operation* (``stage``, ``retire``). Ids only, never a key."""
        self.apply(operation=operation, state=(KEY_RING_STATE, json.dumps({"staged": key_id})))

    def _warn_if_staged_key_missing(self, ring: KeyRing) -> None:
        """Say so at once when a key is staged that this process cannot read: the commit
        would make it fail closed (an operator restarting hosts sees it in their logs)."""
        try:
            staged = self.staged_key_id
        except RegistryCorruptError as exc:  # unreadable: say so now, not at the next step
            logger.warning("%s", exc)
            return
        except (RegistryError, AttributeError):  # a store from before state, or no access
            return
        if staged is not None and not ring.holds(staged):
            logger.warning(
                "registry %s: key id %s is staged for the next rotation, and this process's "
                "key ring lacks it (it holds %s): once it is committed, this process fails "
                "closed; give it the key file with the staged key, then restart it",
                self._name,
                staged,
                ring.describe(),
            )

    def key_usage(self) -> dict[str, int]:
        """How many entries hold a token under each key id, read from the tokens'
        headers (nothing is decrypted): whether a key may be retired."""
        usage: dict[str, int] = {}
        for sealed in self._open_store().scan():
            for key_id in _token_key_ids(sealed):
                usage[key_id] = usage.get(key_id, 0) + 1
        return usage

    # -- following a rotation committed elsewhere -------------------------------------

    def _writing(self, write: Callable[[KeyRing], _T]) -> _T:
        """Run *write* (seal under the ring it is given, then store) under the store's
        active key. The store checks the key id in its transaction; if it refuses
        because another process committed a key this ring holds as staged, follow
        that key and write once more. Only the ring's active or staged key ever
        writes: never a previous one, whatever the store records (a restored backup,
        or a tampered store, must not make hosts write under a retired key)."""
        key = self._key
        try:
            return write(key)
        except DecryptionError:
            if not self._follow(key):
                raise
        if self._key.key_id != self._stored_key_id:
            raise DecryptionError(self._previous_key_error())
        return write(self._key)

    def _reading(self, read: Callable[[], _T]) -> _T:
        """Run *read*; a store that refuses to read for a re-key (Vault's index names
        the key) reads once more after following a key this ring holds."""
        key = self._key
        try:
            return read()
        except DecryptionError:
            if not self._follow(key):
                raise
        return read()

    def _follow(self, seen: KeyRing) -> bool:
        """After the store refused *seen*: re-read the store's active key id and tell
        whether the ring holds it (then writes go under it if the ring may write with
        it: its staged key, committed by another process)."""
        with self._follow_lock:
            if self._key is not seen:
                return True  # another thread followed meanwhile
            current = self._store.stored_key_id()
            if current is None or current == seen.key_id or not seen.holds(current):
                return False  # not a re-key, or to a key this ring lacks: the refusal stands
            self._key = seen.for_writing(current) or seen
            self._stored_key_id = current
        logger.info(
            "registry %s: now under key id %s (committed by another process)", self._name, current
        )
        return True

    def _previous_key_error(self) -> str:
        return (
            f"registry {self._name} records key id {self._stored_key_id} as its active key, "
            "which this key ring holds only as a previous key: reads work, writes are "
            "refused, never made under a rotated-away key (a registry restored from a "
            "backup? rotate it to the active key: securesession rotate-key --commit, or "
            "plain rotate-key)"
        )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._store.close()


#: What an operation name may be: it names audit records, so no free text.
# A pattern, not a compiled one: only writes need it (re caches it then).
_OPERATION: Final = r"[a-z][a-z0-9-]{0,31}"
_MAX_STATE_NAME: Final = 200


def _check_state_name(name: str) -> None:
    if not isinstance(name, str) or not 0 < len(name) <= _MAX_STATE_NAME:
        raise ValueError(f"a state name is a non-empty str of at most {_MAX_STATE_NAME} characters")


def check_expected(
    name: str, expect: Mapping[str, int | None], stored: Callable[[str], int | None]
) -> None:
    """Raise :class:`~securesession.ConflictError` unless every key of *expect* is
    stored at the revision it expects (``None``: absent); *stored* gives a key's
    revision as the transaction sees it. Stores call this inside the transaction."""
    differ = []
    for key, expected in expect.items():
        found = stored(key)
        if found != expected:
            differ.append((key, expected, found))
    if not differ:
        return

    def seen(revision: int | None) -> str:
        return "absent" if revision is None else f"revision {revision}"

    details = "; ".join(
        f"{key} (expected {seen(expected)}, found {seen(found)})" for key, expected, found in differ
    )
    raise ConflictError(
        f"registry {name}: {len(differ)} entr{'y was' if len(differ) == 1 else 'ies were'} "
        f"changed by another writer; nothing was written: {details}",
        urls=tuple(key for key, _, _ in differ),
    )


def _changed(change: Change, key: KeyRing) -> tuple[str, ...]:
    """The names of the fields *change* changed (never a value): settings whose value
    differs, and secret fields whose decrypted value differs (tokens are randomised, so
    every token differs). All of an added or removed entry's fields. If the old row
    does not open (tampered, or under a key the ring lacks), every field counts."""
    before, after = change.before, change.after
    if before is None or after is None:
        row = after or before
        if row is None:
            return ()
        return tuple(sorted({*_setting_names(row), *_secret_names(row)}))
    settings = {
        name
        for name in _setting_names(before) | _setting_names(after)
        if before.settings.get(name) != after.settings.get(name)
    }
    try:
        secrets = changed_secret_fields(before, after, key)
    except (DecryptionError, RegistryCorruptError):
        return tuple(sorted(settings | _secret_names(before) | _secret_names(after)))
    return tuple(sorted(settings | secrets))


def _kind(change: Change) -> str:
    if change.after is None:
        return "removed"
    return "added" if change.before is None else "changed"


def _setting_names(row: SealedEntry) -> set[str]:
    return set(row.settings) - {"format"}


def _secret_names(row: SealedEntry) -> set[str]:
    return set(row.secrets) - {ENTRY_TAG_FIELD}


def restated(changes: Sequence[Change], states: Mapping[str, str]) -> dict[str, str]:
    """The :data:`Restate` of a rotation: each of *states* that records entry revisions
    (:data:`ENTRY_REVISIONS`) and one that *changes* moved, with the revision it
    recorded replaced by the entry's new one. A recorded revision that is not the
    entry's revision before the rewrite stays as it is: the entry was changed after the
    state was written, and must still look changed (a sync's conflict). A state that
    is not such a JSON object is left alone (its owner reports it when it reads it)."""
    moved = {
        change.key: (change.before.revision, change.revision)
        for change in changes
        if change.before is not None and change.after is not None
    }
    if not moved:
        return {}
    remapped: dict[str, str] = {}
    for name, text in states.items():
        try:
            document = json.loads(text)
        except ValueError:
            continue
        recorded = document.get(ENTRY_REVISIONS) if isinstance(document, dict) else None
        if not isinstance(recorded, dict):
            continue
        changed = False
        for key, revision in recorded.items():
            step = moved.get(key)
            if step is not None and type(revision) is int and revision == step[0]:
                recorded[key] = step[1]
                changed = True
        if changed:
            remapped[name] = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return remapped


def rekeyed_error(name: str, stored: str | None, ours: str) -> DecryptionError:
    """What a store's :meth:`~RegistryStore.write` raises when it comes with a key the
    registry no longer uses (*stored* is the store's key id, *ours* the writer's)."""
    return DecryptionError(
        f"registry {name} was re-keyed to key id {stored} (by another process?), but this "
        f"process holds key id {ours}: wrong master key; reopen the registry with the new key"
    )


#: The registry state where the staged key id is recorded, as JSON ``{"staged": id}``.
KEY_RING_STATE: Final = "key-ring"


def _staged_key_id(text: str | None, active: str, name: str) -> str | None:
    if text is None:
        return None
    try:
        staged = json.loads(text).get("staged")
    except (ValueError, AttributeError):
        raise _unreadable_key_ring_state(name, "is not a JSON object") from None
    if staged is None or staged == active:
        return None
    if not isinstance(staged, str):
        raise _unreadable_key_ring_state(name, "names no key id")
    return staged


def _unreadable_key_ring_state(name: str, problem: str) -> RegistryCorruptError:
    # It holds a key id, never a key: resetting it loses nothing a key file does not hold.
    return RegistryCorruptError(
        f"registry {name}: its {KEY_RING_STATE!r} state, where rotate-key --stage records "
        f"the staged key id, {problem} (written outside securesession?); it holds no key: "
        "run securesession rotate-key --reset-stage to record that no key is staged, then "
        "rotate-key --stage again if a staged rotation was under way"
    )


def _holding(ring: KeyRing) -> str:
    if len(ring.key_ids) == 1:
        return f"the master key has id {ring.key_id}"
    return f"the key ring holds key ids {ring.describe()}"


def _token_key_ids(sealed: SealedEntry) -> list[str]:
    """The key ids *sealed*'s tokens carry, each once, in field-name order."""
    found = (token_key_id(sealed.secrets[name]) for name in sorted(sealed.secrets))
    return list(dict.fromkeys(key_id for key_id in found if key_id is not None))


def _key_id_of_entries(store: RegistryStore) -> str | None:
    """The key id the first stored token carries, if the store holds any token."""
    try:
        for sealed in store.scan():
            for found in _token_key_ids(sealed):
                return found
    except RegistryCorruptError:
        # A store that cannot list entries before a key id is recorded (Vault: no
        # index document yet) holds none that could be read.
        return None
    return None


def now() -> float:
    """Wall-clock time of a change, for "last changed" displays only (never for TTLs)."""
    return time.time()


def dumps(value: dict[str, Any] | dict[str, str]) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def loads(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        raise RegistryCorruptError(f"{what} is not valid JSON") from None
    if not isinstance(value, dict):
        raise RegistryCorruptError(f"{what} is not a JSON object")
    return value
