"""Regression tests of the wire guard, one group per defect of the security review:
every request carries only its own entry's credentials, over its own entry's TLS,
on every path into the wire.

Group 6 (entry integrity) is tested edit by edit in tests/core/test_entry_integrity.py;
the smaller defects of group 7 beside the code they touch: wire-safe values
(tests/core/test_entry.py), corrupt revision cells and secure_delete
(tests/core/test_sqlite.py), the key id carried in tokens
(tests/core/test_entry_integrity.py), the scrypt cap (tests/cli/test_cli_transfer.py),
`request -v` after redirects (tests/cli/test_cli_network.py), IPv6 zone ids
(tests/core/test_urls.py). The session's own (pickling) are below."""

from __future__ import annotations

import copy
import json
import pickle
import sqlite3
from pathlib import Path
from typing import cast

import pytest
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from securesession import (
    ConfigurationError,
    Credential,
    InvalidURLError,
    MasterKey,
    NoCredentialsError,
    Registry,
    RegistryCorruptError,
    SecureAdapter,
    SecureSession,
    ServiceEntry,
    open_registry,
)
from securesession.testing import CertificateAuthority, GatewayServer

from .wire_helpers import (
    DIGEST_PASSWORD,
    DIGEST_USER,
    NTLM_PASSWORD,
    NTLM_USER,
    Origins,
    gateway_entry,
    profile,
    tags_seen,
)

DIGEST_CHALLENGE = {"WWW-Authenticate": 'Digest realm="elsewhere", nonce="n0", qop="auth"'}


def _digest_entry(origins: Origins, *, tag: str = "dg", **tls: object) -> ServiceEntry:
    return ServiceEntry(
        url=origins.digest.url + "/d",
        gateway=Credential(f"{tag}-gw-user", f"{tag}-gw-SECRET"),
        request=Credential(DIGEST_USER, DIGEST_PASSWORD),
        request_auth="digest",
        tls=profile(origins.ca, "digest-client", **tls),
    )


# -- 1. multi-leg auth ------------------------------------------------------------------


def test_group1_digest_every_leg_over_the_profile_on_one_connection(
    registry: Registry, wire_ca: CertificateAuthority, tmp_path: Path
) -> None:
    # A caller verify= (another CA) must not give the second leg a second connection
    # with other trust: the profile decides all of TLS, on every leg.
    other_ca = CertificateAuthority("unrelated CA")
    with GatewayServer(
        tls=True,
        ca=wire_ca,
        require_client_cert=True,
        expect_digest=(DIGEST_USER, DIGEST_PASSWORD),
    ) as server:
        registry.put(
            ServiceEntry(
                url=server.url + "/d",
                gateway=Credential("dg-gw-user", "dg-gw-SECRET"),
                request=Credential(DIGEST_USER, DIGEST_PASSWORD),
                request_auth="digest",
                tls=profile(wire_ca, "digest-client", version="1.2"),
            )
        )
        with SecureSession(registry) as session:
            response = session.get(
                server.url + "/d/x", verify=str(other_ca.write_cert_pem(tmp_path))
            )
        legs = server.requests
    assert response.status_code == 200
    assert [leg.status for leg in legs] == [401, 200]
    assert {leg.client_cert_subject_cn for leg in legs} == {"digest-client"}
    assert {leg.tls_version for leg in legs} == {"TLSv1.2"}
    assert len({leg.connection_id for leg in legs}) == 1
    assert legs[1].authenticated_user == DIGEST_USER
    assert tags_seen(legs[1], ["dg"]) == {"dg"}


def test_group1_redirect_after_a_digest_leg_strips_everything(
    origins: Origins, registry: Registry
) -> None:
    registry.put(_digest_entry(origins))
    elsewhere = origins.plain_c
    origins.digest.redirect("/d/go", elsewhere.url + "/challenge")
    elsewhere.respond("/challenge", status=401, headers=DIGEST_CHALLENGE)
    with SecureSession(registry) as session:
        response = session.get(origins.digest.url + "/d/go")
    assert response.status_code == 401
    assert [leg.status for leg in origins.digest.requests] == [401, 302]
    (hop,) = elsewhere.requests  # one request: the Digest hook did not answer it
    assert tags_seen(hop, ["dg"]) == set()
    assert hop.header("Authorization") is None
    assert DIGEST_USER not in " ".join(hop.headers.values())


def test_group1_digest_hook_does_not_answer_another_entry_on_the_same_host(
    origins: Origins, registry: Registry
) -> None:
    registry.put(_digest_entry(origins))
    registry.put(
        gateway_entry(
            origins.digest.url + "/d/other",
            "ot",
            basic=False,
            tls=profile(origins.ca, "other-client"),
        )
    )
    with SecureSession(registry) as session:
        response = session.get(origins.digest.url + "/d/other/x")
    # /d/other has no Digest credential: its 401 stays a 401, unanswered by /d's hook.
    assert response.status_code == 401
    (only,) = origins.digest.requests
    assert only.client_cert_subject_cn == "other-client"
    assert tags_seen(only, ["dg", "ot"]) == {"ot"}


