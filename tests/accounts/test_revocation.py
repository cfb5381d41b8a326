"""accounts.revocation against the real private Redis: a token stands until its id, its
family or its owner's epoch says otherwise, and the rate limiter's verdict on the same
token is reused without a round trip of its own."""

from __future__ import annotations

import pytest
from django.http import HttpResponse
from django.test import RequestFactory

from accounts import keys, revocation, tokens
from core.ratelimit.guard import Credential
from core.ratelimit.middleware import RateLimitMiddleware

pytestmark = pytest.mark.django_db


@pytest.fixture
def claims(ada) -> tokens.Claims:
    return tokens.token_decode(tokens.token_pair_issue(user=ada).access, type=tokens.ACCESS)


def test_a_token_stands_until_its_id_its_family_or_its_owners_epoch_revokes_it(claims, state_redis):
    assert revocation.token_verdict(claims).passed is True

    for key in (keys.jwt_revoked(claims.jti), keys.jwt_family_revoked(claims.family)):
        state_redis.set(key, "logout")
        assert revocation.token_verdict(claims).passed is False
        state_redis.delete(key)
    state_redis.set(keys.user_token_epoch(claims.user_id), claims.epoch + 1)
    verdict = revocation.token_verdict(claims)

    assert (verdict.passed, verdict.generation_value) == (False, str(claims.epoch + 1).encode())


def test_the_limiters_verdict_on_the_same_token_is_reused_without_a_round_trip(claims, settings, sent):
    settings.KESTREL_RATE_LIMITS = {"api": {"limit": 5, "window": 60}}
    request = RequestFactory().get("/api/me")
    middleware = RateLimitMiddleware(lambda request: HttpResponse())
    middleware.credential = lambda request: Credential(user_id=claims.user_id, guard=revocation.token_guard(claims))
    middleware(request)
    sent.clear()

    verdict = revocation.token_verdict(claims, request=request)

    assert verdict.passed is True
    assert sent == []
    assert revocation.token_verdict(claims, request=RequestFactory().get("/api/me")).passed is True
    assert sent == ["EVALSHA"]  # a request the limiter did not check: the same script, alone


def test_a_session_counts_while_its_key_exists_and_reads_its_users_epoch(state_redis):
    guard = revocation.session_guard(redis_key="kestrel:test:session", user_id=7)

    assert (guard.required, guard.generation_key, guard.generation) == (
        "kestrel:test:session",
        keys.user_token_epoch(7),
        None,  # read, never compared: the session's auth hash decides
    )
