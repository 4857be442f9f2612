"""``diff`` and ``sync``: compare two registries, and make DST hold what SRC holds.

Both commands open SRC and DST, each with its own master key and read-only (DST is
opened for writing only by ``sync --apply``: reading a registry never migrates its
schema or records anything in it), decrypt every entry of both into memory and
compare them in DST's URL space (SRC URLs go through ``--map`` first). A secret is
compared as a value in memory and reported only as ``same`` or ``differs``: no value,
digest or length of a secret is ever printed, logged or put in the JSON (a digest of a
short password is as good as the password to whoever can guess it). Public settings
are shown as they are stored.

``sync`` turns the comparison into a plan and, with ``--apply``, carries it out in one
:meth:`~securesession.Registry.apply` on DST: the SRC entries are re-sealed under DST's
key by DST's own registry, and every write, every removal and the sync state go in
one transaction, or nothing does. Two guards keep it from overwriting what it should
not:

* **the sync state**: DST records, per source registry, the revision each entry had
  right after the sync wrote (or found) it. An entry whose DST revision is not that one
  was changed, removed, or written by someone else since: a *conflict*, left alone
  unless ``--force``. An entry sync never wrote is a conflict too, so the first sync
  into a registry that already holds other values says so instead of replacing them.
* **expect=**: the plan's view of every entry it writes or removes is checked inside
  the transaction, so a writer that changed DST between the plan and the apply makes
  the whole sync fail with nothing written (:class:`~securesession.ConflictError`).

``--map`` rewrites SRC URL prefixes onto DST prefixes. A map moves credentials to
another origin, so it is the place where they could reach the wrong one; it refuses:

* a rule that changes the scheme (``http`` <-> ``https``): credentials promoted over
  TLS must not land on plain http, and an https entry's TLS profile would not apply;
* a rule with a query, a fragment or user information;
* two SRC entries that land on one DST URL;
* a map that changes which entry a URL uses: the entries must keep their nesting
  (an entry below another stays below that one's image, and gains no new entry above
  it), or requests for some URLs would carry another entry's credentials in DST than
  their counterparts do in SRC.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import parse_qsl, urlsplit

from securesession import (
    ConflictError,
    DecryptionError,
    InvalidEntryError,
    InvalidURLError,
    Registry,
    ServiceEntry,
    open_registry,
)
from securesession._registry._codec import entry_fields
from securesession._urls import CanonicalURL, canonicalize
from securesession.registry import ENTRY_REVISIONS

from ._common import EXIT_OK, CommandError, UsageError, emit_json, note, out
from ._config import KeySource, load_key_ring, sqlite_path
from ._output import Progress

__all__ = [
    "EntryDiff",
    "URLMap",
    "cmd_diff",
    "cmd_sync",
    "compare",
    "plan_sync",
    "source_identity",
]

#: ``diff`` exits like diff(1): 0 the same, 1 they differ, 2 trouble.
EXIT_SAME: Final = 0
EXIT_DIFFER: Final = 1
#: The sync state's format, stored in DST under ``sync:<source identity>``. 2 keeps the
#: revisions under the registry's ENTRY_REVISIONS member, so a key rotation of DST
#: remaps them (1 kept them under "entries", and every rotation made them conflicts).
STATE_FORMAT: Final = 2
_OLD_STATE_FORMATS: Final = {1: "entries"}
_STATE_PREFIX: Final = "sync:"
_MAX_STATE_NAME: Final = 200
#: A stored setting longer than this is shown as its length and digest in text output
#: (a CA bundle, a CRL: public, but pages long). JSON carries it whole.
_SHOWN_SETTING: Final = 60
#: What ``--src-key-env`` / ``--dst-key-env`` accept: a variable name, never a key (a
#: base64url key is 43 characters long).
_ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")
_MAP_RULE: Final = re.compile(r"(?P<src>.+?)=(?P<dst>https?://.*)", re.IGNORECASE | re.DOTALL)

Status = Literal["only_in_src", "only_in_dst", "changed", "same"]


# -- --map ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MapRule:
    """One ``--map SRC_PREFIX=DST_PREFIX``: canonical origins and path prefixes."""

    src: CanonicalURL
    dst: CanonicalURL

    def covers(self, url: CanonicalURL) -> bool:
        depth = len(self.src.segments)
        return url.origin == self.src.origin and url.segments[:depth] == self.src.segments

    def rewrite(self, url: CanonicalURL) -> str:
        rest = url.segments[len(self.src.segments) :]
        dst = self.dst
        return CanonicalURL(dst.scheme, dst.host, dst.port, dst.segments + rest).key

    def describe(self) -> dict[str, str]:
        return {"src": self.src.key, "dst": self.dst.key}


class URLMap:
    """The ``--map`` rules: each SRC URL is rewritten by the rule with the longest SRC
    prefix that covers it (path-segment boundary, same origin), or left as it is."""

    def __init__(self, rules: Sequence[MapRule] = ()) -> None:
        seen: dict[str, MapRule] = {}
        for rule in rules:
            if rule.src.key in seen:
                raise UsageError(f"--map: {rule.src.key} is mapped twice")
            seen[rule.src.key] = rule
        # Deepest first, so the first rule that covers a URL is the longest one.
        self.rules = sorted(rules, key=lambda rule: len(rule.src.segments), reverse=True)

    @classmethod
    def parse(cls, values: Sequence[str] | None) -> URLMap:
        return cls([_parse_rule(value) for value in values or ()])

    def __bool__(self) -> bool:
        return bool(self.rules)

    def __call__(self, url: str) -> str:
        """The DST URL (canonical key) of SRC URL *url*."""
        canonical = canonicalize(url)
        for rule in self.rules:
            if rule.covers(canonical):
                return rule.rewrite(canonical)
        return canonical.key


def _parse_rule(value: str) -> MapRule:
    match = _MAP_RULE.fullmatch(value.strip())
    if match is None:
        raise UsageError(
            "--map takes SRC_PREFIX=DST_PREFIX, two http(s) URLs "
            "(--map https://gw.test.example=https://gw.prod.example)"
        )
    sides = []
    for side in ("src", "dst"):
        text = match.group(side)
        if "?" in text or "#" in text:
            raise UsageError(f"--map: the {side.upper()} prefix has a query or fragment")
        try:
            sides.append(canonicalize(text))
        except InvalidURLError as exc:
            raise UsageError(f"--map: {exc}") from None
    src, dst = sides
    if src.scheme != dst.scheme:
        raise UsageError(
            f"--map {src.key}={dst.key} changes the scheme ({src.scheme} -> {dst.scheme}): "
            "refused, since it would send credentials meant for "
            f"{src.scheme} to {dst.scheme} (and an https entry's TLS profile needs https)"
        )
    return MapRule(src, dst)


def mapped_entries(
    entries: Sequence[ServiceEntry], url_map: URLMap
) -> tuple[dict[str, ServiceEntry], dict[str, str]]:
    """SRC *entries* rewritten into DST's URL space, by DST URL; and the SRC URL each
    DST URL comes from.

    Refuses (:class:`UsageError`) two entries that would land on one DST URL, and a map
    that changes the entries' nesting (see the module docstring)."""
    by_dst: dict[str, ServiceEntry] = {}
    origin_of: dict[str, str] = {}
    for entry in entries:
        target = url_map(entry.url)
        if target in origin_of:
            raise UsageError(
                f"--map: SRC entries {origin_of[target]} and {entry.url} would both become "
                f"{target}; map them apart"
            )
        origin_of[target] = entry.url
        try:
            by_dst[target] = entry if target == entry.url else replace(entry, url=target)
        except InvalidEntryError as exc:
            raise UsageError(
                f"--map: SRC entry {entry.url} cannot become {target}: {exc}"
            ) from None
    if url_map:
        _check_nesting(origin_of)
    return by_dst, origin_of


