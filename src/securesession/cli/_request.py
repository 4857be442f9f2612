"""``request METHOD URL``: a tiny curl that sends through :class:`SecureSession`.

The status line and any echoed headers go to stderr, the body to stdout (or ``-o``),
so ``securesession request GET URL | jq`` works. Header values the registry injected
(and any header value that contains one of them) are shown as ``<redacted>``, on
every hop of a redirect chain: each hop's URL has its own entry, so the redactor
covers what the entries of all of them inject.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import requests

from securesession import SecureSession, ServiceEntry, redacted_url
from securesession.integrations import injected_header_names

from ._commands import registry_from_args
from ._common import EXIT_FAILED, EXIT_OK, CommandError, UsageError, note
from ._secrets import looks_secret

__all__ = ["Redactor", "cmd_request", "request_error"]

REDACTED: Final = "<redacted>"
_METHOD: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HEADER_NAME: Final = _METHOD
# Headers that carry credentials whoever set them (the caller's -H included).
_ALWAYS_SECRET: Final = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "www-authenticate"}
)
_ERRNO: Final = re.compile(r"\[Errno -?\d+\] [^'\")]+")
_SSL_REASON: Final = re.compile(r"\[SSL: [A-Z0-9_]+\] [^'\")(]+")


class Redactor:
    """Hides the injected credentials in headers that are echoed to the terminal."""

    def __init__(self, names: Iterable[str], values: Iterable[str]) -> None:
        self._names = {name.lower() for name in names} | _ALWAYS_SECRET
        # Short values (a one-letter user name) would redact half the output.
        self._values = [value for value in values if len(value) >= 4]

    def value(self, name: str, value: str) -> str:
        if (
            name.lower() in self._names
            or looks_secret(name)
            or any(secret in value for secret in self._values)
        ):
            return REDACTED
        return value

    def lines(self, prefix: str, headers: Mapping[str, str]) -> list[str]:
        return [f"{prefix}{name}: {self.value(name, value)}" for name, value in headers.items()]


def _parse_headers(raw: list[str] | None) -> dict[str, str]:
    """``-H 'Name: value'`` items; ``-H @FILE`` / ``-H @-`` read one header per line.

    A credential-like header (``Authorization``, ``X-Api-Key``...) is refused on the
    command line itself, where other users and the shell history would see it.
    """
    headers: dict[str, str] = {}
    for item in raw or []:
        from_file = item.startswith("@")
        lines = (
            _read_at(item, "-H").decode("utf-8", "replace").splitlines() if from_file else [item]
        )
        for line in lines:
            if from_file and not line.strip():
                continue
            name, sep, value = line.partition(":")
            name = name.strip()
            if not sep or not _HEADER_NAME.fullmatch(name):
                shown = name if _HEADER_NAME.fullmatch(name) else "(invalid name)"
                raise UsageError(f"-H expects 'Name: value', got a header {shown}")
            if not from_file and (name.lower() in _ALWAYS_SECRET or looks_secret(name)):
                raise UsageError(
                    f"-H {name}: would put a credential on the command line; store it in the "
                    "registry (add --secret-header), or pass -H @FILE or -H @- (stdin)"
                )
            headers[name] = value.strip()
    return headers


def _body(args: argparse.Namespace) -> tuple[bytes | None, Any]:
    if args.data is not None and args.json_body is not None:
        raise UsageError("--data and --json exclude each other")
    if args.json_body is not None:
        text = _read_at(args.json_body, "--json").decode("utf-8", "replace")
        try:
            return None, json.loads(text)
        except ValueError as exc:
            raise UsageError(f"--json is not valid JSON: {exc}") from None
    if args.data is not None:
        return _read_at(args.data, "--data"), None
    return None, None


def _read_at(value: str, flag: str) -> bytes:
    """``@file`` reads a file, ``@-`` standard input; anything else is the value itself."""
    if not value.startswith("@"):
        return value.encode()
    if value == "@-":
        return sys.stdin.buffer.read()
    try:
        return Path(value[1:]).expanduser().read_bytes()
    except OSError as exc:
        raise UsageError(f"{flag}: cannot read {value[1:]}: {exc.strerror}") from None


def request_error(exc: requests.RequestException, url: str, timeout: float) -> CommandError:
    """One line naming what failed, without the URL's query (it may hold a token)."""
    where = redacted_url(url)
    text = str(exc)
    if isinstance(exc, requests.exceptions.SSLError):
        reason = _SSL_REASON.search(text)
        detail = reason.group(0).strip() if reason else "see --debug"
        return CommandError(f"TLS handshake with {where} failed: {detail}")
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return CommandError(f"connecting to {where} timed out after {timeout:g} s")
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return CommandError(f"{where} sent no response within {timeout:g} s")
    if isinstance(exc, requests.exceptions.ConnectionError):
        reason = _ERRNO.search(text)
        detail = reason.group(0).strip() if reason else type(exc).__name__
        return CommandError(f"cannot connect to {where}: {detail}")
    return CommandError(f"request to {where} failed: {type(exc).__name__}")


