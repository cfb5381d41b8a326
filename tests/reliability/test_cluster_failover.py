"""A Redis Cluster primary SIGKILLed under traffic: the cache and state roles fail over.

The cache and state roles each on a private cluster of three primaries, as a
KESTREL_TEST_CLUSTER=1 session has them (the queue role stays on the session's server),
but with a replica per primary and a short node timeout. Threads call Kestrel's own
services: cached post reads (posts.selectors.post_detail: cache-aside), follow-mirror
and leaderboard updates on the cache role; notifications written and listed
(feeds.notifications) and views sent (posts.counters) on the state role. One primary of
each cluster is SIGKILLed mid-run and its replica takes over. What must hold:

- the cache role never raises: reads of the dead shard's posts come from the database
  while it is away, and from the cache again once its replica serves its slots;
- state calls on the dead shard raise a connection error (core.redis.is_unavailable:
  the API's 503) until the promotion, and succeed after it;
- nothing acknowledged is lost but what asynchronous replication allows: a notification
  the dead primary acknowledged may be missing only if it was among the newest of its
  stream and acknowledged within REPLICATION_WINDOW before the kill; views likewise.

Loopback only; every phase waits on the traffic's own calls with a deadline, and the
clusters are torn down after. The figures go to var/reliability/redis-cluster-failover.*.
"""

from __future__ import annotations

import copy
import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from django.conf import settings
from django.db import connection
from django.test import override_settings
from redis.crc import key_slot

from accounts import keys as account_keys
from accounts.services import follow_mirror_update
from core import metrics
from core.redis import ROLE_ALIASES, connection_pool_options, get_redis, is_unavailable
from devstack.redis_cluster import Address, LocalCluster
from feeds import keys as feed_keys
from feeds import notifications
from feeds.notifications import notification_create, notification_list
from posts import keys as post_keys
from posts.counters import flush_views, pending_views, record_post_view
from posts.leaderboard import leaderboard_like_changed
from posts.models import Post
from posts.selectors import post_detail
from tests.reliability.traffic import RoleTimeouts, write_report

NODE_TIMEOUT_MS = 1500  # a primary missing pings this long is flagged failing, then its replica promoted
USERS = 48
POSTS = 48
# Replication is asynchronous: Redis promises no bound, and measures a replica's lag in
# seconds (INFO replication's `lag`, min-replicas-max-lag: a replica acknowledges its
# offset every second). The bound asserted: a write its primary acknowledged longer ago
# than that before it died is on the replica (on loopback the stream arrives in
# milliseconds).
REPLICATION_WINDOW = 1.0
WARM_CALLS = 50  # answered calls of each kind before the kill
WARM_SECONDS = 2 * REPLICATION_WINDOW  # and this long, so that some acknowledged writes predate the window
TAIL_CALLS = 50  # answered calls of each kind after recovery, none of which may fail
PHASE_TIMEOUT = 15.0  # seconds any one phase may take (the whole test stays under a minute)
VIEWS_PER_SEND = 5

CACHE_CONFIG = {"maxmemory": "64mb", "maxmemory-policy": "allkeys-lru", "appendonly": "no"}
STATE_CONFIG = {"maxmemory-policy": "noeviction"}  # and LocalCluster's AOF, as production


@dataclass(frozen=True)
class Call:
    """One service call of the traffic: which, when (monotonic), on the dead shard or not, and how it ended.

    outcome: "cache" or "database" (a cached read: where the post came from), "ok",
    "unavailable" (a state call's connection error; a view send kept for later), or
    "error: ..." (anything else: a failure of the test).
    """

    role: str
    op: str
    began: float
    ended: float
    dead_shard: bool
    outcome: str

    @property
    def answered(self) -> bool:
        return self.outcome in ("cache", "database", "ok")


@dataclass(frozen=True)
class Ack:
    """A notification the state role acknowledged: its stream id, recipient and when."""

    stream_id: str
    user_id: int
    at: float


