"""The CLI and entries written by securesession 0.1.0 (no entry tag, settings not
authenticated): refused where a command would use them, shown by ``show`` (with the
warning) so that they can be checked, authenticated by ``upgrade`` (same key, one
transaction) and by ``rotate-key``; a fieldless one is refused always."""

from __future__ import annotations

from securesession import Credential, MasterKey, ServiceEntry, open_registry
from securesession.registry import EncryptedRegistry

from ..core.test_entry_integrity import _seal_010
from .clihelp import CLI, one_error_line

#: Port 9 (discard) on loopback: nothing listens, and nothing is ever sent there.
LEGACY = ServiceEntry(
    url="https://127.0.0.1:9/legacy/",
    gateway=Credential("legacy-user", "gw-SECRET-legacy"),
    description="written by 0.1.0",
)


def _write_legacy(cli: CLI, key: MasterKey, entry: ServiceEntry = LEGACY) -> None:
    """Store *entry* as 0.1.0 did (raw store access, as 0.1.0 wrote its rows)."""
    with open_registry(cli.registry_url, key) as registry:
        assert isinstance(registry, EncryptedRegistry)
        registry.store.write(entry.url, *_seal_010(entry, key), key_id=key.key_id)


def test_a_legacy_entry_is_refused_shown_and_upgraded(ready: CLI) -> None:
    key = ready.key()
    _write_legacy(ready, key)
    refused = ready.run("request", "GET", LEGACY.url + "/x")
    assert refused.code != 0
    error = one_error_line(refused)
    assert LEGACY.url in error and "legacy format of securesession 0.1.0" in error
    assert "`securesession upgrade`" in error
    shown = ready.ok("show", LEGACY.url)
    assert "written by 0.1.0" in shown.stdout and "not authenticated" in shown.stderr
    dry = ready.ok("upgrade", "--dry-run")
    assert "1 legacy entry to upgrade" in dry.stdout and LEGACY.url in dry.stdout
    with open_registry(ready.registry_url, key, legacy_entries="accept") as registry:
        assert isinstance(registry, EncryptedRegistry)
        assert registry.legacy_urls() == [LEGACY.url]  # the dry run changed nothing
    upgraded = ready.ok("upgrade")
    assert "upgraded 1 legacy entry" in upgraded.stdout and LEGACY.url in upgraded.stdout
    with ready.open(key) as registry:  # the default: legacy refused, and none left
        assert registry.get(LEGACY.url) == LEGACY
    assert ready.key().key_id == key.key_id  # same key: no host needs a new key file
    assert "not authenticated" not in ready.ok("show", LEGACY.url).stderr
    again = ready.ok("upgrade")
    assert "no legacy entries" in again.stdout


def test_rotate_key_upgrades_legacy_entries(ready: CLI) -> None:
    _write_legacy(ready, ready.key())
    ready.ok("rotate-key")
    with ready.open() as registry:
        assert isinstance(registry, EncryptedRegistry)
        assert registry.legacy_urls() == []
        assert registry.get(LEGACY.url) == LEGACY


def test_a_legacy_row_without_secret_fields_cannot_be_upgraded(ready: CLI) -> None:
    key = ready.key()
    forged = ServiceEntry(url="https://127.0.0.1:9/forged/", description="no fields")
    _write_legacy(ready, key, forged)
    for command in (("upgrade",), ("rotate-key",), ("show", forged.url)):
        result = ready.run(*command)
        assert result.code != 0, result
        assert "nor any secret field" in one_error_line(result)
        assert "securesession remove" in one_error_line(result)
    assert ready.key().key_id == key.key_id  # the failed rotation kept the key
    ready.ok("remove", forged.url)
    assert "no legacy entries" in ready.ok("upgrade").stdout
