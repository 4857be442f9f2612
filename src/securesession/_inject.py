"""Injected values that remember their entry, and the one step that puts them on a request.

An :class:`InjectionPlan` is what the session caches per entry revision: the header
values are computed once (Basic encoding included) as :class:`Tagged` strings that
remember the plan they belong to. Header dictionaries copied from a request (by a
redirect, an auth handler's second leg, ``request.copy()``, or a caller passing
``response.request.headers`` to another call) keep those very objects, so
:func:`apply_plan` can tell, on any request whoever built it, which values were
injected for which entry: every value of another plan (another entry, or an older
revision of this one) is removed, and this plan's values are added where the caller
set none of their own.

Auth handlers that answer challenges (Digest, NTLM) are wrapped in
:class:`EntryBoundAuth`: their response hooks act only on responses to URLs of
their own entry, and the ``Authorization`` values they compute are tagged too.
"""

from __future__ import annotations

import base64
import contextvars
from collections.abc import Callable
from typing import Any, Final, NamedTuple

from requests import PreparedRequest, Response
from requests.auth import AuthBase, HTTPDigestAuth

from ._entry import ServiceEntry
from ._exceptions import ConfigurationError
from ._secret import Credential

__all__ = [
    "Challenge",
    "EntryBoundAuth",
    "InjectionPlan",
    "Tagged",
    "apply_plan",
    "build_plan",
    "entry_headers",
    "injected_by",
]

AUTHORIZATION: Final = "Authorization"
Hook = Callable[..., Any]
#: Answers "does this response come from a URL that *plan*'s entry governs?"
Ownership = Callable[["InjectionPlan", Response], bool]

# The plan whose auth handler is answering a challenge right now (in this thread or
# task): the leg it sends carries an Authorization header computed from the entry's
# secret, which the guard then tags as that plan's.
answering: contextvars.ContextVar[InjectionPlan | None] = contextvars.ContextVar(
    "securesession_answering", default=None
)


class Tagged(str):
    """A header value injected for one :class:`InjectionPlan`.

    It is the clear value (it goes on the wire as is) plus the plan it came from.
    Copies keep the tag (``copy`` and ``deepcopy`` return the same object); pickling
    gives a plain ``str``, since a plan cannot cross a process boundary.
    """

    plan: InjectionPlan

    def __new__(cls, value: str, plan: InjectionPlan) -> Tagged:
        tagged = super().__new__(cls, value)
        tagged.plan = plan
        return tagged

    def __reduce__(self) -> tuple[type[str], tuple[str]]:
        return str, (str.__str__(self),)

    def __copy__(self) -> Tagged:
        return self

    def __deepcopy__(self, memo: object) -> Tagged:
        return self


def injected_by(value: object) -> ServiceEntry | None:
    """The entry a header value was injected for, or ``None`` for any other value.

    For code that stores or exports headers (caches, recorders, log filters): a value
    the registry injected must never be written out, whatever its header's name."""
    return value.plan.entry if type(value) is Tagged else None


class InjectionPlan:
    """Precomputed injection for one revision of one entry. Holds clear values:
    its ``repr`` names headers only."""

    __slots__ = ("auth", "entry", "headers")

    def __init__(
        self,
        entry: ServiceEntry,
        headers: tuple[tuple[str, Tagged], ...] = (),
        auth: EntryBoundAuth | None = None,
    ) -> None:
        self.entry = entry
        self.headers = headers
        self.auth = auth

    @property
    def key(self) -> str:
        return self.entry.url

    def __repr__(self) -> str:
        names = ", ".join(name for name, _ in self.headers)
        inner = None if self.auth is None else type(self.auth.inner).__name__
        return f"<InjectionPlan {self.entry.url} headers=[{names}] auth={inner}>"


class EntryBoundAuth(AuthBase):
    """A challenge-answering auth handler that serves one entry only.

    *inner* (``HTTPDigestAuth``, ``HttpNtlmAuth``) registers response hooks when it is
    applied; each is wrapped so that it runs only when *owns* says the response's
    URL is governed by this plan's entry (so a redirect to another origin is never
    answered with a hash of this entry's password), and so that the leg it sends is
    known to carry this entry's secret.
    """

    def __init__(self, inner: AuthBase, owns: Ownership) -> None:
        self.inner = inner
        self._owns = owns
        self.plan: InjectionPlan | None = None
        self._bound: dict[Hook, _BoundHook] = {}

    def __call__(self, request: PreparedRequest) -> PreparedRequest:
        plan = self.plan
        assert plan is not None, "EntryBoundAuth is applied only through its plan"
        hooks = request.hooks["response"]
        before = len(hooks)
        self.inner(request)
        for index in range(before, len(hooks)):
            hook = hooks[index]
            bound = self._bound.get(hook)
            if bound is None:
                bound = self._bound.setdefault(hook, _BoundHook(hook, plan, self._owns))
            hooks[index] = bound
        value = request.headers.get(AUTHORIZATION)
        if value is not None and type(value) is not Tagged:
            request.headers[AUTHORIZATION] = Tagged(value, plan)
        return request


