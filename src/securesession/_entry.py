"""Registry entries: what a service URL gets, and the checks made when one is built."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, Literal, get_args

from ._exceptions import InvalidEntryError, InvalidURLError
from ._record import Record
from ._secret import Credential, Secret
from ._tls.model import TLSProfile
from ._urls import MAX_DEPTH, canonicalize

__all__ = ["AuthMode", "ServiceEntry"]

AuthMode = Literal["headers", "basic", "bearer", "digest", "ntlm", "wsse", "none"]
AUTH_MODES: Final[tuple[str, ...]] = get_args(AuthMode)
#: Modes that write the ``Authorization`` header; two of them on one entry would collide.
AUTHORIZATION_MODES: Final = frozenset({"basic", "bearer", "digest", "ntlm"})
#: Modes whose credential is never sent as HTTP: integrations read it from the entry
#: (``wsse``: the WS-Security UsernameToken of ``securesession.integrations.zeep``).
NOT_HTTP_MODES: Final = frozenset({"wsse"})

_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_FORBIDDEN_IN_VALUE: Final = re.compile(r"[\r\n\x00]")
#: What a value written literally into a header may hold: printable Latin-1, that is
#: visible ASCII, space, tab and U+00A0..U+00FF (one byte each on the wire, as
#: ``http.client`` encodes header values as Latin-1). Everything else is refused:
#: other control characters (C0, DEL, C1), which RFC 9110 does not allow or servers
#: reject, and characters above U+00FF, which cannot be encoded at all.
_NOT_WIRE_SAFE: Final = re.compile(r"[^\t\x20-\x7e\xa0-\xff]")
#: What XML 1.0 text cannot hold (a ``wsse`` value goes into a SOAP envelope): C0
#: controls but tab, LF and CR (which ``_FORBIDDEN_IN_VALUE`` refuses anyway),
#: surrogates, U+FFFE and U+FFFF. Compiled (by ``re``'s cache) at its first use: its
#: surrogate range costs a millisecond to compile, at every import otherwise.
_NOT_XML_TEXT: Final = "[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]"


class ServiceEntry(Record, uncompared=frozenset({"revision", "updated_at"})):
    """The credentials and TLS profile of every URL under *url*.

    *url* is canonicalised on construction (``https://Gw.Example.com/pay/`` becomes
    ``https://gw.example.com:443/pay``); it matches itself and every URL below it
    on a path-segment boundary.

    Each credential is injected according to its mode:

    ``headers``  user name and password in two headers (``*_headers`` names them)
    ``basic``    HTTP Basic ``Authorization``
    ``bearer``   ``Authorization: Bearer <password>``
    ``digest``   HTTP Digest, answering the server's challenge
    ``ntlm``     NTLM through the ``ntlm`` extra (``requests-ntlm``)
    ``wsse``     never sent as HTTP: kept (encrypted like every credential) for the
                 zeep integration, which writes it into the SOAP envelope as a
                 WS-Security UsernameToken; at most one credential of an entry
    ``none``     not injected (and no credential may be given)

    *secret_headers* are extra headers whose values are secrets (an API key, say).

    A value written literally into a header (``headers`` user name and password,
    ``bearer`` token, *secret_headers* values, ``digest`` user name) must be
    printable Latin-1: visible ASCII, space, tab or U+00A0..U+00FF. ``basic`` sends
    base64 of UTF-8 (RFC 7617 ``charset="UTF-8"``) and ``ntlm`` UTF-16, so their
    values may hold any character; so may a ``digest`` password (only its hash is
    sent). No value may hold CR, LF or NUL.

    *tls* is the service's :class:`~securesession.TLSProfile` (client certificate,
    TLS versions, CA bundle, pins, CRL); https:// entries only.
    ``revision`` and ``updated_at`` are set by the registry that stores the entry.
    """

    url: str
    gateway: Credential | None
    request: Credential | None
    gateway_auth: AuthMode
    request_auth: AuthMode
    gateway_headers: tuple[str, str]
    request_headers: tuple[str, str]
    secret_headers: Mapping[str, Secret]
    description: str
    tls: TLSProfile | None
    revision: int
    updated_at: float | None

    def __init__(
        self,
        url: str,
        gateway: Credential | None = None,
        request: Credential | None = None,
        gateway_auth: AuthMode = "headers",
        request_auth: AuthMode = "basic",
        gateway_headers: tuple[str, str] = ("X-Gateway-User", "X-Gateway-Password"),
        request_headers: tuple[str, str] = ("X-Request-User", "X-Request-Password"),
        secret_headers: Mapping[str, Secret | str] = MappingProxyType({}),
        description: str = "",
        tls: TLSProfile | None = None,
        revision: int = 0,
        updated_at: float | None = None,
    ) -> None:
        try:
            canonical = canonicalize(url)
        except InvalidURLError as exc:
            raise InvalidEntryError(f"invalid entry URL: {exc}") from None
        if len(canonical.segments) > MAX_DEPTH:
            raise InvalidEntryError(
                f"entry URL {canonical.key!r} is deeper than {MAX_DEPTH} path segments"
            )
        vars(self).update(
            url=canonical.key,
            gateway=gateway,
            request=request,
            gateway_auth=gateway_auth,
            request_auth=request_auth,
            gateway_headers=tuple(gateway_headers),
            request_headers=tuple(request_headers),
            secret_headers=MappingProxyType(
                {name: Secret(secret) for name, secret in secret_headers.items()}
            ),
            description=description,
            tls=tls,
            revision=revision,
            updated_at=updated_at,
        )
        self._validate()

    def _validate(self) -> None:
        where = f"entry {self.url}"
        if self.tls is not None:
            if not isinstance(self.tls, TLSProfile):
                raise InvalidEntryError(f"{where}: tls must be a TLSProfile")
            if not self.url.startswith("https://"):
                raise InvalidEntryError(
                    f"{where}: a TLS profile needs an https:// URL (plain http has no TLS)"
                )
        writers: dict[str, str] = {}

        def claim(header: str, owner: str) -> None:
            if not _TOKEN.fullmatch(header):
                raise InvalidEntryError(f"{where}: {owner} header name {header!r} is not valid")
            previous = writers.setdefault(header.lower(), owner)
            if previous != owner:
                raise InvalidEntryError(
                    f"{where}: {previous} and {owner} would both write the {header!r} header"
                )

        for role, credential, mode, names in (
            ("gateway", self.gateway, self.gateway_auth, self.gateway_headers),
            ("request", self.request, self.request_auth, self.request_headers),
        ):
            if mode not in AUTH_MODES:
                raise InvalidEntryError(
                    f"{where}: {role}_auth {mode!r} is not one of {', '.join(AUTH_MODES)}"
                )
            if credential is None:
                continue  # an absent credential injects nothing, whatever its mode
            if not isinstance(credential, Credential):
                raise InvalidEntryError(f"{where}: {role} must be a Credential")
            if mode == "none":
                raise InvalidEntryError(
                    f"{where}: a {role} credential is given but {role}_auth is 'none' "
                    f"(for a credential that is not sent as HTTP, such as a WS-Security "
                    f"UsernameToken for zeep, use {role}_auth='wsse')"
                )
            if mode in NOT_HTTP_MODES:
                _check_wsse(where, role, credential)
                if role == "request" and self.gateway is not None and self.gateway_auth == mode:
                    raise InvalidEntryError(
                        f"{where}: gateway and request credentials are both {mode!r}: "
                        "a SOAP envelope carries one UsernameToken"
                    )
                continue
            _check_value(where, f"{role} user name", credential.username)
            _check_value(where, f"{role} password", credential.password.reveal())
            if mode in ("headers", "digest"):  # the user name goes into a header as is
                _check_wire_safe(where, f"{role} user name", mode, credential.username)
            if mode in ("headers", "bearer"):  # so does the password
                _check_wire_safe(where, f"{role} password", mode, credential.password.reveal())
            if mode in AUTHORIZATION_MODES:
                claim("Authorization", f"{role} credential ({mode})")
            if mode in ("basic", "digest") and ":" in credential.username:
                raise InvalidEntryError(
                    f"{where}: {role} user name contains ':', which HTTP {mode} cannot carry"
                )
            if mode == "headers":
                if len(names) != 2:
                    raise InvalidEntryError(f"{where}: {role}_headers needs two header names")
                if credential.username:
                    claim(names[0], f"{role} user name")
                claim(names[1], f"{role} password")
        for header, value in self.secret_headers.items():
            claim(header, f"secret header {header!r}")
            _check_value(where, f"secret header {header!r}", value.reveal())
            _check_wire_safe(where, f"secret header {header!r}", None, value.reveal())

    def __hash__(self) -> int:
        # Equal entries have equal URLs (eq leaves revision and change time out), and a
        # URL has one entry per registry: the URL alone keeps hash and eq consistent.
        return hash(self.url)

    def __repr__(self) -> str:
        return (
            f"ServiceEntry(url={self.url!r}, gateway={self.gateway!r}, request={self.request!r}, "
            f"gateway_auth={self.gateway_auth!r}, request_auth={self.request_auth!r}, "
            f"secret_headers={sorted(self.secret_headers)!r}, tls={self.tls!r}, "
            f"revision={self.revision})"
        )

    def with_metadata(self, *, revision: int, updated_at: float | None = None) -> ServiceEntry:
        """A copy carrying the registry's revision and change time."""
        copy = object.__new__(ServiceEntry)
        copy.__dict__.update(self.__dict__)
        object.__setattr__(copy, "revision", revision)
        object.__setattr__(copy, "updated_at", time.time() if updated_at is None else updated_at)
        return copy


