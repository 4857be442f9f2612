"""Where the key and the registry live, and opening them with clear errors.

Precedence, highest first:

* registry: ``--registry URL``, ``$SECURESESSION_REGISTRY``,
  ``sqlite:///<user data dir>/registry.db``;
* key: ``--key-file PATH``, ``$SECURESESSION_KEY_FILE``, ``$SECURESESSION_MASTER_KEY``
  (the key itself, base64url), ``<user config dir>/master.key``.

A key file or the variable holds one key, or a key ring (an active key, a staged one,
previous ones: see :class:`securesession.KeyRing`); registries are opened with the
whole ring.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from platformdirs import user_config_dir, user_data_dir

from securesession import (
    KEY_ENV_VAR,
    DecryptionError,
    KeyRing,
    MasterKey,
    Registry,
    open_registry,
)
from securesession.registry import LegacyEntries, LegacyEntryUpgrade

from ._common import CommandError

__all__ = [
    "KEY_FILE_ENV",
    "REGISTRY_ENV",
    "KeySource",
    "check_key_file_absent",
    "default_key_file",
    "default_registry_url",
    "ensure_private_dir",
    "load_key",
    "load_key_ring",
    "open_existing_registry",
    "pending_key_path",
    "resolve_key_source",
    "resolve_registry_url",
    "sqlite_path",
]

APP_NAME: Final = "securesession"
REGISTRY_ENV: Final = "SECURESESSION_REGISTRY"
KEY_FILE_ENV: Final = "SECURESESSION_KEY_FILE"
_INIT_HINT: Final = "run 'securesession init' first"


@dataclass(frozen=True)
class KeySource:
    """Where the master key comes from: a file, or an environment variable."""

    path: Path | None = None
    env_name: str | None = None

    def describe(self) -> str:
        if self.path is not None:
            return f"key file {self.path}"
        return f"environment variable {self.env_name}"


def default_registry_url() -> str:
    path = Path(user_data_dir(APP_NAME, appauthor=False)) / "registry.db"
    return f"sqlite://{path}"


def default_key_file() -> Path:
    return Path(user_config_dir(APP_NAME, appauthor=False)) / "master.key"


def resolve_registry_url(option: str | None) -> str:
    return option or os.environ.get(REGISTRY_ENV) or default_registry_url()


def resolve_key_source(option: str | None) -> KeySource:
    if option:
        return KeySource(path=Path(option).expanduser())
    from_env = os.environ.get(KEY_FILE_ENV)
    if from_env:
        return KeySource(path=Path(from_env).expanduser())
    if os.environ.get(KEY_ENV_VAR):
        return KeySource(env_name=KEY_ENV_VAR)
    return KeySource(path=default_key_file())


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///path`` registry URL (``None`` for other backends)."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme.lower() == "sqlite" and rest:
        return Path(rest).expanduser()
    return None


def pending_key_path(key_file: Path) -> Path:
    """Where ``rotate-key`` parks the new key until the registry has switched to it."""
    return key_file.with_name(key_file.name + ".new")


def ensure_private_dir(directory: Path) -> None:
    """Create *directory* (and parents) readable by the owner only, if missing."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)


def load_key_ring(source: KeySource) -> KeyRing:
    """Read the key ring (one key, or several), turning "missing" into a hint about
    ``init``."""
    if source.path is not None:
        if not source.path.exists():
            raise CommandError(f"key file {source.path} does not exist; {_INIT_HINT}")
        return KeyRing.from_file(source.path)
    assert source.env_name is not None
    return KeyRing.from_env(source.env_name)


def load_key(source: KeySource) -> MasterKey:
    """The active key of the source's ring: the one key that encrypts (bundles)."""
    return load_key_ring(source).active


def open_existing_registry(
    url: str,
    source: KeySource,
    ring: KeyRing | None = None,
    *,
    legacy_entries: LegacyEntries = "refuse",
) -> tuple[Registry, KeyRing]:
    """Open a registry that ``init`` created, with the configured key ring (or *ring*,
    read from *source* already). Legacy (0.1.0) entries are refused unless the command
    is one that shows or upgrades them (*legacy_entries*).

    A missing SQLite file is an error here rather than silently created: a typo in
    ``--registry`` should not yield an empty registry that "has no entries".
    """
    if ring is None:
        ring = load_key_ring(source)
    path = sqlite_path(url)
    if path is not None and not path.exists():
        raise CommandError(f"registry {path} does not exist; {_INIT_HINT}")
    try:
        registry = open_registry(url, ring)
    except DecryptionError as exc:
        raise CommandError(_wrong_key_message(str(exc), source)) from exc
    # Only a registry with the capability can be told to accept legacy entries; any
    # other is served as it reads them.
    try:
        if isinstance(registry, LegacyEntryUpgrade):
            registry.legacy_entries = legacy_entries
    except BaseException:
        registry.close()
        raise
    return registry, ring


def _wrong_key_message(message: str, source: KeySource) -> str:
    hint = f"check --key-file / ${KEY_FILE_ENV} / ${KEY_ENV_VAR} (using {source.describe()})"
    if source.path is not None and pending_key_path(source.path).exists():
        hint = (
            f"an interrupted rotate-key left the new key in {pending_key_path(source.path)}; "
            f"if the registry uses it, move it to {source.path}"
        )
    return f"{message}; {hint}"


def check_key_file_absent(path: Path) -> None:
    """Refuse early (before prompting for anything) to overwrite a key file."""
    if path.exists():
        raise CommandError(f"key file {path} already exists; refusing to overwrite it")
