"""Entry integrity: a whole entry (settings, TLS profile, the set of its secret fields)
is authenticated under the master key and bound to its URL key.

Each test edits the store as a store writer would (a DBA, a restored backup), on the
memory and the SQLite backend, and checks that the edited entry is refused on load,
and that a session sends nothing with it. Entries written by securesession 0.1.0
(no entry tag) are refused unless the registry is opened with
``legacy_entries="accept"``; then they load, with a warning, until an upgrade (or a
rotation) authenticates them. A legacy row without secret fields is refused always.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from securesession import (
    Credential,
    DecryptionError,
    LegacyEntryError,
    MasterKey,
    RegistryCorruptError,
    SecureSession,
    SecureSessionError,
    ServiceEntry,
    open_registry,
)
from securesession._crypto import token_key_id
from securesession._registry import _codec
from securesession._tls import TLSProfile
from securesession._urls import canonicalize
from securesession.memory import MemoryStore
from securesession.registry import EncryptedRegistry, LegacyEntries, SealedEntry
from securesession.testing import CertificateAuthority, GatewayServer

TAG = "$entry"

Settings = dict[str, Any]
Secrets = dict[str, str]


# -- the store, as a store writer sees it ------------------------------------------------


class Store:
    """One registry location, and hand access to its rows (bypassing securesession)."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.path = tmp_path / "registry.db"
        self._memory = MemoryStore()

    def __repr__(self) -> str:
        return f"<Store {self.kind}>"

    def open(
        self, key: MasterKey, *, legacy_entries: LegacyEntries = "refuse"
    ) -> EncryptedRegistry:
        if self.kind == "memory":
            return EncryptedRegistry(
                self._memory, key, name="memory://", legacy_entries=legacy_entries
            )
        registry = open_registry(f"sqlite://{self.path}", key, legacy_entries=legacy_entries)
        assert isinstance(registry, EncryptedRegistry)
        return registry

    def _sql(self, statement: str, *params: object) -> list[tuple[Any, ...]]:
        connection = sqlite3.connect(self.path, isolation_level=None)
        try:
            return connection.execute(statement, params).fetchall()
        finally:
            connection.close()

    def row(self, url: str) -> tuple[Settings, Secrets]:
        """The stored settings and secret tokens of the entry for *url* (copies)."""
        key = canonicalize(url).key
        if self.kind == "memory":
            sealed = self._memory._rows[key]
            return copy.deepcopy(sealed.settings), dict(sealed.secrets)
        ((settings, secrets),) = self._sql(
            "SELECT settings, secrets FROM entries WHERE key = ?", key
        )
        return json.loads(settings), json.loads(secrets)

    def set_row(self, url: str, settings: Settings, secrets: Secrets) -> None:
        """Insert or replace the row of *url* by hand (same revision if it exists)."""
        key = canonicalize(url).key
        if self.kind == "memory":
            rows = self._memory._rows
            if key in rows:
                rows[key] = rows[key]._replace(settings=settings, secrets=secrets)
            else:
                rows[key] = SealedEntry(key, 10_000 + len(rows), 0.0, settings, secrets)
            return
        self._sql(
            "INSERT OR REPLACE INTO entries VALUES (?, "
            "coalesce((SELECT revision FROM entries WHERE key = ?), 10000), 0, ?, ?)",
            key,
            key,
            json.dumps(settings),
            json.dumps(secrets),
        )

    def delete_key_id_record(self) -> None:
        if self.kind == "memory":
            self._memory._key_id = None
        else:
            self._sql("DELETE FROM meta WHERE name = 'key_id'")

    def key_id_record(self) -> str | None:
        if self.kind == "memory":
            return self._memory._key_id
        rows = self._sql("SELECT value FROM meta WHERE name = 'key_id'")
        return rows[0][0] if rows else None


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    return Store(request.param, tmp_path)


