"""The lock benchmark: core.locks.redis_lock alone, around a fenced write, and under contention.

    DJANGO_SETTINGS_MODULE=config.settings python -m bench.locks --seconds 2 --threads 8

`python -m bench` runs it as a child process on its private Redis and SQLite; run by
hand, it takes locks named bench:* (and one user:<id>:profile lock of a user it
creates) in whatever Redis the environment names.

1. Uncontended: one thread takes and releases one lock in a loop (acquire script,
   release script: two round trips a cycle), for `--seconds`.
2. The same around what PATCH /api/users/{id} does under its lock: a fenced UPDATE of
   the user row (core.locks.fenced_update) in SQLite.
3. Contended: `--threads` threads in this process take one lock in a loop, each
   waiting up to `--timeout` (jittered exponential backoff, core.locks.acquire), and
   hold it for 0 ms, then for `--hold-ms` (a short write). Acquisitions per second,
   timeouts, how long each waited, and how evenly the threads were served.

Threads of one process stand for requests of many: they share one GIL, so their
Python work queues behind each other as it would not across processes; the waits
are dominated by the backoff sleeps, which do not hold the GIL.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time

SECONDS = 2.0
THREADS = 8
TIMEOUT = 0.1  # s each contending thread waits before LockNotAcquired (a request's 409)
HOLD_MS = 1.0  # the second contended variant: about a small UPDATE
TTL_MS = 5_000  # longer than anything held here: no lock expires while held
WARMUP_CYCLES = 200


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.locks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=SECONDS, help=f"per variant (default {SECONDS:g})")
    parser.add_argument("--threads", type=int, default=THREADS, help=f"contending threads (default {THREADS})")
    parser.add_argument("--timeout", type=float, default=TIMEOUT, help=f"each acquire's wait, s (default {TIMEOUT:g})")
    parser.add_argument("--hold-ms", type=float, default=HOLD_MS, help="held time of the second contended variant")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.threads < 2 or args.timeout < 0 or args.hold_ms < 0:
        parser.error("--seconds must be positive, --threads at least 2, --timeout and --hold-ms not negative")

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    result = run(seconds=args.seconds, threads=args.threads, timeout=args.timeout, hold_ms=args.hold_ms)
    print(json.dumps(result))
    return 0


def run(*, seconds: float, threads: int, timeout: float, hold_ms: float) -> dict:
    from django.contrib.auth.hashers import make_password

    from accounts.models import User
    from core.locks import fenced_update

    tag = f"lockbench-{time.monotonic_ns()}"
    user = User.objects.create(username=tag, email=f"{tag}@example.com", password=make_password(None))
    rows = User.objects.filter(pk=user.pk)

    def fenced_write(lock) -> None:
        if not fenced_update(rows, "profile_fence", lock.fence, bio="Edited under the lock."):
            raise SystemExit("a fenced update was refused with no other holder")

    return {
        "seconds": seconds,
        "ttl_ms": TTL_MS,
        "uncontended": [
            _solo("acquire + release", "bench:solo", seconds),
            _solo("acquire + fenced UPDATE + release", f"user:{user.pk}:profile", seconds, work=fenced_write),
        ],
        "contended": [
            _contended(threads=threads, timeout=timeout, hold_ms=0.0, seconds=seconds),
            _contended(threads=threads, timeout=timeout, hold_ms=hold_ms, seconds=seconds),
        ],
    }


def _solo(name: str, lock_name: str, seconds: float, work=None) -> dict:
    from bench.probe import RedisProbe
    from core.locks import redis_lock
    from core.redis import get_redis

    def cycle() -> None:
        with redis_lock(lock_name, ttl_ms=TTL_MS) as lock:
            if work is not None:
                work(lock)

    for _ in range(WARMUP_CYCLES):
        cycle()
    times = []
    with RedisProbe(get_redis("state")) as probe:
        deadline = time.perf_counter() + seconds
        while (began := time.perf_counter()) < deadline:
            cycle()
            times.append(time.perf_counter() - began)
    times.sort()
    cycles = len(times)
    return {
        "name": name,
        "cycles": cycles,
        "cycles_per_s": cycles / sum(times),
        "us": statistics.mean(times) * 1e6,
        "p50_us": _percentile(times, 0.50) * 1e6,
        "p99_us": _percentile(times, 0.99) * 1e6,
        "redis": probe.traffic.per(cycles),
    }


def _contended(*, threads: int, timeout: float, hold_ms: float, seconds: float) -> dict:
    from bench.probe import RedisProbe
    from core import metrics
    from core.locks import LockNotAcquired, metric_label, redis_lock
    from core.redis import get_redis

    name = f"bench:contended:{round(hold_ms * 1000)}us"
    label = metric_label(name)
    hold = hold_ms / 1000
    waits: list[list[float]] = [[] for _ in range(threads)]  # seconds from asking to holding, per acquisition
    timeouts = [0] * threads
    failures: list[BaseException] = []
    start = threading.Barrier(threads + 1)
    deadline = 0.0  # set before the barrier lets the threads go

    def contender(index: int) -> None:
        try:
            start.wait()
            while (asked := time.perf_counter()) < deadline:
                try:
                    with redis_lock(name, ttl_ms=TTL_MS, timeout=timeout):
                        waits[index].append(time.perf_counter() - asked)
                        if hold:
                            time.sleep(hold)
                except LockNotAcquired:
                    timeouts[index] += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failures.append(exc)
            start.abort()

    contended_before = metrics.value("lock.contended", lock=label)
    pool = [threading.Thread(target=contender, args=(i,), daemon=True) for i in range(threads)]
    for thread in pool:
        thread.start()
    with RedisProbe(get_redis("state")) as probe:
        began = time.perf_counter()
        deadline = began + seconds
        start.wait(timeout=30)
        for thread in pool:
            thread.join(timeout=seconds + timeout + 30)
        elapsed = time.perf_counter() - began
    if failures:
        raise SystemExit(f"{len(failures)} contending thread(s) failed; first: {failures[0]!r}")

    every = sorted(wait for own in waits for wait in own)
    acquired = len(every)
    per_thread = [len(own) for own in waits]
    attempts = probe.traffic.by_command.get("evalsha", 0) - acquired  # each acquisition's release is one too
    return {
        "threads": threads,
        "timeout_s": timeout,
        "hold_ms": hold_ms,
        "seconds": elapsed,
        "acquired": acquired,
        "acquired_per_s": acquired / elapsed,
        "timeouts": sum(timeouts),
        # Acquisitions that found the lock held at their first attempt, then waited.
        "contended": metrics.value("lock.contended", lock=label) - contended_before,
        "attempts_per_acquire": attempts / acquired if acquired else None,
        "wait_p50_ms": _percentile(every, 0.50) * 1000,
        "wait_p99_ms": _percentile(every, 0.99) * 1000,
        "wait_max_ms": every[-1] * 1000 if every else float("nan"),
        "per_thread_min": min(per_thread),
        "per_thread_max": max(per_thread),
        "redis": probe.traffic.per(acquired) if acquired else None,
    }


def _percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest rank, as bench.harness.percentile (not imported: the harness imports the project's Redis server)."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


if __name__ == "__main__":
    sys.exit(main())
