"""The master key wrapped by Transit: unwrap once per process, rotation and rewrap, denial."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from baoserver import TRANSIT_KEY, Bao

from securesession import (
    ConfigurationError,
    Credential,
    MasterKey,
    MasterKeyError,
    ServiceEntry,
    open_registry,
)
from securesession._exceptions import VaultError
from securesession._vault import (
    VaultConnection,
    clear_key_cache,
    rewrap_key,
    transit_key_version,
    wrap_new_key,
)

DECRYPT = f"transit/decrypt/{TRANSIT_KEY}"


def _entry(tag: str) -> ServiceEntry:
    return ServiceEntry(
        url=f"https://gw.example.test/{tag}/",
        gateway=Credential(f"gw-{tag}", f"gw-SECRET-{tag}"),
        request=Credential(f"user-{tag}", f"req-SECRET-{tag}"),
    )


@pytest.fixture
def wrapped_file(bao: Bao, tmp_path: Path) -> tuple[Path, MasterKey]:
    path = tmp_path / "master.key.wrapped"
    text, key = wrap_new_key(bao.operator(), TRANSIT_KEY, path=path)
    assert path.read_text().strip() == text
    assert text.startswith("vault:v") and key.to_base64() not in text
    clear_key_cache()  # as in a new process: only the wrapped text is known
    return path, key


def test_unwrap_once_per_process(bao: Bao, wrapped_file: tuple[Path, MasterKey]) -> None:
    path, key = wrapped_file
    before = bao.audited(DECRYPT)
    first = MasterKey.from_vault_transit(bao.url, TRANSIT_KEY, path, approle=bao.approle)
    assert first == key
    assert bao.audited(DECRYPT) == before + 1
    # Again, by value and with other connections: answered from the process cache.
    for _ in range(3):
        again = MasterKey.from_vault_transit(
            bao.app(), TRANSIT_KEY, path.read_text(), mount="transit"
        )
        assert again is first
    assert bao.audited(DECRYPT) == before + 1
    clear_key_cache()
    MasterKey.from_vault_transit(bao.url, TRANSIT_KEY, path, approle=bao.approle)
    assert bao.audited(DECRYPT) == before + 2


def test_transit_rotation_then_rewrap_keeps_entries(
    bao: Bao, wrapped_file: tuple[Path, MasterKey], tmp_path: Path
) -> None:
    path, key = wrapped_file
    registry = open_registry(f"sqlite://{tmp_path}/registry.db", key)
    stored = [registry.put(_entry(tag)) for tag in ("a", "b")]
    registry.close()
    old_text = path.read_text().strip()
    old_version = transit_key_version(old_text)

    root = bao.root()
    root.secrets.transit.rotate_key(TRANSIT_KEY)
    new_text = rewrap_key(bao.operator(), TRANSIT_KEY, path)
    assert path.read_text().strip() == new_text
    assert transit_key_version(new_text) == old_version + 1
    assert new_text != old_text

    before = bao.audited(DECRYPT)
    unwrapped = MasterKey.from_vault_transit(bao.url, TRANSIT_KEY, path, approle=bao.approle)
    MasterKey.from_vault_transit(bao.url, TRANSIT_KEY, path, approle=bao.approle)
    assert bao.audited(DECRYPT) == before + 1  # once more, for the new key version only
    assert unwrapped == key  # same data key: nothing to re-encrypt

    reopened = open_registry(f"sqlite://{tmp_path}/registry.db", unwrapped)
    assert [(e.url, e.revision) for e in reopened.entries()] == [
        (e.url, e.revision) for e in stored
    ]
    assert reopened.get("https://gw.example.test/a/x") == stored[0]
    reopened.close()

    # Once every wrapped key is rewrapped, the old Transit version can be retired.
    latest = transit_key_version(new_text)
    root.secrets.transit.update_key_configuration(TRANSIT_KEY, min_decryption_version=latest)
    root.adapter.close()
    clear_key_cache()
    with pytest.raises(VaultError) as caught:
        MasterKey.from_vault_transit(bao.url, TRANSIT_KEY, old_text, approle=bao.approle)
    assert caught.value.reason == "invalid"
    assert DECRYPT in str(caught.value)
    assert MasterKey.from_vault_transit(bao.url, TRANSIT_KEY, path, approle=bao.approle) == key


def test_policy_denial_names_the_path_not_the_token(bao: Bao) -> None:
    assert bao.approle is not None
    app = bao.app()
    with pytest.raises(VaultError) as caught:
        wrap_new_key(app, TRANSIT_KEY)  # the app may unwrap, never mint keys
    message = str(caught.value)
    assert caught.value.reason == "forbidden"
    assert f"'transit/encrypt/{TRANSIT_KEY}'" in message
    assert "403" in message and "'update'" in message
    assert app._client.token not in message  # the token really was in use
    assert bao.approle.secret_id.reveal() not in message
    assert "SECRET" not in message + repr(caught.value) + repr(app) + repr(bao.approle)


def test_rejected_token_is_named_by_source_only(bao: Bao, tmp_path: Path) -> None:
    wrapped, _ = wrap_new_key(bao.operator(), TRANSIT_KEY)
    clear_key_cache()
    token = "hvs.bogus-SECRET-token"
    with pytest.raises(VaultError) as caught:
        MasterKey.from_vault_transit(bao.url, TRANSIT_KEY, wrapped, token=token)
    assert caught.value.reason == "token"
    assert "token argument" in str(caught.value)
    assert "SECRET" not in str(caught.value)


def test_token_from_environment_and_file(
    bao: Bao, app_token: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrapped, key = wrap_new_key(bao.operator(), TRANSIT_KEY)
    for name in ("VAULT_TOKEN", "BAO_TOKEN"):
        clear_key_cache()
        monkeypatch.setenv(name, app_token)
        assert MasterKey.from_vault_transit(bao.url, TRANSIT_KEY, wrapped) == key
        monkeypatch.delenv(name)
    clear_key_cache()
    token_file = tmp_path / "token"
    token_file.write_text(app_token + "\n")
    assert MasterKey.from_vault_transit(bao.url, TRANSIT_KEY, wrapped, token_file=token_file) == key
    clear_key_cache()
    (tmp_path / ".vault-token").write_text(app_token)  # HOME is tmp_path
    connection = VaultConnection(bao.url)
    assert "vault-token" in connection.auth_source
    assert MasterKey.from_vault_transit(connection, TRANSIT_KEY, wrapped) == key


def test_no_credentials_is_a_clear_configuration_error(bao: Bao) -> None:
    with pytest.raises(ConfigurationError, match="VAULT_TOKEN"):
        MasterKey.from_vault_transit(bao.url, TRANSIT_KEY, "vault:v1:AAAA")


def test_malformed_wrapped_key(bao: Bao, tmp_path: Path) -> None:
    with pytest.raises(MasterKeyError, match="does not exist"):
        MasterKey.from_vault_transit(bao.url, TRANSIT_KEY, tmp_path / "missing")
    (tmp_path / "bad").write_text("not-a-ciphertext\n")
    with pytest.raises(MasterKeyError, match="vault:v<N>"):
        MasterKey.from_vault_transit(bao.url, TRANSIT_KEY, tmp_path / "bad")


def test_wrap_refuses_to_overwrite(bao: Bao, tmp_path: Path) -> None:
    path = tmp_path / "wrapped"
    wrap_new_key(bao.operator(), TRANSIT_KEY, path=path)
    first = path.read_text()
    with pytest.raises(MasterKeyError, match="refusing to overwrite"):
        wrap_new_key(bao.operator(), TRANSIT_KEY, path=path)
    assert path.read_text() == first


def test_plain_http_only_on_loopback() -> None:
    with pytest.raises(ConfigurationError, match="loopback"):
        VaultConnection("http://vault.example.com:8200", token="t-SECRET")
    with pytest.raises(ConfigurationError, match="credentials"):
        VaultConnection("https://user:pw-SECRET@vault.example.com:8200", token="t")


def test_missing_hvac_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "hvac", None)  # import hvac -> ImportError
    with pytest.raises(ConfigurationError, match=r"securesession\[vault\]"):
        MasterKey.from_vault_transit("https://vault.example.com", "k", "vault:v1:AAAA", token="t")
    with pytest.raises(ConfigurationError, match=r"securesession\[vault\]"):
        open_registry("vault+https://vault.example.com/kv/app", MasterKey.generate())
