"""The cache stampede benchmark: many readers of one post whose cache entry just expired.

    DJANGO_SETTINGS_MODULE=config.settings python -m bench.stampede --post-id 1

`python -m bench` runs it as a child process against its private Redis and SQLite
(the stack's environment, L1 off), after the HTTP measurements; run by hand, it reads
whatever REDIS_URL and database the environment names, and deletes that post's cache
entry there.

Each round deletes the post's cache key (value and lease, as an expiry or an
invalidation would leave it), lines `--readers` threads up behind a barrier and
starts them all at one instant on cache-aside. It counts the readers that found the
entry missing, how often the real loader (posts.selectors._load_post) ran and the SQL
queries the readers sent, with the POST family's single flight (the lease) and with a
copy of the family that has it off.

The L1 is off (CACHE_L1_ENABLED=0 from the harness): these threads stand for readers
in many processes, and each process's L1 would be as cold as this one's. The L1 only
fills after a value is stored in Redis, so it would not change the counts anyway.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import threading
import time

from bench.scenarios import STAMPEDE_READERS as READERS
from bench.scenarios import STAMPEDE_ROUNDS as ROUNDS

# Seconds from the last thread reaching the barrier to the start: long enough for
# the barrier to have let every thread go (each then sleeps until the start).
START_DELAY = 0.1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stampede", description=__doc__.split("\n\n")[0])
    parser.add_argument("--post-id", type=int, required=True, help="an existing post; its cache entry is deleted")
    parser.add_argument("--readers", type=int, default=READERS, help=f"concurrent readers (default {READERS})")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"timed rounds per variant (default {ROUNDS})")
    args = parser.parse_args(argv)

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    print(json.dumps(run(post_id=args.post_id, readers=args.readers, rounds=args.rounds)))
    return 0


def run(*, post_id: int, readers: int, rounds: int) -> dict:
    from posts import selectors

    guarded = selectors.POST
    # Same key builder and TTLs, so the same Redis key; another name for its metrics.
    # Not registered: nothing ever sends invalidations for it.
    unguarded = dataclasses.replace(guarded, name="post_unguarded", single_flight=False)
    if selectors._load_post(post_id) is None:
        raise SystemExit(f"post {post_id} does not exist")

    variants = [guarded, unguarded]
    # One untimed round each: opens the Redis pool's connections and warms the code paths.
    for fam in variants:
        _round(fam, post_id, readers)
    samples: dict[str, list[dict]] = {fam.name: [] for fam in variants}
    for _ in range(rounds):
        for fam in variants:  # alternated, so a drift in machine load hits both alike
            samples[fam.name].append(_round(fam, post_id, readers))

    results = []
    for fam in variants:
        rows = samples[fam.name]
        figures = {name: statistics.median(row[name] for row in rows) for name in rows[0]}
        results.append({"family": fam.name, "single_flight": fam.single_flight, **figures, "rounds": rows})
    return {"readers": readers, "rounds": rounds, "post_id": post_id, "variants": results}


def _round(fam, post_id: int, readers: int) -> dict:
    from django.db import connection

    from core import cacheaside, metrics
    from core.redis import get_redis
    from posts import selectors

    loads = 0
    lock = threading.Lock()

    def loader() -> dict | None:
        nonlocal loads
        with lock:
            loads += 1
        return selectors._load_post(post_id)

    # Expired: the value and any lease gone. invalidate_now also drops it from every
    # L1 (the harness's idle gunicorn workers receive the message too).
    cacheaside.invalidate_now("post", post_id)
    cache = get_redis("cache")
    commands_before = _commands(cache)
    misses_before = metrics.value("cache.miss", family=fam.name)
    waits_before = metrics.value("cache.wait", family=fam.name)

    # A barrier lets its threads go one by one (each must take the GIL), so the first
    # ones out would be loading while the last are still waking. Instead the barrier's
    # action, run once every thread has arrived, sets a start time a little ahead and
    # every reader sleeps until then. They still queue for the GIL after that, so not
    # every reader finds the entry missing: `misses` counts those that did, and
    # `start_spread_ms` how far apart the readers really started.
    go_at = 0.0

    def set_start() -> None:
        nonlocal go_at
        go_at = time.perf_counter() + START_DELAY

    barrier = threading.Barrier(readers + 1, action=set_start)
    outcome: list[tuple[float, float, int, bool] | BaseException | None] = [None] * readers

    def reader(index: int) -> None:
        queries = 0

        def count_query(execute, sql, params, many, context):
            nonlocal queries
            queries += 1
            return execute(sql, params, many, context)

        try:
            # Connected before the barrier: a web process keeps its connection
            # (CONN_MAX_AGE), so opening one is not part of a stampede.
            connection.ensure_connection()
            with connection.execute_wrapper(count_query):
                barrier.wait()
                time.sleep(max(0.0, go_at - time.perf_counter()))
                started = time.perf_counter()
                value = cacheaside.get_or_load(fam, post_id, loader)
                finished = time.perf_counter()
            outcome[index] = (started, finished, queries, value is not None)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread below
            outcome[index] = exc
            barrier.abort()
        finally:
            connection.close()

    threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(readers)]
    for thread in threads:
        thread.start()
    try:
        barrier.wait(timeout=30)
    except threading.BrokenBarrierError:
        pass  # a reader failed before the start; its error is reported below
    for thread in threads:
        thread.join(timeout=30)
    commands = _commands(cache) - commands_before - 1  # our own INFO
    failures = [item for item in outcome if not isinstance(item, tuple)]
    if failures:
        raise SystemExit(f"{len(failures)} reader(s) failed; first: {failures[0]!r}")
    if not all(found for *_, found in outcome):
        raise SystemExit("a reader did not get the post")

    latencies = sorted((finished - started) * 1000 for started, finished, _, _ in outcome)
    return {
        "db_loads": loads,
        "sql_queries": sum(queries for _, _, queries, _ in outcome),
        # Readers whose GET found no value: the ones a stampede is made of.
        "misses": metrics.value("cache.miss", family=fam.name) - misses_before,
        "waits": metrics.value("cache.wait", family=fam.name) - waits_before,
        "redis_commands": commands,
        "wall_ms": (max(finished for _, finished, _, _ in outcome) - go_at) * 1000,
        # From the start time to the last reader's first step: how "together" they were.
        "start_spread_ms": (max(started for started, *_ in outcome) - go_at) * 1000,
        "reader_p50_ms": statistics.median(latencies),
        "reader_max_ms": latencies[-1],
    }


def _commands(client) -> int:
    return int(client.info("stats")["total_commands_processed"])


if __name__ == "__main__":
    sys.exit(main())
