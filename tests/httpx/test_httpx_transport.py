"""securesession.httpx as httpx users compose it: the transport on a client of one's own,
mounts and proxies routed through the guard, the testing transports (MockTransport,
respx), TLS failures explained as with requests."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from typing import TypeAlias

import anyio
import httpx
import pytest
import respx

from securesession import (
    ClientCertificateRequiredError,
    ConfigurationError,
    Credential,
    PinMismatchError,
    ProtocolVersionMismatchError,
    Registry,
    SecureSessionError,
    ServerCertificateError,
    ServiceEntry,
    TLSConfigError,
    TLSProfile,
)
from securesession.httpx import (
    AsyncSecureTransport,
    InvalidRequestURLError,
    SecureAsyncClient,
    SecureClient,
    SecureTransport,
)
from securesession.testing import CertificateAuthority, GatewayServer

from .httpx_helpers import ConnectProxy, profile, tagged, tags_in, tags_seen

# -- the transport on a client of one's own ----------------------------------------------


def test_a_plain_client_with_the_transport_is_guarded_hop_by_hop(
    registry: Registry, plain_server: GatewayServer, tls_server: GatewayServer
) -> None:
    registry.put(tagged(tls_server.url + "/a", "ta", tls=profile(tls_server.ca, "mine")))  # type: ignore[arg-type]
    tls_server.redirect("/a/go", plain_server.url + "/landing")
    with httpx.Client(transport=SecureTransport(registry), follow_redirects=True) as client:
        response = client.get(tls_server.url + "/a/go")
    assert response.status_code == 200
    (first,) = tls_server.requests
    assert first.client_cert_subject_cn == "mine"
    assert tags_seen(first, ["ta"]) == {"ta"}
    (landing,) = plain_server.requests
    assert tags_seen(landing, ["ta"]) == set()


def test_a_secure_transport_cannot_wrap_another(registry: Registry) -> None:
    with pytest.raises(ConfigurationError, match="already a securesession transport"):
        SecureTransport(registry, transport=SecureTransport(registry))


def test_mounted_transports_are_guarded_too(
    registry: Registry, plain_server: GatewayServer
) -> None:
    """A redirect into a URL served by a mounted transport carries nothing of the
    entry it comes from."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"mounted": True})

    registry.put(tagged(plain_server.url + "/a", "mt"))
    plain_server.redirect("/a/go", "http://mounted.test/landing")
    with SecureClient(
        registry,
        follow_redirects=True,
        mounts={"http://mounted.test": httpx.MockTransport(handler)},
    ) as client:
        assert client.get(plain_server.url + "/a/go").json() == {"mounted": True}
    (request,) = seen
    assert tags_in(dict(request.headers), ["mt"]) == set()
    assert "authorization" not in request.headers


def test_env_proxies_and_proxy_are_guarded_routes(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "internal.test")
    with SecureClient(registry) as client:
        routes = list(client._mounts.values())
        assert routes and all(r is None or isinstance(r, SecureTransport) for r in routes)
        assert isinstance(client._transport, SecureTransport)
    with SecureClient(registry, proxy="http://127.0.0.1:9") as client:
        assert all(isinstance(r, SecureTransport) for r in client._mounts.values())
    client_async = SecureAsyncClient(registry, proxy="http://127.0.0.1:9")
    assert all(isinstance(r, AsyncSecureTransport) for r in client_async._mounts.values())


def test_pins_are_checked_inside_a_proxy_tunnel(
    registry: Registry, tls_server: GatewayServer
) -> None:
    assert tls_server.server_cert is not None and tls_server.ca is not None
    good = (tls_server.server_cert.spki_sha256_pin,)
    bad = ("sha256/" + "B" * 43 + "=",)
    registry.put(
        tagged(tls_server.url + "/good", "pg", tls=profile(tls_server.ca, "px", pins=good))
    )
    registry.put(tagged(tls_server.url + "/bad", "pb", tls=profile(tls_server.ca, "px", pins=bad)))
    proxy = ConnectProxy()
    try:
        with SecureClient(registry, proxy=proxy.url) as client:
            assert client.get(tls_server.url + "/good/x").status_code == 200
            with pytest.raises(PinMismatchError):
                client.get(tls_server.url + "/bad/x")
    finally:
        proxy.close()
    assert proxy.tunnels == [tls_server.url.removeprefix("https://")] * 2
    assert [r.path for r in tls_server.requests] == ["/good/x"]
    assert tls_server.requests[0].client_cert_subject_cn == "px"


