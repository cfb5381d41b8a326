"""The machinery of the benchmarks: private servers, load generators, statistics.

Nothing here imports Django: the harness drives Kestrel from outside, as a client
would, through child processes (manage.py, gunicorn: devstack) that read their
settings from the environment built in `child_env`.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import math
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any, Protocol

import redis

from bench.scenarios import RedisFloorOp
from config.pdeathsig import die_with_parent
from devstack.processes import HOST, PROJECT_ROOT, StackError, run_manage, stack_env
from devstack.redis_cluster import LocalCluster
from devstack.redis_server import RedisServer
from devstack.web import Gunicorn, http_request

SESSION_COOKIE = "sessionid"  # Django's SESSION_COOKIE_NAME; Kestrel keeps the default
# The roles' DB numbers on the private server: REDIS_URL names 0, and the cache role
# defaults to the next one (config.settings). Only the cache DB is ever flushed.
STATE_DB = 0
CACHE_DB = 1
# The benchmark's own keys live in a DB number the app does not use.
FLOOR_DB = 15
FLOOR_KEY = "bench:floor"
# About the size of a small cached JSON object or a session.
FLOOR_VALUE = b"x" * 64
# bench_stack(cluster=True): the cache and state roles each on a private cluster of this
# many primaries (no replicas), as `make test-cluster` runs them; the queue role, which
# RQ keeps on one primary, on a server of its own.
CLUSTER_PRIMARIES = 3
CLUSTER_CONFIG = {
    "state": {"maxmemory-policy": "noeviction", "appendonly": "no"},
    "cache": {"maxmemory-policy": "allkeys-lru", "appendonly": "no"},
}


class BenchError(StackError):
    """A set-up step or a measurement failed; the message says which and shows the child's output.

    A StackError, as are the failures of the children devstack starts: the entry points
    (bench.__main__, bench.load) catch StackError and print the message.
    """


# --- Environment and one-off Django commands -----------------------------------------


def child_env(*, var_dir: Path, redis_url: str) -> dict[str, str]:
    """The environment of every child: production-like settings on loopback, all state in `var_dir`."""
    return stack_env(
        settings_module="bench.settings",
        var_dir=var_dir,
        redis_url=redis_url,
        overrides={
            # The load comes from one address at thousands of requests a second: the API
            # limit (100 a minute) would answer 429s. Its own cost is a scenario of its own.
            "RATE_LIMIT_ENABLED": "0",
            # The jobs benchmark sends email jobs (and sign-up enqueues a welcome email):
            # kept in memory, so nothing ever leaves the machine.
            "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
        },
    )


@dataclass(frozen=True)
class Credentials:
    email: str
    username: str
    password: str


def create_user(env: dict[str, str]) -> Credentials:
    """One user created through Kestrel's own service, so the password is hashed as in production."""
    credentials = Credentials(email="bench@example.com", username="bench", password=secrets.token_urlsafe(24))
    # The password travels in the environment, not in the code string, so no quoting can break it.
    code = (
        "import os\n"
        "from accounts.services import user_create\n"
        "user_create(email=os.environ['BENCH_EMAIL'], username=os.environ['BENCH_USERNAME'],"
        " password=os.environ['BENCH_PASSWORD'])\n"
    )
    user_env = {
        **env,
        "BENCH_EMAIL": credentials.email,
        "BENCH_USERNAME": credentials.username,
        "BENCH_PASSWORD": credentials.password,
    }
    run_manage(user_env, "shell", "-c", code)
    return credentials


# --- HTTP helpers ------------------------------------------------------------------


def login(port: int, credentials: Credentials) -> str:
    """The session id from `POST /api/login`."""
    body = json.dumps({"email": credentials.email, "password": credentials.password}).encode()
    status, headers, content = http_request(
        port, "POST", "/api/login", headers={"Content-Type": "application/json"}, body=body
    )
    if status != 200:
        raise BenchError(f"POST /api/login answered {status}: {content[:500]!r}")
    cookies = SimpleCookie()
    for header in headers.get_all("Set-Cookie") or []:
        cookies.load(header)
    if SESSION_COOKIE not in cookies:
        raise BenchError(f"POST /api/login set no {SESSION_COOKIE} cookie (headers: {dict(headers)})")
    return cookies[SESSION_COOKIE].value


