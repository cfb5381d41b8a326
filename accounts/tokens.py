"""JSON Web Tokens: issue, decode, authenticate, refresh with rotation, revoke.

A log-in gets an access token (5 min) and a refresh token (1 day), HS256 only. Refresh
tokens are single use (one Lua script): a spent one presented again revokes its family.
Log-out denylists a token's id and family (keys.jwt_revoked, keys.jwt_family_revoked,
TTL its remaining life + margin); log out everywhere bumps the user's token epoch
(keys.user_token_epoch). State role, fails closed: Redis down is a 503, never access.
"""

from __future__ import annotations

import functools
import logging
import re
import time
import uuid
from dataclasses import dataclass

import jwt
from django.conf import settings
from django.dispatch import Signal
from django.http import HttpRequest
from redis.cluster import RedisCluster
from redis.commands.core import Script

from accounts import keys, revocation
from accounts.backends import mirrored_epoch, user_get
from accounts.models import User
from core import metrics
from core.commit import after_commit
from core.ratelimit.guard import Credential
from core.redis import fail_open, get_redis

logger = logging.getLogger(__name__)

ACCESS = "access"
REFRESH = "refresh"
ALGORITHM = "HS256"
_ALGORITHMS = [ALGORITHM]  # pinned: decode refuses whatever else a token's header names
_REQUIRED = ["sub", "jti", "type", "iat", "exp", "epoch", "fam"]
_ID = re.compile(r"[0-9a-f]{32}\Z")
_SUB = re.compile(r"[1-9][0-9]{0,18}\Z")
# A token issued "in the future" by more than this is refused: web hosts' clocks may
# differ a little, a token minted by someone holding the key for later use may not.
ISSUED_AT_SKEW = keys.REVOKED_MARGIN


class TokenError(Exception):
    """A token that must not be accepted."""


class InvalidToken(TokenError):
    """Not a token Kestrel issued and still honours: bad signature or algorithm, expired,
    malformed, the wrong type, or its user is gone or inactive."""


class RevokedToken(TokenError):
    """A genuine token that was revoked: logged out, its family revoked, or its owner
    logged out everywhere (or changed their password) since it was issued."""


@dataclass(frozen=True)
class Claims:
    """A decoded token's claims, each checked for shape (token_decode): its user, its
    id (jti), ACCESS or REFRESH, its times, the epoch it was issued under, its family."""

    user_id: int
    jti: str
    type: str  # ACCESS | REFRESH
    issued_at: int
    expires_at: int
    epoch: int
    family: str


@dataclass(frozen=True)
class TokenPair:
    """An access and a refresh token of one family, with their lifetimes in seconds."""

    access: str
    refresh: str
    access_lifetime: int  # seconds
    refresh_lifetime: int

    def as_dict(self) -> dict:
        """The API's answer (camelCase, like the rest of the API)."""
        return {
            "access": self.access,
            "refresh": self.refresh,
            "tokenType": "Bearer",
            "expiresIn": self.access_lifetime,
            "refreshExpiresIn": self.refresh_lifetime,
        }


def _now(now: float | None) -> float:
    return time.time() if now is None else now


def _new_id() -> str:
    return uuid.uuid4().hex  # 122 random bits


# --- Issuing and decoding ---------------------------------------------------------------


def token_pair_issue(*, user: User, now: float | None = None) -> TokenPair:
    """A log-in: a new family of tokens for `user`.

    The epoch is the greater of the database's and Redis's: the mirror can only be
    ahead if the row was overwritten by a stale save, and a token issued under a lower
    epoch would be refused at once. One Redis read; raises if Redis does not answer
    (fails closed: the API answers 503).
    """
    mirrored = get_redis("state").get(keys.user_token_epoch(user.pk))
    epoch = max(user.token_epoch, int(mirrored or 0))
    return _pair(user_id=user.pk, epoch=epoch, family=_new_id(), now=_now(now))


def _pair(*, user_id: int, epoch: int, family: str, now: float) -> TokenPair:
    access_life, refresh_life = settings.JWT_ACCESS_LIFETIME, settings.JWT_REFRESH_LIFETIME
    return TokenPair(
        access=_encode(user_id=user_id, type=ACCESS, epoch=epoch, family=family, now=now, lifetime=access_life),
        refresh=_encode(user_id=user_id, type=REFRESH, epoch=epoch, family=family, now=now, lifetime=refresh_life),
        access_lifetime=access_life,
        refresh_lifetime=refresh_life,
    )


