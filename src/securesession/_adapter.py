"""``SecureAdapter``: the transport adapter a :class:`SecureSession` mounts.

It applies the TLS profile of the registry entry each request matched:

* one ``ssl.SSLContext`` per entry profile (built by :mod:`securesession._tls`,
  never changed afterwards) and therefore one urllib3 pool per (origin, profile):
  urllib3's pool key compares ``ssl_context`` by identity, so two entries on one
  host with different client certificates never share a connection, while all
  requests of one entry reuse its keep-alive connections;
* a changed profile (a rotated certificate) gets a new context, and the pools of
  the old one are closed;
* server key pins are checked by the pool's connection class right after the
  handshake, before urllib3 writes the request; under a vcrpy cassette that class
  is vcrpy's stub around ours (see ``_CurrentConnectionClass``), so recording and
  replay work over TLS profiles and a recorded connection is still checked;
* TLS failures of requests that matched an entry are raised as
  :class:`~securesession.TLSHandshakeError` subclasses saying what happened.

The adapter runs the session's :class:`~securesession._guard.WireGuard` as the last
step before the wire, for every request it sends: whoever built the request (a
redirect hop, an auth handler's second leg, a re-send), it carries its own URL's
entry only and goes over that entry's TLS profile. One adapter serves one session
(one registry): mounting it on a second ``SecureSession`` raises
:class:`~securesession.ConfigurationError`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, NamedTuple
from urllib.parse import urlsplit

from requests import PreparedRequest, Response
from requests.adapters import HTTPAdapter
from requests.exceptions import ConnectionError as RequestsConnectionError
from requests.exceptions import RequestException
from requests.exceptions import SSLError as RequestsSSLError
from requests.utils import select_proxy
from urllib3.connection import HTTPSConnection
from urllib3.connectionpool import ConnectionPool, HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import PoolManager, ProxyManager
from urllib3.util.retry import Retry

from ._entry import ServiceEntry
from ._exceptions import ConfigurationError, TLSConfigError
from ._tls.context import ProfileContext, build_context
from ._tls.model import TLSProfile
from ._urls import redacted_url

if TYPE_CHECKING:
    from requests.adapters import _HostParams, _PoolKwargs

    from ._guard import WireGuard
    from ._inject import InjectionPlan

__all__ = ["SecureAdapter"]

logger = logging.getLogger("securesession")

# requests keeps 10 pools and silently evicts the rest; a gateway client talks to
# many services, each with its own pool, so keep room for them.
DEFAULT_POOL_CONNECTIONS: Final = 128
DEFAULT_POOL_MAXSIZE: Final = 32
# A 403 body larger than this is not searched for an IIS sub-status.
_MAX_403_BODY: Final = 64 * 1024


class _ProfileHTTPSConnection(HTTPSConnection):
    """urllib3's HTTPS connection, plus the profile's post-handshake checks.

    urllib3 connects (and so completes the handshake) before it writes the first
    request byte, so a pin mismatch raised here means nothing was sent.
    """

    def connect(self) -> None:
        context = self.ssl_context
        if isinstance(context, ProfileContext):
            # The profile's context holds every TLS setting. Any of these would make
            # urllib3 change that shared context (load CA files or a certificate
            # into it, or switch verification off) on this connection's behalf.
            self.cert_reqs = "CERT_REQUIRED"
            self.ca_certs = self.ca_cert_dir = None
            self.ca_cert_data = None
            self.cert_file = self.key_file = self.key_password = None
            self.assert_hostname = self.assert_fingerprint = None
        super().connect()
        if isinstance(context, ProfileContext) and self.sock is not None:
            try:
                context.check_connection(self.sock, self.host)  # type: ignore[arg-type]
            except BaseException:
                self.close()
                raise


# urllib3's own HTTPS connection class, as vcrpy's recording stub names it.
_URLLIB3_HTTPS: Final = HTTPSConnection


# One derived class per stub (vcrpy makes one stub class per cassette), so that
# connections made under one cassette are recognised, and reused, under it.
_RECORDING_CLASSES: dict[type[HTTPSConnection], type[HTTPSConnection]] = {}
_RECORDING_CLASSES_LOCK: Final = threading.Lock()


def _recording_class(stub: type[HTTPSConnection]) -> type[HTTPSConnection]:
    """*stub* (vcrpy's, bound to one cassette) whose real connection is ours."""
    with _RECORDING_CLASSES_LOCK:
        derived = _RECORDING_CLASSES.get(stub)
        if derived is None:
            if len(_RECORDING_CLASSES) >= 8:  # cassettes that ended: keep none alive
                _RECORDING_CLASSES.clear()
            derived = type(stub.__name__, (stub,), {"_baseclass": _ProfileHTTPSConnection})
            _RECORDING_CLASSES[stub] = derived
        return derived


class _CurrentConnectionClass:
    """``_ProfileHTTPSConnectionPool.ConnectionCls``, read when a connection is made.

    vcrpy (and pytest-recording, which drives it) records and replays by replacing
    ``HTTPSConnectionPool.ConnectionCls`` with a stub for the time of a cassette; the
    stub opens its real connection, when it records, from its ``_baseclass``
    (urllib3's ``HTTPSConnection``). While such a stub is in place, our pools use it
    with ``_ProfileHTTPSConnection`` as that real connection: a replayed request
    opens no connection, a recorded one is checked (pins, the profile's context) as
    always. Any other replacement is ignored, as a plain class attribute would be.
    """

    def __get__(self, pool: object, owner: type | None = None) -> type[HTTPSConnection]:
        current = HTTPSConnectionPool.ConnectionCls
        if (
            current is _URLLIB3_HTTPS
            or not isinstance(current, type)  # a mock, say
            or not issubclass(current, HTTPSConnection)
            or getattr(current, "_baseclass", None) is not _URLLIB3_HTTPS
        ):
            return _ProfileHTTPSConnection
        return _recording_class(current)


class _ProfileHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _CurrentConnectionClass()


_POOL_CLASSES: Final = {"http": HTTPConnectionPool, "https": _ProfileHTTPSConnectionPool}


class _PoolManager(PoolManager):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # urllib3 documents these per-instance tables as the place to plug in
        # other pool classes; nothing global is touched.
        self.pool_classes_by_scheme = _POOL_CLASSES


class _ProxyManager(ProxyManager):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pool_classes_by_scheme = _POOL_CLASSES


class _Slot(NamedTuple):
    profile: TLSProfile
    revision: int
    context: ProfileContext


class SecureAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` sized for many services that applies each entry's TLS profile.

    Credentials are injected by the session before the adapter runs, so mocking
    libraries that replace the adapter (``responses``, ``requests-mock``) still see
    them; the adapter checks them again for every request it sends (the wire guard).

    For a request whose entry has a :class:`~securesession.TLSProfile`, the profile
    decides everything about TLS: the call's ``verify=`` and ``cert=`` are ignored
    (with a warning when they ask for less, or for another certificate). Requests
    with no profile get requests' own TLS handling, ``verify=`` and ``cert=``
    included. TLS failures of requests that matched an entry, profile or not, are
    raised as :class:`~securesession.TLSHandshakeError` subclasses; a URL with no
    entry gets requests' own exceptions, as with a plain session.

    An HTTP 403 carrying an IIS-style client-certificate sub-status (403.7
    required, 403.13 revoked, 403.16 untrusted, 403.17 expired) is logged as a
    warning that names it; the response itself is returned unchanged.
    """

    def __init__(
        self,
        pool_connections: int = DEFAULT_POOL_CONNECTIONS,
        pool_maxsize: int = DEFAULT_POOL_MAXSIZE,
        max_retries: int | Retry = 0,
        pool_block: bool = False,
    ) -> None:
        self._guard: WireGuard | None = None
        # The context chosen in send(), read by the pool hooks send() calls.
        self._sending = threading.local()
        self._slots: dict[str, _Slot] = {}
        self._slots_lock = threading.Lock()
        super().__init__(
            pool_connections=pool_connections,
            pool_maxsize=pool_maxsize,
            max_retries=max_retries,
            pool_block=pool_block,
        )

    # -- the guard ---------------------------------------------------------------------

    def _bind(self, guard: WireGuard) -> None:
        """Serve *guard*'s session; an adapter serves one session only, since its TLS
        contexts and pools belong to that session's registry entries."""
        if self._guard is guard:
            return
        if self._guard is not None:
            raise ConfigurationError(
                "this SecureAdapter already serves another SecureSession: its TLS "
                "contexts belong to that session's registry; give each session its own "
                "SecureAdapter"
            )
        self._guard = guard

    def _guarded_plan(self, request: PreparedRequest) -> InjectionPlan | None:
        """The entry *request* goes out under, after the guard made it carry exactly
        that entry's values. The request the session has just guarded reuses its
        decision; every other one (a redirect's auth leg, a re-send, a copy) is
        looked up and guarded here."""
        guard = self._guard
        if guard is None:
            return None
        hint = request.__dict__.pop("securesession_hint", None)
        if hint is not None and hint[0] == request.url:
            plan: InjectionPlan | None = hint[1]
            return plan
        return guard.guard(request, run_auth=False)

    def context_for(self, entry: ServiceEntry) -> ProfileContext:
        """Deprecated (the context type is internal); goes in 0.3."""
        warnings.warn(
            "SecureAdapter.context_for() is deprecated and goes in 0.3: the TLS context "
            "of a profile is internal",
            DeprecationWarning,
            stacklevel=2,
        )
        return self._context_for(entry)

    def _context_for(self, entry: ServiceEntry) -> ProfileContext:
        """The TLS context of *entry*'s profile, built on first use.

        One context per entry: when the entry comes back with a different profile
        (a new revision with a rotated certificate, say), a new context replaces
        the old one and the old one's pools are closed. A revision that changed
        something else keeps the context and its warm connections.
        """
        profile = entry.tls
        if profile is None:
            raise TLSConfigError(f"entry {entry.url} has no TLS profile")
        stale: ProfileContext | None = None
        with self._slots_lock:
            slot = self._slots.get(entry.url)
            if slot is not None and (slot.profile is profile or slot.profile == profile):
                context = slot.context
                if slot.profile is not profile and entry.revision > slot.revision:
                    # Same profile in a newer revision: keep the context, remember
                    # the new object so the identity check hits next time.
                    self._slots[entry.url] = _Slot(profile, entry.revision, context)
            elif slot is not None and entry.revision < slot.revision:
                # A request still holding an older revision of the entry: the
                # newer profile is the right one for the same service.
                context = slot.context
            else:
                context = build_context(profile, where=entry.url)
                self._slots[entry.url] = _Slot(profile, entry.revision, context)
                stale = None if slot is None else slot.context
        if stale is not None:
            logger.info("entry %s: TLS profile changed; closing the old connections", entry.url)
            self._close_pools(stale)
        return context

    def _close_pools(self, context: ProfileContext) -> None:
        managers = [self.poolmanager, *self.proxy_manager.values()]
        for manager in managers:
            pools = manager.pools
            for key in pools.keys():  # noqa: SIM118 - a locked snapshot, not a view
                if getattr(key, "key_ssl_context", None) is context:
                    with contextlib.suppress(KeyError):  # another thread was quicker
                        pool = pools[key]
                        del pools[key]
                        # Idle connections close now; one in use closes when returned.
                        pool.close()

    # -- requests hooks ----------------------------------------------------------------

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        self._pool_connections = connections
        self._pool_maxsize = maxsize
        self._pool_block = block
        self.poolmanager = _PoolManager(
            num_pools=connections, maxsize=maxsize, block=block, **pool_kwargs
        )

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        if proxy in self.proxy_manager or proxy.lower().startswith("socks"):
            return super().proxy_manager_for(proxy, **proxy_kwargs)
        manager = self.proxy_manager[proxy] = _ProxyManager(
            proxy_url=proxy,
            proxy_headers=self.proxy_headers(proxy),
            num_pools=self._pool_connections,
            maxsize=self._pool_maxsize,
            block=self._pool_block,
            **proxy_kwargs,
        )
        return manager

    def build_connection_pool_key_attributes(
        self,
        request: PreparedRequest,
        verify: bool | str,
        cert: str | tuple[str, str] | None = None,
    ) -> tuple[_HostParams, _PoolKwargs]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(
            request, verify, cert
        )
        context: ProfileContext | None = getattr(self._sending, "context", None)
        if context is None:
            return host_params, pool_kwargs
        # The profile's context alone: no ca_certs or cert_file, which urllib3
        # would load into the (shared) context on every new connection.
        return host_params, {"ssl_context": context, "cert_reqs": "CERT_REQUIRED"}

    def get_connection_with_tls_context(
        self,
        request: PreparedRequest,
        verify: bool | str | None,
        proxies: Mapping[str, str] | None = None,
        cert: tuple[str, str] | str | None = None,
    ) -> ConnectionPool:
        pool = super().get_connection_with_tls_context(request, verify, proxies=proxies, cert=cert)
        context: ProfileContext | None = getattr(self._sending, "context", None)
        if context is not None and not isinstance(pool, _ProfileHTTPSConnectionPool):
            # A SOCKS proxy brings its own pool classes, which would skip the pins.
            raise TLSConfigError(
                f"entry {context.where}: its TLS profile cannot be applied through "
                f"this proxy ({type(pool).__name__}); use an HTTP(S) proxy or none"
            )
        return pool

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        if isinstance(getattr(conn, "conn_kw", {}).get("ssl_context"), ProfileContext):
            # Everything is in the profile's context; see build_connection_pool_key_attributes.
            conn.cert_reqs = "CERT_REQUIRED"
            conn.ca_certs = conn.ca_cert_dir = None
            conn.cert_file = conn.key_file = None
            return
        super().cert_verify(conn, url, verify, cert)  # type: ignore[no-untyped-call]

    def send(
        self,
        request: PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float, float] | tuple[float, None] | None = None,
        verify: bool | str = True,
        cert: bytes | str | tuple[bytes | str, bytes | str] | None = None,
        proxies: Mapping[str, str] | None = None,
    ) -> Response:
        plan = self._guarded_plan(request)
        entry = plan.entry if plan is not None else None
        context: ProfileContext | None = None
        if entry is not None and entry.tls is not None:
            context = self._context_for(entry)
            context.refuse_if_expired()
            if verify is False or cert is not None:
                logger.warning(
                    "entry %s has a TLS profile; the verify=False / cert= of this call are ignored",
                    entry.url,
                )
        sending = self._sending
        sending.context = context
        try:
            response = super().send(
                request, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies=proxies
            )
        except (RequestsSSLError, RequestsConnectionError) as exc:
            if entry is None:
                raise
            # Loaded at the first failure: a process whose calls succeed never pays for it.
            from ._tls.diagnosis import diagnose

            url = request.url or ""
            parts = urlsplit(url)
            error = diagnose(
                exc,
                where=entry.url,
                host=parts.hostname or "",
                port=parts.port or 443,
                profile=entry.tls,
                context=context,
                probe=select_proxy(url, proxies) is None,
            )
            if error is None:
                raise
            raise error from exc
        finally:
            sending.context = None
        if entry is not None and response.status_code == 403:
            self._explain_403(entry, response)
        return response

    def _explain_403(self, entry: ServiceEntry, response: Response) -> None:
        from ._tls.iis import describe_iis_403, iis_substatus  # at the first 403

        headers = dict(response.headers)
        substatus = iis_substatus(headers)
        if substatus is None:
            length = response.headers.get("Content-Length", "")
            if length.isdigit() and int(length) <= _MAX_403_BODY:
                # Reading caches the body on the response, so the caller still gets it.
                try:
                    body = response.content
                except RequestException:
                    return  # the caller will meet the same error reading it
                substatus = iis_substatus({}, body)
        if substatus is None:
            return
        message = describe_iis_403(
            substatus, where=entry.url, url=redacted_url(response.url), profile=entry.tls
        )
        if message is not None:
            logger.warning("%s", message)

    def close(self) -> None:
        super().close()
        with self._slots_lock:
            self._slots.clear()
