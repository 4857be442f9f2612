"""The parser is declared once, as a table of commands, and stays lazy: building it
(and ``--help``) imports no command's module, and a command imports its own only."""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys

import pytest

from securesession.cli._app import _COMMANDS, build_parser
from securesession.cli._common import EXIT_FAILED, EXIT_USAGE

from .clihelp import CLI

#: The modules that hold the commands' handlers.
_HANDLER_MODULES = sorted({command.handler.split(":")[0] for command in _COMMANDS})


def _cli_modules_after(code: str, cli: CLI) -> list[str]:
    """The ``securesession.cli`` modules loaded once *code* has run, in a fresh interpreter."""
    script = (
        "import contextlib, io, json, sys\n"
        "from securesession.cli import main\n"
        f"{code}\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('securesession.cli.'))))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=cli.env, check=True
    )
    modules: list[str] = json.loads(completed.stdout.splitlines()[-1])
    return modules


def _handler_modules(modules: list[str]) -> list[str]:
    return [m for m in modules if m.removeprefix("securesession.cli") in _HANDLER_MODULES]


def test_every_command_of_the_table_has_its_handler() -> None:
    (subparsers,) = [
        action
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    ]
    assert list(subparsers.choices) == [command.name for command in _COMMANDS]
    for command in _COMMANDS:
        module, name = command.handler.split(":")
        assert callable(getattr(importlib.import_module(module, "securesession.cli"), name))


def test_the_help_of_every_command_loads_no_command_module(cli: CLI) -> None:
    helps = "".join(
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    assert main([{command.name!r}, '--help']) == 0\n"
        for command in _COMMANDS
    )
    modules = _cli_modules_after(
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main(['--help']) == 0\n" + helps,
        cli,
    )
    assert "securesession.cli._app" in modules
    assert _handler_modules(modules) == []


def test_a_command_loads_its_own_module_only(ready: CLI) -> None:
    code = (
        "with contextlib.redirect_stdout(io.StringIO()):\n    assert main(['log', '--json']) == 0"
    )
    # _commands also holds what every command shares (registry_from_args).
    assert _handler_modules(_cli_modules_after(code, ready)) == [
        "securesession.cli._commands",
        "securesession.cli._log",
    ]


@pytest.mark.parametrize(
    ("argv", "failure_exit"),
    [
        (["list"], EXIT_FAILED),
        (["diff", "a", "b", "--src-key-file", "k", "--dst-key-file", "k"], EXIT_USAGE),
        (["sync", "a", "b", "--src-key-file", "k", "--dst-key-file", "k"], EXIT_FAILED),
    ],
)
def test_diff_alone_fails_with_2(argv: list[str], failure_exit: int) -> None:
    assert build_parser().parse_args(argv).failure_exit == failure_exit