class _BoundHook:
    """A response hook of an :class:`EntryBoundAuth` handler."""

    __slots__ = ("_hook", "_owns", "plan")

    def __init__(self, hook: Hook, plan: InjectionPlan, owns: Ownership) -> None:
        self._hook = hook
        self.plan = plan
        self._owns = owns

    def __call__(self, response: Response, **kwargs: Any) -> Any:
        if not self._owns(self.plan, response):
            return response
        token = answering.set(self.plan)
        try:
            return self._hook(response, **kwargs)
        finally:
            answering.reset(token)


class Challenge(NamedTuple):
    """An entry's challenge scheme: ``digest`` or ``ntlm``, and its credential."""

    mode: str
    credential: Credential


def entry_headers(entry: ServiceEntry) -> tuple[list[tuple[str, str]], Challenge | None]:
    """What *entry* injects, for every HTTP front-end: its headers as (name, clear
    value) pairs in the order they are added (the gateway credential's, the request
    credential's, then the secret headers), and the mode and credential of its
    challenge scheme (``digest`` or ``ntlm``) if it has one, whose handler each
    front-end builds with its HTTP library."""
    headers: list[tuple[str, str]] = []
    challenge: Challenge | None = None
    for credential, mode, names in (
        (entry.gateway, entry.gateway_auth, entry.gateway_headers),
        (entry.request, entry.request_auth, entry.request_headers),
    ):
        if credential is None or mode in ("none", "wsse"):  # "wsse": never sent as HTTP
            continue
        if mode == "headers":
            if credential.username:
                headers.append((names[0], credential.username))
            headers.append((names[1], credential.password.reveal()))
        elif mode == "basic":
            headers.append((AUTHORIZATION, _basic(credential)))
        elif mode == "bearer":
            headers.append((AUTHORIZATION, "Bearer " + credential.password.reveal()))
        elif mode in ("digest", "ntlm"):
            challenge = Challenge(mode, credential)
        else:  # pragma: no cover - ServiceEntry admits no other mode
            raise ConfigurationError(f"entry {entry.url}: injection mode {mode!r} is not supported")
    headers.extend((name, value.reveal()) for name, value in entry.secret_headers.items())
    return headers, challenge


def build_plan(entry: ServiceEntry, owns: Ownership) -> InjectionPlan:
    """Turn a decrypted entry into ready-to-write tagged headers and a bound auth handler."""
    plan = InjectionPlan(entry)
    headers, challenge = entry_headers(entry)
    if challenge is not None:
        credential = challenge.credential
        handler: AuthBase = (
            HTTPDigestAuth(credential.username, credential.password.reveal())
            if challenge.mode == "digest"
            else _ntlm(credential)
        )
        plan.auth = EntryBoundAuth(handler, owns)
        plan.auth.plan = plan
    plan.headers = tuple((name, Tagged(value, plan)) for name, value in headers)
    return plan


def apply_plan(
    request: PreparedRequest,
    plan: InjectionPlan | None,
    *,
    caller_auth: bool,
    run_auth: bool,
) -> None:
    """Make *request* carry exactly what *plan* injects, and nothing of another plan.

    * A :class:`Tagged` value of any other plan is removed (``plan=None``: all of them).
    * Each of *plan*'s headers is added unless the request has that header from the
      caller (an untagged value); ``Authorization`` is not added when the caller gave
      ``auth=`` (*caller_auth*) or an ``Authorization`` header of their own.
    * With *run_auth*, the plan's challenge handler is applied, after any bound hook
      of another plan was dropped. Auth-handler legs (*run_auth* false) keep the
      hooks they were sent with; an ``Authorization`` value computed while *plan*'s
      handler answers a challenge is tagged as *plan*'s.
    """
    headers = request.headers
    foreign = [
        name
        for name, value in headers.items()
        if type(value) is Tagged and (plan is None or value.plan is not plan)
    ]
    for name in foreign:
        del headers[name]
    if run_auth:
        hooks = request.hooks["response"]
        if any(type(hook) is _BoundHook for hook in hooks):
            hooks[:] = [hook for hook in hooks if type(hook) is not _BoundHook]
    if plan is None:
        return
    current = headers.get(AUTHORIZATION)
    if current is not None and type(current) is not Tagged:
        if not run_auth and answering.get() is plan:
            headers[AUTHORIZATION] = Tagged(current, plan)
        else:
            caller_auth = True
    for name, value in plan.headers:
        if name in headers or (caller_auth and name == AUTHORIZATION):
            continue
        headers[name] = value
    if run_auth and plan.auth is not None and not caller_auth:
        plan.auth(request)


def _basic(credential: Credential) -> str:
    # RFC 7617 charset="UTF-8": user name and password are UTF-8 before base64.
    raw = f"{credential.username}:{credential.password.reveal()}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def _ntlm(credential: Credential) -> AuthBase:
    try:
        from requests_ntlm import HttpNtlmAuth
    except ImportError:
        raise ConfigurationError(
            "ntlm injection needs the 'ntlm' extra: pip install 'securesession[ntlm]'"
        ) from None
    handler: AuthBase = HttpNtlmAuth(credential.username, credential.password.reveal())
    return handler
