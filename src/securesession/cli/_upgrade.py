"""upgrade: authenticate the legacy entries of a registry, under the same key.

Entries written by securesession 0.1.0 carry no entry tag: their settings (injection
modes, header names, TLS profile) are not authenticated, so registries refuse them by
default. ``upgrade`` re-seals them in the current format under the key the registry
already uses, in one transaction; unlike ``rotate-key``, no key changes, so no host
needs a new key file. ``--dry-run`` lists them and changes nothing: check each with
``securesession show URL`` first, since the upgrade vouches for their settings as
stored.
"""

from __future__ import annotations

import argparse

from securesession.registry import LegacyEntryUpgrade

from ._commands import registry_from_args
from ._common import EXIT_OK, CommandError, out

__all__ = ["cmd_upgrade"]


def cmd_upgrade(args: argparse.Namespace) -> int:
    with registry_from_args(args) as registry:
        # The capability, not the class: a third-party registry may offer it.
        if not isinstance(registry, LegacyEntryUpgrade):
            raise CommandError(
                f"the registry is a {type(registry).__name__}, which does not implement "
                "securesession.registry.LegacyEntryUpgrade: securesession cannot tell its "
                "legacy entries apart"
            )
        urls = registry.legacy_urls() if args.dry_run else registry.upgrade_legacy_entries()
    if not urls:
        out("no legacy entries: every entry is authenticated already; nothing changed")
        return EXIT_OK
    count = f"{len(urls)} legacy entr{'y' if len(urls) == 1 else 'ies'}"
    if args.dry_run:
        out(f"{count} to upgrade (check each with securesession show URL; nothing changed):")
    else:
        out(f"upgraded {count} to the authenticated format, under the same key:")
    for url in urls:
        out(f"  {url}")
    if not args.dry_run:
        out(
            "processes opened with legacy_entries='accept' for them no longer need it: "
            "open the registry without it"
        )
    return EXIT_OK
