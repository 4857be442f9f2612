"""The ``securesession`` console script (also ``python -m securesession``).

Commands: ``init``, ``add``, ``list``, ``show``, ``remove``, ``match``, ``rotate-key``,
``export``, ``import``, ``diff``, ``sync``, ``request``, ``check``, ``demo``. See
``docs/cli.md``. Exit codes: 0 ok, 1 operation failed, 2 usage error (``diff``: 0 the
same, 1 they differ, 2 any error).
"""

from __future__ import annotations

import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``securesession`` command; returns the exit code."""
    from ._app import run

    return run(sys.argv[1:] if argv is None else list(argv))
