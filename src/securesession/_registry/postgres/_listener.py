"""The LISTEN thread and the index it keeps: ``key -> revision`` of every entry.

:class:`Listener` is the only owner of the index and of the revision it reflects:
the store asks it to look keys up, to wait for a change and to forget a key the
store found gone, and never touches the index itself.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import select
import socket
import threading
import time
from collections.abc import Sequence
from typing import Final

import psycopg
from psycopg import sql

from ..._exceptions import RegistryCorruptError, RegistryError
from .._base import EntryRef
from ._index import Index
from ._options import PostgresTarget
from ._pool import Connection, Pool
from ._schema import Queries

logger = logging.getLogger("securesession")

#: How long a lookup waits for the listener's immediate reconnect after a loss.
_LOOKUP_WAIT_S: Final = 2.0
#: How long a writer waits for its own change to reach its index.
_OWN_WRITE_WAIT_S: Final = 5.0
#: Idle time after which the listener checks its connection with a query.
_HEARTBEAT_S: Final = 5.0
#: Reconnect back-off ceiling: a recovered database is noticed within this long.
_MAX_BACKOFF_S: Final = 1.0
#: NOTIFY payloads must stay under 8000 bytes; longer keys make listeners reload.
_MAX_PAYLOAD: Final = 7900


def announce(connection: Connection, channel: str, op: str, revision: int, key: str = "") -> None:
    """Send the notification of one change (``u``/``d`` *key*, or ``*``: reload)."""
    payload = f"{op} {revision} {key}" if key else f"{op} {revision}"
    if len(payload.encode()) > _MAX_PAYLOAD:
        payload = f"* {revision}"
    connection.execute("SELECT pg_notify(%s, %s)", (channel, payload))


class Listener:
    """LISTENs on the registry's channel in a thread and applies every change to the
    index; reconnects (and reloads the index) whenever the connection is lost."""

    def __init__(self, target: PostgresTarget, queries: Queries, pool: Pool) -> None:
        self._target = target
        self.name = target.name
        self._q = queries
        self._pool = pool
        # The index and the registry revision it reflects; the listener thread applies
        # changes to them, forget() is the only other way in.
        self._index = Index()
        self._applied = 0
        self._applied_changed = threading.Condition()
        self._inbox: collections.deque[str] = collections.deque()
        self._live = threading.Event()
        self._settled = threading.Event()  # live, or the immediate reconnect failed
        self._problem = ""
        self._problem_since = 0.0
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._connection: Connection | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Connect, load the index and start the thread."""
        self._connection = self._open()
        thread = threading.Thread(
            target=self._listen, name=f"securesession-listen {self.name}", daemon=True
        )
        thread.start()
        self._thread = thread

    # -- what the store asks --------------------------------------------------------------

    def find(self, keys: Sequence[str]) -> EntryRef | None:
        """The first of *keys* in the index; fails closed while the index is not live."""
        if not self._live.is_set():
            self._await_live()
        return self._index.find(keys)

    def revision_of(self, key: str) -> int | None:
        return self._index.get(key)

    def forget(self, key: str, revision: int) -> None:
        """Drop *key*, found gone from the table, unless a change to it arrived meanwhile."""
        self._index.forget(key, revision)

    def await_change(self, revision: int) -> None:
        """Make a writer's own change visible to its own lookups before it returns."""
        with self._applied_changed:
            done = self._applied_changed.wait_for(
                lambda: self._applied >= revision or not self._live.is_set() or self._stop.is_set(),
                timeout=_OWN_WRITE_WAIT_S,
            )
        if not done:
            logger.warning(
                "registry %s: change %d not yet seen by this process's listener",
                self.name,
                revision,
            )

    def _await_live(self) -> None:
        if self._stop.is_set():
            raise RegistryError(f"registry {self.name} is closed")
        self._settled.wait(_LOOKUP_WAIT_S)
        if self._live.is_set():
            return
        since = time.monotonic() - self._problem_since
        raise RegistryError(
            f"cannot look up in registry {self.name}: {self._problem or 'reconnecting'} "
            f"for {since:.1f} s; reconnecting in the background"
        )

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(10)
        elif self._connection is not None:
            self._connection.close()
        self._live.clear()
        self._settled.set()
        with self._applied_changed:
            self._applied_changed.notify_all()
        self._wake_r.close()
        self._wake_w.close()

    # -- the thread -----------------------------------------------------------------------

    def _open(self) -> Connection:
        """Connect, LISTEN, then load the index: in that order, so no change can fall
        between the snapshot and the first notification."""
        connection = self._pool.connect()
        try:
            connection.add_notify_handler(self._on_notify)
            connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._target.channel)))
            self._reload(connection)
        except BaseException:
            connection.close()
            raise
        self._problem = ""
        self._live.set()
        self._settled.set()
        return connection

    def _on_notify(self, notify: psycopg.Notify) -> None:
        # Called inside psycopg while the listener runs a query; applied by _drain.
        if notify.channel == self._target.channel:
            self._inbox.append(notify.payload)

    def _reload(self, connection: Connection) -> None:
        with connection.transaction():
            connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            row = connection.execute(self._q.state_revision).fetchone()
            rows = connection.execute(self._q.index).fetchall()
        if row is None:
            raise RegistryCorruptError(f"registry {self.name}: its state row is missing")
        self._index.replace({str(key): int(revision) for key, revision in rows})
        self._set_applied(int(row[0]))
        self._drain(connection)

    def _set_applied(self, revision: int) -> None:
        with self._applied_changed:
            self._applied = revision
            self._applied_changed.notify_all()

    def _drain(self, connection: Connection) -> None:
        while self._inbox:
            self._apply(self._inbox.popleft(), connection)

    def _apply(self, payload: str, connection: Connection) -> None:
        op, _, rest = payload.partition(" ")
        revision_text, _, key = rest.partition(" ")
        if op == "*" and not key and (not rest or rest.isdigit()):
            # A rotation (or an operator's manual "*"): reload unless already newer.
            if not rest or int(rest) > self._applied:
                self._reload(connection)
            return
        if op not in ("u", "d") or not key or not revision_text.isdigit():
            logger.debug("registry %s: unexpected notification; reloading the index", self.name)
            self._reload(connection)
            return
        revision = int(revision_text)
        if revision <= self._applied:
            return  # already in the snapshot
        if revision != self._applied + 1:
            # Every change bumps the counter by one: a gap means we missed one.
            logger.info("registry %s: missed a change; reloading the index", self.name)
            self._reload(connection)
            return
        self._index.put(key, revision if op == "u" else None)
        self._set_applied(revision)

    def _listen(self) -> None:
        connection = self._connection
        try:
            while not self._stop.is_set():
                if connection is None:
                    connection = self._reconnect()
                    continue
                try:
                    self._pump(connection)
                except Exception as exc:
                    # Whatever went wrong, the index can no longer be trusted: fail
                    # lookups closed and rebuild it from a fresh connection.
                    if self._stop.is_set():
                        break
                    self._lost(exc)
                    connection.close()
                    connection = None
        finally:
            # Also on an unexpected exit: never leave a stale index looking live.
            self._live.clear()
            self._settled.set()
            if not self._stop.is_set():
                self._problem = "its change listener stopped"
            if connection is not None:
                connection.close()

    def _pump(self, connection: Connection) -> None:
        """Wait for notifications (and the wake-up socket); heartbeat when idle."""
        pgconn = connection.pgconn
        fd = connection.fileno()
        wake = self._wake_r.fileno()
        while not self._stop.is_set():
            ready, _, _ = select.select([fd, wake], [], [], _HEARTBEAT_S)
            if self._stop.is_set():
                return
            if fd in ready:
                pgconn.consume_input()  # raises once the server has gone
                while (notify := pgconn.notifies()) is not None:
                    if notify.relname.decode() == self._target.channel:
                        self._inbox.append(notify.extra.decode())
                if pgconn.status != psycopg.pq.ConnStatus.OK:
                    raise psycopg.OperationalError("the connection was closed")
                self._drain(connection)
            elif not ready:
                connection.execute("SELECT 1")
                self._drain(connection)

    def _lost(self, exc: BaseException) -> None:
        self._problem = f"connection lost ({self._target.describe(exc)})"
        self._problem_since = time.monotonic()
        self._settled.clear()
        self._live.clear()
        with self._applied_changed:
            self._applied_changed.notify_all()
        logger.warning("registry %s: %s; reconnecting", self.name, self._problem)

    def _reconnect(self) -> Connection | None:
        delay = 0.0
        failures = 0
        while not self._stop.wait(delay):
            try:
                connection = self._open()
            except Exception as exc:
                failures += 1
                self._problem = f"unreachable ({self._target.describe(exc)})"
                self._settled.set()  # lookups stop waiting and fail fast from now on
                if failures == 1:
                    logger.warning(
                        "registry %s: %s; lookups fail until it is back", self.name, self._problem
                    )
                delay = min(0.1 * 2**failures, _MAX_BACKOFF_S)
                continue
            self._pool.discard_idle()
            logger.warning("registry %s: reconnected, index reloaded", self.name)
            return connection
        return None
