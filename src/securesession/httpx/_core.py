"""The wire guard for httpx: one :class:`HttpxGuard` per client, shared by its transports.

httpx runs ``auth=`` outside its redirect loop and copies a request's headers to
every redirect hop, so the rule of ``docs/injection.md`` is applied where every
request passes, whoever built it: in the transport, once per request. For each one
the guard

1. looks the request's **own URL** up (:meth:`EntryGuard.plan_for`, or its steps
   :meth:`EntryGuard.match`, ``cached`` and ``load``: the same lookup, cache and
   stale-on-error rule as requests' ``WireGuard``), or, for a URL the transport has
   just served when :meth:`EntryGuard.still_holds` says nothing changed, takes back
   the answer it kept (the transport's warm path);
2. removes every header value this client injected for **any other entry** (or an
   older revision of this one), known from its :class:`~._plan.Ledger`;
3. adds this entry's headers where the request has none of that name (a caller's
   header wins; a caller's ``auth=`` wins over the registry's ``Authorization``);
4. tells the transport whether the entry's challenge handler (Digest, NTLM) should
   answer, and which TLS profile to use.

Redirect chains are followed by the client, hop by hop, each hop a new request that
shares the first one's ``extensions`` dictionary: a :class:`Chain` stored there under
``"securesession"`` carries what a hop must know about the hops before it (an https
to http downgrade: nothing is injected for the rest of the chain) and whether the
caller gave ``auth=`` for it. A hop is recognised by its URL: the one the previous
response's ``Location`` named. Any other request carrying the same chain (an auth
flow sending its first request again, ``client.send(response.request)``) starts a
new chain.
"""

from __future__ import annotations

import logging
import operator
from typing import Final

import httpx

from .._compat import Unpack
from .._entry import ServiceEntry
from .._exceptions import InvalidURLError, NoCredentialsError
from .._guard import (
    EntryGuard,
    EntrySource,
    GuardOptions,
    log_nothing_injected,
    no_entry_message,
)
from .._urls import redacted_url as where
from ._plan import AUTHORIZATION, HttpxPlan, Ledger, build_plan

__all__ = [
    "EXTENSION",
    "REDIRECTS",
    "Chain",
    "HttpxGuard",
    "InvalidRequestURLError",
]

logger = logging.getLogger("securesession")

#: The ``request.extensions`` key of a request's :class:`Chain`.
EXTENSION: Final = "securesession"
#: The statuses httpx follows (with a Location): only their responses make a chain.
REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_NO_HEADERS: Final[dict[bytes, bytes]] = {}
#: The lowercase name of a (raw name, lowercase name, value) header triple; a C-level
#: key, so the set of a request's header names is built without a Python frame.
_LOWER_NAME: Final = operator.itemgetter(1)

# The layout of httpx.Headers this module edits in place: a list of
# (raw name, lowercase name, value) byte triples. Checked once, here.
_probe = httpx.Headers({"X-Probe": "v"})
if getattr(_probe, "_list", None) != [(b"X-Probe", b"x-probe", b"v")]:  # pragma: no cover
    raise ImportError(
        f"securesession.httpx does not support httpx {httpx.__version__}: its Headers "
        "layout changed; install a version the 'httpx' extra names"
    )
del _probe

_Target = tuple[bytes, bytes, int | None, bytes]


class InvalidRequestURLError(InvalidURLError, httpx.InvalidURL):
    """An :class:`InvalidURLError` met while sending: also httpx's ``InvalidURL``, so
    code written for httpx catches it as it would catch httpx's own."""

    def __init__(self, message: str) -> None:
        InvalidURLError.__init__(self, message)


class Chain:
    """What the hops of one redirect chain share (stored in ``request.extensions``).

    ``caller_auth``: the caller gave ``auth=`` for this send (``SecureClient.send``
    sets it; a bare transport cannot know, and treats an ``Authorization`` header it
    did not inject as the caller's). ``downgraded``: an https → http hop happened
    earlier in the chain. ``expect``: the URL the last response redirected to.
    """

    __slots__ = ("caller_auth", "downgraded", "expect", "hop_caller_auth")

    def __init__(self, *, caller_auth: bool = False) -> None:
        self.caller_auth = caller_auth
        self.hop_caller_auth = caller_auth
        self.downgraded = False
        self.expect: _Target | None = None

    def __repr__(self) -> str:
        return f"<Chain caller_auth={self.caller_auth} downgraded={self.downgraded}>"


def _target(url: httpx.URL) -> _Target:
    return (url.raw_scheme, url.raw_host, url.port, url.raw_path)


