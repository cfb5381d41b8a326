"""The rate limiter's own cost per request, in process: RateLimitMiddleware alone in a loop.

    RATE_LIMIT_ENABLED=1 RATE_LIMIT_API_PER_MINUTE=1000000000 \\
        DJANGO_SETTINGS_MODULE=config.settings python -m bench.limiter --seconds 1

Variants: a redis-py GET for scale, a path no policy covers, an anonymous /api/ path
(one EVALSHA), and a bearer one (its revocation check in that same EVALSHA).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

SECONDS = 1.0
WARMUP_CALLS = 200


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.limiter", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=SECONDS, help=f"per variant (default {SECONDS:g})")
    args = parser.parse_args(argv)
    if args.seconds <= 0:
        parser.error("--seconds must be positive")

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    print(json.dumps(run(seconds=args.seconds)))
    return 0


def run(*, seconds: float) -> dict:
    from django.conf import settings
    from django.http import HttpResponse
    from django.test import RequestFactory

    from core.ratelimit.middleware import RateLimitMiddleware
    from core.redis import get_redis

    middleware = RateLimitMiddleware(lambda request: HttpResponse())
    if not middleware.policies:
        raise SystemExit("the rate limiter is off: run with RATE_LIMIT_ENABLED=1")
    factory = RequestFactory()
    client = get_redis("state")
    variants = [
        ("redis-py GET, for scale", lambda: None, lambda request: client.get("bench:limiter:floor")),
        ("no policy applies (/bench/floor)", lambda: factory.get("/bench/floor"), middleware),
        ("/api/, anonymous (per address)", lambda: factory.get("/api/bench-floor"), middleware),
    ]
    token = _access_token()
    if token is not None:
        headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
        name = "/api/, bearer token (per user + denylist)"
        variants.append((name, lambda: factory.get("/api/me", **headers), middleware))
    return {
        "policies": [policy.name for policy in middleware.policies],
        "credential": getattr(settings, "KESTREL_RATE_LIMIT_CREDENTIAL", None),
        "variants": [_loop(name, call, make, seconds) for name, make, call in variants],
    }


def _access_token() -> str | None:
    """An access token for the first user, or None where the project has no tokens."""
    try:
        from accounts.tokens import token_pair_issue
    except ImportError:
        return None
    from accounts.models import User

    return token_pair_issue(user=User.objects.order_by("pk").first()).access


def _loop(name: str, call, make_request, seconds: float) -> dict:
    from bench.probe import RedisProbe
    from core.redis import get_redis

    # Requests are built outside the timing (RequestFactory is not what a server pays).
    requests = [make_request() for _ in range(WARMUP_CALLS)]
    for request in requests:
        _check(call(request))
    times = []
    pending = [make_request() for _ in range(2_000)]
    with RedisProbe(get_redis("state")) as probe:
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            if not pending:
                pending = [make_request() for _ in range(2_000)]
            request = pending.pop()
            began = time.perf_counter()
            response = call(request)
            times.append(time.perf_counter() - began)
            _check(response)
    calls = len(times)
    times.sort()
    return {
        "name": name,
        "calls": calls,
        "us": statistics.mean(times) * 1e6,
        "p50_us": times[calls // 2] * 1e6,
        "redis": probe.traffic.per(calls),
    }


def _check(response) -> None:
    if response is not None and getattr(response, "status_code", 200) != 200:
        raise SystemExit(f"the limiter answered {response.status_code}: {response.content[:200]!r}")


if __name__ == "__main__":
    sys.exit(main())
