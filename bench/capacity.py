"""`python -m bench capacity`: what the load mix costs each Redis role per 1,000 req/s (docs/deploy.md).

    python -m bench capacity                 # about a minute: a floor, 3 s of warm-up, 20 s of the mix
    python -m bench capacity --seconds 40    # a longer window

The people, the plan and the wrk script are bench/load.py's: forty people with bearer
tokens, 80 % reads and 20 % writes, against gunicorn as production runs it (`-c
config/gunicorn.py`, the rate limiter on with its limits out of reach) on SQLite. Beside
it run an RQ worker (`rqworker --with-scheduler`, as the systemd unit runs it) and the
cron scheduler, and the roles are on two private Redis servers configured as deploy/redis/
configures them: the cache role on one (allkeys-lru), the state role on the other
(noeviction, AOF everysec) with the queue role on it, the default.

Over the timed window, from just before the mix until the last answers are in:

- per server, from its own INFO: commands run (commandstats, so a script's inner
  commands count), read events (round trips), network bytes in and out, Redis CPU time
  and used_memory. Divided by the requests served and multiplied by 1,000 they are
  figures per 1,000 req/s of the mix; what the background (view flushes, the worker,
  cron) did in the window is spread over those requests;
- per role, from Kestrel's own counters (/metrics with METRICS_TOKEN; the web, worker
  and cron processes share one PROMETHEUS_MULTIPROC_DIR): commands sent. The queue role
  shares the state server, whose INFO cannot tell the two apart: its share is the
  commands on RQ's keys (family `rq`). Script calls, which only clients send, must be
  the same in both counts: the cross-check;
- each process's CPU time (/proc), for the web and worker processes per core.

After the run every key of both servers is sized (SCAN, MEMORY USAGE SAMPLES 0) and
summed by family (key_family): bytes per cached post, and per active person on each
role; a person's capped streams are also sized full, on a copy grown to the cap. Before
the mix, the bench's Redis floor loops (REDIS_FLOOR_OPS, `--redis-ops` commands each)
time the server's CPU per plain GET and SET, alone and pipelined.

Prints tables and writes var/bench/capacity.json.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import re
import resource
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import redis
from prometheus_client.parser import text_string_to_metric_families

from bench.harness import FLOOR_DB, FLOOR_KEY, BenchError, WrkLoad, child_env, redis_floor_us, worker_metrics
from bench.load import (
    FLOOR,
    FLOOR_WARMUP,
    FOLLOWS_EACH,
    MIX,
    PAGES,
    PLAN_MARGIN,
    POSTS_EACH,
    RATE_LIMITED,
    TOKEN_LIFETIME,
    WRITES,
    Planner,
    Request,
    access_log_counts,
    add_mix_arguments,
    measure_floor,
    run_mix,
    wrk_path,
)
from bench.scenarios import REDIS_FLOOR_OPS
from devstack.processes import (
    HOST,
    PROJECT_ROOT,
    Process,
    StackError,
    rq_cron_command,
    rq_worker_command,
    run_manage,
    session_members,
)
from devstack.redis_server import RedisServer
from devstack.report import format_table
from devstack.web import GUNICORN_CONFIG, Gunicorn, http_request
from feeds.keys import NOTIFICATIONS_MAXLEN, STREAM_MAXLEN

DEFAULT_OUTPUT = PROJECT_ROOT / "var" / "bench" / "capacity.json"
# The children's key prefix: stack_env leaves REDIS_KEY_PREFIX unset, so settings' default.
KEY_PREFIX = "kestrel"
CACHE, STATE, QUEUE = "cache", "state", "queue"
# As deploy/redis/cache.conf and state.conf set them (maxmemory far above what a run fills).
SERVER_CONFIG = {
    CACHE: {"maxmemory": "1gb", "maxmemory-policy": "allkeys-lru"},
    STATE: {"maxmemory-policy": "noeviction", "appendonly": "yes", "appendfsync": "everysec"},
}
# After the mix, before the window closes: gunicorn answers what wrk left in its listen
# backlog (milliseconds), and busy processes publish their counts (core.metrics: within 1 s).
SETTLE_SECONDS = 1.5
# MEMORY USAGE commands per pipeline while sizing the keys.
SIZE_BATCH = 200
# Figures "per 1,000 req/s": per request, times this.
PER = 1000
# Families that grow with posts or with people (key_family's names, by `<app>:<entity>`);
# every `<app>:user` family is a person's too. The rest are shared (leaderboard, pages, RQ).
POST_ENTITIES = frozenset({"posts:post"})
# feeds:notified holds one key per (actor, kind, target) for an hour: what a person did lately.
PERSON_ENTITIES = frozenset(
    {"accounts:session", "accounts:jwt", "accounts:jwt_family", "core:ratelimit", "feeds:notified"}
)
POST, PERSON, SHARED = "post", "person", "shared"
# A person's streams, each kept at about this many entries (XADD MAXLEN ~, feeds/keys.py).
CAPPED_STREAMS = {
    "feeds:user:activity": STREAM_MAXLEN,
    "feeds:user:notifications": NOTIFICATIONS_MAXLEN,
    "feeds:user:timeline": STREAM_MAXLEN,
}
# Where a stream is grown to its cap (stream_at_cap), in the floor loops' database.
SCRATCH_KEY = "bench:capacity:stream"
# Commands shown by name in the report, the busiest first.
TOP_COMMANDS = 6

# A segment after the entity with no digit is a facet; one with a digit (a number, a
# session key, a hash) is an id.
_FACET = re.compile(r"[a-z_]+\Z")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(f"[bench capacity {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- Key families and their sizes ----------------------------------------------------------------


def key_family(key: str, prefix: str = KEY_PREFIX) -> str:
    """A key's family: core/keys.py's `<prefix>:<app>:<entity>[:<id>][:<facet>]` without prefix and id.

    `kestrel:feeds:user:7:timeline` is `feeds:user:timeline`, `kestrel:posts:post:42`
    `posts:post`, a limiter counter `kestrel:core:ratelimit:<digest>:api`
    `core:ratelimit:api`, a lease `kestrel:posts:post:{42}:lock` `posts:post:lock`. After
    the entity, a segment without a digit is a facet (`posts:leaderboard:version`), any
    other an id. RQ's keys are `rq:<kind>`; Django's own under the prefix `django`;
    anything else `other`.
    """
    parts = key.split(":")
    if parts[0] == "rq" and len(parts) > 1:
        return f"rq:{parts[1]}"
    if parts[0] != prefix or len(parts) < 3:
        return "other"
    if parts[1] == "django":
        return "django"
    # A `{...}` segment is a hash tag (an id, or the slot a key shares with another's).
    facets = (part for part in parts[3:] if not part.startswith("{") and _FACET.match(part))
    return ":".join([parts[1], parts[2], *facets])


def family_unit(family: str) -> str:
    """What a family grows with: POST (a post's copy, views, viewers), PERSON (keys built on a
    user id, a session, a token or a limiter subject) or SHARED."""
    app_entity = ":".join(family.split(":")[:2])
    if app_entity in POST_ENTITIES:
        return POST
    if app_entity in PERSON_ENTITIES or family.split(":")[1:2] == ["user"]:
        return PERSON
    return SHARED


@dataclass
class FamilySize:
    keys: int = 0
    bytes: int = 0
    # Entries of a stream, members of a set or sorted set, fields of a hash, items of a
    # list; a string is one.
    elements: int = 0


# The command that counts a key's elements, by TYPE.
_LENGTHS = {"stream": "XLEN", "list": "LLEN", "set": "SCARD", "zset": "ZCARD", "hash": "HLEN"}


def size_keys(client: redis.Redis, *, prefix: str = KEY_PREFIX, batch: int = SIZE_BATCH) -> dict[str, FamilySize]:
    """Every key of the client's database sized by MEMORY USAGE (SAMPLES 0: every element counted), by family.

    A key that expires between the SCAN and its MEMORY USAGE is left out.
    """
    keys = sorted({key.decode() for key in client.scan_iter(count=1000)})  # SCAN may return a key twice
    sizes: dict[str, FamilySize] = {}
    for start in range(0, len(keys), batch):
        chunk = keys[start : start + batch]
        pipe = client.pipeline(transaction=False)
        for key in chunk:
            pipe.memory_usage(key, samples=0)
            pipe.type(key)
        replies = pipe.execute()
        found = [(key, used, kind.decode()) for key, used, kind in zip(chunk, replies[::2], replies[1::2], strict=True)]
        pipe = client.pipeline(transaction=False)
        for key, used, kind in found:
            if used is not None and kind in _LENGTHS:
                pipe.execute_command(_LENGTHS[kind], key)
        lengths = iter(pipe.execute())
        for key, used, kind in found:
            if used is None:
                continue
            size = sizes.setdefault(key_family(key, prefix), FamilySize())
            size.keys += 1
            size.bytes += used
            size.elements += next(lengths) if kind in _LENGTHS else 1
    return dict(sorted(sizes.items()))


def per_person(families: Mapping[str, FamilySize], people: int) -> dict:
    """Bytes per person of each family that grows with people, and their sum."""
    figures = {family: size.bytes / people for family, size in families.items() if family_unit(family) == PERSON}
    return {"people": people, "families": figures, "total": sum(figures.values())}


def per_post(families: Mapping[str, FamilySize]) -> dict:
    """Bytes per key of each family that grows with posts, and their sum: a post with each of them."""
    figures = {
        family: size.bytes / size.keys for family, size in families.items() if family_unit(family) == POST and size.keys
    }
    return {"families": figures, "total": sum(figures.values())}


def stream_at_cap(
    client: redis.Redis, scratch: redis.Redis, family: str, cap: int, *, prefix: str = KEY_PREFIX
) -> int | None:
    """MEMORY USAGE of one of a stream family's keys grown to `cap` entries; None if it has no entries.

    A run is too short to fill anyone's streams: the longest one's entries are added
    again, in order, to a copy on `scratch` (another database) until it holds `cap`,
    which is then sized and deleted. The copy's ids are as far apart as the original's
    on average (a stream stores each id as a difference from its node's first).
    """
    app, entity, facet = family.split(":")
    streams = client.scan_iter(match=f"{prefix}:{app}:{entity}:*:{facet}", count=1000)
    longest = max(streams, key=client.xlen, default=None)
    entries = client.xrange(longest, count=cap) if longest is not None else []
    if not entries:
        return None
    first, last = (int(entry_id.split(b"-")[0]) for entry_id in (entries[0][0], entries[-1][0]))
    gap = max(1, round((last - first) / (len(entries) - 1))) if len(entries) > 1 else 1
    scratch.delete(SCRATCH_KEY)
    try:
        pipe = scratch.pipeline(transaction=False)
        for n in range(cap):
            pipe.xadd(SCRATCH_KEY, entries[n % len(entries)][1], id=f"{first + n * gap}-0")
        pipe.execute()
        return scratch.memory_usage(SCRATCH_KEY, samples=0)
    finally:
        scratch.delete(SCRATCH_KEY)


def per_person_at_caps(families: Mapping[str, FamilySize], people: int, at_cap: Mapping[str, int]) -> dict:
    """per_person, with every person's capped streams (`at_cap`: bytes of one, by family) full."""
    figures = {**per_person(families, people)["families"], **at_cap}
    return {"people": people, "families": figures, "total": sum(figures.values())}


def active_people(loads: list[tuple[list[Request], int]]) -> int:
    """People with a request among the entries each load got through (a plan and the requests it served)."""
    return len({request.user for plan, served in loads for request in plan[:served]})


# --- The servers' own counts -------------------------------------------------------------------


@dataclass(frozen=True)
class ServerSample:
    """One INFO of a server: its counters at a moment."""

    commands: dict[str, int]  # commandstats calls by command (lowercase), scripts' inner commands included
    reads: int  # total_reads_processed: read events, about one per round trip
    net_in: int
    net_out: int
    cpu: float  # used_cpu_sys + used_cpu_user, seconds: the main thread and its helpers
    used_memory: int
    used_memory_dataset: int


def sample_server(client: redis.Redis) -> ServerSample:
    info = client.info("stats", "cpu", "memory", "commandstats")
    return ServerSample(
        commands={
            name.removeprefix("cmdstat_"): int(stats["calls"])
            for name, stats in info.items()
            if name.startswith("cmdstat_")
        },
        reads=int(info["total_reads_processed"]),
        net_in=int(info["total_net_input_bytes"]),
        net_out=int(info["total_net_output_bytes"]),
        cpu=float(info["used_cpu_sys"]) + float(info["used_cpu_user"]),
        used_memory=int(info["used_memory"]),
        used_memory_dataset=int(info["used_memory_dataset"]),
    )


def server_figures(before: ServerSample, after: ServerSample, requests: int) -> dict:
    """What a server did between two samples, in all and per 1,000 req/s (per request, times PER)."""
    by_command = {name: count - before.commands.get(name, 0) for name, count in after.commands.items()}
    by_command = dict(sorted(((n, c) for n, c in by_command.items() if c), key=lambda item: -item[1]))
    commands = sum(by_command.values())
    cpu = after.cpu - before.cpu
    scale = PER / requests
    return {
        "commands": commands,
        "scripts": script_calls(by_command),
        "round_trips": after.reads - before.reads,
        "net_in": after.net_in - before.net_in,
        "net_out": after.net_out - before.net_out,
        "cpu_s": cpu,
        "used_memory_delta": after.used_memory - before.used_memory,
        "used_memory_after": after.used_memory,
        "used_memory_dataset_after": after.used_memory_dataset,
        "per_1000": {
            "commands": commands * scale,
            "round_trips": (after.reads - before.reads) * scale,
            "net_in_bytes": (after.net_in - before.net_in) * scale,
            "net_out_bytes": (after.net_out - before.net_out) * scale,
            # CPU seconds per second: the share of one core 1,000 req/s take.
            "cores": cpu * scale,
            "by_command": {name: count * scale for name, count in by_command.items()},
        },
        "cpu_us_per_command": cpu / commands * 1e6 if commands else None,
        "commands_per_core_s": commands / cpu if cpu else None,
    }


# --- Kestrel's own counts ------------------------------------------------------------------------

COMMANDS_SERIES = "kestrel_redis_commands_total"
# Commands that run a script: a client sends them, a script never does, so the servers'
# count of them and Kestrel's must agree.
SCRIPT_COMMANDS = frozenset({"EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO"})

# (role label, command, key family) -> commands sent
CommandCounts = Counter[tuple[str, str, str]]


def command_counts(text: str) -> CommandCounts:
    """Commands sent, by (role, command, key family), from a /metrics page."""
    counts: CommandCounts = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == COMMANDS_SERIES:
                labels = sample.labels
                counts[(labels["role"], labels["command"], labels["family"])] += int(sample.value)
    return counts


def role_commands(before: CommandCounts, after: CommandCounts) -> dict[str, dict[str, int]]:
    """Commands and script calls sent between two readings, by role.

    RQ's keys are the queue role's wherever its client is: while the queue role is the
    state role's database it shares the state role's client (and its `role` label), and
    only the key family tells the two apart.
    """
    roles: dict[str, Counter[str]] = {}
    for (role, command, family), count in after.items():
        sent = count - before.get((role, command, family), 0)
        figures = roles.setdefault(QUEUE if family == "rq" else role, Counter())
        figures["commands"] += sent
        figures["scripts"] += sent if command in SCRIPT_COMMANDS else 0
    return {role: dict(figures) for role, figures in sorted(roles.items())}


def script_calls(by_command: Mapping[str, int]) -> int:
    """Script calls among a server's commands (commandstats names are lowercase)."""
    return sum(count for name, count in by_command.items() if name.upper() in SCRIPT_COMMANDS)


def role_figures(servers: Mapping[str, dict], sent: Mapping[str, Mapping[str, int]], requests: int) -> dict:
    """Commands per role in the window, in all and per 1,000 req/s: run (the servers' INFO) and sent (Kestrel's).

    The queue role shares the state server, whose INFO cannot tell the two apart: its
    run figure is what Kestrel sent on RQ's keys, and the state role's is the server's
    less that.
    """
    queue = sent.get(QUEUE, {}).get("commands", 0)
    run = {CACHE: servers[CACHE]["commands"], STATE: servers[STATE]["commands"] - queue, QUEUE: queue}
    figures = {}
    for role, count in run.items():
        own = sent.get(role, {})
        figures[role] = {
            "server": CACHE if role == CACHE else STATE,
            "run": count,
            "sent": own.get("commands", 0),
            "scripts_sent": own.get("scripts", 0),
            "run_per_1000": count * PER / requests,
            "sent_per_1000": own.get("commands", 0) * PER / requests,
        }
    return figures


# --- Processes' CPU ------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """user + system CPU time of one process so far (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime, stime: fields 14 and 15


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, all) CPU seconds of the whole machine so far, every core summed (/proc/stat)."""
    with open("/proc/stat") as stat:
        values = [int(value) for value in stat.readline().split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return (sum(values) - idle) / _CLOCK_TICKS, sum(values) / _CLOCK_TICKS


def process_cpu(processes: Mapping[str, Process]) -> dict[str, dict[int, float]]:
    """CPU seconds so far of every live process of each child's session, by pid."""
    return {
        name: {pid: cpu_seconds(pid) for pid in session_members(process.pid)} for name, process in processes.items()
    }


