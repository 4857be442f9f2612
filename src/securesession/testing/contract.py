"""The registry backend contract, as a pytest test class for backend authors.

Subclass :class:`RegistryContract` in your test suite and provide the
``open_registry`` fixture: a function that opens *the same* initially empty
registry with a given master key each time it is called within one test::

    from securesession.registry import RegistryContract

    class TestMyBackend(RegistryContract):
        @pytest.fixture
        def open_registry(self, tmp_path):
            return lambda key: securesession.open_registry(f"mine://{tmp_path}", key)

The suite closes every registry it opens through that function when the test ends,
passed or failed (so your fixture need not track them; if it closes them too, that
is a second ``close()``, which the contract says is harmless). Every built-in backend
runs this same class. (:mod:`securesession.registry` re-exports it.)

A store that keeps an audit log (``keeps_audit``) is checked for what each write
records and that :meth:`~securesession.Registry.verify_audit` passes; one that keeps
none, that it says so instead of showing an empty log. To run the tamper tests too
(a record edited, removed, reordered, replayed, the newest cut off: each must fail
verification, naming the record), provide a ``raw_audit`` fixture: a
:data:`RawAuditWriter` that writes the test's store behind securesession's back, as
someone with access to the database but not the master key could::

        @pytest.fixture
        def raw_audit(self, tmp_path):
            def write(seq, text):  # text None: delete the record
                ...  # INSERT OR REPLACE / DELETE on the store's audit table
            return write

Without it, those tests skip, saying why.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

import pytest

from .. import (
    AuditError,
    ClientCertificate,
    ConflictError,
    Credential,
    DecryptionError,
    EntryRef,
    InvalidURLError,
    LegacyEntryError,
    MasterKey,
    Registry,
    RegistryCorruptError,
    RegistryError,
    Secret,
    ServiceEntry,
    TLSProfile,
)
from ..registry import ENTRY_REVISIONS, EncryptedRegistry, RegistryStore
from ._certs import CertificateAuthority

__all__ = ["OpenRegistry", "RawAuditWriter", "RegistryContract"]

#: The type of the ``open_registry`` fixture: open the test's registry under a key.
OpenRegistry = Callable[[MasterKey], Registry]
#: The type of the ``raw_audit`` fixture: store *text* as audit record number *seq* of
#: the test's registry (insert, or replace the record stored under *seq*), or delete
#: that record if *text* is ``None``; straight into the store, with no check.
RawAuditWriter = Callable[[int, "str | None"], None]

BASE = "https://gw.example.test:8443"
#: The reserved secret field of the entry tag (docs/concepts.md, "Registries").
ENTRY_TAG_FIELD = "$entry"


def _entry(path: str, tag: str = "1", **options: object) -> ServiceEntry:
    return ServiceEntry(
        url=BASE + path,
        gateway=Credential(f"gw-{tag}", f"gw-SECRET-{tag}"),
        request=Credential(f"CORP\\user-{tag}", f"req-SECRET-{tag}"),
        **options,  # type: ignore[arg-type]
    )


def _store_of(registry: Registry) -> RegistryStore:
    if not isinstance(registry, EncryptedRegistry):
        pytest.skip("not an EncryptedRegistry: no sealed rows to check")
    return registry.store


def _audited(registry: Registry) -> RegistryStore:
    """The store of *registry*, if it keeps an audit log (else the test skips)."""
    store = _store_of(registry)
    if not store.keeps_audit:
        pytest.skip(f"{type(store).__name__} keeps no audit log (keeps_audit is False)")
    return store


def _canonical(record: Mapping[str, Any]) -> str:
    """A record's stored form (docs/security.md, "The audit log"): what a store writer
    who edits one writes back, so the edit is caught by its MAC or its link, not by
    its form."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _renumbered(text: str, seq: int) -> str:
    return _canonical({**json.loads(text), "seq": seq})


def _log_four_changes(registry: Registry) -> None:
    """Five records: the start, an entry added, its gateway password changed, another
    entry added, the first removed."""
    registry.put(_entry("/a/", "a"))
    registry.put(dataclasses.replace(_entry("/a/", "a"), gateway=Credential("gw-a", "gw-SECRET-2")))
    registry.put(_entry("/b/", "b"))
    registry.remove(BASE + "/a/")


def _swap(
    rows: Mapping[int, str], first: int, second: int, *, renumber: bool
) -> list[tuple[int, str | None]]:
    one, other = rows[first], rows[second]
    if renumber:  # as a careful forger would: each record then says where it is
        one, other = _renumbered(one, second), _renumbered(other, first)
    return [(first, other), (second, one)]


