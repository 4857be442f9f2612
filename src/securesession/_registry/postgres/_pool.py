"""Connections: a few idle ones shared by a store's threads, and one retry on loss."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Final, TypeVar

import psycopg

from ..._exceptions import RegistryCorruptError, RegistryError
from ._options import PostgresTarget, first_line

logger = logging.getLogger("securesession")

T = TypeVar("T")
Connection = psycopg.Connection[tuple[Any, ...]]

_MAX_IDLE_CONNECTIONS: Final = 8
# Class 08 (connection exception) and the shutdown/startup states of class 57.
_CONNECTION_SQLSTATES: Final = frozenset({"57P01", "57P02", "57P03"})


class Pool:
    """A few idle autocommit connections, shared by the threads of one store."""

    def __init__(self, target: PostgresTarget, *, read_only: bool = False) -> None:
        self._target = target
        #: Every connection's transactions are READ ONLY (``default_transaction_read_only``):
        #: the server refuses any write, whatever the role may do.
        self.read_only = read_only
        self._idle: list[Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def connect(self) -> Connection:
        """A new connection of this registry's, outside the pool."""
        if self._closed:
            raise RegistryError(f"registry {self._target.name} is closed")
        # UTF-8 whatever the database's encoding: on an SQL_ASCII database psycopg
        # would otherwise return text columns (keys, key ids) as bytes.
        connection = psycopg.connect(
            self._target.conninfo, autocommit=True, prepare_threshold=None, client_encoding="utf8"
        )
        if self.read_only:
            connection.execute("SET default_transaction_read_only = on")
        return connection

    def take(self) -> Connection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self.connect()

    def give(self, connection: Connection) -> None:
        reusable = (
            not connection.closed
            and connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        )
        with self._lock:
            if reusable and not self._closed and len(self._idle) < _MAX_IDLE_CONNECTIONS:
                self._idle.append(connection)
                return
        connection.close()

    def discard_idle(self) -> None:
        """Close every idle connection: after one died, the others likely did too."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def close(self) -> None:
        """Refuse new connections from now on and close the idle ones."""
        with self._lock:
            self._closed = True
        self.discard_idle()

    def query(self, action: str, run: Callable[[Connection], T]) -> T:
        """Run a read-only *run*, retrying once on a fresh connection if it was lost."""
        return self._attempt(action, run, transaction=False)

    def transact(self, action: str, body: Callable[[Connection], T]) -> T:
        """Run *body* in one transaction, retrying once if the connection was lost
        before COMMIT; a loss during COMMIT leaves the outcome unknown and says so."""
        return self._attempt(action, body, transaction=True)

    def _attempt(self, action: str, body: Callable[[Connection], T], *, transaction: bool) -> T:
        for attempt in (1, 2):
            connection: Connection | None = None
            committing = False
            try:
                connection = self.take()
                if transaction:
                    with connection.transaction():
                        result = body(connection)
                        committing = True
                else:
                    result = body(connection)
            except psycopg.Error as exc:
                # Judge the connection before closing it: a closed one always looks lost.
                lost = _connection_lost(exc, connection)
                if connection is not None:
                    connection.close()
                if committing and lost:
                    text = self._target.redact(first_line(str(exc)))
                    raise RegistryError(
                        f"cannot {action} registry {self._target.name}: the connection was lost "
                        f"while committing, so the change may or may not have been applied ({text})"
                    ) from exc
                if attempt == 1 and not self._closed and lost:
                    self._retrying(action, exc)
                    continue
                raise registry_error(self._target, action, exc) from exc
            except BaseException:
                if connection is not None:
                    connection.close()
                raise
            self.give(connection)
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _retrying(self, action: str, exc: psycopg.Error) -> None:
        self.discard_idle()
        logger.warning(
            "registry %s: connection lost during %s (%s); retrying once",
            self._target.name,
            action,
            self._target.redact(first_line(str(exc))),
        )


def registry_error(target: PostgresTarget, action: str, exc: psycopg.Error) -> RegistryError:
    """What to raise for *exc*, a failure to *action* the registry."""
    text = target.describe(exc)
    where = f"cannot {action} registry {target.name}"
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return RegistryError(f"{where}: permission denied ({text})")
    if isinstance(exc, (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn)):
        return RegistryCorruptError(f"{where}: its tables are missing or altered ({text})")
    return RegistryError(f"{where}: {text}")


def _connection_lost(exc: BaseException, connection: Connection | None) -> bool:
    """Whether *exc* means the connection (not the statement) failed."""
    if connection is None or connection.closed:
        return True
    if not isinstance(exc, psycopg.OperationalError):
        return False
    sqlstate = exc.sqlstate or ""
    return not sqlstate or sqlstate.startswith("08") or sqlstate in _CONNECTION_SQLSTATES
