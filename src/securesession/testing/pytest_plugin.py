"""The securesession pytest plugin (registered through the ``pytest11`` entry point).

Fixtures:

``securesession_key``
    A fresh random :class:`~securesession.MasterKey` per test.
``securesession_registry``
    An empty :class:`~securesession.testing.StubRegistry` per test (closed after it),
    pre-loaded with the entries of any ``securesession_entries`` marker.
``secure_session``
    A :class:`~securesession.SecureSession` on that registry, closed after the test.
``secure_client`` / ``secure_async_client``
    A :class:`~securesession.httpx.SecureClient` / :class:`~securesession.httpx.SecureAsyncClient`
    on that registry (needs ``securesession[httpx]``). The sync one is closed after
    the test; the async one is a plain fixture, for any async test plugin, that the
    test opens and closes: ``async with secure_async_client as client:`` (one used
    and left open is reported as an error: its connections die with the test's loop).
``securesession_header_names``
    ``injected_header_names(securesession_registry)``: every header name its entries
    inject, for the redaction lists of recorders and tracers (pytest-recording's
    ``vcr_config``, say).
``gateway_server`` / ``gateway_server_tls``
    A plain-HTTP / HTTPS :class:`~securesession.testing.GatewayServer` on 127.0.0.1,
    started once per test session and made pristine for every test (records,
    routes and expected credentials cleared). ``gateway_server_tls_ca`` is the path
    of a PEM file with its CA, for requests' ``verify=``; ``gateway_server_tls_context``
    an ``ssl.SSLContext`` trusting it, for httpx's. The servers run on threads of
    their own, so async tests use them as they are.

Marker::

    @pytest.mark.securesession_entries({"https://svc.test/api/": {"gateway": ("gw", "pw")}})

The plugin's import is cheap and starts nothing: every fixture imports what it
needs and builds its objects only when a test asks for it, so suites that never
use it pay nothing. Disable it entirely with ``-p no:securesession``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pytest

if TYPE_CHECKING:
    import ssl

    from .. import MasterKey, SecureSession
    from ..httpx import SecureAsyncClient, SecureClient
    from ._gateway import GatewayServer
    from ._stub import StubRegistry

ENTRIES_MARKER: Final = "securesession_entries"

# GatewayServer attributes a test may change; restored between tests.
_SETTINGS: Final = (
    "expect_gateway",
    "expect_request",
    "expect_digest",
    "digest_algorithm",
    "expect_ntlm",
    "gateway_headers",
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{ENTRIES_MARKER}(entries): pre-load the securesession_registry fixture with "
        "entries, given as StubRegistry takes them ({url: {'gateway': (user, password), "
        "...}} or ServiceEntry objects); markers on the module, class and test are merged, "
        "the closest winning per URL.",
    )


# -- keys, registries, sessions ----------------------------------------------------------


@pytest.fixture
def securesession_key() -> MasterKey:
    """A fresh random master key for one test."""
    from .. import MasterKey

    return MasterKey.generate()


@pytest.fixture
def securesession_registry(
    request: pytest.FixtureRequest, securesession_key: MasterKey
) -> Iterator[StubRegistry]:
    """An empty :class:`StubRegistry` under ``securesession_key``, closed after the test.

    Entries of ``@pytest.mark.securesession_entries(...)`` markers are stored first;
    add more with ``securesession_registry.add(url, gateway=(...), ...)``.
    """
    from ._stub import StubRegistry

    registry = StubRegistry(key=securesession_key)
    try:
        # iter_markers yields the closest marker first; store the farthest first so a
        # test's own marker replaces a class or module marker for the same URL.
        for marker in reversed(list(request.node.iter_markers(ENTRIES_MARKER))):
            _load_marker(registry, marker)
        yield registry
    finally:
        registry.close()


def _load_marker(registry: StubRegistry, marker: pytest.Mark) -> None:
    if marker.kwargs or not marker.args:
        pytest.fail(
            f"@pytest.mark.{ENTRIES_MARKER} takes entries as positional arguments, "
            "e.g. ({'https://svc.test/api/': {'gateway': ('gw', 'pw')}})",
            pytrace=False,
        )
    for entries in marker.args:
        try:
            registry.add_entries(entries)
        except (TypeError, ValueError) as exc:  # InvalidEntryError/InvalidURLError included
            pytest.fail(f"@pytest.mark.{ENTRIES_MARKER}: {exc}", pytrace=False)


@pytest.fixture
def secure_session(securesession_registry: StubRegistry) -> Iterator[SecureSession]:
    """A :class:`SecureSession` on ``securesession_registry``, closed after the test."""
    from .. import SecureSession

    session = SecureSession(securesession_registry)
    yield session
    session.close()


@pytest.fixture
def secure_client(securesession_registry: StubRegistry) -> Iterator[SecureClient]:
    """A :class:`~securesession.httpx.SecureClient` on ``securesession_registry``,
    closed after the test (needs ``securesession[httpx]``)."""
    httpx_front = pytest.importorskip("securesession.httpx", reason="needs securesession[httpx]")
    client: SecureClient = httpx_front.SecureClient(securesession_registry)
    with client:
        yield client


@pytest.fixture
def secure_async_client(
    securesession_registry: StubRegistry,
) -> Iterator[SecureAsyncClient]:
    """A :class:`~securesession.httpx.SecureAsyncClient` on ``securesession_registry``.

    A plain (not async) fixture, so it works under anyio's plugin, pytest-asyncio or
    any other: open it in the test with ``async with secure_async_client as client:``.
    Its connections belong to the test's event loop, which is gone by teardown, so a
    client the test used and left open is reported as an error of that test."""
    httpx_front = pytest.importorskip("securesession.httpx", reason="needs securesession[httpx]")
    client: SecureAsyncClient = httpx_front.SecureAsyncClient(securesession_registry)
    yield client
    if not client.is_closed and client._state.name == "OPENED":
        pytest.fail(
            "secure_async_client was used and left open: its connections belong to the "
            "test's event loop; use it as `async with secure_async_client as client:`",
            pytrace=False,
        )


@pytest.fixture
def securesession_header_names(securesession_registry: StubRegistry) -> tuple[str, ...]:
    """Every header name the entries of ``securesession_registry`` inject, plus
    ``Authorization`` and ``Proxy-Authorization``
    (:func:`~securesession.integrations.injected_header_names`).

    Read when the fixture is set up, so it covers the ``securesession_entries``
    markers; an entry added later in the test with other header names is not in it.
    For pytest-recording::

        @pytest.fixture
        def vcr_config(securesession_header_names):
            return {"filter_headers": [(name, "[REDACTED]") for name in securesession_header_names]}
    """
    from ..integrations import injected_header_names

    return injected_header_names(securesession_registry)


# -- gateway servers ---------------------------------------------------------------------
#
# One server per test session (starting one is cheap, but a TLS one generates keys),
# and a function-scoped view that restores it before and after every test, the way
# pytest-httpserver does.


def _serve(**options: Any) -> Iterator[GatewayServer]:
    from ._gateway import GatewayServer

    server = GatewayServer(**options)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _pristine(server: GatewayServer) -> Iterator[GatewayServer]:
    settings = {name: getattr(server, name) for name in _SETTINGS}

    def restore() -> None:
        server.reset()
        server.clear_routes()
        for name, value in settings.items():
            setattr(server, name, value)

    restore()
    yield server
    restore()


@pytest.fixture(scope="session")
def _securesession_gateway_http() -> Iterator[GatewayServer]:
    yield from _serve()


@pytest.fixture(scope="session")
def _securesession_gateway_tls() -> Iterator[GatewayServer]:
    yield from _serve(tls=True)


@pytest.fixture
def gateway_server(_securesession_gateway_http: GatewayServer) -> Iterator[GatewayServer]:
    """A plain-HTTP :class:`GatewayServer` on 127.0.0.1, pristine for this test.

    Set ``expect_gateway`` / ``expect_request`` and routes (``respond``, ``redirect``,
    ``forbid``) in the test; they are cleared afterwards, with the recorded requests.
    """
    yield from _pristine(_securesession_gateway_http)


@pytest.fixture
def gateway_server_tls(_securesession_gateway_tls: GatewayServer) -> Iterator[GatewayServer]:
    """Like ``gateway_server``, over HTTPS with a run-time test CA (``.ca``), asking for
    an optional client certificate (its CN is recorded). Trust it with
    ``verify=gateway_server_tls_ca``."""
    yield from _pristine(_securesession_gateway_tls)


@pytest.fixture(scope="session")
def gateway_server_tls_ca(
    _securesession_gateway_tls: GatewayServer, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """Path of a PEM file holding the CA of ``gateway_server_tls``, for ``verify=``.

    Pass it per request: when ``REQUESTS_CA_BUNDLE`` is set, requests ignores
    ``Session.verify``.
    """
    path: Path = tmp_path_factory.mktemp("securesession-gateway") / "ca.pem"
    path.write_bytes(_securesession_gateway_tls.ca_pem)
    return str(path)


@pytest.fixture(scope="session")
def gateway_server_tls_context(_securesession_gateway_tls: GatewayServer) -> ssl.SSLContext:
    """An ``ssl.SSLContext`` trusting the CA of ``gateway_server_tls``, for httpx's
    ``verify=`` (which takes a context, not a path)."""
    import ssl

    return ssl.create_default_context(cadata=_securesession_gateway_tls.ca_pem.decode("ascii"))
