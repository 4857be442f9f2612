"""Who a registry's writes name in the audit log: light enough to import on every open.

The audit module (:mod:`securesession._audit`) is imported only where records are
written or read; the actor a registry will name is settled when it is opened, so it
lives here.
"""

from __future__ import annotations

import contextlib
import os
import unicodedata
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Final

__all__ = ["acting_as", "check_actor", "chosen_actor", "default_actor", "os_user"]

_MAX_ACTOR: Final = 200

#: The actor registries opened in this context name (``securesession --actor``).
_ACTOR: ContextVar[str | None] = ContextVar("securesession_actor", default=None)


@contextlib.contextmanager
def acting_as(actor: str | None) -> Iterator[None]:
    """Registries opened inside the block (in this thread or task) write audit records
    naming *actor* unless given another; ``None`` changes nothing. The CLI wraps each
    command in it for its global ``--actor`` option."""
    token = _ACTOR.set(_ACTOR.get() if actor is None else check_actor(actor))
    try:
        yield
    finally:
        _ACTOR.reset(token)


def chosen_actor() -> str | None:
    """The actor of the enclosing :func:`acting_as` block, if any."""
    return _ACTOR.get()


def os_user() -> str:
    """The OS user name (or ``uid:N`` where there is no user database entry)."""
    import getpass  # with pwd and termios: for writers only

    try:
        return getpass.getuser()
    except Exception:  # no user database entry (containers): not worth failing a write
        return f"uid:{os.getuid()}" if hasattr(os, "getuid") else "unknown"


def default_actor() -> str:
    """Who is writing, when the caller does not say: the actor of :func:`acting_as`,
    else the OS user name."""
    chosen = _ACTOR.get()
    return os_user() if chosen is None else chosen


def check_actor(actor: str) -> str:
    """*actor* if it is a short, printable name (it is shown in logs and listings)."""
    if (
        not isinstance(actor, str)
        or not 0 < len(actor) <= _MAX_ACTOR
        or any(unicodedata.category(char).startswith("C") for char in actor)
    ):
        raise ValueError(
            f"an actor is a printable name of 1 to {_MAX_ACTOR} characters, no control characters"
        )
    return actor
