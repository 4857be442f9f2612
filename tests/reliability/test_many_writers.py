"""Eight processes write concurrently; afterwards every acknowledged write is there,
and nothing else is."""

from __future__ import annotations

from securesession import MasterKey, open_registry

from ..backends import BASE, Backend
from ..registry_workers import b64, gather, report, spawn, write_many

WRITERS = 8
OPERATIONS = 40


def test_every_acknowledged_write_and_nothing_else(backend: Backend) -> None:
    key = MasterKey.generate()
    open_registry(backend.url, key).close()  # create the schema before the race
    context = spawn()
    # All writers open the registry, then start together.
    start, out = context.Barrier(WRITERS + 1), context.Queue()
    writers = [
        context.Process(
            target=report,
            args=(out, write_many, backend.url, b64(key), BASE, worker, OPERATIONS, start),
        )
        for worker in range(WRITERS)
    ]
    for writer in writers:
        writer.start()
    start.wait(120)
    results = gather(writers, out, timeout=120, started=True)
    # They really wrote at the same time: most began before the first one finished
    # (on a loaded machine the scheduler may start a straggler late).
    first_done = min(ended for _, ended, _ in results)
    assert sum(began < first_done for began, _, _ in results) >= WRITERS // 2
    acked = [operations for _, _, operations in results]

    # What must be there: for an own key, its last operation decides; a shared key
    # holds the put with the highest revision (revisions order the commits).
    expected: dict[str, tuple[str, int]] = {}
    for operations in acked:
        assert len(operations) == OPERATIONS
        for op, key_url, tag, revision in operations:
            if "/shared/" in key_url:
                if key_url not in expected or expected[key_url][1] < revision:
                    expected[key_url] = (tag, revision)
            elif op == "put":
                expected[key_url] = (tag, revision)
            else:
                expected.pop(key_url, None)

    with open_registry(backend.url, key) as registry:
        stored = {}
        for entry in registry.entries():
            assert entry.gateway is not None
            tag = entry.gateway.username.removeprefix("gw-")
            assert entry.gateway.password.reveal() == f"gw-SECRET-{tag}"
            stored[entry.url] = (tag, entry.revision)
    assert stored == expected
    revisions = [
        revision for operations in acked for op, _, _, revision in operations if op == "put"
    ]
    assert len(set(revisions)) == len(revisions), "a revision was handed out twice"
