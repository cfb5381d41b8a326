"""core.ratelimit against the real private Redis: exact counting, windows, GCRA's
spacing, atomicity under 200 concurrent checks, TTLs, scopes, and the policies' data.

Time is passed in (`now`, seconds), so nothing here sleeps.
"""

from __future__ import annotations

import threading

import pytest
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpResponse
from django.test import RequestFactory

from core.ratelimit.guard import Credential, Guard, GuardVerdict, guard_verdict_fetch, guard_verdict_for_request
from core.ratelimit.identity import Identity, account_from_body, client_ip, normalise_account
from core.ratelimit.middleware import RateLimitMiddleware, rate_limit_headers
from core.ratelimit.policies import Policy, load_policies
from core.ratelimit.script import Decision, check, rate_limit_key
from core.redis import RedisClient, get_redis, is_unavailable
from tests.clients import commands_sent, on_cluster, role_client

T0 = 1_700_000_000.0  # an arbitrary "now"; the script takes any clock it is given
ADA = Identity(ip="203.0.113.7")


def kestrel_policies() -> tuple[Policy, ...]:
    """Kestrel's own policies, as config/settings.py defines them."""
    return load_policies(django_settings.KESTREL_RATE_LIMITS)


def spend(policy: Policy, times: int, *, at: float = T0, identity: Identity = ADA) -> list[Decision]:
    return [check([policy], identity, now=at) for _ in range(times)]


# --- The article's fixed window ---------------------------------------------------------


def test_fixed_window_allows_exactly_the_limit_and_counts_down():
    policy = Policy("api", limit=3, window=60)

    decisions = spend(policy, 4)

    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    refused = decisions[-1]
    assert refused.policy == policy
    assert refused.limit == 3
    assert refused.retry_after == 60
    assert refused.reset_seconds == 60


def test_fixed_window_opens_at_the_first_request_and_reopens_when_it_ends():
    policy = Policy("api", limit=2, window=60)
    spend(policy, 2, at=T0 + 30)  # the window is [T0+30, T0+90)

    still_closed = check([policy], ADA, now=T0 + 89.9)
    reopened = check([policy], ADA, now=T0 + 90)

    assert not still_closed.allowed
    assert still_closed.retry_after == 1  # 0.1 s left, rounded up: never retry too early
    assert reopened.allowed
    assert reopened.remaining == 1
    assert reopened.reset_seconds == 60


def test_a_clock_stepping_back_does_not_reopen_the_window():
    policy = Policy("api", limit=1, window=60)
    spend(policy, 1, at=T0)

    assert not check([policy], ADA, now=T0 - 5).allowed


# --- GCRA: the smoother algorithm ------------------------------------------------------


def test_gcra_allows_a_burst_of_the_limit_then_one_request_per_interval():
    policy = Policy("login", limit=6, window=60, algorithm="gcra")  # one every 10 s

    burst = spend(policy, 7)
    too_soon = check([policy], ADA, now=T0 + 5)
    on_time = check([policy], ADA, now=T0 + 10)
    right_after = check([policy], ADA, now=T0 + 10)

    assert [d.allowed for d in burst] == [True] * 6 + [False]
    assert [d.remaining for d in burst[:6]] == [5, 4, 3, 2, 1, 0]
    assert burst[-1].retry_after == 10
    assert not too_soon.allowed
    assert too_soon.retry_after == 5
    assert on_time.allowed
    assert on_time.remaining == 0
    assert not right_after.allowed


def test_gcra_lets_evenly_spaced_requests_through_for_ever():
    policy = Policy("login", limit=6, window=60, algorithm="gcra")
    spend(policy, 6)  # the burst is used up

    spaced = [check([policy], ADA, now=T0 + 10 * i).allowed for i in range(1, 31)]

    assert all(spaced)


def test_gcra_refills_gradually_after_a_pause():
    policy = Policy("login", limit=6, window=60, algorithm="gcra")
    spend(policy, 6)

    after_35s = check([policy], ADA, now=T0 + 35)

    # 3.5 intervals freed 3 requests: this one spends one, two are left, and the next
    # frees up in 5 s.
    assert after_35s.allowed
    assert after_35s.remaining == 2
    assert after_35s.reset_seconds == 5


