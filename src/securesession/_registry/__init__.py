"""Registries: the contract, the built-in backends, and :func:`open_registry`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Protocol

from .._crypto import KeyRing, MasterKey
from .._exceptions import ConfigurationError
from ._base import (
    EncryptedRegistry,
    EntryRef,
    LegacyEntries,
    LegacyEntryUpgrade,
    Registry,
    RegistryStore,
    SealedEntry,
    check_legacy_entries,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "EncryptedRegistry",
    "EntryRef",
    "LegacyEntries",
    "Registry",
    "RegistryStore",
    "SealedEntry",
    "open_registry",
]

#: Third-party backends register ``scheme = "module:factory"`` here; the factory is
#: called as ``factory(url, key)`` and returns a :class:`Registry`.
ENTRY_POINT_GROUP: Final = "securesession.registries"

RegistryFactory = Callable[[str, MasterKey | KeyRing], Registry]


if TYPE_CHECKING:  # a protocol only type checkers use: no class to build at import

    class _BuiltinFactory(Protocol):
        def __call__(
            self, url: str, key: MasterKey | KeyRing, *, read_only: bool = False
        ) -> Registry: ...


# Each backend's module is imported on use: a process opens one registry, and needs
# neither the others' code nor (for memory://) sqlite3.
def _open_memory_registry(
    url: str, key: MasterKey | KeyRing, *, read_only: bool = False
) -> Registry:
    from .memory import open_memory_registry

    return open_memory_registry(url, key, read_only=read_only)


def _open_sqlite_registry(
    url: str, key: MasterKey | KeyRing, *, read_only: bool = False
) -> Registry:
    from .sqlite import open_sqlite_registry

    return open_sqlite_registry(url, key, read_only=read_only)


def _open_postgres_registry(
    url: str, key: MasterKey | KeyRing, *, read_only: bool = False
) -> Registry:
    # Imported on use: psycopg is an optional extra, and only this backend needs it.
    try:
        from .postgres import open_postgres_registry
    except ImportError as exc:
        if not (exc.name or "").startswith("psycopg"):
            raise
        raise ConfigurationError(
            "postgresql:// registries need psycopg 3: pip install 'securesession[postgres]'"
        ) from exc
    return open_postgres_registry(url, key, read_only=read_only)


def _open_vault_registry(
    url: str, key: MasterKey | KeyRing, *, read_only: bool = False
) -> Registry:
    # Imported on use: hvac is an optional extra (the connection reports its absence,
    # naming the securesession[vault] extra), and only this backend needs it.
    from .vault import open_vault_registry

    return open_vault_registry(url, key, read_only=read_only)


_BUILTIN: Final[dict[str, _BuiltinFactory]] = {
    "memory": _open_memory_registry,
    "sqlite": _open_sqlite_registry,
    "postgresql": _open_postgres_registry,
    "postgres": _open_postgres_registry,
    "vault+https": _open_vault_registry,
    "vault+http": _open_vault_registry,
}


def open_registry(
    url: str,
    key: MasterKey | KeyRing,
    *,
    legacy_entries: LegacyEntries = "refuse",
    read_only: bool = False,
) -> Registry:
    """Open the registry named by *url* with *key*: one master key, or a key ring (it
    opens a registry whose active key it holds, and follows a staged key once another
    process commits it; see :class:`~securesession.KeyRing`).

    *legacy_entries*: entries written by securesession 0.1.0 do not authenticate their
    settings, so by default reading one raises :class:`~securesession.LegacyEntryError`
    (a session sends nothing to its URL). ``"accept"`` reads them, with a warning,
    while a registry is being upgraded (``securesession upgrade``); a backend whose
    registry does not implement :class:`~securesession.registry.LegacyEntryUpgrade`
    (as :class:`~securesession.registry.EncryptedRegistry` does) cannot, and is refused
    with :class:`~securesession.ConfigurationError`.

    *read_only*: open the registry without writing anything, ever (what ``diff`` does):
    nothing is created, migrated or recorded at open, SQLite is opened ``mode=ro`` and
    PostgreSQL in read-only transactions, and every write raises
    :class:`~securesession.RegistryError`. A registry that needs a schema upgrade is
    refused, saying so; a third-party backend must take ``read_only=`` in its factory.

    Built in: ``memory://``, ``sqlite:///path/to/registry.db`` and
    ``postgresql://user@host:port/db`` (also ``postgres://``; needs the ``postgres``
    extra), ``vault+https://host:8200/<kv-mount>/<prefix>`` (Vault/OpenBao KV v2;
    ``vault+http://`` on loopback only; needs the ``vault`` extra). Other schemes are
    looked up in the ``securesession.registries`` entry-point group.
    """
    scheme, sep, _ = url.partition("://")
    if not sep or not scheme:
        raise ConfigurationError(
            "registry URL has no scheme; use memory:// or sqlite:///path/to/registry.db"
        )
    check_legacy_entries(legacy_entries)  # before anything is opened
    builtin = _BUILTIN.get(scheme.lower())
    if builtin is not None:
        registry = builtin(url, key, read_only=read_only)
    elif read_only:
        registry = _open_plugin_read_only(scheme.lower(), url, key)
    else:
        registry = _plugin(scheme.lower())(url, key)
    if legacy_entries == "accept":
        try:
            if not isinstance(registry, LegacyEntryUpgrade):
                raise ConfigurationError(
                    f"registry backend {scheme!r} returns a {type(registry).__name__}, "
                    "which does not implement securesession.registry.LegacyEntryUpgrade: "
                    "it cannot be told to accept legacy entries"
                )
            registry.legacy_entries = legacy_entries
        except BaseException:
            registry.close()
            raise
    return registry


def _open_plugin_read_only(scheme: str, url: str, key: MasterKey | KeyRing) -> Registry:
    """A third-party backend's registry, opened read-only if its factory can (it takes a
    ``read_only`` keyword); refused otherwise, since opening it might write."""
    import inspect

    factory = _plugin(scheme)
    try:
        takes = "read_only" in inspect.signature(factory).parameters
    except (TypeError, ValueError):  # no signature to read: it cannot be told
        takes = False
    if not takes:
        raise ConfigurationError(
            f"registry backend {scheme!r} cannot open a registry read-only (its factory "
            "takes no read_only keyword), and this operation must not write to it"
        )
    registry: Registry = factory(url, key, read_only=True)  # type: ignore[call-arg]
    return registry


def _plugin(scheme: str) -> RegistryFactory:
    # Imported on use: importlib.metadata pulls in email and socket machinery, which a
    # registry of a built-in scheme never needs.
    from importlib.metadata import entry_points

    for entry_point in entry_points(group=ENTRY_POINT_GROUP, name=scheme):
        factory: RegistryFactory = entry_point.load()
        return factory
    known = sorted(set(_BUILTIN) | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})
    raise ConfigurationError(
        f"no registry backend for scheme {scheme!r}; known schemes: {', '.join(known)}"
    )
