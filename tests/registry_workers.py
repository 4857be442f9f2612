"""Child-process bodies for the multi-process tests (run under the ``spawn`` start method).

Each function is a separate service process: it opens the registry by URL with a
key given as base64 text (keys cannot be pickled), does its part, and reports
through a queue or its return value. Nothing here asserts: the parent judges.
"""

from __future__ import annotations

import multiprocessing
import random
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict

from securesession import (
    Credential,
    DecryptionError,
    MasterKey,
    SecureSession,
    ServiceEntry,
    open_registry,
)
from securesession.registry import EncryptedRegistry, Rekey, SealedEntry

# -- two-process invalidation ---------------------------------------------------------


def watch_entry(
    url: str,
    key_b64: str,
    entry_url: str,
    ready: Any,
    out: Any,
    timeout: float,
) -> None:
    """Serve *entry_url* from a long-TTL session; report when its password changes."""
    registry = open_registry(url, MasterKey.from_base64(key_b64))
    try:
        with SecureSession(registry, cache_ttl=3600) as session:
            entry = session.entry_for(entry_url)
            first = entry.gateway.password if entry and entry.gateway else None
            ready.set()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                entry = session.entry_for(entry_url)
                now = entry.gateway.password if entry and entry.gateway else None
                if now != first:
                    out.put(("changed", time.monotonic(), entry is None))
                    return
                time.sleep(0.001)
            out.put(("timeout", time.monotonic(), False))
    except BaseException:
        out.put(("error", traceback.format_exc(), False))
    finally:
        registry.close()


# -- many writers ---------------------------------------------------------------------


def entry(url: str, tag: str) -> ServiceEntry:
    return ServiceEntry(url=url, gateway=Credential(f"gw-{tag}", f"gw-SECRET-{tag}"))


def write_many(
    url: str, key_b64: str, base: str, worker: int, operations: int, start: Any
) -> tuple[float, float, list[tuple[str, str, str, int]]]:
    """Put, update and remove own entries, and race the others on shared ones.

    Returns when it began and ended writing, and every acknowledged operation:
    ``(op, key, tag, revision)`` with op ``put`` or ``remove`` (revision 1 if
    something was removed, else 0).
    """
    rng = random.Random(worker)
    registry = open_registry(url, MasterKey.from_base64(key_b64))
    acked: list[tuple[str, str, str, int]] = []
    try:
        start.wait(120)
        began = time.monotonic()
        for number in range(operations):
            tag = f"{worker}-{number}"
            roll = rng.random()
            if roll < 0.3:
                key = f"{base}/shared/s{rng.randrange(4)}"
                stored = registry.put(entry(key, tag))
                acked.append(("put", stored.url, tag, stored.revision))
            elif roll < 0.85:
                key = f"{base}/w{worker}/e{rng.randrange(6)}"
                stored = registry.put(entry(key, tag))
                acked.append(("put", stored.url, tag, stored.revision))
            else:
                key = f"{base}/w{worker}/e{rng.randrange(6)}"
                removed = registry.remove(key)
                acked.append(("remove", ServiceEntry(url=key).url, tag, int(removed)))
            time.sleep(rng.random() * 0.003)  # vary the interleaving; keep them overlapping
        ended = time.monotonic()
    finally:
        registry.close()
    return began, ended, acked


# -- kill -9 during rotate ------------------------------------------------------------


def rotate_slowly(
    url: str, old_b64: str, new_b64: str, marker: str, signal_after: int, delay: float
) -> None:
    """Rotate to the new key, re-encrypting slowly; touch *marker* after
    *signal_after* entries so the parent can kill us mid-way (from then on each
    entry takes ten times *delay*, leaving the parent a wide window)."""
    registry = open_registry(url, MasterKey.from_base64(old_b64))
    assert isinstance(registry, EncryptedRegistry)
    store = registry.store
    rewrite_all = store.rewrite_all

    def slow_rewrite_all(rekey: Rekey) -> int:
        done = 0

        def slow(sealed: SealedEntry) -> dict[str, str]:
            nonlocal done
            done += 1
            if done == signal_after:
                Path(marker).touch()
            time.sleep(delay if done < signal_after else 10 * delay)
            return rekey.reseal(sealed)

        return rewrite_all(rekey._replace(reseal=slow))  # its journal and state remapper kept

    store.rewrite_all = slow_rewrite_all  # type: ignore[method-assign]
    registry.rotate(MasterKey.from_base64(new_b64))
    Path(marker + ".done").touch()
    registry.close()


