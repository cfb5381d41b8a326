"""Rate limiting (the reference article's part 6.2), as policies in settings.

Every /api/ request spends from the article's limit, 100 a minute per person (per
client address when anonymous). Every door that takes a password (the API's log-in,
token, sign-up and password change, the site's log-in and sign-up forms, the admin's
log-in and password change) also spends from stricter per-address and per-account
limits against password guessing, and the writes people can repeat (likes, follows,
posts; emails and reports, which start background jobs) from write limits that the
site's forms and their API twins share.
Each policy is data (KESTREL_RATE_LIMITS, DEFAULTS below): its limit and window, its
algorithm, whom it counts, which requests it covers, and what happens when Redis
does not answer. A refused /api/ request gets JSON, a refused page an HTML 429.

Beyond the article, whose INCR-then-EXPIRE leaves a key without a TTL (that person
over the limit for ever) when the process dies or the connection drops between the
two:

- one Lua script decides every policy of a request in one round trip, atomically:
  nothing runs between reading a counter and writing it, so 200 concurrent requests
  against a limit of 10 let exactly 10 through, and each key gets its TTL in the same
  SET that writes it;
- all or nothing: the counters are written only when every policy allows, so a
  request refused by one policy spends nothing from the others, and a refused request
  writes nothing at all (a flood that is being refused costs Redis reads only: no AOF
  growth, no replication traffic);
- two algorithms, chosen per policy: the article's fixed window, and GCRA, which
  spaces requests evenly (no double burst at a window boundary, which matters for
  password guessing);
- the IETF RateLimit-Policy and RateLimit fields on allowed and refused responses;
- a failure policy per policy: the general limit fails open, the log-in limits fail
  closed (STYLE.md rule 8; see RateLimitMiddleware.__call__);
- a credential's revocation check (a Guard: "refuse if any of these keys exists, if
  this counter has moved past the credential's generation, or if this key is gone")
  decided in the same script, so a bearer-token API request costs one round trip for
  its rate limits and its denylist check together, and a session request one for its
  rate limits and its session read (the required key's value comes back with the
  verdict). The request counts as its user only if the guard passes, as anonymous (its
  address) otherwise, and the guard fails closed (503) whatever the policies' failure
  modes. What the guard means (a JWT denylist, a session) is the credential provider's
  business (settings.KESTREL_RATE_LIMIT_CREDENTIAL), not this module's.

Why the per-account limits live in this middleware, reading the request's body (JSON
or a form), rather than in a helper the log-in views call: all of a request's policies
then go to Redis in one script call (a helper would add a second round trip to every
log-in), the limit is spent before any password is hashed or row read, and the covered
paths stay data in settings instead of calls sprinkled through views. The cost is that
the middleware knows the field names of those views' bodies (ACCOUNT_FIELDS). On a
password change the account is the signed-in person's, named by a function in
settings (KESTREL_RATE_LIMIT_USER_ACCOUNT), so that this module imports no product
app. `check()` and `Identity` are public for a view that needs something the
middleware cannot see.

Time: the script reads Redis's clock (TIME) unless a caller passes `now`, so every
web process on every host shares one clock and tests travel in time without sleeping.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, SuspiciousOperation
from django.http import HttpRequest, HttpResponse, RawPostDataException
from django.http.multipartparser import MultiPartParserError
from django.utils.crypto import salted_hmac
from django.utils.module_loading import import_string
from redis import Redis
from redis.commands.core import Script
from redis.exceptions import OutOfMemoryError

from core import metrics
from core.converters import IdConverter
from core.http import error_response, service_unavailable
from core.keys import key
from core.redis import get_redis, is_unavailable

logger = logging.getLogger(__name__)

Algorithm = Literal["fixed", "gcra"]
Scope = Literal["user_or_ip", "ip", "account"]
FailMode = Literal["open", "closed"]

# Every door that takes a password, under one per-address and one per-account budget:
# a guesser gains nothing by switching between the API, the site's forms and the admin.
_AUTH_PATHS = [
    "/api/login",
    "/api/token",
    "/api/register",
    "/api/password",
    "/login",
    "/signup",
    "/admin/login",
    "/admin/password_change",
]

# The doors among those where the account counted is the person signed in, never one
# the body names: a password change names none, and naming someone else's must not
# move a guesser's attempts off the account being guessed.
OWN_ACCOUNT_PATHS = ("/api/password", "/admin/password_change")

# The policies in force when settings define no KESTREL_RATE_LIMITS (an empty dict
# there turns rate limiting off). A path is exact (a trailing slash on the request is
# ignored); one ending in "*" is a prefix; a "<id>" segment matches one id as the
# URLconf's <id:...> reads it. No "methods" means every method. A policy counts every
# path it lists in one budget per subject, which is what makes a site form and its API
# twin share it.
DEFAULTS: dict[str, dict] = {
    # The article's limit. Fails open: a Redis outage must not take the whole API down
    # with it; the outage is logged and counted (ratelimit.error) instead.
    "api": {
        "limit": 100,
        "window": 60,
        "algorithm": "fixed",
        "scope": "user_or_ip",
        "fail": "open",
        "paths": ["/api/*"],
    },
    # Password guessing from one address: 10 at once, then one every 6 s. GCRA, so a
    # guesser cannot spend two windows' worth across a window boundary. Fails closed:
    # while Redis is down nothing would stop guessing (and log-in needs the session
    # store anyway).
    "auth_ip": {
        "limit": 10,
        "window": 60,
        "algorithm": "gcra",
        "scope": "ip",
        "fail": "closed",
        "methods": ["POST"],
        "paths": _AUTH_PATHS,
    },
    # Guessing one account's password from many addresses: 5 at once, then one a
    # minute, whatever the address. The usual price of a per-account limit: whoever
    # keeps guessing also keeps the owner's own attempts waiting, for as long as they
    # keep it up (each guessing address is itself held to auth_ip's rate).
    "auth_account": {
        "limit": 5,
        "window": 300,
        "algorithm": "gcra",
        "scope": "account",
        "fail": "closed",
        "methods": ["POST"],
        "paths": _AUTH_PATHS,
    },
    # Likes, follows, new posts, edits and deletions, from either door: 30 at once, then
    # one every 2 s. A person liking while reading or following a handful of people
    # after signing up never meets it; a script toggling a like (each toggle a
    # notification and a fan-out) is held to 30 a minute instead of hundreds a second.
    # DELETE and PATCH too: the API unlikes, unfollows, deletes and edits with them, the
    # site with a POST (GET on the same paths reads, and is not counted here). Fails
    # open, like the general limit: the writes themselves go to the database.
    "writes": {
        "limit": 30,
        "window": 60,
        "algorithm": "gcra",
        "scope": "user_or_ip",
        "fail": "open",
        "methods": ["POST", "DELETE", "PATCH"],
        "paths": [
            "/api/posts",
            "/posts/new",
            "/api/posts/<id>/like",
            "/posts/<id>/like",
            "/api/users/<id>/follow",
            "/users/<id>/follow",
            "/api/posts/<id>",
            "/posts/<id>/delete",
            "/api/users/<id>",
            "/profile/edit",
        ],
    },
    # Requests that start a background job: an email, or a report built from the whole
    # of a person's activity. 20 at once, then one every 3 minutes. A backstop in front
    # of the jobs service's own per-person quotas (jobs.queues.QUOTAS: 10 emails and 6
    # reports an hour, one report at a time), set just above their sum so that a person
    # meets the quota's precise message first, while a flood through either door is
    # refused here before it reaches a database lock. Fails closed: the jobs are queued
    # on the same Redis, so a limiter that cannot answer means a queue that cannot
    # either, and no job goes uncounted.
    "jobs": {
        "limit": 20,
        "window": 3600,
        "algorithm": "gcra",
        "scope": "user_or_ip",
        "fail": "closed",
        "methods": ["POST"],
        "paths": ["/api/send-email", "/reports/email-me", "/api/reports", "/reports/new"],
    },
}

# Where the per-account policies find the account in a body, first present wins: the
# order in which accounts.backends.EmailBackend reads them (the site's and the API's
# log-ins send "email"; sign-ups send "email" and "username"; the admin's log-in form
# posts the email as "username").
ACCOUNT_FIELDS = ("email", "username")

RATE_LIMITED_MESSAGE = "Rate limit exceeded"

_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}\Z")
_METHOD = re.compile(r"[A-Z]+\Z")
_US = 1_000_000  # the script counts time in microseconds


@dataclass(frozen=True)
class Policy:
    name: str  # a key facet and the policy's name in the RateLimit fields
    limit: int  # requests per window
    window: int  # seconds
    algorithm: Algorithm = "fixed"
    scope: Scope = "user_or_ip"
    fail: FailMode = "open"
    paths: tuple[str, ...] = ("/api/*",)
    methods: frozenset[str] = frozenset()  # empty: every method

    def applies_to(self, method: str, path: str) -> bool:
        if self.methods and method not in self.methods:
            return False
        return paths_match(self.paths, path)

    def subject(self, identity: Identity) -> str | None:
        """Whom this policy counts for the request, or None when it cannot say (no account)."""
        if self.scope == "account":
            return f"account:{identity.account}" if identity.account else None
        if self.scope == "user_or_ip" and identity.user_id is not None:
            return f"user:{identity.user_id}"
        return f"ip:{identity.ip}"


@dataclass(frozen=True)
class Guard:
    """A credential's revocation check, decided by the rate-limit script in the same call.

    It refuses if any key in `denied` exists, if the integer stored at `generation_key`
    is greater than `generation` (a counter that only grows: every credential minted
    under a smaller value is void), or if `required` does not exist. A missing
    generation key reads as "no newer generation"; one that holds anything but an
    integer refuses. With `generation` None the generation key is read, never compared.
    The values of `required` and `generation_key` come back with the verdict, so a
    caller that needs them (a session's data, a user's current generation) does not
    read them again.
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
    """A user named by a credential (a bearer token, or a session whose user the provider
    already knows), found without loading the request's session.

    Returned by the settings.KESTREL_RATE_LIMIT_CREDENTIAL function: `user_id` None for
    a credential that does not verify (the request counts by address), the `guard`
    that must pass for the request to count as that user, and `on_verdict`, told the
    guard's verdict as soon as the script has decided it.
    """

    user_id: int | None
    guard: Guard | None = None
    on_verdict: Callable[[GuardVerdict], None] | None = None


