"""rotate-key: re-encrypt the registry under a new master key.

Two ways:

* plain ``rotate-key``, for one host: a new key, every secret re-encrypted in one
  transaction, the key file replaced (the old one kept as a ``.bak``). A process that
  still holds the old key fails closed until it gets the new one.
* staged, for a fleet, with a key ring in the key file:

  1. ``--stage`` adds a new key to the key file as *staged* (decrypt-only) and
     records its id in the registry; the operator distributes the key file, and
     every host restarted with it reads under both keys.
  2. ``--commit`` re-encrypts every entry under the staged key in one transaction
     (``Registry.rotate``) and makes it the key file's active key, the old one
     *previous*. Hosts holding the ring read throughout, and write under the new key
     as soon as it is the registry's (they follow the commit by themselves).
  3. ``--retire KEY_ID`` drops a key no entry uses any more from the key file.

``--reset-stage`` clears the registry's record of a staged key (its ``key-ring`` state,
a key id and never a key) whatever it holds, for the day it is unreadable.

Every change of the key file is one atomic replacement (a 0600 temporary file, then a
rename: the file holds the old ring or the new, never a part) made under a lock on its
directory, so two rotate-key runs cannot interleave their read-modify-write. A key
leaves a key file only through ``--retire``, after the registry was checked not to
need it, and the former file is kept as a ``.bak``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from securesession import KeyRing, MasterKey, Registry, RegistryCorruptError
from securesession._files import write_private_file
from securesession.registry import LegacyEntries, StagedKeyBookkeeping

from ._common import EXIT_OK, CommandError, UsageError, note, out
from ._config import (
    KeySource,
    check_key_file_absent,
    load_key_ring,
    open_existing_registry,
    pending_key_path,
    resolve_key_source,
    resolve_registry_url,
)
from ._output import Progress

__all__ = ["cmd_rotate_key"]

if TYPE_CHECKING:  # a protocol only type checkers use: no class to build at import
    from typing import Protocol

    class _KeyRingRegistry(Registry, StagedKeyBookkeeping, Protocol):
        """What the staged steps use: a registry, and its key bookkeeping."""


def cmd_rotate_key(args: argparse.Namespace) -> int:
    """Plain rotation, or one step of a staged one (--stage, --commit, --retire)."""
    url = resolve_registry_url(args.registry)
    source = resolve_key_source(args.key_file)
    given = (
        ("--stage", args.stage),
        ("--commit", args.commit),
        ("--retire", args.retire),
        ("--reset-stage", args.reset_stage),
    )
    step = next((flag for flag, value in given if value), None)  # argparse allows one
    if step is not None and args.new_key_file:
        raise UsageError(f"--new-key-file is for plain rotate-key, not {step}")
    if step is None:
        return _rotate_plain(url, source, args.new_key_file)
    if args.reset_stage:
        return _reset_stage(url, source)
    if source.path is None:
        raise UsageError(
            f"the key comes from {source.describe()}, which rotate-key {step} cannot update: "
            "keep the key ring in a key file for the rotation (--key-file PATH; export "
            'SECURESESSION_MASTER_KEY="$(cat PATH)" on hosts that read the variable)'
        )
    path = source.path
    with _key_file_lock(path):
        ring = load_key_ring(source)
        if args.stage:
            return _stage(url, source, path, ring)
        if args.commit:
            return _commit(url, source, path, ring)
        return _retire(url, source, path, ring, args.retire)


# -- the staged steps ------------------------------------------------------------------


def _stage(url: str, source: KeySource, path: Path, ring: KeyRing) -> int:
    with _key_ring_registry(url, source, ring) as registry:
        if registry.key_id != ring.key_id:
            raise CommandError(
                f"registry is under key id {registry.key_id}, not under the active key of "
                f"{path} ({ring.key_id}): run rotate-key --commit or plain rotate-key first"
            )
        recorded = registry.staged_key_id
        if ring.staged is not None:
            staged = ring.staged.key_id
            if recorded == staged:
                raise CommandError(
                    f"key id {staged} is staged already in {path}: run rotate-key --commit "
                    f"to switch the registry to it, or rotate-key --retire {staged} to drop it"
                )
        if recorded is not None:
            raise CommandError(
                f"the registry records key id {recorded} as staged (by another host?), "
                f"which {path} does not stage: finish that rotation with that host's key "
                f"file, or withdraw it (rotate-key --retire {recorded})"
            )
        if ring.staged is not None:
            # Staged in the key file, not (yet) in this registry: a registry opened with
            # the same key file elsewhere, or a --stage that died before recording it.
            new_key = ring.staged
            registry.record_staged_key_id(new_key.key_id, operation="stage")
            note(f"{path} stages key id {new_key.key_id} already: recorded it in the registry")
        else:
            new_key = MasterKey.generate()
            # The key file first: a key recorded as staged must exist somewhere.
            _replace_key_file(path, ring.stage(new_key))
            registry.record_staged_key_id(new_key.key_id, operation="stage")
    out(
        f"staged key id {new_key.key_id} in {path} (decrypt-only until --commit; the "
        f"registry stays under key id {ring.key_id})"
    )
    out(
        f"next: copy {path} to every host that uses this registry (mode 0600) and restart "
        "them, so that each holds both keys; then run: securesession rotate-key --commit"
    )
    return EXIT_OK


def _commit(url: str, source: KeySource, path: Path, ring: KeyRing) -> int:
    staged = ring.staged
    if staged is None:
        raise CommandError(
            f"{path} has no staged key: run rotate-key --stage first, distribute the key "
            "file, then commit"
        )
    # The commit re-seals every entry: it upgrades legacy (0.1.0) entries too.
    with _key_ring_registry(url, source, ring, legacy_entries="accept") as registry:
        recorded = registry.staged_key_id
        already = registry.key_id == staged.key_id
        if not already and recorded is None:
            # The record is what tells the registry's hosts (their logs, at open) that a
            # key is coming: never commit a key this registry was not told about.
            raise CommandError(
                f"the registry records no staged key, but {path} stages key id "
                f"{staged.key_id}: run rotate-key --stage (it records it), distribute the "
                "key file, then commit; nothing changed"
            )
        if not already and recorded != staged.key_id:
            raise CommandError(
                f"the registry records key id {recorded} as staged, but {path} stages key id "
                f"{staged.key_id}: the hosts were given another key file; nothing changed"
            )
        old_key_id = registry.key_id
        done = 0
        if already:
            note(
                f"the registry is under key id {staged.key_id} already (an earlier commit, "
                "or another host's); updating the key file"
            )
        else:
            progress = Progress("re-encrypting entries", registry.count())
            try:
                # One transaction: on any failure the registry stays under the old key,
                # which every host still holds.
                # What the committed transaction did: not the progress ticks, which a
                # store retrying after a lost connection gives twice.
                done = registry.rotate(staged, progress=progress.advance)
            finally:
                progress.close()
        # The registry needs the staged key now, and the key file has it (staged):
        # only the roles change here, so no failure from now on can lose a key.
        _replace_key_file(path, ring.commit())
    if not already:
        out(
            f"committed: the registry moved from key id {old_key_id} to {staged.key_id} "
            f"({_entries(done)} re-encrypted)"
        )
    out(f"{path}: key id {staged.key_id} is active, {ring.key_id} decrypt-only (previous)")
    out(
        f"next: copy {path} to every host; once none needs key id {ring.key_id} any more, "
        f"run: securesession rotate-key --retire {ring.key_id}"
    )
    return EXIT_OK


def _retire(url: str, source: KeySource, path: Path, ring: KeyRing, key_id: str) -> int:
    role = ring.role(key_id)
    if role is None:
        return _forget_stage(url, source, path, ring, key_id)
    if role == "active":
        raise CommandError(
            f"key id {key_id} is the active key of {path}: stage and commit another key "
            "before retiring it"
        )
    with _key_ring_registry(url, source, ring) as registry:
        if registry.key_id == key_id:
            raise CommandError(
                f"the registry is still under key id {key_id}: run rotate-key --commit first"
            )
        in_use = registry.key_usage().get(key_id, 0)
        if in_use:
            raise CommandError(
                f"{_entries(in_use)} still hold{'s' if in_use == 1 else ''} tokens under "
                f"key id {key_id}: run rotate-key "
                "--commit (or plain rotate-key) first; nothing changed"
            )
        backup = _backup_key_file(path)
        _replace_key_file(path, ring.retire(key_id))
        # One retire record in the audit log either way; a withdrawn staging is forgotten.
        still_staged = None if role == "staged" else registry.staged_key_id
        registry.record_staged_key_id(still_staged, operation="retire")
    what = "the staged key" if role == "staged" else "a previous key"
    out(f"retired key id {key_id} ({what}) from {path}")
    out(
        f"the former key file is kept in {backup} (mode 0600): it still opens registry "
        "backups taken under that key; delete it once none is needed (or at once, if the "
        "key leaked), and copy the new key file to every host"
    )
    return EXIT_OK


def _forget_stage(url: str, source: KeySource, path: Path, ring: KeyRing, key_id: str) -> int:
    """Retiring a key this key file lacks: only the registry's record of it as staged
    can go (a staging made with a key file that was lost), since no entry can use it."""
    with _key_ring_registry(url, source, ring) as registry:
        if registry.staged_key_id != key_id:
            raise CommandError(f"{path} has no key id {key_id} (it holds {ring.describe()})")
        registry.record_staged_key_id(None, operation="retire")
    out(
        f"the registry no longer records key id {key_id} as staged ({path} never held it; "
        "no key file changed): rotate-key --stage can stage a new key"
    )
    return EXIT_OK


def _reset_stage(url: str, source: KeySource) -> int:
    """Record that no key is staged, whatever the registry recorded: the way out of an
    unreadable record, which blocks every staged step. It forgets a key id only; a key
    file that stages a key keeps it (--stage records it again, --retire drops it)."""
    with _key_ring_registry(url, source, load_key_ring(source)) as registry:
        try:
            recorded = registry.staged_key_id
        except RegistryCorruptError:  # what the open warned about: not said twice
            recorded, was = None, "an unreadable record"
        else:
            was = "no staged key" if recorded is None else f"key id {recorded} as staged"
        registry.record_staged_key_id(None, operation="reset-stage")
    out(f"the registry records no staged key now (it recorded {was}); no key file changed")
    if recorded is not None:
        out(
            f"if key id {recorded} is still to be committed: rotate-key --stage records it "
            "again from the key file that stages it"
        )
    return EXIT_OK


@contextlib.contextmanager
def _key_ring_registry(
    url: str, source: KeySource, ring: KeyRing, *, legacy_entries: LegacyEntries = "refuse"
) -> Iterator[_KeyRingRegistry]:
    """The registry, opened with *ring* and closed afterwards; the staged steps need
    its key bookkeeping (the recorded staged key, which keys the entries use), which a
    registry offers as StagedKeyBookkeeping (EncryptedRegistry does)."""
    registry, _ = open_existing_registry(url, source, ring, legacy_entries=legacy_entries)
    try:
        # The capability, not the class: a third-party registry may keep the records.
        # (No URL in the message: a third-party backend's may carry a password.)
        if not isinstance(registry, StagedKeyBookkeeping):
            raise CommandError(
                f"the registry is a {type(registry).__name__}, which does not implement "
                "securesession.registry.StagedKeyBookkeeping: it keeps no record of staged "
                "keys nor of which keys its entries use; use plain rotate-key"
            )
        yield registry
    finally:
        registry.close()


# -- plain rotate-key --------------------------------------------------------------------


def _rotate_plain(url: str, source: KeySource, new_key_file_option: str | None) -> int:
    new_key_file = Path(new_key_file_option).expanduser() if new_key_file_option else None
    if new_key_file is None and source.path is None:
        raise UsageError(
            f"the key comes from {source.describe()}, which rotate-key cannot update; "
            "pass --new-key-file PATH and then store the new key where the old one was"
        )
    if new_key_file is not None:
        check_key_file_absent(new_key_file)
    lock = _key_file_lock(source.path) if source.path is not None else contextlib.nullcontext()
    with lock:
        # Every entry is re-sealed: legacy (0.1.0) entries come out authenticated.
        registry, ring = open_existing_registry(url, source, legacy_entries="accept")
        try:
            if ring.staged is not None:
                staged = ring.staged.key_id
                raise CommandError(
                    f"key id {staged} is staged in {source.describe()}: finish the staged "
                    f"rotation with rotate-key --commit (or drop it: rotate-key --retire "
                    f"{staged})"
                )
            return _rotate(registry, source, new_key_file)
        finally:
            registry.close()


def _rotate(registry: Registry, source: KeySource, new_key_file: Path | None) -> int:
    old_key_id = registry.key_id
    new_key = MasterKey.generate()
    progress = Progress("re-encrypting entries", registry.count())
    backup: Path | None = None
    if new_key_file is not None:
        target = new_key_file
        new_key.save(target)
    else:
        assert source.path is not None
        target = pending_key_path(source.path)
        if target.exists():
            raise CommandError(
                f"{target} exists: a previous rotate-key was interrupted. Find out which key "
                f"the registry uses (try --key-file {target}), keep that one, then remove "
                f"{target}"
            )
        backup = _backup_key_file(source.path)
        new_key.save(target)
    try:
        done: int | None = registry.rotate(new_key, progress=progress.advance)
        if not isinstance(done, int):  # a backend's Registry from before rotate() counted
            done = progress.done
    except BaseException:
        # Nothing changed in the registry: the new key protects nothing, drop it.
        target.unlink(missing_ok=True)
        if backup is not None:
            backup.unlink(missing_ok=True)
        raise
    finally:
        progress.close()
    if new_key_file is None:
        assert source.path is not None
        # The registry now needs the new key: put it in place in one atomic rename,
        # so the key file is always either the old key or the new, never half.
        os.replace(target, source.path)
        _sync_directory(source.path.parent)
        target = source.path
    out(
        f"rotated the registry from key id {old_key_id} to {new_key.key_id} "
        f"({_entries(done)} re-encrypted)"
    )
    out(f"new key: {target}")
    if backup is not None:
        out(f"old key kept in {backup} (mode 0600): it still decrypts older registry backups")
    else:
        out(f"the old key ({source.describe()}) no longer opens the registry; replace it")
    return EXIT_OK


# -- the key file --------------------------------------------------------------------------


def _entries(count: int) -> str:
    return f"{count} entr{'y' if count == 1 else 'ies'}"


def _replace_key_file(path: Path, ring: KeyRing) -> None:
    """Replace the key file by *ring*, atomically and durably."""
    ring.save(path, overwrite=True)
    _sync_directory(path.parent)


def _backup_key_file(key_file: Path) -> Path:
    """Copy *key_file* to ``<name>.<UTC time>.bak`` (0600, atomically, never overwriting)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    data = key_file.read_bytes()
    for attempt in range(100):
        suffix = f".{stamp}.bak" if attempt == 0 else f".{stamp}-{attempt}.bak"
        backup = key_file.with_name(key_file.name + suffix)
        if backup.exists():
            continue
        write_private_file(
            backup, data, overwrite=False, what="key file backup", error=CommandError
        )
        return backup
    raise CommandError(f"cannot find a free backup name for {key_file}")


def _sync_directory(directory: Path) -> None:
    # A rename is durable only once its directory is flushed (POSIX); best effort.
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _key_file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on the key file's directory while its ring is
    read, changed and written back, so concurrent rotate-key runs cannot drop each
    other's keys. (A lock on the directory leaves no lock file behind.) Without
    ``fcntl`` (Windows) there is no lock: run one rotate-key at a time."""
    if sys.platform == "win32":
        yield
        return
    import fcntl

    try:
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError as exc:
        raise CommandError(f"cannot open the directory of {path}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CommandError(
                f"another rotate-key is changing {path} right now; try again when it is done"
            ) from None
        yield
    finally:
        os.close(fd)
