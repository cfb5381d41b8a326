"""What the rate limits on the site's forms cost a form request, over HTTP, in one run.

The form is the like button's (`POST /posts/{id}/like`), sent with a session and its
CSRF token, as a browser sends it. The benchmark user "unlikes" a post they have not
liked: the cheapest real form request (session read, CSRF check, one row read, a
redirect), so the limiter's round trip weighs as much on it as on any form. The same
gunicorn settings serve it twice: with the limiter off, and on with every policy's
limit out of reach (bench.settings, BENCH_UNBOUNDED_LIMITS), so what is measured is
the check itself, never a refusal. Runs interleave, medians are reported.
"""

from __future__ import annotations

import argparse
import secrets
import time
from dataclasses import asdict

from bench.harness import (
    SESSION_COOKIE,
    STATE_DB,
    BenchContext,
    BenchError,
    LoadResult,
    measure_redis_traffic,
    median,
    pick_load_generator,
)
from bench.scenarios import LIMITER_ON, create_hot_post
from devstack.web import http_request

FORM_PATH = "/posts/{id}/like"
FORM_BODY = b"action=unlike"
RATE_LIMIT_HEADER = "RateLimit"
SETTLE_SECONDS = 0.3


def form_headers(ctx: BenchContext) -> dict[str, str]:
    """The session cookie and a CSRF token, as cookie and header (Django accepts its unmasked 32-character form)."""
    token = secrets.token_hex(16)
    return {
        "Cookie": f"{SESSION_COOKIE}={ctx.session_id}; csrftoken={token}",
        "X-CSRFToken": token,
        "Content-Type": "application/x-www-form-urlencoded",
    }


def _check(port: int, path: str, headers: dict[str, str], *, limited: bool) -> None:
    status, response_headers, content = http_request(port, "POST", path, headers=headers, body=FORM_BODY)
    if status != 302:
        raise BenchError(f"POST {path} answered {status}, not the form's redirect: {content[:300]!r}")
    if limited != (RATE_LIMIT_HEADER in response_headers):
        raise BenchError(
            f"POST {path}: the limiter should be {'on' if limited else 'off'} (headers {dict(response_headers)})"
        )


def measure_forms(ctx: BenchContext, args: argparse.Namespace) -> dict:
    create_hot_post(ctx)
    path = FORM_PATH.format(id=ctx.fixtures["hot_post"])
    headers = form_headers(ctx)
    load = pick_load_generator(args.load, connections=args.connections)
    servers = {"off": ctx.server({}), "on": ctx.server(LIMITER_ON)}
    state = ctx.redis(db=STATE_DB)
    traffic = {}
    try:
        for name, server in servers.items():
            _check(server.port, path, headers, limited=name == "on")
            ctx.log(f"forms: warm-up, limits {name} ({args.warmup:g} s)")
            load.run(
                port=server.port, paths=[path], headers=headers, seconds=args.warmup, method="POST", body=FORM_BODY
            )
            traffic[name] = measure_redis_traffic(
                state,
                server.port,
                [path] * args.traffic_requests,
                headers,
                method="POST",
                body=FORM_BODY,
                expect_status=302,
            )
    finally:
        state.close()
    runs: dict[str, list[LoadResult]] = {name: [] for name in servers}
    for run in range(1, args.runs + 1):
        for name, server in servers.items():
            ctx.log(f"forms: run {run}/{args.runs}, limits {name} ({args.seconds:g} s)")
            time.sleep(SETTLE_SECONDS)
            runs[name].append(
                load.run(
                    port=server.port, paths=[path], headers=headers, seconds=args.seconds, method="POST", body=FORM_BODY
                )
            )
    figures = {
        name: {
            "rps": median([r.rps for r in samples]),
            "p50_ms": median([r.p50_ms for r in samples]),
            "p99_ms": median([r.p99_ms for r in samples]),
            "errors": sum(r.errors for r in samples),
            "bad_status": sum(r.bad_status for r in samples),
            "redis": asdict(traffic[name]),
            "runs": [asdict(r) for r in samples],
        }
        for name, samples in runs.items()
    }
    on, off = figures["on"], figures["off"]
    return {
        "path": FORM_PATH,
        "body": FORM_BODY.decode(),
        "load": load.name,
        "off": off,
        "on": on,
        "on_over_off": on["rps"] / off["rps"],
        "added_us_per_request": 1e6 / on["rps"] - 1e6 / off["rps"],
        "added_round_trips": on["redis"]["reads"] - off["redis"]["reads"],
        "added_commands": on["redis"]["commands"] - off["redis"]["commands"],
    }