def check_json(
    port: int,
    path: str,
    headers: dict[str, str],
    expect_keys: tuple[str, ...],
    *,
    method: str = "GET",
    body: bytes | None = None,
    expect_status: int = 200,
    expect_headers: tuple[str, ...] = (),
    check: Callable[[dict], str | None] | None = None,
) -> None:
    """One request before timing: a path that answers an error quickly must not pass for a fast one.

    `expect_headers` must be in the response (proof that a middleware ran); `check`
    returns what is wrong with the body, or None.
    """
    status, response_headers, content = http_request(port, method, path, headers=headers, body=body)
    if status != expect_status:
        raise BenchError(f"{method} {path} answered {status}, not {expect_status}: {content[:500]!r}")
    try:
        data = json.loads(content)
    except ValueError:
        raise BenchError(f"{method} {path} did not answer JSON: {content[:500]!r}") from None
    missing = [key for key in expect_keys if key not in data]
    if missing:
        raise BenchError(f"{method} {path} answered {data!r}, without {missing}")
    absent = [name for name in expect_headers if name not in response_headers]
    if absent:
        raise BenchError(f"{method} {path} answered without the header(s) {absent} (headers: {dict(response_headers)})")
    problem = check(data) if check else None
    if problem:
        raise BenchError(f"{method} {path}: {problem}")


# --- The stack -------------------------------------------------------------------------


@dataclass
class BenchContext:
    """The live stack, handed to scenarios' `prepare` hooks and to the measurements."""

    env: dict[str, str]
    # Both roles' one server (state DB 0, cache DB 1); with `clusters`, the queue role's.
    redis_server: RedisServer
    # The server with the default settings: the floors, and every scenario without `env`.
    gunicorn: Gunicorn
    credentials: Credentials
    session_id: str
    var_dir: Path
    # The longest load the runner will apply, so `prepare` hooks can size their data.
    seconds: float
    log: TextLog
    stack: contextlib.ExitStack
    # Seconds of load one scenario gets in all (warm-up and timed runs), and the sequential
    # requests of its Redis count: what a scenario that uses each path once must provide.
    load_seconds: float = 0.0
    count_requests: int = 0
    # What `prepare` hooks made (post ids...), read by the scenarios' `paths`.
    fixtures: dict[str, Any] = field(default_factory=dict)
    servers: dict[tuple[tuple[str, str], ...], Gunicorn] = field(default_factory=dict)
    # The cache and state roles' clusters by role, when the stack runs them on Redis Cluster.
    clusters: dict[str, LocalCluster] = field(default_factory=dict)

    @property
    def redis_layout(self) -> str:
        """Where the roles are, as the reports name it."""
        if not self.clusters:
            return "one Redis server"
        return (
            f"cache and state roles on two {CLUSTER_PRIMARIES}-primary Redis Clusters, "
            "queue role on a server of its own"
        )

    @property
    def port(self) -> int:
        return self.gunicorn.port

    def server(self, overrides: Mapping[str, str]) -> Gunicorn:
        """The gunicorn started with these environment overrides; the default one for none.

        One server per distinct environment, started on first use and kept until the
        end: idle, a server costs memory, not CPU, so the runs of scenarios on different
        settings still interleave (and the floors keep the default settings) with no
        restart and no cold worker in the middle of the measurements.
        """
        key = tuple(sorted(overrides.items()))
        if not key:
            return self.gunicorn
        server = self.servers.get(key)
        if server is None:
            log_name = "gunicorn-" + "-".join(f"{name}={value}" for name, value in key) + ".log"
            server = self.gunicorn.variant(overrides, self.var_dir / log_name)
            self.stack.callback(server.stop)
            server.start()
            self.log(f"web: {server.description} on http://{HOST}:{server.port} (pid {server.pid})")
            self.servers[key] = server
        return server

    def redis(self, db: int = STATE_DB) -> redis.Redis:
        """A raw client on the private server (DB 0 is the state role, 1 the cache; with `clusters`, the queue role)."""
        return redis.Redis(host=self.redis_server.host, port=self.redis_server.port, db=db)

    def traffic_clients(self) -> list[redis.Redis]:
        """A raw client of every Redis server of the stack, for count_redis_traffic; close them after."""
        nodes = [
            redis.Redis(host=cluster.host, port=port)
            for cluster in self.clusters.values()
            for port in sorted(cluster.servers)
        ]
        return [self.redis(), *nodes]

    def flush_cache(self) -> None:
        """FLUSHDB on the cache role only (its DB, or every primary of its cluster); the state role
        (sessions, view counters) stays."""
        cache = self.clusters.get("cache")
        if cache is None:
            clients = [self.redis(db=CACHE_DB)]
        else:
            clients = [redis.Redis(host=host, port=port) for host, port in cache.primaries()]
        try:
            for client in clients:
                client.flushdb()
        finally:
            for client in clients:
                client.close()

    def manage(self, *args: str) -> str:
        return run_manage(self.env, *args)

    def shell_json(self, code: str, *, env: Mapping[str, str] | None = None) -> dict:
        """Run Python in `manage.py shell` (with `env` over the stack's) and read the JSON it prints last."""
        output = run_manage({**self.env, **(env or {})}, "shell", "-c", code)
        return json.loads(output.strip().splitlines()[-1])

    def headers(self, *, needs_session: bool, bearer: str | None = None, json_body: bool = False) -> dict[str, str]:
        """The logged-in user's session cookie, or an access token (the fixture `bearer`, made by a
        scenario's `prepare`); with `json_body`, the content type of a JSON body too."""
        headers = {"Content-Type": "application/json"} if json_body else {}
        if bearer:
            headers["Authorization"] = f"Bearer {self.fixtures[bearer]}"
        elif needs_session:
            headers["Cookie"] = f"{SESSION_COOKIE}={self.session_id}"
        return headers


