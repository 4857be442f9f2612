"""A pytest plugin that runs requests' own test suite with SecureSession standing in for
``requests.Session``, over an empty registry: with no entry, a SecureSession must behave
exactly as requests does.

Used by ``.ci/requests-suite``: ``pytest -p securesession_standin`` in requests' sdist.
"""

from __future__ import annotations

from typing import Any

import requests
import requests.sessions

from securesession import MasterKey, SecureSession, open_registry

_KEY = MasterKey.generate()


class StandInSession(SecureSession):
    """``requests.Session()``, as a SecureSession over an empty memory registry."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(open_registry("memory://", _KEY), *args, **kwargs)


def pytest_configure() -> None:
    requests.Session = StandInSession  # type: ignore[misc]
    requests.sessions.Session = StandInSession  # type: ignore[misc]
