"""What the benchmarks measure. Adding a benchmark means adding an entry here.

An HTTP scenario is one GET path (or a rotation of paths) loaded by the load
generator and compared with a baseline scenario measured in the same run. Figures in
`design_ratio` come from DESIGN.md, "Performance facts", and are printed beside the
measured ratio so a regression (or a stale table) shows at a glance.

A scenario that needs data (a post to read, a primed cache) sets `prepare`: it runs
once, before the warm-up, with the live stack (see bench.harness.BenchContext), and
`paths` then names what to request. A scenario that needs other settings sets `env`:
the harness serves it from a gunicorn of its own started with those variables, so
the floors keep the default settings and no server restarts between runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.harness import BenchContext

# The baseline every API path is divided by: DRF with no authentication and no permissions.
DRF_FLOOR = "drf-floor"

# Groups of benchmarks, each skippable (`--skip GROUP`) or run alone (`--group GROUP`).
# "http": the floors, /api/me and GET /api/posts/{id}; "stampede": bench/stampede.py;
# "jobs": bench/jobqueue.py; "feeds": GET /api/feed, bench/fanout.py and the SSE
# latency (bench/sse.py); "protect": the rate limiter's cost (HTTP and bench/limiter.py)
# and bench/locks.py.
GROUPS = ("http", "stampede", "jobs", "feeds", "protect")


@dataclass(frozen=True)
class StateTraffic:
    """The Redis commands a path sends to the state role.

    Both roles share the benchmark's one Redis server (state DB 0, cache DB 1) and
    INFO counts commands per server, so the state role's share is told apart by name.
    """

    commands: tuple[str, ...]
    # The command sent once per state-role round trip: its count is those round trips.
    per_round_trip: str


@dataclass(frozen=True)
class HttpScenario:
    name: str
    # As printed; what is requested comes from `paths` when it is set.
    path: str
    description: str
    # Send the logged-in user's session cookie.
    needs_session: bool = False
    # Send `Authorization: Bearer <their access token>` instead (`prepare` must be create_access_token).
    bearer: bool = False
    # Name of the scenario whose req/s this one is divided by; None for the floor itself.
    baseline: str | None = DRF_FLOOR
    # The same ratio as measured for DESIGN.md, when the table has this path.
    design_ratio: float | None = None
    # Keys the JSON body must have, checked once before timing, so a 401 or a 404
    # answered quickly is never reported as a fast path.
    expect_keys: tuple[str, ...] = ()
    prepare: Callable[[BenchContext], None] | None = None
    # The paths to request, called once `prepare` has run. With several, every load
    # (warm-up, Redis count, timed runs) takes them in order from where the last one
    # stopped, and wraps around at the end.
    paths: Callable[[BenchContext], list[str]] | None = None
    # Environment variables of the gunicorn serving this scenario, over the stack's.
    env: Mapping[str, str] = field(default_factory=dict)
    # Called before every load of this scenario.
    before_load: Callable[[BenchContext], None] | None = None
    # A core.cacheaside family whose hit, miss and load counters are read from every
    # gunicorn worker around each timed run.
    cache_family: str | None = None
    # Every read should miss: a warning is printed when the counters say otherwise.
    expect_miss: bool = False
    # What the path sends to the state role, so the report can split its Redis traffic by role.
    state_traffic: StateTraffic | None = None
    # One of GROUPS. A scenario's baseline and counterpart run whenever it does.
    group: str = "http"
    # Headers the first answer must carry (proof that a middleware ran), and what else is
    # wrong with its body (None when nothing is).
    expect_headers: tuple[str, ...] = ()
    check: Callable[[dict], str | None] | None = None
    # The same request with the default settings: the report prints what this
    # scenario's settings add to it (time and Redis traffic per request).
    counterpart: str | None = None
    # Left out of the default run (to keep it within about 6 minutes); runs when named by --only.
    optional: bool = False

    @property
    def env_label(self) -> str:
        return " ".join(f"{name}={value}" for name, value in sorted(self.env.items())) or "default"


# --- GET /api/posts/{id} ----------------------------------------------------------------

POST_PATH = "/api/posts/{id}"
# PostDetailApi counts every view in one state-role pipeline (posts.counters.record_post_view).
POST_VIEW = StateTraffic(commands=("incrby", "pfadd", "sadd"), per_round_trip="incrby")
# Posts for the miss scenario: more than one load of the longest length requests at
# a miss rate well above any seen on these machines (with the 25 % margin of
# bench.harness.PathRotation), so no load asks for a post twice.
COLD_POSTS_PER_SECOND = 3_000
COLD_POSTS_MIN = 5_000


def create_hot_post(ctx: BenchContext) -> None:
    """One post, created through posts.services.post_create; shared by the scenarios that read it."""
    if "hot_post" not in ctx.fixtures:
        ctx.fixtures["hot_post"] = ctx.shell_json("from bench.fixtures import hot_post; hot_post()")["id"]


def hot_post_paths(ctx: BenchContext) -> list[str]:
    return [POST_PATH.format(id=ctx.fixtures["hot_post"])]


def create_cold_posts(ctx: BenchContext) -> None:
    from bench.harness import PathRotation  # the harness imports this module

    count = max(COLD_POSTS_MIN, math.ceil(ctx.seconds * PathRotation.MARGIN * COLD_POSTS_PER_SECOND))
    ctx.fixtures["cold_posts"] = ctx.shell_json(f"from bench.fixtures import cold_posts; cold_posts({count})")["ids"]


def cold_post_paths(ctx: BenchContext) -> list[str]:
    return [POST_PATH.format(id=post_id) for post_id in ctx.fixtures["cold_posts"]]


def flush_cache(ctx: BenchContext) -> None:
    """Empty the cache role (DB 1 only), so every post the next load asks for is a miss."""
    ctx.flush_cache()


# --- GET /api/feed (group "feeds") ------------------------------------------------------

FEED_COUNT = 50
FEED_PATH = f"/api/feed?count={FEED_COUNT}"
# The benchmark user follows FEED_AUTHORS people, whose FEED_POSTS posts reach the
# timeline by the fan-out: more than a page, so the page is full and `next` is set.
FEED_AUTHORS = 5
FEED_POSTS = 60


def create_feed(ctx: BenchContext) -> None:
    if "feed" not in ctx.fixtures:
        ctx.fixtures["feed"] = ctx.shell_json(
            f"from bench.fixtures import feed_timeline; feed_timeline(authors={FEED_AUTHORS}, posts={FEED_POSTS})"
        )


def full_feed_page(data: dict) -> str | None:
    items = data.get("items")
    if not isinstance(items, list) or len(items) != FEED_COUNT:
        return f"the page holds {len(items) if isinstance(items, list) else items!r} items, not {FEED_COUNT}"
    if not data.get("next"):
        return "a full page with more posts behind it has no `next` cursor"
    return None


# --- The rate limiter (group "protect") ------------------------------------------------

# A DRF floor under /api/, where the limiter's policies apply (bench/urls.py).
API_FLOOR_PATH = "/api/bench-floor"
# On, with the API limit out of reach: the load is thousands of requests a second from
# one address, and what is measured is the check, not the 429.
RATE_LIMITED = {"RATE_LIMIT_ENABLED": "1", "RATE_LIMIT_API_PER_MINUTE": "1000000000"}
# What an allowed request gets back from core.ratelimit: proof the limiter ran.
RATE_LIMIT_HEADERS = ("RateLimit", "RateLimit-Policy")
# Seconds the benchmark's access token lives: longer than any run (the default is 5 minutes).
ACCESS_TOKEN_LIFETIME = 3 * 60 * 60


def create_access_token(ctx: BenchContext) -> None:
    """An access token for the logged-in user, issued by accounts.tokens.token_pair_issue (what POST
    /api/token calls) with a lifetime longer than the benchmark; every server shares the signing key."""
    if "access_token" not in ctx.fixtures:
        ctx.fixtures["access_token"] = ctx.shell_json(
            "from bench.fixtures import access_token; access_token()",
            env={"JWT_ACCESS_LIFETIME": str(ACCESS_TOKEN_LIFETIME)},
        )["access"]


HTTP_SCENARIOS: list[HttpScenario] = [
    HttpScenario(
        name=DRF_FLOOR,
        path="/bench/floor",
        description="DRF floor: trivial APIView, no auth, no permissions",
        baseline=None,
        design_ratio=1.00,
        expect_keys=("ok",),
    ),
    HttpScenario(
        name="django-floor",
        path="/bench/django-floor",
        description="plain Django JsonResponse",
        design_ratio=1.33,
        expect_keys=("ok",),
    ),
    HttpScenario(
        name="api-me",
        path="/api/me",
        description="GET /api/me: session from Redis, user row from SQLite",
        needs_session=True,
        expect_keys=("userId", "email"),
    ),
    HttpScenario(
        name="post-l1",
        path=POST_PATH,
        description="GET /api/posts/{id}, anonymous: cache hit from the in-process L1 (default settings)",
        expect_keys=("id", "title", "views"),
        prepare=create_hot_post,
        paths=hot_post_paths,
        cache_family="post",
        state_traffic=POST_VIEW,
    ),
    HttpScenario(
        name="post-redis",
        path=POST_PATH,
        description="GET /api/posts/{id}, anonymous: cache hit from Redis, L1 off",
        expect_keys=("id", "title", "views"),
        prepare=create_hot_post,
        paths=hot_post_paths,
        env={"CACHE_L1_ENABLED": "0"},
        cache_family="post",
        state_traffic=POST_VIEW,
    ),
    HttpScenario(
        # The same Redis-hit path without per-command Redis metrics: their overhead per
        # request is post-redis's time over this one (core.instrumentation).
        name="post-redis-nometrics",
        path=POST_PATH,
        description="GET /api/posts/{id}, anonymous: cache hit from Redis, L1 off, Redis command metrics off",
        expect_keys=("id", "title", "views"),
        prepare=create_hot_post,
        paths=hot_post_paths,
        env={"CACHE_L1_ENABLED": "0", "REDIS_METRICS_ENABLED": "0"},
        baseline="post-redis",
        cache_family="post",
        state_traffic=POST_VIEW,
    ),
    HttpScenario(
        name="post-miss",
        path=POST_PATH,
        description="GET /api/posts/{id}, anonymous: cache miss on every request (each asks for another post, "
        "cache DB flushed before each load), default settings",
        expect_keys=("id", "title", "views"),
        prepare=create_cold_posts,
        paths=cold_post_paths,
        before_load=flush_cache,
        cache_family="post",
        expect_miss=True,
        state_traffic=POST_VIEW,
    ),
    HttpScenario(
        name="post-nocache",
        path=POST_PATH,
        description="GET /api/posts/{id}, anonymous: cache-aside off, the database on every request",
        expect_keys=("id", "title", "views"),
        prepare=create_hot_post,
        paths=hot_post_paths,
        env={"CACHE_ENABLED": "0"},
        cache_family="post",
        state_traffic=POST_VIEW,
    ),
    HttpScenario(
        name="feed",
        path=FEED_PATH,
        description=f"GET /api/feed?count={FEED_COUNT}: the home timeline from Redis (one MULTI), "
        f"{FEED_COUNT} posts from SQLite, session",
        needs_session=True,
        expect_keys=("items", "next"),
        check=full_feed_page,
        prepare=create_feed,
        group="feeds",
    ),
    HttpScenario(
        name="api-floor",
        path=API_FLOOR_PATH,
        description="the DRF floor under /api/, where the rate limiter applies: limits off",
        expect_keys=("ok",),
        group="protect",
    ),
    HttpScenario(
        name="api-floor-limited",
        path=API_FLOOR_PATH,
        description="the same with the rate limiter on: anonymous, so counted per address",
        expect_keys=("ok",),
        env=RATE_LIMITED,
        expect_headers=RATE_LIMIT_HEADERS,
        counterpart="api-floor",
        group="protect",
    ),
    HttpScenario(
        name="post-l1-limited",
        path=POST_PATH,
        description="GET /api/posts/{id} from the L1, anonymous, with the rate limiter on",
        expect_keys=("id", "title", "views"),
        prepare=create_hot_post,
        paths=hot_post_paths,
        env=RATE_LIMITED,
        cache_family="post",
        expect_headers=RATE_LIMIT_HEADERS,
        counterpart="post-l1",
        group="protect",
        # Within the noise of a loaded machine next to post-l1: bench/limiter.py measures the
        # limiter alone, api-floor-limited on the cheapest request.
        optional=True,
    ),
    HttpScenario(
        name="api-me-limited",
        path="/api/me",
        description="GET /api/me with the rate limiter on: counted per user, so the session is read "
        "before the limiter (it would be read anyway)",
        needs_session=True,
        expect_keys=("userId", "email"),
        env=RATE_LIMITED,
        expect_headers=RATE_LIMIT_HEADERS,
        counterpart="api-me",
        group="protect",
        optional=True,
    ),
    HttpScenario(
        name="api-me-bearer",
        path="/api/me",
        description="GET /api/me with an access token (accounts.authentication), limits off: the token's "
        "denylist and epoch check is a script of its own",
        bearer=True,
        expect_keys=("userId", "email"),
        prepare=create_access_token,
        group="protect",
    ),
    HttpScenario(
        name="api-me-bearer-limited",
        path="/api/me",
        description="the same with the rate limiter on: the denylist check rides in the limiter's script",
        bearer=True,
        expect_keys=("userId", "email"),
        prepare=create_access_token,
        env=RATE_LIMITED,
        expect_headers=RATE_LIMIT_HEADERS,
        counterpart="api-me-bearer",
        group="protect",
    ),
]


# The background jobs benchmark (bench/jobqueue.py): jobs of each kind per worker.
JOBS_COUNT = 200
JOBS_COUNT_QUICK = 50

# The fan-out benchmark (bench/fanout.py): followers of the posting author, and posts per size.
FANOUT_SIZES = (1, 100, 10_000)
FANOUT_SIZES_QUICK = (1, 100, 1_000)
FANOUT_ROUNDS_SMALL, FANOUT_ROUNDS_LARGE = 20, 3
FANOUT_ROUNDS_SMALL_QUICK, FANOUT_ROUNDS_LARGE_QUICK = 5, 1

# Live notifications (bench/sse.py): open streams, notifications in all, sent at this rate.
SSE_STREAMS, SSE_NOTIFICATIONS = 100, 500
SSE_STREAMS_QUICK, SSE_NOTIFICATIONS_QUICK = 20, 100
SSE_RATE = 250.0  # a second

# Locks (bench/locks.py): seconds per variant; 8 threads contend.
LOCK_SECONDS, LOCK_SECONDS_QUICK = 1.5, 0.5
LOCK_THREADS = 8

# The rate limiter alone, in process (bench/limiter.py): seconds per variant.
LIMITER_SECONDS, LIMITER_SECONDS_QUICK = 1.0, 0.3

# The stampede benchmark (bench/stampede.py, no HTTP): readers of one post whose cache
# entry has just expired, all let go at once, with and without the single flight.
STAMPEDE_READERS = 200
STAMPEDE_ROUNDS = 5
STAMPEDE_ROUNDS_QUICK = 1


@dataclass(frozen=True)
class RedisFloorOp:
    """One redis-py loop against the private server: the cost of a round trip from Python."""

    name: str
    command: str  # "GET" or "SET"
    # Commands sent per round trip; 1 means no pipeline.
    pipeline: int = 1


REDIS_FLOOR_OPS: list[RedisFloorOp] = [
    RedisFloorOp("GET", "GET"),
    RedisFloorOp("GET, pipeline of 16", "GET", pipeline=16),
    RedisFloorOp("SET", "SET"),
    RedisFloorOp("SET, pipeline of 16", "SET", pipeline=16),
]
