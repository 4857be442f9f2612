"""``StubRegistry``: plain-data construction, the backend contract, the lookup record."""

from __future__ import annotations

import base64
import threading

import pytest

from securesession import (
    ClientCertificate,
    Credential,
    InvalidEntryError,
    MasterKey,
    RegistryError,
    SecureSession,
    ServiceEntry,
    TLSProfile,
    open_registry,
)
from securesession.testing import GatewayServer, Lookup, StubRegistry
from securesession.testing.contract import OpenRegistry, RegistryContract

API = "https://svc.test/api/"
API_KEY = "https://svc.test:443/api"


class TestStubRegistryContract(RegistryContract):
    """The stub passes the very suite ``memory://`` and ``sqlite://`` pass."""

    @pytest.fixture
    def open_registry(self) -> OpenRegistry:
        opened: list[StubRegistry] = []

        def opener(key: MasterKey) -> StubRegistry:
            # Reopen the first stub's store, as a second process opens the same file.
            registry = StubRegistry(key=key, store=opened[0].store if opened else None)
            opened.append(registry)
            return registry

        return opener


# -- building from plain data ------------------------------------------------------------


def test_one_line_from_plain_data() -> None:
    registry = StubRegistry(
        {API: {"gateway": ("gw", "gw-SECRET"), "request": ("u", "u-SECRET")}},
    )
    entry = registry.get("https://svc.test/api/orders/7?x=1")
    assert entry == ServiceEntry(
        url=API,
        gateway=Credential("gw", "gw-SECRET"),
        request=Credential("u", "u-SECRET"),
    )
    assert entry is not None and entry.revision > 0


def test_every_option_and_every_credential_form() -> None:
    ready = ServiceEntry(url="https://ready.test/", request=Credential("r", "r-SECRET"))
    registry = StubRegistry(
        {
            "https://bearer.test/": {"request": "tok-SECRET", "request_auth": "bearer"},
            "https://hdr.test/v1": {
                "gateway": Credential("g", "g-SECRET"),
                "gateway_headers": ["X-Bridge-User", "X-Bridge-Key"],
                "request": ["u", "u-SECRET"],
                "request_auth": "headers",
                "request_headers": ("X-User", "X-Pass"),
                "secret_headers": {"X-Api-Key": "api-SECRET"},
                "description": "header service",
            },
            "https://ready.test": ready,
        }
    )
    bearer = registry.get("https://bearer.test/x")
    assert bearer is not None and bearer.request == Credential.token("tok-SECRET")
    assert bearer.request_auth == "bearer"
    hdr = registry.get("https://hdr.test/v1/z")
    assert hdr is not None
    assert hdr.gateway_headers == ("X-Bridge-User", "X-Bridge-Key")
    assert hdr.request_headers == ("X-User", "X-Pass")
    assert hdr.secret_headers["X-Api-Key"].reveal() == "api-SECRET"
    assert hdr.description == "header service"
    assert registry.get("https://ready.test/q") == ready


def test_a_sequence_of_entries_and_add() -> None:
    entries = [
        ServiceEntry(url="https://a.test/", gateway=Credential("a", "a-SECRET")),
        ServiceEntry(url="https://b.test/", gateway=Credential("b", "b-SECRET")),
    ]
    registry = StubRegistry(entries)
    stored = registry.add("https://c.test/x", gateway=("c", "c-SECRET"), request_auth="none")
    assert stored.revision > 0
    assert [e.url for e in registry.entries()] == [
        "https://a.test:443/",
        "https://b.test:443/",
        "https://c.test:443/x",
    ]


def test_an_entry_under_another_url_is_refused() -> None:
    entry = ServiceEntry(url="https://a.test/", gateway=Credential("a", "a-SECRET"))
    with pytest.raises(ValueError, match="must match"):
        StubRegistry({"https://b.test/": entry})


