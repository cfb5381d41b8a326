"""The in-process L1 cache and the subscriber that keeps it coherent across processes.

Writes publish invalidated keys on one channel; a daemon thread in every process drops
them. The L1 is read and filled only while that subscriber listens, and cleared when it
(re)subscribes: messages published meanwhile are lost (docs/design.md, "Cache-aside").
"""

from __future__ import annotations

import enum
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final

from redis.client import PubSub

from core import keys, metrics
from core.redis import get_redis, is_unavailable

logger = logging.getLogger(__name__)


class Miss(enum.Enum):
    """The type of MISS: an enum, so that `value is not MISS` narrows `T | Miss` to T."""

    MISS = "MISS"


# What LocalCache.get answers for a key it does not hold (or holds expired).
MISS: Final = Miss.MISS


def invalidation_channel() -> str:
    """Pub/sub channel, cache role: JSON messages {"type": "<family>", "id": <id>}."""
    return keys.key("cache", "invalidate")


class LocalCache:
    """A bounded, thread-safe LRU whose entries expire after their own TTL.

    `generation` counts the deletes and clears (never evictions or expiries): a reader
    that notes it before loading a value and stores with `unless_changed_since` stores
    nothing if an invalidation came in meanwhile, so a copy loaded before a write
    committed cannot outlive the invalidation that write sent.
    """

    def __init__(self, max_entries: int = 2048) -> None:
        self.max_entries = max_entries
        self._data: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.generation = 0

    def get(self, key: str, now: float) -> Any | Miss:
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                return MISS
            expires_at, value = entry
            if expires_at <= now:
                del self._data[key]
                return MISS
            self._data.move_to_end(key)
            return value

    def set(self, key: str, value: Any, ttl: float, now: float, *, unless_changed_since: int | None = None) -> bool:
        """Store `value`; with `unless_changed_since` (a past `generation`), only if no
        delete or clear happened since. Returns whether it was stored."""
        with self._lock:
            if unless_changed_since is not None and unless_changed_since != self.generation:
                return False
            self._data[key] = (now + ttl, value)
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)
            return True

    def delete(self, key: str) -> None:
        with self._lock:
            self._data.pop(key, None)
            self.generation += 1

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.generation += 1

    def __len__(self) -> int:
        return len(self._data)


class InvalidationSubscriber:
    """A daemon thread: SUBSCRIBE to the channel, hand each message to `on_message`,
    and call `clear` whenever messages may have been missed.

    `listening` is true only between a confirmed subscription and the first error;
    readers must not use the L1 otherwise.
    """

    def __init__(self, clear: Callable[[], None], on_message: Callable[[dict[str, Any]], None]) -> None:
        self.clear = clear
        self.on_message = on_message
        self.listening = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.pid = os.getpid()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="kestrel-l1-invalidation", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            pubsub: PubSub | None = None
            try:
                pubsub = get_redis("cache").pubsub(ignore_subscribe_messages=False)
                pubsub.subscribe(invalidation_channel())
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        # Anything published before this moment may have been missed.
                        self.clear()
                        self.listening.set()
                        backoff = 0.1
                    elif message["type"] == "message":
                        self._handle(message["data"])
            except Exception as exc:  # noqa: BLE001 - the thread must survive anything and resubscribe
                self.listening.clear()
                self.clear()
                metrics.incr("cache.l1.resubscribe")
                level = logging.WARNING if is_unavailable(exc) else logging.ERROR
                logger.log(level, "L1 invalidation subscriber lost its connection (%s); L1 cleared", exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                self.listening.clear()
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:  # noqa: BLE001, S110 - closing a broken connection may fail too  # nosec B110
                        pass

    def _handle(self, data: bytes) -> None:
        try:
            payload = json.loads(data)
            if not isinstance(payload, dict):
                raise ValueError("not an object")
            self.on_message(payload)
        except (ValueError, KeyError, TypeError) as exc:
            metrics.incr("cache.l1.bad_message")
            logger.warning("Ignoring malformed invalidation message %r: %s", data[:200], exc)
        else:
            metrics.incr("cache.l1.message")


class L1:
    """The process-wide L1 and its subscriber, started on first use in each process
    (so a gunicorn worker forked from a master gets its own thread).

    `cache` is shared by every kind of entry; a kind that must neither crowd the others
    out nor be crowded out gets a `partition` of its own, kept coherent the same way.
    """

    def __init__(self, on_message: Callable[[dict[str, Any]], None], max_entries: int = 2048) -> None:
        self.cache = LocalCache(max_entries)
        self._partitions: dict[str, LocalCache] = {}
        self._on_message = on_message
        self._subscriber: InvalidationSubscriber | None = None
        self._lock = threading.Lock()

    def partition(self, name: str, max_entries: int) -> LocalCache:
        """The LRU of its own named `name` (made on first call), cleared with the shared one."""
        cache = self._partitions.get(name)
        if cache is not None:
            return cache
        with self._lock:
            return self._partitions.setdefault(name, LocalCache(max_entries))

    def clear(self) -> None:
        """Empty the shared cache and every partition."""
        for cache in [self.cache, *self._partitions.values()]:
            cache.clear()

    def usable(self) -> bool:
        """Start the subscriber if needed; true when it is listening."""
        return self._started().listening.is_set()

    def _started(self) -> InvalidationSubscriber:
        """This process's subscriber, started (and the L1 cleared) if there is none yet."""
        subscriber = self._subscriber
        if subscriber is None or subscriber.pid != os.getpid():
            with self._lock:
                subscriber = self._subscriber
                if subscriber is None or subscriber.pid != os.getpid():
                    self.clear()
                    subscriber = InvalidationSubscriber(self.clear, self._on_message)
                    subscriber.start()
                    self._subscriber = subscriber
        return subscriber

    def wait_until_listening(self, timeout: float = 5.0) -> bool:
        """For tests and benchmarks: block until the subscription is confirmed."""
        subscriber = self._started()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if subscriber.listening.wait(0.05):
                return True
            subscriber = self._started()
        return False

    def stop(self) -> None:
        """For tests: stop the subscriber thread and forget it."""
        with self._lock:
            if self._subscriber is not None:
                self._subscriber.stop()
                self._subscriber = None
        self.clear()