@pytest.fixture(autouse=True)
def _fresh_legacy_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The legacy warning is logged once per entry and revision per process; tests
    reuse URLs and revisions, so each starts with none logged yet."""
    monkeypatch.setattr(_codec, "_legacy_warned", set())


# -- a TLS gateway and two entries that reach it -------------------------------------


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority("integrity test CA")


@pytest.fixture(scope="module")
def other_ca() -> CertificateAuthority:
    return CertificateAuthority("a CA the store writer controls")


@pytest.fixture(scope="module")
def _gateway(ca: CertificateAuthority) -> Iterator[GatewayServer]:
    with GatewayServer(tls=True, ca=ca) as server:
        yield server


@pytest.fixture
def gateway(_gateway: GatewayServer) -> GatewayServer:
    _gateway.reset()
    return _gateway


def make_entry(
    server: GatewayServer, ca: CertificateAuthority, path: str, tag: str, **options: Any
) -> ServiceEntry:
    assert server.server_cert is not None
    fields: dict[str, Any] = {
        "url": f"{server.url}{path}",
        "gateway": Credential(f"gw-{tag}", f"gw-SECRET-{tag}"),
        "request": Credential(f"req-{tag}", f"req-SECRET-{tag}"),
        "secret_headers": {"X-Api-Key": f"api-SECRET-{tag}"},
        "description": f"entry {tag}",
        "tls": TLSProfile(
            min_version="1.3",
            ca_bundle=ca.cert_pem,
            pins=(server.server_cert.spki_sha256_pin,),
            crl=ca.crl(),
        ),
    }
    fields.update(options)
    return ServiceEntry(**fields)


@pytest.fixture
def a_url(gateway: GatewayServer) -> str:
    return f"{gateway.url}/a/"


@pytest.fixture
def filled(
    store: Store, key: MasterKey, gateway: GatewayServer, ca: CertificateAuthority
) -> Iterator[EncryptedRegistry]:
    """Entries /a/ and /b/ (TLS profile, two credentials, a secret header each)."""
    registry = store.open(key)
    registry.put(make_entry(gateway, ca, "/a/", "a"))
    registry.put(make_entry(gateway, ca, "/b/", "b"))
    yield registry
    registry.close()


def sends_nothing(registry: EncryptedRegistry, gateway: GatewayServer, url: str) -> None:
    """A request through the edited entry raises, and the gateway saw nothing."""
    with SecureSession(registry) as session, pytest.raises((DecryptionError, RegistryCorruptError)):
        session.get(url + "x")
    assert gateway.requests == []


# -- the untampered control -----------------------------------------------------------


def test_an_untampered_entry_is_authenticated_and_sent(
    filled: EncryptedRegistry, store: Store, gateway: GatewayServer, a_url: str
) -> None:
    """The control for every test below: the same entry, not edited, is sent."""
    settings, secrets = store.row(a_url)
    assert set(secrets) == {
        TAG,
        "gateway.username",
        "gateway.password",
        "request.username",
        "request.password",
        "header.X-Api-Key",
    }
    assert settings["tls"]["pins"] and settings["tls"]["ca_bundle"]
    with SecureSession(filled) as session:
        assert session.get(a_url + "x").status_code == 200
    (record,) = gateway.requests
    assert record.header("X-Gateway-Password") == "gw-SECRET-a"
    assert record.header("X-Api-Key") == "api-SECRET-a"


# -- settings --------------------------------------------------------------------------

Edit = Callable[[Settings], None]


def _set(*path: str, value: object) -> Edit:
    def edit(settings: Settings) -> None:
        target = settings
        for name in path[:-1]:
            target = target[name]
        target[path[-1]] = value

    return edit


def _ca_swap(settings: Settings) -> None:
    settings["tls"]["ca_bundle"] = CertificateAuthority("swapped in").cert_pem.decode("ascii")


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(_set("gateway_auth", value="basic"), id="gateway_auth"),
        pytest.param(_set("request_auth", value="bearer"), id="request_auth"),
        pytest.param(
            _set("gateway_headers", value=["X-Gateway-User", "X-Exfiltrate"]), id="header-name"
        ),
        pytest.param(_set("description", value="nothing to see"), id="description"),
        pytest.param(_set("tls", "pins", value=[]), id="pins-removed"),
        pytest.param(_ca_swap, id="ca_bundle-swapped"),
        pytest.param(_set("tls", "min_version", value="1.2"), id="min_version-lowered"),
        pytest.param(_set("tls", "crl", value=None), id="crl-removed"),
        pytest.param(_set("tls", "check_revocation", value=False), id="revocation-off"),
        pytest.param(_set("tls", "allow_legacy", value=True), id="allow_legacy"),
        pytest.param(lambda settings: settings.pop("tls"), id="tls-profile-removed"),
    ],
)
def test_an_edited_setting_fails_authentication(
    filled: EncryptedRegistry,
    store: Store,
    key: MasterKey,
    gateway: GatewayServer,
    a_url: str,
    edit: Edit,
) -> None:
    settings, secrets = store.row(a_url)
    edit(settings)
    store.set_row(a_url, settings, secrets)
    with pytest.raises(RegistryCorruptError, match="entry authentication failed") as caught:
        filled.get(a_url + "x")
    message = str(caught.value)
    assert canonicalize(a_url).key in message and "SECRET" not in message
    with pytest.raises(RegistryCorruptError, match="entry authentication failed"):
        list(store.open(key).entries())
    assert filled.get(f"{gateway.url}/b/x") is not None  # the damage stays where it is
    sends_nothing(filled, gateway, a_url)


def test_a_changed_format_number_fails_authentication(
    filled: EncryptedRegistry, store: Store, a_url: str
) -> None:
    settings, secrets = store.row(a_url)
    assert settings["format"] == 2
    store.set_row(a_url, {**settings, "format": 1}, secrets)
    with pytest.raises(RegistryCorruptError, match="entry authentication failed"):
        filled.get(a_url)


# -- the set of fields, and their tokens ---------------------------------------------


def test_a_deleted_secret_field_fails_authentication(
    filled: EncryptedRegistry, store: Store, gateway: GatewayServer, a_url: str
) -> None:
    for field in ("header.X-Api-Key", "request.password"):
        settings, secrets = store.row(a_url)
        saved = dict(secrets)
        del secrets[field]
        store.set_row(a_url, settings, secrets)
        with pytest.raises(RegistryCorruptError, match="entry authentication failed"):
            filled.get(a_url)
        sends_nothing(filled, gateway, a_url)
        store.set_row(a_url, settings, saved)
        assert filled.get(a_url) is not None  # restored: authentic again


def test_a_field_added_back_from_an_older_revision_fails_authentication(
    filled: EncryptedRegistry,
    store: Store,
    gateway: GatewayServer,
    ca: CertificateAuthority,
    a_url: str,
) -> None:
    """A field token authentic for this entry and field, from a revision that had it,
    added to the current revision: every token opens, the set of fields is wrong."""
    filled.put(make_entry(gateway, ca, "/a/", "a", secret_headers={"X-Old": "old-SECRET"}))
    old_token = store.row(a_url)[1]["header.X-Old"]
    filled.put(make_entry(gateway, ca, "/a/", "a"))
    settings, secrets = store.row(a_url)
    store.set_row(a_url, settings, {**secrets, "header.X-Old": old_token})
    with pytest.raises(RegistryCorruptError, match="entry authentication failed"):
        filled.get(a_url)
    sends_nothing(filled, gateway, a_url)


def test_a_field_rolled_back_to_an_older_token_fails_authentication(
    filled: EncryptedRegistry,
    store: Store,
    gateway: GatewayServer,
    ca: CertificateAuthority,
    a_url: str,
) -> None:
    """One field of the current revision replaced by its token from an older one."""
    old_token = store.row(a_url)[1]["gateway.password"]
    filled.put(make_entry(gateway, ca, "/a/", "a", gateway=Credential("gw-a", "new-SECRET")))
    settings, secrets = store.row(a_url)
    store.set_row(a_url, settings, {**secrets, "gateway.password": old_token})
    with pytest.raises(RegistryCorruptError, match="entry authentication failed"):
        filled.get(a_url)
    sends_nothing(filled, gateway, a_url)


def test_a_field_token_swapped_in_from_another_entry_is_refused(
    filled: EncryptedRegistry, store: Store, gateway: GatewayServer, a_url: str
) -> None:
    b_url = f"{gateway.url}/b/"
    settings, secrets = store.row(a_url)
    secrets["gateway.password"] = store.row(b_url)[1]["gateway.password"]
    store.set_row(a_url, settings, secrets)
    with pytest.raises(DecryptionError, match=r"field 'gateway\.password'") as caught:
        filled.get(a_url)
    assert "moved from another entry or field" in str(caught.value)
    sends_nothing(filled, gateway, a_url)


def test_a_tag_swapped_in_from_another_entry_fails_authentication(
    filled: EncryptedRegistry, store: Store, gateway: GatewayServer, a_url: str
) -> None:
    settings, secrets = store.row(a_url)
    secrets[TAG] = store.row(f"{gateway.url}/b/")[1][TAG]
    store.set_row(a_url, settings, secrets)
    with pytest.raises(RegistryCorruptError, match="entry authentication failed"):
        filled.get(a_url)
    sends_nothing(filled, gateway, a_url)


def test_a_stripped_tag_is_refused_not_read_as_legacy(
    filled: EncryptedRegistry,
    store: Store,
    gateway: GatewayServer,
    a_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Without its tag a v3 entry would pass for a legacy one, but v3 tokens do not
    open under the legacy context."""
    settings, secrets = store.row(a_url)
    del secrets[TAG]
    settings["tls"]["pins"] = []  # what stripping the tag would be for
    store.set_row(a_url, settings, secrets)
    with caplog.at_level(logging.WARNING, logger="securesession"):
        with pytest.raises(DecryptionError, match="was removed outside securesession"):
            filled.get(a_url)
        sends_nothing(filled, gateway, a_url)
    assert "legacy format" not in caplog.text


