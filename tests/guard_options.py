"""Every front-end's guard keywords (``GuardOptions``) reach its guard: one check that
the tests of SecureSession, CachedSecureSession and the httpx clients and transports
share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from securesession import Credential, GuardOptions, Registry, ServiceEntry

FIRST = "https://first.example/api"
SECOND = "https://second.example/api"


class Clock:
    """A fake ``timer``: only the test moves it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def guard_options(clock: Clock) -> GuardOptions:
    """Values that differ from every default, so that a keyword dropped on its way to
    the guard shows (:func:`check_guard_options`)."""
    return {
        "cache_ttl": 10.0,
        "cache_maxsize": 1,
        "strict": True,
        "timer": clock,
        "stale_on_error": 5.0,
    }


class Settings(Protocol):
    """What a front-end (or a transport's guard) tells of its settings."""

    @property
    def strict(self) -> bool: ...

    @property
    def stale_on_error(self) -> float: ...


def add_entries(registry: Registry) -> None:
    for url in (FIRST, SECOND):
        registry.put(ServiceEntry(url=url, gateway=Credential("gw", "gw-SECRET")))


def check_guard_options(
    clock: Clock,
    settings: Settings,
    lookup: Callable[[str], object],
    loads: Callable[[], int],
) -> None:
    """With :func:`guard_options`' values and :func:`add_entries`' entries: *settings*
    as given, and the cache (*lookup* an entry, count the decrypting *loads*) keeping at
    most one entry, for 10 s of *clock*."""
    assert settings.strict is True
    assert settings.stale_on_error == 5.0
    lookup(FIRST)
    lookup(FIRST)
    assert loads() == 1, "served from the cache"
    clock.now = 10.5
    lookup(FIRST)
    assert loads() == 2, "cache_ttl=10 on the fake timer: expired"
    lookup(SECOND)
    lookup(FIRST)
    assert loads() == 4, "cache_maxsize=1: the second entry evicted the first"