@dataclass(frozen=True)
class Identity:
    """Who sent a request, as far as the policies care."""

    ip: str
    user_id: int | None = None
    account: str | None = None  # normalised by normalise_account
    # Set when user_id comes from a credential that may have been revoked: the request
    # counts as user_id only if the guard passes.
    guard: Guard | None = None
    on_verdict: Callable[[GuardVerdict], None] | None = None


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


# --- Paths ------------------------------------------------------------------------------

_ID_SEGMENT = "<id>"


def path_pattern_ok(pattern: object) -> bool:
    """Whether `pattern` is in the paths' grammar: "/" first, a "*" only last, and "<"
    or ">" only in a "<id>" segment (anything else would be read literally, and a
    policy that silently matched nothing would be a limit that is not there)."""
    if not isinstance(pattern, str) or not pattern.startswith("/"):
        return False
    body = pattern.removesuffix("*")
    if "*" in body:
        return False
    return all(s == _ID_SEGMENT or not ("<" in s or ">" in s) for s in body.split("/"))


@functools.cache
def _paths_regex(patterns: tuple[str, ...]) -> re.Pattern[str]:
    # One regex per policy, compiled once: the middleware matches every request
    # against every policy.
    alternatives = []
    for pattern in patterns:
        prefix = pattern.endswith("*")
        segments = pattern.removesuffix("*").split("/")
        body = "/".join(IdConverter.regex if s == _ID_SEGMENT else re.escape(s) for s in segments)
        alternatives.append(f"(?:{body}{'.*' if prefix else ''})")
    return re.compile("|".join(alternatives), re.DOTALL)