# -- moving rows -------------------------------------------------------------------------


def test_a_row_moved_to_another_key_is_refused(
    filled: EncryptedRegistry, store: Store, gateway: GatewayServer, a_url: str
) -> None:
    moved = f"{gateway.url}/admin/"
    store.set_row(moved, *store.row(a_url))
    with pytest.raises((DecryptionError, RegistryCorruptError), match="/admin"):
        filled.get(moved + "x")
    sends_nothing(filled, gateway, moved)


def test_a_row_without_secret_fields_moved_to_another_key_fails_authentication(
    store: Store, key: MasterKey, gateway: GatewayServer, ca: CertificateAuthority
) -> None:
    """Only the tag binds an entry that has no secret field (a TLS profile with pins,
    no credentials) to its key; moved, it would lend its trust settings elsewhere."""
    registry = store.open(key)
    pinned = make_entry(gateway, ca, "/pinned/", "p", gateway=None, request=None, secret_headers={})
    registry.put(pinned)
    settings, secrets = store.row(pinned.url)
    assert set(secrets) == {TAG}
    moved = f"{gateway.url}/other/"
    store.set_row(moved, settings, secrets)
    assert registry.get(pinned.url) is not None
    with pytest.raises(RegistryCorruptError, match="entry authentication failed"):
        registry.get(moved)
    sends_nothing(registry, gateway, moved)


