"""EncryptedRegistry over one shared in-memory store, as several hosts would share a
database: following a commit on reads as well as writes (a store that checks the key
id when it reads, as Vault's does), from many threads at once, and what rotate() leaves
in the registry's ring."""

from __future__ import annotations

import threading

import pytest

from securesession import Credential, DecryptionError, KeyRing, MasterKey, ServiceEntry
from securesession.memory import MemoryStore
from securesession.registry import EncryptedRegistry, SealedEntry, rekeyed_error

BASE = "https://gw.example.test"


class KeyCheckingStore(MemoryStore):
    """A store that, like Vault's, refuses to read for a reader whose idea of the
    registry's key id is stale, until it asks again (``stored_key_id``)."""

    def __init__(self) -> None:
        super().__init__()
        self.readers_key_id: str | None = None

    def stored_key_id(self) -> str | None:
        self.readers_key_id = super().stored_key_id()
        return self.readers_key_id

    def read(self, key: str) -> SealedEntry | None:
        current = super().stored_key_id()
        if self.readers_key_id is not None and current != self.readers_key_id:
            raise rekeyed_error("memory://shared", current, self.readers_key_id)
        return super().read(key)


def entry(index: int, tag: str = "v1") -> ServiceEntry:
    return ServiceEntry(f"{BASE}/svc{index}", gateway=Credential("gw", f"gw-SECRET-{tag}"))


def test_a_read_refused_for_a_stale_key_id_is_retried_under_the_committed_key() -> None:
    old, new = MasterKey.generate(), MasterKey.generate()
    store = KeyCheckingStore()
    host = EncryptedRegistry(store, KeyRing(old).stage(new), name="memory://shared")
    host.put(entry(0))
    lacking = EncryptedRegistry(store, old, name="memory://shared")  # never got the new key
    EncryptedRegistry(store, KeyRing(old).stage(new), name="memory://shared").rotate(new)

    store.readers_key_id = old.key_id  # the host's view of the store is from before
    loaded = host.get(f"{BASE}/svc0/x")
    assert loaded is not None and host.key_id == new.key_id
    assert host.key_ring.active == new

    store.readers_key_id = old.key_id
    with pytest.raises(DecryptionError, match="re-keyed to key id"):
        lacking.get(f"{BASE}/svc0/x")  # it cannot follow: the refusal stands


def test_many_threads_follow_one_commit_and_all_write_under_the_new_key() -> None:
    old, new = MasterKey.generate(), MasterKey.generate()
    store = MemoryStore()
    host = EncryptedRegistry(store, KeyRing(old).stage(new), name="memory://shared")
    host.apply([entry(n) for n in range(16)])
    EncryptedRegistry(store, KeyRing(old).stage(new), name="memory://shared").rotate(new)
    errors: list[BaseException] = []
    start = threading.Barrier(16)

    def write(index: int) -> None:
        try:
            start.wait(10)
            host.put(entry(index, "v2"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    new_only = EncryptedRegistry(store, new, name="memory://shared")
    assert {e.gateway.password.reveal() for e in new_only.entries() if e.gateway} == {
        "gw-SECRET-v2"
    }


def test_rotate_leaves_the_ring_with_the_new_key_active() -> None:
    old, staged, fresh = MasterKey.generate(), MasterKey.generate(), MasterKey.generate()
    registry = EncryptedRegistry(MemoryStore(), KeyRing(old).stage(staged), name="memory://")
    registry.put(entry(0))
    registry.rotate(staged)
    assert registry.key_ring.active == staged and registry.key_ring.previous == (old,)
    assert registry.key_id == staged.key_id
    registry.rotate(fresh)  # a key the ring never had: the others stay, decrypt-only
    assert registry.key_ring.active == fresh
    assert set(registry.key_ring.previous_ids) == {old.key_id, staged.key_id}
    stored = registry.get(f"{BASE}/svc0/")
    assert stored is not None and stored.gateway is not None
    assert stored.gateway.password.reveal() == "gw-SECRET-v1"
