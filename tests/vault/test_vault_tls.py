"""``vault+https://`` over real TLS: a ``bao server -dev -dev-tls`` on 127.0.0.1.

The server's certificate is signed by a CA that ``-dev-tls`` generates per start
(``tls_bao.ca_file``); no system trust store knows it, so trusting it takes the
``ca=`` URL option, ``verify=`` or ``VAULT_CACERT``, and leaving it out must fail
with a message that says the certificate is the problem (not "unreachable").
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from securesession import ConfigurationError, Credential, MasterKey, ServiceEntry, open_registry
from securesession._exceptions import VaultError
from securesession._vault import VaultConnection, clear_key_cache, wrap_new_key
from securesession.registry import EncryptedRegistry
from securesession.testing import CertificateAuthority
from securesession.testing.contract import OpenRegistry, RegistryContract

from .baoserver import KV_MOUNT, TRANSIT_KEY, Bao


def _entry(tag: str) -> ServiceEntry:
    return ServiceEntry(
        url=f"https://gw.example.test/{tag}/",
        gateway=Credential(f"gw-{tag}", f"gw-SECRET-{tag}"),
        request=Credential(f"user-{tag}", f"req-SECRET-{tag}"),
    )


def _https_url(bao: Bao, prefix: str, ca: Path | None) -> str:
    assert bao.url.startswith("https://127.0.0.1:")
    query = f"?ca={ca}" if ca is not None else ""
    return f"vault+{bao.url}/{KV_MOUNT}/{prefix}{query}"


@pytest.fixture
def tls_app_token(tls_bao: Bao) -> str:
    """A token of the application's policy on the TLS server (AppRole login over https)."""
    import hvac

    client = hvac.Client(url=tls_bao.url, token="", verify=str(tls_bao.ca_file))
    assert tls_bao.approle is not None
    token = client.auth.approle.login(tls_bao.approle.role_id, tls_bao.approle.secret_id.reveal())
    client.adapter.close()
    return str(token["auth"]["client_token"])


@pytest.fixture
def untrusting(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CA bundle from the environment: verify=True means the default trust store,
    which does not know the dev server's CA."""
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)


class TestVaultRegistryOverTLS(RegistryContract):
    @pytest.fixture
    def open_registry(
        self, tls_bao: Bao, prefix: str, tls_app_token: str, monkeypatch: pytest.MonkeyPatch
    ) -> Iterator[OpenRegistry]:
        monkeypatch.setenv("VAULT_TOKEN", tls_app_token)
        opened: list[EncryptedRegistry] = []

        def opener(key: MasterKey) -> EncryptedRegistry:
            registry = open_registry(_https_url(tls_bao, prefix, tls_bao.ca_file), key)
            assert isinstance(registry, EncryptedRegistry)
            opened.append(registry)
            return registry

        yield opener
        for registry in opened:
            registry.close()


def test_round_trip_over_https_with_ca_option(
    tls_bao: Bao, prefix: str, tls_app_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAULT_TOKEN", tls_app_token)
    key = MasterKey.generate()
    url = _https_url(tls_bao, prefix, tls_bao.ca_file)
    registry = open_registry(url, key)
    assert isinstance(registry, EncryptedRegistry)
    registry.put(_entry("a"))
    registry.close()

    # Another registry object (as another process would) reads it back over TLS.
    again = open_registry(url, key)
    got = again.get("https://gw.example.test/a/x")
    assert got is not None
    assert got.request == Credential("user-a", "req-SECRET-a")
    assert got.gateway == Credential("gw-a", "gw-SECRET-a")
    assert again.remove("https://gw.example.test/a/") is True
    assert again.get("https://gw.example.test/a/x") is None
    again.close()

    # And the KV engine really holds it: read with the root token over https.
    root = tls_bao.root()
    listed = root.secrets.kv.v2.list_secrets(path=prefix, mount_point=KV_MOUNT)
    assert "index" in listed["data"]["keys"]
    root.adapter.close()


def test_transit_unwrap_over_https(
    tls_bao: Bao, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "master.key.wrapped"
    wrapped, key = wrap_new_key(tls_bao.operator(), TRANSIT_KEY, path=path)
    clear_key_cache()  # as in a new process: only the wrapped text is known

    connection = VaultConnection(tls_bao.url, approle=tls_bao.approle, verify=str(tls_bao.ca_file))
    unwrapped = MasterKey.from_vault_transit(connection, TRANSIT_KEY, path)
    assert unwrapped == key

    # The CA from the environment, as the bao/vault CLI takes it.
    clear_key_cache()
    monkeypatch.setenv("VAULT_CACERT", str(tls_bao.ca_file))
    from_env = MasterKey.from_vault_transit(
        VaultConnection(tls_bao.url, approle=tls_bao.approle), TRANSIT_KEY, wrapped
    )
    assert from_env == key


@pytest.mark.usefixtures("untrusting")
def test_untrusted_certificate_fails_clearly_without_secrets(
    tls_bao: Bao,
    prefix: str,
    tls_app_token: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("VAULT_TOKEN", tls_app_token)
    key = MasterKey.generate()
    other_ca = CertificateAuthority("not the engine's CA").write_cert_pem(tmp_path)
    wrapped, _ = wrap_new_key(tls_bao.operator(), TRANSIT_KEY)
    clear_key_cache()
    assert tls_bao.approle is not None
    secret_id = tls_bao.approle.secret_id.reveal()

    attempts: dict[str, Callable[[], object]] = {
        "registry, no ca": lambda: open_registry(_https_url(tls_bao, prefix, None), key),
        "registry, another CA": lambda: open_registry(_https_url(tls_bao, prefix, other_ca), key),
        "transit, token": lambda: MasterKey.from_vault_transit(tls_bao.url, TRANSIT_KEY, wrapped),
        "transit, approle": lambda: MasterKey.from_vault_transit(
            VaultConnection(tls_bao.url, approle=tls_bao.approle), TRANSIT_KEY, wrapped
        ),
    }
    for name, attempt in attempts.items():
        with pytest.raises(VaultError) as caught:
            attempt()
        message = str(caught.value)
        assert "TLS certificate verification failed" in message, name
        assert tls_bao.url in message, name
        assert "ca=" in message and "VAULT_CACERT" in message, name  # how to fix it
        assert "unreachable" not in message, name
        assert caught.value.reason == "network", name
        assert tls_app_token not in message and secret_id not in message, name
        assert tls_bao.root_token not in message, name
    logged = caplog.text
    assert tls_app_token not in logged and secret_id not in logged


def test_missing_ca_file_is_a_configuration_error(
    tls_bao: Bao, prefix: str, tls_app_token: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAULT_TOKEN", tls_app_token)
    missing = tmp_path / "no-such-ca.pem"
    key = MasterKey.generate()
    with pytest.raises(ConfigurationError, match=r"CA bundle .*no-such-ca\.pem.* does not exist"):
        open_registry(_https_url(tls_bao, prefix, missing), key)
    monkeypatch.setenv("VAULT_CACERT", str(missing))
    with pytest.raises(ConfigurationError, match="VAULT_CACERT environment variable"):
        MasterKey.from_vault_transit(tls_bao.url, TRANSIT_KEY, "vault:v1:AAAA")

    # A file that is not a CA certificate: a TLS problem, not an unreachable engine.
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(VaultError) as caught:
        open_registry(_https_url(tls_bao, prefix, garbage), key)
    assert f"TLS with Vault/OpenBao at {tls_bao.url} failed" in str(caught.value)
    assert "unreachable" not in str(caught.value) and tls_app_token not in str(caught.value)
