"""``SecureAsyncClient`` over a real PostgreSQL registry: lookups answer from the
LISTEN-fed index on the loop, the cold load (a query and the decryption) runs in a
worker thread, and the request carries the entry's credentials."""

from __future__ import annotations

import pytest

from securesession import MasterKey, open_registry

from ..httpx.httpx_helpers import run_async_client, tagged

pytest.importorskip("httpx")


@pytest.mark.anyio
async def test_the_cold_load_runs_off_the_loop(postgres_url: str) -> None:
    with open_registry(postgres_url, MasterKey.generate()) as registry:
        registry.put(tagged("https://svc.test/api", "pg"))
        run = await run_async_client(registry, "https://svc.test/api/v1/x", ["pg"])
    assert run.tags == [{"pg"}] * 3
    assert len(run.load_threads) == 1
    assert run.load_threads[0] is not run.loop_thread
    assert run.lookup_threads and all(t is run.loop_thread for t in run.lookup_threads)