# -- rotation --------------------------------------------------------------------------


def test_rotation_refuses_a_tampered_entry_and_changes_nothing(
    filled: EncryptedRegistry, store: Store, key: MasterKey, a_url: str
) -> None:
    """A rotation must not re-authenticate an entry edited behind its back."""
    settings, secrets = store.row(a_url)
    settings["tls"]["pins"] = []
    store.set_row(a_url, settings, secrets)
    with pytest.raises(RegistryCorruptError, match="entry authentication failed"):
        filled.rotate(MasterKey.generate())
    assert store.row(a_url) == (settings, secrets)
    assert store.key_id_record() == key.key_id
    with pytest.raises(RegistryCorruptError, match="entry authentication failed"):
        filled.get(a_url)


@pytest.mark.parametrize("same_key", [False, True], ids=["new-key", "same-key"])
def test_rotation_keeps_entries_authenticated(
    filled: EncryptedRegistry, store: Store, key: MasterKey, a_url: str, same_key: bool
) -> None:
    before = list(filled.entries())
    new_key = key if same_key else MasterKey.generate()
    filled.rotate(new_key)
    assert list(filled.entries()) == before
    settings, secrets = store.row(a_url)
    assert TAG in secrets
    settings["tls"]["pins"] = []
    store.set_row(a_url, settings, secrets)
    with pytest.raises(RegistryCorruptError, match="entry authentication failed"):
        filled.get(a_url)


# -- legacy entries (written by securesession 0.1.0) --------------------------------------


