"""core.batching: adds aggregated in memory, sent to a real Redis once per batch."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Hashable, Iterator

import pytest

from core import batching, metrics
from core.batching import Batch, BatchBuffer, apply_once
from core.keys import key
from core.redis import get_redis

TTL = 60


# One batch's keys are one script's: they share a hash tag, as posts.keys' view shards do.
TAG = "counters"


def counter_key(name: Hashable) -> str:
    """STRING integer, state role: a test counter."""
    return key("tests", "counter", str(name), tag=TAG)


def members_key(name: Hashable) -> str:
    """SET, state role: a test counter's members."""
    return key("tests", "counter", str(name), "members", tag=TAG)


def sequence_key(process: str) -> str:
    """STRING integer, state role, TTL: a test buffer's last applied batch."""
    return key("tests", "batches", process, tag=TAG)


class RedisSend:
    """A buffer's send: its batches go to the test Redis through apply_once; it keeps what it sent."""

    def __init__(self) -> None:
        self.batches: list[Batch] = []
        self.sent = threading.Event()

    def __call__(self, batch: Batch) -> dict[Hashable, int]:
        self.batches.append(batch)
        names = list(batch.counts)
        _, totals = apply_once(
            get_redis("state"),
            sequence_key=sequence_key(batch.process),
            seq=batch.seq,
            ttl=TTL,
            counters={counter_key(name): batch.counts[name] for name in names},
            sets={members_key(name): members for name, members in batch.members.items()},
        )
        self.sent.set()
        return {name: totals[counter_key(name)] for name in names}


@pytest.fixture
def make_buffer() -> Iterator:
    made: list[BatchBuffer] = []

    def make(send=None, **options) -> BatchBuffer:
        settings = {
            "interval": 0,
            "max_keys": 1000,
            "max_members": 1000,
            "flush_keys": 1000,
            "flush_members": 1000,
            **options,
        }
        buffer = BatchBuffer(f"test{len(made)}", send or RedisSend(), **settings)
        made.append(buffer)
        return buffer

    yield make
    for buffer in made:
        buffer.close()


def value(name: Hashable) -> int:
    return int(get_redis("state").get(counter_key(name)) or 0)


# --- apply_once ---------------------------------------------------------------------------


def test_apply_once_increments_counters_and_adds_members_in_one_call(state_redis):
    applied, totals = apply_once(
        state_redis,
        sequence_key=sequence_key("p"),
        seq=1,
        ttl=TTL,
        counters={counter_key("a"): 3, counter_key("b"): 1},
        hyperloglogs={members_key("hll"): ["u:1", "u:2", "u:1"]},
        sets={members_key("a"): ["x", "y"]},
    )

    assert applied is True
    assert totals == {counter_key("a"): 3, counter_key("b"): 1}
    assert state_redis.pfcount(members_key("hll")) == 2
    assert state_redis.smembers(members_key("a")) == {b"x", b"y"}
    assert 0 < state_redis.ttl(sequence_key("p")) <= TTL


def test_a_copy_of_a_batch_that_already_ran_writes_nothing_and_reports_the_counters(state_redis):
    batch = {"counters": {counter_key("a"): 3}, "sets": {members_key("a"): ["x"]}}
    apply_once(state_redis, sequence_key=sequence_key("p"), seq=1, ttl=TTL, **batch)
    state_redis.incrby(counter_key("a"), 10)  # another process's batch meanwhile

    applied, totals = apply_once(state_redis, sequence_key=sequence_key("p"), seq=1, ttl=TTL, **batch)

    assert applied is False
    assert totals == {counter_key("a"): 13}
    assert value("a") == 13
    # The next batch of that process applies; a late copy of an earlier one never does.
    assert apply_once(state_redis, sequence_key=sequence_key("p"), seq=2, ttl=TTL, **batch)[0] is True
    assert apply_once(state_redis, sequence_key=sequence_key("p"), seq=1, ttl=TTL, **batch)[0] is False
    assert value("a") == 16
    # Another process's numbers are its own.
    assert apply_once(state_redis, sequence_key=sequence_key("q"), seq=1, ttl=TTL, **batch)[0] is True


def test_more_members_than_one_lua_unpack_holds_are_all_added(state_redis):
    members = [f"m{n}" for n in range(2 * batching.LUA_UNPACK + 500)]

    apply_once(
        state_redis,
        sequence_key=sequence_key("p"),
        seq=1,
        ttl=TTL,
        counters={counter_key("a"): 1},
        sets={members_key("a"): members},
    )

    assert state_redis.scard(members_key("a")) == len(members)


# --- The buffer ----------------------------------------------------------------------------


def test_adds_are_summed_per_key_and_sent_in_one_batch(make_buffer, state_redis):
    send = RedisSend()
    buffer = make_buffer(send)

    assert [buffer.add("a", "x"), buffer.add("a", "y"), buffer.add("a", "x"), buffer.add("b")] == [1, 2, 3, 1]
    assert value("a") == 0  # nothing leaves memory before a send
    assert buffer.waiting() == 4

    assert buffer.flush() is True

    [batch] = send.batches
    assert batch.counts == {"a": 3, "b": 1}
    assert batch.members == {"a": {"x", "y"}}
    assert (value("a"), value("b")) == (3, 1)
    assert buffer.waiting() == 0
    # The total the send returned, plus what was added since; another process's adds
    # show up with this process's next send.
    state_redis.incrby(counter_key("a"), 10)
    assert buffer.add("a") == 4
    buffer.flush()
    assert buffer.add("a") == 15


