"""`python -m bench` (or `make bench`): measure Kestrel against floors taken in the same run.

    python -m bench                       # every group: 3 runs of 5 s per path, sync workers, the children
    python -m bench --worker-class gthread
    python -m bench --quick               # 1 run of 2 s and smaller children: a smoke test of everything
    python -m bench --only post-miss --no-stampede
    python -m bench --group jobs          # only the jobs benchmark (repeatable)
    python -m bench --skip feeds --skip protect
    python -m bench --cluster             # the HTTP scenarios on one server and on Redis Cluster, compared
    python -m bench load                  # a mixed load of many people against the floor (bench/load.py)
    python -m bench capacity              # that mix's Redis cost per role, per 1,000 req/s (bench/capacity.py)

Groups (bench.scenarios.GROUPS): http (the floor, the article's naive read of a post,
GET /api/posts/{id} anonymous, logged in and with a token), writes (POST /api/posts,
likes), stampede (bench/stampede.py), jobs (bench/jobqueue.py: RQ workers), feeds (GET
/api/feed, bench/fanout.py, SSE latency in bench/sse.py), protect (the rate limiter's
cost per request over HTTP and alone in bench/limiter.py, on a site form in
bench/forms.py, and bench/locks.py). A few HTTP scenarios are left out of the default
run and run when named: --only post-nocache.

With --cluster (`make bench-cluster`) a second stack runs beside the first, the cache
and state roles each on a private Redis Cluster and the queue role on a server of its own;
the HTTP scenarios run on both, their timed runs interleaved, and a table prints what the
cluster costs each path (req/s and Redis round trips per request, cluster over one server).

Prints the figures as tables, ending with a summary of every path against the floor
and the naive reads and the targets each meets, and writes them to var/bench/latest.json.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import json
import math
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import redis.utils

from bench.forms import measure_forms
from bench.harness import (
    CLUSTER_PRIMARIES,
    FLOOR_DB,
    FLOOR_KEY,
    BenchContext,
    BenchError,
    CacheCounts,
    LoadGenerator,
    LoadResult,
    PathRotation,
    RedisTraffic,
    bench_stack,
    check_json,
    measure_redis_traffic,
    median,
    metrics_delta,
    pick_load_generator,
    redis_floor_us,
    run_child,
    run_stampede,
    worker_metrics,
)
from bench.scenarios import (
    DRF_FLOOR,
    FANOUT_ROUNDS_LARGE,
    FANOUT_ROUNDS_LARGE_QUICK,
    FANOUT_ROUNDS_SMALL,
    FANOUT_ROUNDS_SMALL_QUICK,
    FANOUT_SIZES,
    FANOUT_SIZES_QUICK,
    GROUPS,
    HTTP_SCENARIOS,
    JOBS_COUNT,
    JOBS_COUNT_QUICK,
    LIMITER_SECONDS,
    LIMITER_SECONDS_QUICK,
    LOCK_SECONDS,
    LOCK_SECONDS_QUICK,
    LOCK_THREADS,
    NAIVE,
    NAIVE_COUNTED,
    RATE_LIMITED,
    REDIS_FLOOR_OPS,
    SSE_NOTIFICATIONS,
    SSE_NOTIFICATIONS_QUICK,
    SSE_RATE,
    SSE_STREAMS,
    SSE_STREAMS_QUICK,
    STAMPEDE_READERS,
    STAMPEDE_ROUNDS,
    STAMPEDE_ROUNDS_QUICK,
    TRAFFIC_SLACK,
    HttpScenario,
    StateTraffic,
    Target,
    create_hot_post,
)
from bench.sse import measure_sse_latency
from devstack.processes import PROJECT_ROOT, StackError
from devstack.report import format_table

DEFAULT_OUTPUT = PROJECT_ROOT / "var" / "bench" / "latest.json"
# Pause between timed runs; the backlog a run leaves (one request per connection) takes milliseconds.
SETTLE_SECONDS = 0.3
# View-counter round trips per request below this are a background flush's, not the request's
# (bench.__main__.request_path_traffic): inline, every read sends one.
BACKGROUND_BELOW = 0.5


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seconds", type=float, default=5.0, help="length of each timed HTTP run; whole seconds with wrk (default 5)"
    )
    parser.add_argument("--runs", type=int, default=3, help="timed runs per path; the median is reported (default 3)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load per path before timing (default 1)")
    parser.add_argument("--worker-class", choices=["sync", "gthread"], default="sync", help="gunicorn worker class")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes (default 2)")
    parser.add_argument("--threads", type=int, default=4, help="threads per gthread worker (default 4)")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections (default 16)")
    parser.add_argument(
        "--load", choices=["auto", "wrk", "python"], default="auto", help="load generator; auto takes wrk when on PATH"
    )
    parser.add_argument("--redis-ops", type=int, default=10_000, help="commands per Redis floor loop (default 10000)")
    parser.add_argument(
        "--traffic-requests", type=int, default=200, help="sequential requests counting Redis commands (default 200)"
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help="run only these HTTP scenarios, of any group (repeatable)",
    )
    parser.add_argument(
        "--group",
        action="append",
        choices=GROUPS,
        help="run only these groups (repeatable; default: all): http (the floor, the naive reads, "
        "GET /api/posts/{id}), writes (POST /api/posts, likes), stampede, jobs (RQ workers), "
        "feeds (GET /api/feed, fan-out, SSE latency), protect (rate limiter, site forms, locks)",
    )
    parser.add_argument("--skip", action="append", choices=GROUPS, default=[], help="skip a group (repeatable)")
    parser.add_argument(
        "--stampede",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=f"run the stampede benchmark: {STAMPEDE_READERS} readers of a just-expired post (default on; "
        "--no-stampede is --skip stampede)",
    )
    parser.add_argument(
        "--stampede-rounds",
        type=int,
        default=STAMPEDE_ROUNDS,
        help=f"timed stampede rounds per variant; the median is reported (default {STAMPEDE_ROUNDS})",
    )
    parser.add_argument(
        "--jobs-count", type=int, default=JOBS_COUNT, help=f"jobs per kind and worker (default {JOBS_COUNT})"
    )
    parser.add_argument(
        "--fanout-followers",
        default=",".join(map(str, FANOUT_SIZES)),
        help="comma-separated follower counts of the fan-out benchmark (default %(default)s)",
    )
    parser.add_argument(
        "--sse-streams", type=int, default=SSE_STREAMS, help=f"open notification streams (default {SSE_STREAMS})"
    )
    parser.add_argument(
        "--sse-notifications",
        type=int,
        default=SSE_NOTIFICATIONS,
        help=f"notifications sent to them in all (default {SSE_NOTIFICATIONS})",
    )
    parser.add_argument(
        "--lock-seconds", type=float, default=LOCK_SECONDS, help=f"per lock variant (default {LOCK_SECONDS:g})"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 1 run of 2 s, short warm-up, fewer Redis ops, every child benchmark smaller",
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="run the HTTP scenarios on a second stack too, the cache and state roles each on a private "
        f"{CLUSTER_PRIMARIES}-primary Redis Cluster (the queue role on a server of its own), interleaved with the "
        "one-server runs, and print the cluster's cost: req/s and round trips per request, cluster over one "
        "server. Only the HTTP scenarios run (no stampede, jobs, fan-out, SSE, limiter, locks or forms)",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"JSON output (default {DEFAULT_OUTPUT})")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.seconds, args.warmup, args.redis_ops, args.traffic_requests = 1, 2.0, 0.5, 5_000, 50
        args.stampede_rounds = STAMPEDE_ROUNDS_QUICK
        args.jobs_count = JOBS_COUNT_QUICK
        args.fanout_followers = ",".join(map(str, FANOUT_SIZES_QUICK))
        args.sse_streams, args.sse_notifications = SSE_STREAMS_QUICK, SSE_NOTIFICATIONS_QUICK
        args.lock_seconds = LOCK_SECONDS_QUICK
    if args.runs < 1 or args.seconds <= 0 or args.stampede_rounds < 1:
        parser.error("--runs and --stampede-rounds must be at least 1 and --seconds positive")
    if args.jobs_count < 1 or args.sse_streams < 1 or args.sse_notifications < 1 or args.lock_seconds <= 0:
        parser.error("--jobs-count, --sse-streams and --sse-notifications must be at least 1, --lock-seconds positive")
    args.groups = [g for g in GROUPS if g in (args.group or GROUPS) and g not in args.skip]
    if not args.stampede and "stampede" in args.groups:
        args.groups.remove("stampede")
    return args


def select_scenarios(only: list[str] | None, groups: list[str]) -> list[HttpScenario]:
    """The scenarios asked for (by name, else by group), plus the baselines and counterparts they are compared with."""
    by_name = {scenario.name: scenario for scenario in HTTP_SCENARIOS}
    if only:
        unknown = sorted(set(only) - set(by_name))
        if unknown:
            raise BenchError(f"unknown scenario(s) {unknown}; known: {sorted(by_name)}")
        wanted = set(only)
    else:
        wanted = {scenario.name for scenario in HTTP_SCENARIOS if scenario.group in groups and not scenario.optional}
    for name in list(wanted):
        scenario = by_name[name]
        wanted |= {other for other in (scenario.baseline, scenario.counterpart) if other}
        if scenario.naive_compare:
            wanted |= {NAIVE, NAIVE_COUNTED}
    if wanted:  # the summary divides every path by the floor
        wanted.add(DRF_FLOOR)
    return [scenario for scenario in HTTP_SCENARIOS if scenario.name in wanted]


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def versions(load: LoadGenerator) -> dict[str, str]:
    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    return {
        "python": platform.python_version(),
        "django": version("Django"),
        "djangorestframework": version("djangorestframework"),
        "gunicorn": version("gunicorn"),
        "redis-py": version("redis"),
        "hiredis": version("hiredis") if redis.utils.HIREDIS_AVAILABLE else "not used",
        "load": load.name,
        "cpus": str(os.cpu_count()),
    }


# --- Measurements ------------------------------------------------------------------


def measure_redis_floor(ctx: BenchContext, *, ops: int, runs: int) -> list[dict]:
    client = ctx.redis(db=FLOOR_DB)
    try:
        for op in REDIS_FLOOR_OPS:
            redis_floor_us(client, op, min(ops, 2_000))  # warm-up: connection, parser, CPU caches
        results = []
        for op in REDIS_FLOOR_OPS:
            samples = [redis_floor_us(client, op, ops) for _ in range(runs)]
            us = median(samples)
            results.append(
                {
                    "name": op.name,
                    "command": op.command,
                    "pipeline": op.pipeline,
                    "us_per_op": us,
                    "ops_per_s": 1e6 / us,
                    "samples_us": samples,
                }
            )
        client.delete(FLOOR_KEY)
        return results
    finally:
        client.close()


def scenario_headers(ctx: BenchContext, scenario: HttpScenario) -> dict[str, str]:
    return ctx.headers(needs_session=scenario.needs_session, bearer=scenario.bearer, json_body=bool(scenario.body))


class HttpMeasurement:
    """The HTTP scenarios on one stack: each prepared, checked, warmed up and its Redis traffic
    counted once (`prepare`), then timed one run at a time (`timed_run`), so that the runs
    of two stacks interleave as the paths of one do.

    With `tolerate`, a scenario whose preparation, check or count fails is left out, its
    error kept in `unmeasured`, instead of ending the benchmark: on the cluster's stack a
    path that does not work on Redis Cluster yet must not take the others' figures with it.
    """

    def __init__(
        self,
        ctx: BenchContext,
        scenarios: list[HttpScenario],
        load: LoadGenerator,
        args: argparse.Namespace,
        *,
        label: str = "",
        tolerate: bool = False,
    ) -> None:
        self.ctx, self.load, self.args = ctx, load, args
        self.scenarios = list(scenarios)
        self.label = label
        self.tolerate = tolerate
        self.unmeasured: dict[str, str] = {}
        self.traffic: dict[str, RedisTraffic] = {}
        self.rotations: dict[str, PathRotation] = {}
        self.runs: dict[str, list[LoadResult]] = {scenario.name: [] for scenario in scenarios}
        self.counts: dict[str, list[CacheCounts]] = {scenario.name: [] for scenario in scenarios}

    def prepare(self) -> None:
        clients = self.ctx.traffic_clients()
        try:
            for scenario in list(self.scenarios):
                try:
                    self._prepare(scenario, clients)
                except StackError as exc:
                    if not self.tolerate:
                        raise
                    log(f"{self.label}{scenario.name} left out: {first_line(exc)}")
                    self.unmeasured[scenario.name] = str(exc)
                    self.scenarios.remove(scenario)
        finally:
            for client in clients:
                client.close()

    def _prepare(self, scenario: HttpScenario, clients: list[redis.Redis]) -> None:
        ctx, args = self.ctx, self.args
        # Servers for other settings start here, on first use (see BenchContext.server).
        server = ctx.server(scenario.env)
        if scenario.prepare:
            scenario.prepare(ctx)
        headers = scenario_headers(ctx, scenario)
        request = {"method": scenario.method, "body": scenario.body}
        rotation = PathRotation(scenario.paths(ctx) if scenario.paths else [scenario.path])
        self.rotations[scenario.name] = rotation
        before_load(ctx, scenario)
        check_json(
            server.port,
            rotation.take(1)[0],
            headers,
            scenario.expect_keys,
            **request,
            expect_status=scenario.expect_status,
            expect_headers=scenario.expect_headers,
            check=scenario.check,
        )
        log(f"{self.label}warm-up {scenario.name} ({args.warmup:g} s)")
        warm = self.load.run(
            port=server.port, paths=rotation.upcoming(), headers=headers, seconds=args.warmup, **request
        )
        rotation.advance(warm.requests, args.connections)
        before_load(ctx, scenario)
        # Sequential requests on a warm server: the counters then hold this path's traffic only.
        self.traffic[scenario.name] = measure_redis_traffic(
            clients,
            server.port,
            rotation.take(args.traffic_requests),
            headers,
            **request,
            expect_status=scenario.expect_status,
        )

    def timed_run(self, run: int) -> None:
        """One timed run of every scenario, in turn: a drift in machine load during the
        benchmark hits every path alike."""
        ctx, args = self.ctx, self.args
        for scenario in self.scenarios:
            log(f"{self.label}run {run}/{args.runs} {scenario.name} ({args.seconds:g} s)")
            server = ctx.server(scenario.env)
            rotation = self.rotations[scenario.name]
            headers = scenario_headers(ctx, scenario)
            before_load(ctx, scenario)
            # gunicorn still serves what the last run left in its listen backlog; let it
            # finish so it does not eat into this run.
            time.sleep(SETTLE_SECONDS)
            before = worker_metrics(server.port, server.workers) if scenario.cache_family else None
            result = self.load.run(
                port=server.port,
                paths=rotation.upcoming(),
                headers=headers,
                seconds=args.seconds,
                method=scenario.method,
                body=scenario.body,
            )
            rotation.advance(result.requests, args.connections)
            self.runs[scenario.name].append(result)
            if before is not None:
                delta = metrics_delta(before, worker_metrics(server.port, server.workers))
                self.counts[scenario.name].append(CacheCounts.from_metrics(delta, scenario.cache_family))

    def results(self) -> list[dict]:
        ctx = self.ctx
        results = []
        for scenario in self.scenarios:
            samples = self.runs[scenario.name]
            rps = [r.rps for r in samples]
            cache = sum(self.counts[scenario.name], CacheCounts()) if scenario.cache_family else None
            results.append(
                {
                    "name": scenario.name,
                    "path": scenario.path,
                    "method": scenario.method,
                    "description": scenario.description,
                    "env": dict(scenario.env),
                    "settings": scenario.env_label,
                    "server": ctx.server(scenario.env).description,
                    "redis_layout": ctx.redis_layout,
                    "distinct_paths": len(self.rotations[scenario.name].paths),
                    "paths_wrapped": self.rotations[scenario.name].wrapped,
                    "single_use": scenario.single_use,
                    "group": scenario.group,
                    "baseline": scenario.baseline,
                    "counterpart": scenario.counterpart,
                    "design_ratio": scenario.design_ratio,
                    "naive_compare": scenario.naive_compare,
                    "targets": [asdict(target) for target in scenario.targets],
                    # Each figure is the median over runs on its own.
                    "rps": median(rps),
                    # How far apart the runs were: a difference between paths smaller than this is noise.
                    "rps_spread": (max(rps) - min(rps)) / median(rps),
                    "p50_ms": median([r.p50_ms for r in samples]),
                    "p99_ms": median([r.p99_ms for r in samples]),
                    "errors": sum(r.errors for r in samples),
                    "bad_status": sum(r.bad_status for r in samples),
                    "redis": asdict(self.traffic[scenario.name]),
                    "redis_by_role": by_role(self.traffic[scenario.name], scenario.state_traffic),
                    "cache_family": scenario.cache_family,
                    "expect_miss": scenario.expect_miss,
                    # Summed over the timed runs, from every worker's counters.
                    "cache": cache_figures(cache) if cache else None,
                    "cache_runs": [asdict(c) for c in self.counts[scenario.name]],
                    "runs": [asdict(r) for r in samples],
                }
            )
        by_name = {result["name"]: result for result in results}
        floor = by_name.get(DRF_FLOOR)
        for result in results:
            base = by_name.get(result["baseline"]) if result["baseline"] else result
            result["ratio"] = result["rps"] / base["rps"] if base else None
            # Time per request beyond the baseline's, from throughput: what this path's extra work costs.
            result["extra_us_per_request"] = (1e6 / result["rps"] - 1e6 / base["rps"]) if base else None
        for result in results:
            result["summary"] = summary_figures(result, floor, by_name.get(NAIVE), by_name.get(NAIVE_COUNTED))
        return results


def measure_http(legs: list[HttpMeasurement], args: argparse.Namespace) -> list[list[dict]]:
    """Every leg's scenarios prepared, then their timed runs interleaved run by run; each leg's results."""
    for leg in legs:
        leg.prepare()
    for run in range(1, args.runs + 1):
        for leg in legs:
            leg.timed_run(run)
    return [leg.results() for leg in legs]


def first_line(error: object) -> str:
    """The first line of an error's message (a child's failure carries its whole output)."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def summary_figures(result: dict, floor: dict | None, naive: dict | None, naive_counted: dict | None) -> dict:
    """The summary's row of one scenario: ratios to the floor and the naive reads, traffic, targets."""

    def ratio(other: dict | None, key: str = "rps") -> float | None:
        return result[key] / other[key] if other and other[key] else None

    compare = result["naive_compare"]
    traffic = request_path_traffic(result["redis"], result["redis_by_role"])
    figures = {
        "floor_ratio": ratio(floor),
        "naive_ratio": ratio(naive) if compare else None,
        "naive_counted_ratio": ratio(naive_counted) if compare else None,
        "p50_ratio": ratio(floor, "p50_ms"),
        "p99_ratio": ratio(floor, "p99_ms"),
        "round_trips": traffic["round_trips"],
        "commands": traffic["commands"],
        "background_round_trips": traffic["background_round_trips"],
        "background_commands": traffic["background_commands"],
    }
    figures["targets"] = [
        {
            **target,
            "label": Target(**target).label,
            "value": figures[target["measure"]],
            "met": Target(**target).met(figures[target["measure"]]),
        }
        for target in result["targets"]
    ]
    return figures


