"""In-process counters: cache hits and misses per key family, Redis failures.

Per process, like Prometheus client counters: each gunicorn worker counts its own,
and an exporter sums them. Incrementing is a dict update under a lock, never a
Redis round trip on the request path.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

# A receiver of every increment: sink(name, amount, labels).
Sink = Callable[[str, int, dict[str, str]], None]

_lock = threading.Lock()
_sinks: list[Sink] = []


def add_sink(sink: Sink) -> None:
    """Also hand every increment to `sink(name, amount, labels)` (the Prometheus exporter)."""
    _sinks.append(sink)


_counts: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()


def incr(name: str, amount: int = 1, **labels: str) -> None:
    key = (name, tuple(sorted(labels.items())))
    with _lock:
        _counts[key] += amount
    for sink in _sinks:
        sink(name, amount, labels)


def value(name: str, **labels: str) -> int:
    """The count of one series; with no labels, the sum over every series of `name`."""
    with _lock:
        if labels:
            return _counts[(name, tuple(sorted(labels.items())))]
        return sum(count for (series, _), count in _counts.items() if series == name)


def snapshot() -> dict[str, list[tuple[dict[str, str], int]]]:
    """Every series: name -> [(labels, count), ...]."""
    out: dict[str, list[tuple[dict[str, str], int]]] = {}
    with _lock:
        for (name, labels), count in _counts.items():
            out.setdefault(name, []).append((dict(labels), count))
    return out


def reset() -> None:
    """For tests."""
    with _lock:
        _counts.clear()
