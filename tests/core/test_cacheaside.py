"""core.cacheaside against the real private Redis: hits, TTLs, negative caching, XFetch,
single flight, the L1 and its invalidation bus, and failing open."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import threading
import time

import pytest
from django.conf import settings
from django.test import override_settings

from core import cacheaside, metrics
from core.cacheaside import Family, get_or_load, invalidate_now, should_refresh_early
from core.keys import key
from core.l1 import invalidation_channel
from core.models import PendingInvalidation
from devstack.processes import free_port
from tests.clients import on_cluster
from tests.waiting import wait_until


def _family(name: str, **options) -> Family:
    return cacheaside.register(Family(name, lambda obj_id: key("tests", name, obj_id), **options))


WIDGET = _family("widget", ttl=100, missing_ttl=10)
HOT = _family("hot", ttl=100, l1_ttl=30)
UNGUARDED = _family("unguarded", ttl=100, single_flight=False)


class CountingLoader:
    def __init__(self, value: dict | None = None, delay: float = 0.0):
        self.value = {"name": "widget"} if value is None else value
        self.delay = delay  # stands in for a slow query
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self):
        with self._lock:
            self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        return self.value


def test_a_miss_loads_and_stores_and_the_second_read_is_a_hit(cache_redis):
    loader = CountingLoader()

    first = get_or_load(WIDGET, 1, loader)
    second = get_or_load(WIDGET, 1, loader)

    assert first == second == {"name": "widget"}
    assert loader.calls == 1
    assert metrics.value("cache.hit", family="widget", tier="redis") == 1
    assert json.loads(cache_redis.get(WIDGET.key(1)))["v"] == {"name": "widget"}


def test_the_key_has_a_jittered_ttl(cache_redis):
    get_or_load(WIDGET, 1, CountingLoader())

    assert 90 <= cache_redis.ttl(WIDGET.key(1)) <= 110


def test_ttls_are_spread_by_jitter(cache_redis):
    for obj_id in range(40):
        get_or_load(WIDGET, obj_id, CountingLoader())

    ttls = {cache_redis.ttl(WIDGET.key(obj_id)) for obj_id in range(40)}
    assert len(ttls) > 5
    assert min(ttls) >= 90
    assert max(ttls) <= 110


def test_missing_objects_are_cached_briefly(cache_redis):
    loader = CountingLoader()
    loader.value = None

    assert get_or_load(WIDGET, 404, loader) is None
    assert get_or_load(WIDGET, 404, loader) is None

    assert loader.calls == 1
    assert 9 <= cache_redis.ttl(WIDGET.key(404)) <= 11


def test_invalidation_deletes_the_value_and_publishes_the_articles_message(cache_redis):
    get_or_load(WIDGET, 7, CountingLoader())
    pubsub = cache_redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(invalidation_channel())
    pubsub.get_message(timeout=1)

    invalidate_now("widget", 7)

    message = pubsub.get_message(timeout=2)
    pubsub.close()
    assert not cache_redis.exists(WIDGET.key(7))
    assert json.loads(message["data"]) == {"type": "widget", "id": 7}
    assert invalidation_channel() == "kestrel:cache:invalidate"


# --- XFetch -------------------------------------------------------------------------


def test_xfetch_is_rare_far_from_expiry_and_certain_at_expiry():
    far = dict(delta=0.05, expiry=1_000.0, beta=1.0, now=900.0)
    assert not should_refresh_early(**far, rand=lambda: 0.5)
    assert not should_refresh_early(**far, rand=lambda: 0.999)
    assert should_refresh_early(delta=0.05, expiry=1_000.0, beta=1.0, now=1_000.0, rand=lambda: 0.0)


def test_xfetch_fires_earlier_for_slow_loads_and_higher_beta():
    # 1 s before expiry, with a draw whose -ln(1 - r) is about 1.2:
    draw = lambda: 0.7  # noqa: E731
    assert not should_refresh_early(delta=0.5, expiry=100.0, beta=1.0, now=99.0, rand=draw)
    assert should_refresh_early(delta=1.0, expiry=100.0, beta=1.0, now=99.0, rand=draw)
    assert should_refresh_early(delta=0.5, expiry=100.0, beta=2.0, now=99.0, rand=draw)


def test_an_early_refresh_recomputes_before_expiry_without_a_miss(cache_redis):
    loader = CountingLoader(delay=0.01)
    clock = [1_000.0]
    get_or_load(WIDGET, 1, loader, clock=lambda: clock[0], rand=lambda: 0.5)
    envelope = json.loads(cache_redis.get(WIDGET.key(1)))
    assert envelope["d"] >= 0.01  # the recompute time is stored with the value

    clock[0] = envelope["x"] - 3 * envelope["d"]  # -ln(1 - 0.999) is 6.9: past the threshold
    loader.value = {"name": "fresh"}
    refreshed = get_or_load(WIDGET, 1, loader, clock=lambda: clock[0], rand=lambda: 0.999)

    assert refreshed == {"name": "fresh"}
    assert loader.calls == 2
    assert metrics.value("cache.miss", family="widget") == 1  # only the first read missed
    assert metrics.value("cache.early_refresh", family="widget") == 1


# --- Single flight --------------------------------------------------------------------


def _stampede(fam: Family, loader: CountingLoader, readers: int = 50) -> list:
    barrier = threading.Barrier(readers)
    results = [None] * readers

    def read(i: int) -> None:
        barrier.wait()
        results[i] = get_or_load(fam, 1, loader)

    threads = [threading.Thread(target=read, args=(i,)) for i in range(readers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def test_fifty_readers_of_an_expired_hot_key_cause_exactly_one_load():
    loader = CountingLoader(delay=0.2)

    results = _stampede(WIDGET, loader)

    assert loader.calls == 1
    assert results == [{"name": "widget"}] * 50
    assert metrics.value("cache.wait", family="widget") >= 1


def test_without_single_flight_the_same_stampede_loads_many_times():
    loader = CountingLoader(delay=0.2)

    _stampede(UNGUARDED, loader)

    assert loader.calls > 1


def test_a_loader_that_loaded_before_an_invalidation_cannot_store_its_stale_value(cache_redis):
    """The lease: invalidation during a load revokes the loader's right to store."""
    loaded = threading.Event()
    invalidated = threading.Event()

    def slow_old_read():
        value = {"name": "old"}  # read from the database before the write committed
        loaded.set()
        invalidated.wait(10)  # the write commits and invalidates meanwhile
        return value

    reader = threading.Thread(target=get_or_load, args=(WIDGET, 3, slow_old_read))
    reader.start()
    loaded.wait(10)
    invalidate_now("widget", 3)
    invalidated.set()
    reader.join(10)

    assert not cache_redis.exists(WIDGET.key(3))
    assert get_or_load(WIDGET, 3, CountingLoader({"name": "new"})) == {"name": "new"}


