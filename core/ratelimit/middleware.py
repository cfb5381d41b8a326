"""RateLimitMiddleware: applies settings.KESTREL_RATE_LIMITS to every request a policy covers.

One check per request (script.check, one round trip); an allowed response carries the
IETF RateLimit-Policy and RateLimit fields, a refused one a 429 (JSON for the API, a
page for the site) with Retry-After. Redis down: each policy's "fail" mode decides
(open: through; closed: 503), logged and counted (ratelimit.error); a guard always
fails closed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from django.utils.module_loading import import_string
from redis.exceptions import OutOfMemoryError

from core import metrics
from core.http import error_response, service_unavailable
from core.ratelimit.guard import CredentialFinder, guard_verdict_deliver
from core.ratelimit.identity import UserAccount, body_error, request_identity
from core.ratelimit.policies import load_policies, path_pattern_ok, paths_match
from core.ratelimit.script import Decision, check
from core.redis import is_unavailable

# One logger for the whole limiter, under the package's name, which log filters match.
logger = logging.getLogger("core.ratelimit")

RATE_LIMITED_MESSAGE = "Rate limit exceeded"


def _redis_failed(exc: BaseException) -> bool:
    """Redis did not answer, or (state role, noeviction) could not take the write."""
    return is_unavailable(exc) or isinstance(exc, OutOfMemoryError)


class RateLimitMiddleware:
    """Applies KESTREL_RATE_LIMITS to every request a policy covers.

    Place it right after the AuthenticationMiddleware (it reads request.user).
    KESTREL_RATE_LIMIT_CREDENTIAL names a guard.CredentialFinder whose guard is decided in
    the same script; KESTREL_RATE_LIMIT_OWN_ACCOUNT_PATHS are doors where the per-account
    policies count the signed-in person (KESTREL_RATE_LIMIT_USER_ACCOUNT names the account).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response
        self.policies = load_policies()
        self.trusted_proxies = int(getattr(settings, "KESTREL_RATE_LIMIT_TRUSTED_PROXIES", 0))
        finder = getattr(settings, "KESTREL_RATE_LIMIT_CREDENTIAL", None)
        self.credential: CredentialFinder | None = import_string(finder) if finder else None
        own = tuple(getattr(settings, "KESTREL_RATE_LIMIT_OWN_ACCOUNT_PATHS", ()))
        if not all(path_pattern_ok(p) for p in own):
            raise ImproperlyConfigured(f"KESTREL_RATE_LIMIT_OWN_ACCOUNT_PATHS: not in the paths' grammar: {own!r}")
        account = getattr(settings, "KESTREL_RATE_LIMIT_USER_ACCOUNT", None)
        if own and not account and any(p.scope == "account" for p in self.policies):
            # Without it those doors would count no account at all: a limit that is not there.
            raise ImproperlyConfigured("KESTREL_RATE_LIMIT_OWN_ACCOUNT_PATHS needs KESTREL_RATE_LIMIT_USER_ACCOUNT")
        self.own_account_paths = own
        self.user_account: UserAccount | None = import_string(account) if account else None

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.path_info
        covering = [p for p in self.policies if p.applies_to(request.method or "", path)]
        if not covering:
            return self.get_response(request)
        own = bool(self.own_account_paths) and paths_match(self.own_account_paths, path)
        identity = request_identity(
            request,
            covering,
            trusted_proxies=self.trusted_proxies,
            credential=self.credential,
            user_account=self.user_account if own else None,
        )
        applied = [p for p in covering if p.subject(identity) is not None]
        try:
            decision = check(applied, identity)
        except Exception as exc:
            if not _redis_failed(exc):
                raise
            # Failure policy, per policy: "closed" refuses with 503,
            # "open" lets the request through (an outage of the limiter must not become
            # an outage of what it limits); either way logged and counted, so we know it
            # happens. A guard fails closed whatever the policies say: a revocation that
            # cannot be checked must never let the credential in.
            for policy in applied:
                metrics.incr("ratelimit.error", policy=policy.name)
            closed = [p.name for p in applied if p.fail == "closed"]
            if identity.guard is not None:
                metrics.incr("ratelimit.guard_error")
                closed.append("credential check")
            if closed:
                logger.error("Rate limiter unavailable, failing closed (%s): %s", ", ".join(closed), exc)
                return service_unavailable(request, "Redis")
            logger.warning("Rate limiter unavailable, failing open (%s): %s", ", ".join(p.name for p in applied), exc)
            return self._respond(request)

        guard_verdict_deliver(request, identity, decision)
        if not decision.allowed:
            for result in decision.results:
                if not result.allowed:
                    metrics.incr("ratelimit.denied", policy=result.policy.name)
            return rate_limited_response(request, decision)
        response = self._respond(request)
        for name, value in rate_limit_headers(decision).items():
            response[name] = value
        return response

    def _respond(self, request: HttpRequest) -> HttpResponse:
        if (error := body_error(request)) is not None:
            raise error  # Django answers it: 400 (handler400)
        return self.get_response(request)


def rate_limit_headers(decision: Decision) -> dict[str, str]:
    """The RateLimit-Policy and RateLimit fields (draft-ietf-httpapi-ratelimit-headers -08 to -11).

    One Structured Fields item per policy, named:
        RateLimit-Policy: "api";q=100;w=60, "auth_ip";q=10;w=60
        RateLimit: "api";r=99;t=60, "auth_ip";r=9;t=6
    No "pk": it would echo the hashed subject (docs/design.md, "Rate limits").
    """
    if not decision.results:
        return {}
    results = decision.results
    return {
        "RateLimit-Policy": ", ".join(f'"{r.policy.name}";q={r.policy.limit};w={r.policy.window}' for r in results),
        "RateLimit": ", ".join(f'"{r.policy.name}";r={r.remaining};t={r.reset_seconds}' for r in results),
    }


def rate_limited_response(request: HttpRequest, decision: Decision) -> HttpResponse:
    """429 with Retry-After and the RateLimit fields: {"error": "Rate limit exceeded"} for
    the API, a page saying when to try again for the site's pages (core.http.wants_json
    decides, as for the 503s)."""
    # The draft: Retry-After no earlier than the end of the refusing policy's window
    # ("t"); retry_after is that value, taken over every refusing policy.
    response = error_response(
        request,
        429,
        RATE_LIMITED_MESSAGE,
        template="429.html",
        context={"wait": _wait_text(decision.retry_after)},
    )
    response["Retry-After"] = str(decision.retry_after)
    for name, value in rate_limit_headers(decision).items():
        response[name] = value
    return response


def _wait_text(seconds: int) -> str:
    """ "6 seconds", "2 minutes", "1 hour": rounded up, so that whoever waits that long gets in."""
    if seconds < 60:
        count, unit = seconds, "second"
    elif seconds <= 59 * 60:
        count, unit = math.ceil(seconds / 60), "minute"
    else:
        count, unit = math.ceil(seconds / 3600), "hour"
    return f"{count} {unit}{'' if count == 1 else 's'}"
