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

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.harness import BenchContext

# The baseline every API path is divided by: DRF with no authentication and no permissions.
DRF_FLOOR = "drf-floor"


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


def _shell_json(ctx: BenchContext, code: str) -> dict:
    """Run Python in `manage.py shell` and read the JSON it prints last."""
    return json.loads(ctx.manage("shell", "-c", code).strip().splitlines()[-1])


def create_hot_post(ctx: BenchContext) -> None:
    """One post, created through posts.services.post_create; shared by the scenarios that read it."""
    if "hot_post" not in ctx.fixtures:
        ctx.fixtures["hot_post"] = _shell_json(ctx, "from bench.fixtures import hot_post; hot_post()")["id"]


def hot_post_paths(ctx: BenchContext) -> list[str]:
    return [POST_PATH.format(id=ctx.fixtures["hot_post"])]


def create_cold_posts(ctx: BenchContext) -> None:
    from bench.harness import PathRotation  # the harness imports this module

    count = max(COLD_POSTS_MIN, math.ceil(ctx.seconds * PathRotation.MARGIN * COLD_POSTS_PER_SECOND))
    ctx.fixtures["cold_posts"] = _shell_json(ctx, f"from bench.fixtures import cold_posts; cold_posts({count})")["ids"]


def cold_post_paths(ctx: BenchContext) -> list[str]:
    return [POST_PATH.format(id=post_id) for post_id in ctx.fixtures["cold_posts"]]


def flush_cache(ctx: BenchContext) -> None:
    """Empty the cache role (DB 1 only), so every post the next load asks for is a miss."""
    ctx.flush_cache()


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
]


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
