"""SecureSession when the registry fails: fail closed by default, or serve a warm cache
for N s with ``stale_on_error=N``; and an entry removed between lookup and load."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest

from securesession import (
    Credential,
    EntryRef,
    MasterKey,
    NoCredentialsError,
    Registry,
    RegistryCorruptError,
    RegistryError,
    SecureSession,
    ServiceEntry,
    open_registry,
)
from securesession.testing import GatewayServer


class FlakyRegistry:
    """A registry whose lookups (and loads) can be switched to fail like a lost database."""

    def __init__(self, inner: Registry) -> None:
        self.inner = inner
        self.down = False
        self.loads_fail = False

    def _fail(self) -> None:
        raise RegistryError("cannot look up in registry flaky://: connection lost (test)")

    def lookup(self, url: str) -> EntryRef | None:
        if self.down:
            self._fail()
        return self.inner.lookup(url)

    def load(self, ref: EntryRef) -> ServiceEntry | None:
        if self.down or self.loads_fail:
            self._fail()
        return self.inner.load(ref)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def put(registry: Registry, url: str, version: str) -> ServiceEntry:
    return registry.put(
        ServiceEntry(url=url, gateway=Credential("gw-user", f"gw-SECRET-{version}"))
    )


@pytest.fixture
def server() -> Iterator[GatewayServer]:
    with GatewayServer() as server:
        yield server


@pytest.fixture
def flaky() -> Iterator[FlakyRegistry]:
    inner = open_registry("memory://", MasterKey.generate())
    yield FlakyRegistry(inner)
    inner.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def password_seen(server: GatewayServer) -> str | None:
    return server.requests[-1].header("X-Gateway-Password")


def test_default_fails_closed_and_sends_nothing(
    flaky: FlakyRegistry, server: GatewayServer
) -> None:
    put(flaky, server.url + "/svc", "v1")
    with SecureSession(flaky) as session:
        session.get(server.url + "/svc/a")
        flaky.down = True
        with pytest.raises(RegistryError, match="connection lost"):
            session.get(server.url + "/svc/a")
    assert len(server.requests) == 1


def test_warm_entry_is_served_while_the_registry_is_down(
    flaky: FlakyRegistry, server: GatewayServer, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    put(flaky, server.url + "/svc", "v1")
    with SecureSession(flaky, stale_on_error=60, timer=clock) as session:
        session.get(server.url + "/svc/a?x=1")
        session.get(server.url + "/other")  # matched no entry
        flaky.down = True
        clock.now += 59
        assert session.get(server.url + "/svc/a?x=2").status_code == 200
        assert password_seen(server) == "gw-SECRET-v1"
        assert session.get(server.url + "/other").status_code == 200
        assert password_seen(server) is None  # no entry then, none now
        # A URL never looked up cannot be matched safely: a longer entry might
        # exist for it, and guessing could hand it another entry's credentials.
        with pytest.raises(RegistryError):
            session.get(server.url + "/svc/b")
    assert "serving cached entries" in caplog.text
    assert "SECRET" not in caplog.text


def test_stale_service_stops_after_n_seconds(
    flaky: FlakyRegistry, server: GatewayServer, clock: Clock
) -> None:
    put(flaky, server.url + "/svc", "v1")
    with SecureSession(
        flaky,
        cache_ttl=300,
        stale_on_error=30,
        timer=clock,
    ) as session:
        session.get(server.url + "/svc/a")
        flaky.down = True
        clock.now += 31
        with pytest.raises(RegistryError):
            session.get(server.url + "/svc/a")
    assert len(server.requests) == 1


def test_entry_decrypted_long_ago_is_not_served_stale(
    flaky: FlakyRegistry, server: GatewayServer, clock: Clock
) -> None:
    put(flaky, server.url + "/svc", "v1")
    with SecureSession(
        flaky,
        cache_ttl=300,
        stale_on_error=30,
        timer=clock,
    ) as session:
        session.get(server.url + "/svc/a")  # decrypted at t=0
        clock.now += 25
        session.get(server.url + "/svc/a")  # looked up again at t=25, served from cache
        flaky.down = True
        clock.now += 10  # lookup 10 s old, but decrypted 35 s ago
        with pytest.raises(RegistryError):
            session.get(server.url + "/svc/a")


def test_known_change_is_never_served_stale(flaky: FlakyRegistry, server: GatewayServer) -> None:
    put(flaky, server.url + "/svc", "v1")
    with SecureSession(flaky, stale_on_error=60) as session:
        session.get(server.url + "/svc/a")
        put(flaky, server.url + "/svc", "v2")
        flaky.loads_fail = True  # the lookup sees v2, but v2 cannot be loaded
        with pytest.raises(RegistryError):
            session.get(server.url + "/svc/a")
        flaky.loads_fail = False
        session.get(server.url + "/svc/a")
        assert password_seen(server) == "gw-SECRET-v2"
    assert [r.header("X-Gateway-Password") for r in server.requests] == [
        "gw-SECRET-v1",
        "gw-SECRET-v2",
    ]


def test_recovery_serves_fresh_entries_again(
    flaky: FlakyRegistry, server: GatewayServer, caplog: pytest.LogCaptureFixture
) -> None:
    put(flaky, server.url + "/svc", "v1")
    with SecureSession(flaky, stale_on_error=60) as session:
        session.get(server.url + "/svc/a")
        flaky.down = True
        session.get(server.url + "/svc/a")
        put(flaky.inner, server.url + "/svc", "v2")
        flaky.down = False
        session.get(server.url + "/svc/a")
        assert password_seen(server) == "gw-SECRET-v2"
    assert "registry reachable again" in caplog.text


def test_strict_session_still_refuses_a_url_that_had_no_entry(
    flaky: FlakyRegistry, server: GatewayServer
) -> None:
    with SecureSession(flaky, stale_on_error=60, strict=True) as session:
        with pytest.raises(NoCredentialsError):
            session.get(server.url + "/none")
        flaky.down = True
        with pytest.raises(NoCredentialsError):
            session.get(server.url + "/none")
    assert server.requests == []


@pytest.mark.parametrize("value", [-1.0, 301.0])
def test_stale_on_error_is_bounded_by_the_ttl(flaky: FlakyRegistry, value: float) -> None:
    with pytest.raises(ValueError, match="stale_on_error"):
        SecureSession(flaky, cache_ttl=300, stale_on_error=value)


def test_basic_credentials_are_served_stale_too(
    flaky: FlakyRegistry, server: GatewayServer
) -> None:
    flaky.put(
        ServiceEntry(
            url=server.url + "/b",
            gateway=None,
            request=Credential("CORP\\svc", "req-SECRET-1"),
        )
    )
    with SecureSession(flaky, stale_on_error=5) as session:
        session.get(server.url + "/b/x")
        flaky.down = True
        session.get(server.url + "/b/x")
    expected = "Basic " + base64.b64encode(b"CORP\\svc:req-SECRET-1").decode()
    assert [r.header("Authorization") for r in server.requests] == [expected, expected]


# -- an entry removed between lookup and load -----------------------------------------


class RacingRegistry(FlakyRegistry):
    """Another process removes the entry just after our lookup found it."""

    def __init__(self, inner: Registry, victim: str) -> None:
        super().__init__(inner)
        self.victim = victim
        self.corrupt = False

    def load(self, ref: EntryRef) -> ServiceEntry | None:
        if self.corrupt:
            raise RegistryCorruptError(f"entry {ref.key}: unknown settings format")
        if ref.key == self.victim:
            self.inner.remove(self.victim)
        return self.inner.load(ref)


def test_entry_removed_while_loading_is_looked_up_again(server: GatewayServer) -> None:
    inner = open_registry("memory://", MasterKey.generate())
    put(inner, server.url + "/svc", "parent")
    child = put(inner, server.url + "/svc/sub", "child")
    racing = RacingRegistry(inner, child.url)
    with SecureSession(racing) as session:
        session.get(server.url + "/svc/sub/x")
    assert password_seen(server) == "gw-SECRET-parent"


class LaggingRegistry(FlakyRegistry):
    """A registry whose lookups still name an entry that is already gone, as a
    change feed that has not caught up (PostgreSQL's LISTEN/NOTIFY index) would."""

    def __init__(self, inner: Registry, gone: EntryRef) -> None:
        super().__init__(inner)
        self.gone = gone

    def lookup(self, url: str) -> EntryRef | None:
        return self.gone


def test_an_entry_the_lookup_still_names_but_is_gone_is_no_entry(
    server: GatewayServer,
) -> None:
    inner = open_registry("memory://", MasterKey.generate())
    put(inner, server.url + "/svc", "v1")
    gone = inner.lookup(server.url + "/svc/x")
    assert gone is not None and inner.remove(server.url + "/svc")
    assert inner.load(gone) is None
    lagging = LaggingRegistry(inner, gone)
    with SecureSession(lagging) as session:
        assert session.get(server.url + "/svc/x").status_code == 200
    assert password_seen(server) is None  # sent as unmatched, not failed, not stale
    with (
        SecureSession(lagging, strict=True) as strict,
        pytest.raises(NoCredentialsError),
    ):
        strict.get(server.url + "/svc/x")


def test_a_corrupt_entry_stays_an_error(server: GatewayServer) -> None:
    inner = open_registry("memory://", MasterKey.generate())
    put(inner, server.url + "/svc", "v1")
    racing = RacingRegistry(inner, "")
    racing.corrupt = True
    with SecureSession(racing) as session, pytest.raises(RegistryCorruptError):
        session.get(server.url + "/svc/x")
    assert server.requests == []
