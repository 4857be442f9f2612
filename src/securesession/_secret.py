"""Values that must never be printed: :class:`Secret` and :class:`Credential`."""

from __future__ import annotations

import hmac
import os
from typing import Final

from ._record import Record

__all__ = ["Credential", "Secret"]

_REDACTED: Final = "**********"
_HASH_KEY: Final = os.urandom(32)


class Secret:
    """A secret string whose ``repr`` and ``str`` are redacted.

    The value is reachable only through :meth:`reveal`, so it does not leak into
    logs, tracebacks or ``print`` by accident. Equality is constant-time.
    """

    __slots__ = ("_value",)
    _value: str

    def __init__(self, value: str | Secret) -> None:
        if isinstance(value, Secret):
            value = value._value
        if not isinstance(value, str):
            raise TypeError(f"Secret expects str, not {type(value).__name__}")
        self._value = value

    def reveal(self) -> str:
        """Return the clear value. Call it only where the value goes to the wire."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{_REDACTED}')"

    def __str__(self) -> str:
        return _REDACTED

    def __format__(self, format_spec: str) -> str:
        return _REDACTED

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        # Equal secrets must hash alike (Python's rule); a keyed digest, with a key made
        # fresh in every process, keeps hash() from being a cheap oracle for the value.
        return int.from_bytes(
            hmac.digest(_HASH_KEY, self._value.encode(), "sha256")[:8], "big", signed=True
        )

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> str:
        raise TypeError("Secret cannot be pickled")


class Credential(Record):
    """A user name and password (or token) pair.

    The user name is shown in ``repr`` (it helps diagnose which account was used);
    the password is a :class:`Secret`. Both are encrypted at rest.
    For bearer tokens use :meth:`token`, which leaves the user name empty.
    """

    username: str
    password: Secret

    def __init__(self, username: str, password: str | Secret) -> None:
        if not isinstance(username, str):
            raise TypeError("Credential username must be a str")
        object.__setattr__(self, "username", username)
        object.__setattr__(self, "password", Secret(password))

    @classmethod
    def token(cls, token: str | Secret) -> Credential:
        """A credential that is only a token (for ``bearer`` or single-header modes)."""
        return cls("", token)

    def __repr__(self) -> str:
        return f"Credential(username={self.username!r}, password={self.password!r})"

    def __hash__(self) -> int:
        return hash(self.username)
