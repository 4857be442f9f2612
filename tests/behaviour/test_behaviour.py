"""The behaviour of docs/injection.md and docs/mutual-tls.md, stated once and run
against every front-end: requests' SecureSession, httpx's SecureClient and
SecureAsyncClient (``client_kind``)."""

from __future__ import annotations

import pytest

from securesession import (
    Credential,
    InvalidURLError,
    NoCredentialsError,
    PinMismatchError,
    Registry,
    RegistryError,
    ServiceEntry,
    TLSProfile,
)
from securesession.testing import GatewayServer

from .behaviour_clients import Factory
from .behaviour_helpers import (
    FlakyRegistry,
    LaggingRegistry,
    Origins,
    profile,
    tagged,
    tags_seen,
)

# -- matching ---------------------------------------------------------------------------


def test_longest_prefix_on_a_segment_boundary(
    origins: Origins, registry: Registry, make_client: Factory
) -> None:
    server = origins.plain_c
    registry.put(tagged(server.url + "/api", "api"))
    registry.put(tagged(server.url + "/api/v2", "v2"))
    registry.put(tagged(origins.plain_d.url + "/api", "other"))
    client = make_client(registry)
    for path in ("/api/x", "/api/v2/x", "/api/v2", "/apix/y", "/api/v2x", "/"):
        assert client.get(server.url + path).status == 200
    tags = ["api", "v2", "other"]
    seen = [tags_seen(record, tags) for record in server.requests]
    assert seen == [{"api"}, {"v2"}, {"v2"}, set(), {"api"}, set()]


def test_the_warm_path_decrypts_nothing(
    origins: Origins, registry: Registry, make_client: Factory
) -> None:
    registry.put(tagged(origins.plain_c.url + "/svc", "w"))
    client = make_client(registry)
    for _ in range(5):
        client.get(origins.plain_c.url + "/svc/x")
    info = client.cache_info()
    assert (info.loads, info.hits, info.size) == (1, 4, 1)


# -- injection modes --------------------------------------------------------------------------


def test_gateway_headers_and_basic_are_accepted(
    origins: Origins, registry: Registry, make_client: Factory
) -> None:
    server = origins.plain_c
    server.expect_gateway = ("gw-user", "gw-SECRET")
    server.expect_request = ("CORP\\alice", "älice-SECRET")
    registry.put(
        ServiceEntry(
            url=server.url + "/pay",
            gateway=Credential("gw-user", "gw-SECRET"),
            request=Credential("CORP\\alice", "älice-SECRET"),
        )
    )
    client = make_client(registry)
    assert client.get(server.url + "/pay/bills/1").status == 200
    (record,) = server.requests
    assert record.authenticated_user == "CORP\\alice"


def test_bearer_and_secret_headers(
    origins: Origins, registry: Registry, make_client: Factory
) -> None:
    server = origins.plain_c
    registry.put(
        ServiceEntry(
            url=server.url + "/api",
            gateway=Credential("bridge", "bridge-SECRET"),
            gateway_headers=("X-Bridge-User", "X-Bridge-Key"),
            request=Credential.token("tok-SECRET"),
            request_auth="bearer",
            secret_headers={"X-Api-Key": "key-SECRET"},
        )
    )
    make_client(registry).get(server.url + "/api/x")
    (record,) = server.requests
    assert record.header("Authorization") == "Bearer tok-SECRET"
    assert record.header("X-Bridge-User") == "bridge"
    assert record.header("X-Bridge-Key") == "bridge-SECRET"
    assert record.header("X-Api-Key") == "key-SECRET"
    assert record.header("X-Gateway-User") is None


def test_digest_over_the_entrys_profile_on_one_connection(
    origins: Origins, registry: Registry, make_client: Factory
) -> None:
    with GatewayServer(
        tls=True,
        ca=origins.ca,
        require_client_cert=True,
        expect_digest=("digest-user", "digest-SECRET"),
    ) as server:
        registry.put(
            ServiceEntry(
                url=server.url + "/d",
                gateway=Credential("dg-gw-user", "dg-gw-SECRET"),
                request=Credential("digest-user", "digest-SECRET"),
                request_auth="digest",
                tls=profile(origins.ca, "digest-client"),
            )
        )
        reply = make_client(registry).get(server.url + "/d/x")
        legs = server.requests
    assert reply.status == 200
    assert [leg.status for leg in legs] == [401, 200]
    assert {leg.client_cert_subject_cn for leg in legs} == {"digest-client"}
    assert len({leg.connection_id for leg in legs}) == 1
    assert legs[1].authenticated_user == "digest-user"
    assert all(tags_seen(leg, ["dg"]) == {"dg"} for leg in legs)