def request_path_traffic(redis_info: dict, roles: dict | None) -> dict[str, float]:
    """Round trips and commands per request on the request's own path, and those of background flushes.

    A read of a post records its view. Sent inline, that is one state-role pipeline in
    every request: its INCRBY count per request is 1. Buffered in the process and flushed
    in the background, one pipeline carries all the views of a flush interval, and the
    count falls far below 1: those round trips are then the background's, amortized over
    the requests counted, and left out of the request's own path (they are still in the
    totals, RT/req and cmd/req).
    """
    background_round_trips = background_commands = 0.0
    if roles is not None and roles["state_round_trips"] < BACKGROUND_BELOW:
        background_round_trips, background_commands = roles["state_round_trips"], roles["state_commands"]
    return {
        "round_trips": redis_info["reads"] - background_round_trips,
        "commands": redis_info["commands"] - background_commands,
        "background_round_trips": background_round_trips,
        "background_commands": background_commands,
    }


def before_load(ctx: BenchContext, scenario: HttpScenario) -> None:
    if scenario.before_load:
        scenario.before_load(ctx)


def by_role(traffic: RedisTraffic, state: StateTraffic | None) -> dict[str, float] | None:
    """Commands and round trips per request split between the roles, for a path whose state traffic is known."""
    if state is None:
        return None
    state_commands = sum(traffic.by_command.get(name, 0.0) for name in state.commands)
    state_round_trips = traffic.by_command.get(state.per_round_trip, 0.0)
    return {
        "state_commands": state_commands,
        "state_round_trips": state_round_trips,
        "cache_commands": traffic.commands - state_commands,
        "cache_round_trips": traffic.reads - state_round_trips,
    }


