"""The warm path: a URL served before gets its answer again without a lookup or a cache
read, only while nothing that answer depends on has changed.

Every way an answer can go stale is tried here: a write through the registry, a commit
by another connection to the same SQLite file (within, and past, its staleness bound),
a 401 after such a commit, the cache's TTL and ``clear_cache()``, a closed registry, an
expired client certificate; and every way a request could carry what it must not: a
redirect hop after an https → http downgrade, headers copied from another entry's
request.
"""

from __future__ import annotations

import base64
import gc
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from securesession import (
    ClientCertificateExpiredError,
    Credential,
    MasterKey,
    NoCredentialsError,
    Registry,
    RegistryError,
    ServiceEntry,
    TLSProfile,
)
from securesession._registry import EncryptedRegistry, EntryRef
from securesession._registry.sqlite import SQLiteStore
from securesession._tls import context as tls_context
from securesession.httpx import InvalidRequestURLError, SecureAsyncClient, SecureClient
from securesession.httpx._transport import AsyncSecureTransport, SecureTransport
from securesession.testing import GatewayServer, StubRegistry

from .httpx_helpers import client_cert, tagged, tags_in

URL = "https://svc.test/api/v1/orders/42"
TAGS = ["svc", "new", "deeper", "plain"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _echo(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=dict(request.headers))


def _counting(registry: Registry) -> list[Sequence[str]]:
    """Count *registry*'s store lookups (the full path's first step). The store's, not
    the registry's: a registry whose ``lookup`` is replaced has no warm path."""
    assert isinstance(registry, EncryptedRegistry)
    store = registry.store
    looked_up: list[Sequence[str]] = []
    find = store.find

    def counted(keys: Sequence[str]) -> EntryRef | None:
        looked_up.append(keys)
        return find(keys)

    store.find = counted  # type: ignore[method-assign]
    return looked_up


@pytest.fixture
def svc(registry: Registry) -> Registry:
    registry.put(tagged("https://svc.test/api", "svc"))
    return registry


def test_a_repeated_url_is_served_without_a_lookup(svc: Registry) -> None:
    looked_up = _counting(svc)
    with SecureClient(svc, transport=httpx.MockTransport(_echo)) as client:
        seen = [tags_in(client.get(URL).json(), TAGS) for _ in range(5)]
        # Another query string is the same answer: no lookup reads it.
        seen.append(tags_in(client.get(URL + "?page=2").json(), TAGS))
        info = client.cache_info()
    assert seen == [{"svc"}] * 6
    # The first request's load changed the cache after its answer was found, so the
    # second one looks up again; from the third on, the answer is reused.
    assert len(looked_up) == 2
    assert (info.loads, info.hits) == (1, 5)


@pytest.mark.anyio
async def test_a_repeated_url_is_served_without_a_lookup_async(svc: Registry) -> None:
    looked_up = _counting(svc)

    async def echo(request: httpx.Request) -> httpx.Response:
        return _echo(request)

    async with SecureAsyncClient(svc, transport=httpx.MockTransport(echo)) as client:
        seen = [tags_in((await client.get(URL)).json(), TAGS) for _ in range(5)]
        svc.put(tagged("https://svc.test/api", "new"))
        seen.append(tags_in((await client.get(URL)).json(), TAGS))
    assert seen == [{"svc"}] * 5 + [{"new"}]
    assert len(looked_up) == 3


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param(lambda r: r.put(tagged("https://svc.test/api", "new")), {"new"}, id="update"),
        pytest.param(
            lambda r: r.put(tagged("https://svc.test/api/v1", "deeper")), {"deeper"}, id="deeper"
        ),
        pytest.param(lambda r: r.remove("https://svc.test/api"), set(), id="remove"),
    ],
)
def test_a_change_through_the_registry_is_seen_by_the_next_request(
    svc: Registry, change: Callable[[Registry], object], expected: set[str]
) -> None:
    with SecureClient(svc, transport=httpx.MockTransport(_echo)) as client:
        for _ in range(3):
            assert tags_in(client.get(URL).json(), TAGS) == {"svc"}
        change(svc)
        assert tags_in(client.get(URL).json(), TAGS) == expected