@contextlib.contextmanager
def bench_stack(
    *,
    worker_class: str,
    workers: int,
    threads: int,
    seconds: float,
    log: TextLog,
    load_seconds: float = 0.0,
    count_requests: int = 0,
    cluster: bool = False,
) -> Iterator[BenchContext]:
    """Redis, a migrated SQLite database with one user, gunicorn, a session: all private, all stopped after.

    With `cluster`, the cache and state roles are each a private Redis Cluster of
    CLUSTER_PRIMARIES primaries and the queue role a server of its own.
    """
    with contextlib.ExitStack() as stack:
        var_dir = Path(tempfile.mkdtemp(prefix="kestrel-bench-"))
        stack.callback(shutil.rmtree, var_dir, ignore_errors=True)
        # noeviction, as the state role runs in production (and so the system check stays quiet).
        server = stack.enter_context(RedisServer(host=HOST, extra_config={"maxmemory-policy": "noeviction"}))
        log(f"redis: {server.binary} on {server.url} (pid {server.process.pid})")
        clusters: dict[str, LocalCluster] = {}
        if cluster:
            for role, config in CLUSTER_CONFIG.items():
                clusters[role] = stack.enter_context(
                    LocalCluster(CLUSTER_PRIMARIES, host=HOST, node_timeout_ms=60_000, extra_config=config)
                )
                log(f"redis: the {role} role on a cluster, {clusters[role].url}")
            env = child_env(var_dir=var_dir, redis_url=clusters["state"].url)
            env |= {"REDIS_CACHE_URL": clusters["cache"].url, "REDIS_QUEUE_URL": f"{server.url}/0"}
        else:
            env = child_env(var_dir=var_dir, redis_url=f"{server.url}/0")
        log(f"database: SQLite in {var_dir}; migrating")
        run_manage(env, "migrate", "--noinput")
        credentials = create_user(env)
        gunicorn = Gunicorn(
            env=env, log_path=var_dir / "gunicorn.log", worker_class=worker_class, workers=workers, threads=threads
        )
        stack.callback(gunicorn.stop)
        gunicorn.start()
        log(f"web: {gunicorn.description} on http://{HOST}:{gunicorn.port} (pid {gunicorn.pid})")
        session_id = login(gunicorn.port, credentials)
        yield BenchContext(
            env=env,
            redis_server=server,
            gunicorn=gunicorn,
            credentials=credentials,
            session_id=session_id,
            var_dir=var_dir,
            seconds=seconds,
            log=log,
            stack=stack,
            load_seconds=load_seconds,
            count_requests=count_requests,
            clusters=clusters,
        )


class TextLog(Protocol):
    def __call__(self, message: str) -> None: ...


# --- Statistics ------------------------------------------------------------------


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list (what wrk reports too)."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# --- Load generators ---------------------------------------------------------------


@dataclass(frozen=True)
class LoadResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    # Connection errors and timeouts, and answers that were not 2xx/3xx: either makes a run suspect.
    errors: int = 0
    bad_status: int = 0


class LoadGenerator(Protocol):
    name: str

    def run(
        self,
        *,
        port: int,
        paths: Sequence[str],
        headers: dict[str, str],
        seconds: float,
        method: str = "GET",
        body: bytes | None = None,
    ) -> LoadResult:
        """Load `paths` for `seconds`: one path over and over, or several in turn (see PathRotation).

        `method` and `body` send something other than a GET (a form's POST, a JSON body), to every path.
        """
        ...


