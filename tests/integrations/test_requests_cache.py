"""requests-cache over SecureSession: nothing injected reaches the cache's files, and a
cached response is never served across registry entries.

Every test runs real requests against loopback GatewayServers, then reads back every
byte the cache wrote (SQLite and filesystem backends) and looks for every secret, in
clear and in base64 (HTTP Basic). The naive ``class S(CacheMixin, SecureSession)`` is
run through the same scan, so the scan is shown to find what it looks for.
"""

from __future__ import annotations

import base64
import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import requests_cache
from requests_cache import CacheMixin

from securesession import (
    Credential,
    MasterKey,
    NoCredentialsError,
    Registry,
    SecureSession,
    ServiceEntry,
    TLSProfile,
    open_registry,
)
from securesession.integrations.requests_cache import CachedSecureSession
from securesession.testing import GatewayServer

from ..guard_options import Clock, add_entries, check_guard_options, guard_options
from ..secretscan import leaks

GATEWAY = ("bridge", "gw-SECRET")
ALICE = ("alice", "alice-SECRET")
SECRETS = ("gw-SECRET", "alice-SECRET", "key-SECRET", "late-SECRET", "b-key-SECRET")
BACKENDS = ("sqlite", "filesystem")


# -- helpers ------------------------------------------------------------------------------


def _encodings(secret: str) -> list[bytes]:
    """*secret* as it could sit in a file: in clear, in base64, and as HTTP Basic
    ``user:secret`` for every user of these tests (base64 at any of the 3 alignments)."""
    forms = [secret.encode(), base64.b64encode(secret.encode())]
    for user in ("bridge", "alice", "bob"):
        forms.append(base64.b64encode(f"{user}:{secret}".encode()))
    return forms


