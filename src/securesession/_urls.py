"""URL canonicalisation and the path prefixes a registry lookup probes.

Canonical form (RFC 3986, section 6): lower-case scheme and host, IDNA (UTS 46)
for non-ASCII hosts, compressed IPv6 literals, the default port made explicit,
unreserved percent-escapes decoded and the others upper-cased, trailing empty
segments dropped; query and fragment ignored.

What is matched must be exactly what is sent, so some URLs are refused rather than
guessed at (:class:`InvalidURLError` names the reason):

* user information (``user:pw@host``): credentials belong in the registry, and such
  a URL would carry them in clear;
* a path segment that is, or decodes to, ``.`` or ``..`` (literal, percent-encoded in
  any case, double-encoded, or with ``;parameters``), and an encoded slash or any
  backslash: a gateway that resolves them routes the request to another path than the
  one it matched (``/public/%2e%2e/payments`` matches ``/public`` here but reaches
  ``/payments`` there). They are refused whatever the origin, so that whether a URL
  works never depends on what the registry holds at that moment;
* IPv6 zone ids (``[fe80::1%eth0]``): the zone names an interface of this host, and
  entries for two zones would otherwise share one key.

A registry key is ``scheme://host:port/seg1/seg2``; a lookup probes the keys of
the URL's path prefixes, longest first, on segment boundaries, so ``/payments``
matches ``/payments/x`` but never ``/paymentsx``. The number of probes is the
path depth (capped at :data:`MAX_DEPTH`), never the number of entries.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from typing import Final
from urllib.parse import unquote, urlsplit

import idna

from ._exceptions import InvalidURLError

__all__ = [
    "MAX_DEPTH",
    "CanonicalURL",
    "canonicalize",
    "redacted_url",
    "without_query",
    "without_userinfo",
]

#: Deepest path prefix an entry may have; deeper request paths still match their
#: first ``MAX_DEPTH`` segments, which bounds the probes of one lookup.
MAX_DEPTH: Final = 64

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_UNRESERVED: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PERCENT: Final = re.compile(r"%([0-9A-Fa-f]{2})")
_ASCII_HOST: Final = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*")


class CanonicalURL:
    """A URL reduced to what decides which registry entry it uses. Immutable: the
    lookup memo hands one instance to every caller of the same URL."""

    # A plain slotted class, not a dataclass: it is defined in every process on the
    # import path, where a frozen dataclass costs several times more to build.
    __slots__ = ("host", "port", "prefix_keys", "scheme", "segments")

    scheme: str
    host: str
    port: int
    segments: tuple[str, ...]
    #: Registry keys of every path prefix, longest first, root last.
    prefix_keys: tuple[str, ...]

    def __init__(self, scheme: str, host: str, port: int, segments: tuple[str, ...]) -> None:
        origin = f"{scheme}://{host}:{port}"
        depth = min(len(segments), MAX_DEPTH)
        keys = tuple(origin + "/" + "/".join(segments[:i]) for i in range(depth, -1, -1))
        set_field = object.__setattr__
        set_field(self, "scheme", scheme)
        set_field(self, "host", host)
        set_field(self, "port", port)
        set_field(self, "segments", segments)
        set_field(self, "prefix_keys", keys)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"CanonicalURL is immutable: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"CanonicalURL is immutable: cannot delete {name!r}")

    def _identity(self) -> tuple[str, str, int, tuple[str, ...]]:
        return (self.scheme, self.host, self.port, self.segments)

    def __eq__(self, other: object) -> bool:
        if type(other) is not CanonicalURL:
            return NotImplemented
        return self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash(self._identity())

    def __repr__(self) -> str:
        return (
            f"CanonicalURL(scheme={self.scheme!r}, host={self.host!r}, port={self.port!r}, "
            f"segments={self.segments!r})"
        )

    @property
    def origin(self) -> str:
        """``scheme://host:port``, the unit credentials never cross."""
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def path(self) -> str:
        return "/" + "/".join(self.segments)

    @property
    def key(self) -> str:
        """The registry key of an entry with this URL."""
        return self.origin + self.path


def canonicalize(url: str) -> CanonicalURL:
    """Canonicalise *url*; raise :class:`InvalidURLError` naming what is wrong."""
    if not isinstance(url, str):
        raise InvalidURLError(f"URL must be a str, not {type(url).__name__}")
    if "?" in url or "#" in url:  # tested here, so that a URL without either pays no call
        # Query and fragment never take part in matching; dropping them first also
        # keeps them (and any token they carry) out of the memo.
        url = without_query(url)
    return _canonicalize(url)


def without_query(url: str) -> str:
    """*url* up to its query or fragment, whichever comes first (``/a#x?y`` is ``/a``):
    all a lookup, and so any memo of lookups, may depend on, and all of a refused URL
    an error message may quote."""
    return url.partition("#")[0].partition("?")[0]


def without_userinfo(url: str) -> str:
    """*url* without the user information (``user:password@``) of its authority, or
    *url* itself if it has none. The authority ends at the first ``/``, ``?`` or ``#``
    (RFC 3986), as :func:`canonicalize` and httpx read it: an ``@`` in a query or a
    fragment (``https://h#a@x/`` is host ``h``) is no user information."""
    scheme, sep, rest = url.partition("://")
    end = len(rest)
    for delimiter in "/?#":
        found = rest.find(delimiter, 0, end)
        if found >= 0:
            end = found
    authority = rest[:end]
    if "@" not in authority:
        return url
    return f"{scheme}{sep}{authority.rpartition('@')[2]}{rest[end:]}"