def _encode(*, user_id: int, type: str, epoch: int, family: str, now: float, lifetime: int) -> str:
    issued_at = int(now)
    payload = {
        "sub": str(user_id),
        "jti": _new_id(),
        "type": type,
        "iat": issued_at,
        "exp": issued_at + lifetime,
        "epoch": epoch,
        "fam": family,
    }
    return jwt.encode(payload, settings.JWT_SIGNING_KEY, algorithm=ALGORITHM)


def token_decode(token: str, *, type: str, now: float | None = None) -> Claims:
    """The claims of a genuine, unexpired token of `type`; InvalidToken otherwise.

    Only the signature (HS256 with our key) and the claims' presence are left to PyJWT;
    times are checked here against `now`, and every claim's shape is checked before any
    of it reaches a Redis key or a query. Touches neither Redis nor the database.
    """
    now = _now(now)
    try:
        payload = jwt.decode(
            token,
            settings.JWT_SIGNING_KEY,
            algorithms=_ALGORITHMS,
            options={
                "require": _REQUIRED,
                "verify_exp": False,  # checked below against `now`
                "verify_iat": False,
                "verify_nbf": False,
                "enforce_minimum_key_length": True,
            },
        )
    except (jwt.InvalidTokenError, ValueError, TypeError) as exc:
        raise InvalidToken(str(exc)) from None
    sub, jti, kind, iat, exp, epoch, fam = (payload[c] for c in _REQUIRED)
    shapes = (
        isinstance(sub, str) and _SUB.match(sub),
        isinstance(jti, str) and _ID.match(jti),
        isinstance(fam, str) and _ID.match(fam),
        kind in (ACCESS, REFRESH),
        all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (iat, exp, epoch)),
    )
    if not all(shapes):
        raise InvalidToken("malformed claims")
    if kind != type:
        raise InvalidToken(f"a {kind} token where a {type} token is needed")
    if now >= exp:
        raise InvalidToken("expired")
    if iat > now + ISSUED_AT_SKEW:
        raise InvalidToken("issued in the future")
    return Claims(user_id=int(sub), jti=jti, type=kind, issued_at=iat, expires_at=exp, epoch=epoch, family=fam)


def _token_user(claims: Claims, *, epoch: int | None = None) -> User:
    """The token's user, if still active and not logged out everywhere since.

    `epoch`: the user's token epoch as Redis's mirror said in this request; a copy of
    the user at least that recent may come from this process's memory. None: the
    database (the truth, should the mirror have lost a bump).
    """
    user = user_get(user_id=claims.user_id, epoch=epoch)
    if user is None or not user.is_active:
        raise InvalidToken("no such active user")
    if user.token_epoch > claims.epoch:
        raise RevokedToken("logged out everywhere")
    return user


# --- Authenticating a request -------------------------------------------------------------