@pytest.fixture
def sqlite_pair(tmp_path: Path) -> Iterator[tuple[Registry, Registry, Clock]]:
    """A reader over SQLite on an injected re-check clock, and a writer on the same
    file, as another process would be."""
    key = MasterKey.generate()
    path = tmp_path / "registry.db"
    clock = Clock()
    reader = EncryptedRegistry(SQLiteStore(path, clock=clock), key, name=f"sqlite://{path}")
    writer = EncryptedRegistry(SQLiteStore(path), key, name=f"sqlite://{path}")
    writer.put(tagged("https://svc.test/api", "svc"))
    yield reader, writer, clock
    reader.close()
    writer.close()


def test_a_commit_elsewhere_is_seen_within_the_recheck_interval(
    sqlite_pair: tuple[Registry, Registry, Clock],
) -> None:
    reader, writer, clock = sqlite_pair
    looked_up = _counting(reader)
    with SecureClient(reader, transport=httpx.MockTransport(_echo)) as client:
        for _ in range(3):
            assert tags_in(client.get(URL).json(), TAGS) == {"svc"}
        warm_lookups = len(looked_up)
        checked_at = clock.now  # the store's first lookup re-checked
        writer.put(tagged("https://svc.test/api", "new"))
        clock.now = checked_at + 0.0099  # within the 10 ms bound: may still be served
        assert tags_in(client.get(URL).json(), TAGS) == {"svc"}
        assert len(looked_up) == warm_lookups  # ... and was, from the warm path
        clock.now = checked_at + 0.010  # the bound: re-checked, the commit is seen
        assert tags_in(client.get(URL).json(), TAGS) == {"new"}


def test_a_401_on_the_warm_path_reloads_and_retries_at_once(
    sqlite_pair: tuple[Registry, Registry, Clock],
) -> None:
    """The clock never reaches the next re-check, so only the 401 can make the client
    see the new password: the reload reads the row itself."""
    reader, writer, _ = sqlite_pair
    accepted = {"svc-rq-SECRET"}
    sent: list[str] = []

    def gateway(request: httpx.Request) -> httpx.Response:
        password = base64.b64decode(request.headers["authorization"][6:]).decode().split(":")[1]
        sent.append(password)
        return httpx.Response(200 if password in accepted else 401)

    with SecureClient(reader, transport=httpx.MockTransport(gateway)) as client:
        for _ in range(3):
            assert client.get(URL).status_code == 200
        writer.put(tagged("https://svc.test/api", "new"))
        accepted = {"new-rq-SECRET"}
        assert client.get(URL).status_code == 200
        assert client.get(URL).status_code == 200
    assert sent == ["svc-rq-SECRET"] * 4 + ["new-rq-SECRET"] * 2


def test_the_ttl_and_clear_cache_end_a_warm_answer(svc: Registry) -> None:
    clock = Clock()
    with SecureClient(
        svc, transport=httpx.MockTransport(_echo), cache_ttl=10, timer=clock
    ) as client:
        for _ in range(3):
            client.get(URL)
        assert client.cache_info().loads == 1
        clock.now += 10  # the TTL ends: decrypted again
        client.get(URL)
        assert client.cache_info().loads == 2
        client.clear_cache()
        client.get(URL)
        assert client.cache_info().loads == 3


def test_a_closed_registry_is_refused_on_a_warm_url(svc: Registry) -> None:
    with SecureClient(svc, transport=httpx.MockTransport(_echo)) as client:
        for _ in range(3):
            client.get(URL)
        svc.close()
        with pytest.raises(RegistryError, match="closed"):
            client.get(URL)


def test_a_guard_serving_stale_entries_looks_up_every_request(svc: Registry) -> None:
    looked_up = _counting(svc)
    with SecureClient(svc, transport=httpx.MockTransport(_echo), stale_on_error=5) as client:
        for _ in range(4):
            client.get(URL)
    assert len(looked_up) == 4


def test_a_redirect_hop_to_a_warm_url_after_a_downgrade_carries_nothing(
    svc: Registry,
) -> None:
    svc.put(tagged("http://plain.test/api", "plain"))
    target = "http://plain.test/api/landing"

    def gateway(request: httpx.Request) -> httpx.Response:
        if request.url.host == "svc.test":
            return httpx.Response(302, headers={"Location": target})
        return httpx.Response(200, json=dict(request.headers))

    with SecureClient(svc, transport=httpx.MockTransport(gateway)) as client:
        assert client.get(URL).status_code == 302  # decrypted: the cache is settled
        for _ in range(3):  # the hop's URL is warm, with its own entry
            assert tags_in(client.get(target).json(), TAGS) == {"plain"}
        hits = client.cache_info().hits
        response = client.get(URL, follow_redirects=True)
        assert client.cache_info().hits == hits + 2  # no load: each leg had its answer
    assert response.url == target
    assert tags_in(response.json(), TAGS) == set()


