"""Applying an entry's credentials to a ``PreparedRequest``, and taking them back off.

An :class:`InjectionPlan` is what the session caches per entry revision: the
header values are computed once (Basic encoding included), so the warm path is a
few dict writes. Every injection returns an :class:`Injected` record naming exactly
what was added, which is what redirects strip before the next hop.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from requests import PreparedRequest
from requests.auth import AuthBase, HTTPDigestAuth

from ._entry import ServiceEntry
from ._exceptions import ConfigurationError
from ._secret import Credential

__all__ = ["Injected", "InjectionPlan", "build_plan", "inject", "strip"]

_AUTHORIZATION = "Authorization"
Hook = Callable[..., Any]


@dataclass(frozen=True, repr=False, eq=False)
class InjectionPlan:
    """Precomputed injection for one revision of one entry. Holds clear values:
    its ``repr`` names headers only."""

    entry: ServiceEntry
    headers: tuple[tuple[str, str], ...]
    auth: AuthBase | None

    @property
    def key(self) -> str:
        return self.entry.url

    def __repr__(self) -> str:
        names = ", ".join(name for name, _ in self.headers)
        return f"<InjectionPlan {self.entry.url} headers=[{names}] auth={type(self.auth).__name__}>"


@dataclass(frozen=True)
class Injected:
    """What one injection added to one request (names only, no values)."""

    key: str
    headers: tuple[str, ...]
    hooks: tuple[Hook, ...] = ()

    def describe(self) -> str:
        return ", ".join(self.headers) or "nothing"


def build_plan(entry: ServiceEntry) -> InjectionPlan:
    """Turn a decrypted entry into ready-to-write headers and an auth handler."""
    headers: list[tuple[str, str]] = []
    auth: AuthBase | None = None
    for credential, mode, names in (
        (entry.gateway, entry.gateway_auth, entry.gateway_headers),
        (entry.request, entry.request_auth, entry.request_headers),
    ):
        if credential is None or mode == "none":
            continue
        if mode == "headers":
            if credential.username:
                headers.append((names[0], credential.username))
            headers.append((names[1], credential.password.reveal()))
        elif mode == "basic":
            headers.append((_AUTHORIZATION, _basic(credential)))
        elif mode == "bearer":
            headers.append((_AUTHORIZATION, "Bearer " + credential.password.reveal()))
        elif mode == "digest":
            auth = HTTPDigestAuth(credential.username, credential.password.reveal())
        else:  # "ntlm"; ServiceEntry admits no other mode
            auth = _ntlm(credential)
    headers.extend((name, value.reveal()) for name, value in entry.secret_headers.items())
    return InjectionPlan(entry, tuple(headers), auth)


def inject(request: PreparedRequest, plan: InjectionPlan, *, caller_auth: bool) -> Injected:
    """Add *plan*'s credentials to *request*. Headers the caller set win; so does
    an ``auth=`` the caller gave (``caller_auth``) over ``Authorization`` modes."""
    present = request.headers
    caller_auth = caller_auth or _AUTHORIZATION in present
    added: list[str] = []
    for name, value in plan.headers:
        if name in present or (caller_auth and name == _AUTHORIZATION):
            continue
        present[name] = value
        added.append(name)
    hooks: tuple[Hook, ...] = ()
    if plan.auth is not None and not caller_auth:
        before = list(request.hooks["response"])
        plan.auth(request)
        hooks = tuple(hook for hook in request.hooks["response"] if hook not in before)
        if _AUTHORIZATION in present:
            added.append(_AUTHORIZATION)
    return Injected(plan.key, tuple(added), hooks)


def strip(request: PreparedRequest, injected: Injected) -> None:
    """Remove from *request* (a redirect's copy) what :func:`inject` added."""
    for name in injected.headers:
        request.headers.pop(name, None)
    for hook in injected.hooks:
        if hook in request.hooks["response"]:
            request.hooks["response"].remove(hook)


def _basic(credential: Credential) -> str:
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
