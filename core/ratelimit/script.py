"""The check: every policy of a request, and its guard, decided by one Lua script.

One EVALSHA per request, atomic, all or nothing: counters are written only when every
policy allows, each with its TTL in the same SET. One STRING per subject and policy
(rate_limit_key), state role, TTL <= the policy's window. Time is Redis's clock unless
a caller passes `now`. Raises Redis's errors: the failure policy is the caller's.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.utils.crypto import salted_hmac
from redis.cluster import RedisCluster
from redis.commands.core import Script

from core.keys import key, tag_the_id
from core.ratelimit.policies import US_PER_SECOND, Policy
from core.redis import RedisClient, get_redis

if TYPE_CHECKING:
    from core.ratelimit.guard import Guard
    from core.ratelimit.identity import Identity


@dataclass(frozen=True)
class PolicyResult:
    policy: Policy
    allowed: bool
    remaining: int
    # The RateLimit field's "t": seconds within which no more than `remaining` can be
    # spent. Fixed window: until the window ends. GCRA: until the next request's worth
    # of quota frees up (when remaining is 0, the same as retry_after).
    reset_seconds: int
    retry_after: int  # seconds until a request would be allowed; 0 when allowed


@dataclass(frozen=True)
class Decision:
    allowed: bool
    results: tuple[PolicyResult, ...] = ()
    guard_passed: bool | None = None  # None: the identity had no guard
    guard_value: bytes | None = None  # the guard's required key's value
    guard_generation_value: bytes | None = None  # the guard's generation key's value

    @property
    def binding(self) -> PolicyResult | None:
        """The result that decided: the refusal that lasts longest, else the least quota left."""
        if not self.results:
            return None
        refused = [r for r in self.results if not r.allowed]
        if refused:
            return max(refused, key=lambda r: r.retry_after)
        return min(self.results, key=lambda r: (r.remaining, -r.reset_seconds))

    @property
    def policy(self) -> Policy | None:
        return self.binding.policy if self.binding else None

    @property
    def limit(self) -> int | None:
        return self.binding.policy.limit if self.binding else None

    @property
    def remaining(self) -> int | None:
        return self.binding.remaining if self.binding else None

    @property
    def reset_seconds(self) -> int | None:
        return self.binding.reset_seconds if self.binding else None

    @property
    def retry_after(self) -> int:
        return max((r.retry_after for r in self.results if not r.allowed), default=0)


# --- Keys -------------------------------------------------------------------------------


def rate_limit_key(policy: Policy, subject: str) -> str:
    """STRING, state role, TTL <= the policy's window: one subject's quota under one policy.

    Fixed window: "<window start us>:<count>"; GCRA: "<theoretical arrival time us>". The
    subject is keyed by HMAC (no address or email readable in Redis), with the algorithm in
    the digest so switching it starts fresh.
    """
    return key("core", "ratelimit", _subject_digest(settings.SECRET_KEY, policy.algorithm, subject), policy.name)


# The counters as named before hash tags (manage.py redis_rename_keys): a request spends
# from the same quota after an upgrade.
RENAMES = (tag_the_id("core:ratelimit"),)


# Every request computes one or more, mostly for the same few thousand subjects.
@functools.lru_cache(maxsize=4096)
def _subject_digest(secret: str, algorithm: str, subject: str) -> str:
    digest = salted_hmac("kestrel.ratelimit", f"{algorithm}|{subject}", secret=secret, algorithm="sha256")
    return digest.hexdigest()[:32]


# --- The script -------------------------------------------------------------------------

# One call's keys span up to three subjects (a user, an address, an account), each with
# its digest as hash tag, and the guard's keys: several hash slots. One server (or a
# Sentinel-managed primary) runs it as it is; on Redis Cluster, where no tag could join
# them short of one slot for every request, check() calls it once per slot with that
# slot's counters and no guard (docs/design.md, "Hash tags").
_CHECK_LUA = """
-- KEYS: counter_1 .. counter_n   one STRING per policy (core.ratelimit.rate_limit_key)
--       then the guard's keys, if any: denied_1 .. denied_d, then its generation key
--       (when ARGV[4] is "1"), then its required key (when ARGV[6] is "1"), then the
--       fallback counters the policies point at
-- ARGV: [1] now_us ("" = the server's clock, TIME), [2] n (policies), [3] d (denied keys),
--       [4] "1" when the guard has a generation key, else "", [5] the credential's
--       generation ("" = read the key, compare nothing), [6] "1" when the guard has a
--       required key, else "",
--       then per policy i four values: algorithm_i ("fixed" | "gcra"), limit_i (requests),
--       window_i (microseconds), fallback_i (index in KEYS of the counter spent instead
--       when the guard refuses, i.e. the request's anonymous subject; 0 = none)
-- Returns: {allowed (1 | 0), guard (1 passed or none | 0 refused), the required key's
--           value (nil when none or missing), the generation key's value (likewise),
--           then per policy i: allowed_i, remaining_i, reset_us_i, retry_us_i,
--           then, when allowed, per policy i the value written (what _REFUND_LUA takes)}
-- The guard only reads; it decides which counters are spent, never whether (a request with
-- a revoked credential is spent like any anonymous one, and refused later by its view).
-- Writes only when every policy allows (all or nothing), and every SET carries its PX.
-- remaining_i: the quota left after this request if it is allowed; as it stands (nothing
-- spent) if it is refused.
-- Times are integers of microseconds: exact in Lua's doubles (up to 2^53, centuries).
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local n, d, generation = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[5]
local guard = 1
if d > 0 and redis.call('EXISTS', unpack(KEYS, n + 1, n + d)) > 0 then
  guard = 0
end
local at = n + d + 1
local stored = false
if ARGV[4] == '1' then
  stored = redis.call('GET', KEYS[at])
  if stored and generation ~= '' then
    -- A generation that cannot be read must not let a credential through.
    local current = tonumber(stored)
    if not current or current > tonumber(generation) then
      guard = 0
    end
  end
  at = at + 1
end
local value = false
if ARGV[6] == '1' then
  value = redis.call('GET', KEYS[at])
  if not value then
    guard = 0
  end
end
local reply = {1, guard, value, stored}
local writes, written = {}, {}
for i = 1, n do
  local a = 7 + (i - 1) * 4
  local algorithm, limit, window = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local key = KEYS[i]
  local fallback = tonumber(ARGV[a + 3])
  if guard == 0 and fallback > 0 then
    key = KEYS[fallback]
  end
  local stored = redis.call('GET', key)
  local allowed, remaining, reset, retry = 0, 0, 0, 0
  if algorithm == 'fixed' then
    -- The article's window: it opens at the first request and lasts `window`.
    local start, count = now, 0
    if stored then
      local s, c = string.match(stored, '^(%d+):(%d+)$')
      -- "now < s" (a clock stepping back) stays in the window: never a free reset.
      if s and now < tonumber(s) + window then
        start, count = tonumber(s), tonumber(c)
      end
    end
    reset = start + window - now
    if count < limit then
      allowed, remaining = 1, limit - count - 1
      written[i] = string.format('%d:%d', start, count + 1)
      writes[#writes + 1] = {key, written[i], reset}
    else
      retry = reset
    end
  elseif algorithm == 'gcra' then
    -- Generic cell rate algorithm: one request every `interval`, `limit` at once at
    -- most. The value is the theoretical arrival time (TAT) of the next request.
    local interval = math.floor(window / limit)
    local tat = math.max(tonumber(stored) or now, now)
    local new_tat = tat + interval
    if new_tat - now > window then
      retry = new_tat - window - now
      reset = retry
    else
      local used = new_tat - now
      allowed = 1
      remaining = math.min(math.floor((window - used) / interval), limit - 1)
      reset = used - (window - (remaining + 1) * interval)
      written[i] = string.format('%d', new_tat)
      writes[#writes + 1] = {key, written[i], used}
    end
  else
    return redis.error_reply('ratelimit: unknown algorithm ' .. tostring(algorithm))
  end
  if allowed == 0 then
    reply[1] = 0
  end
  local r = #reply
  reply[r + 1], reply[r + 2], reply[r + 3], reply[r + 4] = allowed, remaining, reset, retry
end
if reply[1] == 1 then
  for _, w in ipairs(writes) do
    redis.call('SET', w[1], w[2], 'PX', string.format('%d', math.max(1, math.ceil(w[3] / 1000))))
  end
  for i = 1, n do
    reply[#reply + 1] = written[i]
  end
else
  -- Refused, so nothing was spent: report the allowing policies' quota as it stands
  -- (one more than after a spend, for both algorithms; "t" is the same either way).
  for i = 1, n do
    local r = 4 + (i - 1) * 4
    if reply[r + 1] == 1 then
      reply[r + 2] = math.min(reply[r + 2] + 1, tonumber(ARGV[8 + (i - 1) * 4]))
    end
  end
end
return reply
"""


@functools.cache
def _check_script() -> Script:
    # Registered once per process and called with EVALSHA; redis-py loads the script
    # again by itself after a Redis restart (NOSCRIPT), at the cost of one extra
    # round trip that once.
    return get_redis("state").register_script(_CHECK_LUA)


def check(
    policies: Iterable[Policy],
    identity: Identity,
    *,
    now: float | None = None,
    client: RedisClient | None = None,
) -> Decision:
    """Spend one request from every policy that can name a subject in `identity`, and
    decide `identity.guard` if it has one.

    One round trip (one EVALSHA) whatever the number of policies, none when no policy
    applies and there is no guard. On a Redis Cluster the keys span slots, so the guard
    is read first and each slot's counters are spent by a call of their own
    (`_check_by_slot`). `now` (seconds since the epoch) defaults to Redis's own clock.
    Raises Redis's errors: what an outage means is the caller's failure policy.
    """
    counted = [(policy, subject) for policy in policies if (subject := policy.subject(identity)) is not None]
    guard = identity.guard
    if not counted and guard is None:
        return Decision(allowed=True)
    client = client if client is not None else get_redis("state")
    if isinstance(client, RedisCluster):
        return _check_by_slot(counted, identity, now=now, client=client)
    keys = [rate_limit_key(policy, subject) for policy, subject in counted]
    denied = guard.denied if guard is not None else ()
    keys += denied
    has_generation = generation = ""
    if guard is not None and guard.generation_key is not None:
        keys.append(guard.generation_key)
        has_generation = "1"
        generation = "" if guard.generation is None else str(int(guard.generation))
    required = ""
    if guard is not None and guard.required is not None:
        keys.append(guard.required)
        required = "1"
    args: list[str | int] = [_now_arg(now), len(counted), len(denied), has_generation, generation, required]
    # A guarded user counts as themselves only if the guard passes: a revoked credential
    # must not spend its victim's quota, nor escape counting, so it counts as anonymous.
    anonymous = replace(identity, user_id=None, guard=None)
    for policy, subject in counted:
        fallback = 0
        if guard is not None:
            other = policy.subject(anonymous)
            if other is not None and other != subject:
                keys.append(rate_limit_key(policy, other))
                fallback = len(keys)  # Lua's KEYS are 1-based
        args += _policy_args(policy, fallback)
    # The state role retries a dropped connection; a script that ran but whose reply
    # was lost then runs twice, spending two requests: the safe direction to err in.
    reply = _check_script()(keys=keys, args=args, client=client)
    return Decision(
        allowed=bool(reply[0]),
        results=tuple(_results([policy for policy, _ in counted], reply)),
        guard_passed=None if guard is None else bool(reply[1]),
        guard_value=reply[2],
        guard_generation_value=reply[3],
    )


def _check_by_slot(
    counted: list[tuple[Policy, str]], identity: Identity, *, now: float | None, client: RedisCluster
) -> Decision:
    """check() on a Redis Cluster, where one script cannot span the request's slots.

    The guard's keys (a session, or a token's id, family and owner's epoch) are read in
    one pipeline, grouped by node, and decided here as the script would decide them: it
    only reads, and each of its keys only ever moves towards refusing, so reading them
    at slightly different instants decides as one read at the first. Then the counters
    whose subject the guard settled are spent by one script call per hash slot, each all
    or nothing for its slot. If one refuses, what the others spent is given back
    (_REFUND_LUA): all or nothing across subjects again, except that for the moment in
    between, a concurrent request may find a quota one lower than it will be.
    """
    guard = identity.guard
    passed, value, stored = _guard_read(guard, client) if guard is not None else (True, None, None)
    anonymous = replace(identity, user_id=None, guard=None)
    by_slot: dict[int, list[tuple[int, Policy, str]]] = {}
    for i, (policy, subject) in enumerate(counted):
        if not passed:
            subject = policy.subject(anonymous) or subject
        counter = rate_limit_key(policy, subject)
        by_slot.setdefault(client.keyslot(counter), []).append((i, policy, counter))
    results: list[PolicyResult] = [None] * len(counted)  # type: ignore[list-item]  # each set below
    spent: list[tuple[list[tuple[int, Policy, str]], list[Any]]] = []
    for calls in by_slot.values():
        policies = [policy for _, policy, _ in calls]
        args: list[str | int] = [_now_arg(now), len(calls), 0, "", "", ""]
        for policy in policies:
            args += _policy_args(policy, 0)
        reply = _check_script()(keys=[counter for _, _, counter in calls], args=args, client=client)
        for (i, _, _), result in zip(calls, _results(policies, reply), strict=True):
            results[i] = result
        if reply[0]:
            spent.append((calls, reply))
    allowed = len(spent) == len(by_slot)
    if not allowed:
        for calls, reply in spent:
            _refund(calls, reply, client)
            for i, policy, _ in calls:
                # As the script reports an allowing policy of a refused request: nothing spent.
                results[i] = replace(results[i], remaining=min(results[i].remaining + 1, policy.limit))
    return Decision(
        allowed=allowed,
        results=tuple(results),
        guard_passed=None if guard is None else passed,
        guard_value=value,
        guard_generation_value=stored,
    )


_REFUND_LUA = """
-- KEYS: counters that one call of the check script spent, in one slot
-- ARGV: per key i three values: algorithm_i, the value that call wrote_i (its reply's
--       tail), the policy's interval_i in microseconds (GCRA; "" for fixed)
-- Gives the request back: a fixed window's count goes down one if the window is still
-- the one spent in; a GCRA arrival time goes back one interval if nothing moved it
-- below the spend. Whatever was spent after it stays spent. Keeps each key's TTL.
for i, key in ipairs(KEYS) do
  local algorithm, written = ARGV[3 * i - 2], ARGV[3 * i - 1]
  local stored = redis.call('GET', key)
  if stored and algorithm == 'fixed' then
    local s, c = string.match(stored, '^(%d+):(%d+)$')
    if s and s == string.match(written, '^(%d+):') and tonumber(c) > 0 then
      redis.call('SET', key, string.format('%s:%d', s, tonumber(c) - 1), 'KEEPTTL')
    end
  elseif stored and algorithm == 'gcra' then
    local tat = tonumber(stored)
    if tat and tat >= tonumber(written) then
      redis.call('SET', key, string.format('%d', tat - tonumber(ARGV[3 * i])), 'KEEPTTL')
    end
  end
end
return #KEYS
"""


@functools.cache
def _refund_script() -> Script:
    return get_redis("state").register_script(_REFUND_LUA)


def _refund(calls: list[tuple[int, Policy, str]], reply: list[Any], client: RedisCluster) -> None:
    """Give back what one allowed call of the check script spent (its keys share a slot)."""
    written = reply[4 + 4 * len(calls) :]
    args: list[str | int] = []
    for (_, policy, _), value in zip(calls, written, strict=True):
        interval = policy.window * US_PER_SECOND // policy.limit if policy.algorithm == "gcra" else ""
        args += [policy.algorithm, value, interval]
    _refund_script()(keys=[counter for _, _, counter in calls], args=args, client=client)


def _guard_read(guard: Guard, client: RedisCluster) -> tuple[bool, bytes | None, bytes | None]:
    """The guard decided from plain reads (one pipeline): (passed, required value, generation value).

    The script's rules: any denied key present refuses; a generation key holding
    anything but an integer, or one greater than the credential's, refuses (when there
    is a generation to compare); a required key that is missing refuses.
    """
    pipe = client.pipeline(transaction=False)
    for denied in guard.denied:
        pipe.exists(denied)
    if guard.generation_key is not None:
        pipe.get(guard.generation_key)
    if guard.required is not None:
        pipe.get(guard.required)
    replies = iter(pipe.execute())
    passed = not any([next(replies) for _ in guard.denied])
    stored = next(replies) if guard.generation_key is not None else None
    if stored is not None and guard.generation is not None:
        try:
            passed = passed and int(stored) <= guard.generation
        except ValueError:
            passed = False  # a generation that cannot be read must not let a credential through
    value = next(replies) if guard.required is not None else None
    if guard.required is not None and value is None:
        passed = False
    return passed, value, stored


def _now_arg(now: float | None) -> str:
    return "" if now is None else str(int(now * US_PER_SECOND))


def _policy_args(policy: Policy, fallback: int) -> list[str | int]:
    return [policy.algorithm, policy.limit, policy.window * US_PER_SECOND, fallback]


def _results(policies: list[Policy], reply: list[Any]) -> list[PolicyResult]:
    """Each policy's result from a reply of the check script, in the order of its KEYS."""
    results = []
    for i, policy in enumerate(policies):
        allowed, remaining, reset_us, retry_us = reply[4 + 4 * i : 8 + 4 * i]
        results.append(
            PolicyResult(
                policy=policy,
                allowed=bool(allowed),
                remaining=int(remaining),
                reset_seconds=_seconds(reset_us),
                # Rounded up, and at least 1 s: a client that retries on time must succeed.
                retry_after=max(1, _seconds(retry_us)) if not allowed else 0,
            )
        )
    return results


def _seconds(us: int) -> int:
    return math.ceil(int(us) / US_PER_SECOND)
