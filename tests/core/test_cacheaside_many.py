"""core.cacheaside.get_many against the real private Redis: one MGET for a list, one load
for its misses, the same entries as get_or_load, negative caching, leases, XFetch, the L1
and failing open."""

from __future__ import annotations

import json
import threading
import time

import pytest
from django.test import override_settings

from core import cacheaside, metrics
from core.cacheaside import Family, get_many, get_or_load, invalidate_now
from core.keys import key
from tests.posts.round_trips import recording

ROWS = {n: {"n": n} for n in range(1, 60)}  # the "database": ids 1-59 exist


def _family(name: str, **options) -> Family:
    return cacheaside.register(Family(name, lambda obj_id: key("tests", name, obj_id), **options))


GADGET = _family("gadget", ttl=100, missing_ttl=10)
HOT_GADGET = _family("hot_gadget", ttl=100, l1_ttl=30)
LOOSE_GADGET = _family("loose_gadget", ttl=100, single_flight=False)


class LoadMany:
    """Loads from ROWS, one call per batch, remembering each batch."""

    def __init__(self, during=None):
        self.batches: list[list[int]] = []
        self.during = during  # runs inside the load: a write committing meanwhile

    def __call__(self, ids: list[int]) -> dict[int, dict]:
        self.batches.append(list(ids))
        if self.during is not None:
            self.during()
        return {obj_id: ROWS[obj_id] for obj_id in ids if obj_id in ROWS}


@pytest.fixture
def warm_pool(cache_redis):
    """A pooled cache connection already open, so round trips count no handshake."""
    cache_redis.ping()


def test_values_come_back_in_the_order_asked_with_none_for_what_does_not_exist():
    loader = LoadMany()

    values = get_many(GADGET, [3, 404, 1, 3], loader)

    assert values == [{"n": 3}, None, {"n": 1}, {"n": 3}]
    assert loader.batches == [[3, 404, 1]]  # one load, each id once


def test_no_ids_cost_nothing(warm_pool):
    loader = LoadMany()

    with recording() as trips:
        assert get_many(GADGET, [], loader) == []

    assert len(trips) == 0
    assert loader.batches == []


def test_a_warm_list_is_one_mget_and_no_load(warm_pool):
    ids = list(range(1, 51))
    get_many(GADGET, ids, LoadMany())
    loader = LoadMany()

    with recording() as trips:
        values = get_many(GADGET, ids, loader)

    assert values == [ROWS[n] for n in ids]
    assert trips.names() == [("cache", "MGET")]
    assert loader.batches == []
    assert metrics.value("cache.hit", family="gadget", tier="redis") == 50


def test_a_cold_list_loads_its_misses_in_one_call_and_stores_them_in_one_pipeline(warm_pool, cache_redis):
    get_many(GADGET, [1, 2], LoadMany())
    loader = LoadMany()

    with recording() as trips:
        get_many(GADGET, [1, 2, 3, 4, 404], loader)

    assert loader.batches == [[3, 4, 404]]
    # MGET; a lease and a second look per miss; one pipeline of stores under those leases.
    assert trips.names() == [("cache", "MGET"), ("cache", "PIPELINE"), ("cache", "PIPELINE")]
    assert trips.sent[1][2] == ["SET", "GET"] * 3
    assert trips.sent[2][2] == ["SCRIPT LOAD", "EVALSHA", "EVALSHA", "EVALSHA"]
    assert not any(cache_redis.exists(f"{GADGET.key(n)}:lock") for n in (3, 4, 404))  # leases released
    assert metrics.value("cache.miss", family="gadget") == 2 + 3
    assert metrics.value("cache.load", family="gadget") == 2 + 3


def test_single_gets_and_multi_gets_share_their_entries(cache_redis):
    get_many(GADGET, [1, 2], LoadMany())
    get_or_load(GADGET, 3, lambda: ROWS[3])
    loader = LoadMany()

    assert get_or_load(GADGET, 1, lambda: pytest.fail("loaded again")) == {"n": 1}
    assert get_many(GADGET, [1, 2, 3], loader) == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert loader.batches == []
    envelope = json.loads(cache_redis.get(GADGET.key(2)))
    assert set(envelope) == {"v", "d", "x"}  # XFetch's delta and expiry ride in the value


