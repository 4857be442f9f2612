"""Loopback HTTP(S) servers that stand in for credential-checking gateways in tests.

:class:`GatewayServer` plays an API gateway (optionally an IIS or SOA one) that
checks gateway headers, HTTP Basic, Digest or NTLM credentials and client
certificates, and records everything it receives. :class:`SilentServer`
accepts connections and never answers, for client timeout tests. Both bind to
127.0.0.1 only.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import importlib
import json
import os
import re
import secrets
import shutil
import socket
import socketserver
import ssl
import sys
import tempfile
import threading
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, TypeVar, cast
from urllib.request import parse_http_list, parse_keqv_list

from securesession._files import write_private_file

from ._certs import CertificateAuthority, IssuedCert

__all__ = ["GatewayServer", "RecordedRequest", "SilentServer"]

_LOOPBACK = "127.0.0.1"

# Idle keep-alive connections are dropped after this long; stop() closes them
# sooner. It also bounds a client that connects and never finishes a handshake.
_CONNECTION_TIMEOUT = 30.0
# How long stop() waits for each connection thread after closing its socket.
_JOIN_TIMEOUT = 5.0
# Upper bound on a chunk-size / trailer line, like http.client's _MAXLINE.
_MAX_LINE = 65536

_RequestType = socket.socket | tuple[bytes, socket.socket]

# Header names whose values RecordedRequest.__repr__ hides: recorded requests end
# up in assertion messages and CI logs, test credentials or not.
_SENSITIVE_HEADER_WORDS = ("authorization", "password", "secret", "token", "cookie", "key")

_BASIC_CHALLENGE = 'Basic realm="gateway"'
_DIGEST_REALM = "gateway"
# Digest algorithms (RFC 7616 section 3.3 names) and the hashlib name behind each.
_DIGEST_HASHES = {"MD5": "md5", "SHA-256": "sha256"}
_DIGEST_ALGORITHMS = ("MD5", "MD5-sess", "SHA-256", "SHA-256-sess")
# Issued Digest nonces remembered (oldest forgotten first), with the nc values seen.
_MAX_DIGEST_NONCES = 4096
_NC_PATTERN = re.compile(r"[0-9a-fA-F]{8}")

# pyspnego's pure-Python NTLM acceptor reads the accepted credentials from the
# file this environment variable names, and offers no in-memory alternative.
# The variable is set only while a handshake step runs, under this lock, so
# servers with different credentials in one process cannot mix them up.
_NTLM_USER_FILE_ENV = "NTLM_USER_FILE"
_NTLM_ENV_LOCK = threading.Lock()
_NTLM_SIGNATURE = b"NTLMSSP\x00"

# IIS 403 substatus descriptions, as shown on IIS detailed error pages.
_IIS_403_SUBSTATUS = {
    1: "Execute access forbidden",
    2: "Read access forbidden",
    3: "Write access forbidden",
    4: "SSL required",
    5: "SSL 128 required",
    6: "IP address rejected",
    7: "Client certificate required",
    8: "Site access denied",
    9: "Too many users",
    10: "Invalid configuration",
    11: "Password change",
    12: "Mapper denied access",
    13: "Client certificate revoked",
    14: "Directory listing denied",
    15: "Client Access Licenses exceeded",
    16: "Client certificate is untrusted or invalid",
    17: "Client certificate has expired or is not yet valid",
    18: "Cannot execute request from that application pool",
    19: "Cannot execute CGIs for the client in this application pool",
    20: "Passport logon failed",
}

# Errors that only mean "the client went away"; normal for keep-alive clients
# closing idle connections, so not worth an entry in GatewayServer.errors.
_DISCONNECT_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionResetError,
    ConnectionAbortedError,
    BrokenPipeError,
    ssl.SSLEOFError,
    ssl.SSLZeroReturnError,
)


@dataclass(frozen=True, repr=False)
class RecordedRequest:
    """One request as received by a :class:`GatewayServer`.

    ``headers`` keeps the original header names (repeated headers joined with
    ``", "``); use :meth:`header` for a case-insensitive lookup. ``status`` is
    the status code the server answered with. ``authenticated_user`` is the user
    that HTTP Basic, Digest or NTLM authentication accepted for this request
    (for NTLM, ``DOMAIN\\user`` when a domain was sent), else ``None``. ``repr``
    redacts credential-like header values so records can be printed in test
    failures.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    client_cert_subject_cn: str | None
    tls_version: str | None
    connection_id: int
    peer_port: int
    status: int
    authenticated_user: str | None = None

    def header(self, name: str, default: str | None = None) -> str | None:
        """Case-insensitive header lookup."""
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return default

    def __repr__(self) -> str:
        shown = {
            key: "<redacted>" if any(w in key.lower() for w in _SENSITIVE_HEADER_WORDS) else val
            for key, val in self.headers.items()
        }
        return (
            f"RecordedRequest(method={self.method!r}, path={self.path!r}, headers={shown!r}, "
            f"body=<{len(self.body)} bytes>, "
            f"client_cert_subject_cn={self.client_cert_subject_cn!r}, "
            f"tls_version={self.tls_version!r}, connection_id={self.connection_id}, "
            f"peer_port={self.peer_port}, status={self.status}, "
            f"authenticated_user={self.authenticated_user!r})"
        )