def test_group1_ntlm_over_a_client_certificate_on_one_connection(
    registry: Registry, wire_ca: CertificateAuthority
) -> None:
    with GatewayServer(
        tls=True, ca=wire_ca, require_client_cert=True, expect_ntlm=(NTLM_USER, NTLM_PASSWORD)
    ) as server:
        registry.put(
            ServiceEntry(
                url=server.url + "/iis",
                gateway=Credential("nt-gw-user", "nt-gw-SECRET"),
                request=Credential(NTLM_USER, NTLM_PASSWORD),
                request_auth="ntlm",
                tls=profile(wire_ca, "ntlm-client"),
            )
        )
        with SecureSession(registry) as session:
            response = session.get(server.url + "/iis/page")
        assert response.status_code == 200
        legs = server.requests
        assert len(legs) == 3
        assert {leg.client_cert_subject_cn for leg in legs} == {"ntlm-client"}
        assert len({leg.connection_id for leg in legs}) == 1
        assert legs[-1].authenticated_user is not None
        assert NTLM_USER in legs[-1].authenticated_user
        assert all(tags_seen(leg, ["nt"]) == {"nt"} for leg in legs)


class _RecordingConnection:
    """Stands in for ``response.connection``: records the legs an auth hook sends."""

    def __init__(self) -> None:
        self.sent: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, **kwargs: object) -> requests.Response:
        self.sent.append(request)
        answer = requests.Response()
        answer.status_code = 200
        answer.request = request
        return answer


def _challenge(
    request: requests.PreparedRequest, connection: _RecordingConnection
) -> requests.Response:
    response = requests.Response()
    response.status_code = 401
    response.headers["WWW-Authenticate"] = DIGEST_CHALLENGE["WWW-Authenticate"]
    response._content = b""
    response.request = request
    # A stand-in for the adapter: the auth hook only calls its send().
    response.connection = cast(HTTPAdapter, connection)
    return response


def test_group1_bound_hooks_answer_only_responses_of_their_entry(
    origins: Origins, registry: Registry
) -> None:
    """Even a hook that outlived its request (a caller dispatching hooks by hand, say)
    never answers a challenge from a URL its entry does not govern."""
    registry.put(_digest_entry(origins))
    with SecureSession(registry) as session:
        url = origins.digest.url + "/d/x"
        plan = session._guard.plan_for(url)
        assert plan is not None and plan.auth is not None
        request = session.prepare_request(requests.Request("GET", url))
        plan.auth(request)
        (hook, _redirect_hook) = request.hooks["response"]
        for foreign in (origins.plain_c.url + "/d/x", origins.digest.url + "/other"):
            stray = request.copy()
            stray.url = foreign
            connection = _RecordingConnection()
            assert hook(_challenge(stray, connection)).status_code == 401
            assert connection.sent == []
        connection = _RecordingConnection()
        assert hook(_challenge(request, connection)).status_code == 200
        (leg,) = connection.sent
        assert DIGEST_USER in leg.headers["Authorization"]


# -- 2. re-sent requests ------------------------------------------------------------------


def test_group2_resent_copy_to_another_url_carries_only_that_urls_entry(
    origins: Origins, registry: Registry
) -> None:
    server = origins.plain_c
    registry.put(gateway_entry(server.url + "/a", "ea"))
    registry.put(gateway_entry(server.url + "/b", "eb"))
    with SecureSession(registry) as session:
        first = session.get(server.url + "/a/x").request
        for target in (
            server.url + "/b/x",
            server.url + "/none",
            origins.plain_d.url + "/a/x",
        ):
            resent = first.copy()
            resent.url = target
            session.send(resent)
            deep = copy.deepcopy(first)
            deep.url = target
            session.send(deep)
            # Straight to the adapter, bypassing the session: still guarded.
            direct = first.copy()
            direct.url = target
            session.adapter.send(direct)
            # Headers passed on by the caller keep their provenance too.
            session.get(target, headers=first.headers)
        records = server.requests + origins.plain_d.requests
    seen = [tags_seen(record, ["ea", "eb"]) for record in records]
    assert seen[0] == {"ea"}
    assert seen[1:5] == [{"eb"}] * 4
    assert seen[5:] == [set()] * 8


def test_group2_resend_after_a_rotation_carries_the_new_value(
    origins: Origins, registry: Registry
) -> None:
    server = origins.plain_c
    registry.put(gateway_entry(server.url + "/a", "old"))
    with SecureSession(registry) as session:
        sent = session.get(server.url + "/a/x").request
        registry.put(gateway_entry(server.url + "/a", "new"))
        session.send(sent)
        session.send(sent.copy())
        session.adapter.send(sent.copy())
    seen = [tags_seen(record, ["old", "new"]) for record in server.requests]
    assert seen == [{"old"}, {"new"}, {"new"}, {"new"}]