def test_ttls_are_jittered_and_what_does_not_exist_is_cached_briefly(cache_redis):
    loader = LoadMany()

    get_many(GADGET, [*range(1, 41), 404], loader)
    assert get_many(GADGET, [404], loader) == [None]

    assert loader.batches == [[*range(1, 41), 404]]
    ttls = {cache_redis.ttl(GADGET.key(n)) for n in range(1, 41)}
    assert len(ttls) > 5
    assert 90 <= min(ttls) <= max(ttls) <= 110
    assert 9 <= cache_redis.ttl(GADGET.key(404)) <= 11


def test_a_list_loaded_before_an_invalidation_does_not_store_its_stale_values(cache_redis):
    """The lease: a write that commits and invalidates during the load revokes the store."""
    loader = LoadMany(during=lambda: invalidate_now("gadget", 2))

    values = get_many(GADGET, [1, 2], loader)

    assert values == [{"n": 1}, {"n": 2}]  # what this one reader saw
    assert cache_redis.exists(GADGET.key(1))
    assert not cache_redis.exists(GADGET.key(2))
    assert metrics.value("cache.lease_lost", family="gadget") == 1


def test_an_object_another_reader_is_loading_is_loaded_with_the_list_without_waiting(cache_redis):
    cache_redis.set(f"{GADGET.key(2)}:lock", "someone-else", px=5_000)
    loader = LoadMany()

    started = time.monotonic()
    values = get_many(GADGET, [1, 2], loader)

    assert time.monotonic() - started < cacheaside.WAIT_SECONDS / 2
    assert values == [{"n": 1}, {"n": 2}]
    assert loader.batches == [[1, 2]]
    assert not cache_redis.exists(GADGET.key(2))  # theirs to store
    assert cache_redis.get(f"{GADGET.key(2)}:lock") == b"someone-else"


def test_a_value_stored_between_the_mget_and_the_lease_is_used_not_loaded(cache_redis, monkeypatch):
    real_mget = cache_redis.mget
    loader = LoadMany()

    def mget_then_another_reader_stores(keys):
        replies = real_mget(keys)
        get_or_load(GADGET, 2, lambda: {"n": 2, "by": "the other reader"})
        return replies

    monkeypatch.setattr(cache_redis, "mget", mget_then_another_reader_stores)
    values = get_many(GADGET, [2], loader)

    assert values == [{"n": 2, "by": "the other reader"}]
    assert loader.batches == []
    assert not cache_redis.exists(f"{GADGET.key(2)}:lock")


def test_xfetch_refreshes_entries_near_expiry_in_the_same_batch(cache_redis):
    get_many(GADGET, [1, 2], LoadMany(), clock=lambda: 1_000.0, rand=lambda: 0.5)
    ROWS[2] = {"n": 2, "fresh": True}
    loader = LoadMany()
    try:
        # At the expiry itself XFetch always fires: both entries are refreshed by one load.
        expiry = json.loads(cache_redis.get(GADGET.key(2)))["x"]
        values = get_many(GADGET, [1, 2], loader, clock=lambda: expiry + 10, rand=lambda: 0.5)
    finally:
        ROWS[2] = {"n": 2}

    assert loader.batches == [[1, 2]]
    assert values[1] == {"n": 2, "fresh": True}
    assert json.loads(cache_redis.get(GADGET.key(2)))["v"] == {"n": 2, "fresh": True}
    assert metrics.value("cache.early_refresh", family="gadget") == 2
    assert metrics.value("cache.miss", family="gadget") == 2  # the first call only


def test_a_family_without_single_flight_stores_without_leases(warm_pool, cache_redis):
    loader = LoadMany()

    with recording() as trips:
        get_many(LOOSE_GADGET, [1, 2], loader)

    assert trips.names() == [("cache", "MGET"), ("cache", "PIPELINE")]
    assert trips.sent[1][2] == ["SET", "SET"]
    assert get_many(LOOSE_GADGET, [1, 2], loader) == [{"n": 1}, {"n": 2}]
    assert loader.batches == [[1, 2]]