def cache_figures(counts: CacheCounts) -> dict:
    reads = counts.reads
    share = (lambda n: n / reads) if reads else (lambda n: None)
    return {
        **asdict(counts),
        "reads": reads,
        "l1_hit_ratio": share(counts.l1_hits),
        "redis_hit_ratio": share(counts.redis_hits),
        "miss_ratio": share(counts.misses),
        "loads_per_read": share(counts.loads),
    }


def measure_stampede(ctx: BenchContext, args: argparse.Namespace) -> dict:
    create_hot_post(ctx)
    log(f"stampede: {STAMPEDE_READERS} readers, {args.stampede_rounds} round(s) per variant")
    return run_stampede(ctx, post_id=ctx.fixtures["hot_post"], readers=STAMPEDE_READERS, rounds=args.stampede_rounds)


def measure_jobs(ctx: BenchContext, args: argparse.Namespace) -> dict:
    log(f"jobs: {args.jobs_count} jobs of each kind per worker setup (bench/jobqueue.py)")
    return run_child(ctx, "bench.jobqueue", [f"--jobs={args.jobs_count}", f"--log-dir={ctx.var_dir}"])


def measure_fanout(ctx: BenchContext, args: argparse.Namespace) -> dict:
    log(f"fan-out: a post by authors with {args.fanout_followers} followers")
    if args.quick:
        small, large = FANOUT_ROUNDS_SMALL_QUICK, FANOUT_ROUNDS_LARGE_QUICK
    else:
        small, large = FANOUT_ROUNDS_SMALL, FANOUT_ROUNDS_LARGE
    return run_child(
        ctx,
        "bench.fanout",
        [f"--followers={args.fanout_followers}", f"--rounds-small={small}", f"--rounds-large={large}"],
    )


