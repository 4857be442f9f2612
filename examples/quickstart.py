"""Quick start: a key file, a SQLite registry, one entry, one call through SecureSession.

Runs anywhere with no network: the "gateway" is a local server on 127.0.0.1 that
accepts only the right gateway and request credentials.

    python examples/quickstart.py [directory]

The key file and registry go to *directory* (default: a fresh temporary one).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from securesession import Credential, MasterKey, SecureSession, ServiceEntry, open_registry
from securesession.testing import GatewayServer


def main(directory: Path) -> int:
    key_file = directory / "master.key"
    if not key_file.exists():
        MasterKey.generate().save(key_file)  # written 0600
    key = MasterKey.from_file(key_file)
    registry = open_registry(f"sqlite://{directory / 'registry.db'}", key)

    with GatewayServer(
        expect_gateway=("gw-user", "gw-secret"),
        expect_request=("CORP\\alice", "alice-secret"),
    ) as gateway:
        entry = registry.put(
            ServiceEntry(
                url=f"{gateway.url}/payments/",
                gateway=Credential("gw-user", "gw-secret"),
                request=Credential("CORP\\alice", "alice-secret"),
            )
        )
        print(f"registry  {directory / 'registry.db'} (key id {key.key_id})")
        print(f"entry     {entry!r}")
        with SecureSession(registry, cache_ttl=300) as session:
            response = session.get(f"{gateway.url}/payments/bills/42")
            unmatched = session.get(f"{gateway.url}/public")
        print(f"matched   GET /payments/bills/42 -> {response.status_code} {response.text.strip()}")
        print(f"no entry  GET /public -> {unmatched.status_code} (nothing injected)")
        received = gateway.requests[0]
        print(f"gateway saw X-Gateway-User={received.header('X-Gateway-User')!r} and Basic auth")
    registry.close()
    return 0 if response.status_code == 200 and unmatched.status_code == 401 else 1


if __name__ == "__main__":
    if len(sys.argv) > 1:
        sys.exit(main(Path(sys.argv[1])))
    with tempfile.TemporaryDirectory() as temporary:
        sys.exit(main(Path(temporary)))