def test_gcra_has_no_double_burst_at_a_window_boundary_unlike_the_fixed_window():
    def allowed_within_a_tenth_of_a_second(policy: Policy) -> int:
        check([policy], ADA, now=T0)  # opens the fixed window: [T0, T0 + 60)
        late = spend(policy, 10, at=T0 + 59.9)
        early = spend(policy, 10, at=T0 + 60)
        return sum(d.allowed for d in late + early)

    # "10 a minute": the fixed window lets 19 through in 0.1 s across its boundary;
    # GCRA never more than its burst, 10.
    assert allowed_within_a_tenth_of_a_second(Policy("fixed", limit=10, window=60)) == 19
    assert allowed_within_a_tenth_of_a_second(Policy("gcra", limit=10, window=60, algorithm="gcra")) == 10


# --- Several policies, one request ------------------------------------------------------


def test_every_policy_of_a_request_is_decided_in_one_round_trip():
    policies = kestrel_policies()
    identity = Identity(ip="203.0.113.7", account="ada@example.com")
    client = role_client("state")
    check(policies, identity, now=T0, client=client)  # loads the script (first call only)
    with commands_sent(client) as sent:
        decision = check(policies, identity, now=T0, client=client)
    client.close()
    # On a cluster, one call per hash slot: each subject's counters share their digest's.
    slots = {client.keyslot(rate_limit_key(p, p.subject(identity))) for p in policies} if on_cluster() else {0}

    assert sent == ["EVALSHA"] * len(slots)
    assert [r.policy.name for r in decision.results] == ["api", "auth_ip", "auth_account", "writes", "jobs"]


def test_a_refused_request_spends_nothing_from_the_other_policies():
    strict = Policy("strict", limit=1, window=60)
    loose = Policy("loose", limit=5, window=60)
    check([strict, loose], ADA, now=T0)
    loose_key = rate_limit_key(loose, loose.subject(ADA))
    before = get_redis("state").get(loose_key)

    refused = check([strict, loose], ADA, now=T0)

    assert not refused.allowed
    assert refused.policy == strict
    assert get_redis("state").get(loose_key) == before  # a refusal writes nothing
    by_name = {r.policy.name: r for r in refused.results}
    assert by_name["loose"].allowed
    assert by_name["loose"].remaining == 4  # as it stands: the refused request spent nothing
    assert check([loose], ADA, now=T0).remaining == 3


@pytest.mark.parametrize("algorithm", ["fixed", "gcra"])
def test_a_refusal_by_one_subject_spends_nothing_from_another_subjects_quota(algorithm):
    # The address's and the account's counters have different hash tags: on a cluster
    # they are spent by two calls, and the refused one's gives the other's spend back.
    by_address = Policy("by_address", limit=5, window=60, algorithm=algorithm, scope="ip")
    by_account = Policy("by_account", limit=1, window=60, algorithm=algorithm, scope="account")
    guessing = Identity(ip="203.0.113.9", account="ada@example.com")
    check([by_address, by_account], guessing, now=T0)
    address_key = rate_limit_key(by_address, by_address.subject(guessing))
    before = get_redis("state").get(address_key)

    refused = [check([by_address, by_account], guessing, now=T0 + 1) for _ in range(3)]

    assert [d.allowed for d in refused] == [False] * 3
    assert {d.policy for d in refused} == {by_account}
    assert get_redis("state").get(address_key) == before
    assert [r.remaining for d in refused for r in d.results if r.policy == by_address] == [4, 4, 4]
    someone_else = Identity(ip="203.0.113.9", account="bob@example.com")
    assert check([by_address, by_account], someone_else, now=T0 + 1).results[0].remaining == 3


def test_the_binding_result_is_the_longest_refusal_or_the_least_quota_left():
    short = Policy("short", limit=1, window=10)
    long = Policy("long", limit=1, window=100)
    roomy = Policy("roomy", limit=50, window=60)

    first = check([short, long, roomy], ADA, now=T0)
    second = check([short, long, roomy], ADA, now=T0)

    assert first.allowed
    assert first.policy == long  # short and long both have 0 left; long's lasts longer
    assert not second.allowed
    assert second.policy == long
    assert second.retry_after == 100


