"""Where no entry matches, a SecureSession behaves as requests does: what requests'
own test suite asks of a stand-in (it runs in CI through .ci/requests-suite)."""

from __future__ import annotations

import base64

import pytest
import requests
from requests.adapters import HTTPAdapter

from securesession import Credential, InvalidURLError, Registry, SecureSession, ServiceEntry
from securesession.testing import GatewayServer


def test_user_information_without_an_entry_is_sent_as_requests_sends_it(
    session: SecureSession, server: GatewayServer
) -> None:
    host = server.url.partition("://")[2]
    assert session.get(f"http://url-user:url-pw@{host}/open").status_code == 200
    expected = "Basic " + base64.b64encode(b"url-user:url-pw").decode()
    assert server.requests[0].header("Authorization") == expected


def test_user_information_on_a_url_with_an_entry_is_refused(
    session: SecureSession, registry: Registry, server: GatewayServer
) -> None:
    registry.put(ServiceEntry(url=server.url + "/svc", gateway=Credential("g", "g-SECRET")))
    host = server.url.partition("://")[2]
    with pytest.raises(InvalidURLError, match="user information") as caught:
        session.get(f"http://url-user:url-SECRET@{host}/svc/x")
    assert isinstance(caught.value, requests.exceptions.InvalidURL)
    assert "url-SECRET" not in str(caught.value)
    assert server.requests == []


def test_a_bad_redirect_target_is_requests_invalid_url(
    session: SecureSession, server: GatewayServer
) -> None:
    server.redirect("/bad", "http://:1/")
    with pytest.raises(requests.exceptions.InvalidURL) as caught:
        session.get(server.url + "/bad")
    assert isinstance(caught.value, InvalidURLError)


def test_close_closes_each_adapter_once(registry: Registry) -> None:
    closes: list[str] = []

    class Counting(HTTPAdapter):
        def close(self) -> None:
            closes.append("other")
            super().close()

    session = SecureSession(registry)
    original = session.adapter.close

    def counting_close() -> None:
        closes.append("secure")
        original()

    session.adapter.close = counting_close  # type: ignore[method-assign]
    other = Counting()
    session.mount("http://a.example/", other)
    session.mount("http://b.example/", other)
    session.close()
    assert sorted(closes) == ["other", "secure"]