# The memo of every lookup: keyed by the URL string itself (compared whole, never by a
# digest or a normalised form, so no other string can reach another's result), for
# successes only (a refused URL raises again each time), and bounded, so a caller
# sending endless distinct URLs costs time, not memory.
@lru_cache(maxsize=4096)
def _canonicalize(url: str) -> CanonicalURL:
    try:
        parts = urlsplit(url.strip())
    except ValueError as exc:
        raise InvalidURLError(f"malformed URL {_describe(url)}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise InvalidURLError(
            f"unsupported URL scheme {scheme or '(none)'!r} in {_describe(url)}: "
            "expected http or https"
        )
    if "@" in parts.netloc:
        raise InvalidURLError(
            f"URL {_describe(url)} contains user information (user:password@); "
            "keep credentials in the registry, not in the URL"
        )
    host = _canonical_host(parts.hostname or "", url)
    try:
        port = parts.port
    except ValueError:
        raise InvalidURLError(f"invalid port in URL {_describe(url)}") from None
    if port is None:
        port = _DEFAULT_PORTS[scheme]
    elif port == 0:
        raise InvalidURLError(f"invalid port 0 in URL {_describe(url)}")
    return CanonicalURL(scheme, host, port, _canonical_segments(parts.path, url))


def _canonical_host(host: str, url: str) -> str:
    if not host:
        raise InvalidURLError(f"URL {_describe(url)} has no host")
    if ":" in host:
        if "%" in host:
            raise InvalidURLError(
                f"URL {_describe(url)} has an IPv6 zone id (%...): zoned addresses are not "
                "supported, since entries for two interfaces would share one key"
            )
        try:
            return f"[{ipaddress.IPv6Address(host).compressed}]"
        except ValueError:
            raise InvalidURLError(f"invalid IPv6 host in URL {_describe(url)}") from None
    host = host.rstrip(".")
    if host.isascii():
        host = host.lower()
        if not _ASCII_HOST.fullmatch(host):
            raise InvalidURLError(f"invalid host {host!r} in URL {_describe(url)}")
        if "xn--" not in host:
            return host
    try:
        # Non-ASCII hosts are encoded; punycode ("xn--") hosts are checked to decode.
        return idna.encode(host, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise InvalidURLError(
            f"invalid internationalised host in URL {_describe(url)}: {exc}"
        ) from None


def _decode_unreserved(match: re.Match[str]) -> str:
    char = chr(int(match.group(1), 16))
    return char if char in _UNRESERVED else "%" + match.group(1).upper()


def _canonical_segments(path: str, url: str) -> tuple[str, ...]:
    segments = _PERCENT.sub(_decode_unreserved, path).split("/")[1:]
    for segment in segments:
        _refuse_ambiguous(segment, url)
    while segments and not segments[-1]:
        segments.pop()
    return tuple(segments)


def _refuse_ambiguous(segment: str, url: str) -> None:
    """Refuse a segment that a server may read as a dot segment or as two segments.

    Decoding repeats (a gateway may decode twice) until nothing changes; IIS and
    Tomcat treat a backslash as a slash and ignore ``;parameters`` in ``..;``."""
    decoded = segment
    for _ in range(4):
        if "%" not in decoded:
            break
        decoded, previous = unquote(decoded, errors="replace"), decoded
        if decoded == previous:
            break
    if "/" in decoded or "\\" in decoded:
        raise InvalidURLError(
            f"URL {_describe(url)} has an encoded slash or a backslash in its path: the "
            "server may split the segment and route the request elsewhere than the "
            "entry it would match; refusing it"
        )
    if decoded.split(";", 1)[0] in (".", ".."):
        raise InvalidURLError(
            f"URL {_describe(url)} has a dot segment ('.' or '..', literal or "
            "percent-encoded) in its path: the server may resolve it to another path "
            "than the entry it would match; refusing it"
        )


def redacted_url(url: str) -> str:
    """Origin and path of *url*, for log lines and messages: never its query, fragment or
    user information, which may hold tokens."""
    try:
        canonical = canonicalize(url)
    except ValueError:
        return "a URL that is not http(s)"
    return canonical.origin + canonical.path


def _describe(url: str) -> str:
    """Quote a URL for an error message without its userinfo, query or fragment.

    Unlike :func:`redacted_url`, which shows the canonical form of a URL that has one,
    this quotes a URL that is being refused as it was written (there is no canonical
    form to show, and the message is about that spelling), cut to 200 characters."""
    url = without_query(url)
    if "@" in url:
        # Everything up to the last "@": a refused URL may be malformed in any way
        # (https:/u:pw@h, https:///u:pw@h, u:pw/x@h), and whatever precedes an "@"
        # may be a password. Hiding a path's "@" too costs a message nothing.
        head, sep, _ = url.partition("://")
        scheme = head + sep if sep and "@" not in head else ""
        url = f"{scheme}***@{url.rpartition('@')[2]}"
    return repr(url[:200])
