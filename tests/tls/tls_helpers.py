"""Helpers shared by the mutual-TLS tests."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from securesession._tls import ClientCertificate
from securesession.testing import CertificateAuthority, IssuedCert

#: Test secrets carry the marker the suite-wide log guard looks for.
PASSWORD = "pfx-SECRET-password"


def issue(ca: CertificateAuthority, cn: str, *, days: float = 365) -> IssuedCert:
    """A client certificate valid for *days* from now (negative: already expired)."""
    now = datetime.now(timezone.utc)
    if days < 0:
        return ca.issue_client(
            cn, not_before=now - timedelta(days=30), not_after=now + timedelta(days=days)
        )
    return ca.issue_client(cn, not_after=now + timedelta(days=days))


def pfx(cert: IssuedCert, password: str = PASSWORD) -> ClientCertificate:
    """*cert* as a PKCS#12 client certificate protected by *password*."""
    return ClientCertificate.from_pkcs12(cert.pkcs12(password.encode()), password)


def wait_until(predicate: Callable[[], bool], timeout: float = 2.0) -> bool:
    """Poll *predicate*: server threads count a handshake a moment after the client."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


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
                contextlib.suppress(OSError),  # either end closing mid-copy ends the tunnel
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