@dataclass
class Run:
    """The traffic's record: every call in order, the acknowledged notifications and view sends.

    Waiters block on its condition until a call matching what they wait for is
    recorded, or their deadline passes: the phases follow the traffic, not a clock.
    """

    calls: list[Call] = field(default_factory=list)
    acks: list[Ack] = field(default_factory=list)
    view_sends: list[tuple[float, int]] = field(default_factory=list)  # (when acknowledged, views sent)
    views_recorded: int = 0
    views_sent: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    _changed: threading.Condition = field(default_factory=threading.Condition)

    def record(self, call: Call) -> None:
        with self._changed:
            self.calls.append(call)
            self._changed.notify_all()

    def wait_for(self, what: str, matches: Callable[[Call], bool], timeout: float = PHASE_TIMEOUT) -> Call:
        """The first call, recorded or to come, that `matches`; AssertionError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for call in self.calls[seen:]:
                    if matches(call):
                        return call
                seen = len(self.calls)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    outcomes = Counter((c.op, c.dead_shard, c.outcome.partition(":")[0]) for c in self.calls)
                    raise AssertionError(f"timed out waiting for {what}; calls so far: {dict(outcomes)}")
                self._changed.wait(remaining)

    def wait_for_each(self, ops: list[str], count: int, *, since: float) -> None:
        """Until every op in `ops` has `count` answered calls begun after `since`."""
        for op in ops:
            self.wait_for(f"{count} answered {op} calls", _nth(count, op, since))


def _nth(count: int, op: str, since: float) -> Callable[[Call], bool]:
    """A matcher true on the `count`-th answered call of `op` begun after `since`."""
    answered = itertools.count(1)
    return lambda call: call.op == op and call.began >= since and call.answered and next(answered) >= count


class QueryCounter:
    """A database execute wrapper counting this thread's queries: a cached read makes none."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        return execute(sql, params, many, context)


@dataclass(frozen=True)
class Layout:
    """Which users' notifications and which posts live on the primaries killed, and those primaries."""

    state_victim: Address
    cache_victim: Address
    dead_users: frozenset[int]
    dead_posts: frozenset[int]
    cache_dead_slots: frozenset[int]

    def cache_dead(self, *keys: str) -> bool:
        return any(key_slot(key.encode()) in self.cache_dead_slots for key in keys)


def _busiest_primary(cluster: LocalCluster, keys: list[str]) -> Address:
    """The primary serving most of `keys`."""
    owners = Counter(cluster.node_for_slot(key_slot(key.encode())) for key in keys)
    return owners.most_common(1)[0][0]


def _role_caches(state: LocalCluster, cache: LocalCluster) -> dict:
    """settings.CACHES with the state and cache roles on the clusters, with the roles' own timeouts and retries."""
    caches = copy.deepcopy(settings.CACHES)
    for role, cluster in (("state", state), ("cache", cache)):
        timeouts = RoleTimeouts.of(role)
        caches[ROLE_ALIASES[role]] = {
            **caches[ROLE_ALIASES[role]],
            "LOCATION": cluster.url,
            "OPTIONS": connection_pool_options(
                role=role,
                connect_timeout=timeouts.connect,
                socket_timeout=timeouts.socket,
                max_connections=settings.CACHES[ROLE_ALIASES[role]]["OPTIONS"]["CONNECTION_POOL_KWARGS"][
                    "max_connections"
                ],
                retries=timeouts.retries,
                cluster=True,
            ),
        }
    return caches


@pytest.fixture
def failover_roles() -> Iterator[tuple[LocalCluster, LocalCluster]]:
    """The state and cache roles on clusters of three primaries with a replica each, for one test.

    The L1 is off, so that every cached read asks the cache role. The notification
    scripts are registered once per process with the client they first meet, and the
    list's is called without one: forgotten on the way in and out, so that it uses the
    cluster here and the session's state role after.
    """
    with (
        LocalCluster(3, 1, node_timeout_ms=NODE_TIMEOUT_MS, extra_config=STATE_CONFIG) as state,
        LocalCluster(3, 1, node_timeout_ms=NODE_TIMEOUT_MS, extra_config=CACHE_CONFIG) as cache,
    ):
        notifications._script.cache_clear()
        try:
            with override_settings(CACHES=_role_caches(state, cache), KESTREL_L1_ENABLED=False):
                try:
                    yield state, cache
                finally:
                    for role in ("state", "cache"):
                        get_redis(role).close()
        finally:
            notifications._script.cache_clear()


@dataclass(frozen=True)
class Op:
    """One kind of traffic: call(n) does the n-th call and returns its outcome; dead(n)
    says whether that call's keys are on a killed primary's slots."""

    name: str
    role: str
    call: Callable[[int], str]
    dead: Callable[[int], bool]


def _worker(run: Run, op: Op, *, first: int = 0, step: int = 1) -> threading.Thread:
    """A thread doing op's calls first, first + step, ... until the run stops, recording each.

    A state call's connection error is recorded as "unavailable"; anything else raised,
    on either role, is an error of the test.
    """

    def loop() -> None:
        try:
            for n in itertools.count(first, step):
                if run.stop.is_set():
                    return
                began = time.monotonic()
                try:
                    outcome = op.call(n)
                except Exception as exc:  # noqa: BLE001 - every outcome is recorded, and judged after
                    unavailable = op.role == "state" and is_unavailable(exc)
                    outcome = "unavailable" if unavailable else f"error: {type(exc).__name__}: {exc}"
                run.record(Call(op.role, op.name, began, time.monotonic(), op.dead(n), outcome))
        finally:
            connection.close()  # this thread's own database connection

    return threading.Thread(target=loop, name=f"failover {op.name} {first}", daemon=True)


