"""``vault+https://host:8200/<kv-mount>/<prefix>``: the registry in a Vault/OpenBao KV v2 engine.

Layout under ``<kv-mount>/<prefix>/`` (every document a KV v2 secret)::

    index                     the commit point, written only with check-and-set:
                              {format, key_id, generation, revision,
                               entries: {entry key: {revision, version, updated_at}}}
    g00000002-1f2e3d4c/       the current generation: one document per entry,
        <base64url(key)>      {format, key, revision, settings, secrets}

Entry documents hold the public settings and the ciphertext tokens of the secrets
(never a clear secret), so a reader of the KV engine without the master key learns
URLs and header names, nothing secret.

**Writes.** A put writes the entry document (a new KV version), then replaces the
index with check-and-set (``cas``) on the version it read, pointing the entry at
that exact document version under the next registry-wide revision. Concurrent
writers, in this process or any other, never lose an update: the one whose
check-and-set fails reads the index again and retries. A crash between the two
steps leaves an unreferenced document version and the old index: nothing changed.
A remove drops the entry from the index the same way, then destroys the document
versions it referenced. Every change bumps the revision, as in the SQL backends.

**Rotation** (one transaction, though KV has none): every entry is re-encrypted
into a *new* generation directory, then one check-and-set on the index switches
``generation``, ``key_id`` and every entry pointer at once. A crash before that
write leaves the old index, the old generation and the old key in force (the half
written generation is unreferenced); after it, only the new key works. Exactly one
key opens the registry at any instant. The old generation, and any abandoned one,
is deleted afterwards (by the next successful rotation, if this one is cut short).

**Lookups** never touch the network while the local index is fresh: ``find`` probes
an in-memory ``key -> revision`` map, one dict probe per path segment. The map is
refreshed when older than ``refresh`` seconds (default 2; one small metadata read,
plus one index read if it changed) and after every write through this object.
Staleness bound: changes made through another process or host become visible
here at most ``refresh`` seconds (plus one request) later; changes through this
object at once. A stale map is never inconsistent: it names exact document
versions, so a lookup and the load that follows always agree.

**Size**: the index holds about 100 bytes per entry and is rewritten on every
change, so one prefix suits up to several thousand entries (Raft storage refuses
values over ``max_entry_size``, 1 MiB by default); split larger registries.

**Last changed**: an entry's ``updated_at`` is the KV ``created_time`` of the
document version that holds it (kept across rotations).

URL options (query string): ``refresh`` (seconds); and, for the connection that
:func:`open_vault_registry` builds when it is given none, ``namespace``, ``timeout``
(seconds) and ``ca`` (CA bundle path). Credentials never go in the URL: see
:class:`securesession._vault_connection.VaultConnection` for where they come from.
"""

from __future__ import annotations

import base64
import logging
import os
import random
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, Final, NamedTuple
from urllib.parse import parse_qs, urlsplit

from .._audit import AuditLog
from .._crypto import KeyRing, MasterKey
from .._exceptions import (
    ConfigurationError,
    DecryptionError,
    RegistryCorruptError,
    RegistryError,
    SchemaVersionError,
    VaultError,
)
from .._vault_connection import VaultConnection, check_loose_options
from . import _base as base

__all__ = ["VaultStore", "open_vault_registry", "parse_vault_url"]

logger = logging.getLogger("securesession")

#: Version of the index and entry document layout.
DOC_FORMAT: Final = 1
#: Default seconds between index freshness checks (the cross-process staleness bound).
DEFAULT_REFRESH: Final = 2.0
_DEFAULT_PORT: Final = 8200
_SEGMENT: Final = re.compile(r"[A-Za-z0-9_.-]+")
_GENERATION: Final = re.compile(r"g(\d{8})-[0-9a-f]{8}")
_TIME: Final = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)")
# Check-and-set retries: every round lets at least one writer through, so this
# bounds the number of concurrent writers we tolerate before giving up.
_MAX_ATTEMPTS: Final = 30
_BACKOFF_S: Final = 0.005
_BACKOFF_MAX_S: Final = 0.2
# After a failed freshness check, lookups fail fast for this long instead of each
# waiting for the engine's timeout.
_RETRY_AFTER_S: Final = 1.0