class PathRotation:
    """A scenario's paths, requested in order across loads: each load starts where the last stopped.

    The load generator's threads each take every n-th path from the start they are
    given, and never move at quite the same pace, so `advance` skips a margin past the
    requests counted: the next load then starts past anything the faster thread asked
    for. At the end of the list it wraps around to the start.
    """

    MARGIN = 1.25

    def __init__(self, paths: Sequence[str]) -> None:
        if not paths:
            raise BenchError("a scenario has no paths to request")
        self.paths = list(paths)
        self.position = 0
        # Paths taken or skipped so far, wrap-arounds included.
        self.consumed = 0

    @property
    def wrapped(self) -> bool:
        """Whether the loads may have come round to a path already requested."""
        return self.consumed > len(self.paths)

    def upcoming(self) -> list[str]:
        """Every path, starting at the current one."""
        return self.paths[self.position :] + self.paths[: self.position]

    def take(self, count: int) -> list[str]:
        """The next `count` paths (repeating if the list is shorter), consumed."""
        taken = list(itertools.islice(itertools.cycle(self.upcoming()), count))
        self.position = (self.position + count) % len(self.paths)
        self.consumed += count
        return taken

    def advance(self, requests: int, connections: int) -> None:
        """Move past a load that sent `requests` over `connections` connections."""
        if len(self.paths) > 1:
            step = math.ceil(requests * self.MARGIN) + connections
            self.position = (self.position + step) % len(self.paths)
            self.consumed += step


class WrkLoad:
    """wrk, as docs/design.md's reference figures were measured: `wrk -t2 -c16 -d<s>s --latency`."""

    def __init__(self, binary: str, *, threads: int = 2, connections: int = 16) -> None:
        self.binary = binary
        self.threads = min(threads, connections)
        self.connections = connections
        self.name = f"wrk -t{self.threads} -c{connections}"

    def run(
        self,
        *,
        port: int,
        paths: Sequence[str],
        headers: dict[str, str],
        seconds: float,
        method: str = "GET",
        body: bytes | None = None,
    ) -> LoadResult:
        args = [self.binary, f"-t{self.threads}", f"-c{self.connections}", f"-d{max(1, round(seconds))}s", "--latency"]
        for name, value in headers.items():
            args += ["-H", f"{name}: {value}"]
        with tempfile.TemporaryDirectory(prefix="kestrel-wrk-") as folder:
            body_file = Path(folder) / "body"
            body_file.write_bytes(body or b"")
            if len(paths) > 1:
                script, path_list = Path(folder) / "rotate.lua", Path(folder) / "paths.txt"
                script.write_text(_WRK_ROTATE_LUA)
                path_list.write_text("\n".join(paths) + "\n")
                args += ["-s", str(script), f"http://{HOST}:{port}{paths[0]}", "--", str(path_list), str(self.threads)]
                args += [method, str(body_file) if body else ""]
            elif method != "GET":
                script = Path(folder) / "request.lua"
                script.write_text(_WRK_REQUEST_LUA)
                args += ["-s", str(script), f"http://{HOST}:{port}{paths[0]}", "--", method, str(body_file)]
            else:
                args.append(f"http://{HOST}:{port}{paths[0]}")
            result = subprocess.run(
                args, capture_output=True, text=True, timeout=seconds + 60, check=False, preexec_fn=die_with_parent
            )
        if result.returncode != 0:
            raise BenchError(f"wrk exited with {result.returncode}: {result.stderr or result.stdout}")
        return parse_wrk(result.stdout)


# wrk runs a Lua state per thread: thread i sends paths i, i+n, i+2n... of the list (n
# threads), so no two threads ask for the same path. A custom `request` makes wrk
# format every request instead of reusing one buffer: a cost on the load generator's
# side only, and small next to a request that reaches the database.
_WRK_ROTATE_LUA = """\
-- args: file of paths (one a line), number of wrk threads, method (default GET), file holding the body ("": none)
local created = 0

function setup(thread)
  thread:set("thread_index", created)
  created = created + 1
end

function init(args)
  paths = {}
  for line in io.lines(args[1]) do
    paths[#paths + 1] = line
  end
  step = tonumber(args[2])
  nxt = thread_index + 1
  method = args[3] or "GET"
  if args[4] and args[4] ~= "" then
    local file = io.open(args[4], "rb")
    body = file:read("*a")
    file:close()
  end
end

function request()
  local path = paths[nxt]
  nxt = nxt + step
  if nxt > #paths then
    nxt = thread_index + 1
  end
  return wrk.format(method, path, nil, body)
end
"""

