"""``export`` / ``import``: moving entries between environments in an encrypted bundle.

A bundle is one JSON object::

    {
      "format": "securesession-bundle",
      "version": 1,
      "created_at": "2024-05-01T12:00:03Z",
      "protection": {"kind": "passphrase", "kdf": "scrypt", "salt": "<b64url>",
                     "n": 131072, "r": 8, "p": 1}
                 or {"kind": "key", "key_id": "<16 hex>"},
      "payload": "<token>"
    }

``payload`` is one AES-256-GCM token (:meth:`MasterKey.encrypt`) under the transfer
key: derived from a passphrase with scrypt and the random salt above, or the target
environment's master key. Its associated data is every other field of the bundle,
so changing any byte of the file (header included) makes the whole bundle fail to
decrypt, and then nothing is imported. The plaintext lists the entries as the
registry stores them (public settings and per-field tokens, re-sealed under the same
transfer key through a staging registry on a memory store of its own), so the bundle
reuses the registry's own entry format and validation and carries no clear secret
anywhere.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import secrets as _random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from securesession import (
    DecryptionError,
    KeyRing,
    MasterKey,
    MasterKeyError,
    Registry,
    SecureSessionError,
    ServiceEntry,
)
from securesession._files import write_private_file
from securesession.memory import MemoryStore
from securesession.registry import EncryptedRegistry

from ._commands import exact_entry, registry_from_args, under
from ._common import EXIT_OK, CommandError, UsageError, format_time, note, out
from ._config import load_key, load_key_ring, resolve_key_source
from ._secrets import SecretInput

__all__ = ["BUNDLE_FORMAT", "cmd_export", "cmd_import", "open_bundle", "seal_bundle"]

BUNDLE_FORMAT: Final = "securesession-bundle"
BUNDLE_VERSION: Final = 1
_CONTEXT: Final = b"securesession bundle\x00"
_SALT_BYTES: Final = 16
_SCRYPT_N: Final = 2**17
_SCRYPT_R: Final = 8
# Bounds on what a bundle may ask scrypt for: a crafted file must not make import
# allocate gigabytes before the authentication check can reject it. scrypt needs
# 128 * n * r bytes (times p when lanes run in parallel); the limit is what the
# defaults above take (2**17 * 8 * 128 = 128 MiB). p must be 1: it multiplies the
# work, and MasterKey.from_passphrase derives with p=1 only.
_MAX_SCRYPT_MEMORY: Final = 128 * 1024 * 1024
_SCRYPT_P: Final = 1
_MAX_BUNDLE_BYTES: Final = 256 * 1024 * 1024


@dataclass(frozen=True)
class Transfer:
    """The key a bundle is sealed under, and how the bundle header describes it."""

    key: MasterKey
    protection: dict[str, Any]


def passphrase_transfer(passphrase: str) -> Transfer:
    """A new transfer key from *passphrase* and a fresh random salt."""
    salt = _random.token_bytes(_SALT_BYTES)
    key = MasterKey.from_passphrase(passphrase, salt, n=_SCRYPT_N, r=_SCRYPT_R)
    protection = {
        "kind": "passphrase",
        "kdf": "scrypt",
        "salt": _b64(salt),
        "n": _SCRYPT_N,
        "r": _SCRYPT_R,
        "p": _SCRYPT_P,
    }
    return Transfer(key, protection)


def key_transfer(key: MasterKey) -> Transfer:
    return Transfer(key, {"kind": "key", "key_id": key.key_id})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    raw = text.encode("ascii")
    return base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def seal_bundle(entries: Sequence[ServiceEntry], transfer: Transfer, *, created_at: float) -> bytes:
    """The bundle of *entries* sealed under *transfer*."""
    store = MemoryStore()
    with EncryptedRegistry(store, transfer.key, name="bundle") as staging:
        for entry in entries:
            staging.put(entry)
    rows = [
        {"key": sealed.key, "settings": sealed.settings, "secrets": sealed.secrets}
        for sealed in store.scan()
    ]
    header: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "created_at": format_time(created_at),
        "protection": transfer.protection,
    }
    payload = transfer.key.encrypt(_canonical({"entries": rows}), _CONTEXT + _canonical(header))
    return (json.dumps({**header, "payload": payload}, indent=2) + "\n").encode()


def read_header(data: bytes, name: str) -> dict[str, Any]:
    """Parse and check the clear part of a bundle (not yet authenticated)."""
    corrupt = f"{name} is not a securesession bundle (or it is corrupt)"
    try:
        bundle = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        raise CommandError(f"{corrupt}: not JSON; nothing was imported") from None
    if not isinstance(bundle, dict) or bundle.get("format") != BUNDLE_FORMAT:
        raise CommandError(f"{corrupt}; nothing was imported")
    if bundle.get("version") != BUNDLE_VERSION:
        raise CommandError(
            f"{name} is a bundle of version {bundle.get('version')!r}; this securesession "
            f"reads version {BUNDLE_VERSION}; nothing was imported"
        )
    protection = bundle.get("protection")
    if not isinstance(protection, dict) or protection.get("kind") not in ("passphrase", "key"):
        raise CommandError(f"{corrupt}: unknown protection; nothing was imported")
    if not isinstance(bundle.get("payload"), str):
        raise CommandError(f"{corrupt}: no payload; nothing was imported")
    if protection["kind"] == "passphrase":
        scrypt_parameters(protection, name)  # refused before any passphrase is asked for
    return bundle


def scrypt_parameters(protection: dict[str, Any], name: str) -> tuple[int, int]:
    """The (n, r) a passphrase bundle asks scrypt for, checked against the memory
    limit by arithmetic alone: nothing is allocated for a refused bundle."""
    n, r, p = protection.get("n"), protection.get("r"), protection.get("p")
    if (
        protection.get("kdf") != "scrypt"
        or type(n) is not int
        or type(r) is not int
        or type(p) is not int
        or n < 2
        or n & (n - 1)
        or r < 1
    ):
        raise CommandError(f"{name}: unsupported key derivation parameters; nothing was imported")
    memory = 128 * n * r * p
    if p != _SCRYPT_P or memory > _MAX_SCRYPT_MEMORY:
        raise CommandError(
            f"{name}: its key derivation asks scrypt for n={n}, r={r}, p={p} "
            f"({memory / 2**20:.0f} MiB); securesession allows at most "
            f"{_MAX_SCRYPT_MEMORY // 2**20} MiB (128 * n * r bytes) and p=1; "
            "nothing was imported"
        )
    return n, r


def transfer_from_passphrase(protection: dict[str, Any], passphrase: str, name: str) -> MasterKey:
    """Re-derive the transfer key a passphrase bundle was sealed under."""
    n, r = scrypt_parameters(protection, name)
    try:
        salt = _unb64(str(protection.get("salt", "")))
        return MasterKey.from_passphrase(passphrase, salt, n=n, r=r)
    except (binascii.Error, ValueError, MasterKeyError) as exc:
        raise CommandError(
            f"{name}: invalid key derivation salt ({exc}); nothing was imported"
        ) from None


def open_bundle(bundle: dict[str, Any], key: MasterKey, name: str) -> list[ServiceEntry]:
    """Authenticate and decrypt a bundle; every entry is validated before any is returned."""
    header = {field: value for field, value in bundle.items() if field != "payload"}
    try:
        plaintext = key.decrypt(bundle["payload"], _CONTEXT + _canonical(header))
    except DecryptionError:
        raise CommandError(
            f"{name} failed authentication: wrong passphrase or key, or the file is corrupt "
            "or was tampered with; nothing was imported"
        ) from None
    # From here the content is authentic (it was sealed by a holder of the key), but a
    # bundle from a newer securesession may still hold settings this one rejects.
    store = MemoryStore()
    try:
        with EncryptedRegistry(store, key, name="bundle") as staging:
            for row in json.loads(plaintext)["entries"]:
                store.write(
                    str(row["key"]), dict(row["settings"]), dict(row["secrets"]), key_id=key.key_id
                )
            return list(staging.entries())
    except (KeyError, TypeError, ValueError) as exc:
        raise CommandError(f"{name}: unreadable entry list ({exc}); nothing was imported") from None
    except SecureSessionError as exc:
        raise CommandError(f"{name}: {exc}; nothing was imported") from None


# -- commands ----------------------------------------------------------------------------


def _read_passphrase(args: argparse.Namespace, *, confirm: bool) -> str:
    value = SecretInput().read(
        "transfer passphrase",
        stdin=args.passphrase_stdin,
        env=args.passphrase_env,
        flag="--passphrase",
        confirm=confirm,
    )
    assert value is not None
    return value.reveal()


def cmd_export(args: argparse.Namespace) -> int:
    """Write the selected entries to an encrypted bundle."""
    path = Path(args.file).expanduser()
    if path.exists() and not args.force:
        raise CommandError(f"{path} already exists; pass --force to overwrite it")
    uses_passphrase = not args.to_key_file
    if not uses_passphrase and (args.passphrase_stdin or args.passphrase_env):
        raise UsageError("--to-key-file and a passphrase option exclude each other")
    with registry_from_args(args) as registry:
        entries = [entry for entry in registry.entries() if under(entry.url, args.under)]
    if not entries:
        raise CommandError(
            "no entries to export" + (" under the given prefixes" if args.under else "")
        )
    if uses_passphrase:
        transfer = passphrase_transfer(_read_passphrase(args, confirm=True))
    else:
        transfer = key_transfer(load_key(resolve_key_source(args.to_key_file)))
    write_private_file(
        path,
        seal_bundle(entries, transfer, created_at=time.time()),
        overwrite=args.force,
        what="bundle",
        error=CommandError,
    )
    protection = (
        "a transfer passphrase"
        if uses_passphrase
        else f"the key with id {transfer.key.key_id} ({args.to_key_file})"
    )
    out(f"exported {len(entries)} entr{'y' if len(entries) == 1 else 'ies'} to {path}")
    note(f"the bundle is encrypted under {protection}; it holds no clear secret")
    return EXIT_OK


def _bundle_key(
    args: argparse.Namespace, bundle: dict[str, Any], registry_ring: KeyRing, name: str
) -> MasterKey:
    protection = bundle["protection"]
    if protection["kind"] == "passphrase":
        if args.bundle_key_file:
            raise UsageError(f"{name} is protected by a passphrase, not a key file")
        return transfer_from_passphrase(protection, _read_passphrase(args, confirm=False), name)
    if args.passphrase_stdin or args.passphrase_env:
        raise UsageError(
            f"{name} is encrypted under a key, not a passphrase; drop the passphrase option"
        )
    ring = (
        load_key_ring(resolve_key_source(args.bundle_key_file))
        if args.bundle_key_file
        else registry_ring
    )
    # Any key of the ring: a bundle made before a rotation is under a previous key.
    key = ring.get(str(protection.get("key_id")))
    if key is None:
        raise CommandError(
            f"{name} is encrypted under key id {protection.get('key_id')}, but the keys used are "
            f"{ring.describe()}; pass the right one with --bundle-key-file; nothing was imported"
        )
    return key


def cmd_import(args: argparse.Namespace) -> int:
    """Import a bundle: everything is decrypted and checked before anything is written."""
    path = Path(args.file).expanduser()
    name = str(path)
    try:
        with path.open("rb") as handle:
            data = handle.read(_MAX_BUNDLE_BYTES + 1)
    except FileNotFoundError:
        raise CommandError(f"bundle {path} does not exist") from None
    if len(data) > _MAX_BUNDLE_BYTES:
        raise CommandError(f"{name} is larger than any bundle securesession writes")
    bundle = read_header(data, name)
    source = resolve_key_source(args.key_file)
    with registry_from_args(args) as registry:
        entries = open_bundle(bundle, _bundle_key(args, bundle, load_key_ring(source), name), name)
        _apply(registry, entries, args)
    return EXIT_OK


def _apply(registry: Registry, entries: list[ServiceEntry], args: argparse.Namespace) -> None:
    added: list[ServiceEntry] = []
    changed: list[ServiceEntry] = []
    unchanged: list[ServiceEntry] = []
    revisions: dict[str, int | None] = {}
    for entry in entries:
        existing = exact_entry(registry, entry.url)
        revisions[entry.url] = None if existing is None else existing.revision
        if existing is None:
            added.append(entry)
        elif existing == entry:
            unchanged.append(entry)
        else:
            changed.append(entry)
    policy = args.on_conflict
    if changed and policy == "fail":
        for entry in changed:
            out(f"conflict   {entry.url}")
        raise CommandError(
            f"{len(changed)} entr{'y differs' if len(changed) == 1 else 'ies differ'} from the "
            "registry; nothing was imported (choose with --on-conflict skip|replace)"
        )
    written = added + (changed if policy == "replace" else [])
    if not args.dry_run and written:
        # One transaction: a failure part way (disk full, a lost connection, a killed
        # process) leaves the registry exactly as it was. What was compared above must
        # still hold at COMMIT, or another writer's change would be overwritten unseen.
        expect = {entry.url: revisions.get(entry.url) for entry in written}
        try:
            registry.apply(written, operation="import", expect=expect)
        except SecureSessionError as exc:
            raise CommandError(f"{exc}; nothing was imported") from exc
    action = "replaced" if policy == "replace" else "skipped"
    for entry in added:
        out(f"added      {entry.url}")
    for entry in changed:
        out(f"changed    {entry.url} ({action})")
    for entry in unchanged:
        out(f"unchanged  {entry.url}")
    changed_text = f"{len(changed)} changed" + (f" ({action})" if changed else "")
    summary = f"{len(added)} added, {changed_text}, {len(unchanged)} unchanged"
    if args.dry_run:
        out(f"dry run: {summary}; nothing was written")
    else:
        out(f"imported: {summary}")