# --- L1 and the invalidation bus --------------------------------------------------------


def test_the_l1_serves_hot_reads_without_redis(listening_l1, cache_redis):
    loader = CountingLoader()
    get_or_load(HOT, 1, loader)
    cache_redis.delete(HOT.key(1))  # prove the next read does not go to Redis

    assert get_or_load(HOT, 1, loader) == {"name": "widget"}
    assert loader.calls == 1
    assert metrics.value("cache.hit", family="hot", tier="l1") == 1


@override_settings(KESTREL_L1_ENABLED=False)
def test_the_l1_can_be_turned_off(cache_redis):
    loader = CountingLoader()
    get_or_load(HOT, 1, loader)

    get_or_load(HOT, 1, loader)

    assert metrics.value("cache.hit", family="hot", tier="l1") == 0
    assert metrics.value("cache.hit", family="hot", tier="redis") == 1


def test_a_message_published_by_another_process_drops_the_l1_entry(listening_l1, redis_server):
    get_or_load(HOT, 5, CountingLoader())
    assert len(listening_l1.cache) == 1
    message = json.dumps({"type": "hot", "id": 5})
    publish = f"redis.Redis(port={redis_server.port}, db=1).publish({invalidation_channel()!r}, {message!r})"

    subprocess.run(
        [sys.executable, "-c", f"import redis; {publish}"],
        check=True,
        timeout=30,
    )

    assert wait_until(lambda: len(listening_l1.cache) == 0)


