"""`python -m bench load` (part of `make reliability`): a bounded mixed load, judged against the DRF floor.

    python -m bench load                  # ~40 s of load: floor, warm-up, floor, 20 s of the mix, floor
    python -m bench load --seconds 10     # a shorter mix
    python -m bench load --rate-limit off
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/kestrel_bench python -m bench load   # SQLite, then PostgreSQL

Forty people, each with their own bearer token, use the site at once through wrk
(`-t2 -c16`, a Lua script in this module): 80 % reads (home feed, post, profile,
leaderboard, notifications, standing pages) and 20 % writes (new post, like,
follow or unfollow, mark notifications read). The server is gunicorn as production
runs it (`-c config/gunicorn.py`: gthread, 64 threads, access log on) on a private
Redis and SQLite in WAL mode, everything on 127.0.0.1 and stopped at the end. When
DATABASE_URL names a PostgreSQL server, the same plan runs again on PostgreSQL, in a
database the run creates beside the one named (never that one) and drops at the end,
and the two mixes are printed side by side.

The figures are ratios to the DRF floor (bench/views.py FloorApi, the harness's
`drf-floor`) measured on the same server in the same run, three times around the mix,
because the machines are shared and noisy, and checked against targets (req/s, p99,
errors). Status codes are counted twice: by wrk as answered, and per operation from
gunicorn's access log. Redis commands and round trips per request come from sequential
requests of each operation (bench.harness.count_redis_traffic).

The rate limiter stays on, as in production, with the per-user API limit raised out of
reach (100 a minute would refuse most of a load run): its Lua script, which also
checks each bearer token, is in the figures, and a 429 is reported as a finding.
`--rate-limit off` measures without it.

Exits 1 on any 5xx or connection error, so `make reliability` fails on them.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import json
import math
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import redis

from bench.harness import (
    BenchError,
    LoadResult,
    WrkLoad,
    child_env,
    count_redis_traffic,
    median,
    parse_wrk,
    wait_until_quiet,
)
from bench.scenarios import DRF_FLOOR, HTTP_SCENARIOS
from config.pdeathsig import die_with_parent
from devstack.processes import HOST, PROJECT_ROOT, StackError, run_manage
from devstack.redis_server import RedisServer
from devstack.report import format_table
from devstack.web import GUNICORN_CONFIG, Gunicorn

DEFAULT_OUTPUT = PROJECT_ROOT / "var" / "bench" / "load.json"
FLOOR = next(scenario for scenario in HTTP_SCENARIOS if scenario.name == DRF_FLOOR)

# The population: people, their posts, whom each follows at the start, standing pages.
USERS = 40
POSTS_EACH = 10
FOLLOWS_EACH = 5
PAGES = 5
# Longer than any run, so no token expires under the load.
TOKEN_LIFETIME = 3 * 60 * 60
# On, but out of reach: the load is thousands of requests a minute per person.
RATE_LIMITED = {
    "RATE_LIMIT_ENABLED": "1",
    "RATE_LIMIT_API_PER_MINUTE": "100000000",
    "RATE_LIMIT_WRITES_PER_MINUTE": "1000000",
    "RATE_LIMIT_JOBS_PER_HOUR": "1000000",
}
UNLIMITED = {"RATE_LIMIT_ENABLED": "0"}

# The databases a run can use: SQLite (a file in the run's folder), and PostgreSQL, on
# the server DATABASE_URL names, in a database the run creates and drops.
SQLITE, POSTGRESQL = "sqlite", "postgresql"
POSTGRES_SCHEMES = ("postgres", "postgresql", "pgsql")
DATABASE_LABELS = {
    SQLITE: "SQLite (WAL, IMMEDIATE transactions)",
    POSTGRESQL: "PostgreSQL (persistent connections)",
}

# What the mix must reach against the floor measured beside it: (figure, comparison, bound, label).
MIX_TARGETS = (
    ("ratio_rps", ">=", 0.4, "req/s >= 0.4x the floor's"),
    ("ratio_p99", "<=", 3.0, "p99 <= 3x the floor's"),
    ("errors", "<=", 0, "no errors (connection errors, timeouts, answers outside 2xx/3xx)"),
)

# The mix, in percent. Reads first; every write is a real change (see Planner).
MIX: dict[str, int] = {
    "feed": 22,
    "post": 20,
    "profile": 10,
    "notifications": 10,
    "leaderboard": 8,
    "page": 10,
    "create-post": 5,
    "like": 6,
    "follow": 5,
    "mark-read": 4,
}
WRITES = {"create-post", "like", "follow", "mark-read"}
# Plans are this much longer than the load could use at the floor's pace, so no entry
# (a like, a follow) is sent twice: a second like would be a 409.
PLAN_MARGIN = 1.5
# Seconds of the floor before it is measured.
FLOOR_WARMUP = 1
# Sequential requests per operation while counting Redis commands.
TRAFFIC_REQUESTS = 20
# Loads shorter than this are too short for wrk's whole-second durations.
MIN_SECONDS = 1


def log(message: str) -> None:
    print(f"[bench load {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- The plan: every request of the mix, in order -------------------------------------------


@dataclass(frozen=True)
class Request:
    kind: str
    method: str
    path: str
    user: int  # index into the tokens, 0-based
    body: str | None = None


class Planner:
    """Requests of the mix, each one valid when it is sent.

    Likes take (person, post) pairs never liked before, and never their own post;
    follows walk every (follower, followee) pair in a fixed order, following or
    unfollowing as the pair's state says, so two visits of one pair are thousands of
    requests apart and never race each other on two connections.
    """

    def __init__(self, data: dict, *, seed: int) -> None:
        self.rng = random.Random(seed)  # noqa: S311 - a reproducible plan, not a secret
        self.user_ids: list[int] = [user["id"] for user in data["users"]]
        self.posts_by_author = {int(author): ids for author, ids in data["posts"].items()}
        self.post_ids = [post for ids in self.posts_by_author.values() for post in ids]
        self.page_ids: list[int] = data["pages"]
        self.following = {tuple(pair) for pair in data["follows"]}
        people = range(len(self.user_ids))
        self.like_pairs = [
            (person, post)
            for person in people
            for author, posts in self.posts_by_author.items()
            if author != self.user_ids[person]
            for post in posts
        ]
        self.rng.shuffle(self.like_pairs)
        self.follow_pairs = [(a, b) for a in people for b in people if a != b]
        self.rng.shuffle(self.follow_pairs)
        self.likes_sent = 0
        self.follows_sent = 0
        self.created = 0

    def plan(self, count: int, mix: dict[str, int]) -> list[Request]:
        kinds = self.rng.choices(list(mix), weights=list(mix.values()), k=count)
        return [self.one(kind) for kind in kinds]

    def one(self, kind: str) -> Request:
        person = self.rng.randrange(len(self.user_ids))
        match kind:
            case "feed":
                return Request(kind, "GET", "/api/feed?count=20", person)
            case "post":
                return Request(kind, "GET", f"/api/posts/{self.rng.choice(self.post_ids)}", person)
            case "profile":
                return Request(kind, "GET", f"/api/users/{self.rng.choice(self.user_ids)}", person)
            case "notifications":
                return Request(kind, "GET", "/api/notifications?count=20", person)
            case "leaderboard":
                return Request(kind, "GET", "/api/leaderboard?count=10", person)
            case "page":
                return Request(kind, "GET", f"/api/pages/{self.rng.choice(self.page_ids)}", person)
            case "create-post":
                self.created += 1
                body = json.dumps({"title": f"Under load #{self.created}", "content": "Written during the load run."})
                return Request(kind, "POST", "/api/posts", person, body)
            case "like":
                if self.likes_sent >= len(self.like_pairs):
                    raise BenchError(f"the plan needs more than {len(self.like_pairs)} likes: seed more posts")
                liker, post = self.like_pairs[self.likes_sent]
                self.likes_sent += 1
                return Request(kind, "POST", f"/api/posts/{post}/like", liker)
            case "follow":
                follower, followee = self.follow_pairs[self.follows_sent % len(self.follow_pairs)]
                self.follows_sent += 1
                pair = (self.user_ids[follower], self.user_ids[followee])
                method = "DELETE" if pair in self.following else "POST"
                self.following ^= {pair}
                return Request(kind, method, f"/api/users/{pair[1]}/follow", follower)
            case "mark-read":
                return Request(kind, "POST", "/api/notifications/read", person, "{}")
        raise ValueError(f"unknown kind {kind!r}")


# --- wrk with the mix --------------------------------------------------------------------------

# One Lua state per wrk thread: thread i sends entries i, i+n, i+2n... of the plan
# (n threads) in order, each as its person (their bearer token), and counts the status
# codes it gets; `done` (the main state) prints every thread's counts for the harness.
# A custom `request` formats every request: a cost on wrk's side only.
_WRK_MIX_LUA = """\
-- args: file of tokens (one a line), file of the plan (method TAB path TAB person TAB body), threads
local threads = {}
local created = 0

