"""The fan-out benchmark: what one new post costs per follower, in time and in Redis traffic.

    DJANGO_SETTINGS_MODULE=config.settings python -m bench.fanout --followers 1,100,10000

`python -m bench` runs it as a child process on its private Redis and SQLite; run by
hand, it adds users, follows and posts to whatever database and Redis the environment
names.

For each size, an author with that many followers is made in bulk (users and Follow
rows with bulk_create: the follow service's own side effects are not what is
measured). Every follower gets an existing, empty home timeline, as a reader who has
opened the site has (a missing one is skipped by the fan-out's NOMKSTREAM, which
would make it look cheaper), and the author's follower set is built in Redis, as it
is once anyone has read it. Then each round creates a post (a plain INSERT) and calls
the fan-out in this process, the way production would for that author:

- up to FANOUT_INLINE_MAX_FOLLOWERS followers, the inline function the request runs
  after commit (feeds.services._fanout_inline, given the follower ids the post's
  transaction read: the author's activity, the timelines, the notifications);
- beyond, the job's function (feeds.services.timeline_fanout_run, called directly on a
  Job row, no worker): the post and the follower set by SSCAN batches.

It reports the medians over the rounds of the wall time, the Redis commands (server
count, Lua scripts' inner calls included) and the round trips (requests this
process wrote; a pipeline is one), per post and per follower; and checks that every
follower's timeline got the post.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

SIZES = (1, 100, 10_000)
ROUNDS_SMALL = 20  # posts per size up to FANOUT_INLINE_MAX_FOLLOWERS: each is well under a millisecond
ROUNDS_LARGE = 3
BULK_BATCH = 2_000  # rows per INSERT of bulk_create, and commands per set-up pipeline


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fanout", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--followers", default=",".join(map(str, SIZES)), help="comma-separated follower counts (default 1,100,10000)"
    )
    parser.add_argument("--rounds-small", type=int, default=ROUNDS_SMALL, help="posts per size fanned out inline")
    parser.add_argument("--rounds-large", type=int, default=ROUNDS_LARGE, help="posts per size fanned out by the job")
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.followers.split(",") if size]
    if not sizes or min(sizes) < 1 or args.rounds_small < 1 or args.rounds_large < 1:
        parser.error("follower counts and rounds must be at least 1")

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    print(json.dumps(run(sizes=sizes, rounds_small=args.rounds_small, rounds_large=args.rounds_large)))
    return 0


def run(*, sizes: list[int], rounds_small: int, rounds_large: int) -> dict:
    from feeds.services import FANOUT_BATCH, FANOUT_INLINE_MAX_FOLLOWERS

    results = []
    for size in sizes:
        began = time.perf_counter()
        author, followers = _graph(size)
        setup_s = time.perf_counter() - began
        inline = size <= FANOUT_INLINE_MAX_FOLLOWERS
        rounds = rounds_small if inline else rounds_large
        results.append({**_measure(author, followers, inline=inline, rounds=rounds), "setup_s": setup_s})
    return {"inline_max": FANOUT_INLINE_MAX_FOLLOWERS, "batch": FANOUT_BATCH, "sizes": results}


def _graph(size: int):
    """An author followed by `size` new users, each with an empty timeline; the follower set built."""
    from django.contrib.auth.hashers import make_password

    from accounts.models import Follow, User
    from accounts.selectors import follower_ids
    from core.redis import get_redis
    from feeds import keys

    tag = f"fan{size}-{time.monotonic_ns()}"
    unusable = make_password(None)  # nobody logs in as these: no password hashing per user
    author = User.objects.create(username=f"{tag}-author", email=f"{tag}-author@example.com", password=unusable)
    followers = User.objects.bulk_create(
        (User(username=f"{tag}-{n}", email=f"{tag}-{n}@example.com", password=unusable) for n in range(size)),
        batch_size=BULK_BATCH,
    )
    Follow.objects.bulk_create(
        (Follow(follower_id=follower.pk, followee_id=author.pk) for follower in followers), batch_size=BULK_BATCH
    )
    ids = [follower.pk for follower in followers]
    client = get_redis("state")
    for start in range(0, size, BULK_BATCH):
        pipe = client.pipeline(transaction=False)
        for user_id in ids[start : start + BULK_BATCH]:
            # What feeds.selectors stores for a timeline with no posts yet: the stream exists, empty.
            pipe.xadd(keys.user_timeline(user_id), {"built": 1}, id="0-1", maxlen=0, approximate=False)
        pipe.execute()
    if len(follower_ids(user_id=author.pk)) != size:  # builds the follower set, as a first reader does
        raise SystemExit(f"the follower set of the {size}-follower author is wrong")
    return author, ids


def _measure(author, followers: list[int], *, inline: bool, rounds: int) -> dict:
    from bench.probe import RedisProbe
    from core.redis import get_redis
    from feeds import services
    from jobs.models import Job
    from jobs.queues import FANOUT_JOB
    from posts.models import Post

    client = get_redis("state")
    samples = []
    for round_no in range(rounds + 1):  # the first round is untimed: scripts loaded, connections open
        post = Post.objects.create(author=author, title=f"Fan-out {round_no}", content="A post to fan out.")
        if inline:
            fanout = _inline(services, post, followers)
        else:
            job = Job.objects.create(kind=FANOUT_JOB, owner=author, payload={"postId": post.pk})
            fanout = _job(services, job)
        with RedisProbe(client) as probe:
            began = time.perf_counter()
            fanout()
            elapsed = time.perf_counter() - began
        delivered = _delivered(client, followers, post.pk)
        if delivered != len(followers):
            raise SystemExit(f"post {post.pk} reached {delivered} of {len(followers)} timelines")
        if round_no:
            samples.append((elapsed, probe.traffic))

    size = len(followers)
    us = statistics.median(elapsed for elapsed, _ in samples) * 1e6
    commands = statistics.median(traffic.commands for _, traffic in samples)
    round_trips = statistics.median(traffic.round_trips for _, traffic in samples)
    # The commands of the median round (they barely vary between rounds).
    middle = sorted(samples, key=lambda sample: sample[1].commands)[len(samples) // 2][1]
    return {
        "followers": size,
        "path": "inline" if inline else "job",
        "function": "feeds.services._fanout_inline" if inline else "feeds.services.timeline_fanout_run",
        "rounds": rounds,
        "us": us,
        "us_per_follower": us / size,
        "commands": commands,
        "commands_per_follower": commands / size,
        "round_trips": round_trips,
        "by_command": middle.by_command,
        "samples_us": [elapsed * 1e6 for elapsed, _ in samples],
    }


def _inline(services, post, followers):
    # The follower ids as timeline_fanout_schedule reads them in the post's transaction.
    return lambda: services._fanout_inline(post, followers)


def _job(services, job):
    from posts.selectors import post_with_author

    def run() -> None:
        result = services.timeline_fanout_run(job=job, post_load=post_with_author)
        if "timelines" not in result:
            raise SystemExit(f"the fan-out job answered {result!r}")

    return run


def _delivered(client, followers: list[int], post_id: int) -> int:
    """How many followers' timelines have `post_id` as their newest entry."""
    from feeds import keys

    delivered = 0
    for start in range(0, len(followers), BULK_BATCH):
        pipe = client.pipeline(transaction=False)
        for user_id in followers[start : start + BULK_BATCH]:
            pipe.xrevrange(keys.user_timeline(user_id), count=1)
        for entries in pipe.execute():
            delivered += bool(entries) and entries[0][1].get(b"post") == str(post_id).encode()
    return delivered


if __name__ == "__main__":
    sys.exit(main())
