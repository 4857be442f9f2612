"""Bad input: a damaged file, a truncated ciphertext, a row edited by hand, a schema
from a newer version. Each is a clear error naming what is wrong, no secret in it,
and nothing in the store is overwritten."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from securesession import (
    Credential,
    DecryptionError,
    MasterKey,
    RegistryCorruptError,
    SchemaVersionError,
    SecureSessionError,
    ServiceEntry,
    open_registry,
)

from ..backends import BASE, Backend

A = BASE + "/a"
B = BASE + "/b"


def entry(url: str, tag: str) -> ServiceEntry:
    return ServiceEntry(
        url=url,
        gateway=Credential(f"gw-{tag}", f"gw-SECRET-{tag}"),
        request=Credential(f"req-{tag}", f"req-SECRET-{tag}"),
    )


@pytest.fixture
def key() -> MasterKey:
    return MasterKey.generate()


@pytest.fixture
def filled(backend: Backend, key: MasterKey) -> Backend:
    with open_registry(backend.url, key) as registry:
        registry.put(entry(A, "a"))
        registry.put(entry(B, "b"))
    return backend


def fails_clearly(
    backend: Backend, key: MasterKey, error: type[SecureSessionError], match: str
) -> str:
    """Open the registry and read everything; it must fail with *error* and leave
    the store as it was. Returns the message."""
    before = backend.dump()
    with pytest.raises(error, match=match) as caught, open_registry(backend.url, key) as registry:
        list(registry.entries())
    message = str(caught.value)
    assert "SECRET" not in message and "SECRET" not in repr(caught.value)
    assert backend.dump() == before
    return message


def test_truncated_ciphertext(filled: Backend, key: MasterKey) -> None:
    secrets = filled.secrets_of(A)
    secrets["gateway.password"] = secrets["gateway.password"][:-7]
    filled.set_json("secrets", A, secrets)
    message = fails_clearly(filled, key, DecryptionError, "field 'gateway.password'")
    assert A in message
    with open_registry(filled.url, key) as registry:
        assert registry.get(B) == entry(B, "b")  # the damage stays where it is
        # A rotation meets the damaged entry and changes nothing at all. (Its message
        # does not name the entry yet: EncryptedRegistry.rotate does not add it.)
        before = filled.dump()
        with pytest.raises(DecryptionError):
            registry.rotate(MasterKey.generate())
        assert filled.dump() == before
        assert registry.get(B) == entry(B, "b")


Edit = Callable[[Backend], None]


def _swap_tokens(backend: Backend) -> None:
    a, b = backend.secrets_of(A), backend.secrets_of(B)
    a["gateway.password"], b["gateway.password"] = b["gateway.password"], a["gateway.password"]
    backend.set_json("secrets", A, a)
    backend.set_json("secrets", B, b)


def _settings(change: Callable[[dict[str, Any]], object]) -> Edit:
    def edit(backend: Backend) -> None:
        import json

        settings = json.loads(
            backend.sql("SELECT CAST(settings AS TEXT) FROM entries WHERE key = ?", A)[0][0]
        )
        backend.set_json("settings", A, change(settings))

    return edit


@pytest.mark.parametrize(
    ("edit", "error", "match"),
    [
        pytest.param(_swap_tokens, DecryptionError, "field 'gateway.password'", id="swapped"),
        pytest.param(
            _settings(lambda s: {**s, "gateway_auth": "bogus"}),
            RegistryCorruptError,
            "invalid stored settings",
            id="bad-mode",
        ),
        pytest.param(
            _settings(lambda s: {**s, "format": 99}),
            RegistryCorruptError,
            "unknown settings format",
            id="future-format",
        ),
        pytest.param(
            _settings(lambda s: [s]), RegistryCorruptError, "settings", id="not-an-object"
        ),
        pytest.param(
            lambda backend: backend.set_json("secrets", A, {"gateway.password": 12}),
            RegistryCorruptError,
            "secrets",
            id="not-a-token",
        ),
    ],
)
def test_row_edited_by_hand(
    filled: Backend, key: MasterKey, edit: Edit, error: type[SecureSessionError], match: str
) -> None:
    edit(filled)
    assert A in fails_clearly(filled, key, error, match)


def test_settings_that_are_not_json(tmp_path: Path, key: MasterKey) -> None:
    # SQLite only: PostgreSQL's jsonb column refuses text that is not JSON.
    path = tmp_path / "registry.db"
    backend = Backend("sqlite", f"sqlite://{path}", path)
    with open_registry(backend.url, key) as registry:
        registry.put(entry(A, "a"))
    backend.sql("UPDATE entries SET settings = '{not json' WHERE key = ?", A)
    fails_clearly(backend, key, RegistryCorruptError, "settings is not valid JSON")


def test_newer_schema(filled: Backend, key: MasterKey) -> None:
    filled.sql("UPDATE schema_version SET version = 7")
    message = fails_clearly(filled, key, SchemaVersionError, "schema version 7, newer than")
    assert "upgrade securesession" in message


def test_damaged_sqlite_pages(tmp_path: Path, key: MasterKey) -> None:
    path = tmp_path / "registry.db"
    with open_registry(f"sqlite://{path}", key) as registry:
        for index in range(200):
            registry.put(entry(f"{BASE}/svc{index}", str(index)))
    data = bytearray(path.read_bytes())
    assert len(data) > 16384
    data[8192:16384] = bytes(range(256)) * 32  # two pages in the middle of the table
    path.write_bytes(bytes(data))
    with (
        pytest.raises(RegistryCorruptError, match="not a valid registry") as caught,
        open_registry(f"sqlite://{path}", key) as registry,
    ):
        list(registry.entries())
    assert str(path) in str(caught.value)
    assert "SECRET" not in str(caught.value)
    assert path.read_bytes() == bytes(data)