def _seal_010(entry: ServiceEntry, key: MasterKey) -> tuple[Settings, Secrets]:
    """The sealing of securesession 0.1.0, reproduced: no entry tag, and field tokens
    bound to ``"securesession entry" NUL key NUL field``."""
    clear: dict[str, str] = {}
    for role, credential in (("gateway", entry.gateway), ("request", entry.request)):
        if credential is not None:
            clear[f"{role}.username"] = credential.username
            clear[f"{role}.password"] = credential.password.reveal()
    for header, value in entry.secret_headers.items():
        clear[f"header.{header}"] = value.reveal()
    settings: Settings = {
        "format": 1 if entry.tls is None else 2,
        "gateway_auth": entry.gateway_auth,
        "request_auth": entry.request_auth,
        "gateway_headers": list(entry.gateway_headers),
        "request_headers": list(entry.request_headers),
        "description": entry.description,
    }
    profile = entry.tls
    if profile is not None:
        cert = profile.client_cert
        if cert is not None:
            clear["tls.client_cert"] = base64.b64encode(cert.data).decode("ascii")
            if cert.password is not None:
                clear["tls.client_cert.password"] = cert.password.reveal()
        settings["tls"] = {
            "client_cert_format": None if cert is None else cert.format,
            "version": profile.version,
            "min_version": profile.min_version,
            "max_version": profile.max_version,
            "ca_bundle": profile.ca_bundle.decode("ascii")
            if isinstance(profile.ca_bundle, bytes)
            else profile.ca_bundle,
            "pins": list(profile.pins),
            "crl": None if profile.crl is None else profile.crl.decode("ascii"),
            "crl_scope": profile.crl_scope,
            "check_revocation": profile.check_revocation,
            "allow_legacy": profile.allow_legacy,
        }
    secrets = {
        name: key.encrypt(
            value.encode(),
            b"securesession entry\x00" + entry.url.encode() + b"\x00" + name.encode(),
        )
        for name, value in clear.items()
    }
    return settings, secrets


def _opens_as_legacy(token: str, url: str, field: str, key: MasterKey) -> bool:
    context = b"securesession entry\x00" + canonicalize(url).key.encode() + b"\x00" + field.encode()
    try:
        key.decrypt(token, context)
    except DecryptionError:
        return False
    return True