def test_stores_work_after_the_server_forgot_its_scripts(cache_redis):
    get_many(GADGET, [1], LoadMany())
    cache_redis.script_flush()

    get_many(GADGET, [2], LoadMany())

    assert cache_redis.exists(GADGET.key(2))


# --- The L1 ---------------------------------------------------------------------------------


@pytest.fixture
def listening_l1(warm_pool, listening_l1):
    return listening_l1


def test_the_l1_serves_what_it_holds_and_redis_the_rest(listening_l1, cache_redis):
    get_many(HOT_GADGET, [1, 2], LoadMany())
    cache_redis.delete(HOT_GADGET.key(1), HOT_GADGET.key(2))  # prove the next read does not go to Redis
    loader = LoadMany()

    with recording() as trips:
        values = get_many(HOT_GADGET, [1, 2, 3], loader)

    assert values == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert loader.batches == [[3]]
    assert trips.sent[0][1] == "MGET"
    assert metrics.value("cache.hit", family="hot_gadget", tier="l1") == 2


def test_an_invalidation_drops_a_list_entry_from_the_l1(listening_l1):
    get_many(HOT_GADGET, [1, 2], LoadMany())

    invalidate_now("hot_gadget", 2)
    loader = LoadMany()

    assert get_many(HOT_GADGET, [1, 2], loader) == [{"n": 1}, {"n": 2}]
    assert loader.batches == [[2]]


def test_a_value_that_lost_its_lease_is_not_kept_in_the_l1(listening_l1, cache_redis):
    get_many(HOT_GADGET, [1], LoadMany(during=lambda: invalidate_now("hot_gadget", 1)))
    loader = LoadMany()

    get_many(HOT_GADGET, [1], loader)

    assert loader.batches == [[1]]


# --- Failing open ---------------------------------------------------------------------------


def test_with_the_cache_role_down_the_list_comes_from_one_load(redis_down):
    loader = LoadMany()

    values = get_many(GADGET, [1, 2, 404], loader)

    assert values == [{"n": 1}, {"n": 2}, None]
    assert loader.batches == [[1, 2, 404]]
    assert metrics.value("cache.error", family="gadget") == 1


@pytest.mark.django_db
def test_with_the_cache_role_hanging_the_list_comes_from_the_loader_within_the_timeout(redis_paused):
    loader = LoadMany()

    started = time.monotonic()
    assert get_many(GADGET, [1, 2], loader) == [{"n": 1}, {"n": 2}]

    assert time.monotonic() - started < 2.0  # 0.25 s timeout, one retry
    assert loader.batches == [[1, 2]]


def test_a_cache_role_lost_during_the_load_still_answers_from_the_load(redis_server, cache_redis):
    get_many(GADGET, [1], LoadMany())
    loader = LoadMany(during=redis_server.stop)  # after the MGET and the leases
    try:
        values = get_many(GADGET, [1, 2], loader)
    finally:
        redis_server.start()

    assert values == [{"n": 1}, {"n": 2}]
    assert metrics.value("cache.error", family="gadget") == 1  # the store


@override_settings(KESTREL_CACHE_ENABLED=False)
def test_with_the_cache_turned_off_every_list_is_loaded(warm_pool):
    loader = LoadMany()

    with recording() as trips:
        get_many(GADGET, [1, 2], loader)
        get_many(GADGET, [1, 2], loader)

    assert loader.batches == [[1, 2], [1, 2]]
    assert len(trips) == 0


def test_concurrent_cold_lists_store_each_entry_once(cache_redis):
    """Two readers of the same cold page: each object is stored by whoever leased it."""
    barrier = threading.Barrier(2)
    loaders = [LoadMany(during=lambda: barrier.wait(5)), LoadMany(during=lambda: barrier.wait(5))]
    results: list = [None, None]

    def read(index: int) -> None:
        results[index] = get_many(GADGET, [1, 2, 3], loaders[index])

    threads = [threading.Thread(target=read, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert results == [[{"n": 1}, {"n": 2}, {"n": 3}]] * 2
    assert all(cache_redis.exists(GADGET.key(n)) for n in (1, 2, 3))
    assert metrics.value("cache.lease_lost", family="gadget") == 0