@dataclass(frozen=True)
class _Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Route:
    prefix: str
    response: _Response
    # Forbid routes apply before credential checks, as IIS enforces its SSL
    # settings before authentication; respond/redirect routes apply after.
    before_auth: bool = False


@dataclass(frozen=True)
class _AuthOutcome:
    """Result of the credential checks: a failure (with its challenge) or a user."""

    failure: dict[str, str] | None = None
    challenge: str = _BASIC_CHALLENGE
    user: str | None = None


@dataclass
class _ConnectionState:
    """Per-connection authentication state: NTLM authenticates connections.

    ``ntlm_context`` is the pyspnego acceptor between the Negotiate and the
    Authenticate message; ``ntlm_user`` is set once the handshake succeeded,
    and later requests on the same connection need no Authorization header.
    """

    ntlm_context: Any = None
    ntlm_user: str | None = None


def _subject_cn(peer_cert: Mapping[str, Any] | None) -> str | None:
    """Extract the subject CN from ``SSLSocket.getpeercert()`` output."""
    if not peer_cert:
        return None
    for rdn in peer_cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def _same(given: str, expected: str) -> bool:
    # Constant-time compare: the harness should model a well-behaved server.
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _json_response(status: int, payload: Mapping[str, object], **headers: str) -> _Response:
    body = json.dumps(payload, sort_keys=True).encode("utf-8")
    return _Response(status, body, {"Content-Type": "application/json", **headers})