def paths_match(patterns: tuple[str, ...], path: str) -> bool:
    """Whether `path` (a request's path_info) matches one of `patterns`, ignoring a trailing slash."""
    if len(path) > 1:
        path = path.rstrip("/")
    return _paths_regex(patterns).fullmatch(path) is not None


# --- Policies from settings -------------------------------------------------------------

_FIELDS = {"limit", "window", "algorithm", "scope", "fail", "paths", "methods"}


def load_policies(config: Mapping[str, Mapping] | None = None) -> tuple[Policy, ...]:
    """Policies from a KESTREL_RATE_LIMITS-shaped dict (default: settings, else DEFAULTS).

    Refuses, naming the policy, anything it would otherwise misread: an unknown field
    (a typo such as "limt" must not silently fall back to a default), a bad value.
    """
    if config is None:
        config = getattr(settings, "KESTREL_RATE_LIMITS", DEFAULTS)
    return tuple(_policy(name, spec) for name, spec in config.items())


def _policy(name: str, spec: Mapping) -> Policy:
    def bad(why: str) -> ImproperlyConfigured:
        return ImproperlyConfigured(f"KESTREL_RATE_LIMITS[{name!r}]: {why}")

    if not isinstance(name, str) or not _NAME.match(name):
        raise bad(f"the name must match {_NAME.pattern}")
    if not isinstance(spec, Mapping):
        raise bad(f"must be a dict of fields, not {spec!r}")
    unknown = set(spec) - _FIELDS
    if unknown:
        raise bad(f"unknown field(s) {sorted(unknown)}; allowed: {sorted(_FIELDS)}")
    limit, window = spec.get("limit"), spec.get("window")
    for field, value in (("limit", limit), ("window", window)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise bad(f"{field} must be a positive integer, not {value!r}")
    algorithm = spec.get("algorithm", "fixed")
    scope = spec.get("scope", "user_or_ip")
    fail = spec.get("fail", "open")
    for field, value, allowed in (
        ("algorithm", algorithm, ("fixed", "gcra")),
        ("scope", scope, ("user_or_ip", "ip", "account")),
        ("fail", fail, ("open", "closed")),
    ):
        if value not in allowed:
            raise bad(f"{field} must be one of {allowed}, not {value!r}")
    if algorithm == "gcra" and window * _US // limit < 1:
        # GCRA spaces requests in whole microseconds.
        raise bad("the limit is too high for the window (more than one request a microsecond)")
    paths = spec.get("paths", ["/api/*"])
    if isinstance(paths, str) or not paths or not all(path_pattern_ok(p) for p in paths):
        raise bad(
            "paths must be a non-empty list of paths starting with '/', with '*' only at the end and "
            f"'<id>' only as a whole segment, not {paths!r}"
        )
    methods = spec.get("methods") or []
    if isinstance(methods, str) or not all(isinstance(m, str) and _METHOD.match(m) for m in methods):
        raise bad(f"methods must be a list of upper-case HTTP methods, not {methods!r}")
    return Policy(
        name=name,
        limit=limit,
        window=window,
        algorithm=algorithm,
        scope=scope,
        fail=fail,
        paths=tuple(paths),
        methods=frozenset(methods),
    )


# --- Keys -------------------------------------------------------------------------------


def rate_limit_key(policy: Policy, subject: str) -> str:
    """STRING, state role, TTL <= the policy's window (set by the script that writes it):
    one subject's quota under one policy. Fixed window: "<window start us>:<count>";
    GCRA: "<theoretical arrival time us>".

    The subject (an address, an email) is keyed by HMAC, so neither addresses nor
    emails sit in Redis in a form a dictionary attack reverses (a plain SHA-256 of
    an email or an IPv4 address is). The algorithm is part of the digest: switching a
    policy's algorithm starts fresh instead of misreading the other's value. Rotating
    SECRET_KEY resets every limit, which is harmless.
    """
    return key("core", "ratelimit", _subject_digest(settings.SECRET_KEY, policy.algorithm, subject), policy.name)


# Every request computes one or more, mostly for the same few thousand subjects.
@functools.lru_cache(maxsize=4096)
def _subject_digest(secret: str, algorithm: str, subject: str) -> str:
    digest = salted_hmac("kestrel.ratelimit", f"{algorithm}|{subject}", secret=secret, algorithm="sha256")
    return digest.hexdigest()[:32]


# --- The script -------------------------------------------------------------------------

# Keys of one call must share a hash slot on Redis Cluster; Kestrel runs a single
# primary (with Sentinel), so they need not.
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
--           then per policy i: allowed_i, remaining_i, reset_us_i, retry_us_i}
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
local writes = {}
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
      writes[#writes + 1] = {key, string.format('%d:%d', start, count + 1), reset}
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
      writes[#writes + 1] = {key, string.format('%d', new_tat), used}
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
    client: Redis | None = None,
) -> Decision:
    """Spend one request from every policy that can name a subject in `identity`, and
    decide `identity.guard` if it has one.

    One round trip (one EVALSHA) whatever the number of policies, none when no policy
    applies and there is no guard. `now` (seconds since the epoch) defaults to Redis's
    own clock. Raises Redis's errors: what an outage means is the caller's failure policy.
    """
    counted = [(policy, subject) for policy in policies if (subject := policy.subject(identity)) is not None]
    guard = identity.guard
    if not counted and guard is None:
        return Decision(allowed=True)
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
    args: list[str | int] = [
        "" if now is None else str(int(now * _US)),
        len(counted),
        len(denied),
        has_generation,
        generation,
        required,
    ]
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
        args += [policy.algorithm, policy.limit, policy.window * _US, fallback]
    # The state role retries a dropped connection; a script that ran but whose reply
    # was lost then runs twice, spending two requests: the safe direction to err in.
    reply = _check_script()(keys=keys, args=args, client=client if client is not None else get_redis("state"))
    results = []
    for i, (policy, _) in enumerate(counted):
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
    return Decision(
        allowed=bool(reply[0]),
        results=tuple(results),
        guard_passed=None if guard is None else bool(reply[1]),
        guard_value=reply[2],
        guard_generation_value=reply[3],
    )


def guard_verdict(guard: Guard, *, client: Redis | None = None) -> GuardVerdict:
    """Decide a guard alone (the same script, no policies): one round trip.

    For a request the middleware did not check (rate limiting off, a path no policy
    covers). Raises Redis's errors: a guard fails closed.
    """
    decision = check((), Identity(ip="", guard=guard), client=client)
    return GuardVerdict(guard, bool(decision.guard_passed), decision.guard_value, decision.guard_generation_value)


def guard_check(guard: Guard, *, client: Redis | None = None) -> bool:
    """guard_verdict's pass or refusal alone."""
    return guard_verdict(guard, client=client).passed


_VERDICT_ATTR = "kestrel_guard_verdict"


def guard_verdict_checked(request: HttpRequest, guard: Guard) -> GuardVerdict | None:
    """RateLimitMiddleware's verdict on exactly `guard` for this request, or None when
    its script did not decide it (then call guard_verdict)."""
    verdict = getattr(request, _VERDICT_ATTR, None)
    if isinstance(verdict, GuardVerdict) and verdict.guard == guard:
        return verdict
    return None


def guard_checked(request: HttpRequest, guard: Guard) -> bool | None:
    """guard_verdict_checked's pass or refusal alone (None: not decided)."""
    verdict = guard_verdict_checked(request, guard)
    return None if verdict is None else verdict.passed


def _seconds(us: int) -> int:
    return math.ceil(int(us) / _US)


# --- HTTP -------------------------------------------------------------------------------


def rate_limit_headers(decision: Decision) -> dict[str, str]:
    """The RateLimit-Policy and RateLimit fields of draft-ietf-httpapi-ratelimit-headers.

    The Structured Fields form of drafts -08 to -11 (the latest, 2026): a List with one
    Item per policy, named by a String, e.g.
        RateLimit-Policy: "api";q=100;w=60, "auth_ip";q=10;w=60
        RateLimit: "api";r=99;t=60, "auth_ip";r=9;t=6
    (q quota, w window in seconds; r remaining, t seconds within which no more than r
    can be spent). Draft -07's unnamed "100;w=60" and "limit=100, remaining=99,
    reset=60" could describe one policy only, and a log-in here spends from three.
    No "pk" (partition key): it would echo the hashed subject for no client benefit.
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


def client_ip(request: HttpRequest, *, trusted_proxies: int = 0) -> str:
    """The client's address, as a rate-limit bucket.

    With `trusted_proxies` = n > 0 (that many proxies in front of Django, each
    appending the address it saw to X-Forwarded-For), the n-th entry from the right:
    everything left of it came from the client and can be forged. With 0 (the
    default), REMOTE_ADDR only. A header with fewer entries than that did not pass
    through the proxies, and REMOTE_ADDR is used.

    IPv6 addresses count per /64: one subscriber usually holds a whole /64 and could
    otherwise rotate through its addresses to reset its limit.
    """
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "") if trusted_proxies > 0 else ""
    return _bucket_address(request.META.get("REMOTE_ADDR", ""), forwarded, trusted_proxies)


# Every request asks (the limiter, the view counter), from a few thousand addresses at
# most: parsing each once saves the ipaddress work on all the others.
@functools.lru_cache(maxsize=4096)
def _bucket_address(address: str, forwarded: str, trusted_proxies: int) -> str:
    if trusted_proxies > 0:
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if len(hops) >= trusted_proxies:
            address = hops[-trusted_proxies]
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address  # not an address (a test client, a unix socket); hashed all the same
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def normalise_account(value: object) -> str | None:
    """The account named in a log-in body, as the log-in view would read it, or None.

    Mirrors the view and backend: DRF's CharField accepts strings and numbers and trims
    whitespace, and accounts match case-insensitively (iexact). Without this, " Ada@x"
    and "ada@x" would be two accounts to the limiter but one to the backend.
    """
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    text = str(value).strip().casefold()
    return text or None


_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")

# What else a hostile body makes the parsers raise, beyond Django's own refusals (too
# big, too many fields or files, a broken multipart boundary; kept, below): the body
# already read, the connection lost, not JSON, undecodable, nested deeper than
# json.loads recurses.
_UNREADABLE = (RawPostDataException, OSError, ValueError, RecursionError)
# Django parses a form once: after a failed parse, request.POST reads as empty (a JSON
# body is read again, and fails again, by the view). Such an error is kept here and
# raised again once the request is counted, so the view's door answers the 400 it
# would have answered without the limiter in front of it.
_BODY_ERROR_ATTR = "kestrel_body_error"


def account_from_body(request: HttpRequest, fields: Sequence[str] = ACCOUNT_FIELDS) -> str | None:
    """The account a body names (JSON, or a form: url-encoded or multipart), or None.

    Never raises: the view answers a bad body (400), and the request is still counted
    by address. A form is read through request.POST, the parse the view then reuses,
    so a form padded with a large file part still names its account. No size cap of
    our own beyond Django's: a body the view would still parse must never slip past
    the per-account limit by being large. Reading request.body leaves it readable for
    DRF (Django keeps a copy).
    """
    try:
        data = request.POST if request.content_type in _FORM_TYPES else json.loads(request.body)
    except (SuspiciousOperation, MultiPartParserError) as exc:  # too big, too many fields, a broken form
        if request.content_type in _FORM_TYPES:
            setattr(request, _BODY_ERROR_ATTR, exc)
        return None
    except _UNREADABLE:
        return None
    if not isinstance(data, Mapping):
        return None
    for field in fields:
        if data.get(field) not in (None, ""):
            return normalise_account(data.get(field))
    return None


CredentialFinder = Callable[[HttpRequest], Credential | None]
# settings.KESTREL_RATE_LIMIT_USER_ACCOUNT: a signed-in user's account, as the log-in
# doors name it; `user` is the session's user when the request loaded it already.
UserAccount = Callable[..., str | None]


def request_identity(
    request: HttpRequest,
    policies: Sequence[Policy],
    *,
    trusted_proxies: int = 0,
    credential: CredentialFinder | None = None,
    user_account: UserAccount | None = None,
) -> Identity:
    """What `policies` need to know about the request, and no more (no session load,
    no body parse, unless a policy needs them).

    A credential found by `credential(request)` (a bearer token, or a session whose user
    this process already knows) wins over loading the session, and is looked at whenever
    a policy covers the request so that its guard rides in the same script: the session
    is then not loaded here at all.

    The account is the one the body names, or, given `user_account` (a door where the
    account is the signed-in person's), that person's, whatever the body says.
    """
    needs_account = any(p.scope == "account" for p in policies)
    own_account = needs_account and user_account is not None
    user_id = None
    user = None
    guard = None
    on_verdict = None
    found = credential(request) if credential is not None else None
    if found is not None:
        user_id = found.user_id
        if user_id is not None:
            guard, on_verdict = found.guard, found.on_verdict
    elif own_account or any(p.scope == "user_or_ip" for p in policies):
        user = _session_user(request)
        user_id = user.pk if user is not None else None
    account = None
    if own_account:
        if user_id is not None:
            account = normalise_account(user_account(user_id=user_id, user=user))
    elif needs_account:
        account = account_from_body(request)
    return Identity(
        ip=client_ip(request, trusted_proxies=trusted_proxies),
        user_id=user_id,
        account=account,
        guard=guard,
        on_verdict=on_verdict if guard is not None else None,
    )


def _session_user(request: HttpRequest):
    user = getattr(request, "user", None)  # set by AuthenticationMiddleware, which must come first
    if user is None:
        return None
    try:
        return user if user.is_authenticated else None
    except Exception as exc:
        # The session store (Redis) is down: count by address. The rate-limit check
        # about to run meets the same outage and applies the policies' failure modes.
        if not is_unavailable(exc):
            raise
        return None


def _redis_failed(exc: BaseException) -> bool:
    """Redis did not answer, or (state role, noeviction) could not take the write."""
    return is_unavailable(exc) or isinstance(exc, OutOfMemoryError)


class RateLimitMiddleware:
    """Applies KESTREL_RATE_LIMITS to every request a policy covers.

    Place it right after the AuthenticationMiddleware (Django's or a subclass: it reads
    request.user) and before any middleware that does real work for the request.

    settings.KESTREL_RATE_LIMIT_CREDENTIAL (a dotted path, optional) names a function
    that finds a credential in the request (a bearer token), which DRF only authenticates
    later: the request then counts as that credential's user, and the credential's Guard
    is decided in the same script. The verdict is left on the request for the
    authenticator (guard_checked) and handed to the credential's on_verdict, so it costs
    no second round trip.

    On KESTREL_RATE_LIMIT_OWN_ACCOUNT_PATHS (default OWN_ACCOUNT_PATHS) the per-account
    policies count the signed-in person, whose account KESTREL_RATE_LIMIT_USER_ACCOUNT
    (a dotted path) names.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response
        self.policies = load_policies()
        self.trusted_proxies = int(getattr(settings, "KESTREL_RATE_LIMIT_TRUSTED_PROXIES", 0))
        finder = getattr(settings, "KESTREL_RATE_LIMIT_CREDENTIAL", None)
        self.credential: CredentialFinder | None = import_string(finder) if finder else None
        own = tuple(getattr(settings, "KESTREL_RATE_LIMIT_OWN_ACCOUNT_PATHS", OWN_ACCOUNT_PATHS))
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
            # Failure policy, per policy (STYLE.md rule 8). "closed" policies (log-in,
            # token, register) refuse with 503: while Redis is down nothing would stop
            # password guessing. "open" policies (the general API limit) let the
            # request through: an outage of the limiter must not become an outage of
            # the API. Either way it is logged and counted, so we know it happens.
            # A credential's guard fails closed whatever the policies say: a revocation
            # that cannot be checked must never let the credential in.
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

        if identity.guard is not None:
            verdict = GuardVerdict(
                identity.guard, bool(decision.guard_passed), decision.guard_value, decision.guard_generation_value
            )
            setattr(request, _VERDICT_ATTR, verdict)
            if identity.on_verdict is not None:
                identity.on_verdict(verdict)
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
        if (error := getattr(request, _BODY_ERROR_ATTR, None)) is not None:
            raise error  # Django answers it: 400 (handler400)
        return self.get_response(request)
