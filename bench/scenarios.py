"""What the benchmarks measure. Adding a benchmark means adding an entry here.

An HTTP scenario is one path (or a rotation of paths), a GET or a POST with a JSON
body, loaded by the load generator and compared with a baseline scenario measured in
the same run. Figures in `design_ratio` come from docs/design.md, "Reference figures", and
are printed beside the measured ratio so a regression (or a stale table) shows at a
glance. `targets` are the figures a path must reach; the summary says which it does.

A scenario that needs data (a post to read, a primed cache) sets `prepare`: it runs
once, before the warm-up, with the live stack (see bench.harness.BenchContext), and
`paths` then names what to request. A scenario that needs other settings sets `env`:
the harness serves it from a gunicorn of its own started with those variables, so
the floors keep the default settings and no server restarts between runs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.harness import BenchContext

# The baseline every API path is divided by: DRF with no authentication and no permissions.
DRF_FLOOR = "drf-floor"
# The reference article's read of a post (bench/views.py), without and with its view counter:
# every Kestrel read of a post is also divided by these.
NAIVE = "naive"
NAIVE_COUNTED = "naive-counted"

# Groups of benchmarks, each skippable (`--skip GROUP`) or run alone (`--group GROUP`).
# "http": the floors, /api/me and GET /api/posts/{id}; "stampede": bench/stampede.py;
# "jobs": bench/jobqueue.py; "feeds": GET /api/feed, bench/fanout.py and the SSE
# latency (bench/sse.py); "protect": the rate limiter's cost (HTTP and bench/limiter.py)
# and bench/locks.py.
# "writes": POST /api/posts and likes.
GROUPS = ("http", "writes", "stampede", "jobs", "feeds", "protect")


@dataclass(frozen=True)
class StateTraffic:
    """The Redis commands a path sends to the state role.

    Both roles share the benchmark's one Redis server (state DB 0, cache DB 1) and
    INFO counts commands per server, so the state role's share is told apart by name.
    """

    commands: tuple[str, ...]
    # The command sent once per state-role round trip: its count is those round trips.
    per_round_trip: str


# Round trips and commands a request may exceed a traffic target by: what is not per
# request but lands in a count now and then (the L1 going back to Redis every 2 s per
# worker, a post's views flushed to its row every 1000), amortized over the count.
TRAFFIC_SLACK = 0.05


@dataclass(frozen=True)
class Target:
    """A figure a scenario must reach: the summary's `measure` compared with `bound`.

    Measures: "floor_ratio", "naive_ratio", "naive_counted_ratio" (req/s over that
    scenario's), "round_trips" and "commands" (Redis, per request, on the request's own
    path: see bench.__main__.request_path_traffic).
    """

    measure: str
    op: str  # ">=" or "<="
    bound: float

    @property
    def label(self) -> str:
        what = {
            "floor_ratio": "x the floor's req/s",
            "naive_ratio": f"x {NAIVE}'s req/s",
            "naive_counted_ratio": f"x {NAIVE_COUNTED}'s req/s",
            "round_trips": " Redis round trips/request",
            "commands": " Redis commands/request",
        }[self.measure]
        return f"{self.op} {self.bound:g}{what}"

    def met(self, value: float | None) -> bool | None:
        """None when the figure was not measured (its comparison scenario did not run)."""
        if value is None or math.isnan(value):
            return None
        slack = TRAFFIC_SLACK if self.measure in ("round_trips", "commands") else 0.0
        if self.op == ">=":
            return value >= self.bound
        if self.op == "<=":
            return value <= self.bound + slack
        raise ValueError(f"unknown comparison {self.op!r}")


@dataclass(frozen=True)
class HttpScenario:
    name: str
    # As printed; what is requested comes from `paths` when it is set.
    path: str
    description: str
    # Send the logged-in user's session cookie.
    needs_session: bool = False
    # Send `Authorization: Bearer <token>` instead, the token being this fixture (made by `prepare`).
    bearer: str | None = None
    # Anything but a GET sends `body` as JSON, and every load of it expects `expect_status`.
    method: str = "GET"
    body: bytes | None = None
    expect_status: int = 200
    # Name of the scenario whose req/s this one is divided by; None for the floor itself.
    baseline: str | None = DRF_FLOOR
    # The same ratio in docs/design.md's reference figures, when the table has this path.
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
    # Left out of the default run (to keep it within about 8 minutes); runs when named by --only.
    optional: bool = False
    # A read of a post: its req/s is also divided by the naive reads' (which then run too).
    naive_compare: bool = False
    # What the summary checks (Target).
    targets: tuple[Target, ...] = ()
    # Every path may be requested once only (a like): a warning if the rotation wraps around.
    single_use: bool = False

    @property
    def env_label(self) -> str:
        return " ".join(f"{name}={value}" for name, value in sorted(self.env.items())) or "default"


# --- GET /api/posts/{id} ----------------------------------------------------------------

POST_PATH = "/api/posts/{id}"
# The naive reads of the same post (bench/views.py).
NAIVE_PATH = "/bench/naive/posts/{id}"
NAIVE_COUNTED_PATH = "/bench/naive-counted/posts/{id}"
# What recording a view sends to the state role (posts.counters): nothing in the request;
# each process sends its buffered views in the background, one script call a send
# (bench.harness.VIEW_SEND), which runs INCRBY, PFADD and SADD inside.
POST_VIEW = StateTraffic(commands=("evalsha(views)",), per_round_trip="evalsha(views)")
# The article's counter: one INCR per read.
NAIVE_VIEW = StateTraffic(commands=("incrby",), per_round_trip="incrby")
POST_KEYS = ("id", "title", "views")
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


def naive_paths(ctx: BenchContext) -> list[str]:
    return [NAIVE_PATH.format(id=ctx.fixtures["hot_post"])]


def naive_counted_paths(ctx: BenchContext) -> list[str]:
    return [NAIVE_COUNTED_PATH.format(id=ctx.fixtures["hot_post"])]


def create_cold_posts(ctx: BenchContext) -> None:
    from bench.harness import PathRotation  # the harness imports this module

    count = max(COLD_POSTS_MIN, math.ceil(ctx.seconds * PathRotation.MARGIN * COLD_POSTS_PER_SECOND))
    ctx.fixtures["cold_posts"] = ctx.shell_json(f"from bench.fixtures import cold_posts; cold_posts({count})")["ids"]


def cold_post_paths(ctx: BenchContext) -> list[str]:
    return [POST_PATH.format(id=post_id) for post_id in ctx.fixtures["cold_posts"]]


def flush_cache(ctx: BenchContext) -> None:
    """Empty the cache role (DB 1 only), so every post the next load asks for is a miss."""
    ctx.flush_cache()


def create_hot_post_and_token(ctx: BenchContext) -> None:
    create_hot_post(ctx)
    create_access_token(ctx)


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
# one address, and what is measured is the check, not the 429. For the in-process
# limiter benchmark (bench/limiter.py), which runs the project's own settings.
RATE_LIMITED = {"RATE_LIMIT_ENABLED": "1", "RATE_LIMIT_API_PER_MINUTE": "1000000000"}
# The same over HTTP, as production runs (the limiter is on by default): every policy
# (API, writes, log-in...) keeps its algorithm and scope with a limit no load here can
# reach (bench/settings.py), so the limiter decides on every request and never refuses.
LIMITER_ON = {"RATE_LIMIT_ENABLED": "1", "BENCH_UNBOUNDED_LIMITS": "1"}
# What an allowed request gets back from core.ratelimit: proof the limiter ran.
RATE_LIMIT_HEADERS = ("RateLimit", "RateLimit-Policy")
# Seconds the benchmark's access tokens live: longer than any run (the default is 5 minutes).
ACCESS_TOKEN_LIFETIME = 3 * 60 * 60
TOKEN_ENV = {"JWT_ACCESS_LIFETIME": str(ACCESS_TOKEN_LIFETIME)}


def create_access_token(ctx: BenchContext) -> None:
    """An access token for the logged-in user, issued by accounts.tokens.token_pair_issue (what POST
    /api/token calls) with a lifetime longer than the benchmark; every server shares the signing key."""
    if "access_token" not in ctx.fixtures:
        ctx.fixtures["access_token"] = ctx.shell_json(
            "from bench.fixtures import access_token; access_token()", env=TOKEN_ENV
        )["access"]


# --- Writes (group "writes") -------------------------------------------------------------

# POST /api/posts by a person with this many followers, each with a home timeline: the
# most the fan-out serves inline, in the request (feeds.services.FANOUT_INLINE_MAX_FOLLOWERS).
POSTER_FOLLOWERS = 100
NEW_POST_BODY = json.dumps(
    {
        "title": "Written under load",
        "content": "A post long enough to look like one: a few sentences about Redis round trips, "
        "connection pools and why every write costs what its side effects cost.",
    }
).encode()
LIKE_PATH = "/api/posts/{id}/like"
# Likes: each request likes a post the benchmark user has never liked (a second like
# would be a 409, not the path to measure), so one post per request of every load,
# sized for this many likes a second (well above any seen here) with the rotation's margin.
LIKES_PER_SECOND = 1_500


def create_poster(ctx: BenchContext) -> None:
    """A person with POSTER_FOLLOWERS followers (timelines built) and an access token of their own."""
    if "poster_token" not in ctx.fixtures:
        ctx.fixtures["poster_token"] = ctx.shell_json(
            f"from bench.fixtures import poster; poster(followers={POSTER_FOLLOWERS})", env=TOKEN_ENV
        )["access"]


def create_like_posts(ctx: BenchContext) -> None:
    """Posts by another person, one for every like the loads can send, and the liker's token."""
    from bench.harness import PathRotation  # the harness imports this module

    create_access_token(ctx)
    count = math.ceil(ctx.load_seconds * LIKES_PER_SECOND * PathRotation.MARGIN) + ctx.count_requests + 1_000
    ctx.fixtures["like_posts"] = ctx.shell_json(f"from bench.fixtures import like_posts; like_posts({count})")["ids"]


