"""``securesession.registry``, the backend authors' module, and what registry code may
import: the registry, its codec and its stores never load an HTTP client or ``ssl``."""

from __future__ import annotations

import ast
import builtins
import collections.abc
import inspect
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest

import securesession.registry
from securesession import _registry
from securesession._registry import _base
from securesession.testing import CertificateAuthority, StubRegistry, contract

REGISTRY_PACKAGE = Path(_registry.__file__).parent
FORBIDDEN = {"requests", "urllib3", "httpx", "ssl"}


def test_every_seam_type_a_store_method_names_is_importable_from_the_module() -> None:
    # A backend author type-checks a store against RegistryStore: each type its methods
    # name (and that the seam module defines) must be importable from the public module.
    named = set()
    for attribute in vars(_base.RegistryStore).values():
        for annotation in getattr(attribute, "__annotations__", {}).values():
            named |= set(re.findall(r"[A-Za-z_]\w*", str(annotation)))
    seam = {name for name in named if name in vars(_base) and not hasattr(builtins, name)}
    seam -= set(dir(typing)) | set(dir(collections.abc))
    assert {"Batch", "Applied", "Rekey", "SealedEntry", "EntryRef", "AuditStart"} <= seam
    assert seam <= set(securesession.registry.__all__)
    for name in seam:
        assert getattr(securesession.registry, name) is getattr(_base, name)


def test_the_backend_authors_names() -> None:
    registry = securesession.registry
    assert set(registry.__all__) == {
        "ENTRY_POINT_GROUP",
        "ENTRY_REVISIONS",
        "EncryptedRegistry",
        "EntryRef",
        "LegacyEntries",
        "LegacyEntryUpgrade",
        "OpenRegistry",
        "Registry",
        "RegistryContract",
        "RegistryStore",
        "Rekey",
        "SealedEntry",
        "rekeyed_error",
        "Applied",
        "ApplyOptions",
        "AuditRow",
        "AuditStart",
        "Batch",
        "BatchesOfOne",
        "Change",
        "Journal",
        "Restate",
        "SealedWrite",
        "StagedKeyBookkeeping",
        "StateText",
        "check_expected",
    }
    assert set(registry.__all__) <= set(dir(registry))
    for name in ("EncryptedRegistry", "EntryRef", "Registry", "RegistryStore", "SealedEntry"):
        assert getattr(registry, name) is getattr(_registry, name)
    assert registry.rekeyed_error is _base.rekeyed_error
    assert registry.StagedKeyBookkeeping is _base.StagedKeyBookkeeping
    assert registry.LegacyEntryUpgrade is _base.LegacyEntryUpgrade
    assert registry.Rekey is _base.Rekey
    assert registry.ENTRY_REVISIONS == _base.ENTRY_REVISIONS
    # The suite is the one of securesession.testing.contract, which stays importable.
    assert registry.RegistryContract is contract.RegistryContract
    assert registry.OpenRegistry is contract.OpenRegistry
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        _ = registry.Nope


def test_rekeyed_error_names_both_keys() -> None:
    error = securesession.registry.rekeyed_error("mine://x", "aaaa", "bbbb")
    assert isinstance(error, securesession.DecryptionError)
    assert "mine://x" in str(error) and "aaaa" in str(error) and "bbbb" in str(error)


