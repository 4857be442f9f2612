"""What every command shares: the exit-code errors and the small output helpers."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from typing import Any, Final, TextIO

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CommandError",
    "UsageError",
    "emit_json",
    "format_time",
    "note",
    "out",
]

EXIT_OK: Final = 0
#: The operation was attempted and failed (wrong key, unreachable service, conflict...).
EXIT_FAILED: Final = 1
#: The command line itself is wrong; nothing was attempted.
EXIT_USAGE: Final = 2


class UsageError(Exception):
    """The command line is wrong (exit code 2). The message is one line, no secret."""


class CommandError(Exception):
    """The operation failed (exit code 1). The message is one line, no secret."""


def out(text: str = "", stream: TextIO | None = None) -> None:
    """Write one line of normal output (stdout)."""
    (stream or sys.stdout).write(text + "\n")


def note(text: str) -> None:
    """Write one line of commentary to stderr, so stdout stays parseable."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def emit_json(value: Any) -> None:
    """Print *value* as indented JSON on stdout (the ``--json`` output of a command)."""
    sys.stdout.write(json.dumps(value, indent=2) + "\n")


def format_time(timestamp: float | None) -> str | None:
    """An ISO 8601 UTC time to the second, or ``None``."""
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, tz=timezone.utc).replace(microsecond=0)
    return moment.isoformat().replace("+00:00", "Z")