def test_malformed_messages_are_ignored(listening_l1, cache_redis):
    get_or_load(HOT, 5, CountingLoader())

    cache_redis.publish(invalidation_channel(), b"not json")
    cache_redis.publish(invalidation_channel(), json.dumps({"type": "hot", "id": 6}))

    assert wait_until(lambda: metrics.value("cache.l1.message") == 1)
    assert metrics.value("cache.l1.bad_message") == 1
    assert len(listening_l1.cache) == 1  # the entry for 5 is still there
    assert listening_l1.usable()


def test_losing_the_subscription_clears_the_l1_and_it_resubscribes(listening_l1, redis_server):
    get_or_load(HOT, 5, CountingLoader())

    redis_server.stop()
    assert wait_until(lambda: not listening_l1.usable())
    assert len(listening_l1.cache) == 0
    redis_server.start()

    assert listening_l1.wait_until_listening(15)


# --- Failing open -------------------------------------------------------------------------


def test_reads_fall_back_to_the_loader_when_the_cache_role_is_down(redis_down):
    loader = CountingLoader()

    assert get_or_load(WIDGET, 1, loader) == {"name": "widget"}
    assert get_or_load(WIDGET, 1, loader) == {"name": "widget"}
    assert loader.calls == 2
    assert metrics.value("cache.error", family="widget") == 2


@pytest.mark.django_db
def test_reads_fall_back_within_the_socket_timeout_when_the_cache_hangs(redis_paused):
    loader = CountingLoader()

    started = time.monotonic()
    assert get_or_load(WIDGET, 1, loader) == {"name": "widget"}

    assert time.monotonic() - started < 2.0  # 0.25 s timeout, one retry
    assert metrics.value("cache.error", family="widget") == 1


def unreachable_url() -> str:
    """A cache URL nothing answers at, of the kind the cache role's client takes."""
    return f"redis+cluster://127.0.0.1:{free_port()}" if on_cluster() else f"redis://127.0.0.1:{free_port()}/1"


@pytest.mark.django_db
def test_an_invalidation_that_cannot_reach_redis_is_replayed_once_it_can(cache_redis):
    """A partition: this process cannot reach Redis, which keeps serving the stale copy to others."""
    get_or_load(WIDGET, 9, CountingLoader({"name": "old"}))
    unreachable = copy.deepcopy(settings.CACHES)
    unreachable["default"]["LOCATION"] = unreachable_url()

    with override_settings(CACHES=unreachable):
        assert invalidate_now("widget", 9) is False
    assert PendingInvalidation.objects.filter(family="widget", obj_id="9").exists()
    assert cache_redis.exists(WIDGET.key(9))  # stale, until the replay

    assert cacheaside.replay_pending_invalidations() == 1

    assert not cache_redis.exists(WIDGET.key(9))
    assert not PendingInvalidation.objects.exists()


@pytest.mark.django_db
def test_replay_stops_at_the_first_failure_and_keeps_the_rest(cache_redis):
    PendingInvalidation.objects.create(family="widget", obj_id="1")
    PendingInvalidation.objects.create(family="widget", obj_id="2")
    unreachable = copy.deepcopy(settings.CACHES)
    unreachable["default"]["LOCATION"] = unreachable_url()

    with override_settings(CACHES=unreachable):
        assert cacheaside.replay_pending_invalidations() == 0

    assert sorted(PendingInvalidation.objects.values_list("obj_id", flat=True)) == ["1", "2"]


@pytest.mark.django_db
def test_replay_drains_a_long_outbox_with_one_invalidation_per_object(cache_redis):
    # An outage under load: hundreds of failed invalidations of a few hot objects.
    PendingInvalidation.objects.bulk_create(
        PendingInvalidation(family="widget", obj_id=str(1 + n % 3)) for n in range(1200)
    )
    for obj_id in (1, 2, 3):
        get_or_load(WIDGET, obj_id, CountingLoader({"name": "stale"}))

    assert cacheaside.replay_pending_invalidations() == 3

    assert not PendingInvalidation.objects.exists()
    assert not any(cache_redis.exists(WIDGET.key(obj_id)) for obj_id in (1, 2, 3))
    assert metrics.value("cache.invalidation", family="widget") == 3