def _redactor(session: SecureSession, urls: Iterable[str], first: ServiceEntry | None) -> Redactor:
    """A redactor for everything the entries of *urls* inject: header names and values,
    and the entries' own secrets (which a server might echo back in a header)."""
    entries: dict[str, ServiceEntry] = {} if first is None else {first.url: first}
    for url in dict.fromkeys(urls):
        entry = session.entry_for(url)
        if entry is not None:
            entries.setdefault(entry.url, entry)
    values: list[str] = []
    for entry in entries.values():
        for credential, mode in (
            (entry.gateway, entry.gateway_auth),
            (entry.request, entry.request_auth),
        ):
            if credential is not None:
                values.append(credential.password.reveal())
                if mode == "headers":
                    values.append(credential.username)
        values += [secret.reveal() for secret in entry.secret_headers.values()]
    return Redactor(injected_header_names(entries.values()), values)


def cmd_request(args: argparse.Namespace) -> int:
    method = args.method.upper()
    if not _METHOD.fullmatch(method):
        raise UsageError("METHOD must be an HTTP method name such as GET or POST")
    headers = _parse_headers(args.header)
    data, json_body = _body(args)
    verify: bool | str = str(Path(args.cacert).expanduser()) if args.cacert else True
    with (
        registry_from_args(args) as registry,
        SecureSession(registry, strict=args.strict) as session,
    ):
        first = session.entry_for(args.url)
        if first is None:
            note(f"no registry entry matches {redacted_url(args.url)}; sending without credentials")
        else:
            note(f"entry {first.url} matched")
        try:
            response = session.request(
                method,
                args.url,
                headers=headers,
                data=data,
                json=json_body,
                timeout=args.timeout,
                verify=verify,
                allow_redirects=not args.no_redirects,
            )
        except requests.RequestException as exc:
            raise request_error(exc, args.url, args.timeout) from exc
        body = response.content
        # After redirects the later hops carried their own entries' secrets: cover
        # the entry of every URL the chain went through (and the first URL's entry as
        # it was before sending, in case a 401 refresh changed it since).
        hops = [args.url, *(hop.request.url or args.url for hop in [*response.history, response])]
        shows_headers = args.verbose or args.include
        redactor = _redactor(session, hops, first) if shows_headers else Redactor((), ())
    if args.verbose:
        for hop in [*response.history, response]:
            sent = hop.request
            note(f"> {sent.method} {redacted_url(sent.url or args.url)}")
            for line in redactor.lines("> ", dict(sent.headers)):
                note(line)
            if hop is not response:
                note(f"< HTTP {hop.status_code} {hop.reason}")
                for line in redactor.lines("< ", dict(hop.headers)):
                    note(line)
    note(f"HTTP {response.status_code} {response.reason}")
    if args.include or args.verbose:
        for line in redactor.lines("< ", dict(response.headers)):
            note(line)
    if args.output:
        Path(args.output).expanduser().write_bytes(body)
        note(f"wrote {len(body)} bytes to {args.output}")
    else:
        sys.stdout.flush()  # text written before the body must come out first
        sys.stdout.buffer.write(body)
        if body and not body.endswith(b"\n") and sys.stdout.isatty():
            sys.stdout.buffer.write(b"\n")
        sys.stdout.flush()
    return EXIT_OK if response.status_code < 400 else EXIT_FAILED