def test_a_batch_kept_while_redis_is_down_is_sent_once_it_is_back(make_buffer, redis_server, caplog):
    send = RedisSend()
    buffer = make_buffer(send)
    for _ in range(3):
        buffer.add("a")

    redis_server.stop()
    try:
        with caplog.at_level(logging.WARNING, logger="core.batching"):
            assert buffer.flush() is False
            assert buffer.flush() is False
        buffer.add("a")
        buffer.add("b")
        assert buffer.waiting() == 5
    finally:
        redis_server.start()

    assert buffer.flush() is True

    assert (value("a"), value("b")) == (4, 1)
    # The kept batch went again under its own number, the later adds after it.
    assert [(batch.seq, batch.counts) for batch in send.batches] == [
        (1, {"a": 3}),
        (1, {"a": 3}),
        (1, {"a": 3}),
        (2, {"a": 1, "b": 1}),
    ]
    assert metrics.value("batching.send_failed", buffer=buffer.name) == 2
    assert len([r for r in caplog.records if "Redis is unavailable" in r.message]) == 1  # logged once


def test_beyond_max_keys_a_new_keys_adds_are_dropped_and_counted(make_buffer, caplog):
    buffer = make_buffer(max_keys=2, max_members=3)
    buffer.add("a", "x")
    buffer.add("b", "y")

    assert buffer.add("c", "z") == 0  # dropped
    buffer.add("a", "w")
    buffer.add("a", "v")  # a fourth member: dropped, the add itself counted
    buffer.add("d")

    with caplog.at_level(logging.ERROR, logger="core.batching"):
        buffer.flush()
        buffer.add("e")
        buffer.add("f")
        buffer.add("g")
        buffer.flush()

    assert (value("a"), value("b"), value("c"), value("d")) == (3, 1, 0, 0)
    assert metrics.value("batching.dropped", buffer=buffer.name, reason="full") == 2 + 1
    assert metrics.value("batching.dropped_members", buffer=buffer.name) == 1
    assert len([r for r in caplog.records if "is full" in r.message]) == 1


def test_a_batch_redis_refuses_is_dropped_and_counted_and_the_next_goes_on(make_buffer, state_redis, caplog):
    state_redis.set(counter_key("a"), "not a number")
    buffer = make_buffer()
    buffer.add("a")
    buffer.add("a")

    with caplog.at_level(logging.ERROR, logger="core.batching"):
        assert buffer.flush() is True

    assert metrics.value("batching.dropped", buffer=buffer.name, reason="error") == 2
    assert "Dropping a batch of 2 adds" in caplog.text
    buffer.add("b")
    buffer.flush()
    assert value("b") == 1


def test_the_thread_sends_every_interval_without_being_asked(make_buffer):
    send = RedisSend()
    buffer = make_buffer(send, interval=0.01)

    buffer.add("a")

    assert send.sent.wait(10)
    assert value("a") == 1


def test_the_thread_sends_early_when_enough_keys_are_waiting(make_buffer):
    send = RedisSend()
    buffer = make_buffer(send, interval=3600, flush_keys=3)
    buffer.add("a")
    buffer.add("b")
    assert not send.sent.is_set()

    buffer.add("c")

    assert send.sent.wait(10)
    assert send.batches[0].counts == {"a": 1, "b": 1, "c": 1}


def test_flush_all_sends_every_buffer_and_logs_what_it_could_not(make_buffer, redis_server, caplog):
    first, second = make_buffer(), make_buffer()
    first.add("a")
    second.add("b")

    batching.flush_all()
    assert (value("a"), value("b")) == (1, 1)

    first.add("a")
    redis_server.stop()
    try:
        with caplog.at_level(logging.ERROR, logger="core.batching"):
            batching.flush_all()  # never raises: a stop must go on
    finally:
        redis_server.start()
    assert f"{first.name}: 1 adds could not be sent" in caplog.text


def test_a_forked_child_starts_empty_with_a_process_token_of_its_own(make_buffer):
    send = RedisSend()
    buffer = make_buffer(send)
    for _ in range(5):
        buffer.add("a")
    read, write = os.pipe()

    pid = os.fork()
    if pid == 0:  # the child: report, and leave without running the parent's test teardown
        try:
            answer = f"{buffer.waiting()} {buffer.add('a')} {buffer.flush()} {send.batches[-1].process}"
        except BaseException as exc:  # noqa: BLE001
            answer = f"error {exc!r}"
        os.write(write, answer.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        answer = pipe.read()
    os.waitpid(pid, 0)

    waiting, added, flushed, process = answer.split()
    assert (waiting, added, flushed) == ("0", "1", "True")  # the parent's five stay the parent's
    buffer.flush()
    assert process != send.batches[-1].process
    assert value("a") == 6
