"""`python -m bench` (or `make bench`): measure Kestrel against floors taken in the same run.

    python -m bench                       # 3 runs of 5 s per path, sync workers, then the stampede
    python -m bench --worker-class gthread
    python -m bench --quick               # 1 run of 2 s: a smoke test of the harness
    python -m bench --only post-miss --no-stampede

Prints the figures as tables and writes them to var/bench/latest.json.
"""

from __future__ import annotations

import argparse
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

from bench.harness import (
    FLOOR_DB,
    FLOOR_KEY,
    PROJECT_ROOT,
    STATE_DB,
    BenchContext,
    BenchError,
    CacheCounts,
    LoadGenerator,
    LoadResult,
    PathRotation,
    RedisTraffic,
    bench_stack,
    check_json,
    format_table,
    measure_redis_traffic,
    median,
    metrics_delta,
    pick_load_generator,
    redis_floor_us,
    run_stampede,
    worker_metrics,
)
from bench.scenarios import (
    HTTP_SCENARIOS,
    REDIS_FLOOR_OPS,
    STAMPEDE_READERS,
    STAMPEDE_ROUNDS,
    STAMPEDE_ROUNDS_QUICK,
    HttpScenario,
    StateTraffic,
    create_hot_post,
)

DEFAULT_OUTPUT = PROJECT_ROOT / "var" / "bench" / "latest.json"
# Pause between timed runs; the backlog a run leaves (one request per connection) takes milliseconds.
SETTLE_SECONDS = 0.3


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
    parser.add_argument("--redis-ops", type=int, default=20_000, help="commands per Redis floor loop (default 20000)")
    parser.add_argument(
        "--traffic-requests", type=int, default=200, help="sequential requests counting Redis commands (default 200)"
    )
    parser.add_argument("--only", action="append", metavar="NAME", help="run only these HTTP scenarios (repeatable)")
    parser.add_argument(
        "--stampede",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=f"run the stampede benchmark: {STAMPEDE_READERS} readers of a just-expired post (default on)",
    )
    parser.add_argument(
        "--stampede-rounds",
        type=int,
        default=STAMPEDE_ROUNDS,
        help=f"timed stampede rounds per variant; the median is reported (default {STAMPEDE_ROUNDS})",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 run of 2 s, short warm-up, fewer Redis ops")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"JSON output (default {DEFAULT_OUTPUT})")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.seconds, args.warmup, args.redis_ops, args.traffic_requests = 1, 2.0, 0.5, 5_000, 50
        args.stampede_rounds = STAMPEDE_ROUNDS_QUICK
    if args.runs < 1 or args.seconds <= 0 or args.stampede_rounds < 1:
        parser.error("--runs and --stampede-rounds must be at least 1 and --seconds positive")
    return args


def select_scenarios(only: list[str] | None) -> list[HttpScenario]:
    """The scenarios asked for, plus the baselines they are divided by."""
    by_name = {scenario.name: scenario for scenario in HTTP_SCENARIOS}
    if not only:
        return list(HTTP_SCENARIOS)
    unknown = sorted(set(only) - set(by_name))
    if unknown:
        raise BenchError(f"unknown scenario(s) {unknown}; known: {sorted(by_name)}")
    wanted = set(only)
    wanted |= {by_name[name].baseline for name in only if by_name[name].baseline}
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


def measure_http(
    ctx: BenchContext, scenarios: list[HttpScenario], load: LoadGenerator, args: argparse.Namespace
) -> list[dict]:
    state = ctx.redis(db=STATE_DB)
    traffic: dict[str, RedisTraffic] = {}
    rotations: dict[str, PathRotation] = {}
    try:
        for scenario in scenarios:
            # Servers for other settings start here, on first use (see BenchContext.server).
            server = ctx.server(scenario.env)
            headers = ctx.headers(needs_session=scenario.needs_session)
            if scenario.prepare:
                scenario.prepare(ctx)
            rotation = PathRotation(scenario.paths(ctx) if scenario.paths else [scenario.path])
            rotations[scenario.name] = rotation
            before_load(ctx, scenario)
            check_json(server.port, rotation.take(1)[0], headers, scenario.expect_keys)
            log(f"warm-up {scenario.name} ({args.warmup:g} s)")
            warm = load.run(port=server.port, paths=rotation.upcoming(), headers=headers, seconds=args.warmup)
            rotation.advance(warm.requests, args.connections)
            before_load(ctx, scenario)
            # Sequential requests on a warm server: the counters then hold this path's traffic only.
            traffic[scenario.name] = measure_redis_traffic(
                state, server.port, rotation.take(args.traffic_requests), headers
            )
    finally:
        state.close()

    # Runs interleave the paths, so a drift in machine load during the benchmark hits every path alike.
    runs: dict[str, list[LoadResult]] = {scenario.name: [] for scenario in scenarios}
    counts: dict[str, list[CacheCounts]] = {scenario.name: [] for scenario in scenarios}
    for run in range(1, args.runs + 1):
        for scenario in scenarios:
            log(f"run {run}/{args.runs} {scenario.name} ({args.seconds:g} s)")
            server = ctx.server(scenario.env)
            rotation = rotations[scenario.name]
            headers = ctx.headers(needs_session=scenario.needs_session)
            before_load(ctx, scenario)
            # gunicorn still serves what the last run left in its listen backlog; let it
            # finish so it does not eat into this run.
            time.sleep(SETTLE_SECONDS)
            before = worker_metrics(server.port, server.workers) if scenario.cache_family else None
            result = load.run(port=server.port, paths=rotation.upcoming(), headers=headers, seconds=args.seconds)
            rotation.advance(result.requests, args.connections)
            runs[scenario.name].append(result)
            if before is not None:
                delta = metrics_delta(before, worker_metrics(server.port, server.workers))
                counts[scenario.name].append(CacheCounts.from_metrics(delta, scenario.cache_family))

    results = []
    for scenario in scenarios:
        samples = runs[scenario.name]
        rps = [r.rps for r in samples]
        cache = sum(counts[scenario.name], CacheCounts()) if scenario.cache_family else None
        results.append(
            {
                "name": scenario.name,
                "path": scenario.path,
                "description": scenario.description,
                "env": dict(scenario.env),
                "settings": scenario.env_label,
                "server": ctx.server(scenario.env).description,
                "distinct_paths": len(rotations[scenario.name].paths),
                "baseline": scenario.baseline,
                "design_ratio": scenario.design_ratio,
                # Each figure is the median over runs on its own.
                "rps": median(rps),
                # How far apart the runs were: a difference between paths smaller than this is noise.
                "rps_spread": (max(rps) - min(rps)) / median(rps),
                "p50_ms": median([r.p50_ms for r in samples]),
                "p99_ms": median([r.p99_ms for r in samples]),
                "errors": sum(r.errors for r in samples),
                "bad_status": sum(r.bad_status for r in samples),
                "redis": asdict(traffic[scenario.name]),
                "redis_by_role": by_role(traffic[scenario.name], scenario.state_traffic),
                "cache_family": scenario.cache_family,
                "expect_miss": scenario.expect_miss,
                # Summed over the timed runs, from every worker's counters.
                "cache": cache_figures(cache) if cache else None,
                "cache_runs": [asdict(c) for c in counts[scenario.name]],
                "runs": [asdict(r) for r in samples],
            }
        )
    by_name = {result["name"]: result for result in results}
    for result in results:
        base = by_name.get(result["baseline"]) if result["baseline"] else result
        result["ratio"] = result["rps"] / base["rps"] if base else None
        # Time per request beyond the baseline's, from throughput: what this path's extra work costs.
        result["extra_us_per_request"] = (1e6 / result["rps"] - 1e6 / base["rps"]) if base else None
    return results


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


# --- Report ------------------------------------------------------------------------


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None or math.isnan(value) else format(value, spec)


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def report(meta: dict, redis_floor: list[dict], http: list[dict], stampede: dict | None) -> str:
    lines = [
        f"Kestrel benchmark, {meta['started']}",
        f"  {meta['server']}; load: {meta['versions']['load']}; "
        f"{meta['runs']} run(s) x {meta['seconds']:g} s per path, medians",
        "  " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if k != "load"),
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

    lines.append(f"HTTP: {meta['server']} per settings, load {meta['versions']['load']}, 127.0.0.1")
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
        "DESIGN",
        "redis cmd/req",
        "round trips/req",
        "errors",
    ]
    lines += [format_table(headers, rows, left=3), ""]

    cached = [result for result in http if result["cache_family"]]
    if cached:
        lines += cache_table(cached)

    lines.append("Ratios against the floors")
    get_us = unpipelined.get("GET")
    for result in http:
        if result["baseline"] is None:
            continue
        line = f"  {result['name']}: {fmt(result['ratio'], '.2f')}x the {result['baseline']}'s req/s"
        if result["design_ratio"] is not None:
            line += f" (DESIGN.md {result['design_ratio']:.2f})"
        line += f"; {fmt(result['extra_us_per_request'], '+.0f')} us/request over it (1/req/s)"
        lines.append(line)
        redis_info = result["redis"]
        if redis_info["commands"] > 0:
            commands = ", ".join(f"{name} {count:.2f}" for name, count in redis_info["by_command"].items())
            redis_line = f"    Redis per request: {commands}; {redis_info['reads']:.2f} round trips"
            if get_us:
                floor_us = redis_info["reads"] * get_us
                redis_line += f" = {floor_us:.0f} us at the redis-py GET floor"
                extra = result["extra_us_per_request"]
                if extra and extra > 0:
                    redis_line += f" ({floor_us / extra:.0%} of the extra time)"
            lines.append(redis_line)

    if stampede:
        lines += ["", *stampede_table(stampede)]

    warnings = []
    suspect = [r["name"] for r in http if r["errors"] or r["bad_status"]]
    if suspect:
        warnings.append(f"WARNING: errors or non-2xx answers during {', '.join(suspect)}: those figures are suspect.")
    for result in http:
        cache = result["cache"]
        if result["expect_miss"] and cache and (cache["miss_ratio"] is None or cache["miss_ratio"] < 0.99):
            warnings.append(
                f"WARNING: {result['name']} should miss on every read but missed on {pct(cache['miss_ratio'])}: "
                "more posts are needed for runs this fast (bench/scenarios.py, COLD_POSTS_*)."
            )
    if warnings:
        lines += ["", *warnings]
    lines += [
        "",
        "ratio: req/s over the baseline's req/s, same run; DESIGN: the ratio in DESIGN.md's table.",
        "us/request over it: 1e6/req/s minus the baseline's 1e6/req/s (throughput time, both workers busy).",
        "spread: (fastest - slowest run) / median req/s.",
        f"redis cmd/req, round trips/req: INFO around {meta['traffic_requests']} sequential requests on a warm server;",
        "  the whole Redis server, both roles: GET /api/posts/{id} also records the view on the state role in every",
        "  request (one pipeline: INCR, which redis-py sends as INCRBY, PFADD, SADD), counted here; the post table",
        "  splits it out. Commands include those a Lua script runs (Redis counts them: the lease store runs GET,",
        "  SET, DEL inside its EVALSHA).",
        "round trips: Redis read events per request (a pipeline is one).",
    ]
    return "\n".join(lines)