def cpu_figures(before: dict[str, dict[int, float]], after: dict[str, dict[int, float]], seconds: float) -> dict:
    """Each child's CPU seconds in the window (its processes summed; a process started meanwhile
    counts from zero) and the busiest process's share of one core."""
    figures = {}
    for name, pids in after.items():
        spent = {pid: cpu - before.get(name, {}).get(pid, 0.0) for pid, cpu in pids.items()}
        figures[name] = {
            "cpu_s": sum(spent.values()),
            "processes": len(spent),
            "busiest_core_share": max(spent.values(), default=0.0) / seconds,
        }
    return figures


# --- The stack -----------------------------------------------------------------------------------


@dataclass
class CapacityStack:
    web: Gunicorn
    worker: Process
    cron: Process
    servers: dict[str, RedisServer]
    data: dict
    metrics_token: str
    # used_memory of each server before anything was written to it, and its version.
    empty_memory: dict[str, int] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def tokens(self) -> list[str]:
        return [user["token"] for user in self.data["users"]]

    def client(self, role: str, db: int = 0) -> redis.Redis:
        server = self.servers[role]
        return redis.Redis(host=server.host, port=server.port, db=db)


@contextlib.contextmanager
def capacity_stack(args: argparse.Namespace) -> Iterator[CapacityStack]:
    """Two Redis servers, SQLite with bench/load.py's people, gunicorn with production's config,
    an RQ worker and the cron scheduler: all private, all stopped after."""
    with contextlib.ExitStack() as stack:
        var_dir = Path(tempfile.mkdtemp(prefix="kestrel-capacity-"))
        stack.callback(shutil.rmtree, var_dir, ignore_errors=True)
        servers = {
            role: stack.enter_context(RedisServer(host=HOST, extra_config=config))
            for role, config in SERVER_CONFIG.items()
        }
        empty, versions = {}, {}
        for role, server in servers.items():
            log(f"redis {role}: {server.binary} on {server.url} (pid {server.process.pid})")
            client = redis.Redis(host=server.host, port=server.port)
            empty[role] = sample_server(client).used_memory
            versions[role] = client.info("server")["redis_version"]
            client.close()
        metrics_token = secrets.token_urlsafe(16)
        metrics_dir = var_dir / "prometheus"
        env = {
            **child_env(var_dir=var_dir, redis_url=f"{servers[STATE].url}/0"),
            **RATE_LIMITED,
            "REDIS_CACHE_URL": f"{servers[CACHE].url}/0",
            "METRICS_TOKEN": metrics_token,
        }
        log(f"database: SQLite in {var_dir}; migrating and seeding {args.users} people")
        run_manage(env, "migrate", "--noinput")
        output = run_manage(
            {**env, "JWT_ACCESS_LIFETIME": str(TOKEN_LIFETIME)},
            "shell",
            "-c",
            "from bench.load_data import seed; "
            f"seed(users={args.users}, posts={POSTS_EACH}, follows={FOLLOWS_EACH}, pages={PAGES})",
        )
        data = json.loads(output.strip().splitlines()[-1])
        # One folder for the long-running children, so /metrics sums the worker's and cron's
        # counts with the web workers'. gunicorn empties it when it starts: it starts first.
        metrics_dir.mkdir()
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        web = Gunicorn(
            env=env,
            log_path=var_dir / "gunicorn.log",
            worker_class="gthread",
            workers=args.workers,
            threads=args.threads,
            config=GUNICORN_CONFIG,
        )
        worker = Process("RQ worker", rq_worker_command(), env=env, log_path=var_dir / "worker.log")
        cron = Process("cron scheduler", rq_cron_command(), env=env, log_path=var_dir / "cron.log")
        for child in (web, worker, cron):
            stack.callback(child.stop)
            child.start()
            log(f"{child.name}: pid {child.pid}")
        yield CapacityStack(
            web=web,
            worker=worker,
            cron=cron,
            servers=servers,
            data=data,
            metrics_token=metrics_token,
            empty_memory=empty,
            versions=versions,
        )


