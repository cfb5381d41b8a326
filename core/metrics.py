"""Kestrel's figures, all prometheus-client metrics in its default registry.

`incr(name, amount, **labels)` counts into kestrel_<name, dots as underscores>_total. Counts,
like the Redis and HTTP figures (registered buffers), are summed in memory and handed to
prometheus-client at most every FLUSH_INTERVAL, before a read or scrape (flush()) and at
exit; under gunicorn prometheus-client keeps them in per-process files. incr never raises:
a name that cannot be exported is logged once and dropped. value/snapshot read this process.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, disable_created_metrics, multiprocess

logger = logging.getLogger(__name__)

FLUSH_INTERVAL = 1.0  # seconds: the most a process's figures lag behind in /metrics
# Families other modules own (core.instrumentation, ops.monitoring, core.http_metrics).
RESERVED_PREFIXES = ("kestrel_redis_", "kestrel_rq_", "kestrel_http_")
_NAME = re.compile(r"[a-z][a-z0-9_.]*\Z")

# No <name>_created series beside every counter and histogram: they double what each
# scrape stores, and Prometheus reads resets from the counters themselves.
disable_created_metrics()


class Buffer(Protocol):
    """Figures summed in memory in front of prometheus-client metrics."""

    def flush(self) -> None:
        """Hand what was gathered since the last flush to prometheus-client."""

    def forget(self) -> None:
        """Drop it all (a forked child must not report its parent's figures)."""


_buffers: list[Buffer] = []
_next_flush = time.perf_counter() + FLUSH_INTERVAL
# One flush at a time: a read after flush() returns sees every figure gathered before it.
_flush_lock = threading.Lock()


def register(buffer: Buffer) -> None:
    """Flush `buffer` with the others: when due, before reads and scrapes, at exit."""
    _buffers.append(buffer)


def _flush_locked() -> None:
    global _next_flush
    _next_flush = time.perf_counter() + FLUSH_INTERVAL
    for buffer in list(_buffers):
        buffer.flush()


def flush() -> None:
    """Hand every buffer's figures to prometheus-client now."""
    with _flush_lock:
        _flush_locked()


def flush_if_due(now: float) -> None:
    """flush() if FLUSH_INTERVAL has passed since the last one (`now`: time.perf_counter()).

    A request thread never waits for another's flush: that one is publishing anyway.
    """
    if now >= _next_flush and _flush_lock.acquire(blocking=False):
        try:
            _flush_locked()
        finally:
            _flush_lock.release()


def _forget_all() -> None:
    global _flush_lock
    _flush_lock = threading.Lock()  # a fork while another thread flushed must not leave it held
    for buffer in _buffers:
        buffer.forget()


def multiprocess_mode() -> bool:
    """Under gunicorn: each process writes its figures to files in PROMETHEUS_MULTIPROC_DIR."""
    return "PROMETHEUS_MULTIPROC_DIR" in os.environ


def registry() -> CollectorRegistry:
    """Every process's figures as /metrics serves them, this process's flushed first.

    Under gunicorn summed from the per-process files, otherwise this process's
    default registry (which also holds prometheus-client's process figures).
    """
    flush()
    if not multiprocess_mode():
        return REGISTRY
    summed = CollectorRegistry(auto_describe=False)
    multiprocess.MultiProcessCollector(summed)
    return summed


def sample_value(name: str, labels: dict[str, str] | None = None) -> float | None:
    """One sample of registry() ("kestrel_cache_hit_total", {"family": ..., "tier": ...}), or None."""
    return registry().get_sample_value(name, labels or {})


@dataclass(slots=True)
class Observations:
    """A histogram child's observations not yet flushed: their sum, and their count per
    bucket (one per upper bound, not cumulative, the last one +Inf), for observe_many."""

    total: float
    buckets: list[int]


def observe_many(child: Histogram, total: float, buckets: Sequence[int]) -> None:
    """Add many observations to a histogram child at once: their sum, count per bucket.

    `buckets` holds one count per upper bound, not cumulative, the last one +Inf.
    prometheus-client has no batch observe; its histogram children keep one value per
    bucket (`_buckets`) and `_sum`, in memory or in multiprocess files alike. The one
    use of its internals: tests/core/test_instrumentation and test_http_metrics check
    the exposed _count, _sum and buckets, so a change there fails a test.
    """
    child._sum.inc(total)
    for index, count in enumerate(buckets):
        if count:
            child._buckets[index].inc(count)


# --- Counters (incr) ----------------------------------------------------------------

# (name, labels as passed) -> count not yet handed to prometheus-client.
_pending: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
_lock = threading.Lock()
_create_lock = threading.Lock()
# Exported name -> its Counter, its label names, the core.metrics name it came from.
_counters: dict[str, Counter] = {}
_labelnames: dict[str, tuple[str, ...]] = {}
_names: dict[str, str] = {}
# (name, labels as passed) -> the Counter's child, None when not exported.
_children: dict[tuple[str, tuple[tuple[str, str], ...]], Counter | None] = {}
_refused: set[tuple[str, tuple[str, ...]]] = set()


def exported_name(name: str) -> str | None:
    """The Prometheus name of a counter ("cache.hit" -> "kestrel_cache_hit"); None if it has none."""
    if not _NAME.match(name):
        return None
    exported = "kestrel_" + name.replace(".", "_")
    return None if exported.startswith(RESERVED_PREFIXES) else exported


def incr(name: str, amount: int = 1, **labels: str) -> None:
    """Count `amount` more of `name` with these labels (kestrel_<name>_total{labels}).

    The hot path of every cache hit: one lock and one dict update; the sums reach
    prometheus-client at the next flush.
    """
    series = (name, tuple(labels.items()))
    with _lock:
        _pending[series] = _pending.get(series, 0) + amount
    now = time.perf_counter()
    if now >= _next_flush:
        flush_if_due(now)


def _child(name: str, labels: tuple[tuple[str, str], ...]) -> Counter | None:
    """The Counter child a series counts into; created (and registered) on first use."""
    exported = exported_name(name)
    given = dict(labels)
    with _create_lock:
        if exported is not None and exported not in _counters:
            try:
                _counters[exported] = Counter(exported, f"core.metrics counter {name}", sorted(given))
            except ValueError:  # the name is already another metric's
                exported = None
            else:
                _labelnames[exported], _names[exported] = tuple(sorted(given)), name
    if exported is None or not given.keys() <= set(_labelnames[exported]):
        refusal = (name, tuple(sorted(given)))
        if refusal not in _refused:
            _refused.add(refusal)
            logger.error("metrics: %s%s cannot be exported: its counts are dropped", name, list(refusal[1]))
        return None
    names = _labelnames[exported]
    counter = _counters[exported]
    return counter.labels(*(given.get(label, "") for label in names)) if names else counter


class _Counts:
    """incr's buffer, flushed with the others."""

    def flush(self) -> None:
        global _pending
        with _lock:
            if not _pending:
                return
            pending, _pending = _pending, {}
        for series, amount in pending.items():
            if series in _children:
                child = _children[series]
            else:
                child = _children[series] = _child(*series)
            if child is not None:
                child.inc(amount)

    def forget(self) -> None:
        global _lock, _pending
        _lock, _pending = threading.Lock(), {}


_counts = _Counts()
register(_counts)


def _series(name: str) -> tuple[str, Counter, tuple[str, ...]] | None:
    exported = exported_name(name)
    if exported is None or exported not in _counters:
        return None
    return exported, _counters[exported], _labelnames[exported]


def value(name: str, **labels: str) -> int:
    """This process's count of one series; with no labels, the sum over every series of `name`."""
    flush()
    found = _series(name)
    if found is None:
        return 0
    exported, counter, names = found
    if not labels.keys() <= set(names):
        return 0
    wanted = {label: labels.get(label, "") for label in names} if labels else None
    total = 0.0
    for metric in counter.collect():
        for sample in metric.samples:
            if sample.name == f"{exported}_total" and (wanted is None or sample.labels == wanted):
                total += sample.value
    return int(total)


def snapshot() -> dict[str, list[tuple[dict[str, str], int]]]:
    """This process's counted series: name -> [(labels, count), ...]."""
    flush()
    out: dict[str, list[tuple[dict[str, str], int]]] = {}
    for exported, counter in list(_counters.items()):
        for metric in counter.collect():
            for sample in metric.samples:
                if sample.name == f"{exported}_total" and sample.value:
                    out.setdefault(_names[exported], []).append((dict(sample.labels), int(sample.value)))
    return out


def reset() -> None:
    """Every counter back to nothing (tests; in one process: multiprocess files keep theirs)."""
    global _pending
    with _flush_lock, _create_lock:
        with _lock:
            _pending = {}
        _children.clear()
        for exported, counter in _counters.items():
            if _labelnames[exported]:
                counter.clear()
            else:
                counter.reset()


os.register_at_fork(after_in_child=_forget_all)
atexit.register(flush)
