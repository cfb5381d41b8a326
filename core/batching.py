"""Aggregate small writes in process memory and send them to Redis in batches.

`BatchBuffer.add(key, member)` costs a lock and a dict update; a daemon thread sends every
`interval` seconds through `apply_once`, a script that applies a batch at most once.
State role. While Redis does not answer, batches are kept and resent, and adds go on up
to `max_keys`/`max_members`; a crash loses about one interval (docs/design.md).
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import threading
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from django.db import close_old_connections

from core import metrics
from core.redis import RedisClient, is_unavailable
from core.scripts import script_queue

logger = logging.getLogger(__name__)

T = TypeVar("T")

MAX_RETRY_WAIT = 2.0  # seconds between sends at most while Redis is unavailable
CHUNK_WEIGHT = 5_000  # keys plus members per script call: a big backlog is sent in pieces
LUA_UNPACK = 1_000  # members per PFADD/SADD inside the script (Lua's unpack has a stack limit)


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """`items` in slices of at most `size`, in order: for commands and queries with a bound
    on their arguments (SADD members, IN lists)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass
class Batch:
    """What one process added since its last send: a count and new members per key."""

    process: str  # this process's token: names its sequence (apply_once)
    seq: int  # increasing per process; a batch keeps its number when it is sent again
    counts: dict[Hashable, int] = field(default_factory=dict)
    members: dict[Hashable, set[str]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class BatchBuffer:
    """Counts and members per key in this process's memory, sent by a daemon thread.

    `send(batch)` writes a batch (with apply_once) and returns each key's total after
    it; add() answers that total plus what this process added since. `interval` <= 0
    starts no thread: batches go only when flush() is called.
    """

    def __init__(
        self,
        name: str,
        send: Callable[[Batch], Mapping[Hashable, int]],
        *,
        interval: float,
        max_keys: int,
        max_members: int,
        flush_keys: int,
        flush_members: int,
    ) -> None:
        self.name = name
        self.send = send
        self.interval = interval
        self.max_keys = max_keys
        self.max_members = max_members
        self.flush_keys = flush_keys
        self.flush_members = flush_members
        self._new_process()
        os.register_at_fork(after_in_child=self._new_process)
        _buffers.append(self)

    def _new_process(self) -> None:
        # In a forked child: the parent's adds and batches are the parent's to send, and a
        # lock held by another of its threads at the fork would stay held for ever.
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._process = secrets.token_hex(8)
        self._seq = 0
        self._counts: dict[Hashable, int] = {}
        self._members: dict[Hashable, set[str]] = {}
        self._n_members = 0
        self._sending: list[Batch] = []  # taken from the buffer, not yet acknowledged
        self._in_flight: dict[Hashable, int] = {}  # their counts per key
        self._totals: dict[Hashable, int] = {}  # each key's total as the last send returned it
        self._dropped = 0
        self._dropped_members = 0
        self._failing = False  # a send found Redis unavailable; logged once until one succeeds
        self._drop_logged = False  # the buffer overflowed; logged once until a send succeeds

    def add(self, key: Hashable, member: str | None = None) -> int:
        """Count one for `key` (and `member` in its set); returns the key's total as known here.

        That total is the one the last send returned plus what this process added since:
        other processes' adds reach it only through this process's next send.
        """
        with self._lock:
            counts = self._counts
            n = counts.get(key)
            if n is None:
                if len(counts) >= self.max_keys:
                    self._dropped += 1
                    return self._totals.get(key, 0) + self._in_flight.get(key, 0)
                n = 0
            n += 1
            counts[key] = n
            if member is not None:
                members = self._members.get(key)
                if members is None:
                    members = self._members[key] = set()
                if member not in members:
                    if self._n_members < self.max_members:
                        members.add(member)
                        self._n_members += 1
                    else:
                        self._dropped_members += 1
            known = n + self._totals.get(key, 0) + self._in_flight.get(key, 0)
            full = len(counts) >= self.flush_keys or self._n_members >= self.flush_members
        if self._thread is None and self.interval > 0:
            self._start()
        if full:
            self._wake.set()
        return known

    def waiting(self) -> int:
        """Adds not yet acknowledged by Redis (buffered or being sent)."""
        with self._lock:
            return sum(self._counts.values()) + sum(self._in_flight.values())

    def flush(self) -> bool:
        """Send everything added so far, in the calling thread; False if it was kept for later.

        Batches are sent in order, each acknowledged before the next, which is what lets
        apply_once recognise a copy of an earlier one.
        """
        with self._flush_lock:
            with self._lock:
                if self._counts:
                    # After any batches kept from a failed send: numbered after them.
                    batches = self._split()
                    self._sending += batches
                    self._counts, self._members, self._n_members = {}, {}, 0
                    for batch in batches:
                        for key, n in batch.counts.items():
                            self._in_flight[key] = self._in_flight.get(key, 0) + n
                dropped, dropped_members = self._dropped, self._dropped_members
                self._dropped = self._dropped_members = 0
            self._report_drops(dropped, dropped_members)
            while self._sending:
                batch = self._sending[0]
                try:
                    totals = self.send(batch)
                except Exception as exc:
                    if is_unavailable(exc):
                        self._kept(exc)
                        return False
                    # A refused script or a bug: sending it again would fail again.
                    logger.exception("Dropping a batch of %s adds to %s", batch.total, self.name)
                    metrics.incr("batching.dropped", batch.total, buffer=self.name, reason="error")
                    totals = {}
                self._acknowledge(batch, totals)
            if self._failing:
                logger.warning("%s: Redis answers again; everything kept was sent", self.name)
            self._failing = False
            self._drop_logged = bool(dropped or dropped_members)
            return True

    def _split(self) -> list[Batch]:
        batches: list[Batch] = []
        batch, weight = None, 0
        for key, n in self._counts.items():
            members = self._members.get(key)
            if batch is None or weight >= CHUNK_WEIGHT:
                self._seq += 1
                batch, weight = Batch(self._process, self._seq), 0
                batches.append(batch)
            batch.counts[key] = n
            weight += 1
            if members:
                batch.members[key] = members
                weight += len(members)
        return batches

    def _acknowledge(self, batch: Batch, totals: Mapping[Hashable, int]) -> None:
        with self._lock:
            self._sending.pop(0)
            for key, n in batch.counts.items():
                left = self._in_flight[key] - n
                if left:
                    self._in_flight[key] = left
                else:
                    del self._in_flight[key]
            if len(self._totals) > self.max_keys:
                self._totals.clear()  # only a display aid: bounded like the buffer
            self._totals.update(totals)

    def _kept(self, exc: BaseException) -> None:
        waiting = self.waiting()
        metrics.incr("batching.send_failed", buffer=self.name)
        if not self._failing:
            self._failing = True
            logger.warning("%s: Redis is unavailable (%s); keeping %s adds to send later", self.name, exc, waiting)

    def _report_drops(self, dropped: int, dropped_members: int) -> None:
        if not (dropped or dropped_members):
            return
        if dropped:
            metrics.incr("batching.dropped", dropped, buffer=self.name, reason="full")
        if dropped_members:
            metrics.incr("batching.dropped_members", dropped_members, buffer=self.name)
        if not self._drop_logged:
            self._drop_logged = True
            logger.error(
                "%s is full (%s keys, %s members at most): new keys' adds and new members are dropped "
                "until Redis takes the backlog (%s adds, %s members so far)",
                self.name,
                self.max_keys,
                self.max_members,
                dropped,
                dropped_members,
            )

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name=f"kestrel-batch-{self.name}", daemon=True)
                thread.start()
                self._thread = thread

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            if failures:
                # Adds that fill the buffer meanwhile must not make this a busy loop.
                self._stop.wait(min(self.interval * 2**failures, MAX_RETRY_WAIT))
            else:
                self._wake.wait(self.interval)
            self._wake.clear()
            try:
                sent = self.flush()
            except Exception:  # noqa: BLE001 - the thread must survive anything and keep sending
                logger.exception("%s: the send loop failed", self.name)
                sent = False
            finally:
                # A send may use the database (Django connections are per thread): close
                # this thread's as a request's end would (CONN_MAX_AGE, health checks).
                close_old_connections()
            failures = 0 if sent else min(failures + 1, 8)

    def close(self) -> None:
        """Stop the thread (after its last send) and forget this buffer."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)
        if self in _buffers:
            _buffers.remove(self)

    def clear(self) -> None:
        """For tests: forget everything added, sent or known."""
        with self._flush_lock, self._lock:
            self._counts, self._members, self._n_members = {}, {}, 0
            self._sending, self._in_flight, self._totals = [], {}, {}
            self._dropped = self._dropped_members = 0
            self._failing = self._drop_logged = False


_buffers: list[BatchBuffer] = []


def flush_all() -> None:
    """Send what every buffer holds, now, in this thread (a stop: atexit, worker exit, job end).

    Never raises: what cannot be sent is logged as lost with its count.
    """
    for buffer in _buffers:
        try:
            buffer.flush()
        except Exception:  # noqa: BLE001 - a stop must go on
            logger.exception("%s: the final send failed", buffer.name)
        waiting = buffer.waiting()
        if waiting:
            logger.error("%s: %s adds could not be sent before this process stops; they are lost", buffer.name, waiting)


def clear_all() -> None:
    """For tests: empty every buffer of this process."""
    for buffer in _buffers:
        buffer.clear()


atexit.register(flush_all)


# --- The Redis side ---------------------------------------------------------------------

# One process's batches, in order: the sequence key holds the highest number applied, so
# a copy of a batch that already ran (its reply lost to a timeout, re-sent) is skipped.
# The keys of one call share a hash slot (on Redis Cluster a script's keys must): callers
# split a batch by slot, with one sequence key per slot (posts.keys' view shards).
_APPLY_LUA = f"""
-- KEYS: sequence, then counter_1 .. counter_c, then hll_1 .. hll_h, then set_1 .. set_s
-- ARGV: [1] seq, [2] the sequence key's TTL (s), [3] c, [4] h, [5] s,
--       then amount_1 .. amount_c, then per HyperLogLog and set: its member count m, then its m members
-- Returns: {{1 (applied) | 0 (a copy already ran; nothing written), total_1 .. total_c}}
local c, h, s = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local out = {{1}}
if tonumber(redis.call('GET', KEYS[1]) or '0') >= tonumber(ARGV[1]) then
  out[1] = 0
  for i = 1, c do
    out[i + 1] = tonumber(redis.call('GET', KEYS[1 + i]) or '0')
  end
  return out
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
for i = 1, c do
  out[i + 1] = redis.call('INCRBY', KEYS[1 + i], ARGV[5 + i])
