"""EntryCache on its own: the TTL on the injected clock, revisions, the size bound,
reads that never wait, and single flight across threads; RecentLookups' keys."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from securesession._cache import EntryCache, RecentLookups


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def counted(value: str, calls: list[str]) -> Callable[[], str]:
    """A loader of *value* that notes each call in *calls*."""

    def load() -> str:
        calls.append(value)
        return value

    return load


def test_a_value_is_served_until_its_ttl_ends_on_the_injected_clock(clock: Clock) -> None:
    cache: EntryCache[str] = EntryCache(ttl=60, maxsize=8, timer=clock)
    calls: list[str] = []
    assert cache.get_or_load("k", 1, counted("one", calls)) == "one"
    clock.now += 59.999
    assert cache.get("k", 1) == "one"
    assert cache.get_or_load("k", 1, lambda: "never") == "one"
    clock.now = 1060.0  # loaded at 1000 with ttl 60: no longer served from 1060 on
    assert cache.get("k", 1) is None
    assert len(cache) == 0
    assert cache.get_or_load("k", 1, counted("two", calls)) == "two"
    assert calls == ["one", "two"]
    assert (cache.hits, cache.loads) == (2, 2)


def test_ttl_zero_caches_nothing() -> None:
    cache: EntryCache[str] = EntryCache(ttl=0, maxsize=8, timer=Clock())
    loads: list[str] = []
    for index in range(3):
        assert cache.get_or_load("k", 1, counted("v", loads)) == "v"
        assert cache.get("k", 1) is None, index
    assert (len(loads), cache.hits, len(cache)) == (3, 0, 0)


def test_a_new_revision_replaces_the_old_one() -> None:
    cache: EntryCache[str] = EntryCache(ttl=60, maxsize=8, timer=Clock())
    cache.get_or_load("k", 1, lambda: "old")
    cache.get_or_load("k", 2, lambda: "new")
    assert cache.get("k", 1) is None
    assert cache.get("k", 2) == "new"
    assert len(cache) == 1


def test_loads_drop_expired_values_and_a_full_cache_the_oldest_load(clock: Clock) -> None:
    cache: EntryCache[str] = EntryCache(ttl=60, maxsize=3, timer=clock)
    cache.get_or_load("a", 1, lambda: "a")
    clock.now += 30
    cache.get_or_load("b", 1, lambda: "b")
    cache.get_or_load("c", 1, lambda: "c")
    clock.now += 31  # "a" expired (loaded 61 s ago), "b" and "c" have not
    cache.get_or_load("d", 1, lambda: "d")
    assert [cache.get(key, 1) for key in "abcd"] == [None, "b", "c", "d"]
    # Every load drops what has expired: a decrypted secret does not linger in memory.
    assert [slot.value for slot in cache._cached.values()] == ["b", "c", "d"]
    cache.get("b", 1)  # a read does not keep a value longer: the oldest load goes
    cache.get_or_load("e", 1, lambda: "e")
    assert [cache.get(key, 1) for key in "bcde"] == [None, "c", "d", "e"]
    assert len(cache) == 3


def test_peek_serves_only_what_was_loaded_recently_enough(clock: Clock) -> None:
    cache: EntryCache[str] = EntryCache(ttl=60, maxsize=8, timer=clock)
    cache.get_or_load("k", 1, lambda: "v")
    clock.now += 20
    assert cache.peek("k", 1, max_age=30) == "v"
    assert cache.peek("k", 1, max_age=10) is None
    assert cache.peek("k", 2, max_age=30) is None
    clock.now += 40  # the TTL ends: never served, whatever max_age
    assert cache.peek("k", 1, max_age=1000) is None
    assert cache.hits == 0  # peeks count no hit


def test_invalidate_and_clear_forget_values() -> None:
    cache: EntryCache[str] = EntryCache(ttl=60, maxsize=8, timer=Clock())
    cache.get_or_load("a", 3, lambda: "a")
    cache.get_or_load("b", 1, lambda: "b")
    cache.invalidate("a")
    assert (cache.get("a", 3), cache.get("b", 1)) == (None, "b")
    cache.clear()
    assert cache.get("b", 1) is None and len(cache) == 0


def test_concurrent_misses_load_once_and_get_never_waits() -> None:
    cache: EntryCache[str] = EntryCache(ttl=60, maxsize=8, timer=Clock())
    started, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def slow() -> str:
        calls.append(1)
        started.set()
        assert release.wait(5)
        return "v"

    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get_or_load("k", 1, slow)))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    assert started.wait(5)
    assert cache.get("k", 1) is None  # a load in flight is a miss, at once
    release.set()
    for thread in threads:
        thread.join(5)
    assert results == ["v"] * 8 and calls == [1]
    assert cache.loads == 1


def test_a_failed_load_lets_the_next_caller_try() -> None:
    cache: EntryCache[str] = EntryCache(ttl=60, maxsize=8, timer=Clock())

    def failing() -> str:
        raise OSError("store unreachable")

    with pytest.raises(OSError, match="store unreachable"):
        cache.get_or_load("k", 1, failing)
    assert cache.get_or_load("k", 1, lambda: "v") == "v"
    assert cache.loads == 1


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="maxsize >= 1"):
        EntryCache(ttl=-1, maxsize=8)
    with pytest.raises(ValueError, match="maxsize >= 1"):
        EntryCache(ttl=1, maxsize=0)


def test_recent_lookups_are_keyed_by_the_url_without_query_or_fragment(clock: Clock) -> None:
    """As a lookup is: what ``?token=1`` matched, ``?token=2`` and no query matched too."""
    lookups: RecentLookups[str | None] = RecentLookups(ttl=60, maxsize=8, timer=clock)
    lookups.remember("https://h/a?token=1#x", "entry")
    lookups.remember("https://h/none#frag", None)
    assert lookups.recall("https://h/a") == ("entry",)
    assert lookups.recall("https://h/a#y?z") == ("entry",)
    assert lookups.recall("https://h/none?q") == (None,)
    assert lookups.recall("https://h/b?token=1") is None
    clock.now += 61
    assert lookups.recall("https://h/a") is None