def measure_sse(ctx: BenchContext, args: argparse.Namespace) -> dict:
    return measure_sse_latency(ctx, streams=args.sse_streams, notifications=args.sse_notifications, rate=SSE_RATE)


def measure_locks(ctx: BenchContext, args: argparse.Namespace) -> dict:
    log(f"locks: {args.lock_seconds:g} s per variant, {LOCK_THREADS} threads contending")
    return run_child(ctx, "bench.locks", [f"--seconds={args.lock_seconds}", f"--threads={LOCK_THREADS}"])


def measure_limiter(ctx: BenchContext, args: argparse.Namespace) -> dict:
    seconds = LIMITER_SECONDS_QUICK if args.quick else LIMITER_SECONDS
    log(f"rate limiter in process: {seconds:g} s per variant")
    return run_child(ctx, "bench.limiter", [f"--seconds={seconds}"], env=RATE_LIMITED)


def limiter_costs(http: list[dict]) -> list[dict]:
    """What each scenario's settings add over its counterpart (the rate limiter's cost per request)."""
    by_name = {result["name"]: result for result in http}
    rows = []
    for result in http:
        off = by_name.get(result["counterpart"]) if result["counterpart"] else None
        if off is None:
            continue
        on_redis, off_redis = result["redis"], off["redis"]
        added = {
            name: on_redis["by_command"].get(name, 0.0) - off_redis["by_command"].get(name, 0.0)
            for name in sorted(set(on_redis["by_command"]) | set(off_redis["by_command"]))
        }
        rows.append(
            {
                "name": result["name"],
                "counterpart": off["name"],
                "settings": result["settings"],
                "rps_off": off["rps"],
                "rps_on": result["rps"],
                "ratio_off": off["ratio"],
                "ratio_on": result["ratio"],
                "on_over_off": result["rps"] / off["rps"],
                "added_us_per_request": 1e6 / result["rps"] - 1e6 / off["rps"],
                "added_round_trips": on_redis["reads"] - off_redis["reads"],
                "added_commands": on_redis["commands"] - off_redis["commands"],
                # Fractions are what happened now and then during the count (a post's view
                # counter flushed every 1000 views), not what each request sends.
                "added_by_command": {name: count for name, count in added.items() if abs(count) >= 0.05},
            }
        )
    return rows


def cluster_costs(one_server: list[dict], cluster: list[dict], unmeasured: dict[str, str]) -> dict:
    """What the cluster costs each path: its figures on the cluster's stack over the same path's on one server."""
    on_cluster = {result["name"]: result for result in cluster}
    rows = []
    for result in one_server:
        other = on_cluster.get(result["name"])
        if other is None:
            continue
        one_redis, cluster_redis = result["redis"], other["redis"]
        floor_one, floor_cluster = result["summary"]["floor_ratio"], other["summary"]["floor_ratio"]
        rows.append(
            {
                "name": result["name"],
                "settings": result["settings"],
                "rps_one": result["rps"],
                "rps_cluster": other["rps"],
                "rps_ratio": other["rps"] / result["rps"],
                # Each stack's own floor (no Redis): the machine's drift between the two shows here.
                "floor_ratio_one": floor_one,
                "floor_ratio_cluster": floor_cluster,
                # The same over each stack's floor, as the bench compares paths: the drift divided out.
                "floor_ratios_ratio": floor_cluster / floor_one if floor_one and floor_cluster else None,
                "added_us_per_request": 1e6 / other["rps"] - 1e6 / result["rps"],
                "p99_ratio": other["p99_ms"] / result["p99_ms"] if result["p99_ms"] else None,
                "round_trips_one": one_redis["reads"],
                "round_trips_cluster": cluster_redis["reads"],
                "round_trips_ratio": cluster_redis["reads"] / one_redis["reads"] if one_redis["reads"] else None,
                "commands_one": one_redis["commands"],
                "commands_cluster": cluster_redis["commands"],
                "errors_cluster": other["errors"] + other["bad_status"],
            }
        )
    return {"rows": rows, "unmeasured": unmeasured, "http": cluster}