class HttpxGuard(EntryGuard[HttpxPlan]):
    """Lookups, cache and injection rule of one httpx client (sync or async)."""

    invalid_url_error = InvalidRequestURLError

    def __init__(self, registry: EntrySource, **options: Unpack[GuardOptions]) -> None:
        self.ledger = Ledger()
        super().__init__(registry, **options)

    def _build_plan(self, entry: ServiceEntry) -> HttpxPlan:
        plan = build_plan(entry)
        self.ledger.record_plan(plan)
        return plan

    # -- chains ----------------------------------------------------------------------------

    def begin(self, request: httpx.Request) -> tuple[Chain | None, bool]:
        """The chain *request* belongs to (``None``: a request of its own, no auth= of
        the caller's known), and whether it is a redirect hop of that chain."""
        chain = request.extensions.get(EXTENSION)
        if type(chain) is not Chain:
            return None, False  # a chain is made only when a response redirects
        expect = chain.expect
        chain.expect = None
        if expect is not None and expect == _target(request.url):
            return chain, True
        # Sent anew (an auth flow's next leg, a re-send): the chain it came from is over.
        chain.downgraded = False
        chain.hop_caller_auth = chain.caller_auth
        return chain, False

    def finish(self, request: httpx.Request, response: httpx.Response, chain: Chain | None) -> None:
        """Remember where *response* redirects to, as httpx will compute it."""
        if response.status_code not in REDIRECTS:
            return
        location = response.headers.get("location")
        if location is None:
            return
        if chain is None:
            # httpx gives the next hop a copy of this request's extensions.
            chain = request.extensions[EXTENSION] = Chain()
        current = request.url
        try:
            url = httpx.URL(location)
            if url.scheme and not url.host:
                url = url.copy_with(host=current.host)
            if not url.is_absolute_url:
                url = current.join(url)
        except (httpx.InvalidURL, ValueError):
            return  # httpx refuses to follow it too
        chain.expect = _target(url)
        if current.scheme == "https" and url.scheme == "http":
            chain.downgraded = True
        same_origin = (url.scheme, url.host, url.port) == (
            current.scheme,
            current.host,
            current.port,
        )
        https_upgrade = (  # httpx keeps Authorization on http://h → https://h (default ports)
            current.scheme == "http"
            and url.scheme == "https"
            and current.host == url.host
            and current.port is None
            and url.port is None
        )
        if not same_origin and not https_upgrade:
            # httpx drops the caller's Authorization here; the new origin's entry applies.
            chain.hop_caller_auth = False

    # -- the rule ----------------------------------------------------------------------------

    def admit(
        self,
        request: httpx.Request,
        url: str,
        plan: HttpxPlan | None,
        chain: Chain | None,
        hop: bool,
    ) -> tuple[HttpxPlan | None, bool, bool]:
        """Apply the rule to *request* (its URL *url* matched *plan*; *chain* and *hop*
        from :meth:`begin`), before anything is sent: strict mode, then :meth:`apply`.
        Returns the plan the request is served with (``None`` after an https → http
        hop: nothing is injected, though the entry's TLS profile still applies),
        whether the caller gave ``auth=``, and whether that plan's challenge handler
        should answer."""
        downgraded = hop and chain is not None and chain.downgraded
        if plan is None or downgraded:
            if self.strict:
                raise NoCredentialsError(no_entry_message(url, downgraded))
            if logger.isEnabledFor(logging.DEBUG):
                log_nothing_injected(url, None if plan is None else plan.key)
        served = None if downgraded else plan
        caller_auth = chain is not None and chain.hop_caller_auth
        return served, caller_auth, self.apply(request, served, caller_auth=caller_auth)

    def apply(self, request: httpx.Request, plan: HttpxPlan | None, *, caller_auth: bool) -> bool:
        """Make *request* carry exactly what *plan* injects, and nothing this client
        injected for another plan; return whether *plan*'s challenge handler should
        answer (no ``Authorization`` of the caller's, no ``auth=``)."""
        headers = request.headers
        items: list[tuple[bytes, bytes, bytes]] = headers._list
        own = _NO_HEADERS if plan is None else plan.own
        present = set(map(_LOWER_NAME, items))
        names = self.ledger.names
        if not names.isdisjoint(present):
            knows = self.ledger.knows
            kept = [
                item
                for item in items
                if item[1] not in names
                or own.get(item[1]) == item[2]
                or not knows(item[1], item[2])
            ]
            if len(kept) != len(items):
                if logger.isEnabledFor(logging.DEBUG):
                    dropped = sorted(
                        {item[0].decode("latin-1") for item in items if item not in kept}
                    )
                    logger.debug(
                        "%s: removed %s injected for another entry",
                        where(str(request.url)),
                        ", ".join(sorted(dropped)),
                    )
                items[:] = kept
                present = set(map(_LOWER_NAME, kept))
        if plan is None:
            return False
        if not caller_auth and AUTHORIZATION not in present and present.isdisjoint(own):
            # The common case: none of the plan's headers is there yet.
            items.extend(plan.items)
            if not plan.ascii:
                headers._encoding = None  # a Latin-1 value changes what decodes them
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("entry %s matched; injected %s", plan.key, plan.names or "nothing")
            return plan.auth is not None
        if AUTHORIZATION in present and own.get(AUTHORIZATION) is None:
            caller_auth = True  # an Authorization header of the caller's own
        added: list[bytes] = []
        for item in plan.items:
            lower = item[1]
            if lower in present or (caller_auth and lower == AUTHORIZATION):
                continue
            items.append(item)
            added.append(item[0])
        if added and not plan.ascii:
            headers._encoding = None  # a Latin-1 value changes what decodes them
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "entry %s matched; injected %s",
                plan.key,
                ", ".join(name.decode("latin-1") for name in added) or "nothing",
            )
        return plan.auth is not None and not caller_auth

    def note_answer(self, request: httpx.Request) -> None:
        """Record the ``Authorization`` a challenge handler put on *request*."""
        for _, lower, value in request.headers._list:
            if lower == AUTHORIZATION:
                self.ledger.record_answer(value)