# -- 3. redirect chains ----------------------------------------------------------------


def test_group3_downgrade_holds_for_the_rest_of_the_chain(
    origins: Origins, registry: Registry
) -> None:
    a, c, d, b = origins.tls_a, origins.plain_c, origins.plain_d, origins.tls_b
    for server, tag in ((a, "ta"), (c, "pc"), (d, "pd")):
        registry.put(gateway_entry(server.url + "/", tag))
    registry.put(gateway_entry(b.url + "/", "tb", tls=profile(origins.ca, "b-client")))
    a.redirect("/start", c.url + "/hop1")
    c.redirect("/hop1", d.url + "/hop2", status=307)
    d.redirect("/hop2", b.url + "/hop3", status=301)
    with SecureSession(registry) as session:
        response = session.get(a.url + "/start", verify=origins.ca_file)
    assert response.status_code == 200
    assert tags_seen(a.requests[0], ["ta"]) == {"ta"}
    for server in (c, d, b):
        (record,) = server.requests
        assert tags_seen(record, ["ta", "pc", "pd", "tb"]) == set(), server
        assert record.header("Authorization") is None
    # The https hop after the downgrade still goes over its entry's TLS profile.
    assert b.requests[0].client_cert_subject_cn == "b-client"


def test_group3_strict_refuses_every_hop_after_a_downgrade(
    origins: Origins, registry: Registry
) -> None:
    a, c = origins.tls_a, origins.plain_c
    registry.put(gateway_entry(a.url + "/", "ta"))
    registry.put(gateway_entry(c.url + "/", "pc"))
    a.redirect("/start", c.url + "/hop1")
    with (
        SecureSession(registry, strict=True) as session,
        pytest.raises(NoCredentialsError, match="redirect from https to http"),
    ):
        session.get(a.url + "/start", verify=origins.ca_file)
    assert c.requests == []


# -- 4. path confusion -----------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/public/../payments/x", "/public/%2e%2e/payments/x", "/public/%2E./payments/x"]
)
def test_group4_dot_segments_are_refused_before_anything_is_sent(
    origins: Origins, registry: Registry, path: str
) -> None:
    server = origins.plain_c
    registry.put(gateway_entry(server.url + "/public", "pub"))
    registry.put(gateway_entry(server.url + "/payments", "pay"))
    with SecureSession(registry) as session:
        if "%" in path:
            with pytest.raises(InvalidURLError, match="dot segment"):
                session.get(server.url + path)
        # requests removes literal dot segments when it prepares a URL (so what is
        # matched is what is sent); a URL set on the prepared request afterwards goes
        # out as is, so it is refused, literal or encoded.
        prepared = session.prepare_request(requests.Request("GET", server.url + "/public/x"))
        prepared.url = server.url + path
        with pytest.raises(InvalidURLError, match="dot segment"):
            session.send(prepared)
        with pytest.raises(InvalidURLError, match="dot segment"):
            session.adapter.send(prepared)
    assert server.requests == []


def test_group4_encoded_slash_is_refused(origins: Origins, registry: Registry) -> None:
    server = origins.plain_c
    registry.put(gateway_entry(server.url + "/public", "pub"))
    with SecureSession(registry) as session, pytest.raises(InvalidURLError, match="slash"):
        session.get(server.url + "/public%2F..%2Fpayments/x")
    assert server.requests == []


# -- 5. shared adapter -------------------------------------------------------------------


def test_group5_one_adapter_cannot_serve_two_sessions(registry: Registry) -> None:
    other = open_registry("memory://", MasterKey.generate())
    with SecureSession(registry) as first:
        with pytest.raises(ConfigurationError, match="another SecureSession"):
            SecureSession(other, adapter=first.adapter)
        with SecureSession(other) as second, pytest.raises(ConfigurationError):
            second.mount("https://", first.adapter)
        # Mounting on its own session again (another prefix) is fine.
        first.mount("https://gw.example/", first.adapter)
    other.close()


def test_group5_two_registries_same_url_each_presents_its_own_certificate(
    origins: Origins, registry: Registry
) -> None:
    server = origins.tls_a
    other = open_registry("memory://", MasterKey.generate())
    registry.put(gateway_entry(server.url + "/svc", "r1", tls=profile(origins.ca, "reg1")))
    other.put(gateway_entry(server.url + "/svc", "r2", tls=profile(origins.ca, "reg2")))
    with SecureSession(registry) as first, SecureSession(other) as second:
        for _ in range(2):
            first.get(server.url + "/svc/x")
            second.get(server.url + "/svc/x")
    other.close()
    seen = [(r.client_cert_subject_cn, tags_seen(r, ["r1", "r2"])) for r in server.requests]
    assert seen == [("reg1", {"r1"}), ("reg2", {"r2"})] * 2


