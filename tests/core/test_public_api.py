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
        _ = securesession.Nope  # type: ignore[attr-defined]


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
