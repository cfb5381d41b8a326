"""Local-only cache families (core.cacheaside, ttl 0): an L1 partition of their own,
kept coherent by the invalidation bus, never written to Redis."""

from __future__ import annotations

import time

import pytest

from core import cacheaside, metrics
from core.cacheaside import Family, get_or_load, get_or_load_local, invalidate_now
from core.keys import key
from core.l1 import LocalCache

LOCAL = cacheaside.register(Family("tests_local", str, ttl=0, l1_ttl=30, l1_max_entries=2, dropped_with=("tests_row",)))
ROW = cacheaside.register(Family("tests_row", lambda obj_id: key("tests", "row", obj_id), ttl=60, l1_ttl=5))


class Loader:
    def __init__(self, value: object = ("row",)) -> None:
        self.value = value
        self.calls = 0

    def __call__(self) -> object:
        self.calls += 1
        return self.value


@pytest.fixture
def l1():
    assert cacheaside.l1().wait_until_listening(10)
    return cacheaside.l1()


def partition(l1) -> LocalCache:
    return l1.partition(LOCAL.name, LOCAL.l1_max_entries)


def test_a_local_family_is_read_from_its_own_partition(l1):
    loader = Loader()

    assert get_or_load_local(LOCAL, 1, loader) == ("row",)
    assert get_or_load_local(LOCAL, 1, loader) == ("row",)

    assert loader.calls == 1
    assert len(partition(l1)) == 1
    assert len(l1.cache) == 0  # the shared L1 holds none of it
    assert metrics.value("cache.hit", family=LOCAL.name, tier="l1") == 1


def test_its_partition_is_bounded_apart_from_the_shared_l1(l1):
    for obj_id in range(5):
        get_or_load_local(LOCAL, obj_id, Loader())

    assert len(partition(l1)) == LOCAL.l1_max_entries


def test_a_copy_the_caller_calls_stale_is_loaded_again(l1):
    get_or_load_local(LOCAL, 1, Loader(("old",)))

    value = get_or_load_local(LOCAL, 1, Loader(("new",)), fresh=lambda row: row == ("new",))

    assert value == ("new",)
    assert get_or_load_local(LOCAL, 1, Loader(("newer",))) == ("new",)
    assert metrics.value("cache.stale", family=LOCAL.name) == 1


def test_invalidating_it_publishes_and_deletes_nothing_in_redis(l1, cache_redis):
    get_or_load_local(LOCAL, 1, Loader())
    cache_redis.set("1", "someone else's key")  # what a DEL of the family's key would hit

    assert invalidate_now(LOCAL.name, 1)

    assert len(partition(l1)) == 0
    assert cache_redis.get("1") == b"someone else's key"


def test_an_invalidation_of_a_family_it_is_dropped_with_drops_it(l1):
    get_or_load_local(LOCAL, 7, Loader())

    invalidate_now(ROW.name, 7)

    assert len(partition(l1)) == 0


def test_losing_the_subscription_clears_the_partitions_too(l1, redis_server):
    get_or_load_local(LOCAL, 1, Loader())

    redis_server.stop()
    deadline = time.monotonic() + 10
    while l1.usable() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(partition(l1)) == 0
    loader = Loader()
    get_or_load_local(LOCAL, 1, loader)
    get_or_load_local(LOCAL, 1, loader)
    assert loader.calls == 2  # not kept while the bus is not listening
    redis_server.start()

    assert l1.wait_until_listening(15)


def test_get_or_load_refuses_a_local_family():
    with pytest.raises(ValueError, match="no Redis tier"):
        get_or_load(LOCAL, 1, Loader())


def test_a_family_needs_a_redis_tier_or_an_l1():
    with pytest.raises(ValueError, match="neither"):
        cacheaside.register(Family("tests_nowhere", str, ttl=0))


def test_a_store_is_refused_after_a_delete_or_clear_since_its_generation():
    cache = LocalCache()
    since = cache.generation
    cache.delete("other")

    assert cache.set("k", 1, ttl=10, now=0, unless_changed_since=since) is False
    assert cache.set("k", 1, ttl=10, now=0, unless_changed_since=cache.generation) is True
    assert cache.get("k", now=1) == 1