class _GatewayHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that does the TLS handshake in each connection's thread.

    Wrapping the listening socket would run handshakes in the accept loop, so a
    client that connects and never speaks would stall everyone else. Here
    ``get_request`` only wraps the socket; ``finish_request`` (running in the
    connection thread) performs and counts the handshake, once per connection,
    which is what makes keep-alive reuse visible in ``handshakes``.
    """

    daemon_threads = True
    # stop() joins connection threads itself, with a timeout, after closing
    # their sockets: the stock join would hang on idle keep-alive connections.
    block_on_close = False
    request_queue_size = 64

    def __init__(self, gateway: GatewayServer, ssl_context: ssl.SSLContext | None, port: int):
        self.gateway = gateway
        self.ssl_context = ssl_context
        self.conn_lock = threading.Lock()
        self.live: dict[socket.socket, int] = {}
        self.conn_threads: list[threading.Thread] = []
        self.closing = False
        self.last_connection_id = 0
        super().__init__((_LOOPBACK, port), _GatewayHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup
        # that can take seconds on hosts without a resolver; skip it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = self.socket.accept()
        conn.settimeout(_CONNECTION_TIMEOUT)
        # Headers and body go out in separate writes; with Nagle on, the
        # client's delayed ACK would add ~40 ms to every keep-alive response.
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.ssl_context is not None:
            conn = self.ssl_context.wrap_socket(
                conn, server_side=True, do_handshake_on_connect=False
            )
        with self.conn_lock:
            if self.closing:
                conn.close()
                raise OSError("gateway server is stopping")
            self.last_connection_id += 1
            self.live[conn] = self.last_connection_id
        return conn, addr

    def process_request(self, request: _RequestType, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name=f"gateway-conn-{client_address[1]}",
            daemon=True,
        )
        with self.conn_lock:
            self.conn_threads = [t for t in self.conn_threads if t.is_alive()]
            self.conn_threads.append(thread)
        thread.start()

    def finish_request(self, request: _RequestType, client_address: Any) -> None:
        assert isinstance(request, socket.socket)
        with self.conn_lock:
            connection_id = self.live.get(request, 0)
        self.gateway._count("connections")
        if isinstance(request, ssl.SSLSocket):
            try:
                request.do_handshake()
            except OSError as exc:  # ssl.SSLError is an OSError
                self.record_error(f"TLS handshake failed: {exc}")
                return
            self.gateway._count("handshakes")
        _GatewayHandler(request, client_address, self, connection_id=connection_id)

    def shutdown_request(self, request: _RequestType) -> None:
        with self.conn_lock:
            self.live.pop(cast(socket.socket, request), None)
        super().shutdown_request(request)

    def handle_error(self, request: _RequestType, client_address: Any) -> None:
        # The stock handler prints a traceback to stderr; tests provoke
        # failures on purpose, so keep quiet and record the text instead.
        exc = sys.exc_info()[1]
        if exc is None or isinstance(exc, _DISCONNECT_ERRORS):
            return
        self.record_error(f"{type(exc).__name__}: {exc}")

    def record_error(self, text: str) -> None:
        # Errors caused by stop() tearing connections down are not news.
        if not self.closing:
            self.gateway._add_error(text)

    def close_all(self) -> None:
        """Close the listener and every live connection, then join their threads."""
        with self.conn_lock:
            self.closing = True
            sockets = list(self.live)
            threads = list(self.conn_threads)
        for sock in sockets:
            # Call the plain socket method: SSLSocket.shutdown would also drop
            # its SSL object under the feet of the reading thread.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
        self.server_close()
        for thread in threads:
            thread.join(_JOIN_TIMEOUT)


class _GatewayHandler(BaseHTTPRequestHandler):
    """Request handler: read, record, check credentials, answer."""

    protocol_version = "HTTP/1.1"  # keep-alive, so handshake counts mean something
    server_version = "securesession-test-gateway"

    def version_string(self) -> str:
        """Server header value (without the Python version http.server appends)."""
        return self.server_version

    def __init__(
        self,
        request: socket.socket,
        client_address: Any,
        server: socketserver.BaseServer,
        *,
        connection_id: int = 0,
    ) -> None:
        self.connection_id = connection_id
        # One handler serves all requests of one connection (handle() loops).
        self.auth_state = _ConnectionState()
        super().__init__(request, client_address, server)

    @property
    def _gateway(self) -> GatewayServer:
        return cast(_GatewayHTTPServer, self.server).gateway

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request stderr log."""

    def handle(self) -> None:
        try:
            super().handle()
        except _DISCONNECT_ERRORS:
            # Client closed an idle keep-alive connection: normal, not an error.
            self.close_connection = True

    def do_GET(self) -> None:
        """Handle GET."""
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def _dispatch(self) -> None:
        body = self._read_body()
        if body is None:
            return
        cn: str | None = None
        tls_version: str | None = None
        if isinstance(self.connection, ssl.SSLSocket):
            tls_version = self.connection.version()
            cn = _subject_cn(self.connection.getpeercert())
        response, user = self._gateway._decide(
            self.command, self.path, self.headers, self.auth_state
        )
        headers: dict[str, str] = {}
        for key, value in self.headers.items():
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        # Record before answering so a client that got the response can rely
        # on the record being there.
        self._gateway._record(
            RecordedRequest(
                method=self.command,
                path=self.path,
                headers=headers,
                body=body,
                client_cert_subject_cn=cn,
                tls_version=tls_version,
                connection_id=self.connection_id,
                peer_port=int(self.client_address[1]),
                status=response.status,
                authenticated_user=user,
            )
        )
        self._send(response)

    def _read_body(self) -> bytes | None:
        """Read the request body so the next keep-alive request starts in sync."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = self.headers.get("Content-Length")
        if not length:
            return b""
        try:
            size = int(length)
            if size < 0:
                raise ValueError(length)
        except ValueError:
            self.send_error(400, "Bad Content-Length")
            return None
        return self.rfile.read(size)

    def _read_chunked(self) -> bytes | None:
        chunks: list[bytes] = []
        while True:
            line = self.rfile.readline(_MAX_LINE + 1)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self.send_error(400, "Bad chunk size")
                return None
            if size == 0:
                # Skip optional trailers up to the blank line.
                while self.rfile.readline(_MAX_LINE + 1) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline(_MAX_LINE + 1)  # CRLF after the chunk data

    def _send(self, response: _Response) -> None:
        self.send_response(response.status)
        lowered = {key.lower() for key in response.headers}
        for key, value in response.headers.items():
            self.send_header(key, value)
        if "content-length" not in lowered:
            self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD" and response.body:
            self.wfile.write(response.body)


class _LoopbackServer:
    """What both loopback servers share: the port they bound, their URL, ``with``."""

    _port: int | None

    def start(self: _Server) -> _Server:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def _scheme(self) -> str:
        return "http"

    def _details(self) -> str:
        return ""

    def __repr__(self) -> str:
        state = f"url={self.url!r}" if self._port is not None else "not started"
        return f"{type(self).__name__}({state}{self._details()})"

    def __enter__(self: _Server) -> _Server:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`)."""
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} not started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL: ``http://127.0.0.1:PORT``, or ``https://`` for a TLS server."""
        return f"{self._scheme()}://{_LOOPBACK}:{self.port}"


_Server = TypeVar("_Server", bound=_LoopbackServer)


