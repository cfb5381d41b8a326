"""What the benchmarks measure. Adding a benchmark means adding an entry here.

An HTTP scenario is one GET path loaded by the load generator and compared with a
baseline scenario measured in the same run. Figures in `design_ratio` come from
DESIGN.md, "Performance facts", and are printed beside the measured ratio so a
regression (or a stale table) shows at a glance.

A scenario that needs data (a post to read, a primed cache) sets `prepare`: it runs
once, before the warm-up, with the live stack (see bench.harness.BenchContext).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.harness import BenchContext

# The baseline every API path is divided by: DRF with no authentication and no permissions.
DRF_FLOOR = "drf-floor"


@dataclass(frozen=True)
class HttpScenario:
    name: str
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
]


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