def test_user_information_on_a_warm_url_is_refused(svc: Registry) -> None:
    """The warm answer is kept per URL with its user information: the same URL with
    ``user:password@`` takes the full path, which refuses it for a URL with an entry."""
    with SecureClient(svc, transport=httpx.MockTransport(_echo)) as client:
        for _ in range(3):
            client.get(URL)
        with pytest.raises(InvalidRequestURLError, match="user information"):
            client.get(URL.replace("https://", "https://me:pw@"))
        assert tags_in(client.get(URL).json(), TAGS) == {"svc"}


def test_another_entrys_headers_are_removed_on_the_warm_path(svc: Registry) -> None:
    svc.put(tagged("https://other.test/api", "plain"))
    other = "https://other.test/api/x"
    with SecureClient(svc, transport=httpx.MockTransport(_echo)) as client:
        copied = dict(client.get(other).request.headers)
        for _ in range(3):
            client.get(URL)
        looked_up = _counting(svc)
        # svc's URL is warm; the request carries the other entry's injected headers.
        response = client.get(URL, headers={k: v for k, v in copied.items() if "gateway" in k})
        assert tags_in(response.json(), TAGS) == {"svc"}
        assert looked_up == []  # served from the warm path


def test_an_expired_client_certificate_is_refused_warm_and_cold(
    registry: Registry, tls_server: GatewayServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = tls_server.ca
    assert ca is not None
    now = datetime.now(timezone.utc)
    cert = client_cert(
        ca, "warm", not_before=now - timedelta(days=1), not_after=now + timedelta(days=1)
    )
    registry.put(
        ServiceEntry(
            url=tls_server.url + "/exp",
            request=Credential("u", "exp-SECRET"),
            tls=TLSProfile(client_cert=cert, ca_bundle=ca.cert_pem),
        )
    )
    url = tls_server.url + "/exp/x"
    with SecureClient(registry) as client:
        for _ in range(3):
            assert client.get(url).status_code == 200
        served = len(tls_server.requests)
        later = (now + timedelta(days=2)).timestamp()
        monkeypatch.setattr(tls_context, "time", SimpleNamespace(time=lambda: later))
        with pytest.raises(ClientCertificateExpiredError, match="nothing was sent"):
            client.get(url)
    with SecureClient(registry) as cold, pytest.raises(ClientCertificateExpiredError):
        cold.get(url)  # the full path refuses it too
    assert len(tls_server.requests) == served


def test_a_warm_answer_does_not_keep_decrypted_values_alive(svc: Registry) -> None:
    """The cache alone keeps a plan (its decrypted values): once it drops it, so does
    the warm path, so the TTL still bounds how long the values stay in memory."""
    with SecureClient(svc, transport=httpx.MockTransport(_echo)) as client:
        for _ in range(3):
            client.get(URL)
        transport = client._transport
        assert isinstance(transport, SecureTransport)
        (warm,) = transport._warm.values()
        assert warm.plan() is not None
        client.clear_cache()
        gc.collect()
        assert warm.plan() is None
        assert tags_in(client.get(URL).json(), TAGS) == {"svc"}  # decrypted again
        assert client.cache_info().loads == 2


def test_a_registry_whose_lookup_is_replaced_is_looked_up_every_time() -> None:
    """StubRegistry records each lookup (and a test may wrap ``lookup`` to fail it):
    its lookups must all run, so it has no stamp."""
    stub = StubRegistry({"https://svc.test/api": {"request": ("u", "stub-SECRET")}})
    with SecureClient(stub, transport=httpx.MockTransport(_echo)) as client:
        for _ in range(5):
            client.get(URL)
        stub.assert_used("https://svc.test/api", times=5)
        stub.lookup = lambda url: None  # type: ignore[method-assign]
        assert "authorization" not in client.get(URL).json()


def test_clear_cache_during_a_request_still_ends_its_answer(svc: Registry) -> None:
    """A request running while clear_cache() empties the cache (readers take no lock)
    must not keep an answer that survives the clear."""
    with SecureClient(svc, transport=httpx.MockTransport(_echo)) as client:
        for _ in range(3):
            client.get(URL)
        cache = client._guard.cache
        transport = client._transport
        assert isinstance(transport, SecureTransport)
        warm_answers = transport._warm
        held = []

        class Racing(dict):  # type: ignore[type-arg]
            def clear(self) -> None:
                # Another thread's request, scheduled in the middle of the clear, while
                # a third still holds the plan.
                held.append(next(iter(self.values())).value)
                warm_answers.clear()
                client.get(URL)
                super().clear()

        cache._cached = Racing(cache._cached)
        client.clear_cache()
        loads = client.cache_info().loads
        assert tags_in(client.get(URL).json(), TAGS) == {"svc"}
        assert client.cache_info().loads == loads + 1  # decrypted again, not kept


@pytest.mark.anyio
async def test_offloaded_lookups_keep_no_answer_and_read_no_stamp_on_the_loop(
    svc: Registry,
) -> None:
    assert isinstance(svc, EncryptedRegistry)
    stamps: list[threading.Thread] = []
    stamp_of = svc.store.lookup_stamp  # type: ignore[attr-defined]

    def recorded() -> object:
        stamps.append(threading.current_thread())
        return stamp_of()

    svc.store.lookup_stamp = recorded  # type: ignore[attr-defined]
    svc._stamp_of = recorded  # the registry took the store's method at open

    async def echo(request: httpx.Request) -> httpx.Response:
        return _echo(request)

    async with SecureAsyncClient(
        svc, transport=httpx.MockTransport(echo), offload_lookups=True
    ) as client:
        for _ in range(3):
            assert tags_in((await client.get(URL)).json(), TAGS) == {"svc"}
        transport = client._transport
        assert isinstance(transport, AsyncSecureTransport)
        assert transport._warm == {}
    assert threading.current_thread() not in stamps


def test_strict_mode_refuses_a_warm_url_once_its_entry_is_gone(svc: Registry) -> None:
    with SecureClient(svc, transport=httpx.MockTransport(_echo), strict=True) as client:
        for _ in range(3):
            assert client.get(URL).status_code == 200
        svc.remove("https://svc.test/api")
        with pytest.raises(NoCredentialsError):
            client.get(URL)


def test_no_answer_is_kept_without_a_cache(svc: Registry) -> None:
    with SecureClient(svc, transport=httpx.MockTransport(_echo), cache_ttl=0) as client:
        for _ in range(3):
            client.get(URL)
        assert client.cache_info().loads == 3


def test_a_digest_entry_answers_its_challenge_on_the_warm_path(registry: Registry) -> None:
    with GatewayServer(expect_digest=("dg-user", "dg-SECRET")) as server:
        registry.put(
            ServiceEntry(
                url=server.url + "/api",
                request=Credential("dg-user", "dg-SECRET"),
                request_auth="digest",
            )
        )
        looked_up = _counting(registry)
        with SecureClient(registry) as client:
            statuses = [client.get(server.url + "/api/x").status_code for _ in range(4)]
    assert statuses == [200] * 4
    assert len(looked_up) == 2  # the last two from the warm path, each with its challenge


def test_a_rotated_client_certificate_is_used_from_the_next_request(
    registry: Registry, tls_server: GatewayServer
) -> None:
    """A new profile gets a new context and pool, and no kept answer names the old
    transport: the request after the rotation presents the new certificate."""
    ca = tls_server.ca
    assert ca is not None
    url = tls_server.url + "/rot/x"

    def put(cn: str) -> None:
        cert = client_cert(ca, cn)
        registry.put(
            ServiceEntry(
                url=tls_server.url + "/rot",
                tls=TLSProfile(client_cert=cert, ca_bundle=ca.cert_pem),
            )
        )

    put("before-rotation")
    with SecureClient(registry) as client:
        for _ in range(3):
            assert client.get(url).status_code == 200
        put("after-rotation")
        assert client.get(url).status_code == 200
        assert client.get(url).status_code == 200
    seen = [record.client_cert_subject_cn for record in tls_server.requests]
    assert seen == ["before-rotation"] * 3 + ["after-rotation"] * 2
