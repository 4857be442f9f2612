"""SecureSession against a real loopback server that records what it receives."""

from __future__ import annotations

import base64
import threading
import time
from pathlib import Path

import pytest
import requests

from securesession import (
    Credential,
    DecryptionError,
    MasterKey,
    NoCredentialsError,
    Registry,
    SecureSession,
    ServiceEntry,
    open_registry,
)
from securesession.testing import GatewayServer, RecordedRequest


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def add(registry: Registry, url: str, tag: str, **options: object) -> ServiceEntry:
    return registry.put(
        ServiceEntry(
            url=url,
            gateway=Credential(f"gw-{tag}", f"gw-SECRET-{tag}"),
            request=Credential(f"CORP\\{tag}", f"req-SECRET-{tag}"),
            **options,  # type: ignore[arg-type]
        )
    )


def injected_tag(record: RecordedRequest) -> str | None:
    """Which entry's credentials a recorded request carried (None: none at all)."""
    user = record.header("X-Gateway-User")
    password = record.header("X-Gateway-Password")
    authorization = record.header("Authorization")
    if user is None and password is None and authorization is None:
        return None
    tag = (user or "").removeprefix("gw-")
    assert password == f"gw-SECRET-{tag}"
    assert authorization == basic(f"CORP\\{tag}", f"req-SECRET-{tag}")
    return tag


# -- injection ----------------------------------------------------------------------


def test_default_modes_satisfy_a_checking_gateway(registry: Registry) -> None:
    with GatewayServer(
        expect_gateway=("gw-pay", "gw-SECRET-pay"), expect_request=("CORP\\pay", "req-SECRET-pay")
    ) as gateway:
        add(registry, gateway.url + "/payments/", "pay")
        with SecureSession(registry) as session:
            assert session.get(gateway.url + "/payments/bills/42").status_code == 200
            assert (
                session.get(gateway.url + "/paymentsx").status_code == 401
            )  # no entry: nothing sent
        assert [injected_tag(r) for r in gateway.requests] == ["pay", None]


def test_every_path_into_the_wire_injects(
    session: SecureSession, registry: Registry, server: GatewayServer
) -> None:
    add(registry, server.url + "/svc/", "svc")
    session.get(server.url + "/svc/a")
    session.post(server.url + "/svc/b", data=b"x")
    session.request("PUT", server.url + "/svc/c")
    session.send(session.prepare_request(requests.Request("GET", server.url + "/svc/d")))
    session.send(requests.Request("DELETE", server.url + "/svc/e").prepare())
    assert [injected_tag(r) for r in server.requests] == ["svc"] * 5


def test_segment_boundaries_scheme_and_port(
    session: SecureSession, registry: Registry, server: GatewayServer
) -> None:
    add(registry, server.url + "/payments", "pay")
    add(registry, f"https://127.0.0.1:{server.port}/", "tls-only")  # https entry never matches http
    add(registry, "http://127.0.0.1:1/", "other-port")
    for path in (
        "/payments",
        "/payments/",
        "/payments/x",
        "/paymentsx",
        "/payments/../admin",
        "/%70ayments/y",
    ):
        session.get(server.url + path)
    assert [injected_tag(r) for r in server.requests] == ["pay", "pay", "pay", None, None, "pay"]


def test_other_modes(session: SecureSession, registry: Registry, server: GatewayServer) -> None:
    registry.put(
        ServiceEntry(
            url=server.url + "/bearer/",
            gateway=Credential("bridge", "gw-SECRET"),
            request=Credential.token("tok-SECRET"),
            gateway_headers=("X-Bridge-User", "X-Bridge-Key"),
            request_auth="bearer",
            secret_headers={"X-Api-Key": "api-SECRET"},
        )
    )
    registry.put(
        ServiceEntry(
            url=server.url + "/headers/",
            gateway=Credential.token("gwtok-SECRET"),
            request=Credential("alice", "alice-SECRET"),
            request_auth="headers",
        )
    )
    registry.put(ServiceEntry(url=server.url + "/none/", gateway_auth="none", request_auth="none"))
    session.get(server.url + "/bearer/x")
    session.get(server.url + "/headers/x")
    session.get(server.url + "/none/x")
    bearer, headers, none = server.requests
    assert bearer.header("Authorization") == "Bearer tok-SECRET"
    assert (bearer.header("X-Bridge-User"), bearer.header("X-Bridge-Key")) == (
        "bridge",
        "gw-SECRET",
    )
    assert bearer.header("X-Api-Key") == "api-SECRET" and bearer.header("X-Gateway-User") is None
    assert (
        headers.header("X-Gateway-User") is None
        and headers.header("X-Gateway-Password") == "gwtok-SECRET"
    )
    assert (headers.header("X-Request-User"), headers.header("X-Request-Password")) == (
        "alice",
        "alice-SECRET",
    )
    assert headers.header("Authorization") is None
    assert none.header("Authorization") is None and none.header("X-Gateway-User") is None


