"""``SecureAsyncClient`` over a real OpenBao KV registry: with ``offload_lookups=True``
(the documented setting for a registry whose lookups may do network I/O) neither a
lookup nor the cold load runs on the event loop, and the request carries the entry's
credentials."""

from __future__ import annotations

import pytest

from securesession import MasterKey
from securesession._registry.vault import open_vault_registry

from ..httpx.httpx_helpers import run_async_client, tagged
from .baoserver import Bao

pytest.importorskip("httpx")


@pytest.mark.anyio
async def test_lookups_and_the_cold_load_run_off_the_loop(bao: Bao, prefix: str) -> None:
    connection = bao.app()
    registry = open_vault_registry(
        bao.registry_url(prefix), MasterKey.generate(), connection=connection
    )
    try:
        registry.put(tagged("https://svc.test/api", "bao"))
        run = await run_async_client(
            registry, "https://svc.test/api/v1/x", ["bao"], offload_lookups=True
        )
    finally:
        registry.close()
        connection.close()
    assert run.tags == [{"bao"}] * 3
    assert len(run.load_threads) == 1
    threads = run.lookup_threads + run.load_threads
    assert run.lookup_threads and all(t is not run.loop_thread for t in threads)
