"""The cache of decrypted entries: TTL-bounded, revision-keyed, single-flight.

Values are keyed by ``(entry key, revision)``: a lookup returns the entry's current
revision, so an entry updated in the registry misses the cache at once and is never
served stale, while the TTL bounds how long a decrypted secret stays in memory.
When a newer revision of a key is cached, the older one is dropped.

For ``SecureSession(stale_on_error=N)``, :meth:`EntryCache.peek` returns a cached
value without loading it, if it was loaded at most N seconds ago, and
:class:`RecentLookups` remembers which entry each URL matched: together they let a
session keep serving a warm entry while the registry is unreachable.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

from ._urls import without_query

if TYPE_CHECKING:
    from cachetools import TTLCache

__all__ = ["EntryCache", "RecentLookups"]

V = TypeVar("V")
R = TypeVar("R")


class _Slot(Generic[V]):
    """One cached value, when it was loaded and when it stops being served (on the
    cache's timer). Never changed once made: a reader sees a whole slot or none."""

    __slots__ = ("expires_at", "loaded_at", "value")

    def __init__(self, value: V, loaded_at: float, expires_at: float) -> None:
        self.value = value
        self.loaded_at = loaded_at
        self.expires_at = expires_at


class EntryCache(Generic[V]):
    """A thread-safe TTL cache where concurrent misses on one key load it once.

    *timer* is the clock the TTL is measured on (monotonic by default; inject a fake
    one in tests). A value loaded at time *t* is served while ``timer() < t + ttl``
    (``ttl=0`` disables caching: every request decrypts). At most *maxsize* values
    are kept: every load drops the expired values, and a load into a full cache then
    drops the one loaded longest ago.

    Reads (:meth:`get`, the hit path of :meth:`get_or_load`) take no lock: a slot is
    an immutable tuple stored and replaced whole in a dict, whose single reads and
    writes are atomic under the GIL, so a reader sees a slot or none. Everything
    that changes the cache takes the lock. ``hits`` is a statistic counted without
    the lock (as ``functools.lru_cache``'s pure-Python version counts): readers in
    several threads at once may leave it a little short.
    """

    def __init__(
        self, *, ttl: float, maxsize: int, timer: Callable[[], float] = time.monotonic
    ) -> None:
        if ttl < 0 or maxsize < 1:
            raise ValueError("cache ttl must be >= 0 and maxsize >= 1")
        self._ttl = ttl
        self._maxsize = maxsize
        self._timer = timer
        # In load order: re-storing a slot moves it to the end, so the first one is
        # always the oldest load (and, with one TTL for all, the first to expire).
        self._cached: dict[tuple[str, int], _Slot[V]] = {}
        self._revision: dict[str, int] = {}
        self._flights: dict[tuple[str, int], threading.Event] = {}
        self._lock = threading.Lock()
        self.loads = 0
        """How many times a loader ran (a decryption each): the cache-miss count."""
        self.hits = 0
        self.changes = 0
        """Moves whenever a value is stored, dropped or invalidated, once the change is
        made: a reader that saw the same count before and after its reads (which take
        no lock) knows every cached value it read is still what the cache holds."""

    def get(self, key: str, revision: int) -> V | None:
        """The cached value of *key* at *revision* while its TTL runs, else ``None``;
        never loads and never waits (a load under way in another thread is a miss).
        Counts a hit."""
        slot = self._cached.get((key, revision))
        if slot is not None and self._timer() < slot.expires_at:
            self.hits += 1
            return slot.value
        return None

    def expires_at(self, key: str, revision: int, value: V) -> float | None:
        """When *value*, cached for *key* at *revision*, stops being served (on the
        timer); ``None`` if that is not what the cache holds there."""
        slot = self._cached.get((key, revision))
        return None if slot is None or slot.value is not value else slot.expires_at

    def get_or_load(self, key: str, revision: int, load: Callable[[], V]) -> V:
        """The cached value of *key* at *revision*, calling *load* once on a miss."""
        cached = self.get(key, revision)
        if cached is not None:
            return cached
        slot = (key, revision)
        while True:
            with self._lock:
                cached = self.get(key, revision)  # stored by another thread meanwhile?
                if cached is not None:
                    return cached
                flight = self._flights.get(slot)
                if flight is None:
                    flight = self._flights[slot] = threading.Event()
                    break
            # Another thread is loading this slot: wait, then read what it stored
            # (or, if it failed, try ourselves).
            flight.wait()
        try:
            value = load()
            with self._lock:
                self.loads += 1
                self._store(key, revision, value)
            return value
        finally:
            with self._lock:
                del self._flights[slot]
            flight.set()

    def _store(self, key: str, revision: int, value: V) -> None:
        """Keep *value* (lock held): drop the key's older revision, then make room."""
        cached = self._cached
        older = self._revision.get(key)
        if older is not None and older != revision:
            cached.pop((key, older), None)
        cached.pop((key, revision), None)  # re-stored: it moves to the end
        now = self._timer()
        # Every load drops the expired values (loads are rare and cost a decryption),
        # so a decrypted secret does not stay in memory long past its TTL.
        for stale in [name for name, kept in cached.items() if now >= kept.expires_at]:
            del cached[stale]
            self._forget_revision(stale)
        while len(cached) >= self._maxsize:
            oldest = next(iter(cached))
            del cached[oldest]
            self._forget_revision(oldest)
        self._revision[key] = revision
        cached[(key, revision)] = _Slot(value, now, now + self._ttl)
        self.changes += 1  # after the change: a reader in between saw the old count

    def _forget_revision(self, slot: tuple[str, int]) -> None:
        key, revision = slot
        if self._revision.get(key) == revision:
            del self._revision[key]

    def peek(self, key: str, revision: int, *, max_age: float) -> V | None:
        """The cached value of *key* at *revision* if it was loaded at most *max_age*
        seconds ago (and its TTL has not ended); never loads, counts no hit."""
        slot = self._cached.get((key, revision))
        if slot is None:
            return None
        now = self._timer()
        if now >= slot.expires_at or now - slot.loaded_at > max_age:
            return None
        return slot.value

    def invalidate(self, key: str) -> None:
        """Forget every cached revision of *key*."""
        with self._lock:
            revision = self._revision.pop(key, None)
            if revision is not None:
                self._cached.pop((key, revision), None)
            self.changes += 1

    def clear(self) -> None:
        with self._lock:
            self._cached.clear()
            self._revision.clear()
            self.changes += 1

    def __len__(self) -> int:
        """How many values are cached and still within their TTL."""
        now = self._timer()
        with self._lock:
            return sum(1 for slot in self._cached.values() if now < slot.expires_at)


class RecentLookups(Generic[R]):
    """What each recently looked-up URL matched, for *ttl* seconds (thread-safe).

    Keys are URLs without query or fragment (a lookup ignores both); values are
    whatever the lookup returned, ``None`` ("no entry") included. Only a session
    that serves stale entries on registry errors keeps one.
    """

    def __init__(
        self, *, ttl: float, maxsize: int, timer: Callable[[], float] = time.monotonic
    ) -> None:
        # Imported here: only a session with stale_on_error keeps one, and a one-call
        # script does not pay for the import.
        from cachetools import TTLCache

        self._results: TTLCache[str, tuple[R]] = TTLCache(maxsize, ttl, timer)
        self._lock = threading.Lock()

    def remember(self, url: str, result: R) -> None:
        with self._lock:
            self._results[without_query(url)] = (result,)

    def recall(self, url: str) -> tuple[R] | None:
        """``(result,)`` if *url* was looked up within the TTL, else ``None``."""
        with self._lock:
            return self._results.get(without_query(url))