# One request that is not a GET (a form's POST), its body read from a file; the
# headers (cookies, CSRF token, content type) come from wrk's -H options.
_WRK_REQUEST_LUA = """\
-- args: method, file holding the body
function init(args)
  wrk.method = args[1]
  local file = io.open(args[2], "rb")
  wrk.body = file:read("*a")
  file:close()
end
"""

_WRK_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def parse_wrk(output: str) -> LoadResult:
    def latency(label: str) -> float:
        match = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.MULTILINE)
        if not match:
            raise BenchError(f"no {label}% latency in wrk's output:\n{output}")
        return float(match.group(1)) * _WRK_UNITS_MS[match.group(2)]

    done = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m)", output, re.MULTILINE)
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    if not done or not rps:
        raise BenchError(f"cannot read wrk's output:\n{output}")
    socket_errors = re.search(r"connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    bad_status = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    return LoadResult(
        requests=int(done.group(1)),
        seconds=float(done.group(2)) * _WRK_UNITS_MS[done.group(3)] / 1000,
        rps=float(rps.group(1)),
        p50_ms=latency("50"),
        p99_ms=latency("99"),
        errors=sum(int(n) for n in socket_errors.groups()) if socket_errors else 0,
        bad_status=int(bad_status.group(1)) if bad_status else 0,
    )


class PythonLoad:
    """The fallback when wrk is not installed: threads with keep-alive http.client connections.

    It spends far more CPU per request than wrk, and shares the same cores as
    gunicorn, so its req/s are lower; the ratios between paths are what to compare.
    Sync gunicorn workers close every connection; http.client then reconnects,
    which is what wrk does too.
    """

    def __init__(self, *, connections: int = 16) -> None:
        self.connections = connections
        self.name = f"python http.client, {connections} threads"

    def run(
        self,
        *,
        port: int,
        paths: Sequence[str],
        headers: dict[str, str],
        seconds: float,
        method: str = "GET",
        body: bytes | None = None,
    ) -> LoadResult:
        latencies: list[list[float]] = [[] for _ in range(self.connections)]
        failures = [[0, 0] for _ in range(self.connections)]  # [errors, bad_status] per thread
        start = threading.Barrier(self.connections + 1)
        deadline = 0.0  # set by the main thread before it releases the barrier

        def worker(index: int) -> None:
            own = latencies[index]
            counts = failures[index]
            # As with wrk: thread i takes every n-th path from the i-th.
            own_paths = itertools.cycle(paths[index :: self.connections] or paths)
            conn = http.client.HTTPConnection(HOST, port, timeout=10)
            start.wait()
            try:
                while (began := time.perf_counter()) < deadline:
                    try:
                        conn.request(method, next(own_paths), body=body, headers=headers)
                        response = conn.getresponse()
                        response.read()
                    except (OSError, http.client.HTTPException):
                        counts[0] += 1
                        conn.close()
                        continue
                    own.append(time.perf_counter() - began)
                    if not 200 <= response.status < 400:
                        counts[1] += 1
            finally:
                conn.close()

        threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(self.connections)]
        for thread in threads:
            thread.start()
        began = time.perf_counter()
        deadline = began + seconds
        start.wait()
        for thread in threads:
            thread.join(timeout=seconds + 30)
        elapsed = time.perf_counter() - began
        merged = sorted(value for own in latencies for value in own)
        return LoadResult(
            requests=len(merged),
            seconds=elapsed,
            rps=len(merged) / elapsed,
            p50_ms=percentile(merged, 0.50) * 1000,
            p99_ms=percentile(merged, 0.99) * 1000,
            errors=sum(count[0] for count in failures),
            bad_status=sum(count[1] for count in failures),
        )


def pick_load_generator(choice: str, *, connections: int) -> LoadGenerator:
    """`auto` takes wrk when it is on PATH, else the Python fallback."""
    wrk = shutil.which("wrk")
    if choice == "wrk" and not wrk:
        raise BenchError("--load wrk: wrk is not on PATH (apt-get install wrk), or use --load python")
    if wrk and choice in ("auto", "wrk"):
        return WrkLoad(wrk, connections=connections)
    return PythonLoad(connections=connections)


# --- Redis measurements ---------------------------------------------------------------