@pytest.fixture
def legacy(
    store: Store, key: MasterKey, gateway: GatewayServer, ca: CertificateAuthority
) -> Iterator[tuple[EncryptedRegistry, ServiceEntry]]:
    """A registry holding one entry written by 0.1.0 (through the store, as 0.1.0 did),
    opened with legacy entries accepted."""
    registry = store.open(key, legacy_entries="accept")
    entry = make_entry(gateway, ca, "/legacy/", "old")
    registry.store.write(entry.url, *_seal_010(entry, key), key_id=key.key_id)
    yield registry, entry
    registry.close()


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_legacy_entry_loads_with_a_warning_once(
    legacy: tuple[EncryptedRegistry, ServiceEntry],
    gateway: GatewayServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry, entry = legacy
    with caplog.at_level(logging.WARNING, logger="securesession"):
        assert registry.get(entry.url + "/x") == entry
        assert registry.get(entry.url + "/y") == entry  # warned once, not per load
        with SecureSession(registry) as session:
            assert session.get(entry.url + "/z").status_code == 200
    (warning,) = _warnings(caplog)
    assert entry.url in warning and "not authenticated" in warning
    assert "securesession upgrade" in warning and "securesession rotate-key" in warning
    assert "SECRET" not in warning
    assert len(gateway.requests) == 1


@pytest.mark.parametrize("same_key", [False, True], ids=["new-key", "same-key"])
def test_rotation_upgrades_a_legacy_entry(
    legacy: tuple[EncryptedRegistry, ServiceEntry],
    store: Store,
    key: MasterKey,
    gateway: GatewayServer,
    caplog: pytest.LogCaptureFixture,
    same_key: bool,
) -> None:
    registry, entry = legacy
    new_key = key if same_key else MasterKey.generate()
    registry.rotate(new_key)
    settings, secrets = store.row(entry.url)
    assert TAG in secrets
    assert not _opens_as_legacy(secrets["gateway.password"], entry.url, "gateway.password", new_key)
    with caplog.at_level(logging.WARNING, logger="securesession"):
        assert registry.get(entry.url) == entry
        reopened = store.open(new_key)
        assert list(reopened.entries()) == [entry]
        with SecureSession(reopened) as session:
            assert session.get(entry.url + "/x").status_code == 200
    assert _warnings(caplog) == []
    # Now authenticated: the edit a legacy entry could not detect is refused.
    settings["tls"]["pins"] = []
    store.set_row(entry.url, settings, secrets)
    with pytest.raises(RegistryCorruptError, match="entry authentication failed"):
        reopened.get(entry.url)


def test_a_put_rewrites_a_legacy_entry_authenticated(
    legacy: tuple[EncryptedRegistry, ServiceEntry], store: Store
) -> None:
    registry, entry = legacy
    registry.put(entry)
    assert TAG in store.row(entry.url)[1]


# -- legacy entries are refused unless accepted; without secret fields, always ----------


def _legacy_row(
    store: Store, key: MasterKey, gateway: GatewayServer, ca: CertificateAuthority
) -> ServiceEntry:
    """Write the entry /legacy/ as 0.1.0 stored it, by hand; return it."""
    entry = make_entry(gateway, ca, "/legacy/", "old")
    store.set_row(entry.url, *_seal_010(entry, key))
    return entry


def _parent(registry: EncryptedRegistry, gateway: GatewayServer, ca: CertificateAuthority) -> None:
    """An authenticated entry for the whole gateway, whose credentials must never
    stand in for a refused entry under it."""
    registry.put(make_entry(gateway, ca, "/", "parent"))


def fails_closed(
    registry: EncryptedRegistry, gateway: GatewayServer, url: str, error: type[Exception]
) -> None:
    """Requests to *url* through a session and an httpx client raise *error*: neither
    the refused entry's settings nor the parent entry's credentials go anywhere."""
    httpx_client = pytest.importorskip("securesession.httpx")
    with SecureSession(registry) as session, pytest.raises(error):
        session.get(url)
    with httpx_client.SecureClient(registry) as client, pytest.raises(error):
        client.get(url)
    assert gateway.requests == []


def test_a_legacy_entry_is_refused_by_default(
    store: Store,
    key: MasterKey,
    gateway: GatewayServer,
    ca: CertificateAuthority,
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = store.open(key)
    _parent(registry, gateway, ca)
    entry = _legacy_row(store, key, gateway, ca)
    with pytest.raises(LegacyEntryError) as caught:
        registry.get(entry.url + "/x")
    message = str(caught.value)
    assert caught.value.url == entry.url and entry.url in message
    assert "legacy format of securesession 0.1.0" in message
    assert "`securesession upgrade`" in message and "`securesession rotate-key`" in message
    assert "legacy_entries='accept'" in message and "SECRET" not in message
    assert isinstance(caught.value, RegistryCorruptError)
    with pytest.raises(LegacyEntryError):
        list(registry.entries())
    with caplog.at_level(logging.WARNING, logger="securesession"):
        fails_closed(registry, gateway, entry.url + "/x", LegacyEntryError)
    assert "legacy format" not in caplog.text  # refused, not read with a warning
    # The parent entry itself is untouched: its own URLs are served.
    with SecureSession(registry) as session:
        assert session.get(f"{gateway.url}/other").status_code == 200
    assert gateway.requests[0].header("X-Gateway-Password") == "gw-SECRET-parent"


def test_a_rotation_refuses_legacy_entries_unless_accepted(
    store: Store, key: MasterKey, gateway: GatewayServer, ca: CertificateAuthority
) -> None:
    """A rotation would authenticate a legacy row's settings: without the opt-in it
    stops, and nothing changes."""
    registry = store.open(key)
    entry = _legacy_row(store, key, gateway, ca)
    before = store.row(entry.url)
    with pytest.raises(LegacyEntryError, match="legacy format"):
        registry.rotate(MasterKey.generate())
    assert store.row(entry.url) == before and store.key_id_record() == key.key_id


def test_the_upgrade_authenticates_legacy_entries_under_the_same_key(
    store: Store,
    key: MasterKey,
    gateway: GatewayServer,
    ca: CertificateAuthority,
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = store.open(key)  # the upgrade is the opt-in: no legacy_entries needed
    _parent(registry, gateway, ca)
    entry = _legacy_row(store, key, gateway, ca)
    parent_row = store.row(gateway.url + "/")
    assert registry.upgrade_legacy_entries() == [entry.url]
    settings, secrets = store.row(entry.url)
    assert TAG in secrets and settings == _seal_010(entry, key)[0]
    assert not any(
        _opens_as_legacy(token, entry.url, name, key)
        for name, token in secrets.items()
        if name != TAG
    )
    assert store.row(gateway.url + "/") == parent_row  # authenticated rows: untouched
    assert registry.upgrade_legacy_entries() == []
    (record,) = [r for r in registry.audit() if r.operation == "upgrade"]
    assert record.entry == entry.url and record.change == "changed"
    reopened = store.open(key)  # the default: legacy refused, and none is left
    with caplog.at_level(logging.WARNING, logger="securesession"):
        assert reopened.get(entry.url + "/x") == entry
        with SecureSession(reopened) as session:
            assert session.get(entry.url + "/x").status_code == 200
    assert _warnings(caplog) == []
    assert gateway.requests[0].header("X-Gateway-Password") == "gw-SECRET-old"
    # Now authenticated: the edit a legacy entry could not detect is refused.
    settings["tls"]["pins"] = []
    store.set_row(entry.url, settings, secrets)
    with pytest.raises(RegistryCorruptError, match="entry authentication failed"):
        reopened.get(entry.url)


def test_a_legacy_row_replayed_after_the_upgrade_is_refused(
    legacy: tuple[EncryptedRegistry, ServiceEntry], store: Store, key: MasterKey
) -> None:
    """Upgrading under the same key leaves old backups' legacy rows decryptable; a
    registry that does not accept legacy entries refuses them anyway."""
    registry, entry = legacy
    backup = store.row(entry.url)
    assert registry.upgrade_legacy_entries() == [entry.url]
    backup[0]["tls"]["pins"] = []  # the point of replaying it
    store.set_row(entry.url, *backup)
    with pytest.raises(LegacyEntryError, match=entry.url):
        store.open(key).get(entry.url)


def _forge_empty_legacy(store: Store, url: str) -> None:
    """What a store writer without the key can write: no secret field, no tag, settings
    of their choosing (trust the system store, no pins, Basic to the gateway)."""
    store.set_row(
        url,
        {
            "format": 2,
            "gateway_auth": "basic",
            "request_auth": "basic",
            "gateway_headers": [],
            "request_headers": [],
            "description": "forged",
            "tls": {
                "client_cert_format": None,
                "version": None,
                "min_version": "1.2",
                "max_version": None,
                "ca_bundle": "system",
                "pins": [],
                "crl": None,
                "crl_scope": "leaf",
                "check_revocation": False,
                "allow_legacy": False,
            },
        },
        {},
    )


@pytest.mark.parametrize("legacy_entries", ["refuse", "accept"])
def test_a_forged_legacy_row_without_secret_fields_is_refused_always(
    store: Store,
    key: MasterKey,
    gateway: GatewayServer,
    ca: CertificateAuthority,
    legacy_entries: LegacyEntries,
) -> None:
    """The review's scenario: after the registry was upgraded, a writer without the key
    inserts a fieldless "legacy" row under a longer prefix. It is refused even where
    legacy entries are accepted, and requests under it fail closed (the parent's
    credentials are not sent); an upgrade or a rotation cannot authenticate it."""
    registry = store.open(key, legacy_entries=legacy_entries)
    _parent(registry, gateway, ca)
    registry.rotate(key)
    forged = f"{gateway.url}/payments"
    _forge_empty_legacy(store, forged)
    with pytest.raises(LegacyEntryError) as caught:
        registry.get(forged + "/charge")
    assert "nor any secret field" in str(caught.value) and forged in str(caught.value)
    assert "securesession remove" in str(caught.value)
    fails_closed(registry, gateway, forged + "/charge", LegacyEntryError)
    before = store.row(forged)
    for upgrade in (registry.upgrade_legacy_entries, lambda: registry.rotate(key)):
        with pytest.raises(LegacyEntryError, match="nor any secret field"):
            upgrade()
        assert store.row(forged) == before
    assert registry.remove(forged)  # the fix the message gives
    with SecureSession(registry) as session:
        assert session.get(forged + "/charge").status_code == 200


@pytest.mark.parametrize("keep_fields", [True, False], ids=["tag-stripped", "fields-stripped"])
@pytest.mark.parametrize("legacy_entries", ["refuse", "accept"])
def test_an_upgraded_entry_cannot_be_downgraded_to_legacy(
    filled: EncryptedRegistry,
    store: Store,
    key: MasterKey,
    gateway: GatewayServer,
    a_url: str,
    keep_fields: bool,
    legacy_entries: LegacyEntries,
) -> None:
    """Strip the tag of an authenticated entry and edit its settings (no pins, the
    system CA store, the password into a header of the writer's choosing): the field
    tokens do not open under the legacy associated data, so the row is no legacy entry;
    and stripped of every field it authenticates nothing. Refused either way, even
    where legacy entries are accepted; the upgrade does not re-authenticate it."""
    settings, secrets = store.row(a_url)
    assert not any(
        _opens_as_legacy(token, a_url, name, key) for name, token in secrets.items() if name != TAG
    )
    del secrets[TAG]
    settings["tls"].update(pins=[], ca_bundle="system", crl=None)
    settings.update(gateway_auth="headers", gateway_headers=["X-Gateway-User", "X-Exfiltrate"])
    store.set_row(a_url, settings, secrets if keep_fields else {})
    registry = store.open(key, legacy_entries=legacy_entries)
    error = DecryptionError if keep_fields else LegacyEntryError
    message = "was removed outside securesession" if keep_fields else "nor any secret field"
    with pytest.raises(error, match=message):
        registry.get(a_url)
    with pytest.raises(error, match=message):
        registry.upgrade_legacy_entries()
    fails_closed(registry, gateway, a_url + "x", error)


def test_open_registry_checks_legacy_entries(tmp_path: Path, key: MasterKey) -> None:
    with pytest.raises(ValueError, match="'refuse' or 'accept'"):
        open_registry(f"sqlite://{tmp_path}/r.db", key, legacy_entries="yes")  # type: ignore[arg-type]
    assert not (tmp_path / "r.db").exists()  # refused before anything was opened
    with open_registry("memory://", key, legacy_entries="accept") as registry:
        assert isinstance(registry, EncryptedRegistry) and registry.legacy_entries == "accept"
    with open_registry("memory://", key) as registry:
        assert isinstance(registry, EncryptedRegistry) and registry.legacy_entries == "refuse"


# -- the key id of a registry that lost its record of it ---------------------------------


def test_token_key_id_reads_the_header_without_decrypting() -> None:
    key = MasterKey.generate()
    token = key.encrypt(b"x", b"context")
    assert token_key_id(token) == key.key_id
    raw = base64.urlsafe_b64decode(token)
    assert token_key_id(base64.urlsafe_b64encode(b"\x02" + raw[1:]).decode()) is None
    assert token_key_id(token[:20]) is None
    assert token_key_id("not a token!") is None
    assert token_key_id("") is None


def test_a_lost_key_id_record_is_not_replaced_by_a_wrong_key(
    filled: EncryptedRegistry, store: Store, key: MasterKey
) -> None:
    filled.close()
    store.delete_key_id_record()
    wrong = MasterKey.generate()
    with pytest.raises(DecryptionError, match="wrong master key") as caught:
        store.open(wrong)
    assert key.key_id in str(caught.value) and wrong.key_id in str(caught.value)
    assert store.key_id_record() is None  # the wrong key was not adopted
    right = store.open(key)
    assert store.key_id_record() == key.key_id
    assert len(list(right.entries())) == 2


def test_a_lost_key_id_record_is_checked_against_legacy_tokens(
    legacy: tuple[EncryptedRegistry, ServiceEntry], store: Store, key: MasterKey
) -> None:
    registry, entry = legacy
    registry.close()
    store.delete_key_id_record()
    with pytest.raises(DecryptionError, match="wrong master key"):
        store.open(MasterKey.generate())
    assert store.key_id_record() is None
    assert store.open(key, legacy_entries="accept").get(entry.url) == entry


def test_an_empty_store_records_the_first_key(store: Store, key: MasterKey) -> None:
    store.open(key).close()
    assert store.key_id_record() == key.key_id
    store.delete_key_id_record()
    other = MasterKey.generate()
    store.open(other).close()  # nothing stored: nothing to contradict it
    assert store.key_id_record() == other.key_id


def test_every_failure_is_a_securesession_error(
    filled: EncryptedRegistry, store: Store, a_url: str
) -> None:
    """Garbage in the tag itself: a clear error, not a crash."""
    settings, secrets = store.row(a_url)
    for garbage in ("", "!!!", secrets[TAG][:30]):
        store.set_row(a_url, settings, {**secrets, TAG: garbage})
        with pytest.raises(SecureSessionError, match="entry authentication failed"):
            filled.get(a_url)