def scrape_commands(stack: CapacityStack) -> CommandCounts:
    """Kestrel's command counts of every process, after making each web worker publish its own."""
    worker_metrics(stack.web.port, stack.web.workers or 1)  # each worker flushes before it answers
    status, _, content = http_request(
        stack.web.port, "GET", "/metrics", headers={"Authorization": f"Bearer {stack.metrics_token}"}
    )
    if status != 200:
        raise BenchError(f"GET /metrics answered {status}: {content[:300]!r}")
    return command_counts(content.decode())


# --- Measurements --------------------------------------------------------------------------------


def redis_floor(client: redis.Redis, ops: int) -> list[dict]:
    """The bench's floor loops, each with the server's CPU per command over it."""
    for op in REDIS_FLOOR_OPS:
        redis_floor_us(client, op, min(ops, 2_000))  # warm-up: connection, parser, CPU caches
    rows = []
    for op in REDIS_FLOOR_OPS:
        before = sample_server(client)
        us = redis_floor_us(client, op, ops)
        after = sample_server(client)
        figures = server_figures(before, after, 1)
        rows.append(
            {
                "name": op.name,
                "client_us_per_op": us,
                "client_ops_per_s": 1e6 / us,
                "commands": figures["commands"],
                "cpu_us_per_command": figures["cpu_us_per_command"],
                "commands_per_core_s": figures["commands_per_core_s"],
            }
        )
    client.delete(FLOOR_KEY)
    return rows


