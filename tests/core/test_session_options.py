"""SecureSession's keyword arguments: GuardOptions, checked by type checkers and at run
time, and handed to the guard whole."""

from __future__ import annotations

import inspect
import time

import pytest

from securesession import GuardOptions, Registry, SecureAdapter, SecureSession
from securesession._guard import EntryGuard, WireGuard

from ..guard_options import Clock, add_entries, check_guard_options, guard_options


def test_every_guard_keyword_reaches_the_guard(registry: Registry) -> None:
    add_entries(registry)
    clock = Clock()
    with SecureSession(registry, **guard_options(clock)) as session:
        check_guard_options(clock, session, session.entry_for, lambda: session.cache_info().loads)


def test_the_0_1_0_keyword_calls_still_work(registry: Registry) -> None:
    adapter = SecureAdapter()
    with SecureSession(
        registry,
        cache_ttl=60,
        cache_maxsize=10,
        strict=True,
        timer=time.monotonic,
        adapter=adapter,
        stale_on_error=30.0,
    ) as session:
        assert session.adapter is adapter
        assert (session.strict, session.stale_on_error) == (True, 30.0)
    with SecureSession(registry, cache_ttl=60) as session:
        assert (session.strict, session.stale_on_error) == (False, 0.0)


def test_an_unknown_keyword_raises_type_error_naming_it(registry: Registry) -> None:
    # The ignore is itself checked: mypy --strict reports it unused if the keyword
    # stopped being a type error.
    unexpected = r"^SecureSession\(\) got an unexpected keyword argument 'cache_tl'$"
    with pytest.raises(TypeError, match=unexpected):
        SecureSession(registry, cache_tl=60)  # type: ignore[call-arg]


def test_guard_keywords_are_keyword_only(registry: Registry) -> None:
    with pytest.raises(TypeError):
        SecureSession(registry, 60)  # type: ignore[call-arg, arg-type]


def test_validation_stays_in_the_guard(registry: Registry) -> None:
    with pytest.raises(ValueError, match="stale_on_error must be between 0"):
        SecureSession(registry, cache_ttl=10, stale_on_error=20)


def test_the_guard_constructor_takes_exactly_the_guard_options() -> None:
    """GuardOptions and the one constructor that holds the defaults stay in step."""
    parameters = inspect.signature(EntryGuard.__init__).parameters.values()
    keywords = {p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert keywords == GuardOptions.__optional_keys__
    assert WireGuard.__init__ is EntryGuard.__init__