def _nearest_above(key: str, keys: Mapping[str, object]) -> str | None:
    """The longest proper prefix of entry *key* that is itself in *keys*."""
    for prefix in canonicalize(key).prefix_keys:
        if prefix != key and prefix in keys:
            return prefix
    return None


def _check_nesting(origin_of: Mapping[str, str]) -> None:
    """Every entry's nearest entry above it in DST must be the image of its nearest
    entry above it in SRC: then each URL under a mapped prefix uses, in DST, the image
    of the entry its SRC counterpart uses. Linear in the entries (times path depth)."""
    image_of = {src: dst for dst, src in origin_of.items()}
    for dst, src in origin_of.items():
        above_in_src = _nearest_above(src, image_of)
        expected = None if above_in_src is None else image_of[above_in_src]
        found = _nearest_above(dst, origin_of)
        if found == expected:
            continue
        before = "below no other entry" if above_in_src is None else f"below {above_in_src}"
        after = "below no other entry" if found is None else f"below {found}"
        if found is not None and origin_of[found] != found:
            after += f" (from {origin_of[found]})"
        raise UsageError(
            f"--map changes which entry URLs use: {src} is {before} in SRC, but as {dst} "
            f"it would be {after} in DST; refused, since requests would then carry other "
            "credentials in DST than their counterparts do in SRC"
        )


