"""kill -9 in the middle of ``rotate``: afterwards the registry opens and decrypts
completely with exactly one of the two keys."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from securesession import (
    Credential,
    DecryptionError,
    MasterKey,
    Registry,
    ServiceEntry,
    open_registry,
)

from ..backends import BASE, Backend
from ..registry_workers import b64, rotate_slowly, spawn

ENTRIES = 300


def fill(registry: Registry) -> dict[str, ServiceEntry]:
    stored = {}
    for index in range(ENTRIES):
        entry = registry.put(
            ServiceEntry(
                url=f"{BASE}/svc{index}",
                gateway=Credential(f"gw-{index}", f"gw-SECRET-{index}"),
                request=Credential(f"req-{index}", f"req-SECRET-{index}"),
                secret_headers={"X-Api-Key": f"api-SECRET-{index}"},
            )
        )
        stored[entry.url] = entry
    return stored


def opens_with(backend: Backend, key: MasterKey, expected: dict[str, ServiceEntry]) -> bool:
    """Whether *key* opens the registry; if it does, every entry must decrypt intact."""
    try:
        registry = open_registry(backend.url, key)
    except DecryptionError as exc:
        refused = str(exc)
    else:
        refused = ""
    if refused:
        assert "wrong master key" in refused
        return False
    with registry:
        assert {entry.url: entry for entry in registry.entries()} == expected
    return True


def wait_for(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.005)
    return False


@pytest.mark.parametrize("when", ["midway", "after the last entry"])
def test_kill_9_during_rotate_leaves_exactly_one_key(
    backend: Backend, tmp_path: Path, when: str
) -> None:
    old, new = MasterKey.generate(), MasterKey.generate()
    with open_registry(backend.url, old) as registry:
        expected = fill(registry)
    marker = tmp_path / "progress"
    # Midway is past the first PostgreSQL batch of 200, so updated rows are in flight.
    signal_after = 250 if when == "midway" else ENTRIES
    child = spawn().Process(
        target=rotate_slowly,
        args=(backend.url, b64(old), b64(new), str(marker), signal_after, 0.002),
    )
    child.start()
    try:
        assert wait_for(marker.exists, 60), "the rotating process never got going"
        os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
        child.join(10)
    finally:
        if child.is_alive():
            child.kill()
    assert child.exitcode == -signal.SIGKILL
    if backend.kind == "postgres":
        # The server ends the dead client's transaction when it sees the socket close.
        assert wait_for(
            lambda: (
                not backend.sql(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                    " AND backend_xid IS NOT NULL AND pid <> pg_backend_pid()"
                )
            ),
            10,
        )
    works = {name: opens_with(backend, key, expected) for name, key in (("old", old), ("new", new))}
    assert sum(works.values()) == 1, works
    if when == "midway":
        assert works["old"], "a rotation that was killed half-way must not have committed"
