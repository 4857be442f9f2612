"""A registry opened with a key ring, on SQLite and PostgreSQL: which rings open it,
following a commit made by another process, never writing under a previous key, and a
commit that fails or is killed half-way (the registry stays under the old key, which
both the old key alone and the ring still open)."""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

import pytest

from securesession import (
    Credential,
    DecryptionError,
    KeyRing,
    MasterKey,
    Registry,
    Secret,
    ServiceEntry,
    open_registry,
)
from securesession._crypto import token_key_id
from securesession.registry import EncryptedRegistry, Rekey, SealedEntry

from ..backends import BASE, Backend
from ..registry_workers import b64, rotate_slowly, spawn


def entry(index: int, tag: str = "v1") -> ServiceEntry:
    return ServiceEntry(
        url=f"{BASE}/svc{index}",
        gateway=Credential(f"gw-{index}", f"gw-SECRET-{index}-{tag}"),
        secret_headers={"X-Api-Key": Secret(f"api-SECRET-{index}-{tag}")},
    )


def opened(url: str, key: MasterKey | KeyRing) -> EncryptedRegistry:
    """open_registry, typed as the built-in backends' registry (a context manager)."""
    registry = open_registry(url, key)
    assert isinstance(registry, EncryptedRegistry)
    return registry


def fill(backend: Backend, key: MasterKey, count: int) -> dict[str, ServiceEntry]:
    with opened(backend.url, key) as registry:
        return {stored.url: stored for stored in registry.apply([entry(n) for n in range(count)])}


def contents(registry: Registry) -> dict[str, ServiceEntry]:
    return {stored.url: stored for stored in registry.entries()}


def key_ids_of(backend: Backend, url: str) -> set[str | None]:
    return {token_key_id(token) for token in backend.secrets_of(url).values()}


def set_stored_key_id(backend: Backend, key_id: str) -> None:
    """What a restored backup, or someone with write access to the store, does."""
    if backend.kind == "sqlite":
        backend.sql("UPDATE meta SET value = ? WHERE name = 'key_id'", key_id)
    else:
        backend.sql("UPDATE state SET key_id = ?", key_id)


def test_a_ring_opens_a_registry_whose_active_key_it_holds(backend: Backend) -> None:
    old, new = MasterKey.generate(), MasterKey.generate()
    expected = fill(backend, old, 3)
    for ring in (KeyRing(old).stage(new), KeyRing(new, staged=old), KeyRing(new, previous=[old])):
        with opened(backend.url, ring) as registry:
            assert registry.key_id == old.key_id
            assert contents(registry) == expected
    stranger = KeyRing(new, previous=[MasterKey.generate()])
    with pytest.raises(DecryptionError) as refused:
        open_registry(backend.url, stranger)
    message = str(refused.value)
    assert old.key_id in message and new.key_id in message and "wrong master key" in message
    assert new.to_base64() not in message


def test_a_host_with_the_staged_key_follows_another_hosts_commit(backend: Backend) -> None:
    old, new = MasterKey.generate(), MasterKey.generate()
    expected = fill(backend, old, 5)
    ring = KeyRing(old).stage(new)
    reader = opened(backend.url, ring)  # one host
    old_only = opened(backend.url, old)  # a host the staged key never reached
    try:
        with opened(backend.url, ring) as committer:  # another host
            committer.rotate(new)
        assert key_ids_of(backend, f"{BASE}/svc0") == {new.key_id}
        assert contents(reader) == {
            url: stored.with_metadata(revision=got.revision, updated_at=got.updated_at)
            for (url, stored), got in zip(expected.items(), reader.entries(), strict=True)
        }
        # The store refuses the reader's old key id inside the transaction; the reader
        # holds the committed key as staged, so it follows it and writes once more.
        written = reader.put(entry(0, "v2"))
        assert key_ids_of(backend, written.url) == {new.key_id}
        assert reader.key_id == new.key_id
        assert isinstance(reader, EncryptedRegistry) and reader.key_ring.active == new
        with pytest.raises(DecryptionError, match="wrong master key"):
            old_only.put(entry(1, "v2"))  # fails closed, writes nothing
        with opened(backend.url, new) as new_only:
            stored = new_only.get(f"{BASE}/svc0")
            assert stored is not None and stored.gateway is not None
            assert stored.gateway.password.reveal() == "gw-SECRET-0-v2"
            assert new_only.get(f"{BASE}/svc1") == old_only_entry(expected, 1, new_only)
    finally:
        reader.close()
        old_only.close()


def old_only_entry(expected: dict[str, ServiceEntry], index: int, registry: Registry) -> object:
    """The entry as first stored, with the revision the commit gave it."""
    original = expected[f"{BASE}/svc{index}"]
    now = registry.get(original.url)
    assert now is not None
    return original.with_metadata(revision=now.revision, updated_at=now.updated_at)


