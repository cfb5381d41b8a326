"""The publishing side of the live-notification benchmark (bench/sse.py reads the other end).

    DJANGO_SETTINGS_MODULE=config.settings python -m bench.notifier --users 7,8,9 --count 500 --rate 250

Calls feeds.notifications.notify, as a finished job or a fan-out does, `--count` times
at `--rate` a second, to the users in turn. Each notification's data carries
`sentAt`, the wall-clock time (time.time(), the same clock in every process of the
machine) taken just before the call, so a reader computes the delay from publish to
its own read. Prints what it sent and how long each call took.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

KIND = "message"  # a kind the notification streams already carry (POST /api/notify sends it)
WARMUP = {"warmUp": True}  # readers ignore notifications without sentAt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.notifier", description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", required=True, help="comma-separated user ids, notified in turn")
    parser.add_argument("--count", type=int, default=500, help="notifications in all (default 500)")
    parser.add_argument("--rate", type=float, default=250.0, help="notifications a second (default 250)")
    args = parser.parse_args(argv)
    users = [int(user) for user in args.users.split(",") if user]
    if not users or args.count < 1 or args.rate <= 0:
        parser.error("--users must name someone, --count be at least 1 and --rate positive")

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    print(json.dumps(publish(users=users, count=args.count, rate=args.rate)))
    return 0


def publish(*, users: list[int], count: int, rate: float) -> dict:
    from feeds.notifications import notify

    # Loads the script and opens the connection, so the first timed call is like the rest.
    if notify(user_id=users[0], kind=KIND, message="Warming up", data=WARMUP) is None:
        raise SystemExit("notify() could not reach Redis")
    interval = 1 / rate
    calls, late = [], 0
    began = time.perf_counter()
    for seq in range(count):
        due = began + seq * interval
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        elif pause < -interval:
            late += 1  # this process could not keep the pace
        sent_at = time.time()
        started = time.perf_counter()
        data = {"seq": seq, "sentAt": sent_at}
        if notify(user_id=users[seq % len(users)], kind=KIND, message=f"Notification {seq}", data=data) is None:
            raise SystemExit(f"notification {seq} was lost (Redis unavailable)")
        calls.append(time.perf_counter() - started)
    elapsed = time.perf_counter() - began
    return {
        "sent": count,
        "seconds": elapsed,
        "rate": count / elapsed,
        "late": late,
        "notify_us_p50": statistics.median(calls) * 1e6,
        "notify_us_max": max(calls) * 1e6,
    }


if __name__ == "__main__":
    sys.exit(main())
