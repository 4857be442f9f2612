"""The cache of decrypted entries: TTL-bounded, revision-keyed, single-flight.

Values are keyed by ``(entry key, revision)``: a lookup returns the entry's current
revision, so an entry updated in the registry misses the cache at once and is never
served stale, while the TTL bounds how long a decrypted secret stays in memory.
When a newer revision of a key is cached, the older one is dropped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from cachetools import TTLCache

__all__ = ["EntryCache"]

V = TypeVar("V")


class EntryCache(Generic[V]):
    """A thread-safe TTL cache where concurrent misses on one key load it once.

    *timer* is the clock the TTL is measured on (monotonic by default; inject a fake
    one in tests). ``ttl=0`` disables caching: every request decrypts.
    """

    def __init__(
        self, *, ttl: float, maxsize: int, timer: Callable[[], float] = time.monotonic
    ) -> None:
        if ttl < 0 or maxsize < 1:
            raise ValueError("cache ttl must be >= 0 and maxsize >= 1")
        self._values: TTLCache[tuple[str, int], V] = TTLCache(maxsize, ttl, timer)
        self._revision: dict[str, int] = {}
        self._flights: dict[tuple[str, int], threading.Event] = {}
        self._lock = threading.Lock()
        self.loads = 0
        """How many times a loader ran (a decryption each): the cache-miss count."""
        self.hits = 0

    def get_or_load(self, key: str, revision: int, load: Callable[[], V]) -> V:
        """The cached value of *key* at *revision*, calling *load* once on a miss."""
        slot = (key, revision)
        while True:
            with self._lock:
                value = self._values.get(slot)
                if value is not None:
                    self.hits += 1
                    return value
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
                older = self._revision.get(key)
                if older is not None and older != revision:
                    self._values.pop((key, older), None)
                self._revision[key] = revision
                self._values[slot] = value
            return value
        finally:
            with self._lock:
                del self._flights[slot]
            flight.set()

    def invalidate(self, key: str) -> None:
        """Forget every cached revision of *key*."""
        with self._lock:
            revision = self._revision.pop(key, None)
            if revision is not None:
                self._values.pop((key, revision), None)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._revision.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._values)