end
local arg = 6 + c
for k = 1, h + s do
  local key, m = KEYS[1 + c + k], tonumber(ARGV[arg])
  local command = k <= h and 'PFADD' or 'SADD'
  for first = arg + 1, arg + m, {LUA_UNPACK} do
    redis.call(command, key, unpack(ARGV, first, math.min(first + {LUA_UNPACK} - 1, arg + m)))
  end
  arg = arg + 1 + m
end
return out
"""


@dataclass(frozen=True)
class Apply:
    """One apply_once call: `counters` INCRBY their amounts, `hyperloglogs` and `sets` get
    their members, unless batch `seq` of `sequence_key` (a STRING, `ttl` seconds) ran."""

    sequence_key: str
    seq: int
    ttl: int
    counters: Mapping[str, int]
    hyperloglogs: Mapping[str, Iterable[str]] = field(default_factory=dict)
    sets: Mapping[str, Iterable[str]] = field(default_factory=dict)

    def call(self) -> tuple[list[str], list[int | str]]:
        """The script's (keys, args)."""
        keys: list[str] = [self.sequence_key, *self.counters]
        args: list[int | str] = [
            self.seq,
            self.ttl,
            len(self.counters),
            len(self.hyperloglogs),
            len(self.sets),
            *self.counters.values(),
        ]
        for group in (self.hyperloglogs, self.sets):
            for key, members in group.items():
                members = list(members)
                keys.append(key)
                args += [len(members), *members]
        return keys, args

    def result(self, reply: Sequence[int]) -> tuple[bool, dict[str, int]]:
        return bool(reply[0]), {key: int(total) for key, total in zip(self.counters, reply[1:], strict=True)}


