"""An engine that goes away: sealed, or stopped, with warm and cold caches."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from securesession import Credential, MasterKey, SecureSession, ServiceEntry
from securesession._exceptions import VaultError
from securesession._registry.vault import open_vault_registry
from securesession._vault import clear_key_cache, wrap_new_key
from securesession.testing import GatewayServer

from .baoserver import TRANSIT_KEY, Bao

USER, PASSWORD = "svc-user", "svc-pw-SECRET"


@pytest.fixture
def gateway() -> Iterator[GatewayServer]:
    with GatewayServer(expect_request=(USER, PASSWORD)) as server:
        yield server


def test_sealed_engine_is_named(fresh_bao: Bao) -> None:
    bao = fresh_bao
    wrapped, key = wrap_new_key(bao.operator(), TRANSIT_KEY)
    clear_key_cache()
    registry = open_vault_registry(bao.registry_url("apps/sealed"), key, connection=bao.app())
    registry.put(
        ServiceEntry(url="https://gw.example.test/svc/", request=Credential(USER, PASSWORD))
    )

    root = bao.root()
    root.sys.seal()
    with pytest.raises(VaultError) as caught:
        registry.get("https://gw.example.test/svc/x")
    assert caught.value.reason == "sealed"
    assert "sealed" in str(caught.value) and bao.url in str(caught.value)
    with pytest.raises(VaultError, match="sealed") as unwrapping:
        MasterKey.from_vault_transit(bao.app(), TRANSIT_KEY, wrapped)
    assert unwrapping.value.reason == "sealed"

    root.sys.submit_unseal_key(bao.unseal_key)
    deadline = time.monotonic() + 10
    while True:  # the engine needs a moment after unsealing to serve again
        try:
            got = registry.get("https://gw.example.test/svc/x")
            break
        except VaultError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert got is not None and got.request == Credential(USER, PASSWORD)
    registry.close()


def test_stopped_engine_warm_cache_serves_cold_cache_fails_clearly(
    fresh_bao: Bao, gateway: GatewayServer
) -> None:
    bao = fresh_bao
    key = MasterKey.generate()
    url = bao.registry_url("apps/outage", refresh=0.1)
    registry = open_vault_registry(url, key, connection=bao.app())
    registry.put(ServiceEntry(url=gateway.url + "/svc/", request=Credential(USER, PASSWORD)))

    warm = SecureSession(registry, cache_ttl=60, stale_on_error=30)
    fail_closed = SecureSession(registry, cache_ttl=60)
    for session in (warm, fail_closed):
        assert session.get(gateway.url + "/svc/a").status_code == 200

    bao.stop()
    time.sleep(0.15)  # past the registry's refresh interval: lookups must ask the engine

    # Warm cache: the entry decrypted before the outage keeps being served, within the TTL.
    for _ in range(3):
        response = warm.get(gateway.url + "/svc/a")
        assert response.status_code == 200
    assert gateway.requests[-1].header("Authorization") is not None

    # Cold: a URL this session never looked up, a session that fails closed, a new
    # session, and a registry opened during the outage all get a clear network error.
    for action in (
        lambda: warm.get(gateway.url + "/svc/never-seen"),
        lambda: fail_closed.get(gateway.url + "/svc/a"),
        lambda: SecureSession(registry).get(gateway.url + "/svc/a"),
        lambda: open_vault_registry(url, key, connection=bao.app()),
    ):
        sent = len(gateway.requests)
        with pytest.raises(VaultError) as caught:
            action()
        assert caught.value.reason == "network"
        assert "unreachable" in str(caught.value) and bao.url in str(caught.value)
        assert len(gateway.requests) == sent  # nothing went out without credentials
    registry.close()
