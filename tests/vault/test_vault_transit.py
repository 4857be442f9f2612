"""The master key wrapped by Transit: unwrap once per process, rotation and rewrap, denial."""

from __future__ import annotations

import inspect
import pickle
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from securesession import (
    ConfigurationError,
    Credential,
    MasterKey,
    MasterKeyError,
    ServiceEntry,
    open_registry,
)
from securesession._exceptions import VaultError
from securesession._keysource import KeySource
from securesession._vault import (
    TransitKey,
    VaultConnection,
    _Transit,
    clear_key_cache,
    rewrap_key,
    transit_key_version,
    unwrap_key,
    wrap_new_key,
)

from .baoserver import TRANSIT_KEY, Bao

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
    first = MasterKey.from_vault_transit(bao.app(), TRANSIT_KEY, path)
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
    MasterKey.from_vault_transit(bao.app(), TRANSIT_KEY, path)
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
    unwrapped = MasterKey.from_vault_transit(bao.app(), TRANSIT_KEY, path)
    MasterKey.from_vault_transit(bao.app(), TRANSIT_KEY, path)
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
        MasterKey.from_vault_transit(bao.app(), TRANSIT_KEY, old_text)
    assert caught.value.reason == "invalid"
    assert DECRYPT in str(caught.value)
    assert MasterKey.from_vault_transit(bao.app(), TRANSIT_KEY, path) == key


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
        MasterKey.from_vault_transit(VaultConnection(bao.url, token=token), TRANSIT_KEY, wrapped)
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
    from_file = VaultConnection(bao.url, token_file=token_file)
    assert MasterKey.from_vault_transit(from_file, TRANSIT_KEY, wrapped) == key
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
        MasterKey.from_vault_transit("https://vault.example.com", "k", "vault:v1:AAAA")
    with pytest.raises(ConfigurationError, match=r"securesession\[vault\]"):
        open_registry("vault+https://vault.example.com/kv/app", MasterKey.generate())


# -- the connection carries the settings ------------------------------------------------------


def test_loose_connection_settings_still_work_with_a_deprecation_warning(
    bao: Bao, tmp_path: Path
) -> None:
    """For one release: token=, approle=, ... beside an address build the connection."""
    path = tmp_path / "wrapped"
    with pytest.warns(DeprecationWarning, match=r"passing token= beside a Vault address") as caught:
        wrapped, key = wrap_new_key(bao.url, TRANSIT_KEY, path=path, token=bao.operator_token)
    assert caught[0].filename == __file__  # attributed to the caller's line
    with pytest.warns(DeprecationWarning, match="token="):
        rewrapped = rewrap_key(bao.url, TRANSIT_KEY, path, timeout=5, token=bao.operator_token)
    assert rewrapped == path.read_text().strip()
    clear_key_cache()
    before = bao.audited(DECRYPT)
    with pytest.warns(DeprecationWarning, match=r"approle=, timeout=") as caught:
        unwrapped = MasterKey.from_vault_transit(
            bao.url, TRANSIT_KEY, path, approle=bao.approle, timeout=5
        )
    assert caught[0].filename == __file__  # through from_vault_transit too
    assert unwrapped == key and bao.audited(DECRYPT) == before + 1
    with pytest.warns(DeprecationWarning, match="approle=") as caught:
        assert unwrap_key(bao.url, TRANSIT_KEY, wrapped, approle=bao.approle) == key
    assert "SECRET" not in str(caught[0].message)  # names the keywords, not the values
    assert caught[0].filename == __file__


def test_unwrap_key_and_from_vault_transit_are_one_function() -> None:
    """0.1 exported both names; one definition serves both, with rewrap_key's
    parameters, so the two can never drift apart."""
    assert unwrap_key == MasterKey.from_vault_transit
    unwrap, rewrap = inspect.signature(unwrap_key), inspect.signature(rewrap_key)
    assert (
        list(unwrap.parameters)
        == list(rewrap.parameters)
        == [
            "url",
            "key_name",
            "wrapped_key",
            "mount",
            "connection_options",
        ]
    )
    assert unwrap.parameters["mount"].default == rewrap.parameters["mount"].default


def test_loose_settings_beside_a_connection_are_refused(bao: Bao) -> None:
    """Beside a VaultConnection they would be ignored: an error, before any request."""
    connection = bao.app()
    wrapped, _ = wrap_new_key(bao.operator(), TRANSIT_KEY)
    attempts: list[Callable[[], object]] = [
        lambda: MasterKey.from_vault_transit(connection, TRANSIT_KEY, wrapped, namespace="x"),
        lambda: unwrap_key(connection, TRANSIT_KEY, wrapped, token="t-SECRET"),
        lambda: wrap_new_key(connection, TRANSIT_KEY, verify=False),
        lambda: rewrap_key(connection, TRANSIT_KEY, wrapped, approle=bao.approle, timeout=1),
    ]
    for attempt in attempts:
        with pytest.raises(ConfigurationError, match="would be ignored beside a VaultConnection"):
            attempt()
    assert connection.request_count == 0
    with pytest.raises(ConfigurationError) as caught:
        unwrap_key(connection, TRANSIT_KEY, wrapped, token="t-SECRET")
    assert "token=" in str(caught.value) and "SECRET" not in str(caught.value)