def redis_floor_us(client: redis.Redis, op: RedisFloorOp, ops: int) -> float:
    """Microseconds per command for `ops` commands of one kind, `op.pipeline` to a round trip."""
    batches = max(1, ops // op.pipeline)
    if op.command == "GET":

        def one(pipe: redis.Redis) -> None:
            pipe.get(FLOOR_KEY)

    elif op.command == "SET":

        def one(pipe: redis.Redis) -> None:
            pipe.set(FLOOR_KEY, FLOOR_VALUE)

    else:
        raise ValueError(f"unknown floor command {op.command!r}")

    client.set(FLOOR_KEY, FLOOR_VALUE)
    began = time.perf_counter()
    if op.pipeline == 1:
        for _ in range(batches):
            one(client)
    else:
        for _ in range(batches):
            # A new pipeline per batch, as application code builds one per request.
            pipe = client.pipeline(transaction=False)
            for _ in range(op.pipeline):
                one(pipe)
            pipe.execute()
    elapsed = time.perf_counter() - began
    return elapsed / (batches * op.pipeline) * 1e6


@dataclass
class RedisTraffic:
    """What a fixed number of requests sent to Redis, per request.

    Counted from the first request until Redis has been quiet for half a second after
    the last one, so what the requests left for later (a write's after-commit work runs
    before its answer; views buffered in a process and flushed in the background) is in
    the figures, amortized over the requests.
    """

    requests: int
    # Commands clients sent (a pipeline's commands one each), not those a Lua script ran.
    commands: float
    # Read events on the server: one per round trip (a pipeline is one), plus one when a
    # connection closes. The closest figure to round trips Redis keeps.
    reads: float
    # Commands sent, by name (lowercase).
    by_command: dict[str, float] = field(default_factory=dict)
    # Commands Lua scripts ran (the limiter's GET, SET, TIME...), which INFO counts as commands too.
    script_commands: float = 0.0


# ECHOed by the harness around a count, so the MONITOR reader knows where it starts and ends.
_COUNT_START = "kestrel-bench:count-start"
_COUNT_END = "kestrel-bench:count-end"
# The longest a count may wait for a command from MONITOR: well past any request here.
MONITOR_TIMEOUT = 60.0


# posts.counters sends buffered views in a script call whose first key is the sending
# process's batch key (posts.keys.view_batches): named apart from the limiter's EVALSHA.
VIEW_SEND = "evalsha(views)"
_VIEW_SEND_KEY = re.compile(r":posts:views:[^: ]+:batch\b")


def command_name(command: str) -> str:
    """A MONITOR line's command name, lowercase; a view send's EVALSHA as VIEW_SEND."""
    name = command.split(" ", 1)[0].lower()
    if name == "evalsha" and _VIEW_SEND_KEY.search(command):
        return VIEW_SEND
    return name


class _CommandLog(threading.Thread):
    """Every command the server runs between the two markers, read from MONITOR on a connection of its own.

    MONITOR names each command's sender: a client's address, or "lua" for what a script
    runs, which INFO's counters cannot tell apart from what clients send.
    """

    def __init__(self, client: redis.Redis, *, own_port: str) -> None:
        super().__init__(name="redis-monitor", daemon=True)
        self.own_port = own_port
        self.monitor = client.monitor()
        self.ready = threading.Event()
        self.entries: list[tuple[str, str, str]] = []  # (client type, client port, command name)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.monitor as monitor:
                self.ready.set()
                counting = False
                for entry in monitor.listen():
                    command = entry["command"]
                    own = entry["client_port"] == self.own_port
                    if own and command == f"ECHO {_COUNT_START}":
                        counting = True
                    elif own and command == f"ECHO {_COUNT_END}":
                        return
                    if counting:
                        name = command_name(command)
                        self.entries.append((entry["client_type"], entry["client_port"], name))
        except Exception as exc:  # noqa: BLE001 - handed to the thread that waits for this one
            self.error = exc
        finally:
            self.ready.set()

    def finish(self) -> list[tuple[str, str, str]]:
        self.join(MONITOR_TIMEOUT)
        if self.is_alive():
            raise BenchError(f"MONITOR did not see the end of the count within {MONITOR_TIMEOUT:g} s")
        if self.error is not None:
            raise BenchError(f"MONITOR failed during the count: {self.error!r}")
        return self.entries


def _reads(client: redis.Redis) -> int:
    return int(client.info("stats")["total_reads_processed"])


def wait_until_quiet(
    clients: redis.Redis | Sequence[redis.Redis], *, interval: float = 0.5, timeout: float = 10.0
) -> None:
    """Return once nothing but these clients has sent their servers a command for `interval` seconds.

    When a load generator stops, gunicorn still serves the requests already queued in
    its listen backlog (up to one per connection); counting before they finish would
    charge their commands to the next measurement. Half a second: on a busy machine a
    worker can go that long without the CPU between two of those requests, and it is
    longer than a background flush interval. One client per server (a cluster's nodes,
    each on its own): every one must be quiet in the same interval.
    """
    servers = [clients] if isinstance(clients, redis.Redis) else list(clients)
    deadline = time.monotonic() + timeout
    before = [int(client.info("stats")["total_commands_processed"]) for client in servers]
    while time.monotonic() < deadline:
        time.sleep(interval)
        after = [int(client.info("stats")["total_commands_processed"]) for client in servers]
        if all(now - then <= 1 for then, now in zip(before, after, strict=True)):  # only our own previous INFO
            return
        before = after
    raise BenchError(f"Redis did not go quiet within {timeout:g} s after the load stopped")


class _ServerCount:
    """One server's share of a count: the harness's connection to it, its MONITOR and its read events."""

    def __init__(self, client: redis.Redis) -> None:
        options = client.connection_pool.connection_kwargs
        self.address = {
            "host": options.get("host", HOST),
            "port": options.get("port", 6379),
            "db": options.get("db", 0),
        }
        # One connection for every command of the harness, so MONITOR knows them by its port.
        self.own = redis.Redis(**self.address, single_connection_client=True, socket_timeout=10)
        self.own_port = self.own.client_info()["addr"].rsplit(":", 1)[1]
        self.log: _CommandLog | None = None
        self.reads = 0
        self.entries: list[tuple[str, str, str]] = []

    def monitor(self) -> None:
        self.log = _CommandLog(redis.Redis(**self.address, socket_timeout=MONITOR_TIMEOUT), own_port=self.own_port)
        self.log.start()
        if not self.log.ready.wait(10) or self.log.error is not None:
            raise BenchError(f"MONITOR did not start on port {self.address['port']}: {self.log.error!r}")

    def begin(self) -> None:
        self.reads = -_reads(self.own)
        self.own.echo(_COUNT_START)

    def end(self) -> None:
        assert self.log is not None  # monitor() ran
        self.reads += _reads(self.own)
        self.own.echo(_COUNT_END)
        self.entries = self.log.finish()

    def close(self) -> None:
        self.own.close()
        if self.log is not None:
            self.log.monitor.connection.disconnect()


def count_redis_traffic(
    clients: redis.Redis | Sequence[redis.Redis], requests: int, send: Callable[[], None]
) -> RedisTraffic:
    """Redis commands and round trips per request while `send()` makes `requests` requests.

    Commands come from MONITOR (so the harness's own and those run inside Lua scripts
    are told apart), round trips from INFO's read events less the harness's own. Counts
    the whole server, both roles, until it has been quiet for a moment after the last
    request: background work the requests caused is included. With a client of each of
    several servers (every node of a cluster role, and the queue role's server), the
    figures are their sums: a pipeline that reaches three primaries is three round trips.
    """
    servers = [clients] if isinstance(clients, redis.Redis) else list(clients)
    counts: list[_ServerCount] = []
    try:
        for client in servers:
            counts.append(_ServerCount(client))
        owns = [count.own for count in counts]
        wait_until_quiet(owns)
        for count in counts:
            count.monitor()
        for count in counts:
            count.begin()
        send()
        wait_until_quiet(owns)
        for count in counts:
            count.end()
    finally:
        for count in counts:
            count.close()
    sent: Counter[str] = Counter()
    reads = scripted = 0
    for count in counts:
        # The harness's commands from the start marker to the last INFO: one read event each.
        own_commands = sum(1 for _, port, _ in count.entries if port == count.own_port)
        reads += count.reads - own_commands
        sent.update(name for kind, port, name in count.entries if kind != "lua" and port != count.own_port)
        scripted += sum(1 for kind, _, _ in count.entries if kind == "lua")
    return RedisTraffic(
        requests=requests,
        commands=sum(sent.values()) / requests,
        reads=reads / requests,
        by_command={name: count / requests for name, count in sorted(sent.items())},
        script_commands=scripted / requests,
    )


def measure_redis_traffic(
    clients: redis.Redis | Sequence[redis.Redis],
    port: int,
    paths: Sequence[str],
    headers: dict[str, str],
    *,
    method: str = "GET",
    body: bytes | None = None,
    expect_status: int = 200,
) -> RedisTraffic:
    """Redis commands and round trips per request (count_redis_traffic) over one sequential request per path."""

    def send() -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=10)
        try:
            for path in paths:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                if response.status != expect_status:
                    raise BenchError(f"{method} {path} answered {response.status} while counting Redis commands")
        finally:
            conn.close()

    return count_redis_traffic(clients, len(paths), send)


