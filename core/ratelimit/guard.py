"""The limiter's one extension point: an extra check of some keys, in the same script call.

A Guard is decided by the check script with the request's policies (one round trip),
read only; a Credential (settings.KESTREL_RATE_LIMIT_CREDENTIAL) ties it to the user a
request claims to be, who counts as that user only if it passes. What the keys mean is
the caller's business. Fails closed: an unanswered guard is a 503 in the middleware, a
raised error from guard_verdict_fetch, whatever the policies' failure modes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.http import HttpRequest

from core.ratelimit.identity import Identity
from core.ratelimit.script import Decision, check
from core.redis import RedisClient


@dataclass(frozen=True)
class Guard:
    """Keys to check: refuse if any key in `denied` exists, if the integer stored at
    `generation_key` is greater than `generation`, or if `required` does not exist.

    A missing generation key reads as "no newer generation"; one that holds anything
    but an integer refuses. With `generation` None the generation key is read, never
    compared. The values of `required` and `generation_key` come back with the verdict.
    """

    denied: tuple[str, ...] = ()
    generation_key: str | None = None
    generation: int | None = 0
    required: str | None = None


@dataclass(frozen=True)
class GuardVerdict:
    guard: Guard
    passed: bool
    value: bytes | None = None  # the required key's value, None when it has none or is gone
    generation_value: bytes | None = None  # the generation key's, None when it has none or is missing


@dataclass(frozen=True)
class Credential:
    """Who a request claims to be, found without loading its session: `user_id` (None:
    count by address), the `guard` that must pass for it to count as that user, and
    `on_verdict`, told the guard's verdict as soon as the script has decided it."""

    user_id: int | None
    guard: Guard | None = None
    on_verdict: Callable[[GuardVerdict], None] | None = None


# settings.KESTREL_RATE_LIMIT_CREDENTIAL names one (a dotted path).
CredentialFinder = Callable[[HttpRequest], Credential | None]

_VERDICT_ATTR = "kestrel_guard_verdict"


def guard_verdict_fetch(guard: Guard, *, client: RedisClient | None = None) -> GuardVerdict:
    """Decide `guard` alone (the check script with no policies): one round trip, no writes.

    For a request the middleware did not check (rate limiting off, a path no policy
    covers). Raises Redis's errors: a guard fails closed.
    """
    return _verdict(guard, check((), Identity(ip="", guard=guard), client=client))


def guard_verdict_for_request(request: HttpRequest, guard: Guard) -> GuardVerdict | None:
    """RateLimitMiddleware's verdict on exactly `guard` for this request, or None when
    its script did not decide it (then guard_verdict_fetch)."""
    verdict = getattr(request, _VERDICT_ATTR, None)
    if isinstance(verdict, GuardVerdict) and verdict.guard == guard:
        return verdict
    return None


def guard_verdict_deliver(request: HttpRequest, identity: Identity, decision: Decision) -> None:
    """The middleware's part: leave the verdict on the request (guard_verdict_for_request)
    and hand it to the credential's on_verdict. Nothing when the identity had no guard."""
    if identity.guard is None:
        return
    verdict = _verdict(identity.guard, decision)
    setattr(request, _VERDICT_ATTR, verdict)
    if identity.on_verdict is not None:
        identity.on_verdict(verdict)


def _verdict(guard: Guard, decision: Decision) -> GuardVerdict:
    return GuardVerdict(guard, bool(decision.guard_passed), decision.guard_value, decision.guard_generation_value)
