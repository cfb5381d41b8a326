"""core.locks against the real private Redis (and the real database for fenced writes):
ownership, TTLs, waiting, fencing numbers, a holder paused past its TTL, metrics,
contention between threads, and failing closed."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from core import locks, metrics
from core.locks import LockNotAcquired, acquire, fence_key, fenced_update, lock_key, metric_label, redis_lock
from core.redis import get_redis


def _now_us(client) -> int:
    seconds, micros = client.time()
    return seconds * 1_000_000 + micros


# --- Taking, releasing, waiting -------------------------------------------------------


def test_a_lock_is_held_with_a_ttl_and_released_on_exit(state_redis):
    with redis_lock("job:report", ttl_ms=2_000) as lock:
        assert state_redis.get(lock_key("job:report")) == f"{lock.token}:{lock.fence}".encode()
        assert 0 < state_redis.pttl(lock_key("job:report")) <= 2_000
        assert lock.held()
        assert len(lock.token) == 32  # 128 random bits, not a timestamp

    assert not state_redis.exists(lock_key("job:report"))
    assert not lock.held()
    assert not lock.expired_while_held


def test_the_lock_is_released_when_the_body_raises(state_redis):
    with pytest.raises(RuntimeError), redis_lock("job:report", ttl_ms=2_000):
        raise RuntimeError("boom")

    assert not state_redis.exists(lock_key("job:report"))


def test_a_second_acquirer_fails_at_once_and_succeeds_after_release():
    first = acquire("user:7:profile", ttl_ms=5_000)

    started = time.monotonic()
    with pytest.raises(LockNotAcquired) as refused:
        acquire("user:7:profile", ttl_ms=5_000)
    assert time.monotonic() - started < 0.25  # timeout=0: one round trip, no backoff
    assert refused.value.name == "user:7:profile"

    assert first.release()
    second = acquire("user:7:profile", ttl_ms=5_000)
    assert second.held()
    second.release()


def test_different_names_are_different_locks():
    with redis_lock("user:7:profile", ttl_ms=1_000), redis_lock("user:8:profile", ttl_ms=1_000) as other:
        assert other.held()


def test_a_waiting_acquirer_gets_the_lock_once_the_holder_releases_it():
    holder = acquire("job:report", ttl_ms=5_000)
    threading.Timer(0.1, holder.release).start()

    started = time.monotonic()
    with redis_lock("job:report", ttl_ms=1_000, timeout=2.0) as lock:
        waited = time.monotonic() - started
        assert lock.held()

    assert 0.09 <= waited < 1.0  # polls at most BACKOFF_CAP apart
    assert metrics.value("lock.contended", lock="job:report") == 1
    assert metrics.value("lock.wait_ms", lock="job:report") >= 90


def test_a_waiter_takes_a_crashed_holder_s_lock_as_soon_as_its_ttl_ends():
    acquire("job:report", ttl_ms=150)  # never released: its holder "crashed"

    started = time.monotonic()
    with redis_lock("job:report", ttl_ms=1_000, timeout=2.0):
        waited = time.monotonic() - started

    assert 0.14 <= waited < 1.0


def test_a_waiter_gives_up_at_its_timeout():
    acquire("job:report", ttl_ms=5_000)

    started = time.monotonic()
    with pytest.raises(LockNotAcquired) as refused:
        acquire("job:report", ttl_ms=1_000, timeout=0.15)

    assert 0.15 <= time.monotonic() - started < 1.0
    assert refused.value.waited >= 0.15
    assert metrics.value("lock.not_acquired", lock="job:report") == 1


# --- Ownership: the compare in compare-and-delete / compare-and-pexpire ---------------


def _impostor(lock: locks.Lock, token: str = "f" * 32) -> locks.Lock:
    """Another process's view of the same lock: same name and fence, another owner token."""
    return locks.Lock(
        name=lock.name, token=token, fence=lock.fence, ttl_ms=lock.ttl_ms, client=get_redis(), label=lock.label
    )


def test_release_by_someone_who_does_not_hold_the_lock_does_nothing(state_redis):
    owner = acquire("job:report", ttl_ms=5_000)

    assert not _impostor(owner).release()

    assert owner.held()
    assert state_redis.get(lock_key("job:report")) == f"{owner.token}:{owner.fence}".encode()


def expire_now(name: str) -> None:
    """What the TTL does to a holder that pauses past it, without waiting for it to run out."""
    assert get_redis().pexpire(lock_key(name), 0)  # a non-positive TTL deletes the key as expired


def test_a_holder_whose_lock_expired_cannot_release_the_next_holder_s_lock():
    first = acquire("job:report", ttl_ms=5_000)
    expire_now("job:report")
    second = acquire("job:report", ttl_ms=5_000)

    assert not first.release()

    assert second.held()
    assert first.expired_while_held


