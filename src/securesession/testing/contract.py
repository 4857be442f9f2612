"""The registry backend contract, as a pytest test class for backend authors.

Subclass :class:`RegistryContract` in your test suite and provide the
``open_registry`` fixture: a function that opens *the same* initially empty
registry with a given master key each time it is called within one test::

    from securesession.testing.contract import RegistryContract

    class TestMyBackend(RegistryContract):
        @pytest.fixture
        def open_registry(self, tmp_path):
            return lambda key: securesession.open_registry(f"mine://{tmp_path}", key)

Every built-in backend runs this same class.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from .. import (
    Credential,
    DecryptionError,
    EncryptedRegistry,
    EntryRef,
    InvalidURLError,
    MasterKey,
    Registry,
    RegistryCorruptError,
    Secret,
    ServiceEntry,
)
from .._registry._base import ENTRY_TAG_FIELD, RegistryStore, seal

__all__ = ["RegistryContract"]

OpenRegistry = Callable[[MasterKey], Registry]

BASE = "https://gw.example.test:8443"


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


def _sealed_by_0_1_0(entry: ServiceEntry, key: MasterKey) -> tuple[dict[str, Any], dict[str, str]]:
    """*entry* (credentials and secret headers, no TLS profile) as securesession 0.1.0
    stored it: the same settings, no entry tag, field tokens under the old context."""
    settings, _ = seal(entry, key)
    clear: dict[str, str] = {}
    for role, credential in (("gateway", entry.gateway), ("request", entry.request)):
        if credential is not None:
            clear[f"{role}.username"] = credential.username
            clear[f"{role}.password"] = credential.password.reveal()
    for header, value in entry.secret_headers.items():
        clear[f"header.{header}"] = value.reveal()
    secrets = {
        name: key.encrypt(
            value.encode(),
            b"securesession entry\x00" + entry.url.encode() + b"\x00" + name.encode(),
        )
        for name, value in clear.items()
    }
    return settings, secrets


class RegistryContract:
    """What every :class:`~securesession.Registry` backend must do."""

    @pytest.fixture
    def open_registry(self) -> OpenRegistry:
        raise NotImplementedError("provide an open_registry fixture")

    @pytest.fixture
    def key(self) -> MasterKey:
        return MasterKey.generate()

    @pytest.fixture
    def registry(self, open_registry: OpenRegistry, key: MasterKey) -> Registry:
        return open_registry(key)

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

    def test_wrong_key_is_refused(self, open_registry: OpenRegistry, registry: Registry) -> None:
        registry.put(_entry("/svc/"))
        registry.close()
        with pytest.raises(DecryptionError, match="wrong master key"):
            open_registry(MasterKey.generate())

    def test_rotate_then_only_the_new_key_works(
        self, open_registry: OpenRegistry, registry: Registry, key: MasterKey
    ) -> None:
        for index in range(5):
            registry.put(_entry(f"/svc{index}/", str(index)))
        before = {e.url: e for e in registry.entries()}
        new_key = MasterKey.generate()
        ticks: list[None] = []
        registry.rotate(new_key, progress=lambda: ticks.append(None))
        assert len(ticks) == 5  # once per entry
        assert registry.key_id == new_key.key_id
        assert {e.url: e for e in registry.entries()} == before
        registry.close()
        with pytest.raises(DecryptionError):
            open_registry(key)
        reopened = open_registry(new_key)
        assert {e.url: e for e in reopened.entries()} == before

    def test_a_writer_still_holding_the_old_key_is_refused(
        self, open_registry: OpenRegistry, registry: Registry, key: MasterKey
    ) -> None:
        """After another process rotates, a put under the old key would store an entry
        the new key cannot read: it is refused, and the registry stays whole."""
        stale = open_registry(key)
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

    def test_rotation_upgrades_legacy_entries(
        self, open_registry: OpenRegistry, registry: Registry, key: MasterKey
    ) -> None:
        """Entries written by securesession 0.1.0 (no entry tag) load, and a rotation
        rewrites them authenticated."""
        store = _store_of(registry)
        entry = _entry("/old/", secret_headers={"X-Api-Key": "api-SECRET"})
        store.write(entry.url, *_sealed_by_0_1_0(entry, key), key_id=registry.key_id)
        assert registry.get(BASE + "/old/x") == entry
        new_key = MasterKey.generate()
        registry.rotate(new_key)
        sealed = store.read(entry.url)
        assert sealed is not None and ENTRY_TAG_FIELD in sealed.secrets
        registry.close()
        assert open_registry(new_key).get(BASE + "/old/x") == entry

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