def run(args: argparse.Namespace) -> dict:
    wrk_path()  # before starting anything
    began = time.monotonic()
    started = datetime.datetime.now(datetime.UTC)
    with capacity_stack(args) as stack:
        port = stack.web.port
        wrk = WrkLoad(wrk_path(), threads=args.wrk_threads, connections=args.connections)
        planner = Planner(stack.data, seed=args.seed)
        tokens = stack.tokens
        clients = {role: stack.client(role) for role in stack.servers}
        try:
            measure_floor(port, wrk, FLOOR_WARMUP)  # fresh workers: imports, connections
            log(f"floor {FLOOR.path}: {args.floor_seconds} s")
            floor = measure_floor(port, wrk, args.floor_seconds)
            reads_only = {kind: weight for kind, weight in MIX.items() if kind not in WRITES}
            warmup_plan = planner.plan(math.ceil(floor.rps * args.warmup * PLAN_MARGIN) + 100, reads_only)
            log(f"warm-up: {args.warmup} s of the reads")
            warm = run_mix(
                port=port,
                tokens=tokens,
                plan=warmup_plan,
                seconds=args.warmup,
                threads=args.wrk_threads,
                connections=args.connections,
            )
            log(f"Redis floor loops: {args.redis_ops:,} commands each, on the cache server's DB {FLOOR_DB}")
            floor_client = stack.client(CACHE, db=FLOOR_DB)
            try:
                floor_loops = redis_floor(floor_client, args.redis_ops)
            finally:
                floor_client.close()

            plan = planner.plan(math.ceil(floor.rps * args.seconds * PLAN_MARGIN) + 100, MIX)
            processes = {"web": stack.web, "worker": stack.worker, "cron": stack.cron}
            counted_before = scrape_commands(stack)
            offset = stack.web.log_path.stat().st_size
            log(f"mix: {args.seconds} s, {args.users} people, {len(plan):,} requests planned")
            servers_before = {role: sample_server(client) for role, client in clients.items()}
            cpu_before, machine_before = process_cpu(processes), machine_busy_seconds()
            children_before, window_began = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
            mix = run_mix(
                port=port,
                tokens=tokens,
                plan=plan,
                seconds=args.seconds,
                threads=args.wrk_threads,
                connections=args.connections,
            )
            time.sleep(SETTLE_SECONDS)
            window = time.monotonic() - window_began
            servers_after = {role: sample_server(client) for role, client in clients.items()}
            cpu_after, machine_after = process_cpu(processes), machine_busy_seconds()
            children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
            counted_after = scrape_commands(stack)
            by_operation = access_log_counts(stack.web.log_path, offset)
            log("sizing every key (SCAN, MEMORY USAGE)")
            sizes = {role: size_keys(client) for role, client in clients.items()}
            scratch = stack.client(STATE, db=FLOOR_DB)
            try:
                at_cap = {
                    family: used
                    for family, cap in CAPPED_STREAMS.items()
                    if (used := stream_at_cap(clients[STATE], scratch, family, cap)) is not None
                }
            finally:
                scratch.close()
        finally:
            for client in clients.values():
                client.close()
        servers_description = {
            role: f"{Path(server.binary).name} {stack.versions[role]} on {server.url}, "
            + ", ".join(f"{name} {value}" for name, value in SERVER_CONFIG[role].items())
            for role, server in stack.servers.items()
        }
        web_description = stack.web.description
        empty_memory = stack.empty_memory

    served = sum(sum(counts.values()) for kind, counts in by_operation.items() if kind in MIX)
    if served == 0:
        raise BenchError("the access log shows no request of the mix")
    people = active_people([(warmup_plan, warm.load.requests), (plan, served)])
    servers = {role: server_figures(servers_before[role], servers_after[role], served) for role in clients}
    for role, figures in servers.items():
        figures["used_memory_empty"] = empty_memory[role]
    roles = role_figures(servers, role_commands(counted_before, counted_after), served)
    wrk_cpu = sum(getattr(children_after, f) - getattr(children_before, f) for f in ("ru_utime", "ru_stime"))
    processes_cpu = cpu_figures(cpu_before, cpu_after, window)
    for name, cpu in [("wrk", wrk_cpu), *((f"redis {role}", figures["cpu_s"]) for role, figures in servers.items())]:
        processes_cpu[name] = {"cpu_s": cpu, "processes": 1, "busiest_core_share": cpu / window}
    for figures in processes_cpu.values():
        figures["ms_per_request"] = figures["cpu_s"] / served * 1000
    busy = (machine_after[0] - machine_before[0]) / window
    families = {role: {family: asdict(size) for family, size in found.items()} for role, found in sizes.items()}
    return {
        "meta": {
            "started": started.isoformat(timespec="seconds"),
            "command": " ".join(["python -m bench capacity", *args.argv]),
            "web": web_description,
            "worker": " ".join(rq_worker_command()[1:]),
            "cron": " ".join(rq_cron_command()[1:]),
            "servers": servers_description,
            "database": "SQLite (WAL, IMMEDIATE transactions)",
            "load": f"wrk -t{args.wrk_threads} -c{args.connections} --timeout 10s, bench/load.py's Lua mix",
            "users": args.users,
            "seconds": args.seconds,
            "warmup": args.warmup,
            "floor_seconds": args.floor_seconds,
            "redis_ops": args.redis_ops,
            "seed": args.seed,
            "cpus": os.cpu_count(),
            "total_s": time.monotonic() - began,
        },
        "floor": asdict(floor),
        "mix": {
            **asdict(mix.load),
            "statuses": {str(code): count for code, count in sorted(mix.statuses.items())},
            "wrapped": mix.wrapped,
            "served": served,
            "window_s": window,
            "ratio_rps": mix.load.rps / floor.rps,
        },
        "operations": {kind: sum(counts.values()) for kind, counts in sorted(by_operation.items())},
        "servers": servers,
        "roles": roles,
        "processes": processes_cpu,
        "machine_busy_cores": busy,
        "redis_floor": floor_loops,
        "memory": {
            "families": families,
            "active_people": people,
            "per_person": {role: per_person(sizes[role], people) for role in sizes},
            "per_post": {role: per_post(sizes[role]) for role in sizes},
            "streams_at_cap": {
                family: {"cap": CAPPED_STREAMS[family], "bytes": used} for family, used in at_cap.items()
            },
            "per_person_at_caps": per_person_at_caps(sizes[STATE], people, at_cap),
        },
    }


