"""``write_private_file``: the one writer of private files (keys, wrapped keys, bundles,
key backups): 0600, all or nothing, through a temporary file created exclusively
under a name nobody can plant anything at in advance."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from securesession import MasterKeyError
from securesession._files import write_private_file


@pytest.fixture
def temporaries(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The temporary files ``write_private_file`` creates, in order."""
    created: list[Path] = []
    real_open = os.open

    def spying_open(path: Any, flags: int, mode: int = 0o777, **kwargs: Any) -> int:
        if Path(path).name.endswith(".tmp"):
            created.append(Path(path))
        return real_open(path, flags, mode, **kwargs)

    monkeypatch.setattr(os, "open", spying_open)
    return created


def test_the_file_is_owner_only_and_no_temporary_is_left(
    tmp_path: Path, temporaries: list[Path]
) -> None:
    target = tmp_path / "secret.bin"
    write_private_file(target, b"data-SECRET", overwrite=False, what="test file")
    assert target.read_bytes() == b"data-SECRET"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.parent for p in temporaries] == [tmp_path]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret.bin"]


def test_an_existing_file_is_kept_unless_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "key"
    target.write_bytes(b"old")
    with pytest.raises(MasterKeyError, match="already exists; refusing to overwrite"):
        write_private_file(target, b"new", overwrite=False, what="key file")
    assert target.read_bytes() == b"old"
    write_private_file(target, b"new", overwrite=True, what="key file")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key"]


def test_errors_are_raised_as_the_callers_type(tmp_path: Path) -> None:
    class Mine(Exception):
        pass

    with pytest.raises(Mine, match="cannot write bundle"):
        write_private_file(
            tmp_path / "missing" / "b.json", b"x", overwrite=True, what="bundle", error=Mine
        )


def test_temporary_names_are_unpredictable(tmp_path: Path, temporaries: list[Path]) -> None:
    for _ in range(2):
        write_private_file(tmp_path / "f", b"x", overwrite=True, what="test file")
    first, second = temporaries
    assert first != second
    assert first.name.startswith(f".f.{os.getpid()}.") and len(first.name) > len(
        f".f.{os.getpid()}.tmp"
    )


def test_a_file_planted_at_the_temporary_name_is_never_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone who could guess the temporary name and plant a symlink there (to a file
    of the victim's) must not get the data written through it, nor the file replaced."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    real_open = os.open

    def planting_open(path: Any, flags: int, mode: int = 0o777, **kwargs: Any) -> int:
        if Path(path).name.endswith(".tmp"):
            Path(path).symlink_to(victim)
        return real_open(path, flags, mode, **kwargs)

    monkeypatch.setattr(os, "open", planting_open)
    for overwrite in (False, True):
        with pytest.raises(MasterKeyError, match="cannot write key file"):
            write_private_file(
                tmp_path / "key", b"new-SECRET", overwrite=overwrite, what="key file"
            )
        assert victim.read_bytes() == b"precious"
        assert not (tmp_path / "key").exists()


needs_root = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="giving a file away needs root"
)


@needs_root
def test_a_replaced_file_keeps_its_owner_and_group(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    write_private_file(path, b"old", overwrite=False, what="key file")
    os.chown(path, 65534, 65534)  # the service account's, say; we are root
    write_private_file(path, b"new", overwrite=True, what="key file")
    status = path.stat()
    assert (status.st_uid, status.st_gid, path.read_bytes()) == (65534, 65534, b"new")
    assert stat.S_IMODE(status.st_mode) == 0o600


def test_a_file_whose_owner_cannot_be_kept_is_not_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "master.key"
    write_private_file(path, b"old", overwrite=False, what="key file")
    owner = os.stat(path)
    # As an unprivileged user replacing another user's file: chown is refused.
    monkeypatch.setattr(os, "geteuid", lambda: owner.st_uid + 1)

    def refused(fd: int, uid: int, gid: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "fchown", refused)
    with pytest.raises(MasterKeyError, match=rf"belongs to uid {owner.st_uid}.*run as its owner"):
        write_private_file(path, b"new", overwrite=True, what="key file")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["master.key"]  # no temporary left
