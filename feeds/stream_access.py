"""Who may hold a notification stream open: the per-person cap, and revocation.

Cap: each open stream holds a lease in keys.user_stream_leases (a ZSET scored by
expiry), taken by one script only under the cap; beyond it the new stream gets a 429.
Revocation: a stream re-checks its session or token every StreamPolicy.auth_check, and
revocations publish on keys.user_stream_control (after commit) to end it at once.
Publishing fails open: the timed check still ends the stream within seconds.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from django.contrib.auth.signals import user_logged_out
from django.dispatch import receiver
from django.http import HttpRequest
from redis.commands.core import Script

from accounts import keys as account_keys
from accounts import revocation, tokens
from accounts.models import User
from core.commit import after_commit
from core.redis import fail_open, get_redis, is_cluster
from feeds import keys

logger = logging.getLogger(__name__)

# --- The per-person cap ------------------------------------------------------------------

# A read that decides a write (how many unexpired leases, then add one), hence a script.
_LEASE = """
-- KEYS: [1] the person's stream leases (keys.user_stream_leases)
-- ARGV: [1] now (ms since the Unix epoch), [2] the lease's expiry (ms), [3] the stream's id,
--       [4] the cap, [5] the key's TTL (ms)
-- Returns 1 if the stream holds a lease now (admitted, or refreshed), 0 if the cap is full.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if not redis.call('ZSCORE', KEYS[1], ARGV[3]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""


@functools.cache
def _lease_script() -> Script:
    return get_redis("state").register_script(_LEASE)


def stream_lease_acquire(*, user_id: int, stream_id: str, now: float, lease: float, cap: int) -> bool:
    """Take or refresh a stream's lease until now + lease (seconds); False when the person
    already holds `cap` other unexpired leases. Raises what Redis raises."""
    now_ms = int(now * 1000)
    lease_ms = int(lease * 1000)
    return bool(
        _lease_script()(
            keys=[keys.user_stream_leases(user_id)],
            args=[now_ms, now_ms + lease_ms, stream_id, cap, 2 * lease_ms],
        )
    )


def stream_lease_release(*, user_id: int, stream_id: str) -> None:
    """Give the slot back. Raises what Redis raises (the lease then expires on its own)."""
    get_redis("state").zrem(keys.user_stream_leases(user_id), stream_id)


# --- Credentials -------------------------------------------------------------------------


def session_digest(session_key: str) -> str:
    """What control messages name a session by: never the key itself, a credential."""
    return hashlib.sha256(session_key.encode()).hexdigest()


@dataclass(frozen=True)
class StreamCredential:
    """What a stream was opened with: a session, or a bearer access token (`claims`).

    `epoch` is the user's token epoch then; a later epoch (log out everywhere, a
    password change) ends the stream, whichever the credential.
    """

    user_id: int
    epoch: int
    session_key: str | None = None
    claims: tokens.Claims | None = None

    @property
    def expires_at(self) -> float | None:
        return self.claims.expires_at if self.claims is not None else None

    @property
    def ended_comment(self) -> str:
        return "The token has been revoked." if self.claims is not None else "The session has ended."

    def still_valid(self) -> bool:
        """One Redis round trip: the token's denylist and epoch, or the session's
        existence and the epoch mirror. Raises what Redis raises."""
        if self.claims is not None:
            return revocation.token_verdict(self.claims).passed
        if not self.session_key:
            return False
        pipe = get_redis("state").pipeline(transaction=False)
        pipe.exists(account_keys.session(self.session_key))
        pipe.get(account_keys.user_token_epoch(self.user_id))
        exists, epoch = pipe.execute()
        # A missing mirror means no bump since the longest token life: nothing to refuse.
        return bool(exists) and (epoch is None or int(epoch) <= self.epoch)

    def ended_by(self, message: dict) -> bool:
        """Whether a control message (see streams_revoke_publish) revokes this credential."""
        epoch = message.get("epoch")
        if isinstance(epoch, int) and epoch > self.epoch:
            return True
        if self.claims is not None:
            return self.claims.family in (message.get("families") or ())
        if not self.session_key:
            return False
        return message.get("session") == session_digest(self.session_key)


def stream_credential(request: HttpRequest) -> StreamCredential | None:
    """The request's bearer token (judged alone, as the API does) or its session; None
    for neither. Raises tokens.TokenError for a bad token, and Redis's errors (fails closed)."""
    if tokens.bearer_token(request) is not None:
        user, claims = tokens.token_authenticate(request)
        return StreamCredential(user_id=user.pk, epoch=claims.epoch, claims=claims)
    if not request.user.is_authenticated:
        return None
    return StreamCredential(
        user_id=request.user.pk, epoch=request.user.token_epoch, session_key=request.session.session_key
    )


# --- Revocation events -------------------------------------------------------------------


def streams_revoke_publish(
    *, user_id: int, session_key: str | None = None, families: tuple[str, ...] = (), epoch: int | None = None
) -> None:
    """Tell the person's open streams, on every host, that a credential was revoked.

    Call it after the revocation is written (after commit). Fails open: a stream that
    misses the message notices on its next timed check (StreamPolicy.auth_check).
    """
    message: dict = {}
    if session_key:
        message["session"] = session_digest(session_key)
    if families:
        message["families"] = sorted(set(families))
    if epoch is not None:
        message["epoch"] = epoch
    if not message:
        return
    # Fail open: the revocation itself is written; the streams' timed check still ends them.
    with fail_open("sse.revoke_publish_error", "Stream revocation for user %s not published", user_id, log=logger):
        client = get_redis("state")
        # On a cluster a shard channel (feeds.sse subscribes with SSUBSCRIBE): the nodes
        # of the person's slot hear it, not every node of the cluster.
        publish = client.spublish if is_cluster(client) else client.publish
        publish(keys.user_stream_control(user_id), json.dumps(message, separators=(",", ":")))


@receiver(user_logged_out, dispatch_uid="feeds.end_streams_of_session")
def end_streams_of_session(sender: object, request: HttpRequest | None, user: User | None, **kwargs: object) -> None:
    """On log-out: end the streams opened with this session, after commit."""
    # Sent before Django flushes the session, so the key is still known here; the
    # message names the session, so it holds even if it arrives before the flush.
    session = getattr(request, "session", None)
    if user is None or session is None or not session.session_key:
        return
    after_commit(streams_revoke_publish, user_id=user.pk, session_key=session.session_key)


@receiver(tokens.credentials_revoked, dispatch_uid="feeds.end_streams_of_tokens")
def end_streams_of_tokens(
    sender: object, user_id: int, families: Iterable[str] = (), epoch: int | None = None, **kwargs: object
) -> None:
    """On revoked token families or a new token epoch: end the streams they opened."""
    streams_revoke_publish(user_id=user_id, families=tuple(families), epoch=epoch)