# --- Report --------------------------------------------------------------------------------------


def _kb(value: float) -> str:
    return f"{value / 1024:,.0f}"


def _bytes(value: float) -> str:
    return f"{value:,.0f}"


def report(results: dict) -> str:
    meta, mix, floor, servers = results["meta"], results["mix"], results["floor"], results["servers"]
    lines = [
        f"Kestrel capacity run, {meta['started']}, {meta['cpus']} CPUs (the load generator shares them)",
        f"  web: {meta['web']}; worker: {meta['worker']}; cron: {meta['cron']}; {meta['database']}",
        *(f"  redis {role}: {description}" for role, description in meta["servers"].items()),
        f"  {meta['users']} people with bearer tokens; {meta['load']}; mix {meta['seconds']} s after a "
        f"{meta['warmup']} s warm-up of the reads; seed {meta['seed']}",
        "",
        format_table(
            ["load", "req/s", "p50 ms", "p99 ms", "req/s ratio", "requests", "errors"],
            [
                [
                    "drf-floor",
                    f"{floor['rps']:,.0f}",
                    f"{floor['p50_ms']:.2f}",
                    f"{floor['p99_ms']:.2f}",
                    "1.00",
                    f"{floor['requests']:,}",
                    str(floor["errors"]),
                ],
                [
                    "mix",
                    f"{mix['rps']:,.0f}",
                    f"{mix['p50_ms']:.2f}",
                    f"{mix['p99_ms']:.2f}",
                    f"{mix['ratio_rps']:.2f}",
                    f"{mix['requests']:,}",
                    str(mix["errors"]),
                ],
            ],
        ),
        f"  Mix answers: {', '.join(f'{code} {n:,}' for code, n in mix['statuses'].items())}; "
        f"{mix['served']:,} served in the {mix['window_s']:.1f} s window (access log).",
        "",
        f"Redis per 1,000 req/s of the mix (each server's INFO over the window: per request served x {PER:,})",
    ]
    rows = []
    for role, figures in servers.items():
        per = figures["per_1000"]
        rows.append(
            [
                role if role == CACHE else "state + queue",
                f"{per['commands']:,.0f}",
                f"{per['round_trips']:,.0f}",
                _kb(per["net_in_bytes"]),
                _kb(per["net_out_bytes"]),
                f"{per['cores']:.1%}",
                f"{figures['cpu_us_per_command']:.1f}" if figures["cpu_us_per_command"] else "-",
                f"{figures['used_memory_delta'] / 1024:+,.0f}",
                ", ".join(f"{name} {count:,.0f}" for name, count in list(per["by_command"].items())[:TOP_COMMANDS]),
            ]
        )
    lines += [
        format_table(
            [
                "server",
                "cmd/s",
                "round trips/s",
                "in KB/s",
                "out KB/s",
                "CPU of a core",
                "us CPU/cmd",
                "used_memory KB",
                "busiest commands/s",
            ],
            rows,
        ),
        "  cmd/s: commands run (commandstats: a script's inner commands included); round trips: read events;",
        "  CPU: used_cpu_sys + used_cpu_user; used_memory: its change over the window.",
        "",
    ]
    roles, window = results["roles"], mix["window_s"]
    rows = [
        [
            role,
            f"{figures['server']} server",
            f"{figures['run_per_1000']:,.0f}",
            f"{figures['sent_per_1000']:,.0f}",
            f"{figures['run'] / window:,.0f}",
            f"{figures['sent'] / window:,.0f}",
        ]
        for role, figures in roles.items()
    ]
    scripts_sent = roles[STATE]["scripts_sent"] + roles[QUEUE]["scripts_sent"]
    lines += [
        "Commands per role: run (the servers' INFO) and sent (Kestrel's counters, /metrics, every process)",
        format_table(
            ["role", "on", "run/s per 1,000 req/s", "sent/s per 1,000", f"run/s at {mix['rps']:,.0f} req/s", "sent/s"],
            rows,
            left=2,
        ),
        "  The queue role shares the state server: its commands are those Kestrel sent on RQ's keys, and the",
        "  state role's run figure is the server's less them. Run exceeds sent by what scripts run inside.",
        f"  Script calls in the window: cache server {servers[CACHE]['scripts']:,} run, "
        f"{roles[CACHE]['scripts_sent']:,} sent; state server {servers[STATE]['scripts']:,} run, "
        f"{scripts_sent:,} sent (state and queue).",
        "",
    ]
    rows = [
        [
            name,
            str(figures["processes"]),
            f"{figures['cpu_s']:.2f}",
            f"{figures['ms_per_request']:.3f}",
            f"{figures['cpu_s'] / mix['window_s']:.2f}",
            f"{figures['busiest_core_share']:.0%}",
        ]
        for name, figures in results["processes"].items()
    ]
    lines += [
        f"CPU over the window ({mix['window_s']:.1f} s; the whole machine was busy "
        f"{results['machine_busy_cores']:.2f} of {meta['cpus']} cores)",
        format_table(["process", "processes", "CPU s", "CPU ms/request", "cores", "busiest process"], rows),
        "  web: gunicorn's master and workers; worker: rqworker and its scheduler; wrk: the load generator.",
        "",
        f"Redis floor loops ({meta['redis_ops']:,} commands each from one redis-py client, the cache server's CPU)",
        format_table(
            ["loop", "client us/cmd", "client cmd/s", "server us CPU/cmd", "cmd per core-second"],
            [
                [
                    row["name"],
                    f"{row['client_us_per_op']:.1f}",
                    f"{row['client_ops_per_s']:,.0f}",
                    f"{row['cpu_us_per_command']:.2f}",
                    f"{row['commands_per_core_s']:,.0f}",
                ]
                for row in results["redis_floor"]
            ],
        ),
        "",
        *memory_lines(results),
        "",
        f"Took {meta['total_s']:.0f} s. Reproduce: {meta['command']} (--seed {meta['seed']} replays this plan)",
    ]
    return "\n".join(lines)