def test_a_policy_that_names_no_subject_is_not_counted():
    account = Policy("acct", limit=1, window=60, scope="account")

    decision = check([account], Identity(ip="203.0.113.7"), now=T0)

    assert decision.allowed
    assert decision.results == ()
    assert get_redis("state").dbsize() == 0


# --- Atomicity --------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["fixed", "gcra"])
def test_two_hundred_concurrent_checks_against_a_limit_of_ten_allow_exactly_ten(algorithm):
    policy = Policy("burst", limit=10, window=60, algorithm=algorithm)
    # One connection per thread, opened before the barrier: the 200 scripts reach
    # Redis together, with no pool to queue them up.
    clients = [role_client("state") for _ in range(200)]
    for client in clients:
        client.ping()
    start = threading.Barrier(len(clients))
    outcomes: list[bool] = []
    lock = threading.Lock()

    def request(client: RedisClient) -> None:
        start.wait()
        allowed = check([policy], ADA, client=client).allowed
        with lock:
            outcomes.append(allowed)

    threads = [threading.Thread(target=request, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for client in clients:
        client.close()

    assert len(outcomes) == 200
    assert outcomes.count(True) == 10


# --- Keys -------------------------------------------------------------------------------


def test_every_key_written_has_a_ttl_no_longer_than_its_window():
    policies = [
        Policy("fixed", limit=5, window=60),
        Policy("gcra", limit=5, window=300, algorithm="gcra"),
        Policy("acct", limit=5, window=30, algorithm="gcra", scope="account"),
    ]
    for i in range(20):
        identity = Identity(ip=f"203.0.113.{i % 4}", user_id=i % 3 or None, account=f"p{i % 5}@example.com")
        check(policies, identity, now=T0 + i)
    check(policies, ADA)  # on Redis's own clock too
    state = get_redis("state")
    windows = {p.name: p.window for p in policies}

    keys = list(state.scan_iter(match="kestrel:core:ratelimit:*"))

    assert keys
    assert state.dbsize() == len(keys)
    for key in keys:
        ttl_ms = state.pttl(key)
        policy_name = key.decode().rsplit(":", 1)[1]
        assert 0 < ttl_ms <= windows[policy_name] * 1000, key


def test_keys_follow_the_grammar_and_keep_the_subject_out_of_redis():
    policy = Policy("auth_account", limit=5, window=300, algorithm="gcra", scope="account")

    key = rate_limit_key(policy, "account:ada@example.com")

    prefix, app, entity, tag, facet = key.split(":")
    assert (prefix, app, entity, facet) == ("kestrel", "core", "ratelimit", "auth_account")
    digest = tag.removeprefix("{").removesuffix("}")  # the subject's hash tag
    assert len(digest) == 32
    int(digest, 16)  # hex: no trace of the email
    assert rate_limit_key(policy, "account:bob@example.com") != key


def test_the_default_clock_is_redis_time():
    policy = Policy("api", limit=5, window=60)

    decision = check([policy], ADA)

    assert decision.allowed
    assert decision.reset_seconds == 60
    assert 59_000 < get_redis("state").pttl(rate_limit_key(policy, policy.subject(ADA))) <= 60_000


# --- Scopes -----------------------------------------------------------------------------


def test_user_or_ip_counts_people_by_user_and_anonymous_visitors_by_address():
    policy = Policy("api", limit=1, window=60)
    office = "198.51.100.1"

    ada, bob = Identity(ip=office, user_id=1), Identity(ip=office, user_id=2)
    anonymous = Identity(ip=office)

    assert check([policy], ada, now=T0).allowed
    assert check([policy], bob, now=T0).allowed  # same address, another person
    assert check([policy], anonymous, now=T0).allowed  # the address's own quota
    assert not check([policy], ada, now=T0).allowed
    assert not check([policy], Identity(ip="192.0.2.9", user_id=1), now=T0).allowed  # ada, elsewhere


def test_ip_scope_counts_everyone_behind_one_address_together():
    policy = Policy("auth_ip", limit=1, window=60, scope="ip")

    assert check([policy], Identity(ip="198.51.100.1", user_id=1), now=T0).allowed
    assert not check([policy], Identity(ip="198.51.100.1", user_id=2), now=T0).allowed


def test_account_scope_counts_an_account_whatever_the_address():
    policy = Policy("auth_account", limit=2, window=300, algorithm="gcra", scope="account")

    from_many_addresses = [
        check([policy], Identity(ip=f"192.0.2.{i}", account="ada@example.com"), now=T0).allowed for i in range(3)
    ]

    assert from_many_addresses == [True, True, False]
    assert check([policy], Identity(ip="192.0.2.2", account="bob@example.com"), now=T0).allowed


# --- A credential's guard, in the same script --------------------------------------------

DENIED = "kestrel:test:guard:denied"
GENERATION = "kestrel:test:guard:generation"


def guarded(user_id: int = 1, generation: int = 2) -> Identity:
    guard = Guard(denied=(DENIED, DENIED + ":family"), generation_key=GENERATION, generation=generation)
    return Identity(ip="203.0.113.7", user_id=user_id, guard=guard)


def test_a_guard_passes_while_nothing_denies_it_and_the_generation_has_not_moved(state_redis):
    policy = Policy("api", limit=5, window=60)

    fresh = check([policy], guarded(), now=T0)
    state_redis.set(GENERATION, 2)
    same_generation = check([policy], guarded(), now=T0)

    assert (fresh.guard_passed, same_generation.guard_passed) == (True, True)
    assert check([policy], ADA, now=T0).guard_passed is None  # no guard, no verdict


@pytest.mark.parametrize(
    ("key", "value"),
    [(DENIED, "1"), (DENIED + ":family", "1"), (GENERATION, "3"), (GENERATION, "not a number")],
)
def test_a_guard_refuses_when_a_denied_key_exists_or_the_generation_moved_on(state_redis, key, value):
    state_redis.set(key, value)

    assert check([Policy("api", limit=5, window=60)], guarded(), now=T0).guard_passed is False
    assert guard_verdict_fetch(guarded().guard).passed is False


def test_a_refused_guard_counts_the_request_as_anonymous(state_redis):
    policy = Policy("api", limit=2, window=60)
    user_key = rate_limit_key(policy, "user:1")
    ip_key = rate_limit_key(policy, "ip:203.0.113.7")

    check([policy], guarded(), now=T0)
    state_redis.set(DENIED, "1")
    refused = [check([policy], guarded(), now=T0) for _ in range(3)]

    assert state_redis.get(user_key).endswith(b":1")  # only the request that passed
    assert state_redis.get(ip_key).endswith(b":2")
    assert [d.allowed for d in refused] == [True, True, False]
    assert all(d.guard_passed is False for d in refused)


REQUIRED = "kestrel:test:guard:required"


def test_a_guard_with_a_required_key_passes_while_it_exists_and_returns_its_value(state_redis):
    policy = Policy("api", limit=5, window=60)
    identity = Identity(ip="203.0.113.7", user_id=1, guard=Guard(required=REQUIRED))
    state_redis.set(REQUIRED, b"\x80session data")

    present = check([policy], identity, now=T0)
    state_redis.delete(REQUIRED)
    gone = check([policy], identity, now=T0)

    assert (present.guard_passed, present.guard_value) == (True, b"\x80session data")
    assert (gone.guard_passed, gone.guard_value) == (False, None)
    assert state_redis.get(rate_limit_key(policy, "user:1")).endswith(b":1")  # only while it existed
    assert state_redis.get(rate_limit_key(policy, "ip:203.0.113.7")).endswith(b":1")


def test_a_required_key_combines_with_the_denylist_and_the_generation(state_redis):
    guard = Guard(denied=(DENIED,), generation_key=GENERATION, generation=2, required=REQUIRED)
    state_redis.set(REQUIRED, "data")
    state_redis.set(GENERATION, 2)
    passed = check([Policy("api", limit=5, window=60)], Identity(ip="", user_id=1, guard=guard), now=T0)
    state_redis.set(DENIED, "1")
    denied = check([Policy("api", limit=5, window=60)], Identity(ip="", user_id=1, guard=guard), now=T0)

    assert (passed.guard_passed, passed.guard_value, passed.remaining) == (True, b"data", 4)
    assert (denied.guard_passed, denied.guard_value) == (False, b"data")


def test_the_middleware_hands_the_verdict_and_the_value_to_the_credential(rf, settings, state_redis):
    heard: list[GuardVerdict] = []
    guard = Guard(required=REQUIRED)
    settings.KESTREL_RATE_LIMITS = {"api": {"limit": 5, "window": 60}}
    middleware = RateLimitMiddleware(lambda request: HttpResponse("ok"))
    middleware.credential = lambda request: Credential(user_id=1, guard=guard, on_verdict=heard.append)
    state_redis.set(REQUIRED, "data")

    response = middleware(rf.get("/api/me"))

    assert response.status_code == 200
    assert heard == [GuardVerdict(guard, passed=True, value=b"data")]


def test_the_generation_comes_back_with_the_verdict_and_none_means_read_only(state_redis):
    policy = Policy("api", limit=5, window=60)
    compared = Guard(generation_key=GENERATION, generation=2, required=REQUIRED)
    read_only = Guard(generation_key=GENERATION, generation=None, required=REQUIRED)
    state_redis.set(REQUIRED, "data")
    state_redis.set(GENERATION, 7)

    refused = check([policy], Identity(ip="", user_id=1, guard=compared), now=T0)
    passed = check([policy], Identity(ip="", user_id=1, guard=read_only), now=T0)
    state_redis.delete(GENERATION)
    missing = guard_verdict_fetch(read_only)

    assert (refused.guard_passed, refused.guard_generation_value) == (False, b"7")
    assert (passed.guard_passed, passed.guard_generation_value, passed.remaining) == (True, b"7", 4)
    assert missing == GuardVerdict(read_only, passed=True, value=b"data", generation_value=None)


def test_a_guard_alone_is_one_round_trip_and_writes_nothing(state_redis):
    client = role_client("state")
    guard_verdict_fetch(guarded().guard, client=client)
    with commands_sent(client) as sent:
        assert guard_verdict_fetch(guarded().guard, client=client).passed is True
    client.close()

    # On a cluster the guard's keys span slots: they are read in one pipeline instead.
    assert sent == (["PIPELINE"] if on_cluster() else ["EVALSHA"])
    assert state_redis.dbsize() == 0


def test_the_middlewares_verdict_is_reused_only_for_the_same_guard():
    request = RequestFactory().get("/api/me")
    guard = guarded().guard
    request.kestrel_guard_verdict = GuardVerdict(guard, passed=True)

    assert guard_verdict_for_request(request, guard) == GuardVerdict(guard, passed=True)
    assert guard_verdict_for_request(request, guarded(generation=3).guard) is None
    assert guard_verdict_for_request(RequestFactory().get("/api/me"), guard) is None


def test_a_guard_fails_closed_when_redis_is_down(redis_down):
    with pytest.raises(Exception) as caught:  # noqa: PT011 - asserted just below
        guard_verdict_fetch(guarded().guard)

    assert is_unavailable(caught.value)


# --- Failure ------------------------------------------------------------------------------


def test_check_raises_an_unavailable_error_when_redis_is_down(redis_down):
    with pytest.raises(Exception) as caught:  # noqa: PT011 - asserted just below
        check([Policy("api", limit=5, window=60)], ADA, now=T0)

    assert is_unavailable(caught.value)


# --- Policies as data --------------------------------------------------------------------


def test_the_defaults_are_the_article_limit_plus_stricter_log_in_limits():
    api, auth_ip, auth_account, *_ = kestrel_policies()

    assert (api.limit, api.window, api.algorithm, api.scope, api.fail) == (100, 60, "fixed", "user_or_ip", "open")
    assert (auth_ip.scope, auth_ip.fail, auth_ip.algorithm) == ("ip", "closed", "gcra")
    assert (auth_account.scope, auth_account.fail) == ("account", "closed")
    for path in ("/api/login", "/api/token", "/api/register", "/api/login/"):
        assert auth_ip.applies_to("POST", path)
        assert auth_account.applies_to("POST", path)
    assert not auth_ip.applies_to("GET", "/api/login")
    assert not auth_ip.applies_to("POST", "/api/token/refresh")
    assert api.applies_to("GET", "/api/posts/1")
    assert not api.applies_to("GET", "/")


PASSWORD_DOORS = [
    "/api/login",
    "/api/token",
    "/api/register",
    "/api/password",
    "/login",
    "/signup",
    "/admin/login/",
    "/admin/password_change/",
]


@pytest.mark.parametrize("path", PASSWORD_DOORS)
def test_every_door_that_takes_a_password_is_under_both_log_in_limits(path):
    policies = {p.name: p for p in kestrel_policies()}

    assert policies["auth_ip"].applies_to("POST", path)
    assert policies["auth_account"].applies_to("POST", path)


@pytest.mark.parametrize(
    ("policy", "site", "api"),
    [
        ("writes", "/posts/7/like", "/api/posts/7/like"),
        ("writes", "/users/7/follow", "/api/users/7/follow"),
        ("writes", "/posts/new", "/api/posts"),
        ("jobs", "/reports/email-me", "/api/send-email"),
        ("jobs", "/reports/new", "/api/reports"),
    ],
)
def test_a_site_form_and_its_api_twin_are_under_the_same_write_policy(policy, site, api):
    (chosen,) = [p for p in kestrel_policies() if p.name == policy]

    assert chosen.applies_to("POST", site)
    assert chosen.applies_to("POST", api)
    assert not chosen.applies_to("GET", site)


def test_an_id_segment_matches_one_id_and_nothing_else():
    like = Policy("writes", limit=30, window=60, paths=("/posts/<id>/like",))

    assert like.applies_to("POST", "/posts/1/like")
    assert like.applies_to("POST", "/posts/123456789012345678/like/")
    assert not like.applies_to("POST", "/posts/1234567890123456789/like")  # no such id: 404
    assert not like.applies_to("POST", "/posts/abc/like")
    assert not like.applies_to("POST", "/posts//like")
    assert not like.applies_to("POST", "/posts/1/2/like")
    assert not like.applies_to("POST", "/posts/1/like/more")
    assert not like.applies_to("POST", "/posts/<id>/like")
    # The rest of the grammar reads as it always did.
    others = Policy("p", limit=1, window=1, paths=("/api/*", "/a.b"))
    assert others.applies_to("GET", "/api/posts/1\nx")
    assert not others.applies_to("GET", "/apix")
    assert not others.applies_to("GET", "/aXb")  # a dot is a dot


@pytest.mark.parametrize("path", ["api/login", "/api/*/like", "/posts/<pk>/like", "/posts/x<id>", "/a**"])
def test_a_path_outside_the_grammar_stops_start_up(path):
    with pytest.raises(ImproperlyConfigured, match="paths must be"):
        load_policies({"writes": {"limit": 5, "window": 60, "paths": [path]}})


def test_settings_without_policies_turn_rate_limiting_off(settings):
    settings.KESTREL_RATE_LIMITS = {}

    assert load_policies() == ()


def test_load_policies_reads_settings_and_without_them_there_are_none(settings):
    assert [p.name for p in load_policies()] == ["api", "auth_ip", "auth_account", "writes", "jobs"]
    del settings.KESTREL_RATE_LIMITS
    assert load_policies() == ()  # core defines no policies of its own

    settings.KESTREL_RATE_LIMITS = {"only": {"limit": 7, "window": 10}}

    (only,) = load_policies()

    assert (only.name, only.limit, only.window, only.algorithm, only.fail, only.paths) == (
        "only",
        7,
        10,
        "fixed",
        "open",
        ("/api/*",),
    )


@pytest.mark.parametrize(
    ("spec", "complaint"),
    [
        ({"limt": 5, "window": 60}, "unknown field"),
        ({"limit": 0, "window": 60}, "limit must be a positive integer"),
        ({"limit": 5, "window": "60"}, "window must be a positive integer"),
        ({"limit": 5, "window": 60, "algorithm": "sliding"}, "algorithm must be one of"),
        ({"limit": 5, "window": 60, "scope": "session"}, "scope must be one of"),
        ({"limit": 5, "window": 60, "fail": "maybe"}, "fail must be one of"),
        ({"limit": 5, "window": 60, "paths": "/api/*"}, "paths must be"),
        ({"limit": 5, "window": 60, "methods": ["post"]}, "methods must be"),
        ({"limit": 10**9, "window": 1, "algorithm": "gcra"}, "too high"),
    ],
)
def test_a_malformed_policy_stops_start_up_naming_it(spec, complaint):
    with pytest.raises(ImproperlyConfigured, match=complaint) as caught:
        load_policies({"login": spec})

    assert "'login'" in str(caught.value)


def test_a_policy_name_must_fit_a_key_and_a_header():
    with pytest.raises(ImproperlyConfigured, match="name"):
        load_policies({"Log-in": {"limit": 5, "window": 60}})


# --- Request facts ----------------------------------------------------------------------


def test_client_ip_ignores_forwarded_for_unless_proxies_are_trusted():
    request = RequestFactory().get("/api/ping", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="1.1.1.1, 203.0.113.7")

    assert client_ip(request) == "10.0.0.2"
    assert client_ip(request, trusted_proxies=1) == "203.0.113.7"  # what our proxy saw
    assert client_ip(request, trusted_proxies=2) == "1.1.1.1"
    assert client_ip(request, trusted_proxies=3) == "10.0.0.2"  # did not come through them all


def test_client_ip_counts_ipv6_per_64_and_unmaps_ipv4():
    factory = RequestFactory()

    one = client_ip(factory.get("/", REMOTE_ADDR="2001:db8:1:2::1"))
    same_subscriber = client_ip(factory.get("/", REMOTE_ADDR="2001:db8:1:2:ffff::9"))
    mapped = client_ip(factory.get("/", REMOTE_ADDR="::ffff:203.0.113.7"))

    assert one == same_subscriber == "2001:db8:1:2::/64"
    assert mapped == "203.0.113.7"


@pytest.mark.parametrize(
    ("body", "account"),
    [
        (b'{"email": "Ada@Example.com ", "password": "x"}', "ada@example.com"),
        (b'{"email": "", "username": "Ada"}', "ada"),
        (b'{"username": 12345}', "12345"),
        (b'{"email": ["a@example.com"]}', None),
        (b'{"email": true}', None),
        (b'["ada@example.com"]', None),
        (b"not json", None),
        (b"\xff\xfe", None),
        (b"", None),
    ],
)
def test_the_account_is_read_from_the_body_as_the_log_in_view_reads_it(body, account):
    request = RequestFactory().post("/api/login", data=body, content_type="application/json")

    assert account_from_body(request) == account


def test_the_account_is_read_from_url_encoded_and_multipart_forms():
    factory = RequestFactory()
    encoded = factory.post(
        "/login", "email=+Ada%40Example.com&password=x", content_type="application/x-www-form-urlencoded"
    )
    multipart = factory.post("/admin/login/", {"username": "ADA@example.com", "password": "x"})
    broken = factory.post("/login", b"--x\r\nnot a part", content_type="multipart/form-data; boundary=\x00")

    assert account_from_body(encoded) == "ada@example.com"
    assert account_from_body(multipart) == "ada@example.com"
    assert encoded.POST["email"] == " Ada@Example.com"  # still there for the view
    assert account_from_body(broken) is None  # and a form Django cannot parse does not raise


def test_a_body_nested_past_the_parsers_recursion_names_no_account_and_does_not_raise():
    request = RequestFactory().post("/api/login", data=b"[" * 5000, content_type="application/json")

    assert account_from_body(request) is None


def test_normalise_account_merges_what_the_backend_merges():
    assert normalise_account("  ADA@example.COM") == normalise_account("ada@example.com")
    assert normalise_account("   ") is None


def test_headers_name_every_policy_in_the_structured_field_form():
    api = Policy("api", limit=100, window=60)
    auth_ip = Policy("auth_ip", limit=10, window=60, algorithm="gcra", scope="ip")

    decision = check([api, auth_ip], ADA, now=T0)

    assert rate_limit_headers(decision) == {
        "RateLimit-Policy": '"api";q=100;w=60, "auth_ip";q=10;w=60',
        "RateLimit": '"api";r=99;t=60, "auth_ip";r=9;t=6',
    }
    assert rate_limit_headers(Decision(allowed=True)) == {}
