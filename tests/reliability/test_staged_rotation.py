"""Staged key rotation with no downtime, on SQLite and PostgreSQL: one process runs
``rotate-key --stage``, ``--commit`` and ``--retire`` while a reader process, holding
the key ring (old and staged key), keeps making requests through ``SecureSession`` to a
loopback gateway that checks the injected credentials.

The reader's cache lives 20 ms, so it reloads entries all through the commit (which is
slowed to last a few hundred milliseconds): it reads them under the old key until the
commit's one transaction lands, then under the new one. Not one request may fail.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import pytest

from securesession import Credential, KeyRing, MasterKey, SecureSession, ServiceEntry, open_registry
from securesession._crypto import token_key_id
from securesession._registry import _base
from securesession._registry._codec import reseal
from securesession.cli import main
from securesession.registry import EncryptedRegistry, SealedEntry
from securesession.testing import GatewayServer

from ..backends import Backend
from ..registry_workers import spawn

SERVICES = 120
THREADS = 4
GATEWAY = ("gw-user", "gw-SECRET-rotation")
REQUEST = ("req-user", "req-SECRET-rotation")
#: Per entry re-encrypted: makes the commit long enough for many reloads inside it.
COMMIT_DELAY_S = 0.003
#: How long each phase (before the commit, after it, after the retirement) runs.
PHASE_S = 0.4


def serve_through_rotation(
    url: str, key_file: str, base: str, ready: Any, stop: Any, out: Any
) -> None:
    """The reader host: a SecureSession over a registry opened with the key ring in
    *key_file*, called by several threads until *stop*. Reports when each request was
    sent and whether it succeeded, and the key id of every entry it loaded."""
    try:
        registry = open_registry(url, KeyRing.from_file(key_file))
        assert isinstance(registry, EncryptedRegistry)
        loads: list[tuple[float, str | None]] = []
        read = registry.store.read

        def recording_read(key: str) -> SealedEntry | None:
            sealed = read(key)
            if sealed is not None:
                loads.append((time.monotonic(), token_key_id(sealed.secrets["$entry"])))
            return sealed

        registry.store.read = recording_read  # type: ignore[method-assign]
        sent: list[float] = []
        failed: list[str] = []
        lock = threading.Lock()

        def call(session: SecureSession, thread: int) -> None:
            count = 0
            while not stop.is_set():
                index = (thread * 31 + count) % SERVICES
                started = time.monotonic()
                try:
                    response = session.get(f"{base}/svc{index}/item/{count}", timeout=10)
                    response.close()
                    problem = (
                        None if response.status_code == 200 else f"HTTP {response.status_code}"
                    )
                except Exception:
                    problem = traceback.format_exc()
                with lock:
                    sent.append(started)
                    if problem is not None:
                        failed.append(f"{started:.3f}: {problem}")
                if not ready.is_set() and problem is None:
                    ready.set()
                count += 1

        with SecureSession(registry, cache_ttl=0.02) as session:
            workers = [threading.Thread(target=call, args=(session, n)) for n in range(THREADS)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
        registry.close()
        out.put(("ok", {"sent": sent, "failed": failed, "loads": loads}))
    except BaseException:
        ready.set()
        out.put(("error", traceback.format_exc()))


def cli(*args: str) -> None:
    assert main(list(args)) == 0, args


def test_stage_commit_retire_while_a_reader_makes_requests(
    backend: Backend,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key_file = tmp_path / "master.key"
    old = MasterKey.generate()
    old.save(key_file)
    options = ("--registry", backend.url, "--key-file", str(key_file))
    with GatewayServer(expect_gateway=GATEWAY, expect_request=REQUEST) as server:
        with contextlib.closing(open_registry(backend.url, old)) as registry:
            registry.apply(
                [
                    ServiceEntry(
                        url=f"{server.url}/svc{index}",
                        gateway=Credential(*GATEWAY),
                        request=Credential(*REQUEST),
                    )
                    for index in range(SERVICES)
                ]
            )

        cli(*options, "rotate-key", "--stage")
        staged = KeyRing.from_file(key_file).staged
        assert staged is not None
        # Distribute: the reader host gets its own copy of the key file.
        host_key_file = tmp_path / "host" / "master.key"
        host_key_file.parent.mkdir(mode=0o700)
        shutil.copy2(key_file, host_key_file)

        context = spawn()
        ready, stop, out = context.Event(), context.Event(), context.Queue()
        reader = context.Process(
            target=serve_through_rotation,
            args=(backend.url, str(host_key_file), server.url, ready, stop, out),
        )
        reader.start()
        try:
            assert ready.wait(60), "the reader never got a response"
            time.sleep(PHASE_S)

            def slow_reseal(*args: Any, **options: Any) -> Any:
                time.sleep(COMMIT_DELAY_S)
                return reseal(*args, **options)

            monkeypatch.setattr(_base, "reseal", slow_reseal)
            commit_started = time.monotonic()
            cli(*options, "rotate-key", "--commit")
            commit_ended = time.monotonic()
            monkeypatch.undo()
            time.sleep(PHASE_S)

            cli(*options, "rotate-key", "--retire", old.key_id)
            time.sleep(PHASE_S)
        finally:
            stop.set()
            status, result = out.get(timeout=60)
            reader.join(10)
            if reader.is_alive():
                reader.kill()
        assert status == "ok", result
        recorded = len(server.requests)

    assert KeyRing.from_file(key_file).key_ids == (staged.key_id,)
    assert result["failed"] == [], result["failed"][:3]
    sent: list[float] = result["sent"]
    assert recorded == len(sent)  # every request reached the gateway, and none failed there
    before = sum(1 for moment in sent if moment < commit_started)
    during = sum(1 for moment in sent if commit_started <= moment <= commit_ended)
    after = sum(1 for moment in sent if moment > commit_ended)
    assert commit_ended - commit_started > SERVICES * COMMIT_DELAY_S
    assert before > 20 and during > 20 and after > 20, (before, during, after)
    loads: list[tuple[float, str | None]] = result["loads"]
    assert {key_id for _, key_id in loads} == {old.key_id, staged.key_id}
    # Entries were reloaded during the commit (under the old key: its transaction was
    # not committed yet), and under the new key once it was.
    assert any(commit_started <= moment <= commit_ended for moment, _ in loads)
    assert all(moment > commit_started for moment, key_id in loads if key_id == staged.key_id)
    assert any(key_id == staged.key_id for moment, key_id in loads if moment > commit_ended)
    output = capsys.readouterr()
    for key in (old, staged):
        assert key.to_base64() not in output.out + output.err
