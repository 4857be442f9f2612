"""``responses`` and ``requests-mock`` replace the transport; credentials are injected in
``SecureSession.send`` before it, so both mocks see exactly what the wire would."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import requests
import requests_mock
import responses
from responses import matchers

from securesession import (
    ClientCertificate,
    ClientCertificateExpiredError,
    SecureSession,
    TLSConfigError,
    TLSProfile,
)
from securesession.testing import CertificateAuthority, StubRegistry

API = "https://svc.test/api/"
ENTRIES: dict[str, dict[str, Any]] = {  # ServiceEntry keyword arguments per URL
    API: {
        "gateway": ("gw", "gw-SECRET"),
        "request": ("u", "u-SECRET"),
        "secret_headers": {"X-Api-Key": "api-SECRET"},
    },
    "https://tokens.test/": {"request": "tok-SECRET", "request_auth": "bearer"},
}
BASIC = "Basic " + base64.b64encode(b"u:u-SECRET").decode()


@pytest.fixture
def registry() -> Iterator[StubRegistry]:
    with StubRegistry(ENTRIES) as registry:
        yield registry


@pytest.fixture
def session(registry: StubRegistry) -> Iterator[SecureSession]:
    with SecureSession(registry) as session:
        yield session


def _injected(headers: requests.structures.CaseInsensitiveDict[str]) -> dict[str, str | None]:
    names = ("X-Gateway-User", "X-Gateway-Password", "Authorization", "X-Api-Key")
    return {name: headers.get(name) for name in names}


EXPECTED = {
    "X-Gateway-User": "gw",
    "X-Gateway-Password": "gw-SECRET",
    "Authorization": BASIC,
    "X-Api-Key": "api-SECRET",
}
NOTHING = dict.fromkeys(EXPECTED)


# -- responses ---------------------------------------------------------------------------


def test_responses_sees_the_injected_credentials(
    session: SecureSession, registry: StubRegistry
) -> None:
    with responses.RequestsMock() as mock:
        mock.get(API + "orders/7", json={"id": 7})
        mock.get("https://public.test/", body="hi")
        assert session.get(API + "orders/7").json() == {"id": 7}
        session.get("https://public.test/")
        assert _injected(mock.calls[0].request.headers) == EXPECTED
        assert _injected(mock.calls[1].request.headers) == NOTHING
    registry.assert_used(API, times=1)
    assert registry.misses == ["https://public.test/"]


def test_responses_header_matcher_answers_only_injected_requests(session: SecureSession) -> None:
    with responses.RequestsMock() as mock:
        mock.get(
            "https://tokens.test/me",
            json={"user": "me"},
            match=[matchers.header_matcher({"Authorization": "Bearer tok-SECRET"})],
        )
        assert session.get("https://tokens.test/me").json() == {"user": "me"}
        with pytest.raises(requests.ConnectionError):  # the plain session injects nothing
            requests.get("https://tokens.test/me", timeout=5)


@responses.activate
def test_responses_activate_decorator_patches_secure_sessions_too(session: SecureSession) -> None:
    responses.get(API + "x", status=204)
    assert session.get(API + "x").status_code == 204
    assert responses.calls[0].request.headers["X-Gateway-User"] == "gw"


def test_responses_redirect_to_another_origin_carries_no_credentials(
    session: SecureSession,
) -> None:
    with responses.RequestsMock() as mock:
        mock.get(API + "old", status=302, headers={"Location": "https://elsewhere.test/new"})
        mock.get("https://elsewhere.test/new", body="moved")
        assert session.get(API + "old").text == "moved"
        first, second = mock.calls
        assert _injected(first.request.headers) == EXPECTED
        assert _injected(second.request.headers) == NOTHING


# -- requests-mock -----------------------------------------------------------------------


def test_requests_mock_mocker_sees_the_injected_credentials(session: SecureSession) -> None:
    with requests_mock.Mocker() as mock:
        mock.get(API + "orders/7", json={"id": 7})
        mock.get("https://public.test/", text="hi")
        assert session.get(API + "orders/7").json() == {"id": 7}
        assert _injected(mock.last_request.headers) == EXPECTED
        session.get("https://public.test/")
        assert _injected(mock.last_request.headers) == NOTHING
        assert mock.call_count == 2


def test_requests_mock_fixture_and_request_headers_matcher(
    requests_mock: requests_mock.Mocker, session: SecureSession
) -> None:
    requests_mock.get(
        "https://tokens.test/me",
        json={"user": "me"},
        request_headers={"Authorization": "Bearer tok-SECRET"},
    )
    assert session.get("https://tokens.test/me").json() == {"user": "me"}
    assert requests_mock.called_once


def test_requests_mock_adapter_mounted_on_the_session(
    session: SecureSession, registry: StubRegistry
) -> None:
    adapter = requests_mock.Adapter()
    adapter.register_uri("POST", API + "orders", status_code=201)
    session.mount("https://svc.test/", adapter)  # replaces the transport for this host only
    assert session.post(API + "orders", json={"n": 1}).status_code == 201
    (sent,) = adapter.request_history
    assert _injected(sent.headers) == EXPECTED
    assert sent.json() == {"n": 1}
    registry.assert_used(API, times=1)


def test_a_caller_header_still_wins_under_a_mock(session: SecureSession) -> None:
    with requests_mock.Mocker() as mock:
        mock.get(API + "x")
        session.get(API + "x", headers={"X-Api-Key": "mine-SECRET"})
        assert mock.last_request.headers["X-Api-Key"] == "mine-SECRET"
        assert mock.last_request.headers["X-Gateway-User"] == "gw"


# -- entries with a TLS profile ----------------------------------------------------------
#
# What each mock does with an entry whose TLSProfile only SecureAdapter can apply
# (docs/testing.md, "Entries with a TLS profile").

PFX_PASSWORD = "pfx-SECRET"


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority()


def _tls_registry(ca: CertificateAuthority, *, days: float = 365) -> StubRegistry:
    now = datetime.now(timezone.utc)
    issued = ca.issue_client("mocked-client", not_after=now + timedelta(days=days))
    profile = TLSProfile(
        client_cert=ClientCertificate.from_pkcs12(
            issued.pkcs12(PFX_PASSWORD.encode()), PFX_PASSWORD
        ),
        ca_bundle=ca.cert_pem,
    )
    return StubRegistry({API: {**ENTRIES[API], "tls": profile}})


def test_responses_under_a_tls_profile_entry_loads_the_profile(ca: CertificateAuthority) -> None:
    """responses patches HTTPAdapter.send, below SecureAdapter.send: the profile's context
    is built (certificate decrypted and loaded, expiry checked) and only the network is
    replaced."""
    with SecureSession(_tls_registry(ca)) as session, responses.RequestsMock() as mock:
        mock.get(API + "orders/7", json={"id": 7})
        assert session.get(API + "orders/7").json() == {"id": 7}
        assert _injected(mock.calls[0].request.headers) == EXPECTED


def test_responses_under_a_tls_profile_entry_refuses_an_expired_certificate(
    ca: CertificateAuthority, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        SecureSession(_tls_registry(ca, days=-1)) as session,
        responses.RequestsMock(assert_all_requests_are_fired=False) as mock,
    ):
        mock.get(API + "orders/7", json={"id": 7})
        with pytest.raises(ClientCertificateExpiredError, match="has expired; nothing was sent"):
            session.get(API + "orders/7")
        assert not mock.calls
    with (
        caplog.at_level(logging.WARNING, logger="securesession"),
        SecureSession(_tls_registry(ca, days=10)) as session,
        responses.RequestsMock() as mock,
    ):
        mock.get(API + "orders/7", json={"id": 7})
        session.get(API + "orders/7")
    assert any("expires in 10 day(s)" in r.getMessage() for r in caplog.records)


def test_requests_mock_mocker_under_a_tls_profile_entry_skips_the_profile(
    ca: CertificateAuthority,
) -> None:
    """The Mocker swaps the adapter inside requests.Session.send, after SecureSession
    has checked it: credentials are injected, the profile is never loaded (an expired
    certificate goes unnoticed)."""
    with (
        SecureSession(_tls_registry(ca, days=-1)) as session,
        requests_mock.Mocker() as mock,
    ):
        mock.get(API + "orders/7", json={"id": 7})
        assert session.get(API + "orders/7").json() == {"id": 7}
        assert _injected(mock.last_request.headers) == EXPECTED


def test_requests_mock_fixture_under_a_tls_profile_entry(
    requests_mock: requests_mock.Mocker, ca: CertificateAuthority
) -> None:
    requests_mock.get(API + "orders/7", json={"id": 7})
    with SecureSession(_tls_registry(ca)) as session:
        assert session.get(API + "orders/7").json() == {"id": 7}
    assert requests_mock.last_request is not None
    assert _injected(requests_mock.last_request.headers) == EXPECTED


def test_requests_mock_adapter_mounted_over_a_tls_profile_entry_is_refused(
    ca: CertificateAuthority,
) -> None:
    """As in production: a mounted adapter that is not a SecureAdapter cannot apply the
    profile, so nothing is sent. The same adapter serves an entry without tls=."""
    adapter = requests_mock.Adapter()
    adapter.register_uri("GET", API + "orders/7", json={"id": 7})
    with SecureSession(_tls_registry(ca)) as session:
        session.mount("https://svc.test/", adapter)
        with pytest.raises(TLSConfigError, match=r"not a SecureAdapter.*nothing was sent"):
            session.get(API + "orders/7")
    assert adapter.request_history == []
    with StubRegistry(ENTRIES) as registry, SecureSession(registry) as session:
        session.mount("https://svc.test/", adapter)
        assert session.get(API + "orders/7").json() == {"id": 7}
    assert adapter.last_request is not None
    assert _injected(adapter.last_request.headers) == EXPECTED
