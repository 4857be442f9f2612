"""The audit log: one authenticated, hash-chained record per change of a registry.

Every write through :class:`~securesession.registry.EncryptedRegistry` (put, remove,
import, sync, rotate, ...) appends its records in the same transaction as the change,
so a change and its record commit together or not at all. A record says *what* and
*who*, never a value::

    {"v": 2, "seq": 7, "time": 1714564803.123, "op": "put", "change": "changed",
     "entry": "https://gw.example.com:443/payments", "rev": 42, "since": null,
     "fields": ["description", "gateway.password"], "actor": "alice",
     "was": "<64 hex>", "row": "<64 hex>", "entries": null,
     "chain": "<32 hex>", "prev": "<64 hex>", "kid": "<16 hex>", "mac": "<64 hex>"}

* ``op`` is the operation that wrote (``put``, ``remove``, ``import``, ``sync``,
  ``rotate``, ...); ``change`` what it did to the entry: ``added``, ``changed`` or
  ``removed`` (empty for a registry-wide record, whose ``entry`` is ``"*"``).
* ``fields`` names what changed: settings keys whose value differs and secret fields
  whose *decrypted* value differs (tokens are randomised, so comparing them would call
  every field changed); never a value.
* ``was`` and ``row`` are the :func:`row_digest` of the entry's sealed row before and
  after the change (``null``: absent). A digest is a hash of ciphertext and public
  settings, so it reveals nothing a store reader does not see already; it commits the
  record to the exact row, so a row rolled back to an older one of itself, or one
  changed behind securesession's back (even if overwritten since: the next record's
  ``was`` then differs), no longer matches the log.
* ``entries`` maps entry keys to their row digests in the two registry-wide records
  that change or fix many entries at once: the first record (operation ``start``,
  ``rev`` the registry revision when logging began), which lists every entry that
  predates the log, and a rotation (``since`` .. ``rev``), which lists every entry it
  re-encrypted and whose ``was`` is :func:`entries_digest` of the rows it found.
* ``mac`` is HMAC-SHA256, under a key derived from the master key whose id is ``kid``
  (label :data:`MAC_LABEL`), over the canonical JSON of every other member. Without the
  master key nobody can write a record that verifies.
* ``prev`` is the SHA-256 of the previous record's stored text, so each MAC also covers
  every record before it: removing, editing, reordering or replaying a record breaks
  the chain at that point. Records under a retired key are covered by the first later
  record whose key the ring still holds, so a key rotation never rewrites the log.
* ``chain`` is a random id chosen by the first record (``prev`` all zeros) and carried
  by every record: records copied from another registry's log do not link into this
  one, even under the same master key.

So :func:`verify` replays the log from its first record into the set of entries the
registry must hold, each with its row digest, and requires the store to hold exactly
that set: nothing missing, nothing extra, nothing different.

What the chain cannot prove is in docs/security.md ("The audit log").
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, Protocol

from ._actor import acting_as, default_actor
from ._exceptions import AuditError

__all__ = [
    "MAC_LABEL",
    "AuditLog",
    "AuditRecord",
    "AuditReport",
    "KeyLookup",
    "StoredRow",
    "acting_as",
    "default_actor",
    "entries_digest",
    "new_records",
    "parse",
    "row_digest",
    "start_record",
    "verify",
]

#: The label the MAC key is derived under (HMAC-SHA256(master key, label)): fixed, so
#: the MAC key is one per master key and never the encryption key itself.
MAC_LABEL: Final = b"securesession audit mac v1"
#: 2 added ``was``, ``row`` and ``entries`` (records of version 1 were never released:
#: a registry holding them starts a new log when its schema is migrated).
RECORD_VERSION: Final = 2
_MAC_CONTEXT: Final = b"securesession audit record v2\x00"
_ROW_CONTEXT: Final = b"securesession audit row v2\x00"
_ENTRIES_CONTEXT: Final = b"securesession audit entries v2\x00"
_GENESIS_PREV: Final = "0" * 64


class MacKey(Protocol):
    """What signs records: a master key (its id, and its derived subkeys)."""

    @property
    def key_id(self) -> str: ...

    def derive(self, label: bytes) -> bytes: ...


#: The key whose id a record names, if the caller holds it (a key ring's ``get``).
KeyLookup = Callable[[str], "MacKey | None"]


class SealedRow(Protocol):
    """What :func:`row_digest` reads of a stored entry (a ``SealedEntry``)."""

    @property
    def key(self) -> str: ...

    @property
    def revision(self) -> int: ...

    @property
    def settings(self) -> Mapping[str, Any]: ...

    @property
    def secrets(self) -> Mapping[str, str]: ...


def row_digest(row: SealedRow) -> str:
    """SHA-256 of *row*'s key, revision, settings and tokens, in canonical JSON: what a
    record commits to. The tokens are unique per sealing and the entry tag among them
    authenticates the rest, so two writes never give one digest; ``updated_at`` is left
    out (it is for display, and a store may round it)."""
    document = {
        "key": row.key,
        "rev": row.revision,
        "settings": row.settings,
        "secrets": row.secrets,
    }
    return hashlib.sha256(_ROW_CONTEXT + _canonical(document).encode("ascii")).hexdigest()


def entries_digest(digests: Mapping[str, str]) -> str:
    """One digest of many rows (entry key to :func:`row_digest`), whatever their order."""
    pairs = sorted(digests.items())
    text = json.dumps(pairs, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(_ENTRIES_CONTEXT + text.encode("ascii")).hexdigest()


class StoredRow(NamedTuple):
    """An entry as :func:`verify` compares it with the log: its revision (for messages)
    and its :func:`row_digest`."""

    revision: int
    digest: str


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One record of the log, as parsed from its stored text (see the module docstring)."""

    seq: int
    time: float
    operation: str
    change: str
    entry: str
    revision: int | None
    since: int | None
    fields: tuple[str, ...]
    actor: str
    #: The row digests before and after the change (``None``: absent).
    was: str | None
    row: str | None
    #: Entry key to row digest, in a ``start`` or a ``rotate`` record (else ``None``).
    entries: Mapping[str, str] | None
    chain: str
    prev: str
    key_id: str
    mac: str
    text: str

    @property
    def digest(self) -> str:
        """SHA-256 of the stored text: what the next record's ``prev`` must be."""
        return hashlib.sha256(self.text.encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        """The record for ``securesession log --json`` (no MAC, links or row digests:
        the log's authenticity is what ``--verify`` reports)."""
        return {
            "seq": self.seq,
            "time": self.time,
            "operation": self.operation,
            "change": self.change,
            "entry": self.entry,
            "revision": self.revision,
            "since": self.since,
            "fields": list(self.fields),
            "actor": self.actor,
            "key_id": self.key_id,
        }


@dataclass(frozen=True, slots=True)
class AuditLog:
    """What a store returns for verification, read in one snapshot: every record's
    ``(seq, text)``, the registry-wide revision, and each entry's revision and row
    digest."""

    rows: Sequence[tuple[int, str]]
    revision: int
    entries: Mapping[str, StoredRow]
    #: Whether the store was created or migrated and its first record is still to be
    #: written (by the next registry opened on it with a key and the right to write).
    start_pending: bool = False


@dataclass(frozen=True, slots=True)
class AuditReport:
    """The outcome of a successful :func:`verify`."""

    records: int
    #: Records whose MAC was checked (the others are under keys no longer held, and
    #: covered by a later checked record's chain link).
    authenticated: int
    #: The newest record's sequence number and digest: keep them elsewhere to detect
    #: a rollback of the whole registry (docs/security.md).
    head_seq: int
    head_digest: str
    #: Entries the first record lists: those that existed when logging began.
    predating: int
    #: The log's chain id: a log started again (or another registry's) has another.
    chain: str = ""
    #: When the log began (its first record's time): a log started again is younger.
    started: float = 0.0


def _canonical(value: Mapping[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _mac(mac_key: bytes, body: Mapping[str, Any]) -> str:
    message = _MAC_CONTEXT + _canonical(body).encode("ascii")
    return hmac.new(mac_key, message, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Pending:
    """A record to append, before its place in the chain is known."""

    operation: str
    entry: str
    revision: int | None
    since: int | None = None
    fields: Sequence[str] = ()
    change: str = ""
    was: str | None = None
    row: str | None = None
    entries: Mapping[str, str] | None = None


def new_records(
    pending: Iterable[Pending],
    last: tuple[int, str] | None,
    *,
    key: MacKey,
    actor: str,
    now: float,
    name: str = "",
) -> list[tuple[int, str]]:
    """The ``(seq, text)`` of records linking *pending* after *last* (the newest stored
    record's ``(seq, text)``), MAC'd under *key*.

    *last* ``None`` (an empty log) is refused with :class:`AuditError`: every log
    begins with :func:`start_record`, written when the store is created or migrated,
    so an empty log at a write means its records were removed; starting a new one here
    would make that removal, and whatever it hid, look like a fresh registry."""
    if last is None:
        raise AuditError(
            f"registry {name}: its audit log has no record, so this write would have none "
            "to follow: the log was removed (or could not be started when the registry was "
            "opened: reopen it); nothing was written (docs/operations.md, 'Verify the "
            "audit log')"
        )
    previous = parse(*last)
    return _link(pending, previous.chain, previous.seq, previous.digest, key, actor, now)


def start_record(
    revision: int, rows: Iterable[SealedRow], *, key: MacKey, actor: str, now: float
) -> tuple[int, str]:
    """The log's first record, ``(1, text)``: a new chain id, the registry *revision*
    logging begins at, and the row digest of every entry stored then (*rows*: none for
    a new registry, every entry of one upgraded from before the log)."""
    start = Pending("start", "*", revision, entries={row.key: row_digest(row) for row in rows})
    return _link([start], os.urandom(16).hex(), 0, _GENESIS_PREV, key, actor, now)[0]


def _link(
    items: Iterable[Pending],
    chain: str,
    seq: int,
    prev: str,
    key: MacKey,
    actor: str,
    now: float,
) -> list[tuple[int, str]]:
    mac_key = key.derive(MAC_LABEL)
    out: list[tuple[int, str]] = []
    for item in items:
        seq += 1
        body = {
            "v": RECORD_VERSION,
            "seq": seq,
            "time": round(now, 3),
            "op": item.operation,
            "change": item.change,
            "entry": item.entry,
            "rev": item.revision,
            "since": item.since,
            "fields": sorted(item.fields),
            "actor": actor,
            "was": item.was,
            "row": item.row,
            "entries": None if item.entries is None else dict(item.entries),
            "chain": chain,
            "prev": prev,
            "kid": key.key_id,
        }
        text = _canonical({**body, "mac": _mac(mac_key, body)})
        out.append((seq, text))
        prev = hashlib.sha256(text.encode()).hexdigest()
    return out


def parse(seq: int, text: str) -> AuditRecord:
    """The record stored as *text* under *seq*; :class:`AuditError` naming the
    sequence number if it is not a well-formed record (checks no MAC or link)."""
    where = f"audit record {seq}"
    try:
        doc = json.loads(text)
    except (TypeError, ValueError):
        raise AuditError(f"{where} is not valid JSON (edited in the store?)") from None
    if not isinstance(doc, dict) or "v" not in doc:
        raise AuditError(f"{where} is not an audit record (edited in the store?)")
    if doc["v"] != RECORD_VERSION:
        raise AuditError(f"{where} has record version {doc['v']!r}, not {RECORD_VERSION}")
    if set(doc) != _FIELDS:
        raise AuditError(f"{where} is not an audit record (edited in the store?)")
    try:
        values = {member.attribute: member.parse(doc[member.name]) for member in _MEMBERS}
    except (TypeError, ValueError):
        raise AuditError(f"{where} has a member of the wrong type (edited in the store?)") from None
    record = AuditRecord(**values, text=text)
    if record.seq != seq:
        raise AuditError(f"{where} says it is record {record.seq} (moved in the store?)")
    if _canonical(doc) != text:
        raise AuditError(f"{where} is not in canonical form (edited in the store?)")
    return record


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("not an integer")
    return value


def _optional_int(value: Any) -> int | None:
    return None if value is None else _int(value)


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("not a string")
    return value


def _optional_str(value: Any) -> str | None:
    return None if value is None else _str(value)


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(_str(name) for name in value)


def _optional_digests(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TypeError("not an object")
    return {_str(key): _str(digest) for key, digest in value.items()}


class _Member(NamedTuple):
    """A member of a stored record: its JSON name, the :class:`AuditRecord` attribute
    :func:`parse` sets from it, and the converter that checks and converts its value
    (raising :class:`TypeError` or :class:`ValueError` on one of the wrong type)."""

    name: str
    attribute: str
    parse: Callable[[Any], Any]


#: Every member of a record but ``v`` (which :func:`parse` checks first, and which
#: :class:`AuditRecord` does not keep).
_MEMBERS: Final = (
    _Member("seq", "seq", _int),
    _Member("time", "time", float),
    _Member("op", "operation", _str),
    _Member("change", "change", _str),
    _Member("entry", "entry", _str),
    _Member("rev", "revision", _optional_int),
    _Member("since", "since", _optional_int),
    _Member("fields", "fields", _strings),
    _Member("actor", "actor", _str),
    _Member("was", "was", _optional_str),
    _Member("row", "row", _optional_str),
    _Member("entries", "entries", _optional_digests),
    _Member("chain", "chain", _str),
    _Member("prev", "prev", _str),
    _Member("kid", "key_id", _str),
    _Member("mac", "mac", _str),
)
#: The members of a stored record: exactly these, no more and no fewer.
_FIELDS: Final = frozenset({"v", *(member.name for member in _MEMBERS)})


def records(log: AuditLog) -> Iterator[AuditRecord]:
    """Every record of *log*, parsed (not verified), oldest first."""
    for seq, text in log.rows:
        yield parse(seq, text)


class _Logged(NamedTuple):
    """An entry as the log has it so far: its row digest, and the record that says so."""

    digest: str
    seq: int


def verify(log: AuditLog, key_of: KeyLookup, *, name: str) -> AuditReport:
    """Check the whole log of registry *name*, or raise :class:`AuditError` naming the
    first record (or entry) at fault.

    The chain: sequence numbers 1, 2, 3... without a gap; record 1 the log's start;
    one chain id; each ``prev`` the digest of the record before; each MAC whose key
    *key_of* holds; the newest record's MAC checked (else nothing after the last
    checked one would be authenticated). The registry: the log replayed from the
    entries record 1 lists, each record's ``was`` the row the log had for its entry
    (a change made behind securesession's back before it shows there), must give
    exactly the entries stored, row digest for row digest, and the registry's revision
    must be the newest one logged."""
    where = f"registry {name}: audit log"
    if not log.rows:
        raise AuditError(_empty_log_message(log, where))
    previous: AuditRecord | None = None
    authenticated = 0
    unchecked_since: int | None = None
    mac_keys: dict[str, bytes | None] = {}
    logged: dict[str, _Logged] = {}
    predating = 0
    newest_revision = 0
    started = 0.0
    for record in records(log):
        expected_seq = 1 if previous is None else previous.seq + 1
        if record.seq != expected_seq:
            raise AuditError(
                f"{where}: record {expected_seq} is missing (the next one stored is "
                f"{record.seq}): records were removed"
            )
        if previous is None:
            if (
                record.operation != "start"
                or record.prev != _GENESIS_PREV
                or record.entries is None
                or record.revision is None
            ):
                raise AuditError(
                    f"{where}: record 1 is not the start of a log (its first records "
                    "were removed, or it was replaced)"
                )
            logged = {key: _Logged(digest, 1) for key, digest in record.entries.items()}
            predating, started = len(logged), record.time
        else:
            if record.chain != previous.chain:
                raise AuditError(
                    f"{where}: record {record.seq} belongs to another registry's log "
                    "(its chain id differs)"
                )
            if record.prev != previous.digest:
                raise AuditError(
                    f"{where}: record {record.seq} does not follow record {previous.seq} "
                    "(one of them was edited, replaced or moved)"
                )
            if record.operation == "start":
                raise AuditError(f"{where}: record {record.seq} starts a second log")
        if record.key_id not in mac_keys:
            key = key_of(record.key_id)
            mac_keys[record.key_id] = None if key is None else key.derive(MAC_LABEL)
        mac_key = mac_keys[record.key_id]
        if mac_key is not None:
            if not hmac.compare_digest(record.mac, _mac(mac_key, _body(record))):
                raise AuditError(
                    f"{where}: record {record.seq} failed authentication (edited in the store?)"
                )
            authenticated += 1
            unchecked_since = None
        elif unchecked_since is None:
            unchecked_since = record.seq
        if previous is not None:
            _replay(record, logged, where)
        if record.revision is not None:
            newest_revision = max(newest_revision, record.revision)
        previous = record
    assert previous is not None  # log.rows is not empty
    if unchecked_since is not None:
        raise AuditError(
            f"{where}: records {unchecked_since} to {previous.seq} are under key ids this "
            "key ring does not hold, so they cannot be authenticated; verify with the key "
            f"ring that holds key id {previous.key_id}"
        )
    if log.revision != newest_revision:
        raise AuditError(
            f"{where}: the registry is at revision {log.revision}, but its newest logged "
            f"change is revision {newest_revision}: "
            + (
                "records at the end were removed, or the registry was changed outside securesession"
                if log.revision > newest_revision
                else "the registry was rolled back (restored from a backup?)"
            )
        )
    _compare(log.entries, logged, where)
    return AuditReport(
        records=previous.seq,
        authenticated=authenticated,
        head_seq=previous.seq,
        head_digest=previous.digest,
        predating=predating,
        chain=previous.chain,
        started=started,
    )


def _replay(record: AuditRecord, logged: dict[str, _Logged], where: str) -> None:
    """Apply *record* (an authentic link of the chain) to *logged*, the entries as the
    log has them, after checking that it found what the log has."""
    if record.entry != "*":
        prior = logged.get(record.entry)
        if record.was != (None if prior is None else prior.digest):
            raise AuditError(
                f"{where}: record {record.seq} ({record.operation} of {record.entry}) found "
                + (
                    "an entry the log does not have: it was added outside securesession"
                    if prior is None
                    else "no entry: it was removed outside securesession"
                    if record.was is None
                    else f"a row other than the one record {prior.seq} logs: it was "
                    "changed or rolled back outside securesession"
                )
                + " before that record"
            )
        if record.row is None:
            logged.pop(record.entry, None)
        else:
            logged[record.entry] = _Logged(record.row, record.seq)
    elif record.entries is not None:  # a rotation: every entry at once
        found = entries_digest({key: entry.digest for key, entry in logged.items()})
        if record.was != found:
            raise AuditError(
                f"{where}: record {record.seq} ({record.operation}) found entries other "
                "than the log has: one was added, removed, changed or rolled back outside "
                "securesession before that record"
            )
        logged.clear()
        logged.update((key, _Logged(digest, record.seq)) for key, digest in record.entries.items())


def _compare(stored: Mapping[str, StoredRow], logged: Mapping[str, _Logged], where: str) -> None:
    """The entries stored must be exactly those the log has, row for row."""
    for key in sorted(stored.keys() | logged.keys()):
        row, entry = stored.get(key), logged.get(key)
        if entry is None:
            assert row is not None
            raise AuditError(
                f"{where}: entry {key} (revision {row.revision}) is in the registry but "
                "not in the log: it was added (or a removed entry put back) outside "
                "securesession"
            )
        if row is None:
            raise AuditError(
                f"{where}: entry {key} is missing, but record {entry.seq} logs it: it was "
                "removed outside securesession"
            )
        if row.digest != entry.digest:
            raise AuditError(
                f"{where}: entry {key} (revision {row.revision}) is not the row record "
                f"{entry.seq} logs: it was changed or rolled back outside securesession"
            )


def _empty_log_message(log: AuditLog, where: str) -> str:
    """A store with no record: its first record is still to be written, or was removed
    (a registry opened by securesession with its key always starts its log)."""
    if log.start_pending:
        return (
            f"{where} has not started: the registry was created or upgraded by a process "
            "that could not write its first record (a read-only role?); open it once with "
            "a role that may write, then verify again"
        )
    return (
        f"{where} is empty, but every registry securesession opens with its key starts "
        "its log at once: its records were removed"
    )


def _body(record: AuditRecord) -> dict[str, Any]:
    """The members the MAC covers: the stored record without its MAC."""
    body: dict[str, Any] = json.loads(record.text)
    del body["mac"]
    return body
