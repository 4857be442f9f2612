"""Writing small private files atomically with mode 0600: the one writer of keys,
wrapped keys, bundles and key backups, and of the demo's and the test helpers' keys
and credentials."""

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
    *overwrite*, a rename replaces it, keeping the replaced file's owner and group (a
    key file that root rewrites for a service account must stay readable by it; where
    the owner cannot be kept, nothing is replaced). *what* names the file in error
    messages ("key file", ...), which are raised as *error* (the CLI passes its own).
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise error(f"cannot write {what} {str(path)!r}: {exc.strerror}") from None
    try:
        if overwrite:
            _keep_owner(fd, path, what, error)
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


def _keep_owner(fd: int, path: Path, what: str, error: Callable[[str], Exception]) -> None:
    """Give the temporary file *fd* the owner and group of the file it will replace."""
    if not hasattr(os, "fchown"):  # Windows: files have no POSIX owner to keep
        return
    try:
        replaced = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return
    if (replaced.st_uid, replaced.st_gid) == (os.geteuid(), os.getegid()):
        return
    try:
        os.fchown(fd, replaced.st_uid, replaced.st_gid)
    except PermissionError:
        raise error(
            f"{what} {str(path)!r} belongs to uid {replaced.st_uid} (gid {replaced.st_gid}); "
            "replacing it would make it this user's: run as its owner, or as root"
        ) from None
