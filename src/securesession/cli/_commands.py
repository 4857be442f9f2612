"""Registry commands: init, add, list, show, remove, match (rotate-key: :mod:`._rotate`)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from securesession import (
    Credential,
    DecryptionError,
    InvalidEntryError,
    MasterKey,
    Registry,
    Secret,
    ServiceEntry,
    open_registry,
)
from securesession._urls import canonicalize
from securesession.registry import LegacyEntries

from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    CommandError,
    UsageError,
    emit_json,
    note,
    out,
)
from ._config import (
    check_key_file_absent,
    ensure_private_dir,
    open_existing_registry,
    resolve_key_source,
    resolve_registry_url,
    sqlite_path,
)
from ._output import describe_entry, entry_lines, list_row, table
from ._secrets import SecretInput
from ._tlsopts import TLSProfile, build_tls_profile, tls_text, validate_tls_options

__all__ = [
    "cmd_add",
    "cmd_init",
    "cmd_list",
    "cmd_match",
    "cmd_remove",
    "cmd_show",
    "exact_entry",
    "registry_from_args",
    "under",
]


@contextlib.contextmanager
def registry_from_args(
    args: argparse.Namespace, *, legacy_entries: LegacyEntries = "refuse"
) -> Iterator[Registry]:
    """Open the configured registry for one command and close it afterwards (legacy
    entries refused, unless the command only shows them: *legacy_entries*)."""
    registry, _ = open_existing_registry(
        resolve_registry_url(args.registry),
        resolve_key_source(args.key_file),
        legacy_entries=legacy_entries,
    )
    try:
        yield registry
    finally:
        registry.close()


def exact_entry(registry: Registry, url: str) -> ServiceEntry | None:
    """The entry whose prefix is exactly *url* (not merely one that matches it)."""
    key = canonicalize(url).key
    ref = registry.lookup(key)
    if ref is None or ref.key != key:
        return None
    return registry.load(ref)


def under(entry_url: str, prefixes: list[str] | None) -> bool:
    """Whether *entry_url* is one of *prefixes* or below one (segment boundary)."""
    if not prefixes:
        return True
    for prefix in prefixes:
        key = canonicalize(prefix).key
        if entry_url == key or entry_url.startswith(key.rstrip("/") + "/"):
            return True
    return False


def _missing_entry(registry: Registry, url: str) -> CommandError:
    key = canonicalize(url).key
    ref = registry.lookup(key)
    hint = f"; {url} is covered by the entry {ref.key}" if ref is not None else ""
    return CommandError(f"no entry with URL prefix {key}{hint}")


# -- init --------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    """Create the key file and the registry; never overwrite an existing key."""
    url = resolve_registry_url(args.registry)
    source = resolve_key_source(args.key_file)
    db_path = sqlite_path(url)
    created_key: Path | None = None
    if source.path is not None:
        check_key_file_absent(source.path)
        ensure_private_dir(source.path.parent)
        key = MasterKey.generate()
        key.save(source.path)  # atomic, 0600, refuses to replace a file created meanwhile
        created_key = source.path
    else:
        key = MasterKey.from_env(source.env_name or "")
    existed = db_path is not None and db_path.exists()
    previous_umask = os.umask(0o077)  # the registry file and its WAL: owner only
    try:
        if db_path is not None:
            ensure_private_dir(db_path.parent)
        open_registry(url, key).close()
    except BaseException as exc:
        # A key that opens nothing is worse than none: the next init would refuse.
        if created_key is not None:
            created_key.unlink(missing_ok=True)
        if isinstance(exc, DecryptionError):
            raise CommandError(
                f"registry {url} already exists under another master key ({exc}); restore its "
                "key file (or point --key-file at it) instead of creating a new key"
            ) from exc
        raise
    finally:
        os.umask(previous_umask)
    if created_key is not None:
        out(f"created key file {created_key} (mode 0600, key id {key.key_id})")
    else:
        out(f"using the key from {source.describe()} (key id {key.key_id})")
    out(f"{'opened existing' if existed else 'created'} registry {url}")
    if created_key is not None:
        note(
            "Back up the key file somewhere safe: without it the registry's secrets "
            "cannot be decrypted."
        )
    return EXIT_OK


# -- add ---------------------------------------------------------------------------


def _role_credential(
    args: argparse.Namespace, role: str, password: Secret | None
) -> Credential | None:
    if password is None:
        return None
    user: str | None = getattr(args, f"{role}_user")
    return Credential(user or "", password)


def _wants_credential(args: argparse.Namespace, role: str) -> bool:
    return bool(
        getattr(args, f"{role}_user") is not None
        or getattr(args, f"{role}_password_stdin")
        or getattr(args, f"{role}_password_env")
        or getattr(args, f"{role}_password_prompt")
    )


def _header_sources(args: argparse.Namespace) -> list[tuple[str, str, str | None]]:
    """``(header, source, env name)`` for every secret header, in documented order."""
    sources: list[tuple[str, str, str | None]] = []
    for name in args.secret_header or []:
        sources.append((name, "prompt", None))
    for name in args.secret_header_stdin or []:
        sources.append((name, "stdin", None))
    for spec in args.secret_header_env or []:
        name, sep, env = spec.partition("=")
        if not sep or not name or not env:
            raise UsageError(
                f"--secret-header-env expects HEADER=ENVVAR, got {spec.split('=')[0]!r}"
            )
        sources.append((name, "env", env))
    seen: set[str] = set()
    for name, _, _ in sources:
        if name.lower() in seen:
            raise UsageError(f"secret header {name!r} is given twice")
        seen.add(name.lower())
    return sources


def build_entry(
    args: argparse.Namespace,
    *,
    gateway: Secret | None,
    request: Secret | None,
    headers: dict[str, Secret],
    tls: TLSProfile | None = None,
) -> ServiceEntry:
    """The entry the ``add`` options describe; an inconsistency is a usage error."""
    try:
        return ServiceEntry(
            url=args.url,
            gateway=_role_credential(args, "gateway", gateway),
            request=_role_credential(args, "request", request),
            gateway_auth=args.gateway_auth,
            request_auth=args.request_auth,
            gateway_headers=(args.gateway_user_header, args.gateway_password_header),
            request_headers=(args.request_user_header, args.request_password_header),
            secret_headers=headers,
            description=args.description or "",
            tls=tls,
        )
    except InvalidEntryError as exc:
        raise UsageError(str(exc)) from None


def cmd_add(args: argparse.Namespace) -> int:
    """Add (or with ``--replace``, replace) one entry; secrets never come from argv."""
    header_sources = _header_sources(args)
    validate_tls_options(args)
    wants = {role: _wants_credential(args, role) for role in ("gateway", "request")}
    # Check the options before asking for any secret: a conflict found after three
    # prompts wastes the operator's time and invites retyping secrets.
    placeholder = Secret("placeholder")
    build_entry(
        args,
        gateway=placeholder if wants["gateway"] else None,
        request=placeholder if wants["request"] else None,
        headers={name: placeholder for name, _, _ in header_sources},
    )
    with registry_from_args(args) as registry:
        existing = exact_entry(registry, args.url)
        if existing is not None and not args.replace:
            raise CommandError(
                f"an entry for {existing.url} already exists; pass --replace to overwrite it"
            )
        secrets = SecretInput()
        values: dict[str, Secret | None] = {}
        for role in ("gateway", "request"):
            flag = f"--{role}-password"
            values[role] = (
                secrets.read(
                    f"{role} password",
                    stdin=getattr(args, f"{role}_password_stdin"),
                    env=getattr(args, f"{role}_password_env"),
                    flag=flag,
                )
                if wants[role]
                else None
            )
        headers: dict[str, Secret] = {}
        for name, source, env in header_sources:
            value = secrets.read(
                f"value of header {name}",
                stdin=source == "stdin",
                env=env,
                flag="--secret-header",
            )
            assert value is not None
            headers[name] = value
        tls = build_tls_profile(args, secrets)
        entry = build_entry(
            args, gateway=values["gateway"], request=values["request"], headers=headers, tls=tls
        )
        stored = registry.put(entry)
    verb = "replaced" if existing is not None else "added"
    out(f"{verb} {stored.url} (revision {stored.revision})")
    return EXIT_OK


# -- list / show / remove -----------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    with registry_from_args(args) as registry:
        described = [describe_entry(e) for e in registry.entries() if under(e.url, args.under)]
    if args.json:
        emit_json(described)
        return EXIT_OK
    if not described:
        note("no entries" + (" under the given prefixes" if args.under else ""))
        return EXIT_OK
    header = ["URL", "GATEWAY", "REQUEST", "EXTRA HEADERS", "TLS", "CHANGED"]
    for line in table(header, [list_row(d) for d in described]):
        out(line)
    return EXIT_OK


def _confirm_reveal(args: argparse.Namespace, url: str) -> None:
    if not sys.stdout.isatty():
        raise CommandError(
            "--reveal prints secrets only to a terminal, and standard output is not one"
        )
    if args.yes:
        return
    if not sys.stdin.isatty():
        raise CommandError("--reveal needs a confirmation; answer on a terminal or pass --yes")
    sys.stderr.write(f"Print the secrets of {url} on this terminal? [y/N] ")
    sys.stderr.flush()
    if sys.stdin.readline().strip().lower() not in ("y", "yes"):
        raise CommandError("not confirmed; nothing revealed")


def cmd_show(args: argparse.Namespace) -> int:
    # Showing sends nothing: a legacy entry is shown (with its warning), so that it can
    # be checked before `securesession upgrade` authenticates its settings.
    with registry_from_args(args, legacy_entries="accept") as registry:
        entry = exact_entry(registry, args.url)
        if entry is None:
            raise _missing_entry(registry, args.url)
    if args.reveal:
        _confirm_reveal(args, entry.url)
    described = describe_entry(entry, detail=True, reveal=args.reveal)
    if args.json:
        emit_json(described)
    else:
        for line in entry_lines(described):
            out(line)
    return EXIT_OK


def cmd_remove(args: argparse.Namespace) -> int:
    with registry_from_args(args) as registry:
        if not registry.remove(args.url):
            raise _missing_entry(registry, args.url)
    out(f"removed {canonicalize(args.url).key}")
    return EXIT_OK


# -- match --------------------------------------------------------------------------


def _near_misses(registry: Registry, canonical_key: str, probed: set[str]) -> list[dict[str, str]]:
    """Entries on the same host that do not match, and why (keys only: nothing is
    decrypted)."""
    target = canonicalize(canonical_key)
    misses: list[dict[str, str]] = []
    for key in registry.urls():
        if key in probed:
            continue
        candidate = canonicalize(key)
        if candidate.host != target.host:
            continue
        if candidate.origin != target.origin:
            reason = "different scheme or port: credentials never cross origins"
        elif key in target.prefix_keys:
            reason = "also a prefix of the URL, but the longer prefix wins"
        else:
            reason = "different path: a prefix matches whole path segments only"
        misses.append({"url": key, "reason": reason})
        if len(misses) >= 10:
            break
    return misses


def cmd_match(args: argparse.Namespace) -> int:
    canonical = canonicalize(args.url)
    with registry_from_args(args) as registry:
        ref = registry.lookup(args.url)
        probes: list[dict[str, Any]] = []
        for key in canonical.prefix_keys:
            hit = ref is not None and key == ref.key
            probes.append({"prefix": key, "entry": hit})
            if hit:
                break
        entry = None if ref is None else registry.load(ref)
        winner = None if entry is None else describe_entry(entry, detail=True)
        misses = _near_misses(registry, canonical.key, {p["prefix"] for p in probes})
    result = {
        "canonical": canonical.key,
        "query_ignored": "?" in args.url or "#" in args.url,
        "probes": probes,
        "match": winner,
        "near_misses": misses,
    }
    if args.json:
        emit_json(result)
    else:
        _print_match(result, len(canonical.prefix_keys))
    return EXIT_OK if winner is not None else EXIT_FAILED


def _print_match(result: dict[str, Any], candidates: int) -> None:
    ignored = "  (query and fragment never take part)" if result["query_ignored"] else ""
    out(f"canonical  {result['canonical']}{ignored}")
    out(f"probes     longest prefix first, on path-segment boundaries ({candidates} candidates):")
    width = max(len(p["prefix"]) for p in result["probes"])
    for probe in result["probes"]:
        out(f"  {probe['prefix']:<{width}}  {'entry  <- match' if probe['entry'] else '-'}")
    winner = result["match"]
    if winner is None:
        out("match      none: this URL is sent without credentials (a strict session refuses it)")
    else:
        out(
            f"match      {winner['url']} (revision {winner['revision']}): "
            "the longest registered prefix of the URL"
        )
        injects = []
        for role in ("gateway", "request"):
            credential = winner[role]
            if credential is not None:
                names = ", ".join(credential["headers"]) or "nothing"
                injects.append(f"{role} {credential['auth']} ({names})")
        if winner["secret_headers"]:
            injects.append("secret headers (" + ", ".join(winner["secret_headers"]) + ")")
        out(f"injects    {'; '.join(injects) or 'nothing'}")
        if winner["tls"]:
            out(f"tls        {tls_text(winner['tls'])}")
    if result["near_misses"]:
        out("near misses on this host:")
        width = max(len(m["url"]) for m in result["near_misses"])
        for miss in result["near_misses"]:
            out(f"  {miss['url']:<{width}}  {miss['reason']}")
