"""``securesession import`` into PostgreSQL is one transaction: the importing backend
terminated part way (``pg_terminate_backend`` from another connection) leaves DST
exactly as it was, and the error says the connection was lost; a loss the one retry
survives imports everything, once."""

from __future__ import annotations

import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from securesession import Credential, MasterKey, ServiceEntry, open_registry
from securesession._registry.postgres._store import PostgresStore
from securesession.cli._app import run
from securesession.cli._bundle import key_transfer, seal_bundle

from .. import pgcluster
from ..secretscan import leaks


def _state(cluster: pgcluster.PostgresCluster, db: str) -> tuple[list[Any], list[Any], list[Any]]:
    with cluster.admin(db) as admin:
        return (
            admin.execute("SELECT key, revision, settings, secrets FROM securesession.entries"
                          " ORDER BY key").fetchall(),
            admin.execute("SELECT * FROM securesession.audit ORDER BY seq").fetchall(),
            admin.execute("SELECT revision, key_id FROM securesession.state").fetchall(),
        )  # fmt: skip


@pytest.mark.parametrize("kills", [2, 1], ids=["both-attempts-killed", "retry-survives"])
def test_a_terminated_backend_mid_import(
    postgres_cluster: pgcluster.PostgresCluster,
    postgres_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    kills: int,
) -> None:
    key = MasterKey.generate()
    key_file = tmp_path / "master.key"
    key.save(key_file)
    with closing(open_registry(postgres_url, key)) as registry:
        registry.put(ServiceEntry("https://kept.example.com/", gateway=Credential("g", "gSECRET")))
    entries = [
        ServiceEntry(f"https://svc{i}.example.com/", gateway=Credential("gw", f"gwSECRET-{i}"))
        for i in range(60)
    ]
    bundle = tmp_path / "b.bundle"
    bundle.write_bytes(seal_bundle(entries, key_transfer(key), created_at=time.time()))
    db = postgres_url.rsplit("/", 1)[1].split("?")[0]
    before = _state(postgres_cluster, db)

    # Inside the import's transaction, after 20 writes, hand the backend's pid to the
    # test and wait until it has been terminated; then the next statement fails.
    pids: list[int] = []
    terminated = threading.Event()
    reading = PostgresStore._row
    calls: dict[int, int] = {}

    def pausing(store: PostgresStore, connection: Any, key: str) -> Any:
        pid = connection.info.backend_pid
        calls[pid] = calls.get(pid, 0) + 1
        if calls[pid] == 20 and len(pids) < kills:
            terminated.clear()
            pids.append(pid)
            assert terminated.wait(10)
        return reading(store, connection, key)

    monkeypatch.setattr(PostgresStore, "_row", pausing)

    def killer() -> None:
        with postgres_cluster.admin(db) as admin:
            done = 0
            deadline = time.monotonic() + 20
            while done < kills and time.monotonic() < deadline:
                if len(pids) > done:
                    admin.execute("SELECT pg_terminate_backend(%s)", (pids[done],))
                    done += 1
                    time.sleep(0.2)  # the backend is gone before the import goes on
                    terminated.set()
                time.sleep(0.01)

    thread = threading.Thread(target=killer)
    thread.start()
    code = run(["--registry", postgres_url, "--key-file", str(key_file), "import", str(bundle)])
    thread.join()
    error = capsys.readouterr().err
    assert not leaks(error)
    assert len(pids) == kills
    if kills == 2:
        assert code == 1
        assert "nothing was imported" in error and "terminat" in error.lower()
        assert _state(postgres_cluster, db) == before
    else:
        assert code == 0, error
        assert "retrying once" in error
        with closing(open_registry(postgres_url, key)) as registry:
            assert registry.count() == 61
            assert [r.operation for r in registry.audit()].count("import") == 60
            registry.verify_audit()
