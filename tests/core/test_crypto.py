"""MasterKey sources and the token format."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import keyring
import pytest
from keyring.backend import KeyringBackend

from securesession import DecryptionError, MasterKey, MasterKeyError
from securesession._keysource import KeySource


def test_generate_is_random_and_repr_shows_only_the_id() -> None:
    first, second = MasterKey.generate(), MasterKey.generate()
    assert first != second and first.key_id != second.key_id
    assert repr(first) == f"MasterKey(key_id={first.key_id!r})"
    assert first.to_base64() not in repr(first)


def test_constructor_checks_length() -> None:
    with pytest.raises(MasterKeyError, match="exactly 32 bytes"):
        MasterKey(b"short")


def test_save_writes_0600_and_from_file_reads_it(tmp_path: Path) -> None:
    key = MasterKey.generate()
    path = tmp_path / "master.key"
    key.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert MasterKey.from_file(path) == key
    assert [p.name for p in tmp_path.iterdir()] == ["master.key"]  # no temp file left


def test_save_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    first, second = MasterKey.generate(), MasterKey.generate()
    first.save(path)
    with pytest.raises(MasterKeyError, match="already exists"):
        second.save(path)
    assert MasterKey.from_file(path) == first
    second.save(path, overwrite=True)
    assert MasterKey.from_file(path) == second


def test_save_into_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MasterKeyError, match="cannot write key file"):
        MasterKey.generate().save(tmp_path / "missing" / "master.key")


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_from_file_refuses_group_or_other_access(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "master.key"
    MasterKey.generate().save(path)
    path.chmod(mode)
    with pytest.raises(MasterKeyError, match="chmod 600"):
        MasterKey.from_file(path)


def test_from_file_errors(tmp_path: Path) -> None:
    with pytest.raises(MasterKeyError, match="does not exist"):
        MasterKey.from_file(tmp_path / "nope.key")
    bad = tmp_path / "bad.key"
    bad.write_text("not base64 !!!")
    bad.chmod(0o600)
    with pytest.raises(MasterKeyError, match=r"bad\.key"):
        MasterKey.from_file(bad)
    with pytest.raises(MasterKeyError, match="not a regular file"):
        MasterKey.from_file(tmp_path)
    (tmp_path / "link.key").symlink_to(bad)
    with pytest.raises(MasterKeyError, match="cannot open"):
        MasterKey.from_file(tmp_path / "link.key")  # O_NOFOLLOW: a planted symlink is refused


def test_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    key = MasterKey.generate()
    monkeypatch.setenv("SECURESESSION_MASTER_KEY", key.to_base64())
    assert MasterKey.from_env() == key
    monkeypatch.setenv("OTHER_KEY", base64.urlsafe_b64encode(b"x" * 16).decode())
    with pytest.raises(MasterKeyError, match=r"OTHER_KEY: master key decodes to 16 bytes"):
        MasterKey.from_env("OTHER_KEY")
    monkeypatch.delenv("SECURESESSION_MASTER_KEY")
    with pytest.raises(MasterKeyError, match="is not set"):
        MasterKey.from_env()


def test_from_passphrase_is_deterministic_per_salt() -> None:
    salt = os.urandom(16)
    cheap = {"n": 2**10, "r": 8}  # the default cost is exercised once below
    first = MasterKey.from_passphrase("correct horse SECRET", salt, **cheap)
    assert first == MasterKey.from_passphrase(b"correct horse SECRET", salt, **cheap)
    assert first != MasterKey.from_passphrase("correct horse SECRET", os.urandom(16), **cheap)
    assert first != MasterKey.from_passphrase("other SECRET", salt, **cheap)
    with pytest.raises(MasterKeyError, match="salt"):
        MasterKey.from_passphrase("x", b"short")
    with pytest.raises(MasterKeyError, match="empty"):
        MasterKey.from_passphrase("", salt)


def test_from_passphrase_default_cost_runs() -> None:
    assert isinstance(MasterKey.from_passphrase("pass SECRET", b"s" * 16), MasterKey)


class _MemoryKeyring(KeyringBackend):
    priority = 1

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # keyring leaves it unannotated
        self.values: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.values.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.values[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        del self.values[(service, username)]


def test_keyring_round_trip() -> None:
    previous = keyring.get_keyring()
    backend = _MemoryKeyring()
    keyring.set_keyring(backend)
    try:
        key = MasterKey.generate()
        key.to_keyring("securesession-test", "master")
        assert MasterKey.from_keyring("securesession-test", "master") == key
        with pytest.raises(MasterKeyError, match="no key named 'other'"):
            MasterKey.from_keyring("securesession-test", "other")
        backend.values[("securesession-test", "bad")] = "@@@"
        with pytest.raises(MasterKeyError, match="keyring entry"):
            MasterKey.from_keyring("securesession-test", "bad")
    finally:
        keyring.set_keyring(previous)


def test_token_round_trip_and_binding() -> None:
    key = MasterKey.generate()
    token = key.encrypt(b"pw-SECRET", b"entry-a/password")
    assert "SECRET" not in token
    assert key.decrypt(token, b"entry-a/password") == b"pw-SECRET"
    assert token != key.encrypt(b"pw-SECRET", b"entry-a/password")  # random nonce
    with pytest.raises(DecryptionError, match="moved from another entry or field"):
        key.decrypt(token, b"entry-b/password")


def test_wrong_key_is_named() -> None:
    token = MasterKey.generate().encrypt(b"x", b"ctx")
    with pytest.raises(DecryptionError, match="wrong master key"):
        MasterKey.generate().decrypt(token, b"ctx")


def _flip(token: str, index: int) -> str:
    raw = bytearray(base64.urlsafe_b64decode(token))
    raw[index] ^= 0x01
    return base64.urlsafe_b64encode(bytes(raw)).decode()


@pytest.mark.parametrize("index", [0, 5, 12, 25, -1])
def test_any_flipped_bit_fails(index: int) -> None:
    key = MasterKey.generate()
    token = key.encrypt(b"value-SECRET", b"ctx")
    with pytest.raises(DecryptionError) as caught:
        key.decrypt(_flip(token, index), b"ctx")
    assert "SECRET" not in str(caught.value)


@pytest.mark.parametrize(
    "token", ["", "!!!", "AQ", base64.urlsafe_b64encode(b"\x02" + b"\x00" * 40).decode()]
)
def test_garbage_tokens_fail_cleanly(token: str) -> None:
    with pytest.raises(DecryptionError):
        MasterKey.generate().decrypt(token, b"ctx")


def test_keys_cannot_be_pickled() -> None:
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(MasterKey.generate())


def _modules_after(statement: str) -> list[str]:
    """The Vault-related modules (and securesession._crypto) a fresh interpreter
    holds after running *statement*."""
    code = (
        f"import json, sys; {statement}; print(json.dumps(sorted(m for m in sys.modules "
        "if m == 'hvac' or 'vault' in m or m.endswith('_crypto'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    found: list[str] = json.loads(result.stdout)
    return found


def test_crypto_and_key_sources_import_nothing_of_vault() -> None:
    assert _modules_after("import securesession._crypto") == ["securesession._crypto"]
    assert _modules_after("import securesession._keysource") == ["securesession._crypto"]
    # The other way round neither: the connection needs no cryptography (no circle).
    assert "securesession._crypto" not in _modules_after("import securesession._vault_connection")


def test_key_source_protocol() -> None:
    key = MasterKey.generate()

    class Fixed:
        def master_key(self) -> MasterKey:
            return key

    source: KeySource = Fixed()
    assert isinstance(source, KeySource) and source.master_key() is key
    assert not isinstance(key, KeySource)  # a key is not a source of one


def test_aes_gcm_is_cryptographys_public_class() -> None:
    # _crypto takes the class from the Rust binding (a cheaper import): it must be the
    # very class cryptography's public module exports, not a lookalike or an older one.
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from securesession import _crypto

    assert vars(_crypto)["AESGCM"] is AESGCM