def _traffic(run: Run, layout: Layout, users: list[int], posts: list[int]) -> list[threading.Thread]:
    """Two cached readers, a cache-role writer, two notifiers and a view counter."""
    per_user: Counter[int] = Counter()
    acks_lock = threading.Lock()
    queries: dict[int, QueryCounter] = {}

    def post_of(n: int) -> int:
        return posts[n * 7 % len(posts)]

    def read(n: int) -> str:
        post_id = post_of(n)
        counter = queries.setdefault(threading.get_ident(), QueryCounter())
        before = counter.count
        with connection.execute_wrapper(counter):
            post = post_detail(post_id=post_id)
        if post is None or post["id"] != post_id:
            return f"error: post_detail({post_id}) answered {post!r}"
        return "cache" if counter.count == before else "database"

    def pair(n: int) -> tuple[int, int]:
        return users[n % len(users)], users[(n * 5 + 1) % len(users)]

    def cache_write(n: int) -> str:
        follower, followee = pair(n)
        if n % 2:
            follow_mirror_update(follower_id=follower, followee_id=followee, added=True)
        else:
            leaderboard_like_changed(author_id=followee, delta=1)
        return "ok"

    def cache_write_keys(n: int) -> list[str]:
        follower, followee = pair(n)
        if n % 2:
            return [account_keys.user_followers(followee), account_keys.user_following(follower)]
        return [post_keys.leaderboard()]

    def notify(n: int) -> str:
        user_id = users[n % len(users)]
        with acks_lock:
            # Never past MAXLEN, so no stream is trimmed: every entry acknowledged stays.
            full = per_user[user_id] >= feed_keys.NOTIFICATIONS_MAXLEN
            if not full and n % 4 != 3:
                per_user[user_id] += 1
        if full or n % 4 == 3:
            notification_list(user_id=user_id, count=5)
            return "ok"
        stream_id = notification_create(user_id=user_id, kind="message", message=f"failover check {n}")
        at = time.monotonic()
        with acks_lock:
            run.acks.append(Ack(stream_id, user_id, at))
        return "ok"

    def view(n: int) -> str:
        for k in range(VIEWS_PER_SEND):
            record_post_view(post_id=post_of(n + k), viewer=f"u:{users[(n + k) % len(users)]}")
        run.views_recorded += VIEWS_PER_SEND
        if not flush_views():
            return "unavailable"  # kept in the buffer, sent once Redis answers
        run.view_sends.append((time.monotonic(), run.views_recorded - run.views_sent))
        run.views_sent = run.views_recorded
        return "ok"

    reads = Op("post_detail", "cache", read, lambda n: post_of(n) in layout.dead_posts)
    writes = Op("follow_mirror/leaderboard", "cache", cache_write, lambda n: layout.cache_dead(*cache_write_keys(n)))
    notes = Op("notifications", "state", notify, lambda n: users[n % len(users)] in layout.dead_users)
    # A send reaches every view shard, so every primary.
    views = Op("views", "state", view, lambda n: True)
    return [
        _worker(run, reads, first=0, step=2),
        _worker(run, reads, first=1, step=2),
        _worker(run, writes),
        _worker(run, notes, first=0, step=2),
        _worker(run, notes, first=1, step=2),
        _worker(run, views),
    ]


OPS = ["post_detail", "follow_mirror/leaderboard", "notifications", "views"]


def _layout(state: LocalCluster, cache: LocalCluster, users: list[int], posts: list[int]) -> Layout:
    """The primaries to kill: those holding the most users' notifications and the most posts."""
    state_victim = _busiest_primary(state, [feed_keys.user_notifications(u) for u in users])
    cache_victim = _busiest_primary(cache, [post_keys.post_detail(p) for p in posts])
    state_slots, cache_slots = state.slots_of(state_victim), cache.slots_of(cache_victim)
    return Layout(
        state_victim=state_victim,
        cache_victim=cache_victim,
        dead_users=frozenset(u for u in users if key_slot(feed_keys.user_notifications(u).encode()) in state_slots),
        dead_posts=frozenset(p for p in posts if key_slot(post_keys.post_detail(p).encode()) in cache_slots),
        cache_dead_slots=cache_slots,
    )