def test_group5_an_unbound_secure_adapter_is_bound_by_mount(
    origins: Origins, registry: Registry
) -> None:
    server = origins.tls_a
    registry.put(gateway_entry(server.url + "/svc", "mt", tls=profile(origins.ca, "mounted")))
    with SecureSession(registry) as session:
        session.mount(server.url + "/svc", SecureAdapter(pool_maxsize=2))
        session.get(server.url + "/svc/x")
    assert server.requests[0].client_cert_subject_cn == "mounted"


def test_urllib3_retries_resend_only_their_entry_over_its_profile(
    origins: Origins, registry: Registry
) -> None:
    """urllib3 retries below the adapter: each attempt is the same request, over the
    same profile's pool, and a retried redirect is still handled (and guarded) by the
    session, not by urllib3."""
    server = origins.tls_a
    registry.put(gateway_entry(server.url + "/svc", "rt", tls=profile(origins.ca, "retry-client")))
    server.respond("/svc/busy", status=503)
    server.redirect("/svc/away", origins.plain_c.url + "/landing")
    retry = Retry(total=2, status_forcelist=[503], backoff_factor=0, raise_on_status=False)
    with SecureSession(registry, adapter=SecureAdapter(max_retries=retry)) as session:
        assert session.get(server.url + "/svc/busy").status_code == 503
        assert session.get(server.url + "/svc/away").status_code == 200
    busy = [r for r in server.requests if r.path == "/svc/busy"]
    assert len(busy) == 3
    assert all(r.client_cert_subject_cn == "retry-client" for r in busy)
    assert all(tags_seen(r, ["rt"]) == {"rt"} for r in busy)
    (landing,) = origins.plain_c.requests
    assert tags_seen(landing, ["rt"]) == set()


# -- 6. entry integrity ------------------------------------------------------------------


def test_group6_a_store_writer_cannot_swap_the_ca_and_drop_the_pins(
    wire_ca: CertificateAuthority, tmp_path: Path
) -> None:
    """The review's scenario: someone who can write the store (not the key) swaps the
    entry's CA for an impostor's and removes its pins; the next request would go to the
    impostor with the entry's password. Now the edit fails the entry's authentication
    and nothing is sent. (Every other edit: tests/core/test_entry_integrity.py.)"""
    impostor_ca = CertificateAuthority("impostor CA")
    with GatewayServer(tls=True, ca=impostor_ca) as impostor:
        key = MasterKey.generate()
        url = f"sqlite:///{tmp_path}/registry.db"
        with open_registry(url, key) as registry:
            pin = impostor.server_cert.spki_sha256_pin  # type: ignore[union-attr]
            registry.put(
                gateway_entry(
                    impostor.url + "/pay",
                    "al",
                    tls=profile(wire_ca, "alice", pins=(wire_ca.spki_sha256_pin,)),
                )
            )
        with sqlite3.connect(tmp_path / "registry.db") as db:
            (settings,) = db.execute("SELECT settings FROM entries").fetchone()
            edited = json.loads(settings)
            edited["tls"]["pins"] = [pin]
            edited["tls"]["ca_bundle"] = impostor_ca.cert_pem.decode()
            db.execute("UPDATE entries SET settings = ?", (json.dumps(edited),))
        with (
            open_registry(url, key) as registry,
            SecureSession(registry) as session,
            pytest.raises(RegistryCorruptError, match="entry authentication failed"),
        ):
            session.get(impostor.url + "/pay/x")
        assert impostor.requests == []


# -- 7. smaller ones (the session's own) ------------------------------------------------


def test_group7_a_session_cannot_be_pickled_or_copied(registry: Registry) -> None:
    with SecureSession(registry) as session:
        for attempt in (pickle.dumps, copy.copy, copy.deepcopy):
            with pytest.raises(TypeError, match="open a new SecureSession"):
                attempt(session)


def test_group7_a_pickled_request_carries_plain_values(
    origins: Origins, registry: Registry
) -> None:
    """A pickled request's values become plain strings (a plan cannot cross a process);
    sent again to the same URL, they are the caller's and go as they are."""
    server = origins.plain_c
    registry.put(gateway_entry(server.url + "/a", "pk"))
    with SecureSession(registry) as session:
        sent = session.get(server.url + "/a/x").request
        restored = pickle.loads(pickle.dumps(sent))  # noqa: S301 - our own object
        assert all(type(value) is str for value in restored.headers.values())
        session.send(restored)
    assert [tags_seen(r, ["pk"]) for r in server.requests] == [{"pk"}, {"pk"}]