# -- testing transports ------------------------------------------------------------------------


def test_mock_transport_sees_the_injected_headers_of_every_entry(registry: Registry) -> None:
    ca = CertificateAuthority("mock CA")
    registry.put(tagged("https://svc.test/api", "mk", tls=profile(ca, "never-used")))
    registry.put(tagged("https://other.test/", "ot"))
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/api/go":
            return httpx.Response(302, headers={"Location": "https://other.test/x"})
        return httpx.Response(200, json={"ok": True})

    with SecureClient(
        registry, transport=httpx.MockTransport(handler), follow_redirects=True
    ) as client:
        assert client.get("https://svc.test/api/go").json() == {"ok": True}
    assert [tags_in(dict(r.headers), ["mk", "ot"]) for r in seen] == [{"mk"}, {"ot"}]


async def _async_handler(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=dict(request.headers))


@pytest.mark.anyio
async def test_mock_transport_async(registry: Registry) -> None:
    registry.put(tagged("https://svc.test/api", "am"))
    async with SecureAsyncClient(registry, transport=httpx.MockTransport(_async_handler)) as c:
        echoed = (await c.get("https://svc.test/api/x")).json()
    assert tags_in(echoed, ["am"]) == {"am"}


def test_another_transport_cannot_serve_an_entry_with_a_profile(
    registry: Registry, tls_server: GatewayServer
) -> None:
    registry.put(tagged(tls_server.url + "/p", "cu", tls=profile(tls_server.ca, "c")))  # type: ignore[arg-type]
    registry.put(tagged(tls_server.url + "/plain", "np"))
    context = ssl.create_default_context(cadata=tls_server.ca_pem.decode())
    with SecureClient(registry, transport=httpx.HTTPTransport(verify=context)) as client:
        assert client.get(tls_server.url + "/plain/x").status_code == 200
        with pytest.raises(TLSConfigError, match="cannot apply it; nothing was sent"):
            client.get(tls_server.url + "/p/x")
    assert [r.path for r in tls_server.requests] == ["/plain/x"]


def test_respx_sees_the_injected_headers(registry: Registry) -> None:
    ca = CertificateAuthority("respx CA")
    registry.put(tagged("https://svc.test/api", "rx"))
    registry.put(tagged("https://tls.test/api", "rt", tls=profile(ca, "unused")))
    with respx.mock(assert_all_called=True) as mock:
        route = mock.get("https://svc.test/api/x").respond(200, json={"ok": 1})
        tls_route = mock.get("https://tls.test/api/y").respond(204)
        with SecureClient(registry) as client:
            assert client.get("https://svc.test/api/x").json() == {"ok": 1}
            assert client.get("https://tls.test/api/y").status_code == 204
    assert tags_in(dict(route.calls.last.request.headers), ["rx", "rt"]) == {"rx"}
    assert tags_in(dict(tls_route.calls.last.request.headers), ["rx", "rt"]) == {"rt"}


@pytest.mark.anyio
async def test_respx_async(registry: Registry) -> None:
    registry.put(tagged("https://svc.test/api", "ra"))
    with respx.mock:
        route = respx.get("https://svc.test/api/x").respond(200)
        async with SecureAsyncClient(registry) as client:
            await client.get("https://svc.test/api/x")
    assert tags_in(dict(route.calls.last.request.headers), ["ra"]) == {"ra"}


# -- TLS failures, explained ---------------------------------------------------------------


