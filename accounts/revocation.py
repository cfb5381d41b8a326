"""Whether a bearer token or a session is still honoured, as a core.ratelimit Guard.

A token stands while neither its id nor its family is denylisted (keys.jwt_revoked,
keys.jwt_family_revoked) and its owner's token epoch (keys.user_token_epoch) is not past
its own; a session while its key (keys.session) exists. The check rides in the rate
limiter's script, or runs alone when the limiter did not: one round trip either way.
State role, fails closed: Redis's errors propagate (503), never access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.http import HttpRequest

from accounts import keys
from core.ratelimit.guard import Guard, GuardVerdict, guard_verdict_fetch, guard_verdict_for_request

if TYPE_CHECKING:
    from accounts.tokens import Claims


def token_guard(claims: Claims) -> Guard:
    """What Redis must say for an access token to stand: neither its id nor its family
    on the denylist, and its owner's epoch not past the token's."""
    return Guard(
        denied=(keys.jwt_revoked(claims.jti), keys.jwt_family_revoked(claims.family)),
        generation_key=keys.user_token_epoch(claims.user_id),
        generation=claims.epoch,
    )


def token_verdict(claims: Claims, *, request: HttpRequest | None = None) -> GuardVerdict:
    """Whether the token still stands, and its owner's mirrored epoch (generation_value).

    The rate limiter's verdict when its script decided this token for `request`, else
    the same script run here. Raises if Redis does not answer.
    """
    guard = token_guard(claims)
    verdict = guard_verdict_for_request(request, guard) if request is not None else None
    return verdict or guard_verdict_fetch(guard)


def session_guard(*, redis_key: str, user_id: int) -> Guard:
    """What Redis must say for a session (stored at `redis_key`) to count as `user_id`'s:
    that it exists. The user's token epoch is read with it, never compared here: the
    session's auth hash decides once the user is loaded (accounts.backends)."""
    return Guard(required=redis_key, generation_key=keys.user_token_epoch(user_id), generation=None)