def test_caller_headers_and_auth_win(
    session: SecureSession, registry: Registry, server: GatewayServer
) -> None:
    add(registry, server.url + "/svc/", "svc")
    session.get(server.url + "/svc/1", headers={"x-gateway-user": "mine"}, auth=("me", "my-pw"))
    session.auth = ("session-user", "session-pw")
    session.get(server.url + "/svc/2")
    first, second = server.requests
    assert first.header("X-Gateway-User") == "mine"
    assert first.header("X-Gateway-Password") == "gw-SECRET-svc"  # the rest still injected
    assert first.header("Authorization") == basic("me", "my-pw")
    assert second.header("Authorization") == basic("session-user", "session-pw")


def test_netrc_never_beats_the_registry(
    session: SecureSession,
    registry: Registry,
    server: GatewayServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login netrc-user password netrc-pw\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    add(registry, server.url + "/svc/", "svc")
    session.get(server.url + "/svc/x")
    session.get(server.url + "/elsewhere")
    registered, unregistered = server.requests
    assert injected_tag(registered) == "svc"
    assert unregistered.header("Authorization") == basic("netrc-user", "netrc-pw")


def test_netrc_is_read_only_for_urls_without_an_entry(
    session: SecureSession,
    registry: Registry,
    server: GatewayServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reads: list[str] = []

    def fake_netrc(url: str) -> tuple[str, str]:
        reads.append(url)
        return ("netrc-user", "netrc-pw")

    # Where requests' own tests patch it: read at call time, as requests does.
    monkeypatch.setattr(requests.sessions, "get_netrc_auth", fake_netrc)
    add(registry, server.url + "/svc/", "svc")
    server.redirect("/svc/hop", server.url + "/public/landing")
    session.get(server.url + "/svc/x")
    assert reads == []  # a registered URL never touches the file system for netrc
    session.get(server.url + "/svc/hop")  # ... but the unregistered hop gets netrc, as in requests
    assert reads == [server.url + "/public/landing"]
    session.send(requests.Request("GET", server.url + "/public/raw").prepare())
    assert len(reads) == 1  # a request prepared without the session never had netrc
    hop, landing, raw = server.requests[1:]
    assert injected_tag(hop) == "svc"
    assert landing.header("Authorization") == basic("netrc-user", "netrc-pw")
    assert raw.header("Authorization") is None


def test_strict_refuses_before_the_wire(registry: Registry, server: GatewayServer) -> None:
    add(registry, server.url + "/svc/", "svc")
    with SecureSession(registry, strict=True) as session:
        assert session.get(server.url + "/svc/x").status_code == 200
        with pytest.raises(
            NoCredentialsError, match=r"no registry entry matches http://127\.0\.0\.1:\d+/other"
        ) as caught:
            session.get(server.url + "/other?token=SECRET")
    assert "SECRET" not in str(caught.value)
    assert len(server.requests) == 1


def test_digest_answers_the_challenge(
    session: SecureSession, registry: Registry, server: GatewayServer
) -> None:
    registry.put(
        ServiceEntry(
            url=server.url + "/d/", request=Credential("dave", "dave-SECRET"), request_auth="digest"
        )
    )
    server.respond(
        "/d/", status=401, headers={"WWW-Authenticate": 'Digest realm="r", nonce="abc", qop="auth"'}
    )
    session.get(server.url + "/d/x")
    challenge, answer = server.requests[:2]
    assert challenge.header("Authorization") is None
    authorization = answer.header("Authorization") or ""
    assert authorization.startswith('Digest username="dave", realm="r", nonce="abc"')
    assert "dave-SECRET" not in authorization


def test_ntlm_starts_the_handshake(
    session: SecureSession, registry: Registry, server: GatewayServer
) -> None:
    registry.put(
        ServiceEntry(
            url=server.url + "/n/",
            request=Credential("CORP\\nina", "nina-SECRET"),
            request_auth="ntlm",
        )
    )
    server.respond("/n/", status=401, headers={"WWW-Authenticate": "NTLM"})
    with pytest.raises(PermissionError, match="NTLM challenge"):  # our fake server stops here
        session.get(server.url + "/n/x")
    assert server.requests[0].header("Authorization") is None
    assert (server.requests[1].header("Authorization") or "").startswith("NTLM ")


# -- redirects ----------------------------------------------------------------------


def test_redirect_hops_get_their_own_entry_only(
    session: SecureSession, registry: Registry, server: GatewayServer, other_server: GatewayServer
) -> None:
    add(registry, server.url + "/a/", "a")
    add(registry, server.url + "/b/", "b")
    add(registry, other_server.url + "/c/", "c")
    server.redirect("/a/", server.url + "/b/1")  # same origin, another entry
    server.redirect("/b/", server.url + "/plain")  # same origin, no entry
    server.redirect("/plain", other_server.url + "/c/1")  # other origin with an entry
    other_server.redirect("/c/", other_server.url + "/none")  # ... then to a path with none
    response = session.get(server.url + "/a/1")
    assert response.status_code == 200 and len(response.history) == 4
    hops = [*server.requests, *other_server.requests]
    assert [(r.path, injected_tag(r)) for r in hops] == [
        ("/a/1", "a"),
        ("/b/1", "b"),
        ("/plain", None),
        ("/c/1", "c"),
        ("/none", None),
    ]


def test_redirect_to_an_unregistered_host_strips_custom_headers(
    session: SecureSession, registry: Registry, server: GatewayServer, other_server: GatewayServer
) -> None:
    add(registry, server.url + "/", "a", secret_headers={"X-Api-Key": "api-SECRET"})
    server.redirect("/go", other_server.url + "/landing", status=307)
    session.post(server.url + "/go", data=b"body")
    (landing,) = other_server.requests
    assert all(
        landing.header(name) is None
        for name in ("X-Gateway-User", "X-Gateway-Password", "Authorization", "X-Api-Key")
    )
    assert landing.body == b"body"  # 307 replays the body, without the credentials


def test_strict_session_refuses_a_redirect_to_an_unregistered_url(
    registry: Registry, server: GatewayServer, other_server: GatewayServer
) -> None:
    add(registry, server.url + "/", "a")
    server.redirect("/go", other_server.url + "/landing")
    with SecureSession(registry, strict=True) as session, pytest.raises(NoCredentialsError):
        session.get(server.url + "/go")
    assert other_server.requests == []


def test_no_credentials_follow_https_to_http(
    registry: Registry, server: GatewayServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    with GatewayServer(tls=True) as tls_server:
        ca = tmp_path / "ca.pem"
        ca.write_bytes(tls_server.ca_pem)
        add(registry, tls_server.url + "/", "tls")
        add(registry, server.url + "/", "plain")  # even an http entry is not applied on a downgrade
        tls_server.redirect("/down", server.url + "/landing")
        with SecureSession(registry) as session:
            session.verify = str(ca)
            assert session.get(tls_server.url + "/down").status_code == 200
        with SecureSession(registry, strict=True) as strict:
            strict.verify = str(ca)
            with pytest.raises(NoCredentialsError, match="refusing redirect from https to http"):
                strict.get(tls_server.url + "/down")
        assert [injected_tag(r) for r in tls_server.requests] == ["tls", "tls"]
    assert [injected_tag(r) for r in server.requests] == [None]


# -- 401 / 407 refresh ------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 407])
def test_changed_credentials_are_reloaded_and_retried_once(
    session: SecureSession, registry: Registry, server: GatewayServer, status: int
) -> None:
    add(registry, server.url + "/svc/", "old")
    server.respond("/svc/", status=status)

    def rotate_credentials(response: requests.Response, **_: object) -> requests.Response:
        if response.status_code == status:
            server.clear_routes()  # the service now accepts ...
            add(registry, server.url + "/svc/", "new")  # ... the credentials stored meanwhile
        return response

    session.hooks["response"].append(rotate_credentials)
    response = session.get(server.url + "/svc/x")
    assert response.status_code == 200
    assert [r.status_code for r in response.history] == [status]
    assert [injected_tag(r) for r in server.requests] == ["old", "new"]


def test_unchanged_credentials_are_not_retried(
    session: SecureSession, registry: Registry, server: GatewayServer
) -> None:
    add(registry, server.url + "/svc/", "svc")
    server.respond("/svc/", status=401)
    assert session.get(server.url + "/svc/x").status_code == 401
    assert len(server.requests) == 1
    assert session.cache_info().loads == 2  # dropped from the cache and reloaded once


def test_a_streamed_body_is_not_replayed(
    session: SecureSession, registry: Registry, server: GatewayServer
) -> None:
    add(registry, server.url + "/svc/", "old")
    server.respond("/svc/", status=401)
    session.hooks["response"].append(
        lambda r, **_: add(registry, server.url + "/svc/", "new") and r
    )
    response = session.post(server.url + "/svc/x", data=iter([b"chunk"]))
    assert response.status_code == 401 and len(server.requests) == 1


# -- cache ----------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def count_decryptions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    original = MasterKey.decrypt

    def counting(self: MasterKey, token: str, context: bytes) -> bytes:
        calls[0] += 1
        return original(self, token, context)

    monkeypatch.setattr(MasterKey, "decrypt", counting)
    return calls


def test_warm_cache_decrypts_nothing_and_ttl_uses_the_injected_clock(
    registry: Registry, server: GatewayServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    add(registry, server.url + "/svc/", "svc")
    decryptions = count_decryptions(monkeypatch)
    clock = FakeClock()
    with SecureSession(registry, cache_ttl=60, timer=clock) as session:
        session.get(server.url + "/svc/1")
        assert (
            decryptions[0] == 5
        )  # one per secret field (two credentials, two fields each), one tag
        for index in range(20):
            session.get(server.url + f"/svc/{index}")
        assert decryptions[0] == 5
        clock.now += 59
        session.get(server.url + "/svc/x")
        assert decryptions[0] == 5
        clock.now += 2
        session.get(server.url + "/svc/x")
        assert decryptions[0] == 10
        session.clear_cache()
        session.get(server.url + "/svc/x")
        assert decryptions[0] == 15
        info = session.cache_info()
        assert (info.loads, info.size) == (3, 1) and info.hits == 21


def test_an_updated_entry_is_never_served_stale(
    session: SecureSession, registry: Registry, server: GatewayServer
) -> None:
    add(registry, server.url + "/svc/", "one")
    session.get(server.url + "/svc/x")
    add(registry, server.url + "/svc/", "two")
    session.get(server.url + "/svc/x")
    registry.remove(server.url + "/svc/")
    session.get(server.url + "/svc/x")
    add(registry, server.url + "/svc/", "three")
    session.get(server.url + "/svc/x")
    assert [injected_tag(r) for r in server.requests] == ["one", "two", None, "three"]
    assert session.cache_info().size == 1  # older revisions are dropped, not kept


def test_concurrent_misses_decrypt_once(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    add(registry, "https://svc.test/", "svc")
    decryptions = count_decryptions(monkeypatch)
    original_load = registry.load

    def slow_load(ref):  # type: ignore[no-untyped-def]
        time.sleep(0.05)
        return original_load(ref)

    monkeypatch.setattr(registry, "load", slow_load)
    barrier = threading.Barrier(8)
    with SecureSession(registry) as session:

        def miss() -> None:
            barrier.wait()
            assert session.entry_for("https://svc.test/x") is not None

        threads = [threading.Thread(target=miss) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert decryptions[0] == 5


def test_sixteen_threads_only_ever_send_their_own_credentials(
    registry: Registry, server: GatewayServer
) -> None:
    for index in range(16):
        add(registry, server.url + f"/svc{index}/", str(index))
    errors: list[BaseException] = []
    with SecureSession(registry) as session:

        def call(index: int) -> None:
            try:
                for attempt in range(15):
                    assert (
                        session.get(server.url + f"/svc{index}/call/{attempt}").status_code == 200
                    )
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=call, args=(n,)) for n in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    assert len(server.requests) == 16 * 15
    for record in server.requests:
        assert injected_tag(record) == record.path.split("/")[1].removeprefix("svc")


# -- failures -----------------------------------------------------------------------------


def test_wrong_key_or_tampered_entry_sends_nothing(
    tmp_path: Path, server: GatewayServer, key: MasterKey
) -> None:
    import sqlite3

    path = tmp_path / "registry.db"
    registry = open_registry(f"sqlite://{path}", key)
    add(registry, server.url + "/a/", "a")
    add(registry, server.url + "/b/", "b")
    with sqlite3.connect(path) as db:  # swap the ciphertexts of two entries
        rows = dict(db.execute("SELECT key, secrets FROM entries"))
        (key_a, secrets_a), (key_b, secrets_b) = sorted(rows.items())
        db.execute("UPDATE entries SET secrets = ? WHERE key = ?", (secrets_b, key_a))
        db.execute("UPDATE entries SET secrets = ? WHERE key = ?", (secrets_a, key_b))
    with (
        SecureSession(registry) as session,
        pytest.raises(DecryptionError, match="moved from another entry or field"),
    ):
        session.get(server.url + "/a/x")
    registry.close()
    with pytest.raises(DecryptionError, match="wrong master key"):
        open_registry(f"sqlite://{path}", MasterKey.generate())
    assert server.requests == []


def test_reprs_hold_no_secret(
    session: SecureSession, registry: Registry, server: GatewayServer
) -> None:
    add(registry, server.url + "/svc/", "svc")
    plan = session._guard.plan_for(server.url + "/svc/x")
    for obj in (
        session,
        registry,
        plan,
        session.entry_for(server.url + "/svc/x"),
        session.cache_info(),
    ):
        assert "SECRET" not in repr(obj) and "SECRET" not in str(obj)


def test_matched_entry_and_cache_miss_are_logged(
    session: SecureSession,
    registry: Registry,
    server: GatewayServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    add(registry, server.url + "/svc/", "svc")
    with caplog.at_level("DEBUG", logger="securesession"):
        session.get(server.url + "/svc/x")
        session.get(server.url + "/svc/y")
    text = caplog.text
    assert text.count(f"cache miss: decrypting entry {server.url}/svc (revision 1)") == 1
    assert text.count(f"cache hit: entry {server.url}/svc (revision 1)") == 1
    injected = "X-Gateway-User, X-Gateway-Password, Authorization"
    assert f"entry {server.url}/svc matched; injected {injected}" in text


def test_entry_for_is_the_matched_entry_and_plan_for_is_deprecated(
    session: SecureSession, registry: Registry, server: GatewayServer
) -> None:
    add(registry, server.url + "/svc/", "svc")
    entry = session.entry_for(server.url + "/svc/x")
    assert entry is not None and entry.url == server.url + "/svc"
    assert session.entry_for(server.url + "/other") is None
    with pytest.warns(DeprecationWarning, match="entry_for"):
        plan = session.plan_for(server.url + "/svc/x")
    assert plan is not None and plan.entry == entry


def test_injected_by_names_the_entry_of_an_injected_value(
    session: SecureSession, registry: Registry, server: GatewayServer
) -> None:
    from securesession import injected_by

    add(registry, server.url + "/svc/", "svc")
    sent = session.get(server.url + "/svc/x", headers={"X-Mine": "mine"}).request
    entry = session.entry_for(server.url + "/svc/x")
    assert injected_by(sent.headers["X-Gateway-Password"]) == entry
    assert injected_by(sent.headers["Authorization"]) == entry
    assert injected_by(sent.headers["X-Mine"]) is None
    assert injected_by("gw-SECRET") is None