#: How a store writer without the master key may tamper with the log, and what
#: verification must then say: (the rewrites, given the stored records by sequence
#: number, as ``(seq, text or None)``; the message naming the record at fault).
_TAMPERING: Final[
    dict[str, tuple[Callable[[Mapping[int, str]], list[tuple[int, str | None]]], str]]
] = {
    "edit-actor": (
        lambda rows: [(3, _canonical({**json.loads(rows[3]), "actor": "mallory"}))],
        "record 3 failed authentication",
    ),
    "edit-fields": (
        lambda rows: [(3, _canonical({**json.loads(rows[3]), "fields": ["description"]}))],
        "record 3 failed authentication",
    ),
    "edit-form": (
        lambda rows: [(3, rows[3].replace(",", ", ", 1))],
        "record 3 is not in canonical form",
    ),
    "remove": (lambda rows: [(3, None)], "record 3 is missing"),
    "reorder": (
        lambda rows: _swap(rows, 3, 4, renumber=False),
        "record 3 says it is record 4",
    ),
    "reorder-renumbered": (
        lambda rows: _swap(rows, 3, 4, renumber=True),
        "record 3 does not follow record 2",
    ),
    "replay": (
        lambda rows: [(max(rows) + 1, _renumbered(rows[2], max(rows) + 1))],
        "record 6 does not follow record 5",
    ),
    "cut-newest": (lambda rows: [(max(rows), None)], "records at the end were removed"),
    "cut-all": (lambda rows: [(seq, None) for seq in rows], "its records were removed"),
}


def _written_by_0_1_0(key: MasterKey) -> tuple[str, dict[str, Any], dict[str, str]]:
    """``_entry("/old/", secret_headers={"X-Api-Key": "api-SECRET"})`` as securesession
    0.1.0 stored it (key, settings, secrets): no entry tag, field tokens under the old
    associated data. Written out literally, as test data of a released format."""
    url = BASE + "/old"
    settings = {
        "format": 1,
        "gateway_auth": "headers",
        "request_auth": "basic",
        "gateway_headers": ["X-Gateway-User", "X-Gateway-Password"],
        "request_headers": ["X-Request-User", "X-Request-Password"],
        "description": "",
    }
    clear = {
        "gateway.username": "gw-1",
        "gateway.password": "gw-SECRET-1",
        "request.username": "CORP\\user-1",
        "request.password": "req-SECRET-1",
        "header.X-Api-Key": "api-SECRET",
    }
    secrets = {
        name: key.encrypt(
            value.encode(), b"securesession entry\x00" + url.encode() + b"\x00" + name.encode()
        )
        for name, value in clear.items()
    }
    return url, settings, secrets


