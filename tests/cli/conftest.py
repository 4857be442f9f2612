"""Fixtures of the CLI tests: an isolated runner per test (see :mod:`clihelp`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from . import clihelp
from .clihelp import CLI


@pytest.fixture(scope="session", autouse=True)
def _bytecode_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    clihelp.PYCACHE_PREFIX = tmp_path_factory.mktemp("pycache")


@pytest.fixture
def cli(tmp_path: Path) -> CLI:
    """A CLI runner with no key and no registry yet."""
    return CLI(tmp_path)


@pytest.fixture
def ready(cli: CLI) -> CLI:
    """A CLI runner whose key file and registry exist (created through the library)."""
    cli.init_direct()
    return cli