def _stream_order(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq)


@dataclass(frozen=True)
class Loss:
    """Acknowledged writes to the killed state primary, and those missing after its replica took over."""

    acknowledged: int  # by the killed primary, before it died
    in_window: int  # of those, within REPLICATION_WINDOW of the kill
    lost: list[Ack]
    problems: list[str]


def _notification_loss(run: Run, layout: Layout, killed_at: float, promoted_at: float) -> Loss:
    """Read back every stream and compare with what was acknowledged.

    Asynchronous replication may lose what the dead primary acknowledged last, nothing
    else: a missing notification must be on the dead shard, acknowledged before the
    promotion and within REPLICATION_WINDOW of the kill, and newer than every
    notification of its stream the dead primary acknowledged that is still there (the
    replica holds a prefix of what its primary wrote).
    """
    state = get_redis("state")
    problems: list[str] = []
    lost: list[Ack] = []
    by_user: dict[int, list[Ack]] = {}
    for ack in run.acks:
        by_user.setdefault(ack.user_id, []).append(ack)
    for user_id, acks in by_user.items():
        present = {entry_id.decode() for entry_id, _ in state.xrange(feed_keys.user_notifications(user_id))}
        missing = [ack for ack in acks if ack.stream_id not in present]
        lost += missing
        if not missing:
            continue
        kept = [_stream_order(a.stream_id) for a in acks if a.stream_id in present and a.at < promoted_at]
        for ack in missing:
            if user_id not in layout.dead_users:
                problems.append(f"{ack} lost on a primary that was not killed")
            elif ack.at >= promoted_at:
                problems.append(f"{ack} acknowledged after the promotion, then lost")
            elif ack.at < killed_at - REPLICATION_WINDOW:
                problems.append(f"{ack} lost, acknowledged {killed_at - ack.at:.3f} s before the kill")
            elif kept and _stream_order(ack.stream_id) < max(kept):
                problems.append(f"{ack} lost while a later notification of its stream was kept")
    old_primary = [a for a in run.acks if a.user_id in layout.dead_users and a.at < promoted_at]
    return Loss(
        acknowledged=len(old_primary),
        in_window=sum(a.at >= killed_at - REPLICATION_WINDOW for a in old_primary),
        lost=lost,
        problems=problems,
    )


def _phase_counts(calls: list[Call], since: float, until: float) -> dict[str, dict[str, int]]:
    """Outcomes per op ("op, dead shard" or "op, other shards") of the calls begun in [since, until)."""
    counts: dict[str, Counter[str]] = {}
    for call in calls:
        if since <= call.began < until:
            where = "dead shard" if call.dead_shard else "other shards"
            counts.setdefault(f"{call.op}, {where}", Counter())[call.outcome.partition(":")[0]] += 1
    return {name: dict(sorted(outcomes.items())) for name, outcomes in sorted(counts.items())}