# --- Report ------------------------------------------------------------------------


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None or math.isnan(value) else format(value, spec)


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def report(meta: dict, results: dict) -> str:
    redis_floor, http = results["redis_floor"], results["http"]
    lines = [
        f"Kestrel benchmark, {meta['started']}",
        f"  {meta['server']}; load: {meta['versions']['load']}; "
        f"{meta['runs']} run(s) x {meta['seconds']:g} s per path, medians",
        "  " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if k != "load"),
        f"  groups: {', '.join(meta['groups']) or 'none'}"
        + (" (--quick: every benchmark reduced)" if meta["quick"] else ""),
        "",
        f"Redis floor: redis-py loop on the private server ({meta['redis_ops']} commands a loop, median of "
        f"{meta['runs']})",
    ]
    unpipelined = {op["command"]: op["us_per_op"] for op in redis_floor if op["pipeline"] == 1}
    rows = [
        [
            op["name"],
            fmt(op["us_per_op"], ".2f"),
            fmt(op["ops_per_s"], ",.0f"),
            fmt(unpipelined[op["command"]] / op["us_per_op"], ".1f") + "x",
        ]
        for op in redis_floor
    ]
    lines += [format_table(["operation", "us/op", "ops/s", "vs unpipelined"], rows), ""]
    if http:
        lines += http_section(meta, http, unpipelined.get("GET"))
    if results["rate_limiter"] or results["limiter"]:
        lines += ["", *limiter_table(results["rate_limiter"], results["limiter"])]
    if results["cluster"]:
        lines += ["", *cluster_table(results["cluster"])]
    if results["stampede"]:
        lines += ["", *stampede_table(results["stampede"])]
    if results["jobs"]:
        lines += ["", *jobs_table(results["jobs"])]
    if results["fanout"]:
        lines += ["", *fanout_table(results["fanout"])]
    if results["sse"]:
        lines += ["", *sse_table(results["sse"])]
    if results["locks"]:
        lines += ["", *locks_table(results["locks"])]
    if results["forms"]:
        lines += ["", *forms_table(results["forms"])]

    warnings = []
    suspect = [r["name"] for r in http if r["errors"] or r["bad_status"]]
    if results["cluster"]:
        suspect += [f"{row['name']} (cluster)" for row in results["cluster"]["rows"] if row["errors_cluster"]]
    if suspect:
        warnings.append(f"WARNING: errors or non-2xx answers during {', '.join(suspect)}: those figures are suspect.")
    for result in http:
        cache = result["cache"]
        if result["expect_miss"] and cache and (cache["miss_ratio"] is None or cache["miss_ratio"] < 0.99):
            warnings.append(
                f"WARNING: {result['name']} should miss on every read but missed on {pct(cache['miss_ratio'])}: "
                "more posts are needed for runs this fast (bench/scenarios.py, COLD_POSTS_*)."
            )
    sse = results["sse"]
    if sse and (sse["missing"] or sse["errors"]):
        warnings.append(
            f"WARNING: {sse['missing']} of {sse['notifications']} notifications never reached their stream"
            + (f"; errors: {'; '.join(sse['errors'])}" if sse["errors"] else "")
        )
    for result in http:
        if result["single_use"] and result["paths_wrapped"]:
            warnings.append(
                f"WARNING: {result['name']} ran through all its {result['distinct_paths']:,} paths, so some may have "
                "been requested twice (a second like is a 409): more are needed (bench/scenarios.py LIKES_PER_SECOND)."
            )
    if http:
        lines += ["", *summary_section(http)]
    if warnings:
        lines += ["", *warnings]
    durations = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in meta["durations_s"].items())
    lines += ["", f"Took {meta['total_s']:.0f} s ({durations})."]
    return "\n".join(lines)


def summary_section(http: list[dict]) -> list[str]:
    """The compact table of every path against the floor and the naive reads, then the targets."""
    rows = []
    for result in http:
        figures = result["summary"]
        targets = figures["targets"]
        met = sum(1 for target in targets if target["met"])
        rows.append(
            [
                result["name"],
                fmt(figures["floor_ratio"], ".2f"),
                fmt(figures["naive_ratio"], ".2f"),
                fmt(figures["naive_counted_ratio"], ".2f"),
                fmt(figures["p50_ratio"], ".2f"),
                fmt(figures["p99_ratio"], ".2f"),
                fmt(result["redis"]["reads"], ".2f"),
                fmt(result["redis"]["commands"], ".2f"),
                fmt(figures["background_round_trips"], ".2f") if figures["background_round_trips"] else "-",
                f"{met}/{len(targets)}" if targets else "",
            ]
        )
    headers = [
        "scenario",
        "req/s ratio",
        "/ naive",
        "/ naive-counted",
        "p50 ratio",
        "p99 ratio",
        "RT/req",
        "cmd/req",
        "of which bg RT",
        "targets met",
    ]
    lines = [
        "Summary: every path against the drf-floor and the article's naive read of a post (same run, medians)",
        format_table(headers, rows),
        "  req/s ratio, p50/p99 ratio: this path's over the floor's (latency: higher is slower). / naive,",
        "  / naive-counted: req/s over the naive read's without and with its INCR view counter (reads of a post",
        "  only). RT/req, cmd/req: Redis round trips and commands sent per request (sequential requests, both",
        "  roles; commands a Lua script runs are not counted as sent), a write's after-commit work and the",
        "  background flushes the requests caused included. bg RT: round trips of views flushed in the background,",
        "  amortized over the requests counted (0 while views are counted inline).",
        "",
    ]
    rows = []
    for result in http:
        for target in result["summary"]["targets"]:
            rows.append(
                [
                    result["name"],
                    target["label"],
                    fmt(target["value"], ".2f") + ("x" if target["measure"].endswith("ratio") else ""),
                    {True: "met", False: "NOT MET", None: "not measured"}[target["met"]],
                ]
            )
    if rows:
        lines += [
            "Targets",
            format_table(["scenario", "target", "measured", ""], rows, left=2),
            "  Round trips and commands are the request's own (RT/req and cmd/req less background flushes), and may",
            f"  exceed a target by {TRAFFIC_SLACK:g} a request: what is not per request but lands in a count now and "
            "then",
            "  (the L1 going back to Redis every 2 s per worker, a post's views moved to its row every 1000).",
        ]
    return lines


def http_section(meta: dict, http: list[dict], get_us: float | None) -> list[str]:
    lines = [f"HTTP: {meta['server']} per settings, load {meta['versions']['load']}, 127.0.0.1"]
    rows = []
    for result in http:
        redis_info = result["redis"]
        rows.append(
            [
                result["name"],
                result["settings"],
                result["path"],
                fmt(result["rps"], ",.0f"),
                fmt(result["rps_spread"] * 100, ".0f") + "%",
                fmt(result["p50_ms"], ".2f"),
                fmt(result["p99_ms"], ".2f"),
                fmt(result["ratio"], ".2f"),
                fmt(result["design_ratio"], ".2f"),
                fmt(redis_info["commands"], ".2f"),
                fmt(redis_info["reads"], ".2f"),
                str(result["errors"] + result["bad_status"]),
            ]
        )
    headers = [
        "scenario",
        "settings",
        "path",
        "req/s",
        "spread",
        "p50 ms",
        "p99 ms",
        "ratio",
        "reference",
        "redis cmd/req",
        "round trips/req",
        "errors",
    ]
    lines += [format_table(headers, rows, left=3), ""]

    cached = [result for result in http if result["cache_family"]]
    if cached:
        lines += cache_table(cached)

    lines.append("Ratios against the floors")
    for result in http:
        if result["baseline"] is None:
            continue
        line = f"  {result['name']}: {fmt(result['ratio'], '.2f')}x the {result['baseline']}'s req/s"
        if result["design_ratio"] is not None:
            line += f" (reference {result['design_ratio']:.2f})"
        line += f"; {fmt(result['extra_us_per_request'], '+.0f')} us/request over it (1/req/s)"
        lines.append(line)
        redis_info = result["redis"]
        if redis_info["commands"] > 0:
            commands = ", ".join(f"{name} {count:.2f}" for name, count in redis_info["by_command"].items())
            scripted = redis_info.get("script_commands", 0.0)
            in_scripts = f" (+{scripted:.2f} in scripts)" if scripted else ""
            redis_line = f"    Redis per request: {commands}{in_scripts}; {redis_info['reads']:.2f} round trips"
            if get_us:
                floor_us = redis_info["reads"] * get_us
                redis_line += f" = {floor_us:.0f} us at the redis-py GET floor"
                extra = result["extra_us_per_request"]
                if extra and extra > 0:
                    redis_line += f" ({floor_us / extra:.0%} of the extra time)"
            lines.append(redis_line)
    lines += [
        "",
        "ratio: req/s over the baseline's req/s, same run; reference: the ratio in docs/design.md's reference figures.",
        "us/request over it: 1e6/req/s minus the baseline's 1e6/req/s (throughput time, both workers busy).",
        "spread: (fastest - slowest run) / median req/s.",
        f"redis cmd/req, round trips/req: {meta['traffic_requests']} sequential requests on a warm server, counted",
        "  until Redis is quiet after the last (background flushes they caused included); the whole server, both",
        "  roles: GET /api/posts/{id} also counts the view, sent to the state role by each process in the",
        "  background (one EVALSHA a send), counted here; the post table splits it out. Commands: those clients",
        "  sent (MONITOR), a pipeline's one each; what a Lua script runs inside is listed apart (in scripts).",
        "round trips: Redis read events per request (a pipeline is one), the harness's own left out.",
    ]
    return lines