# -- concurrent sessions --------------------------------------------------------------


def service_tag(index: int, version: int) -> tuple[str, str, str, str]:
    """Gateway user/password and request user/password of service *index*, *version*."""
    return (
        f"gw-{index}",
        f"gw-SECRET-{index}-v{version}",
        f"req-{index}",
        f"req-SECRET-{index}-v{version}",
    )


def service_entry(base: str, index: int, version: int) -> ServiceEntry:
    gw_user, gw_password, user, password = service_tag(index, version)
    return ServiceEntry(
        url=f"{base}/svc{index}",
        gateway=Credential(gw_user, gw_password),
        request=Credential(user, password),
    )


class CallStats(TypedDict):
    """What :func:`call_services` counted: requests sent, loads refused (old key), registries
    reopened with the new key, unexpected errors and the first one's traceback."""

    sent: int
    refused: int
    reopened: int
    errors: int
    first_error: str


def call_services(
    url: str,
    old_b64: str,
    new_b64: str,
    base: str,
    services: int,
    threads: int,
    stop: Any,
    process: int,
    start: Any,
) -> CallStats:
    """*threads* threads calling random services through one shared SecureSession,
    until the *stop* event is set (by the test, once it has made its changes).

    When the registry is rotated under us, loads fail with "wrong key" (nothing is
    sent); like a service whose operator deployed the new key, we then reopen the
    registry with it. Returns counters and the first unexpected error, if any.
    """
    keys = [MasterKey.from_base64(old_b64), MasterKey.from_base64(new_b64)]
    lock = threading.Lock()
    state: dict[str, Any] = {"generation": 0, "registries": []}

    def open_session(generation: int) -> SecureSession:
        registry = open_registry(url, keys[min(generation, 1)])
        state["registries"].append(registry)
        return SecureSession(registry, cache_ttl=300)

    state["session"] = open_session(0)
    stats: CallStats = {"sent": 0, "refused": 0, "reopened": 0, "errors": 0, "first_error": ""}
    start.wait(60)
    # A safety net only: the test sets *stop* long before this.
    deadline = time.monotonic() + 120

    def run(thread: int) -> None:
        rng = random.Random(process * 1000 + thread)
        count = 0
        while not stop.is_set() and time.monotonic() < deadline:
            index = rng.randrange(services)
            with lock:
                session, generation = state["session"], state["generation"]
            sent_at = time.monotonic()
            try:
                response = session.get(
                    f"{base}/svc{index}/item/{count}",
                    headers={"X-Sent-At": repr(sent_at), "X-Client": f"{process}.{thread}"},
                    timeout=10,
                )
                response.close()
                with lock:
                    stats["sent"] += 1
            except DecryptionError:
                with lock:
                    if generation == 1:  # the new key must decrypt everything
                        stats["errors"] += 1
                        stats["first_error"] = stats["first_error"] or traceback.format_exc()
                    else:
                        stats["refused"] += 1
                    if state["generation"] == 0:
                        state["generation"] = 1
                        state["session"] = open_session(1)
                        stats["reopened"] += 1
            except Exception:
                with lock:
                    stats["errors"] += 1
                    if not stats["first_error"]:
                        stats["first_error"] = traceback.format_exc()
            count += 1

    workers = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    for registry in state["registries"]:
        registry.close()
    return stats


def report(out: Any, function: Callable[..., Any], *args: Any) -> None:
    """Run ``function(*args)`` and put ``("ok", result)`` or ``("error", traceback)`` on *out*."""
    try:
        out.put(("ok", function(*args)))
    except BaseException:
        out.put(("error", traceback.format_exc()))


def gather(processes: list[Any], out: Any, timeout: float, started: bool = False) -> list[Any]:
    """Start *processes* (each running :func:`report`) and collect their results."""
    for process in processes:
        if not started:
            process.start()
    results = []
    try:
        for _ in processes:
            status, value = out.get(timeout=timeout)
            assert status == "ok", value
            results.append(value)
    finally:
        for process in processes:
            process.join(10)
            if process.is_alive():
                process.kill()
    return results


def spawn() -> multiprocessing.context.SpawnContext:
    """The start method for every child: no fork of a process with threads."""
    return multiprocessing.get_context("spawn")


def b64(key: MasterKey) -> str:
    return key.to_base64()