class GatewayServer(_LoopbackServer):
    """A loopback HTTP/HTTPS gateway for tests, serving on a background thread.

    Requests are checked in this order: ``forbid`` routes (IIS-style 403),
    gateway headers (``expect_gateway``), then at most one of HTTP Basic
    (``expect_request``), HTTP Digest (``expect_digest``) or NTLM
    (``expect_ntlm``), then ``respond``/``redirect`` routes, else a 200 JSON
    echo of method and path. A failed credential check answers 401 with a
    JSON body naming the failed check (never values) and a ``WWW-Authenticate``
    challenge: ``Basic realm="gateway"`` for the gateway headers and Basic,
    ``Digest realm="gateway", nonce=..., qop="auth", algorithm=...`` for
    Digest (RFC 7616; ``digest_algorithm`` picks MD5, SHA-256 or their
    ``-sess`` forms), ``NTLM`` (then ``NTLM <challenge>``) for NTLM.

    NTLM is connection-bound, as in IIS: Negotiate, challenge and Authenticate
    must travel on one keep-alive connection, and once it succeeded the
    connection stays authenticated. The acceptor is pyspnego's (imported only
    when ``expect_ntlm`` is used), which reads the accepted credential from a
    file named by the ``NTLM_USER_FILE`` environment variable: the server
    writes that file (mode 0600) into a private temporary directory, sets the
    variable only while pyspnego runs, and removes the directory on
    :meth:`stop`. User names may carry a domain, ``"DOMAIN\\user"``.

    With ``tls=True`` the server always asks for a client certificate (so its
    CN is recorded when one is sent); ``require_client_cert=True`` makes one
    mandatory. Files needed by ``load_cert_chain`` and for the CRL are written
    to a :class:`tempfile.TemporaryDirectory` that is removed as soon as the
    SSL context has loaded them.
    """

    def __init__(
        self,
        *,
        tls: bool = False,
        ca: CertificateAuthority | None = None,
        server_cert: IssuedCert | None = None,
        require_client_cert: bool = False,
        client_ca_pem: bytes | None = None,
        crl_pem: bytes | None = None,
        tls_versions: tuple[ssl.TLSVersion, ssl.TLSVersion] | None = None,
        legacy: bool = False,
        expect_gateway: tuple[str, str] | None = None,
        gateway_headers: tuple[str, str] = ("X-Gateway-User", "X-Gateway-Password"),
        expect_request: tuple[str, str] | None = None,
        expect_digest: tuple[str, str] | None = None,
        digest_algorithm: str = "MD5",
        expect_ntlm: tuple[str, str] | None = None,
        port: int = 0,
    ) -> None:
        tls_only = {
            "server_cert": server_cert is not None,
            "require_client_cert": require_client_cert,
            "client_ca_pem": client_ca_pem is not None,
            "crl_pem": crl_pem is not None,
            "tls_versions": tls_versions is not None,
            "legacy": legacy,
        }
        if not tls and any(tls_only.values()):
            names = ", ".join(name for name, used in tls_only.items() if used)
            raise ValueError(f"{names} only make sense with tls=True")
        schemes = {
            "expect_request": expect_request,
            "expect_digest": expect_digest,
            "expect_ntlm": expect_ntlm,
        }
        if sum(value is not None for value in schemes.values()) > 1:
            names = ", ".join(name for name, value in schemes.items() if value is not None)
            raise ValueError(f"{names}: a request carries one Authorization header; pick one")
        self.digest_algorithm = _digest_algorithm(digest_algorithm)
        if expect_ntlm is not None:
            _ntlm_user_line(expect_ntlm)  # fail here, not on the first request
            _import_spnego()
        self.tls = tls
        # A given server_cert brings its own issuer; only invent a CA when
        # there is nothing to issue the server certificate from.
        if tls and ca is None and server_cert is None:
            ca = CertificateAuthority()
        self.ca = ca
        if tls and server_cert is None:
            assert ca is not None
            server_cert = ca.issue_server()
        self.server_cert = server_cert
        if tls and client_ca_pem is None:
            assert server_cert is not None
            client_ca_pem = ca.cert_pem if ca is not None else server_cert.ca_pem
        self.client_ca_pem = client_ca_pem
        self.require_client_cert = require_client_cert
        self.crl_pem = crl_pem
        self.tls_versions = tls_versions
        self.legacy = legacy
        self.expect_gateway = expect_gateway
        self.gateway_headers = gateway_headers
        self.expect_request = expect_request
        self.expect_digest = expect_digest
        self.expect_ntlm = expect_ntlm
        self._requested_port = port

        self._lock = threading.Lock()
        self._records: list[RecordedRequest] = []
        self._errors: list[str] = []
        self._counters = {"handshakes": 0, "connections": 0}
        self._routes: list[_Route] = []
        self._httpd: _GatewayHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None
        # Digest nonces this server issued, each with the nc values already used.
        self._nonces: OrderedDict[str, set[str]] = OrderedDict()
        # NTLM credential file: (directory, file, the credential written to it).
        self._ntlm_lock = threading.Lock()
        self._ntlm_files: tuple[str, str, tuple[str, str]] | None = None
        self._ntlm_cleanup: weakref.finalize[Any, Any] | None = None

    def _details(self) -> str:
        return f", tls={self.tls}"

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> GatewayServer:
        """Bind 127.0.0.1 and serve on a daemon thread; returns ``self``."""
        if self._httpd is not None:
            raise RuntimeError("GatewayServer already started")
        if self.expect_ntlm is not None:
            self._ntlm_user_file()
        context = self._ssl_context() if self.tls else None
        httpd = _GatewayHTTPServer(self, context, self._requested_port)
        self._httpd = httpd
        self._port = int(httpd.server_address[1])
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.02},
            name=f"GatewayServer-{self._port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the listener and all connections, join threads.

        Idempotent. Idle keep-alive connections held by clients are closed, and
        the NTLM credential file (if any) is removed.
        """
        httpd, thread = self._httpd, self._thread
        self._httpd = self._thread = None
        if httpd is None:
            return
        httpd.shutdown()  # ends serve_forever: no accept after this returns
        httpd.close_all()
        if thread is not None:
            thread.join(_JOIN_TIMEOUT)
        self._remove_ntlm_files()

    def _scheme(self) -> str:
        return "https" if self.tls else "http"

    def _ssl_context(self) -> ssl.SSLContext:
        assert self.server_cert is not None
        assert self.client_ca_pem is not None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory(prefix="securesession-gateway-") as tmp:
            cert_path, key_path = self.server_cert.write_pem(tmp)
            context.load_cert_chain(cert_path, key_path)
            if self.crl_pem is not None:
                # cadata only parses certificates; CRLs load from a file.
                crl_path = Path(tmp) / "crl.pem"
                crl_path.write_bytes(self.crl_pem)
                context.load_verify_locations(cafile=str(crl_path))
                context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
        context.load_verify_locations(cadata=self.client_ca_pem.decode("ascii"))
        context.verify_mode = ssl.CERT_REQUIRED if self.require_client_cert else ssl.CERT_OPTIONAL
        with warnings.catch_warnings():
            # Python warns when TLS 1.0/1.1 are named; a test server offering
            # them is exactly the point of legacy mode.
            warnings.simplefilter("ignore", DeprecationWarning)
            if self.legacy:
                context.set_ciphers("DEFAULT:@SECLEVEL=0")
                context.minimum_version = ssl.TLSVersion.TLSv1
            if self.tls_versions is not None:
                context.minimum_version, context.maximum_version = self.tls_versions
        return context

    # -- addresses ---------------------------------------------------------

    @property
    def ca_pem(self) -> bytes:
        """PEM of the CA that issued the server certificate, for clients to trust."""
        if self.server_cert is None:
            raise RuntimeError("a plain-HTTP GatewayServer has no certificate")
        return self.server_cert.ca_pem

    # -- records -----------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Snapshot of the recorded requests, oldest first."""
        with self._lock:
            return list(self._records)

    @property
    def errors(self) -> list[str]:
        """Snapshot of server-side error texts (failed handshakes and the like)."""
        with self._lock:
            return list(self._errors)

    @property
    def handshakes(self) -> int:
        """Completed TLS handshakes (one per TLS connection, keep-alive or not)."""
        with self._lock:
            return self._counters["handshakes"]

    @property
    def connections(self) -> int:
        """Accepted TCP connections (handshake failures included)."""
        with self._lock:
            return self._counters["connections"]

    def reset(self) -> None:
        """Clear recorded requests, errors and counters (routes are kept)."""
        with self._lock:
            self._records.clear()
            self._errors.clear()
            for key in self._counters:
                self._counters[key] = 0

    def _record(self, record: RecordedRequest) -> None:
        with self._lock:
            self._records.append(record)

    def _add_error(self, text: str) -> None:
        with self._lock:
            self._errors.append(text)

    def _count(self, counter: str) -> None:
        with self._lock:
            self._counters[counter] += 1

    # -- configurable responses ----------------------------------------------

    def respond(
        self,
        path_prefix: str,
        status: int = 200,
        body: bytes | str = b"",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer requests whose path starts with ``path_prefix`` with this response.

        The longest matching prefix wins; among equal prefixes the latest rule.
        """
        payload = body.encode("utf-8") if isinstance(body, str) else body
        self._add_route(_Route(path_prefix, _Response(status, payload, dict(headers or {}))))

    def redirect(self, path_prefix: str, location: str, status: int = 302) -> None:
        """Redirect requests under ``path_prefix`` to ``location``."""
        self._add_route(_Route(path_prefix, _Response(status, b"", {"Location": location})))

    def forbid(self, path_prefix: str, substatus: int, *, message: str | None = None) -> None:
        """Answer IIS-style ``403.<substatus>`` under ``path_prefix``.

        E.g. 7 = client certificate required, 13 = revoked, 16 = untrusted.
        The substatus goes in ``X-IIS-SubStatus`` and in an IIS-like HTML body
        such as ``403.7 - Forbidden: Client certificate required.``.
        """
        text = message or _IIS_403_SUBSTATUS.get(substatus, "Access is denied")
        body = (
            "<!DOCTYPE html>\r\n<html><head><title>403 - Forbidden: Access is denied."
            '</title></head>\r\n<body><div id="header"><h1>Server Error</h1></div>\r\n'
            f'<div id="content"><h2>403.{substatus} - Forbidden: {text}.</h2></div>\r\n'
            "</body></html>\r\n"
        ).encode()
        headers = {"Content-Type": "text/html", "X-IIS-SubStatus": str(substatus)}
        self._add_route(_Route(path_prefix, _Response(403, body, headers), before_auth=True))

    def clear_routes(self) -> None:
        """Forget all respond/redirect/forbid rules."""
        with self._lock:
            self._routes.clear()

    def _add_route(self, route: _Route) -> None:
        with self._lock:
            self._routes.append(route)

    # -- request decisions -------------------------------------------------

    def _match(self, path: str) -> _Route | None:
        with self._lock:
            routes = list(self._routes)
        best: _Route | None = None
        for route in reversed(routes):  # latest first, so it wins ties
            if path.startswith(route.prefix) and (
                best is None or len(route.prefix) > len(best.prefix)
            ):
                best = route
        return best

    def _decide(
        self,
        method: str,
        path: str,
        headers: Message,
        connection: _ConnectionState | None = None,
    ) -> tuple[_Response, str | None]:
        """The response to send, and the user that authenticated (if any)."""
        route = self._match(path)
        if route is not None and route.before_auth:
            return route.response, None
        outcome = self._check_credentials(
            method, path, headers, connection if connection is not None else _ConnectionState()
        )
        if outcome.failure is not None:
            return _json_response(
                401,
                {"error": "unauthorized", **outcome.failure},
                **{"WWW-Authenticate": outcome.challenge},
            ), None
        if route is not None:
            return route.response, outcome.user
        return _json_response(200, {"method": method, "path": path}), outcome.user

    def _check_credentials(
        self, method: str, path: str, headers: Message, connection: _ConnectionState
    ) -> _AuthOutcome:
        """The first failed check (with its challenge), or the authenticated user."""
        failure = self._check_basic_schemes(headers)
        if failure is not None:
            return _AuthOutcome(failure)
        user: str | None = None
        if self.expect_request is not None:
            user = self.expect_request[0]
        if self.expect_digest is not None:
            outcome = self._check_digest(method, path, headers.get("Authorization"))
            if outcome.failure is not None:
                return outcome
            user = outcome.user
        if self.expect_ntlm is not None:
            outcome = self._check_ntlm(headers.get("Authorization"), connection)
            if outcome.failure is not None:
                return outcome
            user = outcome.user
        return _AuthOutcome(user=user)

    def _check_basic_schemes(self, headers: Message) -> dict[str, str] | None:
        """The gateway-header and HTTP Basic checks: a failure description or None."""
        if self.expect_gateway is not None:
            user_header, password_header = self.gateway_headers
            user = headers.get(user_header)
            password = headers.get(password_header)
            if user is None or password is None:
                return {
                    "check": "gateway",
                    "reason": "missing",
                    "detail": f"{user_header} and {password_header} headers are required",
                }
            expected_user, expected_password = self.expect_gateway
            # Evaluate both comparisons; no short-circuit on the user name.
            if not (_same(user, expected_user) & _same(password, expected_password)):
                return {
                    "check": "gateway",
                    "reason": "mismatch",
                    "detail": "gateway credentials do not match",
                }
        if self.expect_request is not None:
            reason = _basic_auth_failure(headers.get("Authorization"), self.expect_request)
            if reason is not None:
                return {
                    "check": "request",
                    "reason": reason,
                    "detail": f"HTTP Basic credentials {reason}",
                }
        return None

    # -- HTTP Digest (RFC 7616) ----------------------------------------------

    def _digest_challenge(self, *, stale: bool = False) -> str:
        nonce = secrets.token_hex(16)
        with self._lock:
            self._nonces[nonce] = set()
            while len(self._nonces) > _MAX_DIGEST_NONCES:
                self._nonces.popitem(last=False)
        challenge = (
            f'Digest realm="{_DIGEST_REALM}", nonce="{nonce}", qop="auth", '
            f"algorithm={self.digest_algorithm}"
        )
        return challenge + (", stale=true" if stale else "")

    def _check_digest(self, method: str, path: str, header: str | None) -> _AuthOutcome:
        assert self.expect_digest is not None
        expected_user, password = self.expect_digest

        def fail(reason: str, *, stale: bool = False) -> _AuthOutcome:
            failure = {
                "check": "digest",
                "reason": reason,
                "detail": f"HTTP Digest credentials {reason}",
            }
            return _AuthOutcome(failure, self._digest_challenge(stale=stale))

        if header is None:
            return fail("missing")
        params = _digest_params(header)
        if params is None:
            return fail("malformed")
        nonce, nc, cnonce = params["nonce"], params["nc"], params["cnonce"]
        if (
            params.get("algorithm", "MD5").lower() != self.digest_algorithm.lower()
            or params["uri"] != path
        ):
            return fail("mismatch")
        expected = _digest_response(
            self.digest_algorithm,
            _DigestInput(expected_user, _DIGEST_REALM, password, method, path),
            nonce,
            nc,
            cnonce,
        )
        # Evaluate every comparison; no short-circuit on the user name.
        if not (
            _same(params["username"], expected_user)
            & _same(params["realm"], _DIGEST_REALM)
            & _same(params["response"].lower(), expected)
        ):
            return fail("mismatch")
        with self._lock:
            seen = self._nonces.get(nonce)
            replayed = seen is not None and nc.lower() in seen
            if seen is not None:
                seen.add(nc.lower())
        if seen is None:
            # Right password, but a nonce this server did not issue (or forgot).
            return fail("stale", stale=True)
        if replayed:
            return fail("replayed")
        return _AuthOutcome(user=expected_user)

    # -- NTLM ----------------------------------------------------------------

    def _check_ntlm(self, header: str | None, connection: _ConnectionState) -> _AuthOutcome:
        def fail(reason: str, detail: str, challenge: str = "NTLM") -> _AuthOutcome:
            return _AuthOutcome({"check": "ntlm", "reason": reason, "detail": detail}, challenge)

        scheme, _, token = (header or "").partition(" ")
        if scheme.lower() != "ntlm":
            if connection.ntlm_user is not None:
                return _AuthOutcome(user=connection.ntlm_user)
            if header is None:
                return fail("missing", "NTLM authentication required")
            return fail("malformed", "NTLM authentication required")
        try:
            message = base64.b64decode(token.strip(), validate=True)
        except binascii.Error:
            message = b""
        kind = int.from_bytes(message[8:12], "little") if len(message) >= 12 else 0
        if not message.startswith(_NTLM_SIGNATURE) or kind not in (1, 3):
            connection.ntlm_context = connection.ntlm_user = None
            return fail("malformed", "not an NTLM Negotiate or Authenticate message")
        spnego = _import_spnego()
        if kind == 1:
            # A Negotiate message (re)starts the handshake on this connection.
            connection.ntlm_user = connection.ntlm_context = None
            try:
                with self._ntlm_environment():
                    context = spnego.server(
                        hostname=_LOOPBACK,
                        service="http",
                        protocol="ntlm",
                        options=spnego.NegotiateOptions.use_ntlm,
                    )
                    challenge = context.step(message)
            except spnego.exceptions.SpnegoError:
                return fail("malformed", "NTLM Negotiate message refused")
            connection.ntlm_context = context
            return fail(
                "challenge",
                "NTLM challenge sent; answer it on this connection",
                "NTLM " + base64.b64encode(challenge).decode("ascii"),
            )
        context, connection.ntlm_context = connection.ntlm_context, None
        if context is None:
            return fail("unexpected", "NTLM Authenticate message without a Negotiate first")
        try:
            with self._ntlm_environment():
                context.step(message)
        except spnego.exceptions.SpnegoError:
            return fail("mismatch", "NTLM credentials mismatch")
        if not context.complete:
            return fail("mismatch", "NTLM credentials mismatch")
        connection.ntlm_user = str(context.client_principal)
        return _AuthOutcome(user=connection.ntlm_user)

    @contextlib.contextmanager
    def _ntlm_environment(self) -> Iterator[None]:
        """Point ``NTLM_USER_FILE`` at this server's credential file while pyspnego runs."""
        if self._httpd is None:
            # A request thread outliving stop() must not write the file again.
            raise RuntimeError("GatewayServer is stopped")
        path = self._ntlm_user_file()
        with _NTLM_ENV_LOCK:
            previous = os.environ.get(_NTLM_USER_FILE_ENV)
            os.environ[_NTLM_USER_FILE_ENV] = path
            try:
                yield
            finally:
                if previous is None:
                    os.environ.pop(_NTLM_USER_FILE_ENV, None)
                else:
                    os.environ[_NTLM_USER_FILE_ENV] = previous

    def _ntlm_user_file(self) -> str:
        """Path of the credential file for ``expect_ntlm``, (re)written as needed."""
        expected = self.expect_ntlm
        if expected is None:
            raise RuntimeError("expect_ntlm is not set")
        line = _ntlm_user_line(expected)
        with self._ntlm_lock:
            if self._ntlm_files is not None and self._ntlm_files[2] == expected:
                return self._ntlm_files[1]
            if self._ntlm_files is None:
                directory = tempfile.mkdtemp(prefix="securesession-ntlm-")  # mode 0700
                # Removed by stop(), or at interpreter exit if stop() never ran.
                self._ntlm_cleanup = weakref.finalize(self, shutil.rmtree, directory, True)
                path = str(Path(directory) / "ntlm-users")
            else:
                directory, path = self._ntlm_files[:2]
            # Replaced whole: a pyspnego thread reading it sees the old file or the new.
            write_private_file(
                Path(path),
                (line + "\n").encode("utf-8"),
                overwrite=True,
                what="NTLM credential file",
                error=OSError,
            )
            self._ntlm_files = (directory, path, expected)
            return path

    def _remove_ntlm_files(self) -> None:
        with self._ntlm_lock:
            cleanup, self._ntlm_cleanup = self._ntlm_cleanup, None
            self._ntlm_files = None
        if cleanup is not None:
            cleanup()


def _digest_algorithm(name: str) -> str:
    """The canonical spelling of a supported Digest algorithm name."""
    for known in _DIGEST_ALGORITHMS:
        if name.lower() == known.lower():
            return known
    raise ValueError(f"digest_algorithm must be one of {', '.join(_DIGEST_ALGORITHMS)}")


def _digest_params(header: str) -> dict[str, str] | None:
    """The fields of an ``Authorization: Digest`` header, or None if malformed."""
    scheme, _, rest = header.partition(" ")
    if scheme.lower() != "digest":
        return None
    try:
        params = {
            key.lower(): value for key, value in parse_keqv_list(parse_http_list(rest)).items()
        }
    except ValueError:
        return None
    required = ("username", "realm", "nonce", "uri", "response", "qop", "nc", "cnonce")
    if any(not params.get(name) for name in required):
        return None
    if params["qop"] != "auth" or not _NC_PATTERN.fullmatch(params["nc"]):
        return None
    return params


@dataclass(frozen=True)
class _DigestInput:
    user: str
    realm: str
    password: str
    method: str
    uri: str


def _digest_response(algorithm: str, given: _DigestInput, nonce: str, nc: str, cnonce: str) -> str:
    """RFC 7616 section 3.4.1 ``response`` for qop=auth, as lower-case hex."""
    base, _, _ = algorithm.partition("-sess")
    name = _DIGEST_HASHES[base]

    def digest(text: str) -> str:
        return hashlib.new(name, text.encode("utf-8"), usedforsecurity=False).hexdigest()

    ha1 = digest(f"{given.user}:{given.realm}:{given.password}")
    if algorithm.endswith("-sess"):
        ha1 = digest(f"{ha1}:{nonce}:{cnonce}")
    ha2 = digest(f"{given.method}:{given.uri}")
    return digest(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")


def _ntlm_user_line(credential: tuple[str, str]) -> str:
    """The ``DOMAIN:user:password`` line pyspnego's acceptor reads for ``credential``."""
    user, password = credential
    domain, sep, name = user.partition("\\")
    if not sep:
        domain, name = "", user
    if any(c in text for text in (domain, name, password) for c in ":\r\n") or not name:
        raise ValueError(
            "expect_ntlm: the user name must be non-empty, and neither it nor the password "
            "may contain ':' or line breaks (pyspnego's NTLM_USER_FILE format)"
        )
    return f"{domain}:{name}:{password}"


def _import_spnego() -> ModuleType:
    """pyspnego, imported on first use: only NTLM needs it."""
    try:
        spnego = importlib.import_module("spnego")
        importlib.import_module("spnego.exceptions")
    except ImportError as exc:
        raise ImportError(
            "GatewayServer(expect_ntlm=...) needs the 'pyspnego' package "
            "(pip install pyspnego, or securesession[testing])"
        ) from exc
    return spnego


def _basic_auth_failure(header: str | None, expected: tuple[str, str]) -> str | None:
    """Why an ``Authorization`` header fails to carry ``expected``, or None if it does."""
    if header is None:
        return "missing"
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        return "malformed"
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return "malformed"
    user, sep, password = decoded.partition(":")
    if not sep:
        return "malformed"
    if not (_same(user, expected[0]) & _same(password, expected[1])):
        return "mismatch"
    return None


class SilentServer(_LoopbackServer):
    """A loopback socket that accepts connections and never answers.

    For client timeout tests: connecting succeeds, but no byte (not even a TLS
    ServerHello) ever comes back.
    """

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._accepted: list[socket.socket] = []
        self._port: int | None = None

    def start(self) -> SilentServer:
        """Bind 127.0.0.1 on a random port and start accepting; returns ``self``."""
        if self._sock is not None:
            raise RuntimeError("SilentServer already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((_LOOPBACK, 0))
        sock.listen(64)
        # A short accept timeout lets the loop notice stop() promptly.
        sock.settimeout(0.05)
        self._sock = sock
        self._port = int(sock.getsockname()[1])
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._accept_loop, args=(sock,), name=f"SilentServer-{self._port}", daemon=True
        )
        self._thread.start()
        return self

    def _accept_loop(self, sock: socket.socket) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            # Hold the connection open (and unread) until stop().
            with self._lock:
                self._accepted.append(conn)

    def stop(self) -> None:
        """Stop accepting, close every held connection and the listener."""
        sock, thread = self._sock, self._thread
        self._sock = self._thread = None
        if sock is None:
            return
        self._stopping.set()
        if thread is not None:
            thread.join(_JOIN_TIMEOUT)
        sock.close()
        with self._lock:
            accepted, self._accepted = self._accepted, []
        for conn in accepted:
            conn.close()

    @property
    def https_url(self) -> str:
        """``https://127.0.0.1:PORT`` (the handshake will hang just the same)."""
        return f"https://{_LOOPBACK}:{self.port}"

    @property
    def connections(self) -> int:
        """Number of connections accepted so far."""
        with self._lock:
            return len(self._accepted)