def test_transit_key_is_a_key_source(bao: Bao, tmp_path: Path) -> None:
    path = tmp_path / "wrapped"
    _, key = wrap_new_key(bao.operator(), TRANSIT_KEY, path=path)
    clear_key_cache()
    connection = bao.app()
    source: KeySource = TransitKey(connection, TRANSIT_KEY, path)
    assert isinstance(source, KeySource)
    assert connection.request_count == 0  # nothing read or sent until asked
    before = bao.audited(DECRYPT)
    assert source.master_key() == key
    assert source.master_key() is source.master_key()
    assert bao.audited(DECRYPT) == before + 1
    # The file is read on each call: a rewrapped one is unwrapped (once) afresh.
    bao.root().secrets.transit.rotate_key(TRANSIT_KEY)
    rewrap_key(bao.operator(), TRANSIT_KEY, path)
    assert source.master_key() == key
    assert bao.audited(DECRYPT) == before + 2
    assert "SECRET" not in repr(source)


class _HeldTransit:
    """Holds every Transit request of *connection* inside the engine call until
    released, counting how many are inside at once."""

    def __init__(self, connection: VaultConnection, monkeypatch: pytest.MonkeyPatch) -> None:
        self.inside = 0
        self.most_inside = 0
        self.calls = 0
        self.entered = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()
        call = connection.call

        def held(fn: Callable[[Any], Any], **kwargs: Any) -> Any:
            with self._lock:
                self.calls += 1
                self.inside += 1
                self.most_inside = max(self.most_inside, self.inside)
            self.entered.set()
            try:
                assert self.release.wait(10), "never released"
                return call(fn, **kwargs)
            finally:
                with self._lock:
                    self.inside -= 1

        monkeypatch.setattr(connection, "call", held)


def _in_threads(*calls: Callable[[], MasterKey]) -> tuple[list[MasterKey], list[threading.Thread]]:
    results: list[MasterKey] = []
    threads = [threading.Thread(target=lambda call=call: results.append(call())) for call in calls]
    for thread in threads:
        thread.start()
    return results, threads


def test_unwraps_of_different_texts_do_not_wait_for_each_other(
    bao: Bao, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No process-wide lock is held while Transit answers."""
    operator = bao.operator()
    (first, first_key), (second, second_key) = (wrap_new_key(operator, TRANSIT_KEY) for _ in "ab")
    clear_key_cache()
    connection = bao.app()
    held = _HeldTransit(connection, monkeypatch)

    results, threads = _in_threads(
        lambda: unwrap_key(connection, TRANSIT_KEY, first),
        lambda: unwrap_key(connection, TRANSIT_KEY, second),
    )
    deadline = time.monotonic() + 2
    while held.most_inside < 2 and time.monotonic() < deadline:
        time.sleep(0.01)  # both requests reach the engine while neither has an answer
    inside_at_once = held.most_inside
    held.release.set()
    for thread in threads:
        thread.join(10)
    assert inside_at_once == 2
    assert sorted(key.key_id for key in results) == sorted((first_key.key_id, second_key.key_id))


def test_concurrent_unwraps_of_one_text_ask_transit_once(
    bao: Bao, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrapped, key = wrap_new_key(bao.operator(), TRANSIT_KEY)
    clear_key_cache()
    connection = bao.app()
    held = _HeldTransit(connection, monkeypatch)
    before = bao.audited(DECRYPT)

    results, first = _in_threads(lambda: unwrap_key(connection, TRANSIT_KEY, wrapped))
    assert held.entered.wait(10)  # the first asks Transit...
    more, others = _in_threads(
        *[lambda: MasterKey.from_vault_transit(connection, TRANSIT_KEY, wrapped)] * 3
    )
    time.sleep(0.2)  # ...while the others arrive and wait for its answer
    held.release.set()
    for thread in first + others:
        thread.join(10)
    assert held.calls == 1 and bao.audited(DECRYPT) == before + 1
    assert len(results + more) == 4 and all(got is results[0] for got in results + more)
    assert results[0] == key


def test_a_transit_key_with_loose_options_shows_and_pickles_no_credential() -> None:
    # The record is every Transit method's self: a traceback showing locals prints it.
    with pytest.warns(DeprecationWarning, match="token="):
        transit = _Transit.at(
            "https://vault.example:8200", TRANSIT_KEY, "transit/", {"token": "s.LOOSE-SECRET"}
        )
    assert "LOOSE-SECRET" not in repr(transit)
    assert repr(transit) == (
        f"_Transit('https://vault.example:8200', {TRANSIT_KEY!r}, mount='transit', "
        "options=['token'])"
    )
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(transit)