def test_a_digest_entry_does_not_answer_a_challenge_from_another_url(
    origins: Origins, registry: Registry, make_client: Factory
) -> None:
    with GatewayServer(expect_digest=("digest-user", "digest-SECRET")) as server:
        registry.put(
            ServiceEntry(
                url=server.url + "/d",
                request=Credential("digest-user", "digest-SECRET"),
                request_auth="digest",
            )
        )
        server.redirect("/d/go", origins.plain_c.url + "/challenge")
        origins.plain_c.respond(
            "/challenge",
            status=401,
            headers={"WWW-Authenticate": 'Digest realm="elsewhere", nonce="n0", qop="auth"'},
        )
        reply = make_client(registry).get(server.url + "/d/go")
    assert reply.status == 401
    (hop,) = origins.plain_c.requests  # answered by nobody
    assert hop.header("Authorization") is None
    assert "digest-user" not in " ".join(hop.headers.values())


def test_ntlm_on_one_connection(registry: Registry, make_client: Factory) -> None:
    with GatewayServer(expect_ntlm=("ntlm-user", "ntlm-SECRET")) as server:
        registry.put(
            ServiceEntry(
                url=server.url + "/iis",
                gateway=Credential("nt-gw-user", "nt-gw-SECRET"),
                request=Credential("ntlm-user", "ntlm-SECRET"),
                request_auth="ntlm",
            )
        )
        reply = make_client(registry).get(server.url + "/iis/page")
        legs = server.requests
    assert reply.status == 200
    assert [leg.status for leg in legs] == [401, 401, 200]
    assert len({leg.connection_id for leg in legs}) == 1
    assert legs[-1].authenticated_user is not None
    assert "ntlm-user" in legs[-1].authenticated_user
    assert all(tags_seen(leg, ["nt"]) == {"nt"} for leg in legs)


# -- precedence ---------------------------------------------------------------------------------


def test_a_header_of_the_caller_wins(
    origins: Origins, registry: Registry, make_client: Factory
) -> None:
    server = origins.plain_c
    registry.put(tagged(server.url + "/svc", "cw"))
    make_client(registry).get(
        server.url + "/svc/x", headers={"X-Gateway-User": "mine", "Authorization": "Token mine"}
    )
    (record,) = server.requests
    assert record.header("X-Gateway-User") == "mine"
    assert record.header("Authorization") == "Token mine"
    assert record.header("X-Gateway-Password") == "cw-gw-SECRET"


def test_auth_of_the_caller_wins_over_the_registrys_authorization(
    origins: Origins, registry: Registry, make_client: Factory
) -> None:
    server = origins.plain_c
    server.expect_request = ("caller", "caller-SECRET")
    registry.put(tagged(server.url + "/svc", "ca"))
    reply = make_client(registry).get(
        server.url + "/svc/x", auth=("basic", "caller", "caller-SECRET")
    )
    assert reply.status == 200
    (record,) = server.requests
    assert record.authenticated_user == "caller"
    assert record.header("X-Gateway-Password") == "ca-gw-SECRET"  # still added


def test_a_digest_auth_of_the_caller_is_not_preempted_by_the_registry(
    origins: Origins, registry: Registry, make_client: Factory
) -> None:
    """auth= given for a challenge scheme: its first leg, which carries no Authorization
    yet, must not get the registry's Basic either."""
    with GatewayServer(expect_digest=("caller", "caller-SECRET")) as server:
        registry.put(tagged(server.url + "/svc", "cd"))
        reply = make_client(registry).get(
            server.url + "/svc/x", auth=("digest", "caller", "caller-SECRET")
        )
        legs = server.requests
    assert reply.status == 200
    assert [leg.status for leg in legs] == [401, 200]
    assert legs[0].header("Authorization") is None
    assert legs[1].authenticated_user == "caller"


# -- strict mode ----------------------------------------------------------------------------------


def test_strict_refuses_a_url_without_entry_before_sending(
    origins: Origins, registry: Registry, make_client: Factory
) -> None:
    server = origins.plain_c
    registry.put(tagged(server.url + "/svc", "st"))
    client = make_client(registry, strict=True)
    assert client.get(server.url + "/svc/x").status == 200
    with pytest.raises(NoCredentialsError, match="no registry entry matches"):
        client.get(server.url + "/elsewhere")
    assert [record.path for record in server.requests] == ["/svc/x"]


# -- redirects ------------------------------------------------------------------------------------