def like_paths(ctx: BenchContext) -> list[str]:
    return [LIKE_PATH.format(id=post_id) for post_id in ctx.fixtures["like_posts"]]


# Targets (the summary prints each and whether it is met).
L1_TARGETS = (
    Target("floor_ratio", ">=", 0.95),
    Target("commands", "<=", 0),
    Target("naive_counted_ratio", ">=", 1.3),
    Target("naive_ratio", ">=", 1.0),
)
L1_LIMITED_TARGETS = (Target("floor_ratio", ">=", 0.85), Target("commands", "<=", 1))
AUTHENTICATED_TARGETS = (Target("floor_ratio", ">=", 0.8), Target("round_trips", "<=", 1))


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
        optional=True,
    ),
    HttpScenario(
        name=NAIVE,
        path=NAIVE_PATH,
        description="the article's read of a post: DRF APIView (no auth, no permissions), django-redis "
        "cache.get, on a miss the row as a plain dict and cache.set(key, post, 300)",
        design_ratio=0.72,
        expect_keys=("id", "title"),
        prepare=create_hot_post,
        paths=naive_paths,
    ),
    HttpScenario(
        name=NAIVE_COUNTED,
        path=NAIVE_COUNTED_PATH,
        description="the same plus the article's view counter: INCR per read on the raw client (get_redis_connection)",
        expect_keys=POST_KEYS,
        prepare=create_hot_post,
        paths=naive_counted_paths,
        state_traffic=NAIVE_VIEW,
    ),
    HttpScenario(
        name="api-me",
        path="/api/me",
        description="GET /api/me: session from Redis, user row from SQLite",
        needs_session=True,
        expect_keys=("userId", "email"),
        optional=True,
    ),
    HttpScenario(
        name="post-l1",
        path=POST_PATH,
        description="GET /api/posts/{id}, anonymous, limiter off: cache hit from the in-process L1",
        expect_keys=POST_KEYS,
        prepare=create_hot_post,
        paths=hot_post_paths,
        cache_family="post",
        state_traffic=POST_VIEW,
        naive_compare=True,
        targets=L1_TARGETS,
    ),
    HttpScenario(
        name="post-l1-limited",
        path=POST_PATH,
        description="GET /api/posts/{id} from the L1, anonymous, with the rate limiter on (production's default)",
        expect_keys=POST_KEYS,
        prepare=create_hot_post,
        paths=hot_post_paths,
        env=LIMITER_ON,
        cache_family="post",
        state_traffic=POST_VIEW,
        expect_headers=RATE_LIMIT_HEADERS,
        counterpart="post-l1",
        naive_compare=True,
        targets=L1_LIMITED_TARGETS,
    ),
    HttpScenario(
        name="post-redis",
        path=POST_PATH,
        description="GET /api/posts/{id}, anonymous: cache hit from Redis, L1 off",
        expect_keys=POST_KEYS,
        prepare=create_hot_post,
        paths=hot_post_paths,
        env={"CACHE_L1_ENABLED": "0"},
        cache_family="post",
        state_traffic=POST_VIEW,
        naive_compare=True,
    ),
    HttpScenario(
        # The same Redis-hit path without per-command Redis metrics: their overhead per
        # request is post-redis's time over this one (core.instrumentation).
        name="post-redis-nometrics",
        path=POST_PATH,
        description="GET /api/posts/{id}, anonymous: cache hit from Redis, L1 off, Redis command metrics off",
        expect_keys=POST_KEYS,
        prepare=create_hot_post,
        paths=hot_post_paths,
        env={"CACHE_L1_ENABLED": "0", "REDIS_METRICS_ENABLED": "0"},
        baseline="post-redis",
        cache_family="post",
        state_traffic=POST_VIEW,
        optional=True,
    ),
    HttpScenario(
        name="post-session",
        path=POST_PATH,
        description="GET /api/posts/{id} logged in with a session cookie, limiter on: cached post",
        needs_session=True,
        expect_keys=POST_KEYS,
        prepare=create_hot_post,
        paths=hot_post_paths,
        env=LIMITER_ON,
        cache_family="post",
        state_traffic=POST_VIEW,
        expect_headers=RATE_LIMIT_HEADERS,
        naive_compare=True,
        targets=AUTHENTICATED_TARGETS,
    ),
    HttpScenario(
        name="post-bearer",
        path=POST_PATH,
        description="GET /api/posts/{id} with an access token, limiter on: cached post",
        bearer="access_token",
        expect_keys=POST_KEYS,
        prepare=create_hot_post_and_token,
        paths=hot_post_paths,
        env=LIMITER_ON,
        cache_family="post",
        state_traffic=POST_VIEW,
        expect_headers=RATE_LIMIT_HEADERS,
        naive_compare=True,
        targets=AUTHENTICATED_TARGETS,
    ),
    HttpScenario(
        name="post-miss",
        path=POST_PATH,
        description="GET /api/posts/{id}, anonymous: cache miss on every request (each asks for another post, "
        "cache DB flushed before each load), default settings",
        expect_keys=POST_KEYS,
        prepare=create_cold_posts,
        paths=cold_post_paths,
        before_load=flush_cache,
        cache_family="post",
        expect_miss=True,
        state_traffic=POST_VIEW,
        naive_compare=True,
    ),
    HttpScenario(
        name="post-nocache",
        path=POST_PATH,
        description="GET /api/posts/{id}, anonymous: cache-aside off, the database on every request",
        expect_keys=POST_KEYS,
        prepare=create_hot_post,
        paths=hot_post_paths,
        env={"CACHE_ENABLED": "0"},
        cache_family="post",
        state_traffic=POST_VIEW,
        naive_compare=True,
        optional=True,
    ),
    HttpScenario(
        name="feed",
        path=FEED_PATH,
        description=f"GET /api/feed?count={FEED_COUNT} with a session, limiter on: the home timeline from "
        f"Redis, {FEED_COUNT} posts",
        needs_session=True,
        expect_keys=("items", "next"),
        check=full_feed_page,
        prepare=create_feed,
        env=LIMITER_ON,
        expect_headers=RATE_LIMIT_HEADERS,
        group="feeds",
        targets=(Target("floor_ratio", ">=", 0.5), Target("round_trips", "<=", 2)),
    ),
    HttpScenario(
        name="create-post",
        path="/api/posts",
        description=f"POST /api/posts with an access token, limiter on: an author with {POSTER_FOLLOWERS} "
        "followers (write-through, fan-out to their timelines, notifications)",
        bearer="poster_token",
        method="POST",
        body=NEW_POST_BODY,
        expect_status=201,
        expect_keys=("id", "title"),
        prepare=create_poster,
        env=LIMITER_ON,
        expect_headers=RATE_LIMIT_HEADERS,
        group="writes",
        targets=(Target("round_trips", "<=", 3),),
    ),
    HttpScenario(
        name="like",
        path=LIKE_PATH,
        description="POST /api/posts/{id}/like with an access token, limiter on: each request likes another "
        "post, never liked before (activity, notification, counters)",
        bearer="access_token",
        method="POST",
        expect_status=201,
        expect_keys=("liked",),
        prepare=create_like_posts,
        paths=like_paths,
        env=LIMITER_ON,
        expect_headers=RATE_LIMIT_HEADERS,
        group="writes",
        single_use=True,
        targets=(Target("round_trips", "<=", 2),),
    ),
    HttpScenario(
        name="api-floor",
        path=API_FLOOR_PATH,
        description="the DRF floor under /api/, where the rate limiter applies: limits off",
        expect_keys=("ok",),
        group="protect",
        # post-l1-limited over post-l1 is the limiter's cost on a read the default run has anyway.
        optional=True,
    ),
    HttpScenario(
        name="api-floor-limited",
        path=API_FLOOR_PATH,
        description="the same with the rate limiter on: anonymous, so counted per address",
        expect_keys=("ok",),
        env=LIMITER_ON,
        expect_headers=RATE_LIMIT_HEADERS,
        counterpart="api-floor",
        group="protect",
        optional=True,
    ),
    HttpScenario(
        name="api-me-limited",
        path="/api/me",
        description="GET /api/me with the rate limiter on: counted per user, so the session is read "
        "before the limiter (it would be read anyway)",
        needs_session=True,
        expect_keys=("userId", "email"),
        env=LIMITER_ON,
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
        bearer="access_token",
        expect_keys=("userId", "email"),
        prepare=create_access_token,
        group="protect",
        optional=True,
    ),
    HttpScenario(
        name="api-me-bearer-limited",
        path="/api/me",
        description="the same with the rate limiter on: the denylist check rides in the limiter's script",
        bearer="access_token",
        expect_keys=("userId", "email"),
        prepare=create_access_token,
        env=LIMITER_ON,
        expect_headers=RATE_LIMIT_HEADERS,
        counterpart="api-me-bearer",
        group="protect",
        optional=True,
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
