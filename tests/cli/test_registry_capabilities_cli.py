"""The CLI talks to registries through interfaces only: ``rotate-key``'s staged steps
need :class:`~securesession.registry.StagedKeyBookkeeping`, ``upgrade`` needs
:class:`~securesession.registry.LegacyEntryUpgrade`, whichever class offers them. A
third-party registry that is not an ``EncryptedRegistry`` (a delegating wrapper,
registered as an entry point) is refused without the capability, naming its type and
the capability, and served with it."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from securesession import (
    ConfigurationError,
    Credential,
    KeyRing,
    MasterKey,
    Registry,
    ServiceEntry,
    open_registry,
)
from securesession.cli import main
from securesession.registry import (
    EncryptedRegistry,
    EntryRef,
    LegacyEntries,
    LegacyEntryUpgrade,
    StagedKeyBookkeeping,
)

from ..core.test_entry_integrity import _seal_010
from ..secretscan import MARKER, leaks

if TYPE_CHECKING:
    from securesession._audit import AuditRecord, AuditReport
    from securesession._compat import Unpack
    from securesession.registry import ApplyOptions

URL = "https://pay.example.test/api/"
LEGACY = ServiceEntry(
    url="https://127.0.0.1:9/legacy/",
    gateway=Credential("legacy-user", f"gw-{MARKER}-legacy"),
    description="written by 0.1.0",
)


class DelegatingRegistry:
    """A third-party registry that is not an EncryptedRegistry: it hands each call of
    the Registry interface, and only those, to one over SQLite (so that what a command
    wrote outlives it)."""

    def __init__(self, inner: EncryptedRegistry) -> None:
        self._inner = inner

    @property
    def key_id(self) -> str:
        return self._inner.key_id

    def put(self, entry: ServiceEntry) -> ServiceEntry:
        return self._inner.put(entry)

    def get(self, url: str) -> ServiceEntry | None:
        return self._inner.get(url)

    def lookup(self, url: str) -> EntryRef | None:
        return self._inner.lookup(url)

    def load(self, ref: EntryRef) -> ServiceEntry | None:
        return self._inner.load(ref)

    def remove(self, url: str) -> bool:
        return self._inner.remove(url)

    def apply(
        self,
        puts: Sequence[ServiceEntry] = (),
        removes: Sequence[str] = (),
        **options: Unpack[ApplyOptions],
    ) -> list[ServiceEntry]:
        return self._inner.apply(puts, removes, **options)

    def state(self, name: str) -> str | None:
        return self._inner.state(name)

    def audit(
        self, *, since: float | None = None, entry: str | None = None
    ) -> Iterator[AuditRecord]:
        return self._inner.audit(since=since, entry=entry)

    def verify_audit(self) -> AuditReport:
        return self._inner.verify_audit()

    def entries(self) -> Iterator[ServiceEntry]:
        return self._inner.entries()

    def urls(self) -> Iterator[str]:
        return self._inner.urls()

    def count(self) -> int:
        return self._inner.count()

    def rotate(self, new_key: MasterKey, *, progress: Callable[[], None] | None = None) -> int:
        return self._inner.rotate(new_key, progress=progress)

    def close(self) -> None:
        self._inner.close()

    def __enter__(self) -> DelegatingRegistry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class CapableRegistry(DelegatingRegistry):
    """The same, with both capabilities (delegated too): still no EncryptedRegistry."""

    @property
    def staged_key_id(self) -> str | None:
        return self._inner.staged_key_id

    def record_staged_key_id(self, key_id: str | None, *, operation: str) -> None:
        self._inner.record_staged_key_id(key_id, operation=operation)

    def key_usage(self) -> dict[str, int]:
        return self._inner.key_usage()

    def legacy_urls(self) -> list[str]:
        return self._inner.legacy_urls()

    def upgrade_legacy_entries(self) -> list[str]:
        return self._inner.upgrade_legacy_entries()

    @property
    def legacy_entries(self) -> LegacyEntries:
        return self._inner.legacy_entries

    @legacy_entries.setter
    def legacy_entries(self, policy: LegacyEntries) -> None:
        self._inner.legacy_entries = policy


def _inner(url: str, key: MasterKey | KeyRing) -> EncryptedRegistry:
    """The EncryptedRegistry under ``scheme:///path``: SQLite's, at that path."""
    registry = open_registry("sqlite://" + url.partition("://")[2], key)
    assert isinstance(registry, EncryptedRegistry)
    return registry


# The entry points' factories (``securesession.registries``: see the fixture).
def open_plain(url: str, key: MasterKey | KeyRing) -> Registry:
    return DelegatingRegistry(_inner(url, key))


def open_capable(url: str, key: MasterKey | KeyRing) -> Registry:
    return CapableRegistry(_inner(url, key))


