"""Writing small private files (keys, wrapped keys, bundles) atomically with mode 0600."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ._exceptions import MasterKeyError

__all__ = ["write_private_file"]


def write_private_file(
    path: Path,
    data: bytes,
    *,
    overwrite: bool,
    what: str,
    error: Callable[[str], Exception] = MasterKeyError,
) -> None:
    """Write *data* to *path*, readable by its owner only, all or nothing.

    The bytes go to a 0600 temporary file beside *path*, created exclusively under
    an unpredictable name (so nothing planted there, a symlink say, is followed or
    reused), and are flushed to disk; then a hard link publishes it (failing if
    *path* exists, since losing a key loses everything it protects) or, with
    *overwrite*, a rename replaces it. *what* names the file in error messages
    ("key file", ...), which are raised as *error* (the CLI passes its own).
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise error(f"cannot write {what} {str(path)!r}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(temporary, path)
        else:
            try:
                os.link(temporary, path)
            except FileExistsError:
                raise error(
                    f"{what} {str(path)!r} already exists; refusing to overwrite it"
                ) from None
    finally:
        temporary.unlink(missing_ok=True)