# -- comparing -----------------------------------------------------------------------


@dataclass(frozen=True)
class SettingChange:
    """One public setting that differs (``description``, ``tls.pins``), as stored."""

    name: str
    src: Any
    dst: Any


@dataclass(frozen=True)
class SecretField:
    """One secret field of a changed entry: whether SRC and DST hold the same value."""

    name: str
    same: bool
    in_src: bool
    in_dst: bool


@dataclass(frozen=True)
class EntryDiff:
    """How one DST URL compares: SRC's entry there (after ``--map``) and DST's."""

    url: str
    src_url: str | None
    src: ServiceEntry | None
    dst: ServiceEntry | None
    settings: tuple[SettingChange, ...] = ()
    secrets: tuple[SecretField, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def status(self) -> Status:
        if self.dst is None:
            return "only_in_src"
        if self.src is None:
            return "only_in_dst"
        if self.settings or not all(field.same for field in self.secrets):
            return "changed"
        return "same"

    def describe(self) -> dict[str, Any]:
        """The JSON form: names and public settings only, never a secret."""
        return {
            "status": self.status,
            "url": self.url,
            "src_url": self.src_url,
            "settings": [
                {"name": change.name, "src": change.src, "dst": change.dst}
                for change in self.settings
            ],
            "secrets": [
                {
                    "name": secret.name,
                    "status": "same" if secret.same else "differs",
                    "in_src": secret.in_src,
                    "in_dst": secret.in_dst,
                }
                for secret in self.secrets
            ],
            "warnings": list(self.warnings),
        }


def _flat_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Settings one level deep (``tls.pins``), without the derived ``format``."""
    flat: dict[str, Any] = {}
    for name, value in settings.items():
        if name == "format":
            continue  # follows from whether there is a TLS profile
        if name == "tls" and isinstance(value, dict):
            flat.update({f"tls.{inner}": item for inner, item in value.items()})
        else:
            flat[name] = value
    return flat


def _setting_changes(src: Mapping[str, Any], dst: Mapping[str, Any]) -> list[SettingChange]:
    src_flat, dst_flat = _flat_settings(src), _flat_settings(dst)
    if (src.get("tls") is None) != (dst.get("tls") is None):
        # One side has a TLS profile and the other none: one change, the whole profile.
        src_flat = {k: v for k, v in src_flat.items() if not k.startswith("tls.")}
        dst_flat = {k: v for k, v in dst_flat.items() if not k.startswith("tls.")}
        src_flat["tls"], dst_flat["tls"] = src.get("tls"), dst.get("tls")
    names = sorted(set(src_flat) | set(dst_flat))
    return [
        SettingChange(name, src_flat.get(name), dst_flat.get(name))
        for name in names
        if src_flat.get(name) != dst_flat.get(name)
    ]


def _secret_fields(src: Mapping[str, str], dst: Mapping[str, str]) -> list[SecretField]:
    fields = []
    for name in sorted(set(src) | set(dst)):
        in_src, in_dst = name in src, name in dst
        same = (
            in_src
            and in_dst
            and hmac.compare_digest(src[name].encode("utf-8"), dst[name].encode("utf-8"))
        )
        fields.append(SecretField(name, same, in_src, in_dst))
    return fields


def _mapping_warnings(
    src_url: str, url: str, settings: Mapping[str, Any], dst_settings: Mapping[str, Any] | None
) -> list[str]:
    """What a map cannot rewrite: settings tied to SRC's host. A description is free
    text, and pins, CA bundles and CRLs describe SRC's servers; sync copies them as they
    are, so say so when they would reach another origin."""
    src, dst = canonicalize(src_url), canonicalize(url)
    if src.origin == dst.origin:
        return []
    warnings = []
    if src.host in str(settings.get("description", "")).lower():
        warnings.append(f"its description names {src.host}, which --map does not rewrite")
    tls = settings.get("tls") or {}
    dst_tls = (dst_settings or {}).get("tls") or {}
    trust = [name for name in ("pins", "ca_bundle", "crl") if tls.get(name)]
    changed = [name for name in trust if tls.get(name) != dst_tls.get(name)]
    if changed:
        warnings.append(
            f"its TLS {', '.join(changed)} come from SRC, where they trust {src.host}'s "
            f"servers; check they are right for {dst.host}, or its requests fail"
        )
    return warnings


def compare(
    src_entries: Mapping[str, ServiceEntry],
    dst_entries: Mapping[str, ServiceEntry],
    source_urls: Mapping[str, str],
) -> list[EntryDiff]:
    """Compare SRC entries (by DST URL, after the map; *source_urls* gives each one's
    SRC URL) with DST's entries, in URL order."""
    diffs = []
    for url in sorted(set(src_entries) | set(dst_entries)):
        src, dst = src_entries.get(url), dst_entries.get(url)
        src_url = None if src is None else source_urls.get(url)
        if src is None or dst is None:
            warnings: list[str] = []
            if src is not None and src_url is not None:
                warnings = _mapping_warnings(src_url, url, entry_fields(src)[0], None)
            diffs.append(EntryDiff(url, src_url, src, dst, warnings=tuple(warnings)))
            continue
        (src_settings, src_clear), (dst_settings, dst_clear) = entry_fields(src), entry_fields(dst)
        settings = _setting_changes(src_settings, dst_settings)
        secrets = _secret_fields(src_clear, dst_clear)
        differs = bool(settings) or not all(secret.same for secret in secrets)
        warnings = (
            _mapping_warnings(src_url or url, url, src_settings, dst_settings) if differs else []
        )
        diffs.append(
            EntryDiff(url, src_url, src, dst, tuple(settings), tuple(secrets), tuple(warnings))
        )
    return diffs


# -- the two registries ----------------------------------------------------------------


@dataclass
class Side:
    """SRC or DST: its URL, how it is named in output, its key source, the registry."""

    role: Literal["SRC", "DST"]
    url: str
    source: KeySource
    registry: Registry | None = None

    @property
    def flag(self) -> str:
        return f"--{self.role.lower()}-key"

    @property
    def label(self) -> str:
        return registry_label(self.url)

    def open(self, *, read_only: bool = True) -> Registry:
        """Open the registry, read-only unless it is to be written: reading it must not
        change it (no schema migrated, no key id or audit log start recorded)."""
        if self.url.partition("://")[0].lower() == "memory":
            raise UsageError(
                f"{self.role} is memory://, which lives inside one process: give a registry "
                "another process can open (sqlite:///..., postgresql://...)"
            )
        # The whole ring: a side mid-rotation is read and written under its active key.
        key = load_key_ring(self.source)
        path = sqlite_path(self.url)
        if path is not None and not path.exists():
            raise CommandError(f"{self.role} registry {path} does not exist")
        try:
            self.registry = open_registry(self.url, key, read_only=read_only)
        except DecryptionError as exc:
            raise CommandError(
                f"{self.role} registry {self.label}: {exc}; check {self.flag}-file / "
                f"{self.flag}-env (using {self.source.describe()})"
            ) from exc
        return self.registry

    def read(self) -> list[ServiceEntry]:
        """Every entry, decrypted, with a progress bar on a terminal."""
        assert self.registry is not None
        progress = Progress(f"reading {self.role}", self.registry.count())
        entries = []
        try:
            for entry in self.registry.entries():
                entries.append(entry)
                progress.advance()
        finally:
            progress.close()
        return entries

    def close(self) -> None:
        if self.registry is not None:
            self.registry.close()


def registry_label(url: str) -> str:
    """A registry URL as output shows it: no user information, no query but the
    PostgreSQL schema (a password may be in either)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "(a URL with no scheme)"
    if scheme.lower() == "sqlite":
        return f"sqlite://{rest.split('?', 1)[0]}"
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    schema = [value for name, value in parse_qsl(parts.query) if name == "schema"]
    return f"{scheme.lower()}://{host}{parts.path}" + (f"?schema={schema[-1]}" if schema else "")


def source_identity(url: str) -> str:
    """Which registry SRC is, for DST's sync state: the same registry always gives the
    same identity (a SQLite path resolved, a PostgreSQL URL without user, password or
    libpq options). Two spellings of one registry are two sources: safe, since an
    entry a "new" source never wrote is a conflict, never overwritten unasked."""
    path = sqlite_path(url)
    if path is not None:
        return f"sqlite://{path.resolve()}"
    scheme, _, rest = registry_label(url).partition("://")
    scheme = "postgresql" if scheme == "postgres" else scheme
    host, slash, database = rest.partition("/")
    return f"{scheme}://{host.lower()}{slash}{database}"  # a database name is case-sensitive


def _state_name(identity: str) -> str:
    name = _STATE_PREFIX + identity
    if len(name) <= _MAX_STATE_NAME:
        return name
    return _STATE_PREFIX + "sha256:" + hashlib.sha256(identity.encode()).hexdigest()


def _sides(args: argparse.Namespace) -> tuple[Side, Side]:
    for option, value in (("--registry", args.registry), ("--key-file", args.key_file)):
        if value:
            # Silently ignored, it would leave the reader unsure which registry was used.
            raise UsageError(
                f"{option} does not apply here: name the registries as SRC and DST, and "
                "their keys with --src-key-file/--src-key-env and --dst-key-file/--dst-key-env"
            )

    def source(role: str) -> KeySource:
        path, env = getattr(args, f"{role}_key_file"), getattr(args, f"{role}_key_env")
        if path:
            return KeySource(path=Path(path).expanduser())
        if not _ENV_NAME.fullmatch(env):
            # Most likely the key itself, given where its variable's name belongs: the
            # error for an unset variable would repeat it, so it is not named.
            raise UsageError(
                f"--{role}-key-env takes the name of an environment variable, and the value "
                "given is not one (if it was the key itself, it is now in the shell history "
                "and the process list: rotate that key)"
            )
        return KeySource(env_name=env)

    return Side("SRC", args.src, source("src")), Side("DST", args.dst, source("dst"))


@dataclass
class Comparison:
    """The two registries, read and compared."""

    src: Side
    dst: Side
    url_map: URLMap
    diffs: list[EntryDiff]

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(("only_in_src", "only_in_dst", "changed", "same"), 0)
        for diff in self.diffs:
            counts[diff.status] += 1
        return counts

    def header(self) -> dict[str, Any]:
        def side(s: Side) -> dict[str, Any]:
            assert s.registry is not None
            return {"registry": s.label, "key_id": s.registry.key_id}

        return {
            "src": side(self.src),
            "dst": side(self.dst),
            "map": [rule.describe() for rule in self.url_map.rules],
        }


def _compare_sides(
    src: Side,
    dst: Side,
    url_map: URLMap,
    src_scope: Callable[[str], bool] = lambda url: True,
    dst_scope: Callable[[str], bool] = lambda url: True,
    *,
    dst_writable: bool = False,
) -> Comparison:
    src.open()
    dst.open(read_only=not dst_writable)
    # The map is checked over every SRC entry, not only those in scope: an entry synced
    # alone must not land where, beside the others, the map would have been refused.
    by_dst, source_urls = mapped_entries(src.read(), url_map)
    in_scope = {url: entry for url, entry in by_dst.items() if src_scope(source_urls[url])}
    dst_entries = {entry.url: entry for entry in dst.read() if dst_scope(entry.url)}
    return Comparison(src, dst, url_map, compare(in_scope, dst_entries, source_urls))


# -- text output -----------------------------------------------------------------------


def _shown(value: Any) -> str:
    """A public setting for a text line: JSON, a long one as its length and digest."""
    text = json.dumps(value, sort_keys=True)
    if len(text) <= _SHOWN_SETTING:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return f"<{len(text)} characters, sha256 {digest}>"


def _detail_lines(diff: EntryDiff) -> list[str]:
    """The indented lines under an entry: what changed (settings as values, secrets as
    same/differs) and the warnings."""
    lines = [f"    {c.name}: src {_shown(c.src)}, dst {_shown(c.dst)}" for c in diff.settings]
    for secret in diff.secrets:
        where = ""
        if not (secret.in_src and secret.in_dst):
            where = " (only in SRC)" if secret.in_src else " (only in DST)"
        lines.append(f"    secret {secret.name}: {'same' if secret.same else 'differs'}{where}")
    lines.extend(f"    warning: {warning}" for warning in diff.warnings)
    return lines


def _from(diff: EntryDiff) -> str:
    return f"  (from {diff.src_url})" if diff.src_url and diff.src_url != diff.url else ""


# -- diff ---------------------------------------------------------------------------------


_DIFF_LABELS: Final = {
    "only_in_src": "only in SRC",
    "only_in_dst": "only in DST",
    "changed": "changed",
}


def cmd_diff(args: argparse.Namespace) -> int:
    """Compare SRC with DST: exit 0 the same, 1 they differ (errors exit 2)."""
    src, dst = _sides(args)
    url_map = URLMap.parse(args.map)
    try:
        comparison = _compare_sides(src, dst, url_map)
    finally:
        src.close()
        dst.close()
    counts = comparison.counts()
    same = counts["same"] == len(comparison.diffs)
    if args.json:
        emit_json(
            {
                **comparison.header(),
                "same": same,
                "summary": counts,
                "entries": [diff.describe() for diff in comparison.diffs],
            }
        )
    else:
        out(f"SRC {src.label}")
        out(f"DST {dst.label}")
        for rule in url_map.rules:
            out(f"map {rule.src.key} -> {rule.dst.key}")
        for diff in comparison.diffs:
            if diff.status == "same":
                continue
            out(f"{_DIFF_LABELS[diff.status]:<12} {diff.url}{_from(diff)}")
            for line in _detail_lines(diff):
                out(line)
        out(
            f"{counts['only_in_src']} only in SRC, {counts['only_in_dst']} only in DST, "
            f"{counts['changed']} changed, {counts['same']} the same"
        )
    return EXIT_SAME if same else EXIT_DIFFER


# -- sync ---------------------------------------------------------------------------------

Action = Literal["add", "update", "remove", "keep"]


@dataclass(frozen=True)
class Step:
    """One line of a sync plan. *conflict* says why the step needs ``--force``."""

    action: Action
    diff: EntryDiff
    conflict: str | None = None


@dataclass
class SyncState:
    """What DST records about the syncs from one source: the DST revision each entry had
    when a sync last left it equal to SRC."""

    identity: str
    revisions: dict[str, int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return _state_name(self.identity)

    @classmethod
    def load(cls, registry: Registry, identity: str) -> SyncState:
        text = registry.state(_state_name(identity))
        if text is None:
            return cls(identity)
        try:
            document = json.loads(text)
        except ValueError:
            document = None
        entries = None
        if isinstance(document, dict):
            old_format = document.get("format")
            member = ENTRY_REVISIONS
            if type(old_format) is int and old_format in _OLD_STATE_FORMATS:
                member = _OLD_STATE_FORMATS[old_format]
            entries = document.get(member)
        if (
            not isinstance(document, dict)
            or document.get("format") not in (STATE_FORMAT, *_OLD_STATE_FORMATS)
            or document.get("source") != identity
            or not isinstance(entries, dict)
            or not all(type(revision) is int for revision in entries.values())
        ):
            # Safe to go on: with no record, every differing entry is a conflict.
            note(
                f"securesession: warning: DST's sync state for {identity} is unreadable; "
                "every entry that differs is taken as never synced (a conflict)"
            )
            return cls(identity)
        return cls(identity, {str(url): revision for url, revision in entries.items()})

    def text(self) -> str:
        document = {
            "format": STATE_FORMAT,
            "source": self.identity,
            ENTRY_REVISIONS: self.revisions,
        }
        return json.dumps(document, sort_keys=True, separators=(",", ":"))


def _changed_since_sync(last: int | None, now: int) -> str | None:
    if last is None:
        return "DST's entry was not written by a sync from SRC"
    if last != now:
        return f"changed in DST since the last sync (revision {last} then, {now} now)"
    return None


def plan_sync(diffs: Sequence[EntryDiff], state: SyncState, *, delete: bool) -> list[Step]:
    """The steps that make DST like SRC, each with its conflict, if any."""
    steps = []
    for diff in diffs:
        last = state.revisions.get(diff.url)
        if diff.status == "only_in_src":
            removed = None if last is None else "removed from DST since the last sync"
            steps.append(Step("add", diff, removed))
        elif diff.status == "changed":
            assert diff.dst is not None
            steps.append(Step("update", diff, _changed_since_sync(last, diff.dst.revision)))
        elif diff.status == "only_in_dst":
            assert diff.dst is not None
            if delete:
                steps.append(Step("remove", diff, _changed_since_sync(last, diff.dst.revision)))
            else:
                steps.append(Step("keep", diff))
    return steps


_ACTIONS: Final[tuple[Action, ...]] = ("add", "update", "remove", "keep")


def _print_plan(steps: Sequence[Step], *, force: bool) -> None:
    for step in steps:
        diff = step.diff
        label: str = step.action
        if step.conflict is not None:
            label = "force " + label if force else "conflict " + label
        suffix = "  (only in DST; --delete removes it)" if step.action == "keep" else _from(diff)
        out(f"{label:<16} {diff.url}{suffix}")
        if step.conflict is not None:
            out(f"    {step.conflict}")
        for line in _detail_lines(diff):
            out(line)


def _step_json(step: Step) -> dict[str, Any]:
    return {"action": step.action, "conflict": step.conflict, **step.diff.describe()}


def cmd_sync(args: argparse.Namespace) -> int:
    """Plan (and with ``--apply`` make, in one transaction) the changes that make DST
    hold what SRC holds."""
    src, dst = _sides(args)
    url_map = URLMap.parse(args.map)
    only: list[str] | None = args.only
    dst_only = [url_map(prefix) for prefix in only] if only else None
    try:
        comparison = _compare_sides(
            src,
            dst,
            url_map,
            src_scope=lambda url: _under(url, only),
            dst_scope=lambda url: _under(url, dst_only),
            dst_writable=bool(args.apply),
        )
        assert dst.registry is not None
        state = SyncState.load(dst.registry, source_identity(src.url))
        steps = plan_sync(comparison.diffs, state, delete=args.delete)
        return _run_plan(args, comparison, state, steps, dst.registry, dst_only)
    finally:
        src.close()
        dst.close()


def _under(url: str, prefixes: Sequence[str] | None) -> bool:
    from ._commands import under

    return under(url, list(prefixes) if prefixes else None)


def _run_plan(
    args: argparse.Namespace,
    comparison: Comparison,
    state: SyncState,
    steps: list[Step],
    registry: Registry,
    dst_scope: Sequence[str] | None,
) -> int:
    blocked = [step for step in steps if step.conflict is not None and not args.force]
    writes = [s for s in steps if s.action != "keep" and (s.conflict is None or args.force)]
    counts = {action: sum(1 for s in writes if s.action == action) for action in _ACTIONS}
    counts["keep"] = sum(1 for s in steps if s.action == "keep")
    unchanged = comparison.counts()["same"]
    summary = (
        f"{counts['add']} to add, {counts['update']} to update, {counts['remove']} to remove, "
        f"{len(blocked)} conflict{'' if len(blocked) == 1 else 's'}, {unchanged} unchanged"
    )
    if args.json:
        emit_json(
            {
                **comparison.header(),
                "apply": bool(args.apply),
                "summary": {**counts, "conflicts": len(blocked), "unchanged": unchanged},
                "steps": [_step_json(step) for step in steps],
            }
        )
    else:
        out(f"sync {comparison.src.label} -> {comparison.dst.label}")
        for rule in comparison.url_map.rules:
            out(f"map {rule.src.key} -> {rule.dst.key}")
        _print_plan(steps, force=args.force)
    if blocked:
        _say(args, f"plan: {summary}")
        raise CommandError(
            f"{len(blocked)} conflict{' blocks' if len(blocked) == 1 else 's block'} the sync "
            "(DST entries changed outside it, or never written by it); nothing was written: "
            "review them, then sync them with --force, or leave them out with --only"
        )
    new_state = _state_after(comparison.diffs, state, writes, dst_scope)
    if not args.apply:
        _say(args, f"plan: {summary}; nothing was written (--apply carries it out)")
        return EXIT_OK
    if not writes and new_state.revisions == state.revisions:
        _say(args, "nothing to sync: DST already holds what SRC holds")
        return EXIT_OK
    _apply(registry, writes, new_state)
    done = f"{counts['add']} added, {counts['update']} updated, {counts['remove']} removed"
    _say(args, f"synced: {done}, {unchanged} unchanged")
    return EXIT_OK


def _say(args: argparse.Namespace, text: str) -> None:
    """The summary line: on stdout, or on stderr when stdout is the JSON."""
    (note if args.json else out)(text)


def _state_after(
    diffs: Sequence[EntryDiff],
    state: SyncState,
    writes: Sequence[Step],
    dst_scope: Sequence[str] | None,
) -> SyncState:
    """The state once *writes* are made, but for the revisions the writes get, which
    :func:`_apply` adds inside their transaction."""
    revisions = dict(state.revisions)
    present = {diff.url for diff in diffs}
    for url in list(revisions):
        if url not in present and _under(url, dst_scope):
            del revisions[url]  # gone from both registries
    for diff in diffs:
        if diff.status == "same":
            assert diff.dst is not None
            revisions[diff.url] = diff.dst.revision
    for step in writes:
        revisions.pop(step.diff.url, None)
    return SyncState(state.identity, revisions)


def _apply(registry: Registry, writes: Sequence[Step], state: SyncState) -> None:
    """Make *writes* in one transaction, with *expect* = what the plan saw, and record
    in the same transaction the revisions they get (the state is a function of them,
    which the store calls once the writes are made)."""
    puts = [step.diff.src for step in writes if step.action in ("add", "update")]
    removes = [step.diff.url for step in writes if step.action == "remove"]
    expect = {
        step.diff.url: None if step.diff.dst is None else step.diff.dst.revision for step in writes
    }

    def recorded(revisions: Mapping[str, int]) -> str:
        return SyncState(state.identity, {**state.revisions, **revisions}).text()

    try:
        registry.apply(
            [entry for entry in puts if entry is not None],
            removes,
            operation="sync",
            expect=expect,
            state=(state.name, recorded),
        )
    except ConflictError as exc:
        raise CommandError(
            f"DST changed while the sync was planned ({exc}); nothing was written: "
            "run the sync again"
        ) from exc
