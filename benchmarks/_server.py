"""A lean keep-alive HTTP/HTTPS server for throughput baselines, run as its own process.

    python benchmarks/_server.py [--tls CERT KEY CA] [--require-header NAME]...

Standard library only, so the process stays small and starts fast. It prints
``PORT <n>`` on stdout once it listens on 127.0.0.1, then serves until stdin closes
(the parent dies or closes the pipe), so it can never outlive the benchmark.

Why not :class:`securesession.testing.GatewayServer`: that server records every
request, checks credentials and runs in the client's process; here the server's CPU
must be small and must not share the client's GIL, or both sides of an A/B
comparison would be measured through the server's noise. Every request to this
server costs the same whichever client sent it.

* One thread per connection, ``TCP_NODELAY`` (headers and body go out in one
  write anyway), HTTP/1.1 keep-alive, a fixed 2-byte ``200`` answer.
* ``--require-header`` answers ``401`` when a header is absent, so a benchmark whose
  credentials were not injected fails loudly instead of measuring nothing.
* With ``--tls`` the server demands a client certificate signed by CA and counts
  handshakes, and ``GET /__stats`` returns the counters and every negotiated
  (TLS version, cipher) pair as JSON.
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import sys
import threading

_OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
_MISSING = (
    b"HTTP/1.1 401 Unauthorized\r\nContent-Type: text/plain\r\nContent-Length: 16\r\n\r\n"
    b"missing a header"
)
_MAX_HEAD = 65536


class _Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.connections = 0
        self.handshakes = 0
        self.requests = 0
        self.rejected = 0
        self.tls: set[tuple[str, str]] = set()

    def as_json(self) -> bytes:
        with self.lock:
            return json.dumps(
                {
                    "connections": self.connections,
                    "handshakes": self.handshakes,
                    "requests": self.requests,
                    "rejected": self.rejected,
                    "tls": sorted(self.tls),
                }
            ).encode()


def _serve_connection(
    conn: socket.socket, context: ssl.SSLContext | None, required: list[bytes], stats: _Stats
) -> None:
    try:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if context is not None:
            conn = context.wrap_socket(conn, server_side=True)
            cipher = conn.cipher()
            with stats.lock:
                stats.handshakes += 1
                if cipher is not None:
                    stats.tls.add((str(conn.version()), cipher[0]))
        buffer = b""
        while True:
            end = buffer.find(b"\r\n\r\n")
            while end < 0:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buffer += chunk
                if len(buffer) > _MAX_HEAD:
                    return
                end = buffer.find(b"\r\n\r\n")
            head, buffer = buffer[: end + 2], buffer[end + 4 :]
            lowered = head.lower()
            length = _content_length(lowered)
            while len(buffer) < length:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buffer += chunk
            buffer = buffer[length:]
            if lowered.startswith(b"get /__stats "):
                body = stats.as_json()
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
                )
                continue
            missing = any(b"\r\n" + name + b":" not in lowered for name in required)
            with stats.lock:
                stats.requests += 1
                stats.rejected += missing
            conn.sendall(_MISSING if missing else _OK)
    except OSError:
        return  # the client went away, or its certificate was refused
    finally:
        conn.close()


def _content_length(lowered_head: bytes) -> int:
    start = lowered_head.find(b"\r\ncontent-length:")
    if start < 0:
        return 0
    start += len(b"\r\ncontent-length:")
    return int(lowered_head[start : lowered_head.find(b"\r\n", start)].strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tls", nargs=3, metavar=("CERT", "KEY", "CA"))
    parser.add_argument("--require-header", action="append", default=[])
    args = parser.parse_args(argv)
    context: ssl.SSLContext | None = None
    if args.tls:
        cert, key, ca = args.tls
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        context.load_verify_locations(ca)
        context.verify_mode = ssl.CERT_REQUIRED
    required = [name.lower().encode("ascii") for name in args.require_header]
    stats = _Stats()
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    print(f"PORT {listener.getsockname()[1]}", flush=True)

    def accept_loop() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with stats.lock:
                stats.connections += 1
            threading.Thread(
                target=_serve_connection, args=(conn, context, required, stats), daemon=True
            ).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    sys.stdin.read()  # returns when the parent closes the pipe or exits
    listener.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