def _check_value(where: str, what: str, value: str) -> None:
    # Header values are written after requests validated the caller's headers, so an
    # embedded CR/LF here would split the request; the message never shows the value.
    if _FORBIDDEN_IN_VALUE.search(value):
        raise InvalidEntryError(f"{where}: {what} contains a line break or NUL character")


def _check_wsse(where: str, role: str, credential: Credential) -> None:
    # A UsernameToken needs a user name; both values become XML text.
    if not credential.username:
        raise InvalidEntryError(
            f"{where}: {role}_auth 'wsse' needs a user name (a UsernameToken carries one)"
        )
    for what, value in (
        ("user name", credential.username),
        ("password", credential.password.reveal()),
    ):
        _check_value(where, f"{role} {what}", value)
        if re.search(_NOT_XML_TEXT, value) is not None:
            raise InvalidEntryError(
                f"{where}: {role} {what} in mode 'wsse' holds a character that XML "
                "cannot carry (a control character, a surrogate, U+FFFE or U+FFFF)"
            )


def _check_wire_safe(where: str, what: str, mode: str | None, value: str) -> None:
    # Checked by pattern, not by encoding: a UnicodeEncodeError would carry the whole
    # value in ``exc.object``, and would stay reachable as the context of ours. The
    # message names the field, never the value nor the offending character.
    if _NOT_WIRE_SAFE.search(value) is not None:
        how = "" if mode is None else f" in mode {mode!r}"
        raise InvalidEntryError(
            f"{where}: {what}{how} holds a character that cannot be sent in an HTTP header "
            "(only printable Latin-1 can: visible ASCII, space, tab, U+00A0..U+00FF)"
        ) from None