# The CA, a gateway that demands a client certificate, a gateway that speaks TLS 1.3 only.
StrictTLS: TypeAlias = tuple[CertificateAuthority, GatewayServer, GatewayServer]


@pytest.fixture(scope="module")
def strict_tls() -> Iterator[StrictTLS]:
    ca = CertificateAuthority("strict CA")
    with (
        GatewayServer(tls=True, ca=ca, require_client_cert=True) as demanding,
        GatewayServer(
            tls=True, ca=ca, tls_versions=(ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_3)
        ) as tls13,
    ):
        yield ca, demanding, tls13


def _failures(registry: Registry, strict_tls: StrictTLS) -> list[tuple[str, type[Exception]]]:
    ca, demanding, tls13 = strict_tls
    other = CertificateAuthority("unrelated CA")
    registry.put(ServiceEntry(url=demanding.url + "/nocert", tls=profile(ca, None)))
    registry.put(ServiceEntry(url=demanding.url + "/wrongca", tls=profile(other, "w")))
    registry.put(ServiceEntry(url=tls13.url + "/v12", tls=profile(ca, "v", version="1.2")))
    return [
        (demanding.url + "/nocert/x", ClientCertificateRequiredError),
        (demanding.url + "/wrongca/x", ServerCertificateError),
        (tls13.url + "/v12/x", ProtocolVersionMismatchError),
    ]


def test_handshake_failures_are_explained(registry: Registry, strict_tls: StrictTLS) -> None:
    with SecureClient(registry) as client:
        for url, error in _failures(registry, strict_tls):
            with pytest.raises(error) as caught:
                client.get(url)
            assert not isinstance(caught.value, httpx.HTTPError)
            assert isinstance(caught.value.__cause__, httpx.TransportError)
    _, demanding, tls13 = strict_tls
    assert demanding.requests == tls13.requests == []


@pytest.mark.anyio
async def test_handshake_failures_are_explained_async(
    registry: Registry, strict_tls: StrictTLS
) -> None:
    async with SecureAsyncClient(registry) as client:
        for url, error in _failures(registry, strict_tls):
            with pytest.raises(error):
                await client.get(url)


def test_protocol_mismatch_names_both_sides(registry: Registry, strict_tls: StrictTLS) -> None:
    with SecureClient(registry) as client:
        url, _ = _failures(registry, strict_tls)[2]
        with pytest.raises(ProtocolVersionMismatchError) as caught:
            client.get(url)
    assert caught.value.ours == ("1.2",)
    assert caught.value.theirs == ("1.3",)


def test_no_error_is_an_httpx_error_and_all_are_ours() -> None:
    assert issubclass(InvalidRequestURLError, SecureSessionError)
    assert issubclass(InvalidRequestURLError, httpx.InvalidURL)
    assert not issubclass(PinMismatchError, httpx.HTTPError)


def test_an_iis_403_is_explained(
    registry: Registry, tls_server: GatewayServer, caplog: pytest.LogCaptureFixture
) -> None:
    registry.put(ServiceEntry(url=tls_server.url + "/iis", tls=profile(tls_server.ca, "iis")))  # type: ignore[arg-type]
    tls_server.forbid("/iis/", 16)
    with SecureClient(registry) as client:
        response = client.get(tls_server.url + "/iis/x")
    assert response.status_code == 403
    assert response.content  # still readable
    assert "403.16" in caplog.text and "iis" in caplog.text


_IIS_PAGE = b"<h2>403.16 - Forbidden: Client certificate is untrusted or invalid.</h2>"


