"""The ``vault+http`` registry beyond the contract: what is stored, freshness, concurrency
across processes, crash-safe rotation, policies and tokens."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from securesession import (
    ConfigurationError,
    Credential,
    DecryptionError,
    MasterKey,
    RegistryError,
    Secret,
    ServiceEntry,
    open_registry,
)
from securesession._exceptions import VaultError
from securesession._registry.vault import VaultStore, _parse_time, open_vault_registry
from securesession._vault_connection import VaultConnection
from securesession.registry import EncryptedRegistry

from .baoserver import KV_MOUNT, Bao

BASE = "https://gw.example.test:8443"


def _entry(path: str, tag: str = "1") -> ServiceEntry:
    return ServiceEntry(
        url=BASE + path,
        gateway=Credential(f"gw-{tag}", f"gw-SECRET-{tag}"),
        request=Credential(f"user-{tag}", f"req-SECRET-{tag}"),
        secret_headers={"X-Api-Key": Secret(f"api-SECRET-{tag}")},
    )


def _store(registry: EncryptedRegistry) -> VaultStore:
    store = registry.store
    assert isinstance(store, VaultStore)
    return store


@pytest.fixture
def opened(bao: Bao, prefix: str) -> Iterator[Any]:
    """``opened(key, **url_options)``: the test's registry, as the app's AppRole."""
    registries: list[EncryptedRegistry] = []
    connections: list[VaultConnection] = []

    def opener(key: MasterKey, **options: object) -> EncryptedRegistry:
        connections.append(bao.app())  # one per registry, as in separate processes
        registry = open_vault_registry(
            bao.registry_url(prefix, **options), key, connection=connections[-1]
        )
        registries.append(registry)
        return registry

    yield opener
    for registry in registries:
        registry.close()
    for connection in connections:
        connection.close()


def _documents(bao: Bao, prefix: str) -> dict[str, list[Any]]:
    """Every version of every document under *prefix*, as the root token sees them."""
    kv = bao.root().secrets.kv.v2
    found: dict[str, list[Any]] = {}

    def walk(path: str) -> None:
        for name in kv.list_secrets(path=path, mount_point=KV_MOUNT)["data"]["keys"]:
            if name.endswith("/"):
                walk(f"{path}/{name[:-1]}")
                continue
            rel = f"{path}/{name}"
            versions = kv.read_secret_metadata(path=rel, mount_point=KV_MOUNT)["data"]["versions"]
            found[rel] = [
                kv.read_secret_version(
                    path=rel,
                    version=int(number),
                    mount_point=KV_MOUNT,
                    raise_on_deleted_version=True,
                )["data"]
                for number, info in versions.items()
                if not info["destroyed"]
            ]

    walk(prefix)
    return found


def _generations(bao: Bao, prefix: str) -> list[str]:
    keys = bao.root().secrets.kv.v2.list_secrets(path=prefix, mount_point=KV_MOUNT)["data"]["keys"]
    return sorted(name for name in keys if name.endswith("/"))


# -- what is stored ------------------------------------------------------------------------


def test_kv_holds_only_ciphertext(bao: Bao, prefix: str, opened: Any) -> None:
    registry = opened(MasterKey.generate())
    registry.put(_entry("/a/", "a"))
    registry.put(_entry("/a/", "b"))  # a second version of the same document
    registry.put(_entry("/c/", "c"))
    dump = json.dumps(_documents(bao, prefix))
    assert "SECRET" not in dump
    assert "gw.example.test" in dump  # URLs and settings are public, by design
    documents = _documents(bao, prefix)
    entry_docs = [doc for path, docs in documents.items() if "/g" in path for doc in docs]
    assert entry_docs and all(
        set(doc["data"]["secrets"])
        == {
            "$entry",
            "gateway.username",
            "gateway.password",
            "request.username",
            "request.password",
            "header.X-Api-Key",
        }
        for doc in entry_docs
    )


def test_a_read_only_open_writes_no_document(bao: Bao, prefix: str, opened: Any) -> None:
    """What diff does on Vault: the open writes nothing (not even the index of a new
    registry), every write is refused, and reads see what writers stored."""
    key = MasterKey.generate()
    connection = bao.app()
    url = bao.registry_url(prefix)
    try:
        with open_vault_registry(url, key, connection=connection, read_only=True) as empty:
            assert empty.read_only
            with pytest.raises(RegistryError, match="is open read-only"):
                empty.put(_entry("/a"))
        import hvac.exceptions

        with pytest.raises(hvac.exceptions.InvalidPath):  # nothing under the prefix
            _documents(bao, prefix)
        opened(key).put(_entry("/a", "v1"))
        before = _documents(bao, prefix)
        with open_vault_registry(url, key, connection=connection, read_only=True) as reader:
            found = reader.get(BASE + "/a/x")
            assert found is not None and found.gateway is not None
            assert found.gateway.username == "gw-v1"
            with pytest.raises(RegistryError, match="is open read-only"):
                reader.remove(BASE + "/a")
        assert _documents(bao, prefix) == before
    finally:
        connection.close()


def test_updated_at_is_the_kv_version_time(bao: Bao, prefix: str, opened: Any) -> None:
    registry = opened(MasterKey.generate())
    stored = registry.put(_entry("/svc/"))
    got = registry.get(BASE + "/svc/x")
    assert got is not None and got.updated_at == stored.updated_at
    store = _store(registry)
    index = store._current()
    rel = store._place.doc(index.generation, stored.url)
    metadata = bao.root().secrets.kv.v2.read_secret_metadata(path=rel, mount_point=KV_MOUNT)
    version = metadata["data"]["versions"][str(index.rows[stored.url].version)]
    assert stored.updated_at == pytest.approx(_parse_time(version["created_time"]), abs=1e-6)
    assert abs(stored.updated_at - time.time()) < 60


def test_remove_destroys_the_ciphertext(bao: Bao, prefix: str, opened: Any) -> None:
    registry = opened(MasterKey.generate())
    registry.put(_entry("/svc/", "a"))
    registry.put(_entry("/svc/", "b"))
    assert registry.remove(BASE + "/svc/")
    documents = _documents(bao, prefix)
    assert [path for path, versions in documents.items() if versions] == [f"{prefix}/index"]


def test_works_on_a_mount_that_requires_check_and_set(bao: Bao) -> None:
    root = bao.root()
    root.sys.enable_secrets_engine("kv", path="casreq", options={"version": "2"})
    root.secrets.kv.v2.configure(cas_required=True, mount_point="casreq")
    key = MasterKey.generate()
    url = f"vault+{bao.url}/casreq/app"
    root_connection = VaultConnection(bao.url, token=bao.root_token)
    registry = open_vault_registry(url, key, connection=root_connection)
    registry.put(_entry("/a/", "a"))
    registry.put(_entry("/a/", "b"))
    registry.remove(BASE + "/a/")
    registry.put(_entry("/a/", "c"))
    new_key = MasterKey.generate()
    registry.rotate(new_key)
    registry.close()
    reopened = open_vault_registry(url, new_key, connection=root_connection)
    assert [e.gateway.username for e in reopened.entries() if e.gateway] == ["gw-c"]
    reopened.close()


# -- freshness and the hot path ------------------------------------------------------------------


def test_lookups_are_local_until_the_refresh_interval(opened: Any) -> None:
    key = MasterKey.generate()
    writer = opened(key)
    reader = opened(key, refresh=60)
    store = _store(reader)
    connection = store._place.connection
    stored = writer.put(_entry("/svc/"))

    sent = connection.request_count
    for _ in range(200):
        assert reader.lookup(BASE + "/svc/a/b/c") is None  # not seen yet: within the bound
    assert connection.request_count == sent  # no request on the hot path

    store._fresh_until = 0.0  # as if the refresh interval had passed
    ref = reader.lookup(BASE + "/svc/a/b/c")
    assert ref is not None and (ref.key, ref.revision) == (stored.url, stored.revision)
    assert connection.request_count == sent + 2  # index metadata, then the index
    store._fresh_until = 0.0
    assert reader.lookup(BASE + "/svc/") == ref
    assert connection.request_count == sent + 3  # unchanged: the metadata only


def test_other_writers_are_seen_within_the_refresh_interval(opened: Any) -> None:
    key = MasterKey.generate()
    writer = opened(key)
    reader = opened(key, refresh=0.2)
    stored = writer.put(_entry("/svc/"))
    start = time.monotonic()
    while reader.lookup(BASE + "/svc/") is None:
        assert time.monotonic() - start < 2.0, "change not seen within the staleness bound"
        time.sleep(0.02)
    assert time.monotonic() - start < 0.2 + 1.0
    got = reader.get(BASE + "/svc/")
    assert got == stored and got is not None and got.revision == stored.revision


def test_concurrent_processes_lose_no_update(opened: Any) -> None:
    key = MasterKey.generate()
    registries = [opened(key) for _ in range(3)]  # three "processes", one connection each
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        try:
            for index in range(6):
                registries[worker % 3].put(_entry(f"/w{worker}/e{index}", f"{worker}-{index}"))
            registries[worker % 3].put(_entry("/shared/", f"{worker}"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    entries = list(registries[0].entries())
    assert len(entries) == 37
    assert len({entry.revision for entry in entries}) == 37
    shared = registries[1].get(BASE + "/shared/x")
    assert shared is not None and shared.gateway is not None
    assert shared.gateway.username in {f"gw-{worker}" for worker in range(6)}


# -- rotation ----------------------------------------------------------------------------------


@pytest.mark.parametrize("crash", ["mid-copy", "at-commit"])
def test_crashed_rotation_leaves_exactly_one_working_key(
    bao: Bao, prefix: str, opened: Any, monkeypatch: pytest.MonkeyPatch, crash: str
) -> None:
    old_key, new_key = MasterKey.generate(), MasterKey.generate()
    registry = opened(old_key)
    for index in range(5):
        registry.put(_entry(f"/svc{index}/", str(index)))
    before = {e.url: e for e in registry.entries()}
    store = _store(registry)

    class Crash(Exception):
        pass

    copy, write_index = VaultStore._write_doc, VaultStore._write_index
    calls = []

    def dying_write_doc(self: VaultStore, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 3:
            raise Crash
        return copy(self, *args, **kwargs)

    def dying_write_index(self: VaultStore, index: Any, cas: int) -> Any:
        if index.key_id == new_key.key_id:
            raise VaultError("connection lost", reason="network")
        return write_index(self, index, cas)

    with monkeypatch.context() as patch:
        # A crash leaves no chance to clean up.
        patch.setattr(VaultStore, "_purge_quietly", lambda self, generation: None)
        if crash == "mid-copy":
            patch.setattr(VaultStore, "_write_doc", dying_write_doc)
        else:
            patch.setattr(VaultStore, "_write_index", dying_write_index)
        with pytest.raises((Crash, VaultError)):
            registry.rotate(new_key)
    assert len(_generations(bao, prefix)) == 2  # the half-done one is left behind
    assert store._key_id == old_key.key_id
    registry.close()

    with pytest.raises(DecryptionError, match="wrong master key"):
        opened(new_key)
    reopened = opened(old_key)
    assert {e.url: e for e in reopened.entries()} == before

    reopened.rotate(new_key)  # a later rotation succeeds and removes the leftovers
    assert len(_generations(bao, prefix)) == 1
    reopened.close()
    with pytest.raises(DecryptionError, match="wrong master key"):
        opened(old_key)
    assert {e.url: e for e in opened(new_key).entries()} == before


def test_rotation_elsewhere_is_a_clear_error_here(opened: Any) -> None:
    old_key, new_key = MasterKey.generate(), MasterKey.generate()
    here, elsewhere = opened(old_key), opened(old_key)
    here.put(_entry("/svc/"))
    assert here.lookup(BASE + "/svc/") is not None
    elsewhere.rotate(new_key)
    with pytest.raises(DecryptionError, match=f"re-keyed to key id {new_key.key_id}"):
        here.get(BASE + "/svc/")
    with pytest.raises(DecryptionError, match="wrong master key"):
        here.put(_entry("/other/"))


# -- auth, policies, URLs ----------------------------------------------------------------------


def test_policy_denial_names_the_policy_path(
    bao: Bao, app_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAULT_TOKEN", app_token)
    with pytest.raises(VaultError) as caught:
        open_registry(bao.registry_url("elsewhere/app"), MasterKey.generate())
    message = str(caught.value)
    assert caught.value.reason == "forbidden"
    assert caught.value.path == f"{KV_MOUNT}/data/elsewhere/app/index"
    assert f"'{KV_MOUNT}/data/elsewhere/app/index'" in message and "'read'" in message
    assert app_token not in message and "SECRET" not in message


def test_approle_from_environment(bao: Bao, prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert bao.approle is not None
    monkeypatch.setenv("VAULT_ROLE_ID", bao.approle.role_id)
    monkeypatch.setenv("BAO_SECRET_ID", bao.approle.secret_id.reveal())
    key = MasterKey.generate()
    registry = open_registry(bao.registry_url(prefix), key)
    assert "AppRole" in repr(_store(registry)._place.connection)  # type: ignore[arg-type]
    registry.put(_entry("/svc/"))
    assert registry.get(BASE + "/svc/") is not None
    registry.close()
    monkeypatch.delenv("BAO_SECRET_ID")
    with pytest.raises(ConfigurationError, match="VAULT_SECRET_ID"):
        open_registry(bao.registry_url(prefix), key)


def test_tokens_are_renewed_and_replaced(bao: Bao, prefix: str) -> None:
    bao.add_role("short", token_ttl="3s", token_max_ttl="1h")
    bao.add_role("capped", token_ttl="3s", token_max_ttl="3s")
    key = MasterKey.generate()
    url = bao.registry_url(prefix, refresh=0)
    short = open_vault_registry(
        url, key, connection=VaultConnection(bao.url, approle=bao.role_credentials("short"))
    )
    capped = open_vault_registry(
        url, key, connection=VaultConnection(bao.url, approle=bao.role_credentials("capped"))
    )
    renewals = bao.audited("auth/token/renew-self")
    logins = bao.audited("auth/approle/login")
    time.sleep(2.2)  # past two thirds of the TTL
    short.put(_entry("/a/"))
    capped.put(_entry("/b/"))
    assert bao.audited("auth/token/renew-self") == renewals + 2  # both renewed...
    assert bao.audited("auth/approle/login") == logins + 1  # ...and the capped one logged in
    time.sleep(1.0)  # the first tokens' original TTL is over: both still work
    assert short.get(BASE + "/b/") is not None and capped.get(BASE + "/a/") is not None
    short.close()
    capped.close()


def test_revoked_approle_token_logs_in_again(bao: Bao, opened: Any) -> None:
    registry = opened(MasterKey.generate())
    registry.put(_entry("/svc/"))
    connection = _store(registry)._place.connection
    root = bao.root()
    root.auth.token.revoke(connection._client.token)
    logins = bao.audited("auth/approle/login")
    registry.put(_entry("/other/"))
    assert bao.audited("auth/approle/login") == logins + 1


def test_revoked_static_token_is_a_clear_error(bao: Bao, prefix: str) -> None:
    root = bao.root()
    token = root.auth.token.create(policies=["securesession-app"], ttl="1h")["auth"]["client_token"]
    registry = open_vault_registry(
        bao.registry_url(prefix),
        MasterKey.generate(),
        connection=VaultConnection(bao.url, token=token),
    )
    root.auth.token.revoke(token)
    with pytest.raises(VaultError) as caught:
        registry.put(_entry("/svc/"))
    assert caught.value.reason == "token"
    assert "token argument" in str(caught.value) and token not in str(caught.value)
    registry.close()


def test_a_connection_carries_every_connection_setting(bao: Bao, prefix: str) -> None:
    """Credentials, namespace, timeout or CA beside connection= would be ignored: refused."""
    connection = bao.app()
    key = MasterKey.generate()
    url = bao.registry_url(prefix)
    for loose in ({"token": "t-SECRET"}, {"approle": bao.approle}, {"token_file": "/nope"}):
        with pytest.raises(ConfigurationError, match="would be ignored") as caught:
            open_vault_registry(url, key, connection=connection, **loose)
        assert f"{next(iter(loose))}=" in str(caught.value)
        assert "SECRET" not in str(caught.value)
    for option in ("namespace=team", "timeout=3", "ca=/etc/ca.pem"):
        with pytest.raises(ConfigurationError, match="set them on the connection"):
            open_vault_registry(f"{url}?{option}", key, connection=connection)
    assert connection.request_count == 0
    # refresh= is the registry's own option, and fine beside a connection.
    registry = open_vault_registry(bao.registry_url(prefix, refresh=5), key, connection=connection)
    registry.close()
    assert connection.request_count > 0


def test_loose_credentials_still_work_with_a_deprecation_warning(bao: Bao, prefix: str) -> None:
    key = MasterKey.generate()
    with pytest.warns(DeprecationWarning, match="approle=") as caught:
        registry = open_vault_registry(bao.registry_url(prefix), key, approle=bao.approle)
    assert caught[0].filename == __file__
    registry.put(_entry("/svc/"))
    assert registry.get(BASE + "/svc/") is not None
    assert _store(registry)._owns_connection  # built for it, so closed with it
    registry.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("vault+https://vault.example.com:8200/kv", "a KV mount and a prefix"),
        ("vault+http://vault.example.com:8200/kv/app", "loopback"),
        ("vault+https://u:pw-SECRET@vault.example.com/kv/app", "must not carry credentials"),
        ("vault+https://vault.example.com/kv/app?token=t-SECRET", "unknown option"),
        ("vault+https://vault.example.com/kv/../app", "not allowed"),
        ("vault+https://vault.example.com/kv/app?refresh=soon", "seconds"),
    ],
)
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as caught:
        open_registry(url, MasterKey.generate())
    assert "SECRET" not in str(caught.value)


def test_rewritten_token_file_is_picked_up(bao: Bao, prefix: str, tmp_path: Path) -> None:
    root = bao.root()

    def new_token() -> str:
        created = root.auth.token.create(policies=["securesession-app"], ttl="1h")
        return str(created["auth"]["client_token"])

    first = new_token()
    path = tmp_path / "agent-sink-token"
    path.write_text(first + "\n")
    agent_sink = VaultConnection(bao.url, token_file=path)
    registry = open_vault_registry(
        bao.registry_url(prefix), MasterKey.generate(), connection=agent_sink
    )
    root.auth.token.revoke(first)
    path.write_text(new_token() + "\n")  # as Vault Agent rewrites its sink file
    registry.put(_entry("/svc/"))
    assert registry.get(BASE + "/svc/") is not None
    registry.close()
    with pytest.raises(RegistryError, match="closed"):
        registry.lookup(BASE + "/svc/")
