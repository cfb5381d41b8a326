"""JSON Web Tokens with revocation (the reference article's part 3.2): issue, use, refresh
with single-use rotation, logout by token id, logout everywhere, password change, one
Redis round trip per bearer request, and failing closed when Redis is down."""

from __future__ import annotations

import threading
import time

import jwt
import pytest
from django.conf import settings
from django.db import connection
from django.test import Client
from rest_framework.test import APIClient

from accounts import keys, tokens
from accounts.models import User
from core import metrics
from core.redis import get_redis
from posts.models import Post

pytestmark = pytest.mark.django_db

PASSWORD = "a-Strong-pass-42"


def bearer(access: str, **kwargs) -> APIClient:
    client = APIClient(**kwargs)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
    return client


def log_in(email: str = "ada@example.com", password: str = PASSWORD) -> dict:
    response = APIClient().post("/api/token", {"email": email, "password": password}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def refresh(token: str | None):
    body = {} if token is None else {"refresh": token}
    return APIClient().post("/api/token/refresh", body, format="json")


def claims_of(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


# --- Issuing ----------------------------------------------------------------------------


def test_token_returns_a_short_lived_access_and_a_longer_refresh_token(ada):
    before = int(time.time())
    body = log_in()

    access, refresh_ = claims_of(body["access"]), claims_of(body["refresh"])
    assert body["tokenType"] == "Bearer"
    assert (body["expiresIn"], body["refreshExpiresIn"]) == (5 * 60, 24 * 60 * 60)
    assert jwt.get_unverified_header(body["access"])["alg"] == "HS256"
    for claims, kind, life in ((access, "access", 300), (refresh_, "refresh", 86400)):
        assert set(claims) == {"sub", "jti", "type", "iat", "exp", "epoch", "fam"}
        assert (claims["sub"], claims["type"], claims["epoch"]) == (str(ada.pk), kind, 0)
        assert claims["exp"] - claims["iat"] == life
        assert before <= claims["iat"] <= time.time()
    assert access["fam"] == refresh_["fam"]  # one family per log-in
    assert access["jti"] != refresh_["jti"]
    assert get_redis("state").dbsize() <= 3  # issuing writes nothing but the rate limiter's counters


def test_answers_carrying_tokens_are_never_cached(ada):
    issued = APIClient().post("/api/token", {"email": "ada@example.com", "password": PASSWORD}, format="json")
    refreshed = refresh(issued.json()["refresh"])
    changed = bearer(refreshed.json()["access"]).post(
        "/api/password", {"old": PASSWORD, "new": "an-Other-pass-43"}, format="json"
    )

    for response in (issued, refreshed, changed):
        assert response.status_code == 200
        assert "access" in response.json()
        assert response["Cache-Control"] == "no-store"


def test_token_with_a_wrong_password_is_401_invalid_credentials(ada):
    response = APIClient().post("/api/token", {"email": "ada@example.com", "password": "nope"}, format="json")

    assert response.status_code == 401
    assert response.json() == {"error": "Invalid credentials"}
    assert "access" not in response.json()


def test_the_lifetimes_come_from_settings(ada, settings):
    settings.JWT_ACCESS_LIFETIME, settings.JWT_REFRESH_LIFETIME = 60, 600

    pair = tokens.token_pair_issue(user=ada, now=1_000_000)

    assert claims_of(pair.access)["exp"] == 1_000_060
    assert claims_of(pair.refresh)["exp"] == 1_000_600


# --- Using an access token ------------------------------------------------------------------


def test_a_bearer_token_works_on_the_api_without_csrf(ada):
    api = bearer(log_in()["access"], enforce_csrf_checks=True)

    me = api.get("/api/me")
    created = api.post("/api/posts", {"title": "Hello", "content": "From a token"}, format="json")

    assert me.status_code == 200
    assert me.json()["userId"] == ada.pk
    assert created.status_code == 201
    assert Post.objects.get().author_id == ada.pk


def test_a_session_still_works_and_still_needs_csrf(ada):
    api = APIClient(enforce_csrf_checks=True)
    api.force_login(ada)

    me = api.get("/api/me")
    forged = api.post("/api/posts", {"title": "Hello", "content": "No CSRF token"}, format="json")

    assert me.status_code == 200
    assert forged.status_code == 403
    assert "CSRF" in forged.json()["error"]
    assert not Post.objects.exists()


def test_without_session_or_token_it_is_401_not_logged_in_with_a_bearer_challenge():
    response = APIClient().get("/api/me")

    assert response.status_code == 401
    assert response.json() == {"error": "Not logged in"}
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'


def test_the_bearer_scheme_without_a_token_is_401_missing_token():
    response = APIClient().get("/api/me", HTTP_AUTHORIZATION="Bearer ")

    assert response.status_code == 401
    assert response.json() == {"error": "Missing token"}
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'


# --- Refresh and rotation ---------------------------------------------------------------------


def test_refresh_returns_a_new_pair_of_the_same_family_and_spends_the_old_refresh_token(ada, state_redis):
    first = log_in()

    response = refresh(first["refresh"])

    assert response.status_code == 200
    second = response.json()
    old, new = claims_of(first["refresh"]), claims_of(second["refresh"])
    assert new["fam"] == old["fam"]
    assert new["jti"] != old["jti"]
    assert bearer(second["access"]).get("/api/me").status_code == 200
    assert state_redis.exists(keys.jwt_revoked(old["jti"]))


def test_a_refresh_sent_again_after_its_reply_was_lost_is_not_taken_for_reuse(ada):
    # What redis-py does when the connection drops after the script ran: the same
    # script, same arguments, again. The attempt id tells that retry from a thief.
    claims = tokens.token_decode(log_in()["refresh"], type=tokens.REFRESH)
    now = time.time()

    first = tokens._spend(claims, user_id=ada.pk, now=now, attempt="attempt-1")
    resent = tokens._spend(claims, user_id=ada.pk, now=now, attempt="attempt-1")
    thief = tokens._spend(claims, user_id=ada.pk, now=now, attempt="attempt-2")

    assert (first, resent, thief) == ("ok", "ok", "reused")


def test_refresh_without_a_token_is_401_missing_token():
    response = refresh(None)

    assert response.status_code == 401
    assert response.json() == {"error": "Missing token"}
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'


def test_reusing_a_rotated_refresh_token_revokes_its_whole_family(ada):
    first = log_in()
    second = refresh(first["refresh"]).json()

    replay = refresh(first["refresh"])  # a thief, or the owner after a thief

    assert replay.status_code == 403
    assert replay.json() == {"error": "Token revoked"}
    assert refresh(second["refresh"]).json() == {"error": "Token revoked"}  # the newer refresh too
    assert bearer(second["access"]).get("/api/me").json() == {"error": "Token revoked"}  # and its access token
    assert bearer(first["access"]).get("/api/me").status_code == 403
    assert metrics.value("tokens.refresh_reused") == 1
    assert bearer(log_in()["access"]).get("/api/me").status_code == 200  # a new log-in is a new family


def test_the_reuse_warning_names_the_user_but_not_the_token_id_or_family(ada, caplog):
    first = log_in()
    refresh(first["refresh"])
    claims = jwt.decode(first["refresh"], options={"verify_signature": False})

    with caplog.at_level("WARNING", logger="accounts.tokens"):
        refresh(first["refresh"])

    (record,) = [r for r in caplog.records if "presented again" in r.getMessage()]
    assert f"user {ada.pk}" in record.getMessage()
    assert claims["jti"] not in record.getMessage()
    assert claims["fam"] not in record.getMessage()


@pytest.mark.django_db(transaction=True)  # real commits: every thread's connection sees the user
def test_twenty_concurrent_refreshes_of_one_token_yield_exactly_one_new_pair(make_user):
    make_user(email="ada@example.com")
    token = log_in()["refresh"]
    start = threading.Barrier(20)
    responses = []
    lock = threading.Lock()

    def spend() -> None:
        try:
            client = APIClient()
            start.wait()
            response = client.post("/api/token/refresh", {"refresh": token}, format="json")
            with lock:
                responses.append(response)
        finally:
            connection.close()

    threads = [threading.Thread(target=spend) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    winners = [r for r in responses if r.status_code == 200]
    losers = [r for r in responses if r.status_code != 200]
    assert len(responses) == 20
    assert len(winners) == 1
    assert {(r.status_code, r.json()["error"]) for r in losers} == {(403, "Token revoked")}
    # Nineteen presentations of a spent refresh token are reuse: the family is revoked,
    # the one new pair with it (RFC 9700 4.14.2; clients must not refresh one token twice at once).
    assert refresh(winners[0].json()["refresh"]).status_code == 403
    # The first presentation after the spend revoked the family; the rest found it revoked.
    assert metrics.value("tokens.refresh_reused") == 1


def test_an_access_token_cannot_refresh_and_a_refresh_token_cannot_authenticate(ada):
    pair = log_in()

    assert refresh(pair["access"]).json() == {"error": "Invalid token"}
    as_access = bearer(pair["refresh"]).get("/api/me")
    assert as_access.status_code == 403
    assert as_access.json() == {"error": "Invalid token"}


# --- Logout ---------------------------------------------------------------------------------------


def test_logout_revokes_the_access_token_by_its_id_for_its_remaining_life(ada, state_redis):
    pair = log_in()
    api = bearer(pair["access"])
    assert api.get("/api/me").status_code == 200

    out = api.post("/api/logout")
    after = api.get("/api/me")

    assert out.json() == {"message": "Logged out"}
    assert after.status_code == 403
    assert after.json() == {"error": "Token revoked"}
    access = claims_of(pair["access"])
    ttl = state_redis.pttl(keys.jwt_revoked(access["jti"])) / 1000
    remaining = access["exp"] - time.time()
    assert remaining < ttl <= remaining + keys.REVOKED_MARGIN + 1
    # The refresh token of the same log-in goes with it (its family).
    assert refresh(pair["refresh"]).json() == {"error": "Token revoked"}


def test_redis_never_holds_a_token_only_ids(ada, state_redis):
    pair = log_in()
    bearer(pair["access"]).post("/api/logout", {"refresh": pair["refresh"]}, format="json")

    stored = b" ".join(k + b"=" + (state_redis.get(k) or b"") for k in state_redis.scan_iter(count=1000))
    for token in (pair["access"], pair["refresh"]):
        for part in token.split("."):
            assert part.encode() not in stored


def test_logout_with_only_a_refresh_token_revokes_it(ada):
    pair = log_in()

    out = APIClient().post("/api/logout", {"refresh": pair["refresh"]}, format="json")

    assert out.status_code == 200
    assert refresh(pair["refresh"]).json() == {"error": "Token revoked"}
    assert bearer(pair["access"]).get("/api/me").json() == {"error": "Token revoked"}


def test_logging_out_one_log_in_leaves_the_others(ada):
    phone, laptop = log_in(), log_in()

    bearer(phone["access"]).post("/api/logout")

    assert bearer(phone["access"]).get("/api/me").status_code == 403
    assert bearer(laptop["access"]).get("/api/me").status_code == 200
    assert refresh(laptop["refresh"]).status_code == 200


def test_logout_with_a_session_still_ends_the_session(as_ada):
    as_ada.post("/api/logout")

    assert as_ada.get("/api/me").status_code == 401


# --- Log out everywhere ---------------------------------------------------------------------------


def test_logout_all_revokes_every_token_and_session_of_the_user_only(
    ada, as_ada, bob, state_redis, django_capture_on_commit_callbacks
):
    phone, laptop = log_in(), log_in()
    bobs = log_in("bob@example.com")

    with django_capture_on_commit_callbacks(execute=True):
        out = bearer(phone["access"]).post("/api/logout-all")

    assert out.json() == {"message": "Logged out everywhere"}
    for pair in (phone, laptop):
        assert bearer(pair["access"]).get("/api/me").json() == {"error": "Token revoked"}
        assert refresh(pair["refresh"]).json() == {"error": "Token revoked"}
    assert as_ada.get("/api/me").status_code == 401  # the session ended too
    assert bearer(bobs["access"]).get("/api/me").status_code == 200
    ada.refresh_from_db()
    assert ada.token_epoch == 1
    assert state_redis.get(keys.user_token_epoch(ada.pk)) == b"1"
    assert 0 < state_redis.ttl(keys.user_token_epoch(ada.pk)) <= keys.longest_token_life()
    assert bearer(log_in()["access"]).get("/api/me").status_code == 200  # logging in again works


def test_logout_all_from_a_session(as_ada, django_capture_on_commit_callbacks):
    pair = log_in()

    with django_capture_on_commit_callbacks(execute=True):
        out = as_ada.post("/api/logout-all")

    assert out.status_code == 200
    assert as_ada.get("/api/me").status_code == 401
    assert bearer(pair["access"]).get("/api/me").json() == {"error": "Token revoked"}


def test_logged_out_everywhere_stays_so_when_redis_loses_the_epoch(
    ada, state_redis, django_capture_on_commit_callbacks
):
    pair = log_in()
    with django_capture_on_commit_callbacks(execute=True):
        bearer(pair["access"]).post("/api/logout-all")
    assert state_redis.exists(keys.user_token_epoch(ada.pk))
    # Redis restarted without its data (or the mirror could not be written):
    state_redis.delete(keys.user_token_epoch(ada.pk))

    assert bearer(pair["access"]).get("/api/me").json() == {"error": "Token revoked"}
    assert refresh(pair["refresh"]).json() == {"error": "Token revoked"}


def test_the_epoch_mirror_only_moves_forward(ada, state_redis):
    tokens.token_epoch_publish(user_id=ada.pk, epoch=3)
    tokens.token_epoch_publish(user_id=ada.pk, epoch=2)  # an earlier bump's write, arriving late

    assert state_redis.get(keys.user_token_epoch(ada.pk)) == b"3"


def test_tokens_are_issued_under_the_higher_of_the_database_and_redis_epochs(ada, state_redis):
    state_redis.set(keys.user_token_epoch(ada.pk), 4)  # the row was overwritten by a stale save

    pair = log_in()

    assert claims_of(pair["access"])["epoch"] == 4
    assert bearer(pair["access"]).get("/api/me").status_code == 200


# --- Password change ---------------------------------------------------------------------------------


def test_changing_the_password_revokes_every_token_and_returns_a_new_pair(
    ada, as_ada, django_capture_on_commit_callbacks
):
    old = log_in()
    other_device = log_in()

    with django_capture_on_commit_callbacks(execute=True):
        response = bearer(old["access"]).post(
            "/api/password", {"old": PASSWORD, "new": "an-Other-pass-43"}, format="json"
        )

    assert response.status_code == 200
    body = response.json()
    assert body["message"] == "Password changed"
    for pair in (old, other_device):
        assert bearer(pair["access"]).get("/api/me").json() == {"error": "Token revoked"}
        assert refresh(pair["refresh"]).json() == {"error": "Token revoked"}
    assert as_ada.get("/api/me").status_code == 401
    assert bearer(body["access"]).get("/api/me").status_code == 200
    assert User.objects.get(pk=ada.pk).check_password("an-Other-pass-43")


def test_changing_the_password_in_a_session_keeps_that_session_only(ada, django_capture_on_commit_callbacks):
    pair = log_in()
    this, other = APIClient(), APIClient()
    this.force_login(ada)
    other.force_login(ada)
    csrf_free = this  # APIClient does not enforce CSRF unless asked

    with django_capture_on_commit_callbacks(execute=True):
        response = csrf_free.post("/api/password", {"old": PASSWORD, "new": "an-Other-pass-43"}, format="json")

    assert response.status_code == 200
    assert "access" not in response.json()
    assert this.get("/api/me").status_code == 200
    assert other.get("/api/me").status_code == 401
    assert bearer(pair["access"]).get("/api/me").status_code == 403


@pytest.mark.parametrize(
    ("body", "field"),
    [({"old": "wrong", "new": "an-Other-pass-43"}, "old"), ({"old": PASSWORD, "new": "123"}, "new")],
)
def test_a_refused_password_change_changes_nothing(ada, body, field):
    pair = log_in()

    response = bearer(pair["access"]).post("/api/password", body, format="json")

    assert response.status_code == 400
    assert field in response.json()["details"]
    assert bearer(pair["access"]).get("/api/me").status_code == 200
    ada.refresh_from_db()
    assert ada.check_password(PASSWORD)
    assert ada.token_epoch == 0


# --- One round trip per request ------------------------------------------------------------------


@pytest.fixture
def redis_commands(monkeypatch):
    """Every command sent on either role's pooled client, as (role, command)."""
    sent: list[tuple[str, str]] = []
    for role in ("state", "cache"):
        client = get_redis(role)
        execute = client.execute_command

        def counting(*args, _role=role, _execute=execute, **options):
            sent.append((_role, args[0]))
            return _execute(*args, **options)

        monkeypatch.setattr(client, "execute_command", counting)
    return sent


def test_a_bearer_api_request_costs_one_redis_round_trip_for_rate_limit_and_denylist(ada, redis_commands):
    api = bearer(tokens.token_pair_issue(user=ada).access)
    api.get("/api/me")  # loads the script into Redis (once per server start)
    redis_commands.clear()

    response = api.get("/api/me")

    assert response.status_code == 200
    assert response["RateLimit"].startswith('"api";r=98;')  # counted as ada, not as an address
    assert redis_commands == [("state", "EVALSHA")]


def test_without_the_rate_limiter_the_denylist_check_is_still_one_round_trip(ada, settings, redis_commands):
    settings.KESTREL_RATE_LIMITS = {}
    api = bearer(tokens.token_pair_issue(user=ada).access)
    api.get("/api/me")
    redis_commands.clear()

    response = api.get("/api/me")

    assert response.status_code == 200
    assert "RateLimit" not in response
    assert redis_commands == [("state", "EVALSHA")]


def test_a_revoked_token_counts_as_anonymous_not_against_its_owner(ada, settings):
    settings.KESTREL_RATE_LIMITS = {"api": {"limit": 3, "window": 60}}
    revoked = tokens.token_pair_issue(user=ada)
    bearer(revoked.access).post("/api/logout")
    live = bearer(tokens.token_pair_issue(user=ada).access)

    thief = [bearer(revoked.access).get("/api/me").status_code for _ in range(4)]
    owner = [live.get("/api/me").status_code for _ in range(2)]

    assert thief == [403, 403, 403, 429]  # counted by address, not as ada
    assert owner == [200, 200]  # ada's quota: the logout (while the token was live), then these two


# --- Failing closed -------------------------------------------------------------------------------


@pytest.fixture
def ada_pair(ada) -> tokens.TokenPair:
    """A pair issued while Redis is up (list it before redis_down)."""
    return tokens.token_pair_issue(user=ada)


@pytest.mark.parametrize("limiter", [True, False], ids=["rate-limiter-on", "rate-limiter-off"])
def test_with_redis_down_a_bearer_request_gets_503_never_access(ada_pair, redis_down, settings, limiter):
    if not limiter:
        settings.KESTREL_RATE_LIMITS = {}  # the authenticator checks the denylist itself
    api = bearer(ada_pair.access)

    responses = [api.get("/api/me"), api.post("/api/posts", {"title": "t", "content": "c"}, format="json")]

    assert [r.status_code for r in responses] == [503, 503]
    assert responses[0].json() == {"error": "Redis is unavailable; please try again shortly."}
    assert responses[0]["Retry-After"] == "5"
    assert not Post.objects.exists()


def test_with_redis_down_nothing_is_issued_refreshed_or_pretended_revoked(ada_pair, redis_down):
    logout = bearer(ada_pair.access).post("/api/logout", {"refresh": ada_pair.refresh}, format="json")

    assert refresh(ada_pair.refresh).status_code == 503
    assert logout.status_code == 503
    assert APIClient().post("/api/token", {"email": "ada@example.com", "password": PASSWORD}).status_code == 503


def test_an_unreadable_epoch_refuses_rather_than_admits(ada, state_redis):
    pair = tokens.token_pair_issue(user=ada)
    state_redis.set(keys.user_token_epoch(ada.pk), "garbage")

    assert bearer(pair.access).get("/api/me").json() == {"error": "Token revoked"}
    assert refresh(pair.refresh).json() == {"error": "Token revoked"}


# --- The token functions, with a clock --------------------------------------------------------------

T0 = 1_900_000_000.0


def test_a_token_is_valid_until_the_second_it_expires(ada):
    pair = tokens.token_pair_issue(user=ada, now=T0)

    assert tokens.token_decode(pair.access, type=tokens.ACCESS, now=T0 + 299.9).user_id == ada.pk
    with pytest.raises(tokens.InvalidToken, match="expired"):
        tokens.token_decode(pair.access, type=tokens.ACCESS, now=T0 + 300)
    assert tokens.token_decode(pair.refresh, type=tokens.REFRESH, now=T0 + 86_399).type == "refresh"


def test_a_token_issued_in_the_future_is_refused(ada):
    pair = tokens.token_pair_issue(user=ada, now=T0 + 3600)

    with pytest.raises(tokens.InvalidToken, match="future"):
        tokens.token_decode(pair.access, type=tokens.ACCESS, now=T0)


def test_an_expired_refresh_token_cannot_be_spent(ada):
    pair = tokens.token_pair_issue(user=ada, now=T0)

    with pytest.raises(tokens.InvalidToken):
        tokens.token_refresh(refresh=pair.refresh, now=T0 + 86_400)


def test_rotation_spends_the_token_for_its_remaining_life_only(ada, state_redis):
    now = time.time()
    pair = tokens.token_pair_issue(user=ada, now=now - 86_000)  # 400 s left

    tokens.token_refresh(refresh=pair.refresh, now=now)

    ttl = state_redis.pttl(keys.jwt_revoked(claims_of(pair.refresh)["jti"])) / 1000
    assert 400 < ttl <= 400 + keys.REVOKED_MARGIN


def test_the_signing_key_is_derived_from_but_not_the_secret_key():
    assert settings.JWT_SIGNING_KEY != settings.SECRET_KEY
    assert len(settings.JWT_SIGNING_KEY) >= 32


def test_a_password_set_in_the_admin_revokes_the_persons_tokens(ada, make_user):
    pair = tokens.token_pair_issue(user=ada)
    admin = make_user(is_staff=True)
    User.objects.filter(pk=admin.pk).update(is_superuser=True)
    browser = Client()
    browser.force_login(admin)

    response = browser.post(
        f"/admin/accounts/user/{ada.pk}/password/",
        {"usable_password": "true", "password1": "an-Other-pass-43", "password2": "an-Other-pass-43"},
    )

    assert response.status_code == 302, response.content[:2000]
    assert User.objects.get(pk=ada.pk).token_epoch == 1
    assert bearer(pair.access).get("/api/me").json() == {"error": "Token revoked"}
    assert browser.get("/admin/").status_code == 200  # the admin's own session is untouched