def cache_table(results: list[dict]) -> list[str]:
    lines = [
        "GET /api/posts/{id}, anonymous: where reads were served (family counters of every gunicorn worker, "
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
        "us/req",
        "reads",
        "L1 hit",
        "Redis hit",
        "miss",
        "DB loads/read",
        "RT/req",
        "state RT",
        "cache RT",
        "cache cmd/req",
    ]
    lines += [
        format_table(headers, rows, left=2),
        "  us/req: over the drf-floor. RT/req: Redis round trips per request, both roles (sequential requests);",
        "  state RT: the view counter's pipeline, in every request even when the post comes from the L1;",
        "  cache RT: the rest, cache-aside's own. DB loads/read: loader calls per cache-aside read.",
        "  Every 1000 views a post's counter is flushed to its row and its cached copy dropped, so a hot post",
        "  misses about once per 1000 views in each tier; a flush inside the counted requests adds fractions of",
        "  EVALSHA, DECRBY, SREM, PUBLISH..., and its state-role script lands in the cache column. The L1 keeps a",
        "  post 2 s, so each worker goes back to Redis about every 2 s: the L1 row's small cache RT.",
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # `kill` or a stopping `make` sends SIGTERM: turn it into an exception so the
    # `finally` blocks stop gunicorn and Redis, as Ctrl-C (KeyboardInterrupt) does.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        scenarios = select_scenarios(args.only)
        load = pick_load_generator(args.load, connections=args.connections)
        started = datetime.datetime.now(datetime.UTC)
        with bench_stack(
            worker_class=args.worker_class,
            workers=args.workers,
            threads=args.threads,
            seconds=max(args.seconds, args.warmup),
            log=log,
        ) as ctx:
            log(f"load generator: {load.name}")
            log("Redis floor")
            redis_floor = measure_redis_floor(ctx, ops=args.redis_ops, runs=args.runs)
            http = measure_http(ctx, scenarios, load, args)
            stampede = measure_stampede(ctx, args) if args.stampede else None
            server = ctx.gunicorn.description
            servers = [ctx.gunicorn.description] + [s.description for s in ctx.servers.values()]
    except BenchError as exc:
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
        "runs": args.runs,
        "seconds": args.seconds,
        "warmup": args.warmup,
        "redis_ops": args.redis_ops,
        "traffic_requests": args.traffic_requests,
        "quick": args.quick,
        "versions": versions(load),
        "git": git_revision(),
    }
    print(report(meta, redis_floor, http, stampede))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    output = {"meta": meta, "redis_floor": redis_floor, "http": http, "stampede": stampede}
    args.output.write_text(json.dumps(output, indent=2) + "\n")
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