def scan(root: Path, secrets: tuple[str, ...] = SECRETS) -> dict[str, list[str]]:
    """Which of *secrets* each file under *root* holds (only files that hold one)."""
    found: dict[str, list[str]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        hits = [s for s in secrets if any(form in data for form in _encodings(s))]
        if not hits and leaks(data.decode("latin-1")):
            hits = ["<a SECRET value>"]
        if hits:
            found[str(path.relative_to(root))] = hits
    return found


def cache_name(backend: str, root: Path) -> str:
    return str(root / ("cache.sqlite" if backend == "sqlite" else "cache"))


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def server() -> Iterator[GatewayServer]:
    with GatewayServer(expect_gateway=GATEWAY, expect_request=ALICE) as gateway:
        yield gateway


@pytest.fixture
def registry() -> Iterator[Registry]:
    registry = open_registry("memory://", MasterKey.generate())
    yield registry
    registry.close()


@pytest.fixture(autouse=True)
def _no_secret_in_requests_cache_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """The suite watches securesession's and urllib3's loggers; watch requests-cache's."""
    with caplog.at_level(logging.DEBUG, logger="requests_cache"):
        yield
    assert not [r for r in caplog.records if leaks(r.getMessage())]


def entry(url: str, **overrides: object) -> ServiceEntry:
    fields: dict[str, object] = {
        "url": url,
        "gateway": Credential(*GATEWAY),
        "request": Credential(*ALICE),
        "secret_headers": {"X-Api-Key": "key-SECRET"},
    }
    fields.update(overrides)
    return ServiceEntry(**fields)  # type: ignore[arg-type]


# -- the naive mixin: what the scan finds --------------------------------------------------


class NaiveSession(CacheMixin, SecureSession):
    """What users write without this integration."""


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_naive_mixin_writes_injected_secrets_in_clear(
    backend: str, tmp_path: Path, server: GatewayServer, registry: Registry
) -> None:
    registry.put(entry(server.url + "/api"))
    with NaiveSession(
        registry=registry, cache_name=cache_name(backend, tmp_path / "a"), backend=backend
    ) as session:
        assert session.get(server.url + "/api/x").status_code == 200
        assert session.get(server.url + "/api/x").from_cache
    found = {s for hits in scan(tmp_path / "a").values() for s in hits}
    # requests-cache redacts only Authorization, by default.
    assert found == {"gw-SECRET", "key-SECRET"}

    # Without that default, the Basic value is there too: the scan decodes base64.
    with NaiveSession(
        registry=registry,
        cache_name=cache_name(backend, tmp_path / "b"),
        backend=backend,
        ignored_parameters=(),
    ) as session:
        session.get(server.url + "/api/x")
    found = {s for hits in scan(tmp_path / "b").values() for s in hits}
    assert found == {"gw-SECRET", "key-SECRET", "alice-SECRET"}


def test_the_naive_mixin_serves_a_response_after_its_entry_is_removed(
    tmp_path: Path, server: GatewayServer, registry: Registry
) -> None:
    registry.put(entry(server.url + "/api"))
    with NaiveSession(registry=registry, cache_name=str(tmp_path / "c.sqlite")) as session:
        session.get(server.url + "/api/x")
        registry.remove(server.url + "/api")
        # Keyed by URL only: the credentialed response, for a URL without an entry.
        assert session.get(server.url + "/api/x").from_cache


# -- CachedSecureSession: nothing secret is written ----------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_injected_value_is_written(backend: str, tmp_path: Path, registry: Registry) -> None:
    bridge = ("x-bridge-user", "x-bridge-key")  # lower case: redacted all the same
    server = GatewayServer(expect_gateway=GATEWAY, gateway_headers=bridge, expect_request=ALICE)
    with server:
        _no_injected_value_is_written(backend, tmp_path, server, registry, bridge)


def _no_injected_value_is_written(
    backend: str,
    tmp_path: Path,
    server: GatewayServer,
    registry: Registry,
    bridge: tuple[str, str],
) -> None:
    api = server.url + "/api"
    registry.put(entry(api, gateway_headers=bridge))
    server.redirect("/api/old", "/api/new")
    server.redirect("/api/moved", "/api/elsewhere")
    server.respond("/api/vary", body="{}", headers={"Vary": "X-Api-Key, Authorization"})
    root = tmp_path / "cache"
    with CachedSecureSession(
        registry,
        cache_name(backend, root),
        backend=backend,
        match_headers=True,
        allowable_codes=(200, 302),
    ) as session:
        # A header name added after the session was created (not in its redaction list).
        registry.put(
            entry(
                server.url + "/late",
                gateway_headers=bridge,
                secret_headers={"X-Late-Token": "late-SECRET"},
            )
        )
        first = session.get(api + "/x")
        again = session.get(api + "/x")
        redirected = session.get(api + "/old")
        unfollowed = session.get(api + "/moved", allow_redirects=False)  # stores .next
        vary = [session.get(api + "/vary") for _ in range(2)]
        late = [session.get(server.url + "/late/y") for _ in range(2)]
        assert isinstance(first.request, requests.PreparedRequest)
        resent = session.send(first.request)  # a request that still carries its values
        stored_redirect = session.cache.get_response(unfollowed.cache_key)

    assert first.status_code == 200 and not first.from_cache
    assert again.from_cache and again.content == first.content
    assert redirected.history and not redirected.from_cache
    assert unfollowed.is_redirect and unfollowed.next is not None
    assert stored_redirect is not None and stored_redirect.next is not None
    assert [r.from_cache for r in vary] == [False, True]
    assert [r.from_cache for r in late] == [False, True]
    assert resent.from_cache
    # Every request that reached the server was authenticated, with the entry's values.
    assert {r.status for r in server.requests} <= {200, 302}
    assert server.requests[0].header("x-bridge-key") == "gw-SECRET"
    assert server.requests[0].header("X-Api-Key") == "key-SECRET"

    assert scan(root) == {}
    assert any(p.is_file() and p.stat().st_size > 0 for p in root.rglob("*"))


def test_the_stored_request_is_what_the_caller_sent(
    tmp_path: Path, server: GatewayServer, registry: Registry
) -> None:
    registry.put(entry(server.url + "/api"))
    with CachedSecureSession(registry, str(tmp_path / "c.sqlite")) as session:
        session.get(server.url + "/api/x", headers={"X-Trace": "t-1"})
        cached = session.get(server.url + "/api/x")
    assert cached.from_cache
    assert cached.request.headers["X-Trace"] == "t-1"
    for name in ("Authorization", "X-Gateway-User", "X-Gateway-Password", "X-Api-Key"):
        assert name not in cached.request.headers


def test_injected_values_never_enter_a_key(
    tmp_path: Path, server: GatewayServer, registry: Registry
) -> None:
    registry.put(entry(server.url + "/api"))
    with CachedSecureSession(registry, str(tmp_path / "c.sqlite"), match_headers=True) as session:
        response = session.get(server.url + "/api/x")
        carrying = response.request  # carries every injected value
        assert carrying.headers["X-Api-Key"] == "key-SECRET"
        bare = session.prepare_request(requests.Request("GET", server.url + "/api/x"))
        assert session.cache.create_key(carrying) == session.cache.create_key(bare)
        assert session.cache.contains(url=server.url + "/api/x")


# -- never across entries ------------------------------------------------------------------


def test_a_response_is_never_served_across_entries(
    tmp_path: Path, server: GatewayServer, registry: Registry
) -> None:
    url = server.url + "/api/v2/x"
    registry.put(entry(server.url + "/api"))
    with CachedSecureSession(registry, str(tmp_path / "c.sqlite")) as session:
        assert not session.get(url).from_cache  # entry /api
        assert session.get(url).from_cache

        # A more specific entry now governs the same URL: same requests-cache URL key.
        registry.put(entry(server.url + "/api/v2", secret_headers={"X-Api-Key": "b-key-SECRET"}))
        server.reset()
        other = session.get(url)
        assert not other.from_cache
        assert server.requests[-1].header("X-Api-Key") == "b-key-SECRET"
        assert session.get(url).from_cache

        # Back to the first entry (unchanged): its own response again.
        registry.remove(server.url + "/api/v2")
        assert session.get(url).from_cache

        # No entry at all: never a credentialed response.
        registry.remove(server.url + "/api")
        server.reset()
        bare = session.get(url)
        assert not bare.from_cache and bare.status_code == 401
        assert server.requests[-1].header("X-Api-Key") is None


def test_a_url_cached_without_an_entry_is_fetched_again_once_it_has_one(
    tmp_path: Path, registry: Registry
) -> None:
    with (
        GatewayServer() as open_server,
        CachedSecureSession(registry, str(tmp_path / "c.sqlite")) as session,
    ):
        url = open_server.url + "/public/x"
        assert not session.get(url).from_cache
        assert session.get(url).from_cache
        registry.put(entry(open_server.url + "/public"))
        assert not session.get(url).from_cache
        assert open_server.requests[-1].header("X-Api-Key") == "key-SECRET"


def test_a_changed_entry_is_not_served_its_old_responses(
    tmp_path: Path, server: GatewayServer, registry: Registry
) -> None:
    api = server.url + "/api"
    registry.put(entry(api))
    with CachedSecureSession(registry, str(tmp_path / "c.sqlite")) as session:
        session.get(api + "/x")
        assert session.get(api + "/x").from_cache
        registry.put(entry(api, secret_headers={"X-Api-Key": "b-key-SECRET"}))  # revision 2
        assert not session.get(api + "/x").from_cache
        assert server.requests[-1].header("X-Api-Key") == "b-key-SECRET"
        assert session.get(api + "/x").from_cache


def test_a_response_fetched_under_a_newer_revision_than_its_key_is_not_stored(
    tmp_path: Path, server: GatewayServer, registry: Registry
) -> None:
    api = server.url + "/api"
    registry.put(entry(api))

    class Racing(CachedSecureSession):
        race = True

        def _stamp(self, plan: object) -> object:  # type: ignore[override]
            stamp = super()._stamp(plan)  # type: ignore[arg-type]
            if self.race:  # another process updates the entry right after the key
                self.race = False
                registry.put(entry(api, secret_headers={"X-Api-Key": "b-key-SECRET"}))
            return stamp

    with Racing(registry, str(tmp_path / "c.sqlite")) as session:
        assert session.get(api + "/x").status_code == 200
        assert server.requests[-1].header("X-Api-Key") == "b-key-SECRET"
        assert len(session.cache.responses) == 0  # not under the older revision's key
        assert not session.get(api + "/x").from_cache
        assert session.get(api + "/x").from_cache


def test_two_registries_sharing_one_cache_file_share_nothing(
    tmp_path: Path, server: GatewayServer
) -> None:
    url = server.url + "/api/x"
    path = str(tmp_path / "shared.sqlite")
    first = open_registry("memory://", MasterKey.generate())
    second = open_registry("memory://", MasterKey.generate())
    first.put(entry(server.url + "/api"))
    second.put(entry(server.url + "/api", secret_headers={"X-Api-Key": "b-key-SECRET"}))
    with CachedSecureSession(first, path) as one, CachedSecureSession(second, path) as two:
        assert not one.get(url).from_cache
        assert not two.get(url).from_cache
        assert server.requests[-1].header("X-Api-Key") == "b-key-SECRET"
        assert one.get(url).from_cache and two.get(url).from_cache
    first.close()
    second.close()
    assert scan(tmp_path) == {}


def test_a_hop_after_an_https_to_http_redirect_gets_no_entrys_response(
    tmp_path: Path, registry: Registry
) -> None:
    with (
        GatewayServer(tls=True) as tls_server,
        GatewayServer(expect_gateway=GATEWAY, expect_request=ALICE) as plain,
    ):
        target = plain.url + "/api/x"
        registry.put(entry(plain.url + "/api"))
        registry.put(entry(tls_server.url + "/go", tls=TLSProfile(ca_bundle=tls_server.ca_pem)))
        tls_server.redirect("/go", target)
        with CachedSecureSession(registry, str(tmp_path / "c.sqlite")) as session:
            assert session.get(target).status_code == 200  # cached, with the entry
            chain = session.get(tls_server.url + "/go/1")
        # The downgraded hop carries nothing, so it must not get the entry's response.
        assert not chain.from_cache and chain.status_code == 401
        assert plain.requests[-1].header("X-Api-Key") is None


def test_a_strict_session_refuses_before_reading_the_cache(
    tmp_path: Path, registry: Registry
) -> None:
    path = str(tmp_path / "c.sqlite")
    with GatewayServer() as open_server:
        url = open_server.url + "/nothing/here"
        with CachedSecureSession(registry, path) as lax:
            lax.get(url)
            assert lax.get(url).from_cache
        with (
            CachedSecureSession(registry, path, strict=True) as strict,
            pytest.raises(NoCredentialsError),
        ):
            strict.get(url)


def test_guard_keywords_go_to_the_session_and_the_others_to_requests_cache(
    tmp_path: Path, registry: Registry
) -> None:
    add_entries(registry)
    clock = Clock()
    with CachedSecureSession(
        registry, str(tmp_path / "c.sqlite"), expire_after=300, **guard_options(clock)
    ) as session:
        check_guard_options(clock, session, session.entry_for, lambda: session.cache_info().loads)
        assert session.settings.expire_after == 300


# -- credentials of the caller's own ---------------------------------------------------------


@pytest.mark.parametrize(
    "own",
    [
        {"auth": ("bob", "bob-SECRET")},
        {"headers": {"authorization": basic("bob", "bob-SECRET")}},
        {"headers": {"x-api-key": "bob-SECRET"}},
    ],
    ids=["auth", "lowercase-authorization", "own-api-key"],
)
def test_credentials_of_the_callers_own_bypass_the_cache(
    own: dict[str, object], tmp_path: Path, registry: Registry
) -> None:
    with GatewayServer(expect_gateway=GATEWAY) as gateway:
        registry.put(entry(gateway.url + "/api"))
        root = tmp_path / "cache"
        with CachedSecureSession(registry, str(root / "c.sqlite")) as session:
            answers = [session.get(gateway.url + "/api/x", **own) for _ in range(2)]
            assert not session.get(gateway.url + "/api/x", only_if_cached=True, **own).ok
            assert not session.get(gateway.url + "/api/x").from_cache  # none was stored
    assert [r.from_cache for r in answers] == [False, False]
    assert len(gateway.requests) == 3
    assert scan(root, (*SECRETS, "bob-SECRET")) == {}


# -- what is not supported ------------------------------------------------------------------


def test_wrap_is_refused(registry: Registry) -> None:
    with pytest.raises(TypeError, match="SecureAdapter"):
        CachedSecureSession.wrap(requests.Session())


def test_install_cache_does_not_reach_a_secure_session(
    tmp_path: Path, server: GatewayServer, registry: Registry
) -> None:
    registry.put(entry(server.url + "/api"))
    requests_cache.install_cache(str(tmp_path / "global.sqlite"))
    try:
        with SecureSession(registry) as session:
            answers = [session.get(server.url + "/api/x") for _ in range(2)]
        with CachedSecureSession(registry, str(tmp_path / "own.sqlite")) as cached:
            assert [cached.get(server.url + "/api/x").from_cache for _ in range(2)] == [
                False,
                True,
            ]
    finally:
        requests_cache.uninstall_cache()  # type: ignore[no-untyped-call]
    assert [a.status_code for a in answers] == [200, 200]
    assert not any(hasattr(a, "from_cache") for a in answers)  # the cache never saw them
    assert len(server.requests) == 3
    assert scan(tmp_path) == {}


def test_install_cache_before_importing_securesession_is_refused(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import requests_cache
        requests_cache.install_cache("global", backend="memory")
        from securesession import SecureSession
        from requests_cache import CacheMixin
        # SecureSession was built on the patched requests.Session: it caches by URL.
        assert issubclass(SecureSession, CacheMixin)
        try:
            import securesession.integrations.requests_cache
        except ImportError as exc:
            assert "install_cache" in str(exc), exc
            print("refused")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "refused"


def test_the_integrations_package_imports_without_requests_cache(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.modules["requests_cache"] = None  # as if it were not installed
        import securesession.integrations
        from securesession.integrations import injected_header_names
        try:
            import securesession.integrations.requests_cache
        except ImportError:
            print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