def test_the_contract_suite_is_imported_only_on_use() -> None:
    """A store implementation imports securesession.registry; it must not need pytest."""
    code = (
        "import sys, securesession.registry; "
        "print('pytest' in sys.modules); securesession.registry.RegistryContract; "
        "print('pytest' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["False", "True"]


def test_apply_options_are_the_keywords_encrypted_registry_apply_defaults() -> None:
    """One keyword set: Registry.apply takes ApplyOptions, and EncryptedRegistry.apply
    (the implementation with the defaults) takes exactly those, each with a default."""
    options = securesession.registry.ApplyOptions
    implementation = inspect.signature(securesession.registry.EncryptedRegistry.apply)
    keywords = {
        name: parameter.default
        for name, parameter in implementation.parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    }
    assert keywords == {"operation": "put", "expect": None, "state": None}
    assert set(keywords) == options.__optional_keys__ and not options.__required_keys__
    protocol = inspect.signature(securesession.registry.Registry.apply).parameters
    assert str(protocol["options"]) == "**options: 'Unpack[ApplyOptions]'"


def test_every_backend_and_the_stub_are_registries() -> None:
    """``Registry`` is runtime-checkable: the methods added to it (urls, count) are
    on every implementation."""
    from securesession import MasterKey, Registry, open_registry

    memory = open_registry("memory://", MasterKey.generate())
    stub = StubRegistry()
    assert isinstance(memory, Registry) and isinstance(stub, Registry)
    for name in ("urls", "count"):
        for cls in (securesession.registry.EncryptedRegistry, StubRegistry):
            assert callable(getattr(cls, name))
    memory.close()
    stub.close()


def test_encrypted_registry_offers_both_capabilities_structurally() -> None:
    """EncryptedRegistry is no subclass of the capability protocols, yet is one of each
    (for mypy: the typed assignments); an object without them is neither. The check
    reads no property: a closed registry, whose ``staged_key_id`` raises, passes it."""
    from securesession import MasterKey, RegistryError
    from securesession.memory import MemoryStore
    from securesession.registry import LegacyEntryUpgrade, StagedKeyBookkeeping

    registry = securesession.registry.EncryptedRegistry(
        MemoryStore(), MasterKey.generate(), name="memory://"
    )
    bookkeeping: StagedKeyBookkeeping = registry
    upgrade: LegacyEntryUpgrade = registry
    assert bookkeeping.staged_key_id is None and upgrade.legacy_urls() == []
    for protocol in (StagedKeyBookkeeping, LegacyEntryUpgrade):
        assert protocol not in type(registry).__mro__
        assert isinstance(registry, protocol)
        assert not isinstance(object(), protocol)
    registry.close()
    with pytest.raises(RegistryError):
        _ = registry.staged_key_id
    assert isinstance(registry, StagedKeyBookkeeping)


def _direct_imports(path: Path) -> set[str]:
    """Every module *path* imports, absolute, relative ones resolved within securesession."""
    package = ["securesession", *path.relative_to(REGISTRY_PACKAGE.parent).parent.parts]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize(
    "path",
    sorted(REGISTRY_PACKAGE.rglob("*.py")),
    ids=lambda p: str(p.relative_to(REGISTRY_PACKAGE)),
)
def test_registry_code_imports_no_http_client_and_no_ssl(path: Path) -> None:
    imports = _direct_imports(path)
    roots = {name.split(".")[0] for name in imports}
    assert not roots & FORBIDDEN, sorted(roots & FORBIDDEN)
    tls = {name for name in imports if name.startswith("securesession._tls")}
    assert tls <= {"securesession._tls.model"} | {
        f"securesession._tls.model.{name}" for name in ("ClientCertificate", "TLSProfile")
    }, sorted(tls)


def test_a_registry_round_trip_loads_no_http_client_and_no_ssl(tmp_path: Path) -> None:
    """Sealing and opening an entry with a client certificate, on memory and SQLite."""
    ca = CertificateAuthority("import test CA")
    bundle = tmp_path / "client.p12"
    bundle.write_bytes(ca.issue_client("import-client").pkcs12(b"pfx-SECRET"))
    code = f"""
import sys
import typing
from securesession import ClientCertificate, MasterKey, ServiceEntry, TLSProfile, open_registry
cert = ClientCertificate.from_pkcs12({str(bundle)!r}, "pfx-SECRET")
entry = ServiceEntry("https://svc.example/", tls=TLSProfile(client_cert=cert))
for url in ("memory://", "sqlite://{tmp_path}/r.db"):
    registry = open_registry(url, MasterKey.generate())
    registry.put(entry)
    assert registry.get("https://svc.example/x") == entry
    assert list(registry.urls()) == [entry.url] and registry.count() == 1
    registry.close()
print(sorted(m for m in {sorted(FORBIDDEN)!r} if m in sys.modules))
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
