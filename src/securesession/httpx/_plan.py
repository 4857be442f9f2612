"""What an entry injects through httpx, and how the client tells injected values apart.

An :class:`HttpxPlan` is what the guard caches per entry revision: the header values,
encoded once as the bytes that go on the wire, and the challenge handler
(``httpx.DigestAuth``, httpx-ntlm's ``HttpNtlmAuth``) for the ``digest`` and ``ntlm``
modes.

requests keeps header values as ``str`` objects it copies by reference, so its guard
tags each injected value with the plan it came from. httpx keeps bytes, and decodes
them to new ``str`` objects whenever a caller reads them (``dict(response.request.headers)``),
so a tag would not survive. Provenance is therefore kept by the client instead: its
:class:`Ledger` holds a keyed digest of every (header name, value) pair it injected,
for any entry and any revision, and of every ``Authorization`` value its challenge
handlers computed. On every request the transport removes each header whose value
the ledger knows unless it is exactly what the request's own entry injects now, and
adds that entry's headers where the request has none of that name. A value the
caller sets that happens to equal one this client injected for another entry is
therefore removed too: the safe side of a coincidence.

The ledger keeps digests, never values: BLAKE2b keyed with a random key of the
client's own, so what outlives a plan in memory cannot be turned back into a secret
or compared across processes.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final

import httpx

from .._entry import ServiceEntry
from .._exceptions import ConfigurationError
from .._inject import entry_headers
from .._secret import Credential

__all__ = ["AUTHORIZATION", "HttpxPlan", "Ledger", "build_plan"]

AUTHORIZATION: Final = b"authorization"
_NO_HEADERS: Final[dict[bytes, bytes]] = {}
#: Challenge answers remembered (they change per request); older ones are forgotten
#: first. Static plan values are few per revision and are all kept.
_MAX_DYNAMIC: Final = 4096
_MAX_STATIC: Final = 65536


@dataclass(eq=False, repr=False)
class HttpxPlan:
    """Precomputed injection for one revision of one entry. Holds clear values: its
    ``repr`` names headers only."""

    entry: ServiceEntry
    #: ``(name, lowercase name, value)`` as bytes, in the order they are added.
    items: tuple[tuple[bytes, bytes, bytes], ...] = ()
    #: lowercase name -> value, for the "is this exactly ours?" test.
    own: dict[bytes, bytes] = field(default_factory=dict)
    #: The challenge handler of a ``digest`` or ``ntlm`` credential.
    auth: httpx.Auth | None = None
    #: Every value is ASCII (so adding them never changes how httpx decodes headers).
    ascii: bool = True
    #: The header names, for log lines.
    names: str = ""

    @property
    def key(self) -> str:
        return self.entry.url

    @property
    def writes_authorization(self) -> bool:
        return self.auth is not None or AUTHORIZATION in self.own

    def __repr__(self) -> str:
        names = ", ".join(name.decode("latin-1") for name, _, _ in self.items)
        inner = None if self.auth is None else type(self.auth).__name__
        return f"<HttpxPlan {self.entry.url} headers=[{names}] auth={inner}>"


def build_plan(entry: ServiceEntry) -> HttpxPlan:
    """Turn a decrypted entry into wire-ready header bytes and a challenge handler.

    Values are encoded as Latin-1, as requests (``http.client``) sends them, so both
    front-ends put the same bytes on the wire; ``ServiceEntry`` admits nothing else in
    a literal header value."""
    headers, challenge = entry_headers(entry)
    auth: httpx.Auth | None = None
    if challenge is not None:
        credential = challenge.credential
        auth = (
            httpx.DigestAuth(credential.username, credential.password.reveal())
            if challenge.mode == "digest"
            else _ntlm(entry, credential)
        )
    items = []
    for name, value in headers:
        raw = name.encode("latin-1")
        items.append((raw, raw.lower(), value.encode("latin-1")))
    return HttpxPlan(
        entry=entry,
        items=tuple(items),
        own={lower: value for _, lower, value in items},
        auth=auth,
        ascii=all(value.isascii() for _, _, value in items),
        names=", ".join(name for name, _ in headers),
    )


def _ntlm(entry: ServiceEntry, credential: Credential) -> httpx.Auth:
    try:
        from httpx_ntlm import HttpNtlmAuth
    except ImportError:
        raise ConfigurationError(
            f"entry {entry.url}: ntlm injection over httpx needs the httpx-ntlm package: "
            "pip install 'securesession[httpx-ntlm]'"
        ) from None
    handler: httpx.Auth = HttpNtlmAuth(credential.username, credential.password.reveal())
    return handler


class Ledger:
    """Keyed digests of every header value one client injected (thread-safe).

    ``names`` is the set of lowercase header names ever injected: a request header
    of any other name is the caller's without further ado, which keeps the check
    to a set lookup per header on most requests."""

    def __init__(self) -> None:
        self._key = os.urandom(32)
        self.names: set[bytes] = set()
        self._static: OrderedDict[bytes, None] = OrderedDict()
        self._dynamic: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<Ledger names={len(self.names)} values={len(self._static) + len(self._dynamic)}>"

    def _digest(self, lower: bytes, value: bytes) -> bytes:
        return hashlib.blake2b(
            lower + b"\x00" + value.strip(), key=self._key, digest_size=16
        ).digest()

    def record_plan(self, plan: HttpxPlan) -> None:
        digests = [self._digest(lower, value) for _, lower, value in plan.items]
        with self._lock:
            self.names.update(lower for _, lower, _ in plan.items)
            if plan.auth is not None:
                self.names.add(AUTHORIZATION)
            for digest in digests:
                self._static[digest] = None
                self._static.move_to_end(digest)
            while len(self._static) > _MAX_STATIC:
                self._static.popitem(last=False)

    def record_answer(self, value: bytes) -> None:
        """An ``Authorization`` value a challenge handler computed for an entry."""
        digest = self._digest(AUTHORIZATION, value)
        with self._lock:
            self.names.add(AUTHORIZATION)
            self._dynamic[digest] = None
            while len(self._dynamic) > _MAX_DYNAMIC:
                self._dynamic.popitem(last=False)

    def knows(self, lower: bytes, value: bytes) -> bool:
        """Whether this client injected *value* under header *lower* (any entry)."""
        digest = self._digest(lower, value)
        return digest in self._static or digest in self._dynamic


def own_values(plan: HttpxPlan | None) -> dict[bytes, bytes]:
    return _NO_HEADERS if plan is None else plan.own
