"""One small interface over the three front-ends, so that one test states one behaviour
for all of them: ``SecureSession`` (requests), ``SecureClient`` (httpx) and
``SecureAsyncClient`` (httpx, driven from the test through an anyio blocking portal,
so the async client runs on a real event loop in its own thread).

Only what the behaviour suite needs: GET with headers, ``auth=`` and redirects on or
off, the final request's headers (to pass on to another call), the cache counters.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import requests
from anyio.from_thread import BlockingPortal
from requests.auth import HTTPDigestAuth

from securesession import CacheInfo, SecureSession
from securesession.httpx import SecureAsyncClient, SecureClient

KINDS = ("requests", "httpx", "httpx-async")

#: ``("basic", user, password)`` or ``("digest", user, password)``: the caller's auth=.
CallerAuth = tuple[str, str, str]


@dataclass
class Reply:
    status: int
    #: Redirect hops followed (requests also counts a refreshed 401; see refresh tests).
    redirects: int
    #: The headers object of the last request sent, as the library exposes it.
    request_headers: Any
    #: The last request's headers as a plain ``dict`` of ``str`` (a caller's copy).
    request_dict: dict[str, str]


class Client(Protocol):
    kind: str

    def get(
        self,
        url: str,
        *,
        headers: Any = None,
        auth: CallerAuth | None = None,
        follow: bool = True,
    ) -> Reply: ...

    def cache_info(self) -> CacheInfo: ...

    def close(self) -> None: ...


class RequestsClient:
    kind = "requests"

    def __init__(self, registry: Any, *, ca_file: str | None, **options: Any) -> None:
        self.session = SecureSession(registry, **options)
        self._verify: str | bool = ca_file or True

    def get(
        self,
        url: str,
        *,
        headers: Any = None,
        auth: CallerAuth | None = None,
        follow: bool = True,
    ) -> Reply:
        caller: Any = None
        if auth is not None:
            kind, user, password = auth
            caller = (user, password) if kind == "basic" else HTTPDigestAuth(user, password)
        response = self.session.get(
            url, headers=headers, auth=caller, allow_redirects=follow, verify=self._verify
        )
        return _requests_reply(response)

    def cache_info(self) -> CacheInfo:
        return self.session.cache_info()

    def close(self) -> None:
        self.session.close()


def _requests_reply(response: requests.Response) -> Reply:
    request = response.request
    redirects = sum(1 for r in response.history if r.is_redirect)
    return Reply(response.status_code, redirects, request.headers, dict(request.headers))


def _httpx_auth(auth: CallerAuth | None) -> Any:
    if auth is None:
        return httpx.USE_CLIENT_DEFAULT
    kind, user, password = auth
    return (user, password) if kind == "basic" else httpx.DigestAuth(user, password)


def _httpx_reply(response: httpx.Response) -> Reply:
    request = response.request
    return Reply(
        response.status_code,
        len(response.history),
        request.headers,
        dict(request.headers),
    )


def _context(ca_file: str | None) -> ssl.SSLContext | bool:
    return ssl.create_default_context(cafile=ca_file) if ca_file else True


class HttpxClient:
    kind = "httpx"

    def __init__(self, registry: Any, *, ca_file: str | None, **options: Any) -> None:
        self.client = SecureClient(registry, verify=_context(ca_file), **options)

    def get(
        self,
        url: str,
        *,
        headers: Any = None,
        auth: CallerAuth | None = None,
        follow: bool = True,
    ) -> Reply:
        response = self.client.get(
            url, headers=headers, auth=_httpx_auth(auth), follow_redirects=follow
        )
        return _httpx_reply(response)

    def cache_info(self) -> CacheInfo:
        return self.client.cache_info()

    def close(self) -> None:
        self.client.close()


class AsyncHttpxClient:
    kind = "httpx-async"

    def __init__(
        self, registry: Any, *, ca_file: str | None, portal: BlockingPortal, **options: Any
    ) -> None:
        self.portal = portal
        self.client = SecureAsyncClient(registry, verify=_context(ca_file), **options)

    def get(
        self,
        url: str,
        *,
        headers: Any = None,
        auth: CallerAuth | None = None,
        follow: bool = True,
    ) -> Reply:
        call = functools.partial(
            self.client.get, url, headers=headers, auth=_httpx_auth(auth), follow_redirects=follow
        )
        response: httpx.Response = self.portal.call(call)
        return _httpx_reply(response)

    def cache_info(self) -> CacheInfo:
        return self.client.cache_info()

    def close(self) -> None:
        self.portal.call(self.client.aclose)


#: ``make(registry, ca_file=..., **options)`` for one front-end.
Factory = Callable[..., Client]


def factory(kind: str, portal: BlockingPortal) -> Factory:
    def make(registry: Any, *, ca_file: str | None = None, **options: Any) -> Client:
        if kind == "requests":
            return RequestsClient(registry, ca_file=ca_file, **options)
        if kind == "httpx":
            return HttpxClient(registry, ca_file=ca_file, **options)
        return AsyncHttpxClient(registry, ca_file=ca_file, portal=portal, **options)

    return make