def test_every_hop_carries_only_its_own_entry(
    origins: Origins, registry: Registry, make_client: Factory
) -> None:
    c, d = origins.plain_c, origins.plain_d
    registry.put(tagged(c.url + "/a", "ea"))
    registry.put(tagged(c.url + "/b", "eb"))
    registry.put(tagged(d.url + "/e", "ed"))
    c.redirect("/a/start", c.url + "/b/next")  # same origin, another entry
    c.redirect("/b/next", c.url + "/none/1", status=307)  # same origin, no entry
    c.redirect("/none/1", d.url + "/e/2", status=301)  # another origin with an entry
    d.redirect("/e/2", d.url + "/plain/3", status=308)  # another path, no entry
    reply = make_client(registry).get(c.url + "/a/start")
    assert reply.status == 200
    assert reply.redirects == 4
    tags = ["ea", "eb", "ed"]
    seen = [(r.path, tags_seen(r, tags)) for r in c.requests + d.requests]
    assert seen == [
        ("/a/start", {"ea"}),
        ("/b/next", {"eb"}),
        ("/none/1", set()),
        ("/e/2", {"ed"}),
        ("/plain/3", set()),
    ]


def test_after_a_downgrade_nothing_is_injected_for_the_rest_of_the_chain(
    origins: Origins, registry: Registry, make_client: Factory
) -> None:
    a, c, d, b = origins.tls_a, origins.plain_c, origins.plain_d, origins.tls_b
    for server, tag in ((a, "ta"), (c, "pc"), (d, "pd")):
        registry.put(tagged(server.url + "/", tag))
    registry.put(tagged(b.url + "/", "tb", tls=profile(origins.ca, "b-client")))
    a.redirect("/start", c.url + "/hop1")
    c.redirect("/hop1", d.url + "/hop2", status=307)
    d.redirect("/hop2", b.url + "/hop3", status=301)
    client = make_client(registry, ca_file=origins.ca_file)
    assert client.get(a.url + "/start").status == 200
    assert tags_seen(a.requests[0], ["ta"]) == {"ta"}
    for server in (c, d, b):
        (record,) = server.requests
        assert tags_seen(record, ["ta", "pc", "pd", "tb"]) == set(), server
        assert record.header("Authorization") is None
    # The https hop after the downgrade still goes over its entry's TLS profile.
    assert b.requests[0].client_cert_subject_cn == "b-client"
    # A new request is a new chain: the entries apply again.
    client.get(d.url + "/fresh")
    assert tags_seen(d.requests[-1], ["pd"]) == {"pd"}


def test_strict_refuses_every_hop_after_a_downgrade(
    origins: Origins, registry: Registry, make_client: Factory
) -> None:
    a, c = origins.tls_a, origins.plain_c
    registry.put(tagged(a.url + "/", "ta"))
    registry.put(tagged(c.url + "/", "pc"))
    a.redirect("/start", c.url + "/hop1")
    client = make_client(registry, strict=True, ca_file=origins.ca_file)
    with pytest.raises(NoCredentialsError, match="redirect from https to http"):
        client.get(a.url + "/start")
    assert c.requests == []


def test_headers_passed_on_by_the_caller_keep_their_provenance(
    origins: Origins, registry: Registry, make_client: Factory
) -> None:
    c, d = origins.plain_c, origins.plain_d
    registry.put(tagged(c.url + "/a", "ea"))
    registry.put(tagged(c.url + "/b", "eb"))
    client = make_client(registry)
    first = client.get(c.url + "/a/x")
    for target in (c.url + "/b/x", c.url + "/none", d.url + "/a/x"):
        client.get(target, headers=first.request_headers)  # the library's own object
        client.get(target, headers=first.request_dict)  # a plain copy of it
    records = c.requests + d.requests
    seen = [tags_seen(record, ["ea", "eb"]) for record in records]
    assert seen == [{"ea"}, {"eb"}, {"eb"}, set(), set(), set(), set()]


# -- 401 refresh and registry failures ---------------------------------------------------------


def test_changed_credentials_are_reloaded_and_retried_once_after_401(
    origins: Origins, registry: Registry, make_client: Factory
) -> None:
    server = origins.plain_c
    lagging = LaggingRegistry(registry)
    registry.put(tagged(server.url + "/svc", "old"))
    server.expect_gateway = ("old-gw-user", "old-gw-SECRET")
    client = make_client(lagging)
    assert client.get(server.url + "/svc/x").status == 200
    # Another process rotates the credentials; this process's lookup has not caught up.
    lagging.hold(server.url + "/svc")
    registry.put(tagged(server.url + "/svc", "new"))
    server.expect_gateway = ("new-gw-user", "new-gw-SECRET")
    assert client.get(server.url + "/svc/y").status == 200
    seen = [(r.status, tags_seen(r, ["old", "new"])) for r in server.requests]
    assert seen == [(200, {"old"}), (401, {"old"}), (200, {"new"})]


