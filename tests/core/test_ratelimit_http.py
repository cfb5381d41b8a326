"""RateLimitMiddleware over HTTP: 429s and their headers, scopes, the log-in limits,
200 concurrent requests, and the failure policies with the Redis server really stopped.

The middleware is added here with settings overrides, so these tests hold whether or
not config/settings.py lists it; the policies are Kestrel's (settings.KESTREL_RATE_LIMITS)
unless a test says otherwise.
"""

from __future__ import annotations

import json
import logging
import threading

import pytest
from django.test import Client
from rest_framework.test import APIClient

from core import metrics
from core.redis import get_redis
from tests.core import ratelimit_urls

pytestmark = pytest.mark.urls("tests.core.ratelimit_urls")

LIMITER = "core.ratelimit.middleware.RateLimitMiddleware"
AUTHENTICATION = "accounts.middleware.AuthenticationMiddleware"
PASSWORD = "a-Strong-pass-42"


def with_limiter(middleware: list[str]) -> list[str]:
    """MIDDLEWARE with the limiter right after AuthenticationMiddleware (it reads request.user)."""
    middleware = [m for m in middleware if m != LIMITER]
    at = middleware.index(AUTHENTICATION) + 1
    return [*middleware[:at], LIMITER, *middleware[at:]]


@pytest.fixture(autouse=True)
def limiter(settings):
    settings.MIDDLEWARE = with_limiter(settings.MIDDLEWARE)
    settings.KESTREL_RATE_LIMIT_TRUSTED_PROXIES = 0
    ratelimit_urls.calls.clear()
    return settings


def log_in(client: Client, email: str, **extra):
    body = json.dumps({"email": email, "password": "guess"})
    return client.post("/api/login", body, content_type="application/json", **extra)


# --- The article's limit ------------------------------------------------------------------


def test_allowed_responses_carry_the_policy_and_the_quota_left(client):
    first = client.get("/api/ping")
    second = client.get("/api/ping")

    assert first.status_code == 200
    assert first["RateLimit-Policy"] == '"api";q=100;w=60'
    assert first["RateLimit"] == '"api";r=99;t=60'
    assert second["RateLimit"].startswith('"api";r=98;t=')
    assert "Retry-After" not in first


def test_the_101st_request_in_a_minute_is_refused_with_429_and_never_reaches_the_view(client):
    allowed = [client.get("/api/ping").status_code for _ in range(100)]

    refused = client.get("/api/ping")

    assert allowed == [200] * 100
    assert refused.status_code == 429
    assert refused.json() == {"error": "Rate limit exceeded"}
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert refused["RateLimit-Policy"] == '"api";q=100;w=60'
    assert refused["RateLimit"] == f'"api";r=0;t={refused["Retry-After"]}'
    assert len(ratelimit_urls.calls) == 100
    assert metrics.value("ratelimit.denied", policy="api") == 1


def test_an_api_request_costs_one_redis_round_trip(client, monkeypatch):
    client.get("/api/ping")  # loads the script into Redis (once per server start)
    state = get_redis("state")  # the pooled client the limiter uses
    sent: list[str] = []
    execute = state.execute_command

    def counting(*args, **options):
        sent.append(args[0])
        return execute(*args, **options)

    monkeypatch.setattr(state, "execute_command", counting)

    client.get("/api/ping")

    assert sent == ["EVALSHA"]


def test_paths_no_policy_covers_are_not_limited(client, limiter):
    limiter.KESTREL_RATE_LIMITS = {"api": {"limit": 1, "window": 60}}

    responses = [client.get("/elsewhere") for _ in range(3)]

    assert [r.status_code for r in responses] == [200, 200, 200]
    assert "RateLimit" not in responses[0]
    assert get_redis("state").dbsize() == 0