def cache_table(results: list[dict]) -> list[str]:
    lines = [
        "GET /api/posts/{id}: where reads were served (family counters of every gunicorn worker, "
        "summed over the timed runs)"
    ]
    rows = []
    for result in results:
        cache, roles = result["cache"], result["redis_by_role"] or {}
        counted = cache and cache["reads"]
        rows.append(
            [
                result["name"],
                result["settings"],
                fmt(result["rps"], ",.0f"),
                fmt(result["ratio"], ".2f"),
                fmt(result["summary"]["naive_ratio"], ".2f"),
                fmt(result["summary"]["naive_counted_ratio"], ".2f"),
                fmt(result["extra_us_per_request"], "+.0f"),
                f"{cache['reads']:,}" if counted else "cache off",
                pct(cache["l1_hit_ratio"]) if counted else "-",
                pct(cache["redis_hit_ratio"]) if counted else "-",
                pct(cache["miss_ratio"]) if counted else "-",
                fmt(cache["loads_per_read"], ".3f") if counted else "1 (every request)",
                fmt(result["redis"]["reads"], ".2f"),
                fmt(roles.get("state_round_trips"), ".2f"),
                fmt(roles.get("cache_round_trips"), ".2f"),
                fmt(roles.get("cache_commands"), ".2f"),
            ]
        )
    headers = [
        "scenario",
        "settings",
        "req/s",
        "ratio",
        "/ naive",
        "/ naive-counted",
        "us/req",
        "reads",
        "L1 hit",
        "Redis hit",
        "miss",
        "DB loads/read",
        "RT/req",
        "views RT",
        "other RT",
        "other cmd/req",
    ]
    lines += [
        format_table(headers, rows, left=2),
        "  ratio: over the drf-floor; / naive, / naive-counted: req/s over the article's read without and with its",
        "  INCR view counter. us/req: over the drf-floor. RT/req: Redis round trips per request, both roles",
        "  (sequential requests); views RT: the background sends of buffered views (one EVALSHA each, a few a",
        "  second per process whatever the traffic); other RT: the rest",
        "  (cache-aside, the limiter's script, a session). DB loads/read: loader calls per cache-aside read.",
        "  Every 1000 views a post's counter is flushed to its row and its cached copy dropped, so a hot post",
        "  misses about once per 1000 views in each tier; a flush inside the counted requests adds fractions of",
        "  EVALSHA, DECRBY, SREM, PUBLISH... to the other columns. The L1 keeps a post 2 s, so each worker goes",
        "  back to Redis about every 2 s: the L1 rows' small other RT.",
        "",
    ]
    return lines


def stampede_table(stampede: dict) -> list[str]:
    lines = [
        f"Stampede: {stampede['readers']} threads read one post whose cache entry was just deleted, all started "
        f"together (one process, L1 off; median of {stampede['rounds']} rounds)"
    ]
    rows = [
        [
            variant["family"],
            "on" if variant["single_flight"] else "off",
            fmt(variant["misses"], ",.0f"),
            fmt(variant["db_loads"], ",.0f"),
            fmt(variant["sql_queries"], ",.0f"),
            fmt(variant["waits"], ",.0f"),
            fmt(variant["redis_commands"], ",.0f"),
            fmt(variant["start_spread_ms"], ".1f"),
            fmt(variant["wall_ms"], ".1f"),
            fmt(variant["reader_p50_ms"], ".1f"),
            fmt(variant["reader_max_ms"], ".1f"),
        ]
        for variant in stampede["variants"]
    ]
    headers = [
        "family",
        "single flight",
        "missed",
        "DB loads",
        "SQL queries",
        "waited",
        "Redis cmds",
        "start spread ms",
        "wall ms",
        "reader p50 ms",
        "reader max ms",
    ]
    lines += [
        format_table(headers, rows),
        "  missed: readers whose GET found no value (the stampede); DB loads: calls of posts.selectors._load_post;",
        "  SQL queries: sent by the readers (connection.execute_wrapper); waited: readers that found the lease",
        "  taken and polled for the value; Redis cmds: the whole server during the stampede; start spread: from the",
        "  start time to the last reader's first step (the GIL queues 200 threads); wall: start to last answer.",
        "  Readers that start after the first load is stored hit, so `missed` is below the reader count; with",
        "  single flight off every miss is a load.",
    ]
    return lines


def limiter_table(rows: list[dict], alone: dict | None) -> list[str]:
    lines = []
    if alone:
        lines += limiter_alone_table(alone)
    if not rows:
        return lines
    lines += ["Rate limiter: each path with the limiter on (limits out of reach) against the same path with it off"]
    table = [
        [
            row["name"],
            row["counterpart"],
            fmt(row["rps_off"], ",.0f"),
            fmt(row["rps_on"], ",.0f"),
            fmt(row["ratio_off"], ".2f"),
            fmt(row["ratio_on"], ".2f"),
            fmt(row["on_over_off"], ".2f"),
            fmt(row["added_us_per_request"], "+.0f"),
            fmt(row["added_round_trips"], "+.2f"),
            fmt(row["added_commands"], "+.2f"),
            ", ".join(f"{name} {count:+.2f}" for name, count in row["added_by_command"].items()) or "-",
        ]
        for row in rows
    ]
    headers = [
        "limiter on",
        "off",
        "req/s off",
        "req/s on",
        "floor ratio off",
        "on",
        "on/off",
        "us/req added",
        "RT added",
        "cmd added",
        "commands added per request",
    ]
    lines += [
        format_table(headers, table, left=2),
        "  floor ratio: req/s over the drf-floor's, same run. us/req added: 1e6/req/s on minus off. RT added: Redis",
        "  round trips per request (read events, sequential requests); the limiter's script is one EVALSHA (its",
        "  GET, SET and TIME are not counted as sent); with a bearer token it also decides the token's denylist",
        "  and epoch check, which the authenticator otherwise sends as a script of its own. Commands added leave out",
        "  fractions below 0.05 (a post's view counter flushed every 1000 views during the count).",
    ]
    return lines