# --- Application counters -----------------------------------------------------------

# bench/urls.py: this worker's core.metrics counters and its pid.
METRICS_PATH = "/bench/metrics"


def worker_metrics(port: int, workers: int) -> dict[int, dict[str, int]]:
    """core.metrics of every gunicorn worker, by pid.

    The counters live in each worker process and a connection lands on whichever
    worker accepts it first; one idle worker can win every accept of sequential
    requests, so ask with as many requests in flight as there are workers, until
    every worker has answered.
    """
    seen: dict[int, dict[str, int]] = {}

    def ask() -> None:
        status, _, content = http_request(port, "GET", METRICS_PATH)
        if status != 200:
            raise BenchError(f"GET {METRICS_PATH} answered {status}: {content[:300]!r}")
        data = json.loads(content)
        seen[data["pid"]] = {_series_name(name, labels): count for name, labels, count in data["series"]}

    for _ in range(100):
        errors: list[BaseException] = []
        threads = [threading.Thread(target=_collect_errors, args=(ask, errors)) for _ in range(2 * workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        if len(seen) >= workers:
            return seen
    raise BenchError(f"only {len(seen)} of {workers} gunicorn workers answered {METRICS_PATH}")


def _collect_errors(fn: Callable[[], None], errors: list[BaseException]) -> None:
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
        errors.append(exc)


def _series_name(name: str, labels: dict[str, str]) -> str:
    return name + "{" + ",".join(f"{key}={value}" for key, value in sorted(labels.items())) + "}"


def metrics_delta(before: dict[int, dict[str, int]], after: dict[int, dict[str, int]]) -> dict[str, int]:
    """What the counters gained between two readings, summed over workers.

    A worker that was replaced in between counts from zero (what its predecessor did
    since `before` is lost: gunicorn here restarts workers only when one crashes).
    """
    total: Counter[str] = Counter()
    for pid, counters in after.items():
        old = before.get(pid, {})
        for series, count in counters.items():
            total[series] += count - old.get(series, 0)
    return {series: count for series, count in total.items() if count}


@dataclass
class CacheCounts:
    """One cache-aside family's counters (core.cacheaside) over some requests."""

    l1_hits: int = 0
    redis_hits: int = 0
    misses: int = 0
    # Loader calls: a miss under the lease, a reader that gave up waiting, an early refresh.
    loads: int = 0
    waits: int = 0
    early_refreshes: int = 0
    errors: int = 0

    @property
    def reads(self) -> int:
        return self.l1_hits + self.redis_hits + self.misses

    @classmethod
    def from_metrics(cls, delta: dict[str, int], family: str) -> CacheCounts:
        def count(name: str, **labels: str) -> int:
            return delta.get(_series_name(name, {"family": family, **labels}), 0)

        return cls(
            l1_hits=count("cache.hit", tier="l1"),
            redis_hits=count("cache.hit", tier="redis"),
            misses=count("cache.miss"),
            loads=count("cache.load"),
            waits=count("cache.wait"),
            early_refreshes=count("cache.early_refresh"),
            errors=count("cache.error"),
        )

    def __add__(self, other: CacheCounts) -> CacheCounts:
        return CacheCounts(**{name: getattr(self, name) + getattr(other, name) for name in self.__dataclass_fields__})


# --- Child benchmarks ------------------------------------------------------------------


def run_child(
    ctx: BenchContext, module: str, args: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 600
) -> dict:
    """`python -m <module> <args>` in a child process on the stack's Redis and database; its JSON result.

    The children run the project's own settings (the bench URLconf is for gunicorn
    only) and print their result as JSON on their last line of output.
    """
    child = {**ctx.env, "DJANGO_SETTINGS_MODULE": "config.settings", **(env or {})}
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=PROJECT_ROOT,
        env=child,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        preexec_fn=die_with_parent,
    )
    if result.returncode != 0:
        raise BenchError(f"`python -m {module}` exited with {result.returncode}:\n{result.stdout}{result.stderr}")
    try:
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise BenchError(f"`python -m {module}` printed no JSON:\n{result.stdout}{result.stderr}") from None


def run_stampede(ctx: BenchContext, *, post_id: int, readers: int, rounds: int) -> dict:
    """bench/stampede.py on the stack's Redis and database, L1 off (see its docstring)."""
    return run_child(
        ctx,
        "bench.stampede",
        [f"--post-id={post_id}", f"--readers={readers}", f"--rounds={rounds}"],
        env={"CACHE_L1_ENABLED": "0"},
    )
