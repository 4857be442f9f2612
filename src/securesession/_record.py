"""The base of the public value records: ``ServiceEntry``, ``Credential``, ``TLSProfile``
and ``ClientCertificate``.

They were frozen dataclasses in 0.1 and still are to :mod:`dataclasses`
(``fields``, ``replace``, ``asdict``, ``is_dataclass`` and assignment raising
``FrozenInstanceError``), but not at import. Defining them as dataclasses, with the
``dataclasses`` module and the ``inspect`` it imports, cost every process 35 M
instructions, more than a quarter of what a one-call script adds to plain requests.
So each record writes its own constructor, and a class becomes a dataclass the first
time anything asks for its ``__dataclass_fields__``, which is how :mod:`dataclasses`
recognises one: its fields are recorded (their names; the defaults stay the
constructor's) and its assignments guarded by dataclasses' frozen ``__setattr__``; none
of its own methods is replaced.
"""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

from ._compat import dataclass_transform

if TYPE_CHECKING:
    from dataclasses import Field

__all__ = ["Record"]

_R = TypeVar("_R", bound="Record")

# Reentrant: converting a subclass first has dataclasses read its base record's fields.
_converting = threading.RLock()


class _DataclassFields:
    """``Record.__dataclass_fields__``: makes the record class that is asked a dataclass,
    which puts the real fields in that class's own dict, in front of this descriptor."""

    def __get__(self, instance: object, owner: type) -> dict[str, Field[Any]]:
        if owner is Record:
            raise AttributeError("__dataclass_fields__")  # the base itself has no fields
        import dataclasses

        with _converting:  # twice would fail: the frozen __setattr__ is then the class's own
            if "__dataclass_fields__" not in owner.__dict__:
                as_dataclass = dataclasses.dataclass(
                    init=False, repr=False, eq=False, frozen=True, match_args=False
                )
                as_dataclass(owner)
        fields: dict[str, Field[Any]] = owner.__dict__["__dataclass_fields__"]
        return fields


@dataclass_transform(frozen_default=True)  # type checkers: a frozen dataclass, own __init__
class Record:
    """An immutable record, equal to another of its class with the same values: its
    annotated attributes, less the ``uncompared=`` names given to the class statement.
    Each record defines its ``__hash__`` over some of the compared values."""

    __slots__ = ()
    __match_args__: ClassVar[tuple[str, ...]]
    _compared: ClassVar[tuple[str, ...]]
    if not TYPE_CHECKING:
        __dataclass_fields__ = _DataclassFields()

    def __init_subclass__(cls, *, uncompared: frozenset[str] = frozenset(), **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A subclass of a record adds its own annotations to its base's, as dataclasses does.
        inherited: tuple[str, ...] = getattr(cls, "__match_args__", ())
        own = tuple(name for name in cls.__annotations__ if name not in inherited)
        compared = (*getattr(cls, "_compared", ()), *(n for n in own if n not in uncompared))
        cls.__match_args__ = (*inherited, *own)  # type: ignore[misc]  # mypy: read-only here
        cls._compared = compared

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._compared)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()

    def __replace__(self: _R, **changes: Any) -> _R:
        """``copy.replace`` (Python 3.13): ``dataclasses.replace``, as for 0.1's records."""
        import dataclasses

        replaced: _R = dataclasses.replace(cast(Any, self), **changes)
        return replaced

    def __setattr__(self, name: str, value: object) -> None:
        raise _frozen(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise _frozen(f"cannot delete field {name!r}")


def _frozen(message: str) -> AttributeError:
    # dataclasses' own error once it is imported (as a 0.1 caller may catch it), else its
    # base class: importing dataclasses to raise an error would undo the point.
    dataclasses = sys.modules.get("dataclasses")
    return (
        AttributeError(message) if dataclasses is None else dataclasses.FrozenInstanceError(message)
    )