@pytest.mark.parametrize("asynchronous", [False, True])
@pytest.mark.parametrize(
    ("headers", "body", "explained"),
    [
        ({"X-IIS-SubStatus": "16"}, b"", True),
        ({}, _IIS_PAGE, True),
        ({}, _IIS_PAGE + b" " * (64 * 1024), False),  # too large to be read for it
    ],
)
def test_an_iis_403_sub_status_is_read_from_its_headers_or_a_small_body(
    registry: Registry,
    caplog: pytest.LogCaptureFixture,
    asynchronous: bool,
    headers: dict[str, str],
    body: bytes,
    explained: bool,
) -> None:
    registry.put(ServiceEntry(url="https://iis.test/", gateway=Credential("u", "u-SECRET")))

    def forbid(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, headers=headers, content=body)

    mock = httpx.MockTransport(forbid)
    if asynchronous:

        async def get() -> httpx.Response:
            async with SecureAsyncClient(registry, transport=mock) as client:
                return await client.get("https://iis.test/x")

        response = anyio.run(get)
    else:
        with SecureClient(registry, transport=mock) as client:
            response = client.get("https://iis.test/x")
    assert response.status_code == 403
    assert response.content == body  # still readable
    assert ("403.16" in caplog.text) is explained


def test_user_info_in_a_matched_url_is_refused(registry: Registry) -> None:
    registry.put(ServiceEntry(url="https://svc.test/", gateway=Credential("u", "u-SECRET")))
    with SecureClient(registry, transport=httpx.MockTransport(lambda r: httpx.Response(200))) as c:
        with pytest.raises(InvalidRequestURLError, match="user information"):
            c.get("https://me:pw@svc.test/x")
        assert c.get("https://me:pw@elsewhere.test/x").status_code == 200


def test_user_info_is_read_from_the_authority_alone(registry: Registry) -> None:
    """httpx keeps a URL with no path as written, so an ``@`` may follow a ``?`` or a
    ``#`` of the authority: the request goes to the host before them, whose entry the
    user information is judged (and the credentials chosen) by."""
    registry.put(ServiceEntry(url="https://svc.test/", gateway=Credential("u", "u-SECRET")))
    registry.put(ServiceEntry(url="https://elsewhere.test/", gateway=Credential("e", "e-SECRET")))
    sent: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200)

    with SecureClient(registry, transport=httpx.MockTransport(record)) as c:
        with pytest.raises(InvalidRequestURLError, match="user information"):
            c.get("https://me:pw@svc.test?x@elsewhere.test/")
        assert sent == []
        assert c.get("https://svc.test#a@elsewhere.test/").status_code == 200
    (request,) = sent
    assert request.url.host == "svc.test"
    assert request.headers["X-Gateway-User"] == "u"
    # Not judged by the host after the last "@" either: without its entry, the same.
    registry.remove("https://elsewhere.test/")
    refused = pytest.raises(InvalidRequestURLError, match=r"https://svc\.test:443/ carries")
    with SecureClient(registry, transport=httpx.MockTransport(record)) as c, refused:
        c.get("https://me:pw@svc.test?x@elsewhere.test/")
    assert len(sent) == 1


@pytest.mark.parametrize("asynchronous", [False, True])
def test_the_entrys_crl_refuses_a_revoked_server_certificate(
    registry: Registry, asynchronous: bool
) -> None:
    ca = CertificateAuthority("crl CA")
    revoked = ca.issue_server()
    with GatewayServer(tls=True, ca=ca, server_cert=revoked) as server:
        crl_lists_it = TLSProfile(ca_bundle=ca.cert_pem, crl=ca.crl([revoked]))
        crl_does_not = TLSProfile(ca_bundle=ca.cert_pem, crl=ca.crl([]))
        registry.put(ServiceEntry(url=server.url + "/revoked", tls=crl_lists_it))
        registry.put(ServiceEntry(url=server.url + "/fine", tls=crl_does_not))

        async def call_async(url: str) -> int:
            async with SecureAsyncClient(registry) as client:
                return (await client.get(url)).status_code

        def call(url: str) -> int:
            if asynchronous:
                return anyio.run(call_async, url)
            with SecureClient(registry) as client:
                return client.get(url).status_code

        with pytest.raises(ServerCertificateError, match="revoked"):
            call(server.url + "/revoked/x")
        assert call(server.url + "/fine/x") == 200
        assert [r.path for r in server.requests] == ["/fine/x"]