def apply_once(
    client: RedisClient,
    *,
    sequence_key: str,
    seq: int,
    ttl: int,
    counters: Mapping[str, int],
    hyperloglogs: Mapping[str, Iterable[str]] | None = None,
    sets: Mapping[str, Iterable[str]] | None = None,
) -> tuple[bool, dict[str, int]]:
    """INCRBY each counter, PFADD/SADD the members, in one script call unless batch `seq` already ran.

    Returns (applied, each counter's value after it). A skipped copy writes nothing and
    reports the counters as they are. `sequence_key` (a STRING, `ttl` seconds) belongs
    to one process; its batches must be sent in order, each after the last was answered.
    """
    apply = Apply(sequence_key, seq, ttl, counters, hyperloglogs or {}, sets or {})
    return apply_once_many(client, [apply])[0]


def apply_once_many(client: RedisClient, applies: Sequence[Apply]) -> list[tuple[bool, dict[str, int]]]:
    """apply_once for each of `applies` (one per hash slot of a batch), in one round trip:
    one EVALSHA, or several in a pipeline. Each call stands alone: a batch sent again
    after a lost reply is skipped where it ran and applied where it did not."""
    if not applies:
        return []
    script = client.register_script(_APPLY_LUA)
    if len(applies) == 1:
        keys, args = applies[0].call()
        return [applies[0].result(script(keys=keys, args=args, client=client))]
    pipe = client.pipeline(transaction=False)
    script_queue(pipe, script, (apply.call() for apply in applies))
    replies = pipe.execute()[1:]  # after the SCRIPT LOAD's
    return [apply.result(reply) for apply, reply in zip(applies, replies, strict=True)]
