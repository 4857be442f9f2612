"""The public surface: every exported name resolves, and importing is cheap."""

from __future__ import annotations

import subprocess
import sys

import pytest

import securesession


def test_all_and_the_lazy_table_agree() -> None:
    assert set(securesession.__all__) - {"__version__"} == set(securesession._EXPORTS)
    for name in securesession.__all__:
        assert getattr(securesession, name) is not None
    assert set(securesession.__all__) <= set(dir(securesession))


def test_unknown_names_raise_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        _ = securesession.Nope


def test_importing_the_package_and_the_pytest_plugin_loads_no_http_stack() -> None:
    """The pytest11 plugin is imported in every test run where securesession is
    installed; it must not drag requests or cryptography in until a fixture is used."""
    code = (
        "import sys, securesession, securesession.testing.pytest_plugin; "
        "print(sorted(m for m in ('requests', 'urllib3', 'cryptography') if m in sys.modules))"
    )
    command = [sys.executable, "-c", code]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_moved_names_still_resolve_with_a_deprecation_warning() -> None:
    for name, (_, new_home) in securesession._MOVED.items():
        assert name not in securesession.__all__
        with pytest.warns(DeprecationWarning, match=f"securesession.{name} is deprecated"):
            value = getattr(securesession, name)
        if new_home:
            module = __import__(new_home, fromlist=[name])
            assert getattr(module, name) is value, f"{name} is not in {new_home}"


def test_backend_names_live_in_their_own_modules_symmetrically() -> None:
    import securesession.memory
    import securesession.postgres
    import securesession.sqlite
    import securesession.vault

    assert {"MemoryStore", "open_memory_registry"} <= set(securesession.memory.__all__)
    assert {"SQLiteStore", "open_sqlite_registry"} <= set(securesession.sqlite.__all__)
    assert {"PostgresStore", "open_postgres_registry"} <= set(securesession.postgres.__all__)
    assert {"VaultStore", "open_vault_registry", "VaultConnection", "TransitKey"} <= set(
        securesession.vault.__all__
    )


def test_internals_are_not_exported() -> None:
    for name in ("EntryCache", "InjectionPlan", "Injected", "WireGuard", "Tagged", "CanonicalURL"):
        assert name not in securesession.__all__
    adapter = securesession.SecureAdapter()
    entry = securesession.ServiceEntry(
        url="https://gw.example/", tls=securesession.TLSProfile(ca_bundle=None)
    )
    with pytest.warns(DeprecationWarning, match="context_for"):
        adapter.context_for(entry)