@pytest.mark.parametrize(
    ("spec", "error", "match"),
    [
        ({"gateway": ("gw", "pw-SECRET", "extra")}, TypeError, "gateway must be"),
        ({"request": 42}, TypeError, "request must be"),
        ({"gatewy": ("gw", "pw-SECRET")}, TypeError, "unknown option"),
        ({"url": "https://x.test/"}, TypeError, "unknown option"),
        ({"request": ("u", "p-SECRET"), "request_auth": "none"}, InvalidEntryError, "'none'"),
        ({"request": ("u", "p-SECRET"), "request_auth": "magic"}, InvalidEntryError, "magic"),
        ({"tls": {"client_cert": "pfx-SECRET"}}, TypeError, "tls must be a TLSProfile or None"),
        ({"tls": "pfx-SECRET"}, TypeError, "not str"),
    ],
)
def test_bad_specs_are_named_without_their_secrets(
    spec: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match) as caught:
        StubRegistry({API: spec})
    assert "SECRET" not in str(caught.value)


def test_plain_strings_are_not_an_entry_list() -> None:
    with pytest.raises(TypeError, match="mapping"):
        StubRegistry("https://svc.test/")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="ServiceEntry objects"):
        StubRegistry([("https://svc.test/", {})])  # type: ignore[list-item]


def test_injects_exactly_like_a_memory_registry() -> None:
    """Same entries, same injection plan: the stub adds nothing and loses nothing."""
    spec = {
        API: {
            "gateway": ("gw", "gw-SECRET"),
            "request": ("u", "u-SECRET"),
            "secret_headers": {"X-Api-Key": "api-SECRET"},
        },
        "https://svc.test/api/bearer": {"request": "tok-SECRET", "request_auth": "bearer"},
    }
    stub = StubRegistry(spec)
    real = open_registry("memory://", MasterKey.generate())
    for entry in stub.entries():
        real.put(entry)
    with SecureSession(stub) as via_stub, SecureSession(real) as via_real:
        for url in ("https://svc.test/api/x", "https://svc.test/api/bearer/y", "https://n.test/"):
            # What would be injected: the session's (internal) plan of each.
            plan_stub, plan_real = via_stub._guard.plan_for(url), via_real._guard.plan_for(url)
            if plan_real is None:
                assert plan_stub is None
                continue
            assert plan_stub is not None
            assert plan_stub.headers == plan_real.headers
            assert plan_stub.entry == plan_real.entry
    real.close()


def test_key_reopen_and_rotate() -> None:
    registry = StubRegistry({API: {"gateway": ("gw", "gw-SECRET")}})
    same = StubRegistry(key=registry.key, store=registry.store)
    assert same.get(API) == registry.get(API)
    new_key = MasterKey.generate()
    registry.rotate(new_key)
    assert registry.key == new_key


def test_a_closed_stub_refuses_use_like_every_backend() -> None:
    registry = StubRegistry({API: {"gateway": ("gw", "gw-SECRET")}})
    registry.close()
    assert registry.closed
    assert "closed" in repr(registry)
    for use in (
        lambda: registry.get(API),
        lambda: registry.lookup(API),
        lambda: registry.put(ServiceEntry(url=API)),
        lambda: registry.remove(API),
        lambda: list(registry.entries()),
        lambda: registry.rotate(MasterKey.generate()),
    ):
        with pytest.raises(RegistryError, match="closed"):
            use()


# -- the lookup record --------------------------------------------------------------------


def test_lookups_record_url_and_matched_key() -> None:
    registry = StubRegistry({API: {"gateway": ("gw", "gw-SECRET")}})
    registry.lookup("https://svc.test/api/orders?page=2")
    registry.get("https://svc.test/other")
    assert registry.lookups == [
        ("https://svc.test/api/orders?page=2", API_KEY),
        Lookup("https://svc.test/other", None),
    ]
    assert registry.misses == ["https://svc.test/other"]
    assert registry.uses(API) == 1
    registry.assert_used(API)
    registry.assert_used("https://SVC.test:443/api", times=1)  # any spelling of the entry
    registry.assert_not_used("https://svc.test/elsewhere")
    registry.clear_lookups()
    assert registry.lookups == []
    registry.assert_not_used(API)


