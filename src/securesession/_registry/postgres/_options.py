"""The registry URL and its options: what to connect to, with which libpq settings,
and how to name it in messages without the password."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qsl, quote_plus, unquote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ..._exceptions import ConfigurationError

DEFAULT_SCHEMA: Final = "securesession"

# Lower-case identifiers only, so they need no quoting anywhere; short enough that
# the notification channel ("securesession_" + schema) fits in 63 bytes.
_SCHEMA_NAME: Final = re.compile(r"[a-z_][a-z0-9_]{0,39}")
# libpq settings we add when the URL does not set them: fail fast on a dead host and
# notice a silently vanished peer (keepalives while idle, tcp_user_timeout while
# waiting for an answer) instead of hanging for the kernel's 15 minutes.
_CONNECT_DEFAULTS: Final = {
    "connect_timeout": "5",
    "keepalives": "1",
    "keepalives_idle": "5",
    "keepalives_interval": "2",
    "keepalives_count": "3",
    "application_name": "securesession",
}
_TCP_USER_TIMEOUT_MS: Final = "10000"


@dataclass(frozen=True)
class PostgresTarget:
    """A parsed registry URL: what to connect to, and how to name it safely."""

    #: libpq conninfo: the URL's parameters, then our defaults for those it leaves out.
    conninfo: str
    schema: str
    #: ``postgresql://user@host:port/db``: for messages; never holds the password.
    name: str
    #: Strings to blank out of any message (the password, raw and decoded).
    hidden: tuple[str, ...]

    @property
    def channel(self) -> str:
        """The LISTEN/NOTIFY channel of this registry."""
        return f"securesession_{self.schema}"

    def redact(self, text: str) -> str:
        return _redact(text, self.hidden)

    def describe(self, exc: BaseException) -> str:
        """The first line of *exc*'s message (or its type), without the password."""
        return self.redact(first_line(str(exc)) or type(exc).__name__)


def parse_url(url: str, options: Mapping[str, str | int] | None = None) -> PostgresTarget:
    """Split a ``postgresql://`` (or ``postgres://``) URL into libpq conninfo and our options.

    The only option of ours is ``schema``; every other query parameter goes to libpq
    (``sslmode``, ``sslrootcert``, ``connect_timeout``, ...). *options* are more of
    them, given as keywords instead of in the query; one given both ways is refused.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("postgresql", "postgres"):
        raise ConfigurationError("a PostgreSQL registry URL starts with postgresql://")
    queried = parse_qsl(parts.query, keep_blank_values=True)
    keywords = [(name, str(value)) for name, value in (options or {}).items()]
    twice = sorted({name for name, _ in queried} & {name for name, _ in keywords})
    if twice:
        raise ConfigurationError(
            f"PostgreSQL registry option {twice[0]!r} is given both in the URL and as a keyword"
        )
    raw_password = parts.password or ""
    secrets = {raw_password, unquote(raw_password)}
    schema = DEFAULT_SCHEMA
    passed: list[tuple[str, str]] = []
    for name, value in queried + keywords:
        if name == "schema":
            schema = value
            continue
        if name == "password":
            secrets |= {value, quote_plus(value)}
        passed.append((name, value))
    hidden = tuple(sorted(secrets - {""}, key=len, reverse=True))
    if not _SCHEMA_NAME.fullmatch(schema):
        raise ConfigurationError(
            f"registry schema {schema!r} is not a lower-case identifier of at most 40 characters"
        )
    conninfo = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(passed), ""))
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.Error as exc:
        text = _redact(first_line(str(exc)), hidden)
        raise ConfigurationError(f"invalid PostgreSQL registry URL: {text}") from None
    user = params.get("user")
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port")
    name = (
        f"postgresql://{f'{user}@' if user else ''}{host}{f':{port}' if port else ''}"
        f"/{params.get('dbname') or ''}"
    )
    if schema != DEFAULT_SCHEMA:
        name += f"?schema={schema}"
    return PostgresTarget(_with_defaults(conninfo, params), schema, name, hidden)


def _with_defaults(conninfo: str, given: Mapping[str, object]) -> str:
    defaults = dict(_CONNECT_DEFAULTS)
    if psycopg.pq.version() >= 120000:  # libpq 12 added tcp_user_timeout
        defaults["tcp_user_timeout"] = _TCP_USER_TIMEOUT_MS
    for option in given:
        defaults.pop(option, None)
    return make_conninfo(conninfo, **defaults)


def first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _redact(text: str, hidden: tuple[str, ...]) -> str:
    for secret in hidden:
        text = text.replace(secret, "***")
    return text