def test_people_are_counted_per_user_and_visitors_per_address(make_user, limiter):
    limiter.KESTREL_RATE_LIMITS = {"api": {"limit": 2, "window": 60}}
    ada, bob, visitor = Client(), Client(), Client()
    ada.force_login(make_user())
    bob.force_login(make_user())

    ada_statuses = [ada.get("/api/ping").status_code for _ in range(3)]
    bob_statuses = [bob.get("/api/ping").status_code for _ in range(2)]
    visitor_statuses = [visitor.get("/api/ping").status_code for _ in range(3)]

    # All three share 127.0.0.1; only the visitor is counted by it.
    assert ada_statuses == [200, 200, 429]
    assert bob_statuses == [200, 200]
    assert visitor_statuses == [200, 200, 429]


def test_trusted_proxies_count_the_client_they_forward_not_themselves(client, limiter):
    limiter.KESTREL_RATE_LIMITS = {"api": {"limit": 1, "window": 60}}
    limiter.KESTREL_RATE_LIMIT_TRUSTED_PROXIES = 1
    proxy = {"REMOTE_ADDR": "10.0.0.2"}

    first = client.get("/api/ping", HTTP_X_FORWARDED_FOR="203.0.113.7", **proxy)
    forged = client.get("/api/ping", HTTP_X_FORWARDED_FOR="198.51.100.1, 203.0.113.7", **proxy)
    other = client.get("/api/ping", HTTP_X_FORWARDED_FOR="203.0.113.8", **proxy)

    assert [first.status_code, forged.status_code, other.status_code] == [200, 429, 200]


# --- Log-in, token and register -------------------------------------------------------------


def test_log_in_attempts_are_limited_per_address_across_accounts(client):
    attempts = [log_in(client, f"person{i}@example.com").status_code for i in range(10)]

    refused = log_in(client, "person10@example.com")

    assert attempts == [200] * 10
    assert refused.status_code == 429
    assert refused.json() == {"error": "Rate limit exceeded"}
    assert refused["Retry-After"] == "6"  # GCRA: 10 a minute, one more every 6 s
    assert refused["RateLimit-Policy"] == '"api";q=100;w=60, "auth_ip";q=10;w=60, "auth_account";q=5;w=300'
    assert '"auth_ip";r=0;t=6' in refused["RateLimit"]
    assert client.get("/api/ping").status_code == 200  # the general limit is another matter


def test_an_accounts_log_ins_are_limited_whatever_the_address(client):
    spread = [log_in(client, "ada@example.com", REMOTE_ADDR=f"192.0.2.{i}").status_code for i in range(5)]

    refused = log_in(client, "ada@example.com", REMOTE_ADDR="198.51.100.1")
    disguised = log_in(client, "  ADA@Example.com", REMOTE_ADDR="198.51.100.2")
    someone_else = log_in(client, "bob@example.com", REMOTE_ADDR="198.51.100.1")

    assert spread == [200] * 5
    assert refused.status_code == 429
    assert refused["Retry-After"] == "60"  # 5 per 5 minutes: one more a minute
    assert '"auth_account";r=0;t=60' in refused["RateLimit"]
    assert disguised.status_code == 429
    assert someone_else.status_code == 200


def test_token_and_register_spend_from_the_same_account_limit(client):
    def post(path: str, **body) -> int:
        return client.post(path, json.dumps(body), content_type="application/json").status_code

    statuses = [
        post("/api/register", email="ada@example.com", username="ada", password=PASSWORD),
        post("/api/login", email="ada@example.com", password="guess"),
        post("/api/token", username="ADA@example.com", password="guess"),
        post("/api/token", email="ada@example.com", password="guess"),
        post("/api/login", email="ada@example.com", password="guess"),
        post("/api/token", email="ada@example.com", password="guess"),
    ]

    assert statuses == [200] * 5 + [429]


def test_a_body_the_view_cannot_read_never_fails_the_request(client):
    response = client.post("/api/login", "{not json", content_type="application/json")

    assert response.status_code == 200  # the stand-in view ran; the real one would answer 400
    assert response["RateLimit-Policy"] == '"api";q=100;w=60, "auth_ip";q=10;w=60'  # no account to count


