"""The audit log: one authenticated, hash-chained record per change of a registry.

Every write through :class:`~securesession.registry.EncryptedRegistry` (put, remove,
import, sync, rotate, ...) appends its records in the same transaction as the change,
so a change and its record commit together or not at all. A record says *what* and
*who*, never a value::

    {"v": 1, "seq": 7, "time": 1714564803.123, "op": "put", "change": "changed",
     "entry": "https://gw.example.com:443/payments", "rev": 42, "since": null,
     "fields": ["description", "gateway.password"], "actor": "alice",
     "chain": "<32 hex>", "prev": "<64 hex>", "kid": "<16 hex>", "mac": "<64 hex>"}

* ``op`` is the operation that wrote (``put``, ``remove``, ``import``, ``sync``,
  ``rotate``, ...); ``change`` what it did to the entry: ``added``, ``changed`` or
  ``removed`` (empty for a registry-wide record, whose ``entry`` is ``"*"``).
* ``fields`` names what changed: settings keys whose value differs and secret fields
  whose *decrypted* value differs (tokens are randomised, so comparing them would call
  every field changed); never a value.
* ``mac`` is HMAC-SHA256, under a key derived from the master key whose id is ``kid``
  (label :data:`MAC_LABEL`), over the canonical JSON of every other member. Without the
  master key nobody can write a record that verifies.
* ``prev`` is the SHA-256 of the previous record's stored text, so each MAC also covers
  every record before it: removing, editing, reordering or replaying a record breaks
  the chain at that point. Records under a retired key are covered by the first later
  record whose key the ring still holds, so a key rotation never rewrites the log.
* ``chain`` is a random id chosen by the first record (operation ``start``, ``prev``
  all zeros) and carried by every record: records copied from another registry's log
  do not link into this one, even under the same master key.
* ``rev`` is the registry revision of the change (``since`` .. ``rev`` for a rotation,
  which gives every entry a new one), so :func:`verify` can check that the registry's
  current revision, and each entry's, has its record: what truncating the newest
  records, or a change made behind securesession's back, leaves without one.

What the chain cannot prove is in docs/security.md ("The audit log").
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import hmac
import json
import os
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Final, Protocol

from ._exceptions import AuditError

__all__ = [
    "MAC_LABEL",
    "AuditLog",
    "AuditRecord",
    "AuditReport",
    "KeyLookup",
    "acting_as",
    "default_actor",
    "new_records",
    "parse",
    "verify",
]

#: The label the MAC key is derived under (HMAC-SHA256(master key, label)): fixed, so
#: the MAC key is one per master key and never the encryption key itself.
MAC_LABEL: Final = b"securesession audit mac v1"
RECORD_VERSION: Final = 1
_MAC_CONTEXT: Final = b"securesession audit record v1\x00"
_GENESIS_PREV: Final = "0" * 64
_MAX_ACTOR: Final = 200
_FIELDS: Final = frozenset(
    {
        "v",
        "seq",
        "time",
        "op",
        "change",
        "entry",
        "rev",
        "since",
        "fields",
        "actor",
        "chain",
        "prev",
        "kid",
    }
)


class MacKey(Protocol):
    """What signs records: a master key (its id, and its derived subkeys)."""

    @property
    def key_id(self) -> str: ...

    def derive(self, label: bytes) -> bytes: ...


#: The key whose id a record names, if the caller holds it (a key ring's ``get``).
KeyLookup = Callable[[str], "MacKey | None"]


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
        """The record for ``securesession log --json`` (no MAC or links: the log's
        authenticity is what ``--verify`` reports)."""
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
    ``(seq, text)``, the registry-wide revision, and each entry's revision."""

    rows: Sequence[tuple[int, str]]
    revision: int
    entries: Mapping[str, int]
    #: The registry revision when logging began: 0 for a registry created with the log,
    #: the revision it had when a registry from before the log was upgraded.
    logged_from: int


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
    #: Entries whose revision predates the log (written before it started).
    predating: int


#: The actor registries opened in this context name (``securesession --actor``).
_ACTOR: ContextVar[str | None] = ContextVar("securesession_actor", default=None)


