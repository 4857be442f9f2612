"""A key ring on a Vault/OpenBao KV registry: a host holding the staged key follows a
commit made by another host, for reads (the store checks the key id its index names)
and for writes; a host with the old key alone fails closed, as before."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from securesession import Credential, DecryptionError, KeyRing, MasterKey, ServiceEntry
from securesession._registry.vault import open_vault_registry
from securesession._vault_connection import VaultConnection
from securesession.registry import EncryptedRegistry

from .baoserver import Bao

BASE = "https://gw.example.test:8443"


def entry(path: str, tag: str) -> ServiceEntry:
    return ServiceEntry(url=BASE + path, gateway=Credential("gw", f"gw-SECRET-{tag}"))


@pytest.fixture
def connections(bao: Bao) -> Iterator[list[VaultConnection]]:
    made: list[VaultConnection] = []
    yield made
    for connection in made:
        connection.close()


def test_a_host_with_the_staged_key_follows_a_commit_on_vault(
    bao: Bao, prefix: str, connections: list[VaultConnection]
) -> None:
    old, new = MasterKey.generate(), MasterKey.generate()

    def host(key: MasterKey | KeyRing) -> EncryptedRegistry:
        connections.append(bao.app())  # one connection per host, as in separate processes
        return open_vault_registry(bao.registry_url(prefix), key, connection=connections[-1])

    with host(old) as first:
        first.put(entry("/svc/", "v1"))
    ring = KeyRing(old).stage(new)
    reader, lagging = host(ring), host(old)
    try:
        assert reader.get(BASE + "/svc/x") is not None and lagging.get(BASE + "/svc/x")
        with host(ring) as committer:
            committer.rotate(new)
        loaded = reader.get(BASE + "/svc/x")
        assert loaded is not None and loaded.gateway is not None
        assert loaded.gateway.password.reveal() == "gw-SECRET-v1"
        reader.put(entry("/svc/", "v2"))
        assert reader.key_id == new.key_id
        with host(new) as new_only:
            stored = new_only.get(BASE + "/svc/x")
            assert stored is not None and stored.gateway is not None
            assert stored.gateway.password.reveal() == "gw-SECRET-v2"
        with pytest.raises(DecryptionError, match="wrong master key"):
            lagging.put(entry("/other/", "v3"))
    finally:
        reader.close()
        lagging.close()
