"""The generated parts of the documentation site cover what they are generated from.

``mkdocs build --strict`` (``.ci/docs``) fails on what these miss too; these tests run
without MkDocs installed, so a missing CLI option, error class or public module shows
up in the ordinary test run, with a message saying what to change.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from pathlib import Path

import pytest

GEN = Path(__file__).parents[2] / "docs" / "_gen"
sys.path.insert(0, str(GEN))

import api  # noqa: E402
import cli_reference  # noqa: E402
import troubleshooting  # noqa: E402

import securesession  # noqa: E402
from securesession import _exceptions  # noqa: E402


def test_the_cli_reference_shows_every_command_and_option() -> None:
    page = cli_reference.render()
    parser = cli_reference._parser()
    for name in cli_reference.commands(parser):
        assert f"## securesession {name} {{#{name}}}" in page
    for option in cli_reference.option_strings() - {"-h", "--help"}:
        assert f"<code>{option}" in page, f"{option} is missing from the CLI reference"


def test_the_cli_reference_links_each_command_to_its_guide_section() -> None:
    guide = (GEN.parent / "cli.md").read_text(encoding="utf-8")
    for name in cli_reference.commands(cli_reference._parser()):
        assert re.search(rf"^## {re.escape(name)}$", guide, re.MULTILINE), (
            f"docs/cli.md has no '## {name}' section for the reference to link to"
        )


def test_the_cli_reference_does_not_depend_on_the_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    narrow = cli_reference.render()
    monkeypatch.setenv("COLUMNS", "200")
    assert cli_reference.render() == narrow


def test_every_error_has_a_row_and_a_fix() -> None:
    assert troubleshooting.problems() == []
    table = troubleshooting.render()
    errors = [
        getattr(securesession, name)
        for name in securesession.__all__
        if isinstance(getattr(securesession, name), type)
        and issubclass(getattr(securesession, name), securesession.SecureSessionError)
    ]
    assert set(errors) == set(troubleshooting.classes())
    for cls in errors:
        assert f"[`{cls.__name__}`][securesession.{cls.__name__}]" in table


def test_the_troubleshooting_tree_is_the_module_docstring_tree() -> None:
    doc = _exceptions.__doc__ or ""
    for cls in troubleshooting.classes():
        assert cls.__name__ in troubleshooting.tree()
        assert cls.__name__ in doc


def test_a_fix_for_a_class_that_does_not_exist_is_a_problem(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(troubleshooting.FIXES, "GoneError", "...")
    monkeypatch.delitem(troubleshooting.FIXES, "VaultError")
    problems = troubleshooting.problems()
    assert any("'GoneError'" in p for p in problems)
    assert any("'VaultError'" in p for p in problems)


@pytest.mark.parametrize("module", api.PUBLIC_MODULES)
def test_the_reference_reads_each_module_s_names_as_python_does(module: str) -> None:
    names = api.exported_names(module)
    assert names is not None, f"{module} is listed in docs/_gen/api.py but does not exist"
    try:
        imported = importlib.import_module(module)
    except ImportError as exc:  # an optional dependency that is not installed
        pytest.skip(str(exc))
    assert names == list(getattr(imported, "__all__", []))


def test_every_public_module_is_in_the_api_reference() -> None:
    unlisted = api.unlisted_public_modules()
    assert not unlisted, (
        f"public module(s) {unlisted} are in no tier of the API reference: add each to "
        "TIERS in docs/_gen/api.py and a '::: module' block to a page under "
        "docs/reference/ (or, if it is not API, to NOT_IN_REFERENCE)"
    )


def test_the_pytest_plugin_fixtures_are_found() -> None:
    fixtures = api.documented_names("securesession.testing.pytest_plugin")
    assert fixtures is not None
    assert {"securesession_registry", "secure_session", "gateway_server"} <= set(fixtures)
    assert not any(name.startswith("_") for name in fixtures)


def test_usage_lines_are_unindented() -> None:
    add = cli_reference.commands(cli_reference._parser())["add"]
    assert isinstance(add, argparse.ArgumentParser)
    first, *rest = cli_reference._usage(add).splitlines()
    assert first.startswith("securesession add ")
    assert rest, "the add command's usage fits one line?"
    for line in rest:  # continuation lines align under the first argument
        assert line.startswith(" " * len("securesession add ")), line
        assert not line.startswith(" " * (len("securesession add ") + 1)), line


def test_placed_names_follow_the_blocks_and_their_members_option() -> None:
    pytest.importorskip("yaml")
    import hooks

    covered = hooks.placed(
        [
            "intro\n\n::: securesession.SecureSession\n\ntext\n",
            "::: securesession.integrations.vcr\n    options:\n      members: [REDACTED]\n",
            "::: securesession.memory\n",
        ]
    )
    assert "securesession.SecureSession" in covered
    assert "securesession.integrations.vcr.REDACTED" in covered
    assert "securesession.integrations.vcr.vcr_options" not in covered
    assert {"securesession.memory.MemoryStore", "securesession.memory.open_memory_registry"} <= (
        covered
    )
