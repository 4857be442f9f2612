"""For the tests of ``write_private_file``'s callers: a spy that records which files
went through the one writer (so were 0600 from their first byte, never chmod-ed
after), and a umask of 0, under which any file written another way would be
world-readable."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from securesession import _files


@dataclass(frozen=True)
class PrivateWrite:
    path: Path
    overwrite: bool
    existed: bool  # before the write
    mode: int  # just after it


def spy_private_writes(monkeypatch: pytest.MonkeyPatch, module: ModuleType) -> list[PrivateWrite]:
    """Every ``write_private_file`` call *module* makes, in order (the writes still happen)."""
    writes: list[PrivateWrite] = []
    real = _files.write_private_file

    def spying(path: Path, data: bytes, **options: Any) -> None:
        existed = path.exists()
        real(path, data, **options)
        mode = stat.S_IMODE(path.stat().st_mode)
        writes.append(PrivateWrite(path, options["overwrite"], existed, mode))

    used = getattr(module, "write_private_file", None)
    assert used is real, f"{module.__name__} does not write through write_private_file"
    monkeypatch.setattr(module, "write_private_file", spying)
    return writes


@contextlib.contextmanager
def umask_zero() -> Iterator[None]:
    """No umask: a file created with the default mode would be 0666."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)