def test_assert_used_failures_explain_without_query_strings() -> None:
    registry = StubRegistry({API: {"gateway": ("gw", "gw-SECRET")}})
    registry.get("https://svc.test/api/x?token=tok-SECRET")
    with pytest.raises(AssertionError, match=r"matched 1 time\(s\), expected 2") as caught:
        registry.assert_used(API, times=2)
    assert "https://svc.test:443/api/x -> https://svc.test:443/api" in str(caught.value)
    assert "SECRET" not in str(caught.value)
    with pytest.raises(AssertionError, match="expected 0"):
        registry.assert_not_used(API)
    with pytest.raises(AssertionError, match="at least once"):
        registry.assert_used("https://svc.test/never")


def test_the_record_is_thread_safe() -> None:
    registry = StubRegistry({API: {"gateway": ("gw", "gw-SECRET")}})

    def hammer() -> None:
        for _ in range(200):
            registry.lookup(API + "x")

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert registry.uses(API) == 800


def test_a_session_looks_up_once_per_request_sent(gateway_server: GatewayServer) -> None:
    gateway_server.expect_gateway = ("gw", "gw-SECRET")
    gateway_server.expect_request = ("u", "u-SECRET")
    entry_url = gateway_server.url + "/api"
    registry = StubRegistry(
        {entry_url: {"gateway": ("gw", "gw-SECRET"), "request": ("u", "u-SECRET")}}
    )
    with SecureSession(registry) as session:
        assert session.get(entry_url + "/a").status_code == 200
        assert session.get(entry_url + "/b").status_code == 200
        assert session.get(gateway_server.url + "/public").status_code == 401
    registry.assert_used(entry_url, times=2)
    assert registry.misses == [gateway_server.url + "/public"]
    first = gateway_server.requests[0]
    assert first.header("X-Gateway-User") == "gw"
    assert first.header("Authorization") == "Basic " + base64.b64encode(b"u:u-SECRET").decode()


# -- TLS profiles ------------------------------------------------------------------------

PFX_PASSWORD = "pfx-SECRET"


def test_a_tls_profile_in_the_plain_data_form() -> None:
    registry = StubRegistry({API: {"gateway": ("gw", "gw-SECRET"), "tls": None}})
    entry = registry.get(API)
    assert entry is not None and entry.tls is None
    profile = TLSProfile(version="1.3", pins=("sha256/" + "A" * 43 + "=",))
    registry.add(API, gateway=("gw", "gw-SECRET"), tls=profile)
    entry = registry.get(API + "x")
    assert entry is not None and entry.tls == profile


def test_an_entry_with_a_tls_profile_presents_its_client_certificate() -> None:
    """The dict form takes ``tls=``: SecureSession then presents the profile's client
    certificate to a gateway that requires one, and trusts the profile's CA."""
    with GatewayServer(
        tls=True, require_client_cert=True, expect_gateway=("gw", "gw-SECRET")
    ) as server:
        assert server.ca is not None  # tls=True
        issued = server.ca.issue_client("stub-client")
        profile = TLSProfile(
            client_cert=ClientCertificate.from_pkcs12(
                issued.pkcs12(PFX_PASSWORD.encode()), PFX_PASSWORD
            ),
            ca_bundle=server.ca_pem,
        )
        entry_url = server.url + "/api"
        registry = StubRegistry({entry_url: {"gateway": ("gw", "gw-SECRET"), "tls": profile}})
        with SecureSession(registry) as session:
            response = session.get(entry_url + "/orders/7", timeout=5)
        assert response.status_code == 200
        (record,) = server.requests
        assert record.client_cert_subject_cn == "stub-client"
        assert record.header("X-Gateway-User") == "gw"
        registry.assert_used(entry_url, times=1)