@dataclass(frozen=True, slots=True)
class VaultTarget:
    """A parsed ``vault+https://`` registry URL."""

    engine_url: str
    mount: str
    prefix: str
    refresh: float
    #: What the URL says of the connection (``namespace``, ``timeout``, ``ca`` as
    #: ``verify``): keywords of :class:`VaultConnection`, only those given.
    connection_options: Mapping[str, Any]

    @property
    def name(self) -> str:
        return f"vault+{self.engine_url}/{self.mount}/{self.prefix}"


def parse_vault_url(url: str) -> VaultTarget:
    """Split ``vault+https://host:8200/<kv-mount>/<prefix>?options`` into its parts."""
    usage = "use vault+https://host:8200/<kv-mount>/<prefix> (vault+http:// on loopback only)"
    try:
        parts = urlsplit(url)
        hostname, port = parts.hostname, parts.port
    except ValueError:
        raise ConfigurationError(f"vault registry URL is not valid; {usage}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("vault+https", "vault+http") or not hostname:
        raise ConfigurationError(f"vault registry URL needs a scheme and host; {usage}")
    if parts.username is not None or parts.password is not None:
        raise ConfigurationError(
            "vault registry URL must not carry credentials; use VAULT_TOKEN, an AppRole "
            "or a token file"
        )
    segments = [segment for segment in parts.path.split("/") if segment]
    if len(segments) < 2:
        raise ConfigurationError(f"vault registry URL needs a KV mount and a prefix; {usage}")
    for segment in segments:
        if not _SEGMENT.fullmatch(segment) or segment in (".", ".."):
            raise ConfigurationError(
                f"vault registry URL path segment {segment!r} is not allowed "
                "(letters, digits, '_', '-', '.')"
            )
    options = parse_qs(parts.query, keep_blank_values=True, strict_parsing=False)
    unknown = sorted(set(options) - {"namespace", "refresh", "timeout", "ca"})
    if unknown:
        raise ConfigurationError(f"vault registry URL: unknown option(s) {', '.join(unknown)}")

    def option(name: str) -> str | None:
        values = options.get(name)
        return values[-1] if values else None

    def seconds(name: str) -> float | None:
        text = option(name)
        if text is None:
            return None
        try:
            value = float(text)
        except ValueError:
            raise ConfigurationError(f"vault registry URL: {name} must be seconds") from None
        if not value >= 0:
            raise ConfigurationError(f"vault registry URL: {name} must be >= 0")
        return value

    netloc = parts.netloc if port is not None else f"{parts.netloc}:{_DEFAULT_PORT}"
    refresh = seconds("refresh")
    given = {
        "namespace": option("namespace"),
        "timeout": seconds("timeout"),
        "verify": option("ca"),
    }
    return VaultTarget(
        engine_url=f"{scheme.removeprefix('vault+')}://{netloc}",
        mount=segments[0],
        prefix="/".join(segments[1:]),
        refresh=DEFAULT_REFRESH if refresh is None else refresh,
        # Empty (and a timeout of 0) mean the connection's default.
        connection_options={name: value for name, value in given.items() if value},
    )


# -- the index -----------------------------------------------------------------------


class _Row(NamedTuple):
    revision: int
    version: int  # the KV version of the entry document holding this revision
    updated_at: float


class _Index(NamedTuple):
    key_id: str
    generation: str
    revision: int
    rows: Mapping[str, _Row]
    kv_version: int  # of the index document itself: the check-and-set token
    #: What batches stored under a name (:meth:`VaultStore.state`); absent in old indexes.
    states: Mapping[str, str]

    def to_doc(self) -> dict[str, Any]:
        return {
            "states": dict(self.states),
            "format": DOC_FORMAT,
            "key_id": self.key_id,
            "generation": self.generation,
            "revision": self.revision,
            "entries": {
                key: {
                    "revision": row.revision,
                    "version": row.version,
                    "updated_at": row.updated_at,
                }
                for key, row in self.rows.items()
            },
        }

    @classmethod
    def from_doc(cls, doc: Any, kv_version: int, where: str) -> _Index:
        if not isinstance(doc, dict):
            raise RegistryCorruptError(f"{where}: the index is not a JSON object")
        doc_format = doc.get("format")
        if isinstance(doc_format, int) and doc_format > DOC_FORMAT:
            raise SchemaVersionError(
                f"{where} has format {doc_format}, newer than the {DOC_FORMAT} this "
                "securesession understands; upgrade securesession"
            )
        try:
            rows = {
                str(key): _Row(int(row["revision"]), int(row["version"]), float(row["updated_at"]))
                for key, row in doc["entries"].items()
            }
            states = doc.get("states", {})
            if not isinstance(states, dict) or not all(
                isinstance(value, str) for value in states.values()
            ):
                raise TypeError("states")
            index = cls(
                str(doc["key_id"]),
                str(doc["generation"]),
                int(doc["revision"]),
                rows,
                kv_version,
                {str(name): value for name, value in states.items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            raise RegistryCorruptError(
                f"{where}: the index is not a valid registry index"
            ) from None
        if doc_format != DOC_FORMAT or not _GENERATION.fullmatch(index.generation):
            raise RegistryCorruptError(f"{where}: the index is not a valid registry index")
        return index


def _revision_in(index: _Index, key: str) -> int | None:
    row = index.rows.get(key)
    return None if row is None else row.revision


def _new_generation(number: int) -> str:
    return f"g{number:08d}-{os.urandom(4).hex()}"


def _parse_time(text: Any) -> float:
    """A KV ``created_time`` (RFC 3339, nanoseconds) as a Unix timestamp."""
    match = _TIME.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        return base.now()  # display only; never worth failing a write for
    zone = "+00:00" if match[3] == "Z" else match[3]
    fraction = float("0." + match[2]) if match[2] else 0.0
    return datetime.fromisoformat(match[1] + zone).timestamp() + fraction


def _backoff(attempt: int) -> None:
    ceiling = min(_BACKOFF_MAX_S, _BACKOFF_S * 2**attempt)
    time.sleep(random.uniform(0, ceiling))  # noqa: S311 (jitter, not cryptography)


# -- where the documents are -------------------------------------------------------------


class _Place(NamedTuple):
    """Where a registry's documents are: under *prefix* in the KV v2 engine mounted at
    *mount*, reached through *connection* (the layout of the module docstring).

    Paths are relative to the mount, as KV requests take them; each request method
    names its policy path and the capability a policy must grant on it, and *action*
    completes the error's "cannot ...".
    """

    connection: VaultConnection
    mount: str
    prefix: str

    @property
    def index_doc(self) -> str:
        """The index document."""
        return f"{self.prefix}/index"

    def generation(self, generation: str) -> str:
        """The directory of one generation of entry documents."""
        return f"{self.prefix}/{generation}"

    def doc(self, generation: str, key: str) -> str:
        """The document of entry *key* in *generation*."""
        encoded = base64.urlsafe_b64encode(key.encode()).decode("ascii").rstrip("=")
        return f"{self.prefix}/{generation}/{encoded}"

    def data(self, rel: str) -> str:
        """The policy path of the document at *rel* (reads and writes)."""
        return f"{self.mount}/data/{rel}"

    def metadata(self, rel: str) -> str:
        """The policy path of the metadata at *rel* (versions, listings, deletion)."""
        return f"{self.mount}/metadata/{rel}"

    def read(self, rel: str, *, action: str, version: int | None = None) -> Any:
        """The document at *rel* (its newest version, or *version*); ``None`` if none."""
        return self.connection.call_or_none(
            lambda client: client.secrets.kv.v2.read_secret_version(
                path=rel, version=version, mount_point=self.mount, raise_on_deleted_version=True
            ),
            action=action,
            path=self.data(rel),
            capability="read",
        )

    def write(self, rel: str, doc: dict[str, Any], *, cas: int, action: str) -> Any:
        """Write *doc* at *rel* if its current version is *cas* (0: none yet); a
        :class:`VaultError` with reason ``conflict`` if not."""
        return self.connection.call(
            lambda client: client.secrets.kv.v2.create_or_update_secret(
                path=rel, secret=doc, cas=cas, mount_point=self.mount
            ),
            action=action,
            path=self.data(rel),
            capability="create" if cas == 0 else "update",
        )

    def read_metadata(self, rel: str, *, action: str) -> Any:
        """The KV metadata of the document at *rel* (its versions), ``None`` if none."""
        return self.connection.call_or_none(
            lambda client: client.secrets.kv.v2.read_secret_metadata(
                path=rel, mount_point=self.mount
            ),
            action=action,
            path=self.metadata(rel),
            capability="read",
        )

    def names(self, rel: str, *, action: str) -> Any:
        """The names under *rel* (a directory's end in ``/``), ``None`` if nothing is."""
        return self.connection.call_or_none(
            lambda client: client.secrets.kv.v2.list_secrets(path=rel, mount_point=self.mount),
            action=action,
            path=self.metadata(rel),
            capability="list",
        )

    def delete(self, rel: str, *, action: str) -> None:
        """Delete the document at *rel*: every version, and its metadata."""
        self.connection.call(
            lambda client: client.secrets.kv.v2.delete_metadata_and_all_versions(
                path=rel, mount_point=self.mount
            ),
            action=action,
            path=self.metadata(rel),
            capability="delete",
        )

    def destroy(self, rel: str, versions: list[int], *, action: str) -> None:
        """Destroy *versions* of the document at *rel* (their data, for good)."""
        self.connection.call(
            lambda client: client.secrets.kv.v2.destroy_secret_versions(
                path=rel, versions=versions, mount_point=self.mount
            ),
            action=action,
            path=f"{self.mount}/destroy/{rel}",
            capability="update",
        )


# -- the store ---------------------------------------------------------------------------


class VaultStore(base.BatchesOfOne):
    """Sealed entries in a KV v2 engine, under one prefix. Thread-safe."""

    def __init__(
        self,
        connection: VaultConnection,
        mount: str,
        prefix: str,
        *,
        name: str,
        refresh: float = DEFAULT_REFRESH,
        owns_connection: bool = True,
    ) -> None:
        self._place = _Place(connection, mount, prefix)
        self._name = name
        self._refresh = refresh
        self._owns_connection = owns_connection
        self._index: _Index | None = None
        self._fresh_until = 0.0  # monotonic
        self._retry_at = 0.0
        self._last_error: VaultError | None = None
        self._key_id: str | None = None
        self._install_lock = threading.Lock()
        self._poll_lock = threading.Lock()
        # Writers in this process take turns, so they do not make each other's
        # check-and-set fail; other processes are kept honest by check-and-set.
        self._write_lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"<VaultStore {self._name}>"

    # -- KV primitives -------------------------------------------------------------------

    def _kv(self) -> _Place:
        if self._closed:
            raise RegistryError(f"registry {self._name} is closed")
        return self._place

    def _fetch_index(self) -> _Index | None:
        """The newest index from the engine (``None`` for a new registry)."""
        kv = self._kv()
        response = kv.read(kv.index_doc, action=f"read the index of registry {self._name}")
        if response is None:
            return None
        data = response["data"]
        return _Index.from_doc(
            data["data"], int(data["metadata"]["version"]), f"registry {self._name}"
        )

    def _require(self, index: _Index | None) -> _Index:
        if index is None:
            path = self._place.data(self._place.index_doc)
            raise RegistryCorruptError(
                f"registry {self._name}: its index document {path!r} is missing (deleted "
                "outside securesession?)"
            )
        return index

    def _install(self, index: _Index) -> _Index:
        """Make *index* the local one unless a newer one is already there."""
        with self._install_lock:
            current = self._index
            if current is None or index.kv_version >= current.kv_version:
                self._index = current = index
                self._fresh_until = time.monotonic() + self._refresh
                self._last_error = None
            return current

    def _write_index(self, index: _Index, cas: int) -> _Index | None:
        """Replace the index if it is still at KV version *cas*; ``None`` if it moved."""
        kv = self._kv()
        try:
            response = kv.write(
                kv.index_doc,
                index.to_doc(),
                cas=cas,
                action=f"update the index of registry {self._name}",
            )
        except VaultError as exc:
            if exc.reason == "conflict":
                return None
            raise
        return self._install(index._replace(kv_version=int(response["data"]["version"])))

    def _write_doc(
        self, generation: str, key: str, doc: dict[str, Any], expected: int
    ) -> tuple[int, float]:
        """Write an entry document; its KV version and creation time.

        Check-and-set on the version we expect keeps mounts with ``cas_required``
        working; a mismatch (a version left by an interrupted writer) only means
        we write on top of the newest, because the index decides what is current.
        """
        rel = self._place.doc(generation, key)
        cas = expected
        for _ in range(_MAX_ATTEMPTS):
            try:
                response = self._kv().write(
                    rel, doc, cas=cas, action=f"write entry {key} of registry {self._name}"
                )
            except VaultError as exc:
                if exc.reason != "conflict":
                    raise
                cas = self._current_version(rel)
                continue
            data = response["data"]
            return int(data["version"]), _parse_time(data.get("created_time"))
        raise VaultError(
            f"cannot write entry {key} of registry {self._name}: its document kept changing",
            reason="conflict",
            path=self._place.data(rel),
        )

    def _current_version(self, rel: str) -> int:
        metadata = self._read_metadata(rel)
        return 0 if metadata is None else int(metadata["data"]["current_version"])

    def _read_metadata(self, rel: str) -> Any:
        """The KV metadata of the document at *rel* (its versions), ``None`` if none."""
        return self._kv().read_metadata(
            rel, action=f"read document metadata of registry {self._name}"
        )

    def _read_doc(self, index: _Index, key: str) -> base.SealedEntry | None:
        """The entry *index* names, from the exact document version it pins;
        ``None`` if that version is gone or is not what the index says."""
        row = index.rows.get(key)
        if row is None:
            return None
        response = self._kv().read(
            self._place.doc(index.generation, key),
            version=row.version,
            action=f"read entry {key} of registry {self._name}",
        )
        if response is None:
            return None
        doc = response["data"]["data"]
        if (
            not isinstance(doc, dict)
            or doc.get("key") != key
            or doc.get("revision") != row.revision
        ):
            return None
        where = f"registry {self._name}, entry {key}"
        settings, secrets = doc.get("settings"), doc.get("secrets")
        if doc.get("format") != DOC_FORMAT or not isinstance(settings, dict):
            raise RegistryCorruptError(f"{where}: not a valid entry document")
        if not isinstance(secrets, dict) or not all(
            isinstance(token, str) for token in secrets.values()
        ):
            raise RegistryCorruptError(f"{where}: secrets are not tokens")
        return base.SealedEntry(key, row.revision, row.updated_at, settings, secrets)

    def _check_key(self, index: _Index, key_id: str | None = None) -> None:
        ours = key_id or self._key_id
        if ours is not None and index.key_id != ours:
            raise base.rekeyed_error(self._name, index.key_id, ours)

    # -- freshness -------------------------------------------------------------------

    def _current(self) -> _Index:
        """The local index, checked against the engine if older than ``refresh``."""
        index = self._index
        if index is not None and time.monotonic() < self._fresh_until:
            return index  # the hot path: no lock, no request
        # One thread checks; the others keep using the index they have meanwhile.
        if not self._poll_lock.acquire(blocking=index is None):
            assert index is not None
            return index
        try:
            index = self._index
            moment = time.monotonic()
            if index is not None and moment < self._fresh_until:
                return index
            failed = self._last_error
            if failed is not None and moment < self._retry_at:
                raise VaultError(str(failed), reason=failed.reason, path=failed.path)
            try:
                return self._poll(index)
            except VaultError as exc:
                self._last_error = exc
                self._retry_at = time.monotonic() + min(self._refresh, _RETRY_AFTER_S)
                raise
        finally:
            self._poll_lock.release()

    def _poll(self, index: _Index | None) -> _Index:
        if index is not None:
            # The metadata is small and fixed-size; the index grows with the registry.
            version = self._current_version(self._place.index_doc)
            if version == index.kv_version:
                return self._install(index)
        return self._install(self._require(self._fetch_index()))

    # -- RegistryStore ---------------------------------------------------------------------

    def stored_key_id(self) -> str | None:
        index = self._fetch_index()
        if index is None:
            return None
        self._install(index)
        self._key_id = index.key_id
        return index.key_id

    def record_key_id(self, key_id: str) -> None:
        with self._write_lock:
            fresh = _Index(key_id, _new_generation(1), 0, {}, 0, {})
            index = self._write_index(fresh, 0) or self._install(self._require(self._fetch_index()))
            self._key_id = index.key_id
            if index.key_id != key_id:
                raise DecryptionError(
                    f"registry {self._name} was just created with key id {index.key_id} by "
                    f"another process, but the master key has id {key_id}: wrong master key"
                )
            logger.info("registry %s: created with key id %s", self._name, key_id)

    def find(self, keys: Sequence[str]) -> base.EntryRef | None:
        if self._closed:
            raise RegistryError(f"registry {self._name} is closed")
        rows = self._current().rows
        for key in keys:  # longest first
            row = rows.get(key)
            if row is not None:
                return base.EntryRef(key, row.revision)
        return None

    def read(self, key: str) -> base.SealedEntry | None:
        if self._closed:
            raise RegistryError(f"registry {self._name} is closed")
        index = self._current()
        if key not in index.rows:
            return None
        sealed = self._read_doc(index, key)
        if sealed is not None:
            return sealed
        # Our index is older than the documents (a concurrent change, or a rotation
        # elsewhere): catch up and try once more.
        index = self._install(self._require(self._fetch_index()))
        self._check_key(index)
        row = index.rows.get(key)
        if row is None:
            return None
        sealed = self._read_doc(index, key)
        if sealed is None:
            raise RegistryCorruptError(
                f"registry {self._name}: entry {key} is in the index, but the document "
                f"version it names ({row.version}) is missing or altered"
            )
        return sealed

    def apply(self, batch: base.Batch) -> base.Applied:
        """One check-and-set on the index commits the whole batch: the entry documents
        are written first (new KV versions nothing references yet), then the index is
        replaced, pointing at all of them and dropping the removed entries at once. A
        failure or crash before that write leaves the old index: nothing changed."""
        if batch.journal is not None:
            raise self._no_audit()
        with self._write_lock:
            for attempt in range(_MAX_ATTEMPTS):
                index = self._require(self._fetch_index())
                self._check_key(index, batch.key_id)
                base.check_expected(self._name, batch.expect, partial(_revision_in, index))
                revision = index.revision
                rows = dict(index.rows)
                written: list[base.SealedEntry] = []
                for write in batch.writes:
                    revision += 1
                    doc = {
                        "format": DOC_FORMAT,
                        "key": write.key,
                        "revision": revision,
                        "settings": write.settings,
                        "secrets": write.secrets,
                    }
                    old = index.rows.get(write.key)
                    version, created = self._write_doc(
                        index.generation, write.key, doc, 0 if old is None else old.version
                    )
                    rows[write.key] = _Row(revision, version, created)
                    written.append(
                        base.SealedEntry(
                            write.key, revision, created, dict(write.settings), dict(write.secrets)
                        )
                    )
                removed: list[tuple[str, int]] = []
                for key in batch.removes:
                    row = rows.pop(key, None)
                    if row is not None:
                        revision += 1
                        removed.append((key, row.version))
                states = dict(index.states)
                state = batch.state_after(written)
                if state is not None:
                    states[state[0]] = state[1]
                if revision == index.revision and states == index.states:
                    self._install(index)
                    return base.Applied([], [])
                new = _Index(index.key_id, index.generation, revision, rows, 0, states)
                if self._write_index(new, index.kv_version) is not None:
                    for key, version in removed:
                        self._destroy(index.generation, key, version)
                    return base.Applied(written, [key for key, _ in removed])
                logger.debug("registry %s: index changed during a batch; retrying", self._name)
                _backoff(attempt)
        raise self._gave_up("apply a batch of changes")

    def state(self, name: str) -> str | None:
        index = self._install(self._require(self._fetch_index()))
        return index.states.get(name)

    #: KV keeps versions of each document, but no log securesession could chain and
    #: authenticate in the same check-and-set: docs/vault.md, "Audit".
    keeps_audit: Final = False

    def start_audit(self, start: base.AuditStart) -> bool:
        return False  # no log to start (keeps_audit)

    def read_audit(self) -> AuditLog:
        raise self._no_audit()

    def _no_audit(self) -> RegistryError:
        return RegistryError(
            f"registry {self._name} keeps no audit log: the Vault backend does not "
            "(docs/vault.md, 'Audit': use Vault's own audit devices)"
        )

    def _destroy(self, generation: str, key: str, upto: int) -> None:
        """Destroy the removed entry's document versions (best effort: the index no
        longer names them). Newer versions, from a concurrent re-add, are kept."""
        rel = self._place.doc(generation, key)
        try:
            metadata = self._read_metadata(rel)
            if metadata is None:
                return
            versions = [
                int(number)
                for number, info in metadata["data"]["versions"].items()
                if int(number) <= upto and not info.get("destroyed")
            ]
            if versions:
                self._kv().destroy(
                    rel,
                    versions,
                    action=f"destroy old versions of entry {key} of registry {self._name}",
                )
        except VaultError as exc:
            logger.warning(
                "registry %s: removed entry %s, but could not destroy its stored ciphertext: %s",
                self._name,
                key,
                exc,
            )

    def scan(self) -> Iterator[base.SealedEntry]:
        index = self._install(self._require(self._fetch_index()))
        self._check_key(index)
        for key in sorted(index.rows):
            sealed = self._read_doc(index, key)
            if sealed is None:
                sealed = self.read(key)  # changed since we read the index
            if sealed is not None:
                yield sealed

    def keys(self) -> Iterator[str]:
        # One request, for the index: the entry documents are not read.
        index = self._install(self._require(self._fetch_index()))
        return iter(sorted(index.rows))

    def rewrite_all(self, rekey: base.Rekey) -> int:
        if rekey.journal is not None:
            raise self._no_audit()
        with self._write_lock:
            for attempt in range(_MAX_ATTEMPTS):
                old = self._require(self._fetch_index())
                self._check_key(old)
                number = int(old.generation[1:9]) + 1
                generation = _new_generation(number)
                try:
                    new = self._copy_generation(old, generation, rekey)
                except BaseException:
                    self._purge_quietly(generation)  # the index still names the old one
                    raise
                # If this write fails without an answer, it may or may not have been
                # applied: the new generation is then left alone (it may be live), and
                # the next rotation removes it if it is not.
                if new is not None and self._write_index(new, old.kv_version) is not None:
                    self._key_id = rekey.new_key_id
                    logger.info(
                        "registry %s: switched to generation %s under key id %s",
                        self._name,
                        generation,
                        rekey.new_key_id,
                    )
                    self._purge_old_generations(keep=generation, upto=number)
                    return len(new.rows)  # this attempt's: an earlier one lost its race
                self._purge_quietly(generation)  # lost to a concurrent change: start over
                _backoff(attempt)
        raise self._gave_up("rotate the master key")

    def _copy_generation(self, old: _Index, generation: str, rekey: base.Rekey) -> _Index | None:
        """Write every entry of *old*, resealed by *rekey*, into *generation*; the index
        that would switch to it (not yet written, with the states *rekey* remaps), or
        ``None`` if *old* changed meanwhile."""
        revision = old.revision
        rows: dict[str, _Row] = {}
        changes: list[base.Change] = []
        for key in sorted(old.rows):
            sealed = self._read_doc(old, key)
            if sealed is None:
                return None
            revision += 1
            after = rekey.resealed(sealed, revision)
            doc = {
                "format": DOC_FORMAT,
                "key": key,
                "revision": revision,
                "settings": sealed.settings,
                "secrets": after.secrets,
            }
            version, _ = self._write_doc(generation, key, doc, 0)
            rows[key] = _Row(revision, version, old.rows[key].updated_at)
            changes.append(base.Change(key, revision, sealed, after))
        states = dict(old.states)
        if rekey.restate is not None:
            # In the index document: the switch to the new generation carries them.
            states.update(rekey.restate(changes, old.states))
        return _Index(rekey.new_key_id, generation, revision, rows, 0, states)

    def _purge_quietly(self, generation: str) -> None:
        try:
            self._purge(generation)
        except (VaultError, RegistryError) as exc:
            logger.warning(
                "registry %s: could not remove abandoned generation %s (%s); the next "
                "rotation removes it",
                self._name,
                generation,
                exc,
            )

    def _purge(self, generation: str) -> None:
        """Delete every document (all versions and metadata) of a generation."""
        rel = self._place.generation(generation)
        listing = self._kv().names(
            rel, action=f"list generation {generation} of registry {self._name}"
        )
        for name in [] if listing is None else listing["data"]["keys"]:
            self._kv().delete(
                f"{rel}/{name}", action=f"delete an old document of registry {self._name}"
            )

    def _purge_old_generations(self, *, keep: str, upto: int) -> None:
        """After a committed rotation: delete generations up to number *upto* except
        *keep*. A rotation racing this one wrote a generation numbered *upto* too, and
        its check-and-set is bound to fail; later ones are numbered higher and kept."""
        try:
            listing = self._kv().names(self._place.prefix, action=f"list registry {self._name}")
        except VaultError as exc:
            logger.warning("registry %s: cannot list old generations: %s", self._name, exc)
            return
        for name in [] if listing is None else listing["data"]["keys"]:
            match = _GENERATION.fullmatch(name.rstrip("/"))
            if match and name.endswith("/") and name[:-1] != keep and int(match[1]) <= upto:
                self._purge_quietly(name[:-1])

    def _gave_up(self, action: str) -> VaultError:
        return VaultError(
            f"cannot {action} in registry {self._name}: its index kept changing under "
            f"concurrent writers ({_MAX_ATTEMPTS} check-and-set attempts)",
            reason="conflict",
            path=self._place.data(self._place.index_doc),
        )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._owns_connection:
            self._place.connection.close()


def open_vault_registry(
    url: str,
    key: MasterKey | KeyRing,
    *,
    connection: VaultConnection | None = None,
    read_only: bool = False,
    **connection_options: Any,
) -> base.EncryptedRegistry:
    """Open (creating if needed) the registry at ``vault+https://host:8200/<mount>/<prefix>``.

    *connection* is a :class:`VaultConnection` to the engine the URL names (shared,
    e.g. with ``MasterKey.from_vault_transit``; left open on close). Without one, a
    connection is built from the URL's ``namespace``, ``timeout`` and ``ca`` options
    and the credentials in the environment (``VAULT_TOKEN``, ...), and closed with
    the registry. Beside *connection* those URL options, like any *connection_options*,
    would be ignored, so they are refused. *connection_options* (``token=``,
    ``approle=``, ``token_file=``) without *connection* are deprecated: pass
    ``connection=VaultConnection(...)``. *read_only*: open it without writing (no key
    id recorded) and refuse every write.
    """
    target = parse_vault_url(url)
    check_loose_options(target.engine_url if connection is None else connection, connection_options)
    owns = connection is None
    if connection is None:
        connection = VaultConnection(
            target.engine_url, **target.connection_options, **connection_options
        )
    elif connection.url != target.engine_url:
        raise ConfigurationError(
            f"registry URL names {target.engine_url}, but the connection is to {connection.url}"
        )
    elif target.connection_options:
        raise ConfigurationError(
            "the registry URL's namespace, timeout and ca options would be ignored beside a "
            "VaultConnection: set them on the connection (namespace=, timeout=, verify=)"
        )
    store = VaultStore(
        connection,
        target.mount,
        target.prefix,
        name=target.name,
        refresh=target.refresh,
        owns_connection=owns,
    )
    try:
        # Read-only: the registry writes nothing at open and refuses every write (the
        # store has no schema to migrate).
        return base.EncryptedRegistry(store, key, name=target.name, read_only=read_only)
    except BaseException:
        store.close()
        raise