def test_extend_works_only_for_the_owner(state_redis):
    owner = acquire("job:report", ttl_ms=200)

    assert owner.extend(10_000)
    assert state_redis.pttl(lock_key("job:report")) > 5_000
    assert not _impostor(owner).extend(60_000)
    assert state_redis.pttl(lock_key("job:report")) <= 10_000

    owner.release()
    assert not owner.extend(10_000)  # released: nothing to extend
    assert not state_redis.exists(lock_key("job:report"))


def test_extend_after_the_lock_was_lost_does_not_touch_the_next_holder_s_ttl(state_redis):
    first = acquire("job:report", ttl_ms=5_000)
    expire_now("job:report")
    second = acquire("job:report", ttl_ms=1_000)

    assert not first.extend(60_000)

    assert state_redis.pttl(lock_key("job:report")) <= 1_000
    second.release()


@pytest.mark.parametrize("ttl_ms", [0, -1, None, 1.5, True])
def test_there_is_no_lock_without_a_positive_ttl(ttl_ms, state_redis):
    with pytest.raises(ValueError, match="TTL"):
        acquire("job:report", ttl_ms=ttl_ms)

    assert not state_redis.exists(lock_key("job:report"))


def test_extend_cannot_remove_the_ttl(state_redis):
    with redis_lock("job:report", ttl_ms=1_000) as lock:
        with pytest.raises(ValueError, match="TTL"):
            lock.extend(0)
        assert state_redis.pttl(lock_key("job:report")) > 0


# --- Fencing numbers -------------------------------------------------------------------


def test_fencing_numbers_strictly_increase_across_acquisitions_and_names(state_redis):
    fences = []
    for n in range(20):
        with redis_lock(f"user:{n % 3}:profile", ttl_ms=1_000) as lock:
            fences.append(lock.fence)

    assert fences == sorted(set(fences))
    assert int(state_redis.get(fence_key())) == fences[-1]
    assert state_redis.ttl(fence_key()) == -1  # the counter never expires


def test_fencing_numbers_keep_increasing_when_the_counter_is_lost(state_redis):
    # A failover to a lagging replica, or a lost AOF second: the counter goes back.
    with redis_lock("job:report", ttl_ms=1_000) as before:
        pass
    state_redis.delete(fence_key())

    with redis_lock("job:report", ttl_ms=1_000) as after:
        pass

    assert after.fence > before.fence


def test_fencing_numbers_keep_increasing_when_the_redis_clock_steps_back(state_redis):
    ahead = _now_us(state_redis) + 3_600_000_000  # numbers issued while the clock was an hour ahead
    state_redis.set(fence_key(), ahead)

    with redis_lock("job:report", ttl_ms=1_000) as lock:
        pass

    assert lock.fence == ahead + 1


def test_a_retried_acquire_whose_reply_was_lost_gets_its_own_lock_back(state_redis):
    # redis-py retries a timed-out call on the state role; the first attempt may have
    # taken the lock. Running the script again with the same token must not refuse it.
    lock = acquire("job:report", ttl_ms=5_000)

    got, fence = locks._script(locks._ACQUIRE)(
        keys=[lock_key("job:report"), fence_key()], args=[lock.token, 5_000], client=state_redis
    )

    assert (got, int(fence)) == (1, lock.fence)
    assert int(state_redis.get(fence_key())) == lock.fence  # no number drawn twice
    assert lock.release()


# --- Fenced writes in the database -----------------------------------------------------


@pytest.fixture
def document_model(transactional_db):
    """A throwaway table with a fence column, created for the test and dropped after.

    Real commits (transactional_db), as in production: SQLite cannot create a table
    inside the test transaction of an ordinary django_db test.
    """
    from django.db import connection, models
    from django.test.utils import isolate_apps

    with isolate_apps("core"):

        class Document(models.Model):  # noqa: DJ008 - a test table, never displayed
            body = models.CharField(max_length=50)
            fence = models.BigIntegerField(default=0)

            class Meta:
                app_label = "core"
                db_table = "test_locks_document"

    with connection.schema_editor() as editor:
        editor.create_model(Document)
    try:
        yield Document
    finally:
        with connection.schema_editor() as editor:
            editor.delete_model(Document)


def test_a_holder_paused_past_its_ttl_cannot_overwrite_the_next_holder_s_write(document_model):
    doc = document_model.objects.create(body="original")
    rows = document_model.objects.filter(pk=doc.pk)

    a = acquire("doc:1", ttl_ms=5_000)
    expire_now("doc:1")  # A stalls (GC, a slow query, a stopped VM) past its TTL, still "holding" it
    with redis_lock("doc:1", ttl_ms=1_000) as b:
        assert fenced_update(rows, "fence", b.fence, body="from B")
        # A wakes up and writes, believing it holds the lock: refused by the fence.
        assert not fenced_update(rows, "fence", a.fence, body="from A, late")
    assert not fenced_update(rows, "fence", a.fence, body="from A, later still")

    doc.refresh_from_db()
    assert (doc.body, doc.fence) == ("from B", b.fence)
    assert not a.release()
    assert a.expired_while_held


