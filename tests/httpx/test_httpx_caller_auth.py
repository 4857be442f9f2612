"""The caller's ``auth=`` through ``SecureClient.send``: given per call or on the client,
removed per call, or taken from the URL's user information; and the 401 refresh
retrying once only."""

from __future__ import annotations

import httpx
import pytest

from securesession import Credential, Registry, ServiceEntry
from securesession.httpx import SecureAsyncClient, SecureClient
from securesession.registry import EntryRef
from securesession.testing import GatewayServer

from .httpx_helpers import tagged, tags_seen, text_of


def test_a_digest_auth_on_the_client_is_not_preempted_by_the_registry(
    registry: Registry,
) -> None:
    """The first leg of the caller's own Digest flow carries no Authorization yet: the
    client (not the transport, which cannot tell) knows it is the caller's."""
    with GatewayServer(expect_digest=("caller", "caller-SECRET")) as server:
        registry.put(tagged(server.url + "/svc", "cd"))
        auth = httpx.DigestAuth("caller", "caller-SECRET")
        with SecureClient(registry, auth=auth) as client:
            assert client.get(server.url + "/svc/x").status_code == 200
        legs = server.requests
    assert [leg.status for leg in legs] == [401, 200]
    assert legs[0].header("Authorization") is None
    assert legs[1].authenticated_user == "caller"
    assert all(tags_seen(leg, ["cd"]) == {"cd"} for leg in legs)  # gateway headers still


@pytest.mark.anyio
async def test_a_digest_auth_on_the_async_client_is_not_preempted_by_the_registry(
    registry: Registry,
) -> None:
    with GatewayServer(expect_digest=("caller", "caller-SECRET")) as server:
        registry.put(tagged(server.url + "/svc", "ad"))
        auth = httpx.DigestAuth("caller", "caller-SECRET")
        async with SecureAsyncClient(registry, auth=auth) as client:
            assert (await client.get(server.url + "/svc/x")).status_code == 200
        legs = server.requests
    assert [leg.status for leg in legs] == [401, 200]
    assert legs[1].authenticated_user == "caller"


def test_auth_none_on_a_call_lets_the_registry_in_over_the_clients_auth(
    registry: Registry, plain_server: GatewayServer
) -> None:
    registry.put(tagged(plain_server.url + "/svc", "an"))
    plain_server.expect_request = ("an-rq-user", "an-rq-SECRET")
    with SecureClient(registry, auth=("caller", "caller-SECRET")) as client:
        assert client.get(plain_server.url + "/svc/x", auth=None).status_code == 200
        assert client.get(plain_server.url + "/svc/y").status_code == 401
    first, second = plain_server.requests
    assert first.authenticated_user == "an-rq-user"
    assert tags_seen(first, ["an"]) == {"an"}
    # Without auth=None the client's auth wins: the caller's Basic, the gateway headers.
    assert "caller:caller-SECRET" in text_of(second.headers)
    assert "an-rq-user" not in text_of(second.headers)
    assert second.header("X-Gateway-User") == "an-gw-user"


@pytest.mark.anyio
async def test_user_information_of_a_url_without_entry_is_sent_as_httpx_sends_it(
    registry: Registry, plain_server: GatewayServer
) -> None:
    """No entry, no auth=: httpx's own Basic from ``user:password@`` (the client
    passes httpx's no-op auth only for URLs without user information)."""
    # Not a "-SECRET" marker: httpx logs the URL, user information included, at INFO.
    plain_server.expect_request = ("url-user", "url-pass")
    url = plain_server.url.replace("://", "://url-user:url-pass@") + "/free/x"
    with SecureClient(registry) as client:
        assert client.get(url).status_code == 200
        assert client.get(plain_server.url + "/free/y").status_code == 401
    async with SecureAsyncClient(registry) as async_client:
        assert (await async_client.get(url)).status_code == 200
    statuses = [(r.status, r.authenticated_user) for r in plain_server.requests]
    assert statuses == [(200, "url-user"), (401, None), (200, "url-user")]


class _RotatingRegistry:
    """A registry whose entry changes after every load (another process rotating the
    credentials again and again): every 401 finds new credentials."""

    def __init__(self, inner: Registry, url: str) -> None:
        self.inner = inner
        self.url = url
        self.loads = 0

    def lookup(self, url: str) -> EntryRef | None:
        return self.inner.lookup(url)

    def load(self, ref: EntryRef) -> ServiceEntry | None:
        entry = self.inner.load(ref)
        self.loads += 1
        user = f"rotated{self.loads}"
        self.inner.put(ServiceEntry(url=self.url, request=Credential(user, "rotated-SECRET")))
        return entry


@pytest.fixture
def rotating(registry: Registry, plain_server: GatewayServer) -> _RotatingRegistry:
    """An entry whose credentials change at every load, on a server that takes none."""
    plain_server.expect_request = ("nobody", "nobody-SECRET")
    url = plain_server.url + "/svc"
    registry.put(ServiceEntry(url=url, request=Credential("first", "first-SECRET")))
    return _RotatingRegistry(registry, url)


def _retried_once(rotating: _RotatingRegistry, server: GatewayServer) -> None:
    sent = [(r.status, text_of(r.headers)) for r in server.requests]
    assert [status for status, _ in sent] == [401, 401]  # the first try, and one retry
    assert "first:first-SECRET" in sent[0][1] and "rotated1:rotated-SECRET" in sent[1][1]
    assert rotating.loads == 2


def test_a_401_is_retried_once_even_when_the_credentials_keep_changing(
    rotating: _RotatingRegistry, plain_server: GatewayServer
) -> None:
    with SecureClient(rotating) as client:
        assert client.get(rotating.url + "/x").status_code == 401
    _retried_once(rotating, plain_server)


@pytest.mark.anyio
async def test_an_async_401_is_retried_once_even_when_the_credentials_keep_changing(
    rotating: _RotatingRegistry, plain_server: GatewayServer
) -> None:
    async with SecureAsyncClient(rotating) as client:
        assert (await client.get(rotating.url + "/x")).status_code == 401
    _retried_once(rotating, plain_server)
