"""The securesession pytest plugin (registered through the ``pytest11`` entry point).

Fixtures are cheap and lazy: a test suite that does not use them pays nothing.
"""

from __future__ import annotations

import pytest

from .. import MasterKey


@pytest.fixture
def securesession_key() -> MasterKey:
    """A fresh random master key for one test."""
    return MasterKey.generate()
