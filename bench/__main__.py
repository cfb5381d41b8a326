"""`python -m bench` (or `make bench`): measure Kestrel against floors taken in the same run.

    python -m bench                       # 3 runs of 5 s per path, sync workers
    python -m bench --worker-class gthread
    python -m bench --quick               # 1 run of 2 s: a smoke test of the harness

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
    BenchContext,
    BenchError,
    LoadGenerator,
    LoadResult,
    RedisTraffic,
    bench_stack,
    check_json,
    format_table,
    measure_redis_traffic,
    median,
    pick_load_generator,
    redis_floor_us,
)
from bench.scenarios import HTTP_SCENARIOS, REDIS_FLOOR_OPS, HttpScenario

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
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 run of 2 s, short warm-up, fewer Redis ops")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"JSON output (default {DEFAULT_OUTPUT})")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.seconds, args.warmup, args.redis_ops, args.traffic_requests = 1, 2.0, 0.5, 5_000, 50
    if args.runs < 1 or args.seconds <= 0:
        parser.error("--runs must be at least 1 and --seconds positive")
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
    state = ctx.redis(db=0)
    traffic: dict[str, RedisTraffic] = {}
    try:
        for scenario in scenarios:
            headers = ctx.headers(needs_session=scenario.needs_session)
            if scenario.prepare:
                scenario.prepare(ctx)
            check_json(ctx.port, scenario.path, headers, scenario.expect_keys)
            log(f"warm-up {scenario.name} ({args.warmup:g} s)")
            load.run(port=ctx.port, path=scenario.path, headers=headers, seconds=args.warmup)
            # Sequential requests on a warm server: the counters then hold this path's traffic only.
            traffic[scenario.name] = measure_redis_traffic(
                state, ctx.port, scenario.path, headers, args.traffic_requests
            )
    finally:
        state.close()

    # Runs interleave the paths, so a drift in machine load during the benchmark hits every path alike.
    runs: dict[str, list[LoadResult]] = {scenario.name: [] for scenario in scenarios}
    for run in range(1, args.runs + 1):
        for scenario in scenarios:
            log(f"run {run}/{args.runs} {scenario.name} ({args.seconds:g} s)")
            headers = ctx.headers(needs_session=scenario.needs_session)
            # gunicorn still serves what the last run left in its listen backlog; let it
            # finish so it does not eat into this run.
            time.sleep(SETTLE_SECONDS)
            result = load.run(port=ctx.port, path=scenario.path, headers=headers, seconds=args.seconds)
            runs[scenario.name].append(result)

    results = []
    for scenario in scenarios:
        samples = runs[scenario.name]
        rps = [r.rps for r in samples]
        results.append(
            {
                "name": scenario.name,
                "path": scenario.path,
                "description": scenario.description,
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


# --- Report ------------------------------------------------------------------------


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None or math.isnan(value) else format(value, spec)


def report(meta: dict, redis_floor: list[dict], http: list[dict]) -> str:
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

    lines.append(f"HTTP: {meta['server']}, load {meta['versions']['load']}, 127.0.0.1")
    rows = []
    for result in http:
        redis_info = result["redis"]
        rows.append(
            [
                result["name"],
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
    lines += [format_table(headers, rows, left=2), ""]

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
    suspect = [r["name"] for r in http if r["errors"] or r["bad_status"]]
    if suspect:
        lines += ["", f"WARNING: errors or non-2xx answers during {', '.join(suspect)}: those figures are suspect."]
    lines += [
        "",
        "ratio: req/s over the baseline's req/s, same run; DESIGN: the ratio in DESIGN.md's table.",
        "us/request over it: 1e6/req/s minus the baseline's 1e6/req/s (throughput time, both workers busy).",
        "spread: (fastest - slowest run) / median req/s.",
        "round trips: Redis read events per request (a pipeline is one).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # `kill` or a stopping `make` sends SIGTERM: turn it into an exception so the
    # `finally` blocks stop gunicorn and Redis, as Ctrl-C (KeyboardInterrupt) does.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        scenarios = select_scenarios(args.only)
        load = pick_load_generator(args.load, connections=args.connections)
        started = datetime.datetime.now(datetime.UTC)
        with bench_stack(worker_class=args.worker_class, workers=args.workers, threads=args.threads, log=log) as ctx:
            log(f"load generator: {load.name}")
            log("Redis floor")
            redis_floor = measure_redis_floor(ctx, ops=args.redis_ops, runs=args.runs)
            http = measure_http(ctx, scenarios, load, args)
            server = ctx.gunicorn.description
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted; servers stopped", file=sys.stderr)
        return 130

    meta = {
        "started": started.isoformat(timespec="seconds"),
        "server": server,
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
    print(report(meta, redis_floor, http))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"meta": meta, "redis_floor": redis_floor, "http": http}, indent=2) + "\n")
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