def test_a_body_nested_five_thousand_deep_is_counted_by_address_not_a_server_error(client):
    response = client.post("/api/login", b"[" * 5000, content_type="application/json")

    assert response.status_code == 200  # the stand-in view ran; the real one answers 400
    assert response["RateLimit-Policy"] == '"api";q=100;w=60, "auth_ip";q=10;w=60'  # no account to count
    assert '"auth_ip";r=9;' in response["RateLimit"]


def test_an_account_is_counted_whatever_the_bodys_content_type(client):
    form = "application/x-www-form-urlencoded"
    statuses = [
        client.post("/api/login", {"email": "ada@example.com", "password": "guess"}).status_code,  # multipart
        client.post("/api/login", "email=ADA%40example.com&password=guess", content_type=form).status_code,
        client.post("/api/token", "username=ada%40example.com&password=guess", content_type=form).status_code,
        log_in(client, "ada@example.com").status_code,
        client.post("/api/token", {"email": " ada@example.com", "password": "guess"}).status_code,
        log_in(client, "ada@example.com").status_code,
    ]

    assert statuses == [200] * 5 + [429]


@pytest.mark.urls("config.urls")
def test_the_real_log_in_view_still_reads_the_body_the_limiter_read(make_user):
    make_user(email="ada@example.com")
    api = APIClient()

    wrong = api.post("/api/login", {"email": "ada@example.com", "password": "guess"}, format="json")
    right = api.post("/api/login", {"email": "ada@example.com", "password": PASSWORD}, format="json")

    assert wrong.status_code == 401
    assert wrong.json() == {"error": "Invalid credentials"}
    assert '"auth_account";r=4;' in wrong["RateLimit"]
    assert right.status_code == 200
    assert right.json()["message"] == "Logged in"


# --- Atomicity --------------------------------------------------------------------------


def test_two_hundred_concurrent_requests_against_a_limit_of_ten_allow_exactly_ten(limiter):
    limiter.KESTREL_RATE_LIMITS = {"api": {"limit": 10, "window": 60}}
    clients = [Client() for _ in range(200)]
    start = threading.Barrier(len(clients))
    statuses: list[int] = []
    lock = threading.Lock()

    def request(client: Client) -> None:
        start.wait()
        status = client.get("/api/ping").status_code
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=request, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert metrics.value("ratelimit.error") == 0  # none slipped through by failing open
    assert statuses.count(200) == 10
    assert statuses.count(429) == 190


# --- Failure policies, with Redis really stopped --------------------------------------------


def test_the_general_limit_fails_open_when_redis_is_down(client, redis_down, caplog):
    with caplog.at_level(logging.WARNING, logger="core.ratelimit"):
        response = client.get("/api/ping")

    assert response.status_code == 200
    assert "RateLimit" not in response
    assert metrics.value("ratelimit.error", policy="api") == 1
    assert "failing open (api)" in caplog.text


def test_log_in_limits_fail_closed_when_redis_is_down(client, redis_down, caplog):
    with caplog.at_level(logging.ERROR, logger="core.ratelimit"):
        response = log_in(client, "ada@example.com")

    assert response.status_code == 503
    assert response.json() == {"error": "Redis is unavailable; please try again shortly."}
    assert response["Retry-After"] == "5"
    assert ratelimit_urls.calls == []  # no password was checked
    assert metrics.value("ratelimit.error", policy="auth_ip") == 1
    assert metrics.value("ratelimit.error", policy="auth_account") == 1
    assert "failing closed (auth_ip, auth_account)" in caplog.text


def test_a_full_state_redis_fails_like_a_stopped_one(client, role_config):
    role_config("state", "maxmemory", "1")  # noeviction: every write is refused (OOM)

    general = client.get("/api/ping")
    login = log_in(client, "ada@example.com")

    assert general.status_code == 200
    assert login.status_code == 503