def bearer_token(request: HttpRequest) -> str | None:
    """The token of an `Authorization: Bearer <token>` header: None without one (or with
    another scheme), "" for the scheme with no token."""
    # META, not request.headers: every request asks, and most have no such header,
    # which headers.get answers by raising and catching a KeyError.
    scheme, _, token = request.META.get("HTTP_AUTHORIZATION", "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip()


_CLAIMS_ATTR = "_kestrel_access_claims"


def access_claims(request: HttpRequest, *, now: float | None = None) -> Claims:
    """The request's bearer access token, decoded once per request (the rate limiter and
    the authenticator both need it); InvalidToken if it is not a valid access token."""
    token = bearer_token(request) or ""
    cached = getattr(request, _CLAIMS_ATTR, None)
    if cached is None or cached[0] != token:
        try:
            cached = (token, token_decode(token, type=ACCESS, now=now))
        except InvalidToken as exc:
            cached = (token, exc)
        setattr(request, _CLAIMS_ATTR, cached)
    if isinstance(cached[1], InvalidToken):
        raise cached[1]
    return cached[1]


def token_authenticate(request: HttpRequest, *, now: float | None = None) -> tuple[User, Claims]:
    """The user of the request's bearer access token; InvalidToken or RevokedToken.

    The Redis check (denylist and epoch) is accounts.revocation's: one round trip, or
    none beyond the rate limiter's. State role, fail closed: if Redis does not answer
    this raises, and the API answers 503, never access.
    """
    claims = access_claims(request, now=now)
    verdict = revocation.token_verdict(claims, request=request)
    if not verdict.passed:
        raise RevokedToken("on the denylist")
    return _token_user(claims, epoch=mirrored_epoch(verdict.generation_value)), claims


def bearer_rate_limit_credential(request: HttpRequest) -> Credential | None:
    """Who a bearer request is, for the limiter (accounts.authentication.rate_limit_credential).

    Only the signature and claims are checked here (microseconds, no I/O); the guard
    rides in the limiter's script, and a token it refuses counts as anonymous.
    """
    if bearer_token(request) is None:
        return None
    try:
        claims = access_claims(request)
    except InvalidToken:
        return Credential(user_id=None)
    return Credential(user_id=claims.user_id, guard=revocation.token_guard(claims))


# --- Refresh rotation ---------------------------------------------------------------------

_ROTATE_LUA = """
-- KEYS: [1] the refresh token's denylist entry (keys.jwt_revoked), then on one server
--       [2] its family's (keys.jwt_family_revoked), [3] its owner's epoch (keys.user_token_epoch)
-- ARGV: [1] the token's epoch, [2] ms the token has left to live (+ margin),
--       [3] ms the family's entry must live (keys.longest_token_life),
--       [4] this attempt's id (random, one per refresh request)
-- Returns "ok" (the token is now spent: issue the next pair), "revoked", or "reused"
-- (it had been spent already: with KEYS[2], its whole family is now revoked).
-- One script: checking and spending in one step is what makes a refresh token single
-- use when twenty requests present it at once (SET NX lets exactly one through).
-- The spend records the attempt: when a connection drops after the script ran,
-- redis-py sends the same script again, and that retry must find its own spend,
-- not take itself for a thief and revoke the family.
-- With KEYS[1] alone (Redis Cluster, where the three keys are in three slots) it only
-- spends; the caller checks the family and epoch before and revokes the family after.
if #KEYS > 1 then
  if redis.call('EXISTS', KEYS[2]) == 1 then
    return 'revoked'
  end
  local stored = redis.call('GET', KEYS[3])
  if stored and (not tonumber(stored) or tonumber(stored) > tonumber(ARGV[1])) then
    return 'revoked'
  end
end
if redis.call('SET', KEYS[1], ARGV[4], 'NX', 'PX', ARGV[2]) then
  return 'ok'
end
if redis.call('GET', KEYS[1]) == ARGV[4] then
  return 'ok'
end
if #KEYS > 1 then
  redis.call('SET', KEYS[2], 'reused', 'PX', ARGV[3])
end
return 'reused'
"""


@functools.cache
def _rotate_script() -> Script:
    return get_redis("state").register_script(_ROTATE_LUA)


def _ttl_ms(remaining: float) -> int:
    """A denylist entry's TTL: the token's remaining life (seconds) plus the clock-skew margin."""
    return max(1, int((remaining + keys.REVOKED_MARGIN) * 1000))


def token_refresh(*, refresh: str, now: float | None = None) -> TokenPair:
    """Spend a refresh token for the next pair of its family; InvalidToken or RevokedToken.

    Single use: the token's id goes on the denylist as it is spent, atomically with the
    checks. A token presented after it was spent (by a thief, or by its owner after a
    thief) revokes its family: every token descended from that log-in, access tokens
    included. The new pair keeps the family and the epoch (both were just checked).
    """
    now = _now(now)
    claims = token_decode(refresh, type=REFRESH, now=now)
    user = _token_user(claims)
    outcome = _spend(claims, user_id=user.pk, now=now, attempt=_new_id())
    if outcome == "reused":
        metrics.incr("tokens.refresh_reused")
        # No jti or family in the log: they are the ids of denylist keys, redacted wherever shown.
        logger.warning("A spent refresh token of user %s was presented again: its family is revoked", user.pk)
    if outcome != "ok":
        raise RevokedToken(outcome)
    return _pair(user_id=user.pk, epoch=claims.epoch, family=claims.family, now=now)


def _spend(claims: Claims, *, user_id: int, now: float, attempt: str) -> str:
    """Run the rotation script once for this attempt: "ok", "revoked" or "reused"."""
    # State role, fail closed: an unanswered script raises (503) and issues nothing.
    client = get_redis("state")
    denied, family = keys.jwt_revoked(claims.jti), keys.jwt_family_revoked(claims.family)
    epoch = keys.user_token_epoch(user_id)
    args: list[int | str] = [claims.epoch, _ttl_ms(claims.expires_at - now), keys.longest_token_life() * 1000, attempt]
    if not isinstance(client, RedisCluster):
        return _text(_rotate_script()(keys=[denied, family, epoch], args=args, client=client))
    # On a cluster the three keys are in three slots (each keeps its own id as tag, so an
    # upgrade could rename it). The family and epoch only ever move towards refusing, so
    # reading them first decides as the script would; a family revoked between the read
    # and the spend revokes the pair this spend issues too, at its first use.
    pipe = client.pipeline(transaction=False)
    pipe.exists(family)
    pipe.get(epoch)
    revoked, stored = pipe.execute()
    if revoked or (stored is not None and (not stored.isdigit() or int(stored) > claims.epoch)):
        return "revoked"
    outcome = _text(_rotate_script()(keys=[denied], args=args, client=client))
    if outcome == "reused" and not client.set(family, "reused", px=keys.longest_token_life() * 1000, nx=True):
        # Another presentation of the token revoked the family first: this one finds it
        # revoked, as it would have had the script read the family after that one ran.
        return "revoked"
    return outcome


def _text(reply: bytes | str) -> str:
    return reply.decode() if isinstance(reply, bytes) else reply


# --- Revocation ---------------------------------------------------------------------------

# Sent after commit when tokens stop being honoured, with `user_id` and `families` (revoked
# token families) or `epoch` (the new token epoch): whatever stays open on the strength of
# a token or session (feeds' notification streams) ends then, not at its next check.
credentials_revoked = Signal()


def tokens_revoke(*, claims: list[Claims], now: float | None = None) -> None:
    """Log out: each token's id on the denylist (keys.jwt_revoked) for its remaining life
    plus REVOKED_MARGIN, and its family (keys.jwt_family_revoked) with it.

    One round trip whatever the number of tokens. State role, fails closed: raises if
    Redis does not answer, so a logout that did not happen never looks as if it did.
    """
    now = _now(now)
    pipe = get_redis("state").pipeline(transaction=False)
    for c in claims:
        pipe.set(keys.jwt_revoked(c.jti), "logout", px=_ttl_ms(c.expires_at - now))
        pipe.set(keys.jwt_family_revoked(c.family), "logout", px=keys.longest_token_life() * 1000)
    if claims:
        pipe.execute()
    for user_id in sorted({c.user_id for c in claims}):
        families = tuple(c.family for c in claims if c.user_id == user_id)
        after_commit(credentials_revoked.send, sender=Claims, user_id=user_id, families=families)


_EPOCH_PUBLISH_LUA = """
-- KEYS: [1] the user's token epoch (keys.user_token_epoch)
-- ARGV: [1] the epoch just committed to the database, [2] TTL ms
-- Only ever raises the mirror: two bumps whose writes arrive out of order must not
-- leave the lower epoch behind.
local stored = tonumber(redis.call('GET', KEYS[1]))
if stored and stored >= tonumber(ARGV[1]) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""


@functools.cache
def _epoch_publish_script() -> Script:
    return get_redis("state").register_script(_EPOCH_PUBLISH_LUA)


def token_epoch_publish(*, user_id: int, epoch: int) -> None:
    """Mirror a committed epoch bump into Redis (keys.user_token_epoch), for the per-request check.

    Called after commit; the script only ever raises the mirror. Fails open (counted as
    tokens.epoch_publish_error, logged): the database holds the bump, and every process
    reloads the user from it once the invalidation bus drops its copy.
    """
    # Fails open although on the state role: the database already holds the bump, which
    # refuses the old tokens and sessions wherever the user is loaded from it.
    with fail_open(
        "tokens.epoch_publish_error", "Token epoch %s of user %s not mirrored to Redis", epoch, user_id, log=logger
    ):
        _epoch_publish_script()(
            keys=[keys.user_token_epoch(user_id)],
            args=[epoch, keys.longest_token_life() * 1000],
            client=get_redis("state"),
        )