function setup(thread)
  thread:set("thread_index", created)
  created = created + 1
  table.insert(threads, thread)
end

function init(args)
  tokens = {}
  for line in io.lines(args[1]) do
    tokens[#tokens + 1] = "Bearer " .. line
  end
  local step = tonumber(args[3])
  plan = {}
  local n = 0
  for line in io.lines(args[2]) do
    if n % step == thread_index then
      local method, path, person, body = line:match("^(%u+)\\t([^\\t]+)\\t(%d+)\\t(.*)$")
      plan[#plan + 1] = {method, path, tonumber(person) + 1, body ~= "" and body or nil}
    end
    n = n + 1
  end
  nxt = 1
  wrapped = 0
  statuses = {}
end

function request()
  local entry = plan[nxt]
  nxt = nxt + 1
  if nxt > #plan then
    nxt = 1
    wrapped = wrapped + 1
  end
  local headers = {["Authorization"] = tokens[entry[3]]}
  if entry[4] then
    headers["Content-Type"] = "application/json"
  end
  return wrk.format(entry[1], entry[2], headers, entry[4])
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      io.write(string.format("kestrel-status %d %d\\n", status, count))
    end
    io.write(string.format("kestrel-wrapped %d\\n", thread:get("wrapped")))
  end
end
"""


@dataclass
class MixResult:
    load: LoadResult
    statuses: Counter[int]
    # Times a wrk thread ran past the end of its share of the plan and started again.
    wrapped: int


def run_mix(
    *, port: int, tokens: list[str], plan: list[Request], seconds: int, threads: int, connections: int
) -> MixResult:
    wrk = wrk_path()
    with tempfile.TemporaryDirectory(prefix="kestrel-load-") as folder:
        script, token_file, plan_file = Path(folder) / "mix.lua", Path(folder) / "tokens", Path(folder) / "plan"
        script.write_text(_WRK_MIX_LUA)
        token_file.write_text("\n".join(tokens) + "\n")
        plan_file.write_text("".join(f"{r.method}\t{r.path}\t{r.user}\t{r.body or ''}\n" for r in plan))
        args = [
            wrk,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            # A write waits its turn for SQLite's one writer; wrk's default 2 s would call that an error.
            "--timeout",
            "10s",
            "--latency",
            "-s",
            str(script),
            f"http://{HOST}:{port}/",
            "--",
            str(token_file),
            str(plan_file),
            str(threads),
        ]
        result = subprocess.run(
            args, capture_output=True, text=True, timeout=seconds + 60, check=False, preexec_fn=die_with_parent
        )
    if result.returncode != 0:
        raise BenchError(f"wrk exited with {result.returncode}: {result.stderr or result.stdout}")
    statuses: Counter[int] = Counter()
    for status, count in re.findall(r"^kestrel-status (\d+) (\d+)$", result.stdout, re.MULTILINE):
        statuses[int(status)] += int(count)
    wrapped = sum(int(n) for n in re.findall(r"^kestrel-wrapped (\d+)$", result.stdout, re.MULTILINE))
    return MixResult(load=parse_wrk(result.stdout), statuses=statuses, wrapped=wrapped)


# --- What the server saw: gunicorn's access log ------------------------------------------------

_ACCESS = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d{3}) ')
_ROUTES = [
    ("create-post", "POST", re.compile(r"/api/posts\Z")),
    ("like", "POST", re.compile(r"/api/posts/\d+/like\Z")),
    ("post", "GET", re.compile(r"/api/posts/\d+\Z")),
    ("follow", "POST|DELETE", re.compile(r"/api/users/\d+/follow\Z")),
    ("profile", "GET", re.compile(r"/api/users/\d+\Z")),
    ("feed", "GET", re.compile(r"/api/feed\Z")),
    ("mark-read", "POST", re.compile(r"/api/notifications/read\Z")),
    ("notifications", "GET", re.compile(r"/api/notifications\Z")),
    ("leaderboard", "GET", re.compile(r"/api/leaderboard\Z")),
    ("page", "GET", re.compile(r"/api/pages/\d+\Z")),
]


def route(method: str, path: str) -> str:
    bare = path.split("?", 1)[0]
    for kind, methods, pattern in _ROUTES:
        if re.fullmatch(methods, method) and pattern.match(bare):
            return kind
    return f"other: {method} {bare}"


def access_log_counts(log_path: Path, offset: int) -> dict[str, Counter[int]]:
    """Status codes per operation, from the access log lines written after `offset`."""
    counts: dict[str, Counter[int]] = {}
    with log_path.open("rb") as log_file:
        log_file.seek(offset)
        for line in log_file.read().decode(errors="replace").splitlines():
            match = _ACCESS.search(line)
            if match:
                kind = route(match["method"], match["path"])
                counts.setdefault(kind, Counter())[int(match["status"])] += 1
    return counts


# --- Redis commands and round trips per operation ---------------------------------------------


def new_follows(port: int, data: dict, count: int) -> list[Request]:
    """`count` follows, each by another person, of someone they do not follow yet.

    The plan toggled every pair it holds, but the load stopped somewhere in it, so only
    the server knows who follows whom now: asked through GET /api/users/{id}/following.
    """
    user_ids = [user["id"] for user in data["users"]]
    if count > len(user_ids):
        raise BenchError(f"{count} follows need as many people; there are {len(user_ids)}")
    requests = []
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        for follower, follower_id in enumerate(user_ids[:count]):
            conn.request("GET", f"/api/users/{follower_id}/following?count=100")
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                raise BenchError(f"GET /api/users/{follower_id}/following answered {response.status}: {body[:300]!r}")
            followed = {entry["id"] for entry in json.loads(body)["users"]} | {follower_id}
            followee = next((uid for uid in user_ids if uid not in followed), None)
            if followee is None:
                raise BenchError(f"person {follower_id} already follows everyone")
            requests.append(Request("follow", "POST", f"/api/users/{followee}/follow", follower))
    finally:
        conn.close()
    return requests


def redis_per_request(client: redis.Redis, port: int, tokens: list[str], requests: list[Request]) -> dict:
    """Commands sent and round trips per request, sent one by one (bench.harness.count_redis_traffic)."""
    statuses: Counter[int] = Counter()

    def send() -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=30)
        try:
            for request in requests:
                headers = {"Authorization": f"Bearer {tokens[request.user]}"}
                if request.body is not None:
                    headers["Content-Type"] = "application/json"
                conn.request(request.method, request.path, body=request.body, headers=headers)
                response = conn.getresponse()
                response.read()
                statuses[response.status] += 1
        finally:
            conn.close()

    traffic = count_redis_traffic(client, len(requests), send)
    return {
        "requests": traffic.requests,
        "commands": traffic.commands,
        "round_trips": traffic.reads,
        "script_commands": traffic.script_commands,
        "by_command": traffic.by_command,
        "statuses": dict(statuses),
    }


# --- The stack ---------------------------------------------------------------------------------


@dataclass
class Stack:
    env: dict[str, str]
    redis_server: RedisServer
    web: Gunicorn
    data: dict
    var_dir: Path
    settings: str
    database: str

    @property
    def tokens(self) -> list[str]:
        return [user["token"] for user in self.data["users"]]

    def redis(self) -> redis.Redis:
        return redis.Redis(host=self.redis_server.host, port=self.redis_server.port)


def postgres_maintenance_url(server_url: str) -> str:
    """DATABASE_URL with its database swapped for `postgres`, where databases are created and dropped."""
    parts = urllib.parse.urlsplit(server_url)
    if parts.scheme not in POSTGRES_SCHEMES:
        raise BenchError(
            f"DATABASE_URL must be a PostgreSQL URL ({', '.join(POSTGRES_SCHEMES)}), not {parts.scheme}://"
        )
    return urllib.parse.urlunsplit(parts._replace(path="/postgres"))


def private_database_url(server_url: str, name: str) -> str:
    """DATABASE_URL naming database `name` on the same server, with the same user and options."""
    return urllib.parse.urlunsplit(urllib.parse.urlsplit(server_url)._replace(path=f"/{name}"))


@contextlib.contextmanager
def private_postgres_database(server_url: str) -> Iterator[str]:
    """A database of the run's own on the PostgreSQL server DATABASE_URL names: created empty, dropped after.

    Named after DATABASE_URL's database plus a random suffix, as pytest-django names its
    test_ database after the real one: the database in the URL is never touched, and two
    runs on one server never meet. Yields its URL.
    """
    import psycopg  # only runs on PostgreSQL need it
    from psycopg import sql

    maintenance = postgres_maintenance_url(server_url)
    base = urllib.parse.urlsplit(server_url).path.lstrip("/") or "kestrel"
    name = f"{base}_load_{secrets.token_hex(4)}"
    try:
        with psycopg.connect(maintenance, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.Error as exc:
        raise BenchError(f"cannot create database {name} on the PostgreSQL server of DATABASE_URL: {exc}") from None
    try:
        yield private_database_url(server_url, name)
    finally:
        # After gunicorn has stopped (the stack's callbacks run in reverse), so no session
        # is left; FORCE ends any that is (PostgreSQL 13+).
        with psycopg.connect(maintenance, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextlib.contextmanager
def load_stack(args: argparse.Namespace, database: str) -> Iterator[Stack]:
    """Redis, the database (SQLite in WAL mode, or a private PostgreSQL database) with the population,
    gunicorn with production's config: all private, all stopped (and dropped) after."""
    with contextlib.ExitStack() as stack:
        var_dir = Path(tempfile.mkdtemp(prefix="kestrel-load-"))
        stack.callback(shutil.rmtree, var_dir, ignore_errors=True)
        server = stack.enter_context(RedisServer(host=HOST, extra_config={"maxmemory-policy": "noeviction"}))
        log(f"redis: {server.binary} on {server.url} (pid {server.process.pid})")
        limits = RATE_LIMITED if args.rate_limit == "on" else UNLIMITED
        # Without PROMETHEUS_MULTIPROC_DIR (child_env): config/gunicorn.py keeps
        # prometheus-client's files in a folder of its own.
        env = {**child_env(var_dir=var_dir, redis_url=f"{server.url}/0"), **limits}
        if database == POSTGRESQL:
            url = stack.enter_context(private_postgres_database(args.database_url))
            env["DATABASE_URL"] = url
            where = f"PostgreSQL, database {urllib.parse.urlsplit(url).path.lstrip('/')}"
        else:
            where = f"SQLite in {var_dir}"
        log(f"database: {where}; migrating and seeding {args.users} people")
        run_manage(env, "migrate", "--noinput")
        output = run_manage(
            {**env, "JWT_ACCESS_LIFETIME": str(TOKEN_LIFETIME)},
            "shell",
            "-c",
            "from bench.load_data import seed; "
            f"seed(users={args.users}, posts={POSTS_EACH}, follows={FOLLOWS_EACH}, pages={PAGES})",
        )
        data = json.loads(output.strip().splitlines()[-1])
        web = Gunicorn(
            env=env,
            log_path=var_dir / "gunicorn.log",
            worker_class="gthread",
            workers=args.workers,
            threads=args.threads,
            config=GUNICORN_CONFIG,
        )
        stack.callback(web.stop)
        web.start()
        log(f"web: {web.description} on http://{HOST}:{web.port} (pid {web.pid})")
        settings = " ".join(f"{name}={value}" for name, value in sorted(limits.items()))
        yield Stack(
            env=env, redis_server=server, web=web, data=data, var_dir=var_dir, settings=settings, database=database
        )


# --- The run -----------------------------------------------------------------------------------


@dataclass
class Figures:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    runs: list[dict] = field(default_factory=list)


def measure_floor(port: int, wrk: WrkLoad, seconds: int) -> LoadResult:
    result = wrk.run(port=port, paths=[FLOOR.path], headers={}, seconds=seconds)
    if result.bad_status or result.errors:
        raise BenchError(f"the floor {FLOOR.path} answered {result.bad_status} non-2xx and {result.errors} errors")
    return result


def wrk_path() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise BenchError("the load run needs wrk on PATH (apt-get install wrk): its mix is a wrk Lua script")
    return wrk


def run(args: argparse.Namespace, database: str) -> dict:
    wrk_path()  # before starting anything
    began = time.monotonic()
    started = datetime.datetime.now(datetime.UTC)
    with load_stack(args, database) as stack:
        port = stack.web.port
        wrk = WrkLoad(wrk_path(), threads=args.wrk_threads, connections=args.connections)
        planner = Planner(stack.data, seed=args.seed)
        tokens = stack.tokens

        # Fresh workers answer their first requests slowly (imports, connections): not the floor.
        measure_floor(port, wrk, FLOOR_WARMUP)
        log(f"floor {FLOOR.path}: {args.floor_seconds} s")
        floors = [measure_floor(port, wrk, args.floor_seconds)]

        # Enough entries for the longest load at the floor's pace: the mix is slower.
        reads_only = {kind: weight for kind, weight in MIX.items() if kind not in WRITES}
        warmup_plan = planner.plan(math.ceil(floors[0].rps * args.warmup * PLAN_MARGIN) + 100, reads_only)
        log(f"warm-up: {args.warmup} s of the reads")
        run_mix(
            port=port,
            tokens=tokens,
            plan=warmup_plan,
            seconds=args.warmup,
            threads=args.wrk_threads,
            connections=args.connections,
        )

        # Three floors (before and after the warm-up, after the mix): their median shrugs off one
        # run that a neighbour's burst of work on these shared cores slowed down.
        log(f"floor {FLOOR.path} after the warm-up: {args.floor_seconds} s")
        floors.append(measure_floor(port, wrk, args.floor_seconds))
        plan = planner.plan(math.ceil(floors[0].rps * args.seconds * PLAN_MARGIN) + 100, MIX)
        offset = stack.web.log_path.stat().st_size
        log(f"mix: {args.seconds} s, {args.users} people, {len(plan):,} requests planned")
        mix = run_mix(
            port=port,
            tokens=tokens,
            plan=plan,
            seconds=args.seconds,
            threads=args.wrk_threads,
            connections=args.connections,
        )
        client = stack.redis()
        try:
            wait_until_quiet(client)
            by_operation = access_log_counts(stack.web.log_path, offset)
            log(f"floor {FLOOR.path} again: {args.floor_seconds} s")
            floors.append(measure_floor(port, wrk, args.floor_seconds))
            log(f"Redis per request: {TRAFFIC_REQUESTS} sequential requests of each operation")
            traffic = {}
            for kind in MIX:
                sample = (
                    new_follows(port, stack.data, min(TRAFFIC_REQUESTS, len(tokens)))
                    if kind == "follow"
                    else planner.plan(TRAFFIC_REQUESTS, {kind: 1})
                )
                traffic[kind] = redis_per_request(client, port, tokens, sample)
        finally:
            client.close()
        log_tail = stack.web.log_tail(60)
        server = stack.web.description
        settings = stack.settings

    floor = Figures(
        name=DRF_FLOOR,
        rps=median([r.rps for r in floors]),
        p50_ms=median([r.p50_ms for r in floors]),
        p99_ms=median([r.p99_ms for r in floors]),
        requests=sum(r.requests for r in floors),
        errors=sum(r.errors for r in floors),
        runs=[asdict(r) for r in floors],
    )
    mix_figures = {
        **asdict(mix.load),
        "statuses": {str(code): count for code, count in sorted(mix.statuses.items())},
        "wrapped": mix.wrapped,
        "planned": len(plan),
        "ratio_rps": mix.load.rps / floor.rps,
        "ratio_p50": mix.load.p50_ms / floor.p50_ms,
        "ratio_p99": mix.load.p99_ms / floor.p99_ms,
    }
    return {
        "meta": {
            "started": started.isoformat(timespec="seconds"),
            "database": DATABASE_LABELS[database],
            "server": server,
            "settings": settings,
            "load": f"wrk -t{args.wrk_threads} -c{args.connections} --timeout 10s, Lua mix",
            "users": args.users,
            "seconds": args.seconds,
            "floor_seconds": args.floor_seconds,
            "warmup": args.warmup,
            "seed": args.seed,
            "mix": MIX,
            "total_s": time.monotonic() - began,
        },
        "floor": asdict(floor),
        "floor_spread": (max(r.rps for r in floors) - min(r.rps for r in floors)) / floor.rps,
        "mix": mix_figures,
        "targets": mix_targets(mix_figures),
        "operations": {
            kind: {"statuses": {str(code): n for code, n in sorted(counts.items())}, "requests": sum(counts.values())}
            for kind, counts in sorted(by_operation.items())
        },
        "redis": traffic,
        "log_tail": log_tail,
    }


# --- Report ------------------------------------------------------------------------------------


def mix_errors(mix: dict) -> int:
    """Connection errors and timeouts, and answers outside 2xx/3xx: every request of the plan is valid."""
    classes = _status_classes(mix["statuses"])
    return mix["errors"] + sum(count for name, count in classes.items() if name != "2xx/3xx")


def mix_targets(mix: dict) -> list[dict]:
    """Each of MIX_TARGETS with the mix's figure and whether it is met."""
    figures = {**mix, "errors": mix_errors(mix)}
    rows = []
    for figure, op, bound, label in MIX_TARGETS:
        value = figures[figure]
        met = value >= bound if op == ">=" else value <= bound
        rows.append({"figure": figure, "op": op, "bound": bound, "label": label, "value": value, "met": met})
    return rows


def _status_classes(counts: dict[str, int]) -> dict[str, int]:
    classes = Counter()
    for code, count in counts.items():
        status = int(code)
        key = "429" if status == 429 else "5xx" if status >= 500 else "4xx" if status >= 400 else "2xx/3xx"
        classes[key] += count
    return classes


def problems(results: dict) -> list[str]:
    """What makes the run fail: any 5xx (either count) or connection error."""
    found = []
    mix = results["mix"]
    server_errors = _status_classes(mix["statuses"])["5xx"]
    logged = {kind: _status_classes(op["statuses"])["5xx"] for kind, op in results["operations"].items()}
    if server_errors or any(logged.values()):
        where = ", ".join(f"{kind} {n}" for kind, n in logged.items() if n)
        found.append(f"{server_errors} answers were 5xx (by operation, from the access log: {where or 'none'})")
    if mix["errors"]:
        found.append(f"{mix['errors']} connection errors or timeouts during the mix")
    for kind, figures in results["redis"].items():
        if _status_classes({str(k): v for k, v in figures["statuses"].items()})["5xx"]:
            found.append(f"{kind}: 5xx while counting Redis commands: {figures['statuses']}")
    return found


def report(results: dict) -> str:
    meta, floor, mix = results["meta"], results["floor"], results["mix"]
    lines = [
        f"Kestrel load run on {meta['database']}, {meta['started']}",
        f"  {meta['server']}; {meta['settings']}; load: {meta['load']}; 127.0.0.1",
        f"  {meta['users']} people with their own bearer tokens; mix {meta['seconds']} s after a "
        f"{meta['warmup']} s warm-up of the reads; floor {meta['floor_seconds']} s before and after the "
        f"warm-up and after the mix (medians; spread {results['floor_spread']:.0%})",
        "",
    ]
    rows = [
        [
            "drf-floor",
            "GET /bench/floor",
            f"{floor['rps']:,.0f}",
            f"{floor['p50_ms']:.2f}",
            f"{floor['p99_ms']:.2f}",
            "1.00",
            "1.00",
            "1.00",
            f"{floor['requests']:,}",
            str(floor["errors"]),
        ],
        [
            "mix",
            "80 % reads / 20 % writes",
            f"{mix['rps']:,.0f}",
            f"{mix['p50_ms']:.2f}",
            f"{mix['p99_ms']:.2f}",
            f"{mix['ratio_rps']:.2f}",
            f"{mix['ratio_p50']:.2f}",
            f"{mix['ratio_p99']:.2f}",
            f"{mix['requests']:,}",
            str(mix["errors"]),
        ],
    ]
    headers = ["scenario", "what", "req/s", "p50 ms", "p99 ms", "req/s ratio", "p50 ratio", "p99 ratio"]
    lines += [format_table([*headers, "requests", "errors"], rows, left=2), ""]

    classes = _status_classes(mix["statuses"])
    lines.append(
        "Mix answers (wrk): "
        + ", ".join(f"{code} {count:,}" for code, count in mix["statuses"].items())
        + f"; 2xx/3xx {classes['2xx/3xx']:,}, 4xx {classes['4xx']:,}, 429 {classes['429']:,}, 5xx {classes['5xx']:,}"
    )
    lines.append("")
    rows = []
    total = sum(op["requests"] for op in results["operations"].values()) or 1
    for kind in [*MIX, *sorted(k for k in results["operations"] if k not in MIX)]:
        op = results["operations"].get(kind, {"statuses": {}, "requests": 0})
        op_classes = _status_classes(op["statuses"])
        traffic = results["redis"].get(kind)
        rows.append(
            [
                kind,
                "write" if kind in WRITES else "read",
                f"{MIX.get(kind, 0)}%",
                f"{op['requests'] / total:.1%}",
                f"{op['requests']:,}",
                ", ".join(f"{code} {n:,}" for code, n in op["statuses"].items()) or "-",
                str(op_classes["429"]),
                str(op_classes["5xx"]),
                f"{traffic['commands']:.2f}" if traffic else "-",
                f"{traffic['round_trips']:.2f}" if traffic else "-",
            ]
        )
    headers = ["operation", "", "planned", "served", "requests", "statuses", "429", "5xx", "cmd/req", "RT/req"]
    lines += [
        "By operation (gunicorn's access log for the mix; Redis from sequential requests):",
        format_table(headers, rows, left=2),
        "",
        "req/s ratio: the mix's req/s over the floor's; p50/p99 ratio: the mix's latency over the floor's "
        "(same wrk settings).",
        "cmd/req, RT/req: Redis commands sent (MONITOR; not those a Lua script runs) and read events (round trips;",
        f"  a pipeline is one) per request, over {TRAFFIC_REQUESTS} sequential requests of each operation on the warm "
        "server,",
        "  both roles (one Redis server here), counted until Redis is quiet after the last: a write's after-commit",
        "  work (write-through, fan-out, notifications) and background flushes the requests caused included.",
    ]
    for kind, figures in results["redis"].items():
        if any(not 200 <= int(code) < 300 for code in figures["statuses"]):
            lines.append(f"WARNING: {kind}'s Redis figures count answers {figures['statuses']}, not only successes.")
    if mix["wrapped"]:
        lines.append(
            f"WARNING: wrk ran past the end of the plan {mix['wrapped']} time(s): repeated likes and follows "
            "answer 409/404 (bench/load.py PLAN_MARGIN)."
        )
    lines += ["", *targets_table(results)]
    found = problems(results)
    if found:
        lines += ["", *(f"FAILED: {problem}" for problem in found)]
        lines += ["", "gunicorn log (tail):", results["log_tail"]]
    lines += ["", f"Took {meta['total_s']:.0f} s."]
    return "\n".join(lines)


def _figure(value: float) -> str:
    return f"{value:.2f}x" if isinstance(value, float) else str(value)


def targets_table(results: dict) -> list[str]:
    rows = [
        [target["label"], _figure(target["value"]), "met" if target["met"] else "NOT MET"]
        for target in results["targets"]
    ]
    return [f"Targets, {results['meta']['database']}", format_table(["target", "measured", ""], rows)]


def comparison(runs: dict[str, dict]) -> str:
    """The mix on every database of the run, side by side."""
    rows = []
    for results in runs.values():
        floor, mix, targets = results["floor"], results["mix"], results["targets"]
        rows.append(
            [
                results["meta"]["database"],
                f"{floor['rps']:,.0f}",
                f"{mix['rps']:,.0f}",
                f"{mix['ratio_rps']:.2f}",
                f"{mix['ratio_p50']:.2f}",
                f"{mix['ratio_p99']:.2f}",
                str(mix_errors(mix)),
                f"{sum(1 for t in targets if t['met'])}/{len(targets)}",
                f"{results['meta']['total_s']:.0f}",
            ]
        )
    headers = ["database", "floor req/s", "mix req/s", "req/s ratio", "p50 ratio", "p99 ratio", "errors", "targets"]
    return "\n".join(
        [
            "The mix on each database (same plan, seed and settings; each against its own floor):",
            format_table([*headers, "took s"], rows),
        ]
    )


def add_mix_arguments(parser: argparse.ArgumentParser) -> None:
    """The mix's length, warm-up, floor run, people and server shape (also `bench capacity`'s)."""
    parser.add_argument("--seconds", type=int, default=20, help="length of the mixed load (default 20)")
    parser.add_argument("--floor-seconds", type=int, default=4, help="each floor run (default 4)")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of reads before the mix (default 3)")
    parser.add_argument("--users", type=int, default=USERS, help=f"people, each with a token (default {USERS})")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes (default 2)")
    parser.add_argument(
        "--threads", type=int, default=64, help="threads per gthread worker (default 64, config/gunicorn.py's)"
    )
    parser.add_argument("--wrk-threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections (default 16)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench load", description=__doc__.split("\n\n")[0])
    add_mix_arguments(parser)
    parser.add_argument(
        "--rate-limit",
        choices=["on", "off"],
        default="on",
        help="the rate limiter on with the API limit out of reach (default), or off",
    )
    parser.add_argument(
        "--database",
        choices=["auto", SQLITE, POSTGRESQL, "both"],
        default="auto",
        help="SQLite, PostgreSQL (a database of its own, created and dropped, on the server DATABASE_URL names), "
        "or both one after the other; auto (default): both when DATABASE_URL is set, else SQLite",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the plan (default: random, printed)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"JSON output (default {DEFAULT_OUTPUT})")
    args = parser.parse_args(argv)
    if min(args.seconds, args.floor_seconds, args.warmup) < MIN_SECONDS:
        parser.error("--seconds, --floor-seconds and --warmup are whole seconds, at least 1")
    if args.users < 2 or args.connections < args.wrk_threads:
        parser.error("--users must be at least 2 and --connections at least --wrk-threads")
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**31)
    args.database_url = os.environ.get("DATABASE_URL", "")
    if args.database == "auto":
        args.databases = [SQLITE, POSTGRESQL] if args.database_url else [SQLITE]
    else:
        args.databases = [SQLITE, POSTGRESQL] if args.database == "both" else [args.database]
    if POSTGRESQL in args.databases:
        if not args.database_url:
            parser.error("PostgreSQL runs on the server DATABASE_URL names: set it")
        try:
            postgres_maintenance_url(args.database_url)
        except BenchError as exc:
            parser.error(str(exc))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # `kill` or a stopping `make` sends SIGTERM: an exception, so the servers are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    log(f"seed {args.seed} (--seed {args.seed} replays the plan); databases: {', '.join(args.databases)}")
    runs: dict[str, dict] = {}
    try:
        for database in args.databases:
            runs[database] = run(args, database)
    except StackError as exc:  # a BenchError, or a child the launcher (devstack) started failed
        print(f"bench load: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench load: interrupted; servers stopped", file=sys.stderr)
        return 130
    print("\n\n".join(report(results) for results in runs.values()))
    if len(runs) > 1:
        print("\n" + comparison(runs))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"databases": runs}, indent=2) + "\n")
    print(f"\nJSON: {args.output}")
    return 1 if any(problems(results) for results in runs.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
