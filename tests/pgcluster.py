"""A throwaway PostgreSQL cluster for the test suite.

One cluster per pytest session, shared by every directory that asks for it
(``tests/postgres``, ``tests/reliability``): :func:`acquire` starts it on first use
and :func:`release` stops it and deletes its directory when the last user is done.

* It lives in a fresh temporary directory, listens on 127.0.0.1 only (no Unix
  socket), on a free port, with trust authentication and durability switched off
  (``fsync=off``): it is a fixture, not a database.
* PostgreSQL refuses to run as root, so when the tests run as root (as CI often
  does) ``initdb`` and ``pg_ctl`` run as ``$SECURESESSION_PG_USER``, else the
  ``postgres`` user if it exists, else ``nobody``.
* Binaries are looked up in ``$SECURESESSION_PG_BIN``, then ``$PATH``, then the
  usual distribution directories (``/usr/lib/postgresql/*/bin`` on Debian, where
  ``initdb`` is not on ``$PATH``).
* Without binaries the tests skip, with the reason; but when ``$CI`` is set they
  fail instead, because CI must run them (``.ci/postgres.sh`` installs them).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

import psycopg
import pytest

BIN_ENV = "SECURESESSION_PG_BIN"
USER_ENV = "SECURESESSION_PG_USER"
SUPERUSER = "postgres"

_NEEDED = ("initdb", "pg_ctl", "postgres")
_SEARCH_GLOBS = ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin", "/usr/local/pgsql/bin")
_START_TIMEOUT_S = 60

_CONFIG = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = ''
max_connections = 300
shared_buffers = 32MB
fsync = off
synchronous_commit = off
full_page_writes = off
log_min_messages = warning
log_min_error_statement = panic
"""


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", str(path)))


def find_bindir() -> Path | None:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``, if any."""
    candidates: list[Path] = []
    if os.environ.get(BIN_ENV):
        candidates.append(Path(os.environ[BIN_ENV]))
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    for pattern in _SEARCH_GLOBS:
        root = Path("/")
        found = sorted(root.glob(pattern.lstrip("/")), key=_version_key, reverse=True)
        candidates.extend(found)
    for directory in candidates:
        if all((directory / name).is_file() for name in _NEEDED):
            return directory
    return None


def _server_user() -> str | None:
    """The user the server runs as, or ``None`` to run it as ourselves (not root)."""
    if os.geteuid() != 0:
        return None
    for name in (os.environ.get(USER_ENV), "postgres", "nobody"):
        if not name:
            continue
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise RuntimeError(f"running as root and no non-root user to run PostgreSQL as; set {USER_ENV}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresCluster:
    """A running throwaway cluster; :meth:`url` names a database in it."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.user = _server_user()
        self.root = Path(tempfile.mkdtemp(prefix="securesession-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = 0
        self._names = itertools.count(1)
        self._lock = threading.Lock()

    def _run(self, *args: str) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        result = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=_START_TIMEOUT_S, check=False
        )
        if result.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(args[:1])} failed ({result.returncode}): "
                f"{result.stderr.strip()[-2000:]}\n{log}"
            )

    def start(self) -> PostgresCluster:
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self.root.chmod(0o700)
        self._run(
            "initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
            "--no-sync", "--encoding=UTF8", "--locale=C",
        )  # fmt: skip
        for attempt in range(3):
            self.port = _free_port()
            (self.data / "postgresql.auto.conf").write_text(_CONFIG.format(port=self.port))
            if self.user is not None:
                entry = pwd.getpwnam(self.user)
                os.chown(self.data / "postgresql.auto.conf", entry.pw_uid, entry.pw_gid)
            try:
                self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "start")
                return self
            except RuntimeError:
                if attempt == 2:  # the port was probably taken in between; try another
                    raise
        return self

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, dbname: str = "postgres", user: str = SUPERUSER) -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}"

    def admin(self, dbname: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        """A superuser connection (autocommit) to *dbname*."""
        return psycopg.connect(self.url(dbname), autocommit=True)

    def create_database(self) -> str:
        """A new empty database; its name."""
        with self._lock:
            name = f"test_{next(self._names)}"
        with self.admin() as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return name


_lock = threading.Lock()
_cluster: PostgresCluster | None = None
_users = 0


def require_binaries() -> Path:
    """The binaries' directory, or skip (fail under CI) with the reason."""
    bindir = find_bindir()
    if bindir is not None:
        return bindir
    reason = (
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: install "
        f"PostgreSQL (.ci/postgres.sh does) or point {BIN_ENV} at them"
    )
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI is set, so the PostgreSQL tests must run", pytrace=False)
    pytest.skip(reason)


def acquire() -> PostgresCluster:
    """The session's cluster, started on first use."""
    global _cluster, _users
    bindir = require_binaries()
    with _lock:
        if _cluster is None:
            cluster = PostgresCluster(bindir)
            try:
                cluster.start()
            except BaseException:
                cluster.stop()
                raise
            _cluster = cluster
        _users += 1
        return _cluster


def release() -> None:
    """Stop the cluster when its last user is done."""
    global _cluster, _users
    with _lock:
        _users -= 1
        if _users == 0 and _cluster is not None:
            _cluster.stop()
            _cluster = None
