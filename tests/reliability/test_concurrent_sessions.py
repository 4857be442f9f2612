"""32 threads in 4 processes call 50 services on a loopback server while the entries
are updated, removed, re-added and the master key rotated.

The server records every request; afterwards each one is judged: it carried its
own service's credentials (never another's), both credentials from the same
version of the entry, and no version older than the one acknowledged before the
request was sent (allowing the backend's invalidation bound).
"""

from __future__ import annotations

import base64
import random
import re
import time

from securesession import MasterKey, open_registry
from securesession._registry.sqlite import RECHECK_INTERVAL_S
from securesession.testing import GatewayServer

from ..backends import Backend
from ..registry_workers import b64, call_services, gather, report, service_entry, spawn

SERVICES = 50
PROCESSES = 4
THREADS = 8
# The writer changes entries for at least DURATION_S and at least MIN_CHANGES times
# (a loaded machine makes fewer changes per second), the workers calling throughout.
DURATION_S = 3.0
MIN_CHANGES = 50
# How long after a change is acknowledged a request may still carry the old state:
# SQLite rechecks for changes made elsewhere every RECHECK_INTERVAL_S; PostgreSQL
# promises one second.
BOUND_S = {"sqlite": RECHECK_INTERVAL_S, "postgres": 1.0}

_PATH = re.compile(r"/svc(\d+)/item/\d+$")


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_no_request_carries_foreign_or_stale_credentials(backend: Backend) -> None:
    old, new = MasterKey.generate(), MasterKey.generate()
    # service -> [(acknowledged at, version or None when removed)]
    timeline: dict[int, list[tuple[float, int | None]]] = {}
    with GatewayServer() as server, open_registry(backend.url, old) as registry:
        for index in range(SERVICES):
            registry.put(service_entry(server.url, index, 1))
            timeline[index] = [(time.monotonic(), 1)]

        context = spawn()
        start, out, stop = context.Barrier(PROCESSES + 1), context.Queue(), context.Event()
        processes = [
            context.Process(
                target=report,
                args=(
                    out,
                    call_services,
                    backend.url,
                    b64(old),
                    b64(new),
                    server.url,
                    SERVICES,
                    THREADS,
                    stop,
                    number,
                    start,
                ),
            )
            for number in range(PROCESSES)
        ]
        for process in processes:
            process.start()
        start.wait(120)

        rng = random.Random(0)
        began = time.monotonic()
        rotated = False
        changes = 0
        while time.monotonic() - began < DURATION_S or changes < MIN_CHANGES:
            if not rotated and changes >= MIN_CHANGES * 0.4:
                registry.rotate(new)
                rotated = True
            index = rng.randrange(SERVICES)
            state = timeline[index][-1][1]
            if state is not None and rng.random() < 0.15:
                assert registry.remove(f"{server.url}/svc{index}")
                timeline[index].append((time.monotonic(), None))
            else:
                version = max(v for _, v in timeline[index] if v is not None) + 1
                registry.put(service_entry(server.url, index, version))
                timeline[index].append((time.monotonic(), version))
            changes += 1
            time.sleep(0.01)
        stop.set()
        stats = gather(processes, out, timeout=120, started=True)
        records = server.requests

    assert rotated and changes >= MIN_CHANGES
    for process_stats in stats:
        assert process_stats["errors"] == 0, process_stats["first_error"]
    assert len(records) == sum(s["sent"] for s in stats)
    assert len(records) > 300, "too few requests to mean anything"

    bound = BOUND_S[backend.kind]
    for record in records:
        match = _PATH.match(record.path)
        assert match, record.path
        index = int(match.group(1))
        user = record.header("X-Gateway-User")
        password = record.header("X-Gateway-Password")
        authorization = record.header("Authorization")
        if user is None and password is None and authorization is None:
            carried = None
        else:
            assert user == f"gw-{index}", f"request to service {index} carried {user}"
            found = re.fullmatch(rf"gw-SECRET-{index}-v(\d+)", password or "")
            assert found, f"request to service {index}: gateway password of another service"
            carried = int(found.group(1))
            assert authorization == basic(f"req-{index}", f"req-SECRET-{index}-v{carried}"), (
                f"request to service {index}: request credential not from version {carried}"
            )
        sent_at = float(record.header("X-Sent-At") or "nan")
        history = timeline[index]
        # The state acknowledged last before the request was sent (minus the bound)
        # and every later one are acceptable; anything older is stale.
        settled = max(
            (n for n, (acked, _) in enumerate(history) if acked <= sent_at - bound), default=0
        )
        acceptable = {state for _, state in history[settled:]}
        assert carried in acceptable, (
            f"service {index}: request sent at {sent_at:.3f} carried "
            f"{'no credentials' if carried is None else f'version {carried}'}, but "
            f"{history[settled][1]} was acknowledged at {history[settled][0]:.3f}"
        )
    for process_stats in stats:
        # Each process met the rotation: a load failed closed (nothing was sent),
        # then it reopened the registry with the new key, like a restarted service.
        assert process_stats["reopened"] == 1
        assert process_stats["refused"] >= 1