def test_the_holder_can_write_twice_under_one_lock(document_model):
    doc = document_model.objects.create(body="original")
    rows = document_model.objects.filter(pk=doc.pk)

    with redis_lock("doc:1", ttl_ms=1_000) as lock:
        assert fenced_update(rows, "fence", lock.fence, body="first")
        assert fenced_update(rows, "fence", lock.fence, body="second")

    doc.refresh_from_db()
    assert (doc.body, doc.fence) == ("second", lock.fence)


def test_a_fenced_update_of_no_row_reports_no_change(document_model):
    assert not fenced_update(document_model.objects.filter(pk=424242), "fence", 10, body="x")


def test_fenced_update_sets_the_fence_itself(document_model):
    with pytest.raises(ValueError, match="fence"):
        fenced_update(document_model.objects.all(), "fence", 10, fence=11)


# --- Metrics and expiry while held -----------------------------------------------------


def test_lock_metrics_count_acquisitions_contention_and_waits():
    with redis_lock("user:7:profile", ttl_ms=1_000):
        with pytest.raises(LockNotAcquired):
            acquire("user:7:profile", ttl_ms=1_000)
        with pytest.raises(LockNotAcquired):
            acquire("user:7:profile", ttl_ms=1_000, timeout=0.05)

    assert metrics.value("lock.acquired", lock="user:*:profile") == 1
    assert metrics.value("lock.contended", lock="user:*:profile") == 2
    assert metrics.value("lock.not_acquired", lock="user:*:profile") == 2
    assert metrics.value("lock.wait_ms", lock="user:*:profile") >= 50  # only the one that waited
    assert metrics.value("lock.expired_while_held") == 0


def test_a_lock_that_expired_while_held_is_counted_and_logged_on_exit(caplog):
    with caplog.at_level(logging.WARNING, logger="core.locks"), redis_lock("job:report", ttl_ms=5_000) as lock:
        expire_now("job:report")  # the work took longer than the TTL

    assert lock.expired_while_held
    assert metrics.value("lock.expired_while_held", lock="job:report") == 1
    assert "expired while held" in caplog.text
    assert "now free" in caplog.text


def test_metric_labels_name_the_kind_of_lock_not_the_object():
    assert metric_label("user:7:profile") == "user:*:profile"
    assert metric_label("report:ada@example.com") == "report:*"
    assert metric_label("job:report") == "job:report"


def test_lock_keys_are_readable_for_plain_names_and_hashed_otherwise():
    assert lock_key("user:7:profile").endswith(":core:lock:user:7:profile:{locks}")
    odd = lock_key("user:7:profile with spaces*")
    assert ":core:lock:h-" in odd
    assert " " not in odd
    assert "*" not in odd
    assert lock_key("x" * 300).count(":") == 4
    assert lock_key("job:{x}").count("{") == 1  # a brace in a name is hashed: the tag stays the first
    # No lock name can make a lock key equal to the fence counter's.
    assert not fence_key().startswith(lock_key("a").removesuffix("a:{locks}"))


# --- Contention between threads --------------------------------------------------------


def test_eight_threads_contending_for_one_lock_never_overlap():
    threads, rounds = 8, 3
    inside = threading.Event()
    overlaps = []
    counter = {"value": 0}
    fences_in_order = []
    errors = []
    start = threading.Barrier(threads)

    def work() -> None:
        try:
            start.wait()
            for _ in range(rounds):
                with redis_lock("shared:counter", ttl_ms=2_000, timeout=5.0) as lock:
                    if inside.is_set():
                        overlaps.append(lock.fence)
                    inside.set()
                    fences_in_order.append(lock.fence)
                    value = counter["value"]
                    time.sleep(0.002)  # a racy read-modify-write, safe only under the lock
                    counter["value"] = value + 1
                    inside.clear()
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=10)

    assert errors == []
    assert overlaps == []
    assert counter["value"] == threads * rounds
    assert fences_in_order == sorted(set(fences_in_order))  # later holders, larger fences
    assert metrics.value("lock.acquired", lock="shared:counter") == threads * rounds
    assert metrics.value("lock.expired_while_held") == 0


# --- Failing closed --------------------------------------------------------------------


def test_acquiring_fails_closed_when_redis_is_down(redis_down):
    with pytest.raises(RedisConnectionError), redis_lock("job:report", ttl_ms=1_000):
        pytest.fail("the body must not run without the lock")

    assert metrics.value("lock.error", lock="job:report") == 1


def test_releasing_while_redis_is_down_only_logs(redis_server, caplog):
    lock = acquire("job:report", ttl_ms=1_000)
    redis_server.stop()
    try:
        with caplog.at_level(logging.WARNING, logger="core.locks"):
            assert not lock.release()
    finally:
        redis_server.start()

    assert metrics.value("lock.error", lock="job:report") == 1
    assert "Could not release lock" in caplog.text