def limiter_alone_table(alone: dict) -> list[str]:
    floor = alone["variants"][0]["us"]
    rows = [
        [
            variant["name"],
            fmt(variant["us"], ",.0f"),
            fmt(variant["p50_us"], ",.0f"),
            fmt(variant["us"] / floor, ".1f") + "x",
            fmt(variant["redis"]["commands"], ".1f"),
            fmt(variant["redis"]["round_trips"], ".1f"),
        ]
        for variant in alone["variants"]
    ]
    return [
        "Rate limiter alone: core.ratelimit.middleware.RateLimitMiddleware in a loop in front of a view that does "
        f"nothing (one process; policies {', '.join(alone['policies'])})",
        format_table(["request", "us", "p50 us", "vs GET", "Redis cmd", "round trips"], rows),
        "  us: mean per call, the middleware's own work and its Redis round trip; vs GET: over the redis-py GET",
        "  on the same client measured alongside. A bearer token is verified (HS256) before the script runs.",
        "",
    ]


def cluster_table(cluster: dict) -> list[str]:
    rows = [
        [
            row["name"],
            row["settings"],
            fmt(row["rps_one"], ",.0f"),
            fmt(row["rps_cluster"], ",.0f"),
            fmt(row["rps_ratio"], ".2f"),
            fmt(row["floor_ratio_one"], ".2f"),
            fmt(row["floor_ratio_cluster"], ".2f"),
            fmt(row["floor_ratios_ratio"], ".2f"),
            fmt(row["added_us_per_request"], "+.0f"),
            fmt(row["p99_ratio"], ".2f"),
            fmt(row["round_trips_one"], ".2f"),
            fmt(row["round_trips_cluster"], ".2f"),
            fmt(row["round_trips_ratio"], ".2f"),
            fmt(row["commands_one"], ".2f"),
            fmt(row["commands_cluster"], ".2f"),
            str(row["errors_cluster"]),
        ]
        for row in cluster["rows"]
    ]
    headers = [
        "scenario",
        "settings",
        "req/s one",
        "req/s cluster",
        "cluster/one",
        "floor ratio one",
        "cluster",
        "cluster/one",
        "us/req added",
        "p99 ratio",
        "RT/req one",
        "RT/req cluster",
        "RT cluster/one",
        "cmd/req one",
        "cluster",
        "errors",
    ]
    lines = [
        f"Redis Cluster: each path with the cache and state roles on two {CLUSTER_PRIMARIES}-primary clusters (the "
        "queue role on a server of its own) against the same path on one server, same run, medians",
        format_table(headers, rows, left=2),
        "  cluster/one: req/s on the cluster's stack over req/s on the one server's (below 1: the cluster costs",
        "  throughput). floor ratio: req/s over that stack's own drf-floor (no Redis), and its cluster/one: the",
        "  cluster's cost with a drift in machine load between the stacks divided out (the figure to compare;",
        "  the floors' own row shows the drift). us/req added: 1e6/req/s cluster minus one server.",
        "  p99 ratio: cluster over one server. RT/req: Redis read events per request summed over every server of",
        "  the stack (each node of both clusters and the queue server; sequential requests): a pipeline whose keys",
        "  span three primaries is three round trips, and redis-py's topology refreshes (CLUSTER SLOTS) count too.",
    ]
    if cluster["unmeasured"]:
        lines.append("  Not measured on the cluster (the path failed there before timing):")
        lines += [f"    {name}: {first_line(error)}" for name, error in cluster["unmeasured"].items()]
    return lines


def jobs_table(jobs: dict) -> list[str]:
    from bench.jobqueue import report_lines

    return report_lines(jobs)


def fanout_table(fanout: dict) -> list[str]:
    lines = [
        f"Fan-out of one new post to its author's followers (in-process, medians; inline up to "
        f"{fanout['inline_max']} followers, the job's function beyond; pipelines of {fanout['batch']} followers)"
    ]
    rows = [
        [
            f"{size['followers']:,}",
            size["path"],
            str(size["rounds"]),
            fmt(size["us"] / 1000, ",.2f"),
            fmt(size["us_per_follower"], ",.1f"),
            fmt(size["commands"], ",.0f"),
            fmt(size["commands_per_follower"], ".2f"),
            fmt(size["round_trips"], ",.0f"),
            ", ".join(f"{name} {count:,}" for name, count in sorted(size["by_command"].items())),
        ]
        for size in fanout["sizes"]
    ]
    headers = [
        "followers",
        "path",
        "posts",
        "ms",
        "us/follower",
        "Redis cmds",
        "cmd/follower",
        "round trips",
        "commands",
    ]
    lines += [
        format_table(headers, rows, left=0),
        "  inline: feeds.services._fanout_inline, what a request runs after commit; job: timeline_fanout_run, what",
        "  the fan-out job runs, called directly. Every follower has an (empty) timeline and the follower set is",
        "  built in Redis. Round trips: requests this process wrote (a pipeline is one); commands: the server's",
        "  count, Lua scripts' inner calls included. SQL (the post, the job row) is in the time, not the counts.",
    ]
    return lines


def sse_table(sse: dict) -> list[str]:
    publisher = sse["publisher"]
    row = [
        str(sse["streams"]),
        str(sse["notifications"]),
        fmt(publisher["rate"], ",.0f"),
        f"{sse['delivered']}/{sse['notifications']}",
        fmt(sse["p50_ms"], ".2f"),
        fmt(sse["p90_ms"], ".2f"),
        fmt(sse["p99_ms"], ".2f"),
        fmt(sse["max_ms"], ".2f"),
        fmt(publisher["notify_us_p50"], ",.0f"),
    ]
    headers = ["streams", "notifications", "sent/s", "delivered", "p50 ms", "p90 ms", "p99 ms", "max ms", "notify() us"]
    return [
        f"Live notifications: publish (feeds.notifications.notify in another process) to the SSE client's read "
        f"({sse['server']})",
        format_table(headers, [row], left=0),
        "  Each stream is a logged-in user's GET /api/notifications/stream read line by line by a thread of the",
        "  harness; the notifications go to the users in turn at a steady rate, stamped with time.time() before",
        "  the call; the delay is read time minus that stamp. notify() us: the publisher's call (one EVALSHA: XADD",
        "  and PUBLISH), median.",
    ]