def memory_lines(results: dict) -> list[str]:
    memory = results["memory"]
    people = memory["active_people"]
    rows = []
    for role, families in memory["families"].items():
        for family, size in families.items():
            unit = family_unit(family)
            rows.append(
                [
                    family,
                    role,
                    unit,
                    f"{size['keys']:,}",
                    f"{size['elements']:,}",
                    _bytes(size["bytes"]),
                    _bytes(size["bytes"] / size["keys"]),
                    _bytes(size["bytes"] / size["elements"]) if size["elements"] > size["keys"] else "-",
                    _bytes(size["bytes"] / people) if unit == PERSON else "-",
                ]
            )
    servers = results["servers"]
    summary = []
    for role in memory["families"]:
        sized = sum(size["bytes"] for size in memory["families"][role].values())
        figures = servers[role]
        summary.append(
            f"  {role}: keys sized {sized / 1024:,.0f} KB; used_memory {figures['used_memory_empty'] / 1024:,.0f} KB "
            f"empty, {figures['used_memory_after'] / 1024:,.0f} KB after the run "
            f"({figures['used_memory_delta'] / 1024:+,.0f} KB in the window)"
        )
    post = memory["per_post"]
    person = memory["per_person"]
    return [
        f"Memory after the run, by key family (MEMORY USAGE SAMPLES 0; {people} people active)",
        format_table(
            ["family", "server", "grows with", "keys", "elements", "bytes", "bytes/key", "bytes/element"]
            + ["bytes/person"],
            rows,
            left=3,
        ),
        "  elements: a stream's entries, a set's or sorted set's members, a hash's fields, a list's items; a string",
        "  is one. bytes/person: the family's bytes over the people active in the run.",
        *summary,
        f"  per cached post (posts:post): {post[CACHE]['families'].get('posts:post', 0):,.0f} B on the cache; "
        f"its views and viewers on the state: {post[STATE]['total']:,.0f} B",
        f"  per active person: {person[STATE]['total']:,.0f} B on the state, "
        f"{person[CACHE]['total']:,.0f} B on the cache",
        "  at the stream caps (a copy of the longest of each family grown to its cap): "
        + ", ".join(
            f"{family} {figures['cap']:,} entries {figures['bytes']:,} B"
            for family, figures in memory["streams_at_cap"].items()
        )
        + f"; per person with all three full {memory['per_person_at_caps']['total']:,.0f} B on the state",
    ]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench capacity", description=__doc__.split("\n\n")[0])
    add_mix_arguments(parser)
    parser.add_argument("--redis-ops", type=int, default=10_000, help="commands per Redis floor loop (default 10000)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the plan (default: random, printed)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"JSON output (default {DEFAULT_OUTPUT})")
    args = parser.parse_args(argv)
    if min(args.seconds, args.warmup, args.floor_seconds) < 1 or args.redis_ops < 1:
        parser.error("--seconds, --warmup and --floor-seconds are whole seconds, at least 1; --redis-ops at least 1")
    if args.users < 2 or args.connections < args.wrk_threads:
        parser.error("--users must be at least 2 and --connections at least --wrk-threads")
    if args.seed is None:
        args.seed = secrets.randbelow(2**31)
    args.argv = argv
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # `kill` or a stopping `make` sends SIGTERM: an exception, so the servers are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    log(f"seed {args.seed} (--seed {args.seed} replays the plan)")
    try:
        results = run(args)
    except StackError as exc:  # a BenchError, or a child the launcher (devstack) started failed
        print(f"bench capacity: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench capacity: interrupted; servers stopped", file=sys.stderr)
        return 130
    print(report(results))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nJSON: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
