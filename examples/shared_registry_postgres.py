"""A registry shared by several hosts through PostgreSQL, and what happens when it goes down.

Runs with no network and no existing database: it starts a throwaway PostgreSQL
cluster on 127.0.0.1 (a free port, a temporary directory, removed at the end) and
a local "gateway" that accepts only the right credentials.

    python examples/shared_registry_postgres.py

Needs the PostgreSQL server binaries (``initdb``, ``pg_ctl``, ``postgres``) on
``PATH`` or in ``/usr/lib/postgresql/<version>/bin``, and the ``postgres`` extra.

Steps: two registry objects on the same database stand for two hosts. An entry
put through host A reaches host B's SecureSession within a second (each store
LISTENs for the NOTIFY that every write sends). Then the cluster is stopped: a
session opened with ``stale_on_error`` keeps serving the entry it used a moment
ago, and fails closed for a URL it has not looked up recently.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from securesession import (
    Credential,
    MasterKey,
    Registry,
    RegistryError,
    SecureSession,
    ServiceEntry,
    open_registry,
)
from securesession.testing import GatewayServer

# A fixture, not a database: loopback only, no Unix socket, no durability.
CONFIG = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = ''
fsync = off
synchronous_commit = off
full_page_writes = off
"""


def find_bindir() -> Path | None:
    """The directory with initdb, pg_ctl and postgres: PATH, then distribution paths
    (Debian keeps them in /usr/lib/postgresql/<version>/bin, off PATH)."""
    initdb = shutil.which("initdb")
    candidates = [Path(initdb).resolve().parent] if initdb else []
    for pattern in ("usr/lib/postgresql/*/bin", "usr/pgsql-*/bin", "usr/local/pgsql/bin"):
        newest_first = sorted(
            Path("/").glob(pattern),
            key=lambda p: [int(n) for n in re.findall(r"\d+", str(p))],
            reverse=True,
        )
        candidates.extend(newest_first)
    for directory in candidates:
        if all((directory / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return directory
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    """``initdb`` + ``pg_ctl`` in a temporary directory; as a non-root user when we
    are root, because PostgreSQL refuses to run as root."""

    def __init__(self, bindir: Path, root: Path) -> None:
        self.bindir, self.data, self.port = bindir, root / "data", free_port()
        self.log = root / "server.log"
        self.user: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            for name in ("postgres", "nobody"):
                with contextlib.suppress(KeyError):
                    self.user = pwd.getpwnam(name)
                    break
            if self.user is not None:
                os.chown(root, self.user.pw_uid, self.user.pw_gid)

    def run(self, *args: str) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.user is not None:
            command = ["runuser", "-u", self.user.pw_name, "--", *command]
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        subprocess.run(command, env=env, capture_output=True, check=True, timeout=60)

    def start(self) -> None:
        # UTF8 explicitly: under LC_ALL=C initdb would pick SQL_ASCII, where psycopg
        # returns text columns as bytes.
        self.run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
            "--no-sync", "--encoding=UTF8", "--locale=C",
        )  # fmt: skip
        config = self.data / "postgresql.auto.conf"
        config.write_text(CONFIG.format(port=self.port))
        if self.user is not None:
            os.chown(config, self.user.pw_uid, self.user.pw_gid)
        self.run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "start")

    def stop(self) -> None:
        # "immediate": the abrupt outage a crashed or unreachable database looks like.
        with contextlib.suppress(subprocess.CalledProcessError):
            self.run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")


@contextlib.contextmanager
def throwaway_cluster(bindir: Path) -> Iterator[Cluster]:
    root = Path(tempfile.mkdtemp(prefix="securesession-pg-example-"))
    cluster = Cluster(bindir, root)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def wait_for(condition: Callable[[], bool], timeout: float) -> float | None:
    """Seconds until ``condition()`` held, or ``None`` if it never did within *timeout*."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if condition():
            return time.monotonic() - start
        time.sleep(0.005)
    return None


def lookup_fails(registry: Registry, url: str) -> bool:
    try:
        registry.lookup(url)
    except RegistryError:
        return True
    return False


def main(bindir: Path) -> int:
    key = MasterKey.generate()  # in production: the same key file on every host
    gateway = GatewayServer(
        expect_gateway=("billing-gw", "gw-secret"),
        expect_request=("CORP\\alice", "alice-secret"),
    )
    with throwaway_cluster(bindir) as cluster, gateway, contextlib.ExitStack() as stack:
        url = f"postgresql://postgres@127.0.0.1:{cluster.port}/postgres"
        print(f"cluster   {url} (PostgreSQL in {bindir})")
        # Closed even on an early return, so their listener threads stop cleanly.
        host_a = open_registry(url, key)
        stack.callback(host_a.close)
        host_b = open_registry(url, key)
        stack.callback(host_b.close)
        invoice = f"{gateway.url}/billing/invoices/1"
        # stale_on_error=60: if the registry is unreachable, keep serving for 60 s
        # what this session looked up and decrypted in the last 60 s; nothing else.
        with SecureSession(host_b, cache_ttl=300, stale_on_error=60) as session:
            before = session.get(invoice).status_code
            print(f"host B    GET /billing/invoices/1 -> {before} (no entry yet)")

            host_a.put(
                ServiceEntry(
                    url=f"{gateway.url}/billing/",
                    gateway=Credential("billing-gw", "gw-secret"),
                    request=Credential("CORP\\alice", "alice-secret"),
                )
            )
            # No polling of the database: host B's listener applies the NOTIFY.
            seen_after = wait_for(lambda: session.entry_for(invoice) is not None, 1.0)
            if seen_after is None:
                print("host B did not see host A's entry within a second")
                return 1
            print(f"host B    sees host A's new entry after {seen_after * 1000:.0f} ms")
            print(f"host B    GET /billing/invoices/1 -> {session.get(invoice).status_code}")

            cluster.stop()
            # Lookups answer from an in-memory index until the listener notices the
            # lost connection (at once here: the server closes it on shutdown).
            if wait_for(lambda: lookup_fails(host_b, invoice), 10.0) is None:
                print("the registry still answered after the cluster stopped")
                return 1
            warm = session.get(invoice).status_code
            print(f"cluster stopped: GET /billing/invoices/1 -> {warm} (warm entry, from cache)")
            sent_before = len(gateway.requests)
            try:
                session.get(f"{gateway.url}/billing/invoices/2")
                print("cold URL was sent without the registry")
                return 1
            except RegistryError as exc:
                print(f"cluster stopped: GET /billing/invoices/2 -> {type(exc).__name__} "
                      "(cold URL: fails closed)")  # fmt: skip
            if len(gateway.requests) != sent_before:
                return 1
            print(f"gateway   saw {sent_before} requests; nothing sent for the cold URL")
    print("cluster stopped and removed")
    print("ok")
    return 0 if warm == 200 else 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    found = find_bindir()
    if found is None:
        print(
            "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found on PATH or in "
            "/usr/lib/postgresql/*/bin: install PostgreSQL to run this example"
        )
        sys.exit(1 if os.environ.get("CI") else 0)
    sys.exit(main(found))
