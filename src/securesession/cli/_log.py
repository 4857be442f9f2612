"""``log``: the registry's audit log, and ``log --verify``: whether it is intact.

The records name operations, entries, revisions, changed field names and actors,
never a value (see :mod:`securesession._audit`), so printing them is safe.
"""

from __future__ import annotations

import argparse
import re
import time
from datetime import datetime, timezone
from typing import Final

from securesession import AuditError, Registry
from securesession._urls import canonicalize

from ._commands import registry_from_args
from ._common import EXIT_OK, CommandError, UsageError, emit_json, format_time, note, out
from ._output import table

__all__ = ["cmd_log", "parse_since"]

_AGO: Final = re.compile(r"(\d+)([smhd])")
_UNIT_S: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, *, now: float | None = None) -> float:
    """``--since``: an ISO 8601 date or time (UTC unless it says otherwise), or an age
    such as ``90m``, ``12h`` or ``7d``; as Unix seconds."""
    match = _AGO.fullmatch(text.strip())
    if match:
        return (time.time() if now is None else now) - int(match[1]) * _UNIT_S[match[2]]
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"--since {text!r} is neither an ISO 8601 time (2024-05-01, 2024-05-01T12:00Z) "
            "nor an age (90m, 12h, 7d)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def cmd_log(args: argparse.Namespace) -> int:
    """Show the audit log, or (``--verify``) check it."""
    if args.verify and (args.since or args.entry):
        raise UsageError("--verify checks the whole log: drop --since and --entry")
    if args.expect_head and not args.verify:
        raise UsageError("--expect-head goes with --verify")
    since = None if args.since is None else parse_since(args.since)
    with registry_from_args(args) as registry:
        if args.verify:
            return _verify(registry, args)
        wanted = None if args.entry is None else canonicalize(args.entry).key
        records = list(registry.audit(since=since, entry=wanted))
    if args.json:
        emit_json([record.to_json() for record in records])
        return EXIT_OK
    if not records:
        note("no audit records" + (" match" if since is not None or wanted else ""))
        return EXIT_OK
    header = ["SEQ", "TIME", "OPERATION", "CHANGE", "ENTRY", "REVISION", "ACTOR", "FIELDS"]
    rows = [
        [
            str(record.seq),
            format_time(record.time) or "",
            record.operation,
            record.change or "-",
            record.entry,
            _revisions(record.since, record.revision),
            record.actor,
            ", ".join(record.fields) or "-",
        ]
        for record in records
    ]
    for line in table(header, rows):
        out(line)
    return EXIT_OK


def _check_head(registry: Registry, seq: int, digest: str) -> None:
    """The log (verified already) must still hold record *seq* with *digest*."""
    found = next((record for record in registry.audit() if record.seq == seq), None)
    if found is None:
        raise AuditError(
            f"the expected head, record {seq}, is not in the log: the registry was rolled "
            "back to an earlier state, log included, or its log was replaced or started again"
        )
    if found.digest != digest:
        raise AuditError(
            f"record {seq} is not the expected head (its digest differs): the log was "
            "replaced or started again, or the registry restored from another copy"
        )


def _revisions(since: int | None, revision: int | None) -> str:
    if revision is None:
        return "-"
    return str(revision) if since is None or since == revision else f"{since}-{revision}"


def _expected_head(text: str) -> tuple[int, str]:
    seq, _, digest = text.partition(":")
    if not seq.isdigit() or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise UsageError("--expect-head is SEQ:SHA256, as 'log --verify' prints the head")
    return int(seq), digest


def _verify(registry: Registry, args: argparse.Namespace) -> int:
    head = None if args.expect_head is None else _expected_head(args.expect_head)
    try:
        report = registry.verify_audit()
        if head is not None:
            _check_head(registry, *head)
    except AuditError as exc:
        # Exit code 1, the message naming the first record at fault.
        raise CommandError(f"audit log verification FAILED: {exc}") from exc
    if args.json:
        emit_json(
            {
                "verified": True,
                "records": report.records,
                "authenticated": report.authenticated,
                "predating_entries": report.predating,
                "chain": report.chain,
                "started": report.started,
                "head": {"seq": report.head_seq, "digest": report.head_digest},
            }
        )
        return EXIT_OK
    out(
        f"audit log verified: {report.records} record{'' if report.records == 1 else 's'}, "
        f"{report.authenticated} authenticated under keys of this key ring; every entry "
        "is the row its last record logs"
    )
    # A verified log always has a head (an empty log fails): printed every time, as
    # it is what proves the next verify is of the same log, not a rolled-back one.
    out(f"head: record {report.head_seq}, sha256 {report.head_digest} (chain {report.chain})")
    out(f"started: {format_time(report.started)} (record 1)")
    note(
        "keep the head outside the database and pass it to the next verify "
        "(--expect-head SEQ:SHA256): only that detects a rollback of the whole database, "
        "log included, or its replacement by another registry's under the same key"
    )
    if report.predating:
        note(
            f"{report.predating} entr{'y' if report.predating == 1 else 'ies'} predated "
            "the log: its first record lists them as they were when logging began"
        )
    return EXIT_OK