def test_unchanged_credentials_are_not_retried_after_401(
    origins: Origins, registry: Registry, make_client: Factory
) -> None:
    server = origins.plain_c
    registry.put(tagged(server.url + "/svc", "same"))
    server.respond("/svc/", status=401)
    client = make_client(registry)
    assert client.get(server.url + "/svc/x").status == 401
    assert len(server.requests) == 1
    assert client.cache_info().loads == 2  # dropped from the cache and reloaded once


def test_stale_on_error_serves_a_warm_entry_and_fails_closed_otherwise(
    origins: Origins, registry: Registry, make_client: Factory
) -> None:
    server = origins.plain_c
    flaky = FlakyRegistry(registry)
    registry.put(tagged(server.url + "/svc", "so"))
    tolerant = make_client(flaky, cache_ttl=60, stale_on_error=30)
    closed = make_client(flaky)
    tolerant.get(server.url + "/svc/x")
    closed.get(server.url + "/svc/x")
    flaky.down = True
    assert tolerant.get(server.url + "/svc/x").status == 200
    with pytest.raises(RegistryError):
        closed.get(server.url + "/svc/x")
    with pytest.raises(RegistryError):  # never looked up while the registry worked
        tolerant.get(server.url + "/svc/other")
    seen = [tags_seen(record, ["so"]) for record in server.requests]
    assert seen == [{"so"}, {"so"}, {"so"}]


# -- TLS per entry ------------------------------------------------------------------------


def test_each_entry_presents_its_own_certificate(
    origins: Origins, registry: Registry, make_client: Factory
) -> None:
    server = origins.tls_a
    registry.put(tagged(server.url + "/one", "p1", tls=profile(origins.ca, "cert-one")))
    registry.put(tagged(server.url + "/two", "p2", tls=profile(origins.ca, "cert-two")))
    client = make_client(registry)
    for _ in range(2):
        client.get(server.url + "/one/x")
        client.get(server.url + "/two/x")
    seen = [(r.client_cert_subject_cn, tags_seen(r, ["p1", "p2"])) for r in server.requests]
    assert seen == [("cert-one", {"p1"}), ("cert-two", {"p2"})] * 2
    # One connection per profile, reused.
    assert len({r.connection_id for r in server.requests}) == 2


def test_a_wrong_pin_is_refused_before_any_request_byte(
    origins: Origins, registry: Registry, make_client: Factory
) -> None:
    server = origins.tls_a
    registry.put(
        tagged(
            server.url + "/pinned",
            "pin",
            tls=profile(origins.ca, "pin-client", pins=("sha256/" + "A" * 43 + "=",)),
        )
    )
    with pytest.raises(PinMismatchError, match="matches none of the entry's pins") as caught:
        make_client(registry).get(server.url + "/pinned/x")
    assert caught.value.actual == (server.server_cert.spki_sha256_pin,)  # type: ignore[union-attr]
    assert server.requests == []


def test_the_right_pin_is_accepted(
    origins: Origins, registry: Registry, make_client: Factory
) -> None:
    server = origins.tls_a
    assert server.server_cert is not None
    pins = (server.server_cert.spki_sha256_pin,)
    registry.put(
        tagged(server.url + "/pinned", "pin", tls=profile(origins.ca, "pin-client", pins=pins))
    )
    assert make_client(registry).get(server.url + "/pinned/x").status == 200


# -- URLs that are refused ----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/public/%2e%2e/payments/x", "/public%2F..%2Fpayments/x"])
def test_a_confusable_path_is_refused_before_anything_is_sent(
    origins: Origins, registry: Registry, make_client: Factory, path: str
) -> None:
    server = origins.plain_c
    registry.put(tagged(server.url + "/public", "pub"))
    registry.put(tagged(server.url + "/payments", "pay"))
    with pytest.raises(InvalidURLError):
        make_client(registry).get(server.url + path)
    assert server.requests == []


def test_profile_entries_keep_their_certificate_after_a_rotation(
    origins: Origins, registry: Registry, make_client: Factory
) -> None:
    server = origins.tls_a
    registry.put(tagged(server.url + "/svc", "r1", tls=profile(origins.ca, "before")))
    client = make_client(registry)
    client.get(server.url + "/svc/x")
    rotated: TLSProfile = profile(origins.ca, "after")
    registry.put(tagged(server.url + "/svc", "r2", tls=rotated))
    client.get(server.url + "/svc/x")
    seen = [(r.client_cert_subject_cn, tags_seen(r, ["r1", "r2"])) for r in server.requests]
    assert seen == [("before", {"r1"}), ("after", {"r2"})]
