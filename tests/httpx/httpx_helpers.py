"""Helpers of the httpx tests: tagged entries, a CONNECT proxy and a tiny HTTP/2 server.

``H2Server`` is an HTTPS server that speaks HTTP/2 only (ALPN ``h2``), built on the
``h2`` package's server side: it records, per request, the headers, the negotiated
ALPN protocol and the client certificate's CN, and answers a small JSON body. It
binds 127.0.0.1 only. ``GatewayServer`` offers no ALPN, which is how the fallback to
HTTP/1.1 is tested.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import select
import socket
import ssl
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeAlias, cast

from securesession import (
    ClientCertificate,
    Credential,
    EntryRef,
    Registry,
    ServiceEntry,
    TLSProfile,
)
from securesession.testing import CertificateAuthority, RecordedRequest

_BASIC = re.compile(r"Basic\s+([A-Za-z0-9+/=]+)")
# The subject of ssl.SSLSocket.getpeercert(): relative distinguished names of (name, value).
_RDNs: TypeAlias = tuple[tuple[tuple[str, str], ...], ...]


def client_cert(
    ca: CertificateAuthority,
    cn: str,
    *,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> ClientCertificate:
    issued = ca.issue_client(cn, not_before=not_before, not_after=not_after)
    return ClientCertificate.from_pkcs12(issued.pkcs12(b"p12-SECRET"), "p12-SECRET")


def profile(ca: CertificateAuthority, cn: str | None, **settings: object) -> TLSProfile:
    cert = None if cn is None else client_cert(ca, cn)
    return TLSProfile(client_cert=cert, ca_bundle=ca.cert_pem, **settings)  # type: ignore[arg-type]


def tagged(
    url: str, tag: str, *, basic: bool = True, tls: TLSProfile | None = None
) -> ServiceEntry:
    return ServiceEntry(
        url=url,
        gateway=Credential(f"{tag}-gw-user", f"{tag}-gw-SECRET"),
        request=Credential(f"{tag}-rq-user", f"{tag}-rq-SECRET") if basic else None,
        tls=tls,
    )


def text_of(headers: dict[str, str]) -> str:
    text = " ".join(headers.values())
    decoded = [
        base64.b64decode(match.group(1)).decode("utf-8", "replace")
        for match in _BASIC.finditer(text)
    ]
    return " ".join([text, *decoded])


def tags_in(headers: dict[str, str], tags: list[str]) -> set[str]:
    text = text_of(headers)
    return {tag for tag in tags if f"{tag}-" in text}


def tags_seen(record: RecordedRequest, tags: list[str]) -> set[str]:
    return tags_in(record.headers, tags)


class ConnectProxy:
    """A minimal HTTP CONNECT proxy on 127.0.0.1 that records the tunnels it opens."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.tunnels: list[str] = []
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._loop, daemon=True)
        self._accept.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def close(self) -> None:
        self._listener.close()
        for thread in self._threads:
            thread.join(2)

    def _loop(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._tunnel, args=(client,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _tunnel(self, client: socket.socket) -> None:
        with client:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = client.recv(4096)
                if not chunk:
                    return
                head += chunk
            target = head.split(b"\r\n", 1)[0].decode().split()[1]
            self.tunnels.append(target)
            host, port = target.rsplit(":", 1)
            if host != "127.0.0.1":  # loopback only, whatever a test asks for
                client.sendall(b"HTTP/1.1 403 Forbidden\r\n\r\n")
                return
            with (
                contextlib.suppress(OSError),
                socket.create_connection((host, int(port))) as upstream,
            ):
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                ends = [client, upstream]
                while True:
                    readable, _, _ = select.select(ends, [], [], 2)
                    if not readable:
                        return
                    for end in readable:
                        data = end.recv(65536)
                        if not data:
                            return
                        (upstream if end is client else client).sendall(data)


@dataclass
class H2Request:
    path: str
    headers: dict[str, str]
    alpn: str | None
    client_cert_cn: str | None
    connection_id: int


@dataclass
class H2Server:
    """An HTTP/2-only HTTPS server on 127.0.0.1 (see the module docstring)."""

    ca: CertificateAuthority
    requests: list[H2Request] = field(default_factory=list)
    handshakes: int = 0

    def __post_init__(self) -> None:
        issued = self.ca.issue_server()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory() as tmp:
            cert_path, key_path = issued.write_pem(tmp)
            context.load_cert_chain(cert_path, key_path)
        context.load_verify_locations(cadata=self.ca.cert_pem.decode("ascii"))
        context.verify_mode = ssl.CERT_OPTIONAL
        context.set_alpn_protocols(["h2"])
        self.server_cert = issued
        self._context = context
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._connections = 0
        self._accept = threading.Thread(target=self._loop, daemon=True)
        self._accept.start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self._listener.getsockname()[1]}"

    def close(self) -> None:
        self._listener.close()
        for thread in self._threads:
            thread.join(2)

    def __enter__(self) -> H2Server:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _loop(self) -> None:
        while True:
            try:
                raw, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._connections += 1
                number = self._connections
            thread = threading.Thread(target=self._serve, args=(raw, number), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, raw: socket.socket, number: int) -> None:
        raw.settimeout(5)
        try:
            sock = self._context.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()
            return
        with sock:
            with self._lock:
                self.handshakes += 1
            alpn = sock.selected_alpn_protocol()
            peer = sock.getpeercert()
            cn = None
            # typeshed types every getpeercert() value as one union; "subject" is the RDNs.
            subject = cast(_RDNs, (peer or {}).get("subject", ()))
            for rdn in subject:
                for key, value in rdn:
                    if key == "commonName":
                        cn = value
            # A client that goes away (a refused pin, say) ends the connection.
            with contextlib.suppress(OSError):
                self._speak_h2(sock, alpn, cn, number)

    def _speak_h2(self, sock: ssl.SSLSocket, alpn: str | None, cn: str | None, number: int) -> None:
        import h2.config
        import h2.connection
        import h2.events

        config = h2.config.H2Configuration(client_side=False, header_encoding="latin-1")
        conn = h2.connection.H2Connection(config=config)
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        headers: dict[int, dict[str, str]] = {}
        while True:
            data = sock.recv(65535)
            if not data:
                return
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    headers[event.stream_id] = {
                        str(name): str(value) for name, value in event.headers
                    }
                elif isinstance(event, h2.events.StreamEnded):
                    received = headers.pop(event.stream_id, {})
                    path = received.get(":path", "")
                    with self._lock:
                        self.requests.append(H2Request(path, received, alpn, cn, number))
                    body = json.dumps({"path": path, "protocol": "h2"}).encode()
                    conn.send_headers(
                        event.stream_id,
                        [
                            (":status", "200"),
                            ("content-type", "application/json"),
                            ("content-length", str(len(body))),
                        ],
                    )
                    conn.send_data(event.stream_id, body, end_stream=True)
                elif isinstance(event, h2.events.ConnectionTerminated):
                    sock.sendall(conn.data_to_send())
                    return
            sock.sendall(conn.data_to_send())


@dataclass
class AsyncRun:
    """What :func:`run_async_client` saw: the tags each response's request carried, and
    the threads the registry's lookups and loads ran in (the loop's own among them)."""

    tags: list[set[str]]
    loop_thread: threading.Thread
    lookup_threads: list[threading.Thread]
    load_threads: list[threading.Thread]


async def run_async_client(
    registry: Registry, target: str, tags: list[str], *, offload_lookups: bool = False
) -> AsyncRun:
    """Send three GETs for *target* through a ``SecureAsyncClient`` over *registry* (over
    ``httpx.MockTransport``, which echoes the request's headers), recording the thread
    of every lookup and load *registry* runs."""
    import httpx

    from securesession.httpx import SecureAsyncClient

    lookups: list[threading.Thread] = []
    loads: list[threading.Thread] = []
    lookup, load = registry.lookup, registry.load

    def recorded_lookup(url: str) -> EntryRef | None:
        lookups.append(threading.current_thread())
        return lookup(url)

    def recorded_load(ref: EntryRef) -> ServiceEntry | None:
        loads.append(threading.current_thread())
        return load(ref)

    registry.lookup = recorded_lookup  # type: ignore[method-assign]
    registry.load = recorded_load  # type: ignore[method-assign]

    async def echo(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=dict(request.headers))

    seen = []
    async with SecureAsyncClient(
        registry, transport=httpx.MockTransport(echo), offload_lookups=offload_lookups
    ) as client:
        for _ in range(3):
            seen.append(tags_in((await client.get(target)).json(), tags))
    return AsyncRun(seen, threading.current_thread(), lookups, loads)
