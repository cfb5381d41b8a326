"""View counts across real processes: gunicorn workers stopped gracefully, drivers killed outright.

One live stack (tests.live) for the module: gunicorn with two gthread workers, the state
Redis and the database. Other processes (tests/posts/view_driver.py) count views of the
same posts against the same Redis and database, each in its own memory.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
import redis

from config.pdeathsig import die_with_parent
from devstack.processes import PROJECT_ROOT
from posts import keys
from posts.models import Post
from tests.live import LiveKestrel, live_kestrel
from tests.posts.view_driver import PROGRESS_EVERY

pytestmark = pytest.mark.slow

INTERVAL = 0.2  # the drivers' VIEW_FLUSH_INTERVAL (the default)
CLIENTS = 8
HOT_VIEWS, COLD_VIEWS = 1_500, 300


@pytest.fixture(scope="module")
def site() -> Iterator[LiveKestrel]:
    env = {
        "RATE_LIMIT_ENABLED": "0",
        # The readers' addresses come in X-Forwarded-For, so they are distinct viewers.
        "RATE_LIMIT_TRUSTED_PROXIES": "1",
        # The web workers never send on their own: every view they count must reach
        # Redis through their graceful stop.
        "VIEW_FLUSH_INTERVAL": "3600",
    }
    with live_kestrel(env=env, web_workers=2, web_threads=8) as live:
        yield live


@pytest.fixture(scope="module")
def post_ids(site) -> Iterator[int]:
    """Posts of the live database, made in one shell (each costs seconds); take one with next()."""
    code = (
        "from accounts.services import user_create; from posts.models import Post\n"
        "author = user_create(email='author@example.com', username='author', password='a-Strong-pass-42')\n"
        "print(*(Post.objects.create(author=author, title='t', content='c').pk for _ in range(10)))\n"
    )
    return iter(int(pk) for pk in site.shell(code).strip().splitlines()[-1].split())


def state(site: LiveKestrel) -> redis.Redis:
    return redis.Redis.from_url(site.env["REDIS_URL"])


def view_counts(site: LiveKestrel, ids: list[int]) -> dict[int, int]:
    """The rows' view_count, read from the live stack's SQLite file (its own folder)."""
    table, marks = Post._meta.db_table, ",".join("?" * len(ids))
    with contextlib.closing(sqlite3.connect(site.var_dir / "kestrel.sqlite3")) as db:
        query = f"SELECT id, view_count FROM {table} WHERE id IN ({marks})"  # noqa: S608 - the model's table; ids bound
        return dict(db.execute(query, ids).fetchall())


def pending(site: LiveKestrel, post_id: int) -> int:
    return int(state(site).get(keys.post_views(post_id)) or 0)


def driver(site: LiveKestrel, *args: object, interval: float = INTERVAL) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.posts.view_driver", *(str(arg) for arg in args)],
        cwd=PROJECT_ROOT,
        env={**site.env, "VIEW_FLUSH_INTERVAL": str(interval)},
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=die_with_parent,
    )


def test_views_from_two_gunicorn_workers_are_exact_after_a_graceful_stop(site, post_ids):
    hot, cold = next(post_ids), next(post_ids)
    plan = [(hot, f"203.0.113.{n % 60}") for n in range(HOT_VIEWS)] + [(cold, "198.51.100.1")] * COLD_VIEWS
    errors: list[str] = []

    def reader(client: int) -> None:
        for post_id, address in plan[client::CLIENTS]:
            status, _, body = site.request("GET", f"/api/posts/{post_id}", headers={"X-Forwarded-For": address})
            if status != 200:
                errors.append(f"{status} {body[:200]!r}")

    readers = [threading.Thread(target=reader, args=(n,)) for n in range(CLIENTS)]
    for thread in readers:
        thread.start()
    for thread in readers:
        thread.join()
    assert errors == []

    redis_state = state(site)
    assert pending(site, hot) == pending(site, cold) == 0  # all still in the workers' memory

    site.web.stop()  # SIGTERM: each worker sends what it holds (worker_exit) and exits

    rows = view_counts(site, [hot, cold])
    # Both workers counted views: each sent its batch under its own sequence.
    every_process = keys.view_batches("TOKEN", keys.view_shard(hot)).replace("TOKEN", "*")
    assert len(list(redis_state.scan_iter(match=every_process))) == 2, site.logs()
    assert rows[hot] + pending(site, hot) == HOT_VIEWS
    # The send that took the shared total past the threshold moved it to the row; what
    # is left is below it.
    assert rows[hot] >= keys.VIEW_FLUSH_EVERY
    assert pending(site, hot) < keys.VIEW_FLUSH_EVERY
    assert (rows[cold], pending(site, cold)) == (0, COLD_VIEWS)
    assert redis_state.pfcount(keys.post_viewers(hot)) in range(59, 62)  # 60 addresses (HLL)
    assert redis_state.pfcount(keys.post_viewers(cold)) == 1


def test_two_processes_reach_the_threshold_together_and_their_views_move_to_the_row_once(site, post_ids):
    post_id = next(post_ids)

    # No sending thread: each sends once, as its interpreter exits (atexit).
    first = driver(site, "count", post_id, 600, 4, interval=0)
    second = driver(site, "count", post_id, keys.VIEW_FLUSH_EVERY - 600, 4, interval=0)

    assert first.wait(timeout=60) == 0
    assert second.wait(timeout=60) == 0
    # Whichever exit took the shared total to 1000 moved all of it; the other could not.
    assert view_counts(site, [post_id])[post_id] == keys.VIEW_FLUSH_EVERY
    assert pending(site, post_id) == 0


def test_a_killed_process_loses_exactly_the_views_it_had_not_sent(site, post_ids):
    post_id = next(post_ids)
    # No sending thread: this process sends once, when told, then counts 200 more.
    process = driver(site, "crash", post_id, 300, 200, interval=0)
    try:
        assert process.stdout.readline().strip() == "ready"
    finally:
        process.kill()  # SIGKILL: no atexit, no worker_exit
        process.wait(timeout=10)

    assert pending(site, post_id) == 300


def test_a_killed_process_loses_at_most_about_one_interval_of_views(site, post_ids):
    post_id = next(post_ids)
    process = driver(site, "stream", post_id)
    progress: list[tuple[int, float]] = []
    try:
        while not progress or progress[-1][1] - progress[0][1] < 1.0:  # a second of views, then kill
            views, at = process.stdout.readline().split()
            progress.append((int(views), float(at)))
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    for line in process.stdout:  # what it printed before the kill and we had not read yet
        views, at = line.split()
        progress.append((int(views), float(at)))
    process.stdout.close()
    # Killed after its last line and before the next one.
    recorded_at_most = progress[-1][0] + PROGRESS_EVERY
    last = progress[-1][1]

    sent = view_counts(site, [post_id])[post_id] + pending(site, post_id)
    lost = recorded_at_most - sent
    # The bound: what the process recorded in its last interval, plus the send in
    # flight and the scheduling of a busy machine (another interval).
    window = [views for views, at in progress if at >= last - 2 * INTERVAL]
    last_intervals = progress[-1][0] - window[0] + 2 * PROGRESS_EVERY
    rate = (progress[-1][0] - progress[0][0]) / (last - progress[0][1])
    print(f"\n{rate:,.0f} views/s recorded; a kill -9 lost {lost:,} views = {lost / rate * 1000:.0f} ms of them")
    assert 0 <= lost <= last_intervals, (lost, last_intervals, progress[-10:])
