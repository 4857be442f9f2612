"""``securesession import`` is one transaction on SQLite: a disk that fills up part
way, or the process killed part way, leaves the registry exactly as it was (its
entries, their revisions, the registry's revision and its audit log, byte for byte)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from securesession import Credential, MasterKey, ServiceEntry
from securesession._registry.sqlite import SQLiteStore
from securesession.cli._app import run
from securesession.cli._bundle import key_transfer, seal_bundle

from ..secretscan import leaks
from .clihelp import CLI

Snapshot = tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]


def _entries(count: int) -> list[ServiceEntry]:
    return [
        ServiceEntry(
            f"https://svc{index}.example.com/api",
            gateway=Credential("gw", f"gwSECRET-{index}"),
            description="x" * 1500,  # a few entries fill a page
        )
        for index in range(count)
    ]


def _bundle(path: Path, key: MasterKey, entries: list[ServiceEntry]) -> Path:
    path.write_bytes(seal_bundle(entries, key_transfer(key), created_at=time.time()))
    return path


def _snapshot(path: Path) -> Snapshot:
    """Everything an import may change, read with plain SQL."""
    with sqlite3.connect(path) as db:
        return (
            db.execute("SELECT * FROM entries ORDER BY key").fetchall(),
            db.execute("SELECT * FROM audit ORDER BY seq").fetchall(),
            db.execute("SELECT * FROM meta ORDER BY name").fetchall(),
        )


@pytest.fixture
def seeded(ready: CLI) -> CLI:
    with closing(ready.open()) as registry:
        registry.put(ServiceEntry("https://kept.example.com/", gateway=Credential("g", "gSECRET")))
        registry.put(ServiceEntry("https://svc0.example.com/api", request=Credential.token("t")))
    return ready


def test_a_disk_full_part_way_imports_nothing(
    seeded: CLI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = _bundle(tmp_path / "b.bundle", seeded.key(), _entries(40))
    before = _snapshot(seeded.registry_path)
    with sqlite3.connect(seeded.registry_path) as db:
        pages = db.execute("PRAGMA page_count").fetchone()[0]
    opened = SQLiteStore._open

    def limited(store: SQLiteStore) -> Any:
        connection = opened(store)
        # Room for a few entries: the transaction hits SQLITE_FULL part way through.
        connection.execute(f"PRAGMA max_page_count = {pages + 4}")
        return connection

    for name in ("SECURESESSION_REGISTRY", "SECURESESSION_KEY_FILE"):
        monkeypatch.setenv(name, seeded.env[name])
    monkeypatch.setattr(SQLiteStore, "_open", limited)
    args = ["import", str(bundle), "--on-conflict", "replace"]
    assert run(args) == 1
    error = capsys.readouterr().err
    assert "database or disk is full" in error and "nothing was imported" in error
    assert not leaks(error)
    assert _snapshot(seeded.registry_path) == before
    # With room, the very same import goes through: the limit was what stopped it.
    monkeypatch.setattr(SQLiteStore, "_open", opened)
    assert run(args) == 0
    with closing(seeded.open()) as registry:
        assert registry.count() == 41
        registry.verify_audit()


REPLACE = ("--on-conflict", "replace")

# Run in a subprocess: the import pauses inside its transaction (after its 50th
# revision) and says so in a marker file, so the test kills it mid-transaction.
_PAUSING_IMPORT = """
import pathlib, sys, time
from securesession._registry import sqlite as backend
from securesession.cli._app import run

marker, calls = pathlib.Path(sys.argv[1]), [0]
next_revision = backend.SQLiteStore._next_revision

def pausing(self, connection):
    calls[0] += 1
    if calls[0] == 50:
        marker.write_text("in the transaction")
        time.sleep(60)
    return next_revision(self, connection)

backend.SQLiteStore._next_revision = pausing
sys.exit(run(sys.argv[2:]))
"""


def test_a_process_killed_part_way_imports_nothing(seeded: CLI, tmp_path: Path) -> None:
    bundle = _bundle(tmp_path / "big.bundle", seeded.key(), _entries(200))
    before = _snapshot(seeded.registry_path)
    marker = tmp_path / "marker"
    process = subprocess.Popen(
        [sys.executable, "-c", _PAUSING_IMPORT, str(marker), "import", str(bundle), *REPLACE],
        env=seeded.environment(None),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the import never reached its transaction"
            time.sleep(0.01)
        # The import holds the write lock: it is inside its transaction.
        with (
            pytest.raises(sqlite3.OperationalError, match="locked"),
            sqlite3.connect(seeded.registry_path, timeout=0) as probe,
        ):
            probe.execute("BEGIN IMMEDIATE")
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.communicate()
    assert process.returncode == -signal.SIGKILL
    assert _snapshot(seeded.registry_path) == before
    with closing(seeded.open()) as registry:
        assert registry.count() == 2
        registry.verify_audit()
