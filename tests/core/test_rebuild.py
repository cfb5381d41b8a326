"""core.rebuild and core.redis.fail_open: a rebuild never stores a copy older than a write
that landed during its load, and a Redis that does not answer is counted, logged and
survived, while any other error still raises."""

from __future__ import annotations

import logging
import threading

import pytest
from redis.exceptions import ResponseError

from core import metrics
from core.keys import key
from core.rebuild import Lease, rebuild
from core.redis import fail_open, get_redis

logger = logging.getLogger(__name__)

FAMILY = "core:rebuild_test"
LIST = key("core", "rebuild_test", 1)
VERSION = key("core", "rebuild_test", 1, "version")
LEASE = Lease(key("core", "rebuild_test", 1, "lease"), ttl_ms=5_000)


def store_list(pipe, rows: list[str]) -> None:
    pipe.delete(LIST)
    pipe.rpush(LIST, "built", *rows)


def test_a_rebuild_stores_what_it_loaded(state_redis):
    result = rebuild(state_redis, family=FAMILY, load=lambda: ["a", "b"], store=store_list, watch=[VERSION])

    assert (result.value, result.stored, result.loaded) == (["a", "b"], True, True)
    assert state_redis.lrange(LIST, 0, -1) == [b"built", b"a", b"b"]
    assert metrics.value("cache.rebuilt", family=FAMILY) == 1


def test_a_write_during_the_load_aborts_the_store_and_the_loaded_value_is_still_returned(state_redis):
    def load_while_a_write_lands() -> list[str]:
        get_redis("state").incr(VERSION)  # another client's write, between our WATCH and EXEC
        return ["stale"]

    result = rebuild(state_redis, family=FAMILY, load=load_while_a_write_lands, store=store_list, watch=[VERSION])

    assert (result.value, result.stored) == (["stale"], False)
    assert not state_redis.exists(LIST)
    assert metrics.value("cache.rebuild_raced", family=FAMILY) == 1


def test_a_rebuild_tries_again_while_writes_keep_landing_and_stores_once_they_stop(state_redis):
    writes = iter([True, True, False])

    def load() -> list[str]:
        if next(writes):
            get_redis("state").incr(VERSION)
        return [state_redis.get(VERSION).decode()]

    result = rebuild(state_redis, family=FAMILY, load=load, store=store_list, watch=[VERSION], attempts=3)

    assert (result.value, result.stored) == (["2"], True)
    assert state_redis.lrange(LIST, 0, -1) == [b"built", b"2"]
    assert metrics.value("cache.rebuild_raced", family=FAMILY) == 2


def test_with_a_lease_only_one_process_rebuilds_and_the_lease_goes_with_the_store(state_redis):
    state_redis.set(LEASE.key, "someone else", px=LEASE.ttl_ms)
    loads = []

    busy = rebuild(state_redis, family=FAMILY, load=lambda: loads.append(1), store=store_list, lease=LEASE)

    assert (busy.value, busy.stored, busy.loaded) == (None, False, False)
    assert loads == []  # the holder is reading the same rows: no second read
    state_redis.delete(LEASE.key)

    done = rebuild(state_redis, family=FAMILY, load=lambda: ["a"], store=store_list, lease=LEASE)

    assert done.stored
    assert not state_redis.exists(LEASE.key)


def test_an_invalidation_that_deletes_the_lease_during_the_load_aborts_the_store(state_redis):
    def load_while_invalidated() -> list[str]:
        get_redis("state").delete(LEASE.key)  # a write's invalidation drops the lease with the copy
        return ["stale"]

    result = rebuild(state_redis, family=FAMILY, load=load_while_invalidated, store=store_list, lease=LEASE)

    assert (result.value, result.stored) == (["stale"], False)
    assert not state_redis.exists(LIST)


def test_concurrent_rebuilds_under_a_lease_read_the_database_once(state_redis):
    started, release = threading.Event(), threading.Event()
    loads = []

    def slow_load() -> list[str]:
        loads.append(1)
        started.set()
        release.wait(5)
        return ["a"]

    first = threading.Thread(
        target=rebuild,
        args=(get_redis("state"),),
        kwargs={"family": "core:rebuild_test", "load": slow_load, "store": store_list, "lease": LEASE},
    )
    first.start()
    assert started.wait(5)
    second = rebuild(get_redis("state"), family=FAMILY, load=slow_load, store=store_list, lease=LEASE)
    release.set()
    first.join(5)

    assert not second.loaded
    assert loads == [1]
    assert state_redis.lrange(LIST, 0, -1) == [b"built", b"a"]


def test_a_leased_rebuild_cannot_be_asked_to_retry(state_redis):
    with pytest.raises(ValueError, match="one attempt"):
        rebuild(state_redis, family="f", load=list, store=store_list, lease=LEASE, attempts=2)


# --- fail_open -----------------------------------------------------------------------


def test_fail_open_counts_logs_and_carries_on_when_redis_is_down(redis_down, caplog):
    with (
        caplog.at_level(logging.WARNING, logger=__name__),
        fail_open("test.lost", "Rebuild of list %s skipped", 7, log=logger, kind="x") as outcome,
    ):
        get_redis("cache").get(LIST)
        pytest.fail("the Redis call above must raise")

    assert outcome.failed
    assert outcome.error is not None
    assert metrics.value("test.lost", kind="x") == 1
    assert "Rebuild of list 7 skipped" in caplog.text


def test_fail_open_lets_every_other_error_through(state_redis):
    state_redis.set(LIST, "a string")
    with pytest.raises(ResponseError, match="WRONGTYPE"), fail_open("test.lost", "never", log=logger):
        state_redis.lpush(LIST, "x")  # a bad command is a bug, not an outage

    assert metrics.value("test.lost") == 0


def test_fail_open_reports_nothing_when_the_block_succeeds(state_redis):
    with fail_open("test.lost", "never", log=logger) as outcome:
        state_redis.set(LIST, "ok")

    assert not outcome.failed
    assert metrics.value("test.lost") == 0
