"""A process that records views of one post, for tests/posts/test_view_processes.py.

    python -m tests.posts.view_driver count <post_id> <views> <threads>   then exit normally
    python -m tests.posts.view_driver crash <post_id> <sent> <unsent>     print "ready", wait to be killed
    python -m tests.posts.view_driver stream <post_id>                    views until killed, printing progress

Runs with the environment it is given (a live stack's settings, Redis and database).
"""

from __future__ import annotations

import sys
import threading
import time

import django


def count(post_id: int, views: int, threads: int) -> None:
    from posts.counters import record_post_view

    def run(thread: int) -> None:
        for n in range(thread, views, threads):
            record_post_view(post_id=post_id, viewer=f"u:{n % 7}")

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    # No flush here: the interpreter's exit sends what is left (core.batching's atexit).


def crash(post_id: int, sent: int, unsent: int) -> None:
    from posts.counters import flush_views, record_post_view

    for _ in range(sent):
        record_post_view(post_id=post_id, viewer="u:1")
    assert flush_views()
    for _ in range(unsent):
        record_post_view(post_id=post_id, viewer="u:1")
    print("ready", flush=True)
    time.sleep(600)


PROGRESS_EVERY = 500


def stream(post_id: int) -> None:
    """Views without end, a line "<views> <monotonic time>" every PROGRESS_EVERY.

    A pause every 100 views stands for the I/O of the requests that count them: a loop
    that never lets go of the GIL would starve the sending thread as no server does.
    """
    from posts.counters import record_post_view

    n = 0
    while True:
        record_post_view(post_id=post_id, viewer="u:1")
        n += 1
        if n % 100 == 0:
            time.sleep(0.0001)
        if n % PROGRESS_EVERY == 0:
            print(n, time.monotonic(), flush=True)


if __name__ == "__main__":
    django.setup()
    mode, *args = sys.argv[1:]
    {"count": count, "crash": crash, "stream": stream}[mode](*(int(arg) for arg in args))