def test_writes_never_go_under_a_previous_key(backend: Backend) -> None:
    old, new = MasterKey.generate(), MasterKey.generate()
    fill(backend, old, 3)
    ring = KeyRing(old).stage(new)
    with opened(backend.url, ring) as follower:
        with opened(backend.url, ring) as committer:
            committer.rotate(new)
        follower.put(entry(0, "v2"))  # follows the commit: old is a previous key now
        set_stored_key_id(backend, old.key_id)  # rolled back behind its back
        before = backend.dump()
        with pytest.raises(DecryptionError, match="only as a previous key"):
            follower.put(entry(1, "v3"))
        assert backend.dump() == before
        assert follower.get(f"{BASE}/svc0") is not None  # reads still work
    # A ring that holds the store's recorded key only as a previous one opens it to
    # read, and refuses every write.
    with opened(backend.url, KeyRing(new, previous=[old])) as restored:
        assert restored.key_id == old.key_id
        assert len(contents(restored)) == 3
        with pytest.raises(DecryptionError, match="only as a previous key") as refused:
            restored.remove(f"{BASE}/svc2")
        assert old.to_base64() not in str(refused.value)
    assert backend.dump() == before


def test_a_failed_commit_changes_nothing_and_both_keys_still_open_it(backend: Backend) -> None:
    old, new = MasterKey.generate(), MasterKey.generate()
    expected = fill(backend, old, 40)
    before = backend.dump()
    ring = KeyRing(old).stage(new)
    with opened(backend.url, ring) as registry:
        assert isinstance(registry, EncryptedRegistry)
        store = registry.store
        rewrite_all = store.rewrite_all

        def failing_rewrite_all(rekey: Rekey) -> int:
            done = 0

            def reseal_then_fail(sealed: SealedEntry) -> dict[str, str]:
                nonlocal done
                done += 1
                if done == 30:
                    raise OSError("disk full (simulated)")
                return rekey.reseal(sealed)

            return rewrite_all(rekey._replace(reseal=reseal_then_fail))

        store.rewrite_all = failing_rewrite_all  # type: ignore[method-assign]
        with pytest.raises(OSError, match="simulated"):
            registry.rotate(new)
        assert registry.key_id == old.key_id  # and it still writes under the old key
    assert backend.dump() == before
    for key in (old, ring):
        with opened(backend.url, key) as reopened:
            assert contents(reopened) == expected
    with pytest.raises(DecryptionError, match="wrong master key"):
        opened(backend.url, new)


def test_a_commit_killed_half_way_leaves_a_registry_both_keys_open(
    backend: Backend, tmp_path: Path
) -> None:
    old, new = MasterKey.generate(), MasterKey.generate()
    expected = fill(backend, old, 260)
    marker = tmp_path / "progress"
    child = spawn().Process(
        target=rotate_slowly,
        # Past the first PostgreSQL batch of 200, so rewritten rows are in flight.
        args=(backend.url, b64(old), b64(new), str(marker), 230, 0.002),
    )
    child.start()
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert time.monotonic() < deadline, "the committing process never got going"
            time.sleep(0.005)
        os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
        child.join(10)
    finally:
        if child.is_alive():
            child.kill()
    assert child.exitcode == -signal.SIGKILL
    deadline = time.monotonic() + 10
    while True:  # PostgreSQL ends the dead client's transaction once it sees the socket close
        try:
            reopened = opened(backend.url, KeyRing(old).stage(new))
            break
        except DecryptionError:
            raise
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    with reopened:
        assert reopened.key_id == old.key_id
        assert contents(reopened) == expected
    with opened(backend.url, old) as old_only:
        assert contents(old_only) == expected


def test_key_usage_counts_entries_per_key_id(backend: Backend) -> None:
    old, new = MasterKey.generate(), MasterKey.generate()
    fill(backend, old, 4)
    with opened(backend.url, KeyRing(old).stage(new)) as registry:
        assert isinstance(registry, EncryptedRegistry)
        assert registry.key_usage() == {old.key_id: 4}
        registry.rotate(new)
        assert registry.key_usage() == {new.key_id: 4}


def test_a_host_lacking_the_staged_key_says_so_when_it_opens(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    old, new = MasterKey.generate(), MasterKey.generate()
    fill(backend, old, 1)
    with opened(backend.url, KeyRing(old).stage(new)) as stager:
        stager.record_staged_key_id(new.key_id, operation="stage")
        assert stager.staged_key_id == new.key_id
    caplog.set_level(logging.WARNING, logger="securesession")
    with opened(backend.url, KeyRing(old).stage(new)):
        assert not [r for r in caplog.records if "staged for the next" in r.getMessage()]
    with opened(backend.url, old) as lagging:
        assert lagging.staged_key_id == new.key_id
    warned = [r.getMessage() for r in caplog.records if "staged for the next" in r.getMessage()]
    assert len(warned) == 1 and new.key_id in warned[0] and old.key_id in warned[0]
    assert new.to_base64() not in warned[0]
    with opened(backend.url, KeyRing(old).stage(new)) as committer:
        committer.rotate(new)
        assert committer.staged_key_id is None  # committed: the staged key is the active one