class FragileRegistry(CapableRegistry):
    """One whose legacy_entries raises: what isinstance() reads on Python 3.10/3.11."""

    closed = 0

    @property
    def legacy_entries(self) -> LegacyEntries:
        raise RuntimeError("legacy_entries broke")

    @legacy_entries.setter
    def legacy_entries(self, policy: LegacyEntries) -> None:
        raise RuntimeError("legacy_entries broke")

    def close(self) -> None:
        FragileRegistry.closed += 1
        super().close()


def open_fragile(url: str, key: MasterKey | KeyRing) -> Registry:
    return FragileRegistry(_inner(url, key))


if TYPE_CHECKING:  # what mypy checks: the wrappers' and EncryptedRegistry's conformance

    def _conforms(
        plain: DelegatingRegistry, capable: CapableRegistry, er: EncryptedRegistry
    ) -> None:
        registries: list[Registry] = [plain, capable, er]
        bookkeeping: list[StagedKeyBookkeeping] = [capable, er]
        upgrades: list[LegacyEntryUpgrade] = [capable, er]
        del registries, bookkeeping, upgrades


class Host:
    """A key file and a SQLite registry, both reachable as ``plain://`` (a wrapper
    without the capabilities) and ``capable://`` (with them); commands run in this
    process, where the entry points are."""

    def __init__(self, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.key_file = home / "keys" / "master.key"
        self.key_file.parent.mkdir(mode=0o700)
        self.path = home / "registry.db"
        self._capsys = capsys
        self.key = MasterKey.generate()
        self.key.save(self.key_file)
        with contextlib.closing(self.sqlite()) as registry:
            registry.put(ServiceEntry(URL, gateway=Credential("gw", f"gw-{MARKER}-1")))
        capsys.readouterr()  # what the setup logged is not a command's output

    def url(self, scheme: str) -> str:
        return f"{scheme}://{self.path}"

    def sqlite(self) -> EncryptedRegistry:
        """The registry itself, through the library (not under test)."""
        return _inner(self.url("sqlite"), KeyRing.from_file(self.key_file))

    def run(self, scheme: str, *args: str) -> tuple[int, str]:
        """Run ``securesession ARGS`` on the registry as *scheme*; the exit code and the
        output (stdout and stderr), checked for every key and test secret."""
        code = main(["--registry", self.url(scheme), "--key-file", str(self.key_file), *args])
        captured = self._capsys.readouterr()
        output = captured.out + captured.err
        ring = KeyRing.from_file(self.key_file)
        for key in (self.key, ring.active, ring.staged, *ring.previous):
            assert key is None or key.to_base64() not in output
        assert not leaks(output), output
        return code, output


@pytest.fixture
def host(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Host:
    """The two wrappers registered as the ``plain`` and ``capable`` backends, as an
    installed distribution would register them."""
    dist = tmp_path / "site" / "wrapping_backend-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: wrapping-backend\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        f"[securesession.registries]\nplain = {__name__}:open_plain\n"
        f"capable = {__name__}:open_capable\n"
        f"fragile = {__name__}:open_fragile\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    home = tmp_path / "home"
    home.mkdir()
    return Host(home, capsys)


def test_the_wrappers_are_registries_and_not_encrypted_registries(host: Host) -> None:
    for scheme, cls in (("plain", DelegatingRegistry), ("capable", CapableRegistry)):
        with open_registry(host.url(scheme), host.key) as registry:
            assert type(registry) is cls and isinstance(registry, Registry)
            assert not isinstance(registry, EncryptedRegistry)
            assert registry.count() == 1
            capable = cls is CapableRegistry
            assert isinstance(registry, StagedKeyBookkeeping) is capable
            assert isinstance(registry, LegacyEntryUpgrade) is capable


@pytest.mark.parametrize(
    "step", [["--stage"], ["--retire", "staged"], ["--reset-stage"]], ids=lambda s: s[0]
)
def test_the_staged_steps_refuse_a_registry_without_the_key_bookkeeping(
    host: Host, step: list[str]
) -> None:
    if step[-1] == "staged":  # a staged key in the key file: retiring it opens the registry
        staged = MasterKey.generate()
        KeyRing.from_file(host.key_file).stage(staged).save(host.key_file, overwrite=True)
        step = ["--retire", staged.key_id]
    before = host.key_file.read_bytes()
    code, output = host.run("plain", "rotate-key", *step)
    assert code == 1, output
    assert (
        "the registry is a DelegatingRegistry, which does not implement "
        "securesession.registry.StagedKeyBookkeeping: it keeps no record of staged keys"
    ) in output
    assert "use plain rotate-key" in output
    (error,) = [line for line in output.splitlines() if line.startswith("securesession: error:")]
    assert str(host.path) not in error  # a third-party backend's URL may carry a password
    assert host.key_file.read_bytes() == before
    with contextlib.closing(host.sqlite()) as registry:
        assert registry.staged_key_id is None  # nothing recorded


def test_upgrade_refuses_a_registry_without_the_legacy_upgrade(host: Host) -> None:
    with contextlib.closing(host.sqlite()) as registry:
        registry.store.write(LEGACY.url, *_seal_010(LEGACY, host.key), key_id=host.key.key_id)
    for args in (["upgrade", "--dry-run"], ["upgrade"]):
        code, output = host.run("plain", *args)
        assert code == 1, output
        assert (
            "the registry is a DelegatingRegistry, which does not implement "
            "securesession.registry.LegacyEntryUpgrade: securesession cannot tell its "
            "legacy entries apart"
        ) in output
    with contextlib.closing(host.sqlite()) as registry:
        assert registry.legacy_urls() == [LEGACY.url]  # nothing changed


def test_a_third_party_registry_with_the_capabilities_is_upgraded(host: Host) -> None:
    """What only an EncryptedRegistry could do before: the wrapper is one's Registry
    and capabilities, not its class."""
    with contextlib.closing(host.sqlite()) as registry:
        registry.store.write(LEGACY.url, *_seal_010(LEGACY, host.key), key_id=host.key.key_id)
    code, output = host.run("capable", "upgrade", "--dry-run")
    assert code == 0, output
    assert "1 legacy entry to upgrade" in output and LEGACY.url in output
    with contextlib.closing(host.sqlite()) as registry:
        assert registry.legacy_urls() == [LEGACY.url]  # a dry run
    code, output = host.run("capable", "upgrade")
    assert code == 0, output
    assert "upgraded 1 legacy entry" in output and LEGACY.url in output
    with contextlib.closing(host.sqlite()) as registry:
        assert registry.legacy_urls() == []
        assert registry.get(LEGACY.url) == LEGACY


def test_a_third_party_registry_with_the_capabilities_stages_and_withdraws_a_key(
    host: Host,
) -> None:
    code, output = host.run("capable", "rotate-key", "--stage")
    assert code == 0, output
    ring = KeyRing.from_file(host.key_file)
    assert ring.active == host.key and ring.staged is not None
    assert f"staged key id {ring.staged.key_id}" in output
    with contextlib.closing(host.sqlite()) as registry:
        assert registry.key_id == host.key.key_id  # nothing re-encrypted
        assert registry.staged_key_id == ring.staged.key_id
    # --retire of the staged key asks the bookkeeping which keys the entries use.
    code, output = host.run("capable", "rotate-key", "--retire", ring.staged.key_id)
    assert code == 0, output
    assert f"retired key id {ring.staged.key_id} (the staged key)" in output
    assert KeyRing.from_file(host.key_file).key_ids == (host.key.key_id,)
    with contextlib.closing(host.sqlite()) as registry:
        assert registry.staged_key_id is None
        assert [record.operation for record in registry.audit()][-2:] == ["stage", "retire"]
        registry.verify_audit()


def test_a_registry_without_the_capabilities_is_shown_and_rotated(host: Host) -> None:
    """``show`` and plain ``rotate-key`` accept legacy entries where a registry has
    them; one without the capability has none, and is served all the same."""
    code, output = host.run("plain", "show", URL)
    assert code == 0, output
    assert "https://pay.example.test:443/api" in output and "revision:       1" in output
    with pytest.raises(ConfigurationError, match=r"does not implement \S+LegacyEntryUpgrade"):
        open_registry(host.url("plain"), host.key, legacy_entries="accept")
    new_key = host.key_file.with_name("new.key")
    code, output = host.run("plain", "rotate-key", "--new-key-file", str(new_key))
    assert code == 0, output
    with contextlib.closing(_inner(host.url("sqlite"), MasterKey.from_file(new_key))) as registry:
        assert registry.get(URL) == ServiceEntry(URL, gateway=Credential("gw", f"gw-{MARKER}-1"))


def test_a_third_party_registry_with_the_capabilities_commits_a_staged_key(
    host: Host,
) -> None:
    """--commit opens with legacy entries accepted (it re-seals them): a legacy entry
    in a capable third-party registry is upgraded by the commit, as in SQLite's own."""
    with contextlib.closing(host.sqlite()) as registry:
        registry.store.write(LEGACY.url, *_seal_010(LEGACY, host.key), key_id=host.key.key_id)
    code, output = host.run("capable", "rotate-key", "--stage")
    assert code == 0, output
    staged = KeyRing.from_file(host.key_file).staged
    assert staged is not None
    code, output = host.run("capable", "rotate-key", "--commit")
    assert code == 0, output
    with contextlib.closing(host.sqlite()) as registry:
        assert registry.key_id == staged.key_id
        assert registry.legacy_urls() == []
        assert registry.get(LEGACY.url) == LEGACY


def test_a_registry_whose_capability_check_raises_is_closed(host: Host) -> None:
    """Neither open_registry nor the command line leaves it open behind the error."""
    FragileRegistry.closed = 0
    with pytest.raises(RuntimeError, match="legacy_entries broke"):
        open_registry(host.url("fragile"), host.key, legacy_entries="accept")
    assert FragileRegistry.closed == 1
    with pytest.raises(RuntimeError, match="legacy_entries broke"):
        host.run("fragile", "show", URL)
    assert FragileRegistry.closed == 2
