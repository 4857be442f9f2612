"""Cross-process invalidation: a change made by one process reaches another's session.

The watching process serves the entry from a SecureSession whose cache TTL is an
hour, so only invalidation (not expiry) can make it see the change: on SQLite
because every lookup is an indexed query, on PostgreSQL through LISTEN/NOTIFY.
"""

from __future__ import annotations

import time

import pytest

from securesession import MasterKey, open_registry

from ..backends import BASE, Backend
from ..registry_workers import b64, entry, spawn, watch_entry

# SQLite: the next lookup after the commit sees it. PostgreSQL: the promise.
_BOUND_S = {"sqlite": 0.25, "postgres": 1.0}


@pytest.mark.parametrize("change", ["update", "remove"])
def test_other_process_sees_a_change_within_the_bound(backend: Backend, change: str) -> None:
    key = MasterKey.generate()
    target = BASE + "/svc/"
    with open_registry(backend.url, key) as registry:
        registry.put(entry(target, "v1"))
        context = spawn()
        ready, out = context.Event(), context.Queue()
        child = context.Process(
            target=watch_entry, args=(backend.url, b64(key), target + "x", ready, out, 10.0)
        )
        child.start()
        try:
            assert ready.wait(30), "the watching process did not start"
            time.sleep(0.2)  # let it settle into serving from its cache
            if change == "update":
                registry.put(entry(target, "v2"))
            else:
                assert registry.remove(target)
            acked = time.monotonic()
            status, seen_at, gone = out.get(timeout=30)
        finally:
            child.join(30)
            if child.is_alive():
                child.kill()
    assert status == "changed", seen_at
    assert gone is (change == "remove")
    assert seen_at - acked < _BOUND_S[backend.kind]