def locks_table(locks: dict) -> list[str]:
    solo_rows = [
        [
            variant["name"],
            fmt(variant["us"], ",.0f"),
            fmt(variant["p50_us"], ",.0f"),
            fmt(variant["p99_us"], ",.0f"),
            fmt(variant["cycles_per_s"], ",.0f"),
            fmt(variant["redis"]["commands"], ".1f"),
            fmt(variant["redis"]["round_trips"], ".1f"),
        ]
        for variant in locks["uncontended"]
    ]
    contended_rows = [
        [
            str(variant["threads"]),
            fmt(variant["hold_ms"], "g"),
            fmt(variant["timeout_s"] * 1000, "g"),
            fmt(variant["acquired_per_s"], ",.0f"),
            f"{variant['timeouts']:,}",
            f"{variant['contended']:,}",
            fmt(variant["attempts_per_acquire"], ".2f"),
            fmt(variant["wait_p50_ms"], ".2f"),
            fmt(variant["wait_p99_ms"], ".2f"),
            fmt(variant["wait_max_ms"], ".2f"),
            f"{variant['per_thread_min']:,}-{variant['per_thread_max']:,}",
            fmt(variant["redis"]["round_trips"], ".2f") if variant["redis"] else "-",
        ]
        for variant in locks["contended"]
    ]
    return [
        f"Locks (core.locks.redis_lock, ttl {locks['ttl_ms']} ms): one thread, {locks['seconds']:g} s per variant",
        format_table(["cycle", "us", "p50 us", "p99 us", "cycles/s", "Redis cmd", "round trips"], solo_rows),
        "",
        f"  Contended: threads of one process take one lock in a loop for {locks['seconds']:g} s, each waiting up to "
        "the timeout",
        format_table(
            [
                "threads",
                "hold ms",
                "timeout ms",
                "acquired/s",
                "timeouts",
                "contended",
                "attempts/acq",
                "wait p50 ms",
                "wait p99 ms",
                "wait max ms",
                "per thread",
                "RT/acq",
            ],
            contended_rows,
            left=0,
        ),
        "  contended: acquisitions whose first attempt found the lock held; timeouts: acquires that gave up",
        "  (LockNotAcquired, a 409 in the API); wait: asking to holding, for acquisitions that succeeded; per",
        "  thread: fewest-most acquisitions of one thread. The acquire script is GET, GET, SET, SET and TIME; the",
        "  release GET and DEL: Redis counts them all as commands.",
    ]


def forms_table(forms: dict) -> list[str]:
    rows = [
        [
            name,
            fmt(forms[name]["rps"], ",.0f"),
            fmt(forms[name]["p50_ms"], ".2f"),
            fmt(forms[name]["p99_ms"], ".2f"),
            fmt(forms[name]["redis"]["reads"], ".2f"),
            fmt(forms[name]["redis"]["commands"], ".2f"),
        ]
        for name in ("off", "on")
    ]
    return [
        f"Site forms: POST {forms['path']} ({forms['body']}) with a session and its CSRF token, the limiter off and on "
        f"({forms['load']})",
        format_table(["limits", "req/s", "p50 ms", "p99 ms", "round trips", "Redis cmd"], rows),
        f"  on/off: {fmt(forms['on_over_off'], '.2f')}x req/s; {fmt(forms['added_us_per_request'], '+.0f')} us and "
        f"{fmt(forms['added_round_trips'], '+.2f')} round trips per form request. With the limiter on, every policy's",
        "  limit is out of reach (bench/forms.py): the figure is the cost of the check, never of a refusal.",
    ]


# The benchmarks that run after the HTTP loads, in this order: result key -> (group, measure).
CHILDREN = {
    "stampede": ("stampede", measure_stampede),
    "jobs": ("jobs", measure_jobs),
    "fanout": ("feeds", measure_fanout),
    "sse": ("feeds", measure_sse),
    "limiter": ("protect", measure_limiter),
    "locks": ("protect", measure_locks),
    "forms": ("protect", measure_forms),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["load"]:
        from bench.load import main as load_main  # its own options: python -m bench load --help

        return load_main(argv[1:])
    if argv[:1] == ["capacity"]:
        from bench.capacity import main as capacity_main  # its own options: python -m bench capacity --help

        return capacity_main(argv[1:])
    args = parse_args(argv)
    # `kill` or a stopping `make` sends SIGTERM: turn it into an exception so the
    # `finally` blocks stop gunicorn and Redis, as Ctrl-C (KeyboardInterrupt) does.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    results: dict = dict.fromkeys(["redis_floor", "http", "rate_limiter", "cluster", *CHILDREN], None)
    durations: dict[str, float] = {}
    stack_options = {
        "worker_class": args.worker_class,
        "workers": args.workers,
        "threads": args.threads,
        "seconds": max(args.seconds, args.warmup),
        "log": log,
        # wrk runs whole seconds, at least one.
        "load_seconds": math.ceil(args.warmup) + args.runs * math.ceil(args.seconds) + 1,
        "count_requests": args.traffic_requests,
    }
    try:
        scenarios = select_scenarios(args.only, args.groups)
        load = pick_load_generator(args.load, connections=args.connections)
        started = datetime.datetime.now(datetime.UTC)
        with contextlib.ExitStack() as stacks:
            ctx = stacks.enter_context(bench_stack(**stack_options))
            legs = [HttpMeasurement(ctx, scenarios, load, args)]
            if args.cluster:
                log("the cluster's stack: the same scenarios with the cache and state roles on Redis Cluster")
                cluster_ctx = stacks.enter_context(bench_stack(**stack_options, cluster=True))
                legs.append(HttpMeasurement(cluster_ctx, scenarios, load, args, label="cluster: ", tolerate=True))
            log(f"load generator: {load.name}; groups: {', '.join(args.groups) or 'none'}")
            log("Redis floor")
            results["redis_floor"] = measure_redis_floor(ctx, ops=args.redis_ops, runs=args.runs)
            began = time.monotonic()
            results["http"], *on_cluster = measure_http(legs, args)
            results["rate_limiter"] = limiter_costs(results["http"])
            if on_cluster:
                results["cluster"] = cluster_costs(results["http"], on_cluster[0], legs[1].unmeasured)
            durations["http"] = time.monotonic() - began
            # After the HTTP loads, so the rows the children add (thousands of users) never sit under them.
            for name, (group, measure) in CHILDREN.items():
                if group in args.groups and not args.cluster:
                    began = time.monotonic()
                    results[name] = measure(ctx, args)
                    durations[name] = time.monotonic() - began
            server = ctx.gunicorn.description
            servers = [ctx.gunicorn.description] + [s.description for s in ctx.servers.values()]
            if args.cluster:
                servers += [cluster_ctx.gunicorn.description] + [s.description for s in cluster_ctx.servers.values()]
            if results["sse"]:
                servers.append(results["sse"]["server"])
    except StackError as exc:  # a BenchError, or a child the launcher (devstack) started failed
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted; servers stopped", file=sys.stderr)
        return 130

    meta = {
        "started": started.isoformat(timespec="seconds"),
        "server": server,
        "servers": servers,
        "worker_class": args.worker_class,
        "groups": args.groups,
        "runs": args.runs,
        "seconds": args.seconds,
        "warmup": args.warmup,
        "redis_ops": args.redis_ops,
        "traffic_requests": args.traffic_requests,
        "quick": args.quick,
        "cluster": args.cluster,
        "durations_s": durations,
        "total_s": (datetime.datetime.now(datetime.UTC) - started).total_seconds(),
        "versions": versions(load),
        "git": git_revision(),
    }
    print(report(meta, results))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"meta": meta, **results}, indent=2) + "\n")
    print(f"\nJSON: {args.output}")
    return 0


def git_revision() -> str | None:
    """The commit benchmarked, so two JSON files can be told apart; None outside a repository or before a commit."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=False
        )
    except OSError:
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


if __name__ == "__main__":
    sys.exit(main())