def test_a_killed_primary_of_each_role_fails_over_under_traffic(failover_roles, make_user, transactional_db):
    state, cache = failover_roles
    users = [make_user().pk for _ in range(USERS)]
    posts = [
        post.pk
        for post in Post.objects.bulk_create(
            Post(author_id=users[n % USERS], title=f"Failover {n}", content="A kestrel hovers into the wind.")
            for n in range(POSTS)
        )
    ]
    for post_id in posts:
        post_detail(post_id=post_id)  # every post cached before the traffic
    layout = _layout(state, cache, users, posts)
    run = Run()
    threads = _traffic(run, layout, users, posts)
    started = time.monotonic()
    for thread in threads:
        thread.start()
    try:
        run.wait_for_each(OPS, WARM_CALLS, since=started)
        run.wait_for(f"{WARM_SECONDS} s of traffic", lambda c: c.began >= started + WARM_SECONDS)
        killing = time.monotonic()
        state.kill_primary(layout.state_victim)
        cache.kill_primary(layout.cache_victim)
        killed_at = time.monotonic()
        refused = run.wait_for(
            "a state call on the dead shard refused",
            lambda c: c.role == "state" and c.dead_shard and c.began >= killed_at and c.outcome == "unavailable",
        )
        from_database = run.wait_for(
            "a read of a dead-shard post answered from the database",
            lambda c: c.op == "post_detail" and c.dead_shard and c.began >= killed_at and c.outcome == "database",
        )
        state_promotion = state.wait_for_failover(layout.state_victim, timeout=PHASE_TIMEOUT)
        cache_promotion = cache.wait_for_failover(layout.cache_victim, timeout=PHASE_TIMEOUT)
        state_back = run.wait_for(
            "a notification on the dead shard acknowledged after the promotion",
            lambda c: (
                c.op == "notifications"
                and c.dead_shard
                and c.began >= killed_at + state_promotion
                and c.outcome == "ok"
            ),
        )
        cache_back = run.wait_for(
            "a dead-shard post read from the cache after the promotion",
            lambda c: (
                c.op == "post_detail"
                and c.dead_shard
                and c.began >= killed_at + cache_promotion
                and c.outcome == "cache"
            ),
        )
        recovered_at = max(state_back.ended, cache_back.ended)
        run.wait_for_each(OPS, TAIL_CALLS, since=recovered_at)
    finally:
        run.stop.set()
        for thread in threads:
            thread.join(timeout=10)
    ended = time.monotonic()
    assert not [thread.name for thread in threads if thread.is_alive()], "a traffic thread did not stop"

    assert flush_views(), "the views kept during the outage could not be sent after it"
    loss = _notification_loss(run, layout, killed_at, killed_at + state_promotion)
    views_found = sum(pending_views("post", posts).values()) + sum(
        Post.objects.filter(pk__in=posts).values_list("view_count", flat=True)
    )
    views_lost = run.views_recorded - views_found
    views_dropped = metrics.value("batching.dropped", buffer="views")  # refused as errors, not kept for later
    views_in_window = sum(
        sent for at, sent in run.view_sends if killed_at - REPLICATION_WINDOW <= at < killed_at + state_promotion
    )
    errors = Counter(f"{c.op}: {c.outcome}" for c in run.calls if c.outcome.startswith("error"))
    figures = {
        "node_timeout_ms": NODE_TIMEOUT_MS,
        "state_promotion_s": round(state_promotion, 3),
        "cache_promotion_s": round(cache_promotion, 3),
        "state_recovered_s": round(state_back.ended - killed_at, 3),
        "cache_recovered_s": round(cache_back.ended - killed_at, 3),
        "first_refusal_s": round(refused.ended - killed_at, 3),
        "first_read_from_database_s": round(from_database.ended - killed_at, 3),
        "notifications_acknowledged_by_the_killed_primary": loss.acknowledged,
        "of_which_within_the_window": loss.in_window,
        "notifications_lost": len(loss.lost),
        "views_recorded": run.views_recorded,
        "views_found": views_found,
        "views_lost": views_lost,
        "views_dropped_by_the_buffer": views_dropped,
        "views_sent_within_the_window": views_in_window,
        "calls": len(run.calls),
        "run_s": round(ended - started, 1),
    }
    phases = {
        "before the kill": _phase_counts(run.calls, started, killing),
        "kill to recovery": _phase_counts(run.calls, killed_at, recovered_at),
        "after recovery": _phase_counts(run.calls, recovered_at, ended),
    }
    lines = [
        f"Redis Cluster failover under traffic: one primary of the state and of the cache role SIGKILLed"
        f" (3 primaries, 1 replica each, cluster-node-timeout {NODE_TIMEOUT_MS} ms)",
        "",
        *(f"{name}: {value}" for name, value in figures.items()),
        "",
        *(f"{phase}: {counts}" for phase, counts in phases.items()),
        f"lost notifications: {loss.lost}",
    ]
    report = write_report(
        "redis-cluster-failover", {"figures": figures, "phases": phases, "errors": dict(errors)}, table="\n".join(lines)
    )

    problems = [f"{count} calls of {what}" for what, count in errors.items()]
    problems += loss.problems
    unavailable_before = [c for c in run.calls if c.ended < killing and c.outcome == "unavailable"]
    if unavailable_before:
        problems.append(f"{len(unavailable_before)} state calls refused before the kill")
    refused_after = [c for c in run.calls if c.began >= recovered_at and c.outcome == "unavailable"]
    if refused_after:
        problems.append(f"{len(refused_after)} state calls refused after recovery, e.g. {refused_after[0]}")
    missed_after = [c for c in run.calls if c.began >= recovered_at and c.outcome == "database" and c.dead_shard]
    if missed_after:
        problems.append(f"{len(missed_after)} dead-shard reads from the database after recovery")
    if views_dropped:
        problems.append(f"{views_dropped} views dropped by the buffer: a send failed with an error, not unavailable")
    if not 0 <= views_lost <= views_in_window:
        problems.append(
            f"{views_lost} views lost: more than the {views_in_window} sent within {REPLICATION_WINDOW} s of the kill"
            if views_lost > 0
            else f"{-views_lost} views counted twice"
        )
    assert not problems, "\n".join(problems) + f"\n(report: {report})"