class RegistryContract:
    """What every :class:`~securesession.Registry` backend must do."""

    @pytest.fixture
    def open_registry(self) -> OpenRegistry:
        raise NotImplementedError("provide an open_registry fixture")

    @pytest.fixture
    def key(self) -> MasterKey:
        return MasterKey.generate()

    @pytest.fixture
    def reopen(self, open_registry: OpenRegistry) -> Iterator[OpenRegistry]:
        """``open_registry``, and every registry it returned closed after the test,
        however the test ended (the last opened first)."""
        opened: list[Registry] = []

        def tracked(key: MasterKey) -> Registry:
            registry = open_registry(key)
            opened.append(registry)
            return registry

        yield tracked
        failures: list[BaseException] = []
        for registry in reversed(opened):
            try:
                registry.close()
            except Exception as exc:  # close the others, then report the first
                failures.append(exc)
        if failures:
            raise failures[0]

    @pytest.fixture
    def registry(self, reopen: OpenRegistry, key: MasterKey) -> Registry:
        return reopen(key)

    def test_empty_registry_matches_nothing(self, registry: Registry) -> None:
        assert registry.get(BASE + "/payments/x") is None
        assert registry.lookup(BASE + "/") is None
        assert list(registry.entries()) == []

    def test_round_trip_keeps_every_field(self, registry: Registry) -> None:
        entry = _entry(
            "/payments/",
            gateway_auth="headers",
            request_auth="bearer",
            gateway_headers=("X-Bridge-User", "X-Bridge-Secret"),
            secret_headers={"X-Api-Key": "api-SECRET"},
            description="payments gateway",
        )
        stored = registry.put(entry)
        assert stored.revision > 0
        got = registry.get(BASE + "/payments/bills/42")
        assert got == entry
        assert got is not None and got.revision == stored.revision
        assert got.secret_headers["X-Api-Key"] == Secret("api-SECRET")
        assert got.updated_at is not None

    def test_longest_prefix_on_segment_boundaries(self, registry: Registry) -> None:
        registry.put(_entry("/", "root"))
        registry.put(_entry("/payments", "pay"))
        registry.put(_entry("/payments/bills/", "bills"))

        def tag(url: str) -> str | None:
            found = registry.get(url)
            return None if found is None or found.gateway is None else found.gateway.username

        assert tag(BASE + "/payments") == "gw-pay"
        assert tag(BASE + "/payments/") == "gw-pay"
        assert tag(BASE + "/payments/x?q=1#f") == "gw-pay"
        assert tag(BASE + "/payments/bills") == "gw-bills"
        assert tag(BASE + "/payments/bills/7") == "gw-bills"
        assert tag(BASE + "/paymentsx") == "gw-root"
        with pytest.raises(InvalidURLError, match="dot segment"):
            tag(BASE + "/payments/../admin")  # what is matched must be what is sent
        assert tag("https://GW.EXAMPLE.TEST:8443/%70ayments/x") == "gw-pay"
        assert tag("http://gw.example.test:8443/payments/") is None
        assert tag("https://gw.example.test/payments/") is None
        assert tag("https://other.example.test:8443/payments/") is None

    def test_lookup_then_load(self, registry: Registry) -> None:
        stored = registry.put(_entry("/svc/"))
        ref = registry.lookup(BASE + "/svc/deep/path")
        assert ref is not None
        assert (ref.key, ref.revision) == (stored.url, stored.revision)
        assert registry.load(ref) == stored

    def test_put_replaces_and_bumps_revision(self, registry: Registry) -> None:
        first = registry.put(_entry("/svc/", "a"))
        second = registry.put(_entry("/svc", "b"))  # same canonical key
        assert second.revision > first.revision
        assert [e.gateway.username for e in registry.entries() if e.gateway] == ["gw-b"]

    def test_remove_then_readd_never_reuses_a_revision(self, registry: Registry) -> None:
        first = registry.put(_entry("/svc/", "a"))
        assert registry.remove(BASE + "/svc/") is True
        assert registry.remove(BASE + "/svc/") is False
        assert registry.get(BASE + "/svc/x") is None
        assert registry.load(EntryRef(first.url, first.revision)) is None  # gone since lookup
        again = registry.put(_entry("/svc/", "a"))
        assert again.revision > first.revision

    def test_remove_is_exact_not_prefix(self, registry: Registry) -> None:
        registry.put(_entry("/svc/"))
        assert registry.remove(BASE + "/svc/child") is False
        assert registry.get(BASE + "/svc/child") is not None

    def test_entries_are_sorted_and_decrypted(self, registry: Registry) -> None:
        for path in ("/b", "/a", "/c/d"):
            registry.put(_entry(path, path.strip("/")))
        urls = [entry.url for entry in registry.entries()]
        assert urls == sorted(urls) and len(urls) == 3
        assert all(
            e.request and e.request.password.reveal().startswith("req-SECRET")
            for e in registry.entries()
        )

    def test_wrong_key_is_refused(self, reopen: OpenRegistry, registry: Registry) -> None:
        registry.put(_entry("/svc/"))
        registry.close()
        with pytest.raises(DecryptionError, match="wrong master key"):
            reopen(MasterKey.generate())

    def test_rotate_then_only_the_new_key_works(
        self, reopen: OpenRegistry, registry: Registry, key: MasterKey
    ) -> None:
        for index in range(5):
            registry.put(_entry(f"/svc{index}/", str(index)))
        before = {e.url: e for e in registry.entries()}
        new_key = MasterKey.generate()
        ticks: list[None] = []
        assert registry.rotate(new_key, progress=lambda: ticks.append(None)) == 5
        assert len(ticks) == 5  # once per entry
        assert registry.key_id == new_key.key_id
        assert {e.url: e for e in registry.entries()} == before
        registry.close()
        with pytest.raises(DecryptionError):
            reopen(key)
        reopened = reopen(new_key)
        assert {e.url: e for e in reopened.entries()} == before

    def test_a_writer_still_holding_the_old_key_is_refused(
        self, reopen: OpenRegistry, registry: Registry, key: MasterKey
    ) -> None:
        """After another process rotates, a put under the old key would store an entry
        the new key cannot read: it is refused, and the registry stays whole."""
        stale = reopen(key)
        registry.put(_entry("/svc/", "a"))
        new_key = MasterKey.generate()
        registry.rotate(new_key)
        with pytest.raises(DecryptionError, match="re-keyed"):
            stale.put(_entry("/other/", "b"))
        assert [entry.url for entry in registry.entries()] == [BASE + "/svc"]

    def test_an_entry_edited_in_the_store_fails_authentication(self, registry: Registry) -> None:
        """Settings come back from the store exactly as written (the entry tag covers
        them), and one changed behind securesession's back is refused."""
        store = _store_of(registry)
        stored = registry.put(_entry("/svc/", gateway_headers=("X-Bridge-User", "X-Bridge-Pw")))
        sealed = store.read(stored.url)
        assert sealed is not None and ENTRY_TAG_FIELD in sealed.secrets
        settings = {**sealed.settings, "gateway_headers": ["X-Bridge-User", "X-Elsewhere"]}
        store.write(stored.url, settings, sealed.secrets, key_id=registry.key_id)
        with pytest.raises(RegistryCorruptError, match="entry authentication failed"):
            registry.get(BASE + "/svc/x")
        store.write(stored.url, sealed.settings, sealed.secrets, key_id=registry.key_id)
        assert registry.get(BASE + "/svc/x") == stored

    def test_legacy_entries_are_refused_unless_accepted(
        self, registry: Registry, key: MasterKey
    ) -> None:
        """Entries written by securesession 0.1.0 (no entry tag) are refused by default,
        load with ``legacy_entries="accept"``, and the upgrade rewrites them
        authenticated under the same key, in one batch."""
        store = _store_of(registry)
        assert isinstance(registry, EncryptedRegistry)
        entry = _entry("/old/", secret_headers={"X-Api-Key": "api-SECRET"})
        url, settings, secrets = _written_by_0_1_0(key)
        store.write(url, settings, secrets, key_id=registry.key_id)
        with pytest.raises(LegacyEntryError, match="securesession upgrade"):
            registry.get(BASE + "/old/x")
        registry.legacy_entries = "accept"
        assert registry.get(BASE + "/old/x") == entry
        registry.legacy_entries = "refuse"
        assert registry.upgrade_legacy_entries() == [entry.url]
        sealed = store.read(entry.url)
        assert sealed is not None and ENTRY_TAG_FIELD in sealed.secrets
        assert sealed.settings == settings
        assert registry.get(BASE + "/old/x") == entry

    def test_rotation_upgrades_accepted_legacy_entries(
        self, reopen: OpenRegistry, registry: Registry, key: MasterKey
    ) -> None:
        store = _store_of(registry)
        assert isinstance(registry, EncryptedRegistry)
        entry = _entry("/old/", secret_headers={"X-Api-Key": "api-SECRET"})
        store.write(*_written_by_0_1_0(key), key_id=registry.key_id)
        new_key = MasterKey.generate()
        with pytest.raises(LegacyEntryError):
            registry.rotate(new_key)  # refused without the opt-in: nothing changed
        assert registry.key_id == key.key_id
        registry.legacy_entries = "accept"
        registry.rotate(new_key)
        sealed = store.read(entry.url)
        assert sealed is not None and ENTRY_TAG_FIELD in sealed.secrets
        registry.close()
        assert reopen(new_key).get(BASE + "/old/x") == entry

    def test_userinfo_url_is_refused(self, registry: Registry) -> None:
        with pytest.raises(InvalidURLError) as caught:
            registry.get("https://user:pw-SECRET@gw.example.test/x")
        assert "SECRET" not in str(caught.value)

    def test_concurrent_writers_lose_nothing(self, registry: Registry) -> None:
        errors: list[BaseException] = []

        def write(worker: int) -> None:
            try:
                for index in range(10):
                    registry.put(_entry(f"/w{worker}/e{index}", f"{worker}-{index}"))
            except BaseException as exc:  # collected and re-raised below
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert len(list(registry.entries())) == 80
        assert len({entry.revision for entry in registry.entries()}) == 80

    def test_urls_and_count_list_every_entry(self, registry: Registry) -> None:
        assert list(registry.urls()) == [] and registry.count() == 0
        for path in ("/b", "/a/", "/c/d", "/a/b"):
            registry.put(_entry(path, path.strip("/")))
        urls = list(registry.urls())
        assert urls == [entry.url for entry in registry.entries()] == sorted(urls)
        assert registry.count() == 4
        registry.remove(BASE + "/b")
        assert BASE + "/b" not in list(registry.urls()) and registry.count() == 3

    def test_urls_and_count_decrypt_nothing(self, registry: Registry) -> None:
        """Listing URLs reads no secret: an entry that no key could open is listed."""
        store = _store_of(registry)
        registry.put(_entry("/good/"))
        store.write(BASE + "/bad", {"format": 1}, {"x": "not a token"}, key_id=registry.key_id)
        with pytest.raises((DecryptionError, RegistryCorruptError)):
            list(registry.entries())
        assert list(registry.urls()) == [BASE + "/bad", BASE + "/good"]
        assert registry.count() == 2

    def test_apply_writes_and_removes_in_one_batch(self, registry: Registry) -> None:
        kept = registry.put(_entry("/keep/", "keep"))
        registry.put(_entry("/old/", "old"))
        written = registry.apply(
            [_entry("/a/", "a"), _entry("/b/", "b")], [BASE + "/old/", BASE + "/never/"]
        )
        assert [entry.url for entry in written] == [BASE + "/a", BASE + "/b"]
        assert len({entry.revision for entry in written}) == 2
        assert all(entry.revision > kept.revision for entry in written)
        assert list(registry.urls()) == [BASE + "/a", BASE + "/b", BASE + "/keep"]
        for entry in written:
            assert registry.get(entry.url + "/x") == entry
            ref = registry.lookup(entry.url)
            assert ref is not None and ref.revision == entry.revision
        assert registry.apply() == []  # an empty batch is no change

    def test_apply_refuses_an_entry_named_twice(self, registry: Registry) -> None:
        with pytest.raises(ValueError, match="more than once"):
            registry.apply([_entry("/a/", "1")], [BASE + "/a"])
        with pytest.raises(ValueError, match="more than once"):
            registry.apply([_entry("/a/", "1"), _entry("/a", "2")])
        assert registry.count() == 0

    def test_apply_with_a_stale_expectation_changes_nothing(self, registry: Registry) -> None:
        first = registry.put(_entry("/svc/", "a"))
        registry.put(_entry("/svc/", "b"))  # another writer, since `first` was read
        with pytest.raises(ConflictError, match="changed by another writer") as caught:
            registry.apply(
                [_entry("/svc/", "c"), _entry("/new/", "n")],
                [BASE + "/gone"],
                expect={first.url: first.revision, BASE + "/new": None},
                state=("sync:test", "never stored"),
            )
        assert caught.value.urls == (first.url,)
        assert "SECRET" not in str(caught.value)
        assert [e.gateway.username for e in registry.entries() if e.gateway] == ["gw-b"]
        assert registry.state("sync:test") is None

    def test_apply_expecting_absence_refuses_an_existing_entry(self, registry: Registry) -> None:
        registry.put(_entry("/svc/", "a"))
        with pytest.raises(ConflictError) as caught:
            registry.apply([_entry("/svc/", "b")], expect={BASE + "/svc/": None})
        assert caught.value.urls == (BASE + "/svc",)
        current = registry.get(BASE + "/svc/")
        assert current is not None and current.gateway is not None
        assert current.gateway.username == "gw-a"

    def test_apply_with_current_expectations_goes_through(self, registry: Registry) -> None:
        stored = registry.put(_entry("/svc/", "a"))
        written = registry.apply(
            [_entry("/svc/", "b"), _entry("/new/", "n")],
            expect={stored.url: stored.revision, BASE + "/new/": None},
        )
        assert [entry.revision > stored.revision for entry in written] == [True, True]

    def test_state_is_stored_with_the_batch(
        self, reopen: OpenRegistry, registry: Registry, key: MasterKey
    ) -> None:
        assert registry.state("sync:a") is None
        registry.apply([_entry("/svc/")], state=("sync:a", '{"rev": 1}'))
        registry.apply(state=("sync:b", "other"))  # a state alone is a batch too
        registry.apply(state=("sync:a", '{"rev": 2}'))
        assert registry.state("sync:a") == '{"rev": 2}'
        registry.close()
        reopened = reopen(key)
        assert (reopened.state("sync:a"), reopened.state("sync:b")) == ('{"rev": 2}', "other")

    def test_a_state_function_records_the_revisions_the_writes_get(
        self, reopen: OpenRegistry, registry: Registry, key: MasterKey
    ) -> None:
        seen: list[dict[str, int]] = []

        def state(revisions: Mapping[str, int]) -> str:
            seen.append(dict(revisions))
            return json.dumps(dict(revisions), sort_keys=True)

        written = registry.apply([_entry("/a/"), _entry("/b/")], state=("sync:f", state))
        expected = {entry.url: entry.revision for entry in written}
        assert seen == [expected]  # called once, with the revisions the writes got
        registry.close()
        assert json.loads(reopen(key).state("sync:f") or "null") == expected

    def test_a_rotation_remaps_the_entry_revisions_a_state_records(
        self, reopen: OpenRegistry, registry: Registry
    ) -> None:
        """Every entry gets a new revision in a rotation; a state that records revisions
        (under ENTRY_REVISIONS) follows them in the same transaction, but for one
        that was not the entry's revision any more (it changed since), and states
        that record none stay byte for byte."""
        kept = registry.put(_entry("/kept/"))
        first = registry.put(_entry("/changed/", "1"))
        changed = registry.put(_entry("/changed/", "2"))  # since the state recorded `first`
        recorded = {kept.url: kept.revision, changed.url: first.revision, BASE + "/gone": 1}
        document = {"source": "a", ENTRY_REVISIONS: recorded}
        registry.apply(state=("sync:a", json.dumps(document)))
        registry.apply(state=("sync:b", "not JSON"))
        no_revisions = json.dumps({"entries": {kept.url: kept.revision}})  # another member
        registry.apply(state=("sync:c", no_revisions))
        new_key = MasterKey.generate()
        registry.rotate(new_key)
        now = {
            url: ref.revision for url in (kept.url, changed.url) if (ref := registry.lookup(url))
        }
        assert now[kept.url] != kept.revision and now[changed.url] != changed.revision
        expected = {**recorded, kept.url: now[kept.url]}
        registry.close()
        reopened = reopen(new_key)
        assert json.loads(reopened.state("sync:a") or "null") == {
            **document,
            ENTRY_REVISIONS: expected,
        }
        assert reopened.state("sync:b") == "not JSON"
        assert reopened.state("sync:c") == no_revisions

    def test_put_and_remove_are_batches_of_one(self, registry: Registry) -> None:
        stored = registry.put(_entry("/svc/"))
        with pytest.raises(ConflictError):
            registry.apply(removes=[BASE + "/svc/"], expect={stored.url: stored.revision + 1})
        assert registry.count() == 1
        registry.apply(removes=[BASE + "/svc/"], expect={stored.url: stored.revision})
        assert registry.count() == 0

    @pytest.mark.parametrize(
        "use",
        [
            pytest.param(lambda r, ref: r.put(_entry("/other/")), id="put"),
            pytest.param(lambda r, ref: r.get(BASE + "/svc/x"), id="get"),
            pytest.param(lambda r, ref: r.lookup(BASE + "/svc/x"), id="lookup"),
            pytest.param(lambda r, ref: r.load(ref), id="load"),
            pytest.param(lambda r, ref: r.remove(BASE + "/svc/"), id="remove"),
            pytest.param(lambda r, ref: r.apply([_entry("/other/")]), id="apply"),
            pytest.param(lambda r, ref: r.state("sync:x"), id="state"),
            pytest.param(lambda r, ref: list(r.entries()), id="entries"),
            pytest.param(lambda r, ref: list(r.urls()), id="urls"),
            pytest.param(lambda r, ref: r.count(), id="count"),
            pytest.param(lambda r, ref: r.rotate(MasterKey.generate()), id="rotate"),
        ],
    )
    def test_a_closed_registry_refuses_further_use(
        self, registry: Registry, use: Callable[[Registry, EntryRef], object]
    ) -> None:
        stored = registry.put(_entry("/svc/"))
        ref = EntryRef(stored.url, stored.revision)
        registry.close()
        registry.close()  # a second close is harmless
        with pytest.raises(RegistryError, match="closed"):
            use(registry, ref)

    @pytest.mark.parametrize(
        "change",
        [
            pytest.param(lambda r: r.put(_entry("/svc/a/")), id="put-more-specific"),
            pytest.param(lambda r: r.put(_entry("/svc/", "b")), id="put-same"),
            pytest.param(lambda r: r.remove(_entry("/svc/").url), id="remove"),
            pytest.param(lambda r: r.rotate(MasterKey.generate()), id="rotate"),
        ],
    )
    def test_a_lookup_stamp_holds_until_a_change(
        self, registry: Registry, change: Callable[[Registry], object]
    ) -> None:
        """A store's optional ``lookup_stamp()``: the same object while lookups would
        answer the same, another one after any change (read before each lookup)."""
        store = _store_of(registry)
        stamp_of = getattr(store, "lookup_stamp", None)
        if stamp_of is None:
            pytest.skip(f"{type(store).__name__} has no lookup_stamp: looked up every time")
        registry.put(_entry("/svc/"))
        url = _entry("/svc/a/b").url
        before = stamp_of()
        assert before is not None
        first = registry.lookup(url)
        assert stamp_of() is before and registry.lookup(url) == first
        change(registry)
        assert stamp_of() is not before
        registry.close()
        assert isinstance(registry, EncryptedRegistry)
        assert registry.lookup_stamp() is None  # closed: the lookup runs, and refuses

    def test_an_entry_with_a_tls_profile_round_trips(
        self, reopen: OpenRegistry, registry: Registry, key: MasterKey
    ) -> None:
        """A TLS profile, client certificate (key and password) included, comes back
        unchanged, from this registry and from one opened afresh."""
        ca = CertificateAuthority("contract test CA")
        client = ca.issue_client("contract-client")
        unlock = "pfx-SECRET"
        profiles = {
            "/pkcs12/": TLSProfile(
                client_cert=ClientCertificate.from_pkcs12(client.pkcs12(unlock.encode()), unlock),
                version="1.3",
                ca_bundle=ca.cert_pem,
                pins=(ca.spki_sha256_pin,),
                crl=ca.crl(),
                crl_scope="leaf",
            ),
            "/pem/": TLSProfile(
                client_cert=ClientCertificate.from_pem(
                    client.cert_pem, client.encrypted_key_pem(unlock.encode()), unlock
                ),
                min_version="1.2",
                max_version="1.3",
                check_revocation=False,
            ),
        }
        entries = [_entry(path, tls=profile) for path, profile in profiles.items()]
        for entry in entries:
            registry.put(entry)
        _assert_same_entries(registry, entries)
        registry.close()
        _assert_same_entries(reopen(key), entries)

    # -- the audit log ---------------------------------------------------------------

    @pytest.fixture
    def raw_audit(self) -> RawAuditWriter:
        """Override with write access to the test's store (see the module docstring)
        to run the tamper tests."""
        pytest.skip(
            "no raw_audit fixture: the tamper tests need write access to the store's "
            "audit records behind securesession's back"
        )

    def test_each_write_logs_what_it_changed(self, registry: Registry) -> None:
        """One record per change: its operation, what it did to the entry, the new
        revision, the names of the fields whose value changed (secrets compared
        decrypted: a put of the same values changes none), and the actor."""
        _audited(registry)
        assert isinstance(registry, EncryptedRegistry)
        registry.actor = "contract-bot"
        entry = _entry("/svc/")
        added = registry.put(entry)
        same = registry.put(entry)  # new tokens, same values
        described = registry.put(dataclasses.replace(entry, description="moved"))
        password = registry.put(
            dataclasses.replace(
                entry, description="moved", gateway=Credential("gw-1", "gw-SECRET-2")
            )
        )
        assert registry.remove(BASE + "/svc/")
        records = list(registry.audit())
        assert [(r.seq, r.operation, r.change, r.entry) for r in records] == [
            (1, "start", "", "*"),
            (2, "put", "added", added.url),
            (3, "put", "changed", added.url),
            (4, "put", "changed", added.url),
            (5, "put", "changed", added.url),
            (6, "remove", "removed", added.url),
        ]
        revisions = [record.revision for record in records]
        assert revisions[1:5] == [
            added.revision,
            same.revision,
            described.revision,
            password.revision,
        ]
        assert revisions[5] is not None and revisions[5] > password.revision
        fields = [record.fields for record in records]
        assert fields[2:5] == [(), ("description",), ("gateway.password",)]
        credential_fields = {
            "gateway.username",
            "gateway.password",
            "request.username",
            "request.password",
        }
        assert credential_fields | {"description"} <= set(fields[1]) == set(fields[5])
        assert ENTRY_TAG_FIELD not in fields[1]  # the tag is no field of the entry
        # Each change names the writer's actor (the start, whoever began the log).
        assert {record.actor for record in records[1:]} == {"contract-bot"}
        assert {record.key_id for record in records} == {registry.key_id}
        times = [record.time for record in records]
        assert times == sorted(times)
        report = registry.verify_audit()
        assert (report.records, report.authenticated, report.predating) == (6, 6, 0)
        assert (report.head_seq, report.head_digest) == (6, records[-1].digest)

    def test_a_batch_logs_each_of_its_changes_under_its_operation(self, registry: Registry) -> None:
        _audited(registry)
        registry.put(_entry("/old/", "old"))
        before = len(list(registry.audit()))
        written = registry.apply(
            [_entry("/a/", "a"), _entry("/b/", "b")],
            [BASE + "/old/", BASE + "/never/"],  # the absent one is no change: no record
            operation="import",
        )
        records = list(registry.audit())[before:]
        assert [(r.operation, r.change, r.entry) for r in records] == [
            ("import", "added", written[0].url),
            ("import", "added", written[1].url),
            ("import", "removed", BASE + "/old"),
        ]
        assert [r.revision for r in records[:2]] == [entry.revision for entry in written]
        assert len({r.revision for r in records}) == 3
        assert registry.verify_audit().records == before + 3

    def test_a_state_alone_is_logged_by_name_and_a_state_with_writes_is_not(
        self, registry: Registry
    ) -> None:
        _audited(registry)
        registry.apply(operation="sync", state=("sync:contract", '{"rev": 1}'))
        record = list(registry.audit())[-1]
        assert (record.seq, record.operation, record.change, record.entry) == (2, "sync", "", "*")
        assert (record.revision, record.fields) == (None, ("state:sync:contract",))
        assert '{"rev": 1}' not in record.text  # the name, never the text
        written = registry.apply([_entry("/svc/")], operation="sync", state=("sync:contract", "2"))
        records = list(registry.audit())
        assert [(r.operation, r.entry, r.revision) for r in records[2:]] == [
            ("sync", written[0].url, written[0].revision)
        ]
        assert registry.verify_audit().records == 3

    def test_a_refused_batch_logs_nothing(self, registry: Registry) -> None:
        _audited(registry)
        stored = registry.put(_entry("/svc/"))
        logged = [record.text for record in registry.audit()]
        with pytest.raises(ConflictError):
            registry.apply(
                [_entry("/svc/", "2"), _entry("/new/")],
                expect={stored.url: stored.revision + 1},
                state=("sync:x", "never"),
            )
        with pytest.raises(ValueError, match="more than once"):
            registry.apply([_entry("/svc/", "2")], [BASE + "/svc"])
        assert [record.text for record in registry.audit()] == logged
        assert registry.verify_audit().records == len(logged)

    def test_a_rotation_is_one_record_and_old_records_stay_verified(
        self, reopen: OpenRegistry, registry: Registry, key: MasterKey
    ) -> None:
        """The rotation record covers every entry's new revision; the records under
        the old key are never rewritten, and verify under the new key alone (their
        digests are in the chain the new key's MACs cover)."""
        _audited(registry)
        for index in range(3):
            registry.put(_entry(f"/svc{index}/", str(index)))
        logged = [record.text for record in registry.audit()]
        new_key = MasterKey.generate()
        registry.rotate(new_key)
        records = list(registry.audit())
        assert [record.text for record in records[:-1]] == logged
        rotation = records[-1]
        assert (rotation.operation, rotation.entry, rotation.fields) == (
            "rotate",
            "*",
            ("secrets",),
        )
        assert rotation.key_id == new_key.key_id
        assert {record.key_id for record in records[:-1]} == {key.key_id}
        assert rotation.since is not None and rotation.revision is not None
        revisions = sorted(entry.revision for entry in registry.entries())
        assert revisions == list(range(rotation.since, rotation.revision + 1))
        assert registry.verify_audit().records == 5
        registry.close()
        reopened = reopen(new_key)
        reopened.put(_entry("/after/"))
        report = reopened.verify_audit()
        assert (report.records, report.authenticated) == (6, 2)  # the rotation, the put

    def test_records_carry_no_secret(
        self, registry: Registry, key: MasterKey, caplog: pytest.LogCaptureFixture
    ) -> None:
        """No value, token or key in a stored record or in what the writes log: a
        record names fields, never their content."""
        store = _audited(registry)
        caplog.set_level(logging.DEBUG, logger="securesession")
        entry = _entry("/svc/", "x", secret_headers={"X-Api-Key": "api-SECRET"})
        registry.put(entry)
        sealed = store.read(entry.url)
        assert sealed is not None
        registry.put(
            dataclasses.replace(entry, secret_headers={"X-Api-Key": Secret("api-SECRET-2")})
        )
        registry.apply(state=("sync:x", "state-SECRET"))
        new_key = MasterKey.generate()
        registry.rotate(new_key)
        registry.remove(BASE + "/svc/")
        texts = [text for _, text in store.read_audit().rows]
        assert len(texts) == 6
        forbidden = [
            "SECRET",
            "gw-x",
            "user-x",
            key.to_base64(),
            new_key.to_base64(),
            *sealed.secrets.values(),
        ]
        for text in [*texts, caplog.text]:
            assert not [word for word in forbidden if word in text]
        assert "header.X-Api-Key" in texts[2]  # the name of what changed is there

    def test_audit_filters_by_entry_and_time(self, registry: Registry) -> None:
        _audited(registry)
        _log_four_changes(registry)
        of_b = list(registry.audit(entry=BASE + "/b/"))
        assert [(r.seq, r.entry) for r in of_b] == [(1, "*"), (4, BASE + "/b")]
        assert [r.seq for r in registry.audit(since=of_b[-1].time)] == [
            r.seq for r in registry.audit() if r.time >= of_b[-1].time
        ]
        assert list(registry.audit(since=of_b[-1].time + 3600)) == []

    def test_a_write_behind_securesessions_back_fails_verification(
        self, registry: Registry
    ) -> None:
        """The store's raw write adds no record: the registry's revision then has none."""
        store = _audited(registry)
        _log_four_changes(registry)
        sealed = store.read(BASE + "/b")
        assert sealed is not None
        store.write(sealed.key, sealed.settings, sealed.secrets, key_id=registry.key_id)
        with pytest.raises(AuditError, match="changed outside securesession"):
            registry.verify_audit()

    @pytest.mark.parametrize("tampering", list(_TAMPERING))
    def test_verify_names_the_tampered_record(
        self, registry: Registry, request: pytest.FixtureRequest, tampering: str
    ) -> None:
        store = _audited(registry)
        raw_audit: RawAuditWriter = request.getfixturevalue("raw_audit")
        _log_four_changes(registry)
        registry.verify_audit()
        rows = dict(store.read_audit().rows)
        assert sorted(rows) == [1, 2, 3, 4, 5]
        rewrites, message = _TAMPERING[tampering]
        for seq, text in rewrites(rows):
            raw_audit(seq, text)
        with pytest.raises(AuditError, match=message) as caught:
            registry.verify_audit()
        assert "SECRET" not in str(caught.value)

    def test_a_store_without_an_audit_log_says_so(self, registry: Registry) -> None:
        """Writes work, and asking for the log raises a RegistryError saying there is
        none: an empty listing, or a verification that passes, would claim a log that
        does not exist."""
        store = _store_of(registry)
        if store.keeps_audit:
            pytest.skip(f"{type(store).__name__} keeps an audit log")
        registry.put(_entry("/svc/"))
        registry.apply(state=("sync:x", "text"))
        registry.rotate(MasterKey.generate())
        for ask in (lambda: list(registry.audit()), registry.verify_audit):
            with pytest.raises(RegistryError, match="keeps no audit log") as caught:
                ask()
            assert not isinstance(caught.value, AuditError)


def _assert_same_entries(registry: Registry, entries: list[ServiceEntry]) -> None:
    for entry in entries:
        got = registry.get(entry.url + "/x")
        assert got == entry
        assert got is not None and got.tls is not None and entry.tls is not None
        assert got.tls == entry.tls
        cert, want = got.tls.client_cert, entry.tls.client_cert
        assert cert is not None and want is not None
        assert (cert.format, cert.data, cert.password) == (want.format, want.data, want.password)
        assert cert.fingerprint == want.fingerprint