@contextlib.contextmanager
def acting_as(actor: str | None) -> Iterator[None]:
    """Registries opened inside the block (in this thread or task) write audit records
    naming *actor* unless given another; ``None`` changes nothing. The CLI wraps each
    command in it for its global ``--actor`` option."""
    token = _ACTOR.set(_ACTOR.get() if actor is None else check_actor(actor))
    try:
        yield
    finally:
        _ACTOR.reset(token)


def default_actor() -> str:
    """Who is writing, when the caller does not say: the actor of :func:`acting_as`,
    else the OS user name."""
    chosen = _ACTOR.get()
    if chosen is not None:
        return chosen
    try:
        return getpass.getuser()
    except Exception:  # no user database entry (containers): not worth failing a write
        return f"uid:{os.getuid()}" if hasattr(os, "getuid") else "unknown"


def check_actor(actor: str) -> str:
    """*actor* if it is a short, printable name (it is shown in logs and listings)."""
    if (
        not isinstance(actor, str)
        or not 0 < len(actor) <= _MAX_ACTOR
        or any(unicodedata.category(char).startswith("C") for char in actor)
    ):
        raise ValueError(
            f"an actor is a printable name of 1 to {_MAX_ACTOR} characters, no control characters"
        )
    return actor


def _canonical(value: Mapping[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _mac(key: MacKey, body: Mapping[str, Any]) -> str:
    message = _MAC_CONTEXT + _canonical(body).encode("ascii")
    return hmac.new(key.derive(MAC_LABEL), message, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Pending:
    """A record to append, before its place in the chain is known."""

    operation: str
    entry: str
    revision: int | None
    since: int | None = None
    fields: Sequence[str] = ()
    change: str = ""


def new_records(
    pending: Iterable[Pending],
    last: tuple[int, str] | None,
    *,
    key: MacKey,
    actor: str,
    now: float,
) -> list[tuple[int, str]]:
    """The ``(seq, text)`` of records linking *pending* after *last* (the newest stored
    record's ``(seq, text)``, ``None`` for an empty log), MAC'd under *key*. An empty
    log first gets its ``start`` record, which picks the chain id; its ``rev`` is the
    registry revision before the first change it logs."""
    items = list(pending)
    out: list[tuple[int, str]] = []
    if last is None:
        first_revision = next(
            (_first_revision(item) for item in items if item.revision is not None), None
        )
        start = Pending(
            "start", "*", None if first_revision is None else first_revision - 1, None, ()
        )
        chain, seq, prev = os.urandom(16).hex(), 0, _GENESIS_PREV
        items.insert(0, start)
    else:
        previous = parse(*last)
        chain, seq, prev = previous.chain, previous.seq, previous.digest
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
            "chain": chain,
            "prev": prev,
            "kid": key.key_id,
        }
        text = _canonical({**body, "mac": _mac(key, body)})
        out.append((seq, text))
        prev = hashlib.sha256(text.encode()).hexdigest()
    return out


def _first_revision(item: Pending) -> int | None:
    return item.since if item.since is not None else item.revision


def parse(seq: int, text: str) -> AuditRecord:
    """The record stored as *text* under *seq*; :class:`AuditError` naming the
    sequence number if it is not a well-formed record (checks no MAC or link)."""
    where = f"audit record {seq}"
    try:
        doc = json.loads(text)
    except (TypeError, ValueError):
        raise AuditError(f"{where} is not valid JSON (edited in the store?)") from None
    if not isinstance(doc, dict) or set(doc) != _FIELDS | {"mac"}:
        raise AuditError(f"{where} is not an audit record (edited in the store?)")
    if doc["v"] != RECORD_VERSION:
        raise AuditError(f"{where} has record version {doc['v']!r}, not {RECORD_VERSION}")
    try:
        record = AuditRecord(
            seq=_int(doc["seq"]),
            time=float(doc["time"]),
            operation=_str(doc["op"]),
            change=_str(doc["change"]),
            entry=_str(doc["entry"]),
            revision=_optional_int(doc["rev"]),
            since=_optional_int(doc["since"]),
            fields=tuple(_str(name) for name in doc["fields"]),
            actor=_str(doc["actor"]),
            chain=_str(doc["chain"]),
            prev=_str(doc["prev"]),
            key_id=_str(doc["kid"]),
            mac=_str(doc["mac"]),
            text=text,
        )
    except (TypeError, ValueError):
        raise AuditError(f"{where} has a member of the wrong type (edited in the store?)") from None
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


def records(log: AuditLog) -> Iterator[AuditRecord]:
    """Every record of *log*, parsed (not verified), oldest first."""
    for seq, text in log.rows:
        yield parse(seq, text)


def verify(log: AuditLog, key_of: KeyLookup, *, name: str) -> AuditReport:
    """Check the whole log of registry *name*, or raise :class:`AuditError` naming the
    first record at fault: sequence numbers 1, 2, 3... without a gap; one chain id;
    each ``prev`` the digest of the record before; each MAC whose key *key_of* holds;
    the newest record's MAC checked (else nothing after the last checked one would be
    authenticated); the registry's revision and each entry's revision logged."""
    where = f"registry {name}: audit log"
    previous: AuditRecord | None = None
    authenticated = 0
    unchecked_since: int | None = None
    logged: dict[str, int] = {}  # entry -> newest logged revision of it
    rotations: list[tuple[int, int]] = []
    newest_revision: int | None = None
    for record in records(log):
        expected_seq = 1 if previous is None else previous.seq + 1
        if record.seq != expected_seq:
            raise AuditError(
                f"{where}: record {expected_seq} is missing (the next one stored is "
                f"{record.seq}): records were removed"
            )
        if previous is None:
            if record.operation != "start" or record.prev != _GENESIS_PREV:
                raise AuditError(f"{where}: record 1 is not the start of a log")
            if record.revision not in (None, log.logged_from):
                raise AuditError(
                    f"{where}: logging began at revision {log.logged_from}, but record 1 "
                    f"starts at revision {record.revision}: the changes between have no "
                    "record (made outside securesession?)"
                )
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
        key = key_of(record.key_id)
        if key is not None:
            if not hmac.compare_digest(record.mac, _mac(key, _body(record))):
                raise AuditError(
                    f"{where}: record {record.seq} failed authentication (edited in the store?)"
                )
            authenticated += 1
            unchecked_since = None
        elif unchecked_since is None:
            unchecked_since = record.seq
        if record.revision is not None:
            newest_revision = record.revision
            if record.entry == "*" and record.since is not None:
                rotations.append((record.since, record.revision))
            elif record.entry != "*":
                logged[record.entry] = record.revision
        previous = record
    if previous is None:
        return _empty_log(log, where)
    if unchecked_since is not None:
        raise AuditError(
            f"{where}: records {unchecked_since} to {previous.seq} are under key ids this "
            "key ring does not hold, so they cannot be authenticated; verify with the key "
            f"ring that holds key id {previous.key_id}"
        )
    if newest_revision is not None and log.revision != newest_revision:
        raise AuditError(
            f"{where}: the registry is at revision {log.revision}, but its newest logged "
            f"change is revision {newest_revision}: "
            + (
                "records at the end were removed, or the registry was changed outside securesession"
                if log.revision > newest_revision
                else "the registry was rolled back (restored from a backup?)"
            )
        )
    predating = 0
    for entry, revision in sorted(log.entries.items()):
        if revision <= log.logged_from:
            predating += 1
            continue
        if logged.get(entry) == revision or any(lo <= revision <= hi for lo, hi in rotations):
            continue
        raise AuditError(
            f"{where}: entry {entry} is at revision {revision}, which no record logs: it "
            "was changed outside securesession, or its record was removed"
        )
    return AuditReport(
        records=previous.seq,
        authenticated=authenticated,
        head_seq=previous.seq,
        head_digest=previous.digest,
        predating=predating,
    )


def _empty_log(log: AuditLog, where: str) -> AuditReport:
    """A log with no record is fine only for a registry nobody wrote to since it began
    logging; entries that exist predate the log (an upgraded registry)."""
    if log.revision != log.logged_from:
        raise AuditError(
            f"{where} is empty, but the registry changed since logging began (revision "
            f"{log.logged_from} to {log.revision}): its records were removed, or it was "
            "changed outside securesession"
        )
    return AuditReport(0, 0, 0, "", len(log.entries))


def _body(record: AuditRecord) -> dict[str, Any]:
    """The members the MAC covers: the stored record without its MAC."""
    body: dict[str, Any] = json.loads(record.text)
    del body["mac"]
    return body
