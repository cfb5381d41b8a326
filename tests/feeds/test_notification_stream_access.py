"""Who may hold GET /api/notifications/stream open: the per-person cap, revocation,
bearer tokens, and Last-Event-ID at the edges. Real SSE responses, real pub/sub, real
Redis; the streams run on the fake clock of test_notifications_sse, which the tests
advance (a test that must not see a timed check never advances it).
"""

from __future__ import annotations

import socket
import threading
import time

import pytest
from django.test import Client
from django.urls import reverse

from accounts import keys as account_keys
from accounts import tokens
from core import metrics
from feeds import keys, sse
from feeds.notifications import notify
from feeds.stream_access import stream_lease_acquire
from tests.feeds import test_notifications_sse
from tests.feeds.test_notifications_sse import STREAM, SSEReader, open_stream, wait_until

clock = test_notifications_sse.clock  # the autouse fixture: streams on a fake clock, none left open

pytestmark = pytest.mark.django_db

PASSWORD = "a-Strong-pass-42"  # make_user's default
MAX_ID = "18446744073709551615-18446744073709551615"  # the largest id Redis streams have


@pytest.fixture
def per_person_cap(settings) -> int:
    settings.KESTREL_SSE_MAX_STREAMS_PER_USER = 3
    return 3


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def access_token(user) -> str:
    return tokens.token_pair_issue(user=user).access


def bearer(token: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def ended(reader: SSEReader, containing: str) -> None:
    """The stream ends with a comment saying why, and nothing after it."""
    reader.next("comment", containing=containing)
    reader.next("end")
    reader.thread.join(5)
    assert wait_until(lambda: reader.stream not in sse.streams.open_streams())


# --- The per-person cap (finding 5) ----------------------------------------------------------


def test_one_person_at_the_cap_is_refused_with_429_while_another_still_gets_a_stream(ada, as_ada, bob, per_person_cap):
    readers = [open_stream(as_ada) for _ in range(per_person_cap)]

    refused = as_ada.get(STREAM)
    bobs = open_stream(logged_in(bob))

    assert refused.status_code == 429
    assert refused["Retry-After"] == str(sse.POLICY.person_busy_retry_after)
    assert "notification streams open" in refused.json()["error"]
    assert metrics.value("sse.rejected_person") == 1
    sent = notify(user_id=bob.pk, kind="like", message="for bob")
    assert bobs.next_event()["id"] == sent
    for reader in [*readers, bobs]:
        reader.close()


def test_a_browser_refused_by_the_per_person_cap_is_told_when_to_retry(as_ada, per_person_cap):
    readers = [open_stream(as_ada) for _ in range(per_person_cap)]

    refused = as_ada.get(STREAM, HTTP_ACCEPT="text/event-stream")

    assert refused.status_code == 429
    assert refused["Content-Type"].startswith("text/event-stream")
    assert f"retry: {sse.POLICY.person_busy_retry_after * 1000}\n".encode() in refused.content
    for reader in readers:
        reader.close()


def test_a_closed_stream_frees_its_persons_slot(ada, as_ada, per_person_cap, state_redis):
    readers = [open_stream(as_ada) for _ in range(per_person_cap)]
    assert as_ada.get(STREAM).status_code == 429

    readers[0].close()

    assert state_redis.zcard(keys.user_stream_leases(ada.pk)) == per_person_cap - 1
    again = open_stream(as_ada)
    for reader in [*readers[1:], again]:
        reader.close()
    assert state_redis.zcard(keys.user_stream_leases(ada.pk)) == 0


def test_the_leases_of_a_crashed_process_expire_and_free_their_slots(ada, as_ada, per_person_cap, clock):
    # A process that died without closing its streams: its leases stay behind.
    for n in range(per_person_cap):
        stream_lease_acquire(user_id=ada.pk, stream_id=f"crashed-{n}", now=clock(), lease=sse.POLICY.lease, cap=9)
    assert as_ada.get(STREAM).status_code == 429

    clock.advance(sse.POLICY.lease)

    reader = open_stream(as_ada)
    reader.close()


def test_an_open_stream_keeps_its_lease_alive(ada, as_ada, per_person_cap, clock, state_redis):
    readers = [open_stream(as_ada) for _ in range(per_person_cap)]
    leases = keys.user_stream_leases(ada.pk)

    for _ in range(4):  # well past one lease: each stream refreshes its own
        clock.advance(sse.POLICY.lease_refresh)
        expected = (clock() + sse.POLICY.lease) * 1000
        assert wait_until(
            lambda e=expected: all(score >= e - 1 for _, score in state_redis.zrange(leases, 0, -1, withscores=True))
        )

    assert as_ada.get(STREAM).status_code == 429
    for reader in readers:
        reader.close()


def test_a_page_that_left_frees_its_slot_without_waiting_for_a_write(ada, as_ada, per_person_cap, state_redis):
    # gunicorn hands the view the client's socket; a page that navigates away closes it.
    server_end, browser_end = socket.socketpair()
    try:
        reader = open_stream(as_ada, **{"gunicorn.socket": server_end})
        others = [open_stream(as_ada) for _ in range(per_person_cap - 1)]
        reader.next("retry")

        browser_end.close()  # the clock stands still: no keep-alive is written

        reader.next("end")
        assert wait_until(lambda: state_redis.zcard(keys.user_stream_leases(ada.pk)) == per_person_cap - 1)
        again = open_stream(as_ada)
        for other in [*others, again]:
            other.close()
    finally:
        server_end.close()
        browser_end.close()


def test_concurrent_opens_by_one_person_admit_exactly_the_cap(ada, clock):
    attempts, cap = 24, 5
    start = threading.Barrier(attempts)
    admitted: list[bool] = []

    def attempt(n: int) -> None:
        start.wait()
        admitted.append(stream_lease_acquire(user_id=ada.pk, stream_id=f"s{n}", now=clock(), lease=30, cap=cap))

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(attempts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)

    assert len(admitted) == attempts
    assert admitted.count(True) == cap


# --- The thread budget (finding 5) -------------------------------------------------------------


def test_a_stream_cap_that_would_starve_ordinary_requests_fails_the_system_check(settings):
    from feeds.checks import check_stream_thread_budget

    settings.KESTREL_GUNICORN_THREADS = 64
    settings.KESTREL_SSE_MAX_STREAMS = 64
    [error] = check_stream_thread_budget()
    assert error.id == "kestrel.E010"
    settings.KESTREL_SSE_MAX_STREAMS = 49
    assert [e.id for e in check_stream_thread_budget()] == ["kestrel.E010"]

    settings.KESTREL_SSE_MAX_STREAMS = 48  # three quarters: the most streams may take
    assert check_stream_thread_budget() == []
    settings.KESTREL_GUNICORN_THREADS, settings.KESTREL_SSE_MAX_STREAMS = 8, 4  # 4 threads left
    assert check_stream_thread_budget() == []
    settings.KESTREL_SSE_MAX_STREAMS = 5
    assert [e.id for e in check_stream_thread_budget()] == ["kestrel.E010"]


def test_a_gunicorn_worker_refuses_to_start_when_streams_could_take_its_threads(settings, monkeypatch, tmp_path):
    import importlib.util

    from django.conf import settings as django_settings

    # Loading config/gunicorn.py sets this variable unless it is set already.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    spec = importlib.util.spec_from_file_location(
        "kestrel_gunicorn_conf", django_settings.BASE_DIR / "config" / "gunicorn.py"
    )
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    monkeypatch.setattr(sse, "worker_threads", None)  # post_worker_init sets it
    settings.KESTREL_SSE_MAX_STREAMS = 16

    class Worker:  # what post_worker_init reads of gunicorn's worker
        class cfg:
            threads = 16

    with pytest.raises(RuntimeError, match="KESTREL_SSE_MAX_STREAMS=16 with 16 threads"):
        conf.post_worker_init(Worker)


def test_the_default_stream_cap_is_half_the_workers_real_threads(settings, monkeypatch, tmp_path):
    import importlib.util
    import signal

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    spec = importlib.util.spec_from_file_location("kestrel_gunicorn_conf", settings.BASE_DIR / "config" / "gunicorn.py")
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    monkeypatch.setattr(sse, "worker_threads", None)
    settings.KESTREL_GUNICORN_THREADS = 64  # the environment's, which a --threads flag overrides
    assert sse.max_streams() == 32

    class Worker:
        class cfg:
            threads = 16  # e.g. gunicorn --threads 16

    original = signal.getsignal(signal.SIGTERM)
    try:
        conf.post_worker_init(Worker)  # boots: the default cap follows the real threads
    finally:
        signal.signal(signal.SIGTERM, original)
    assert sse.max_streams() == 8


# --- Revocation ends open streams (finding 7) ----------------------------------------------------
#
# The clock is not advanced in the "at once" tests: no timed check runs, so only the
# revocation message can end the stream.


def test_site_logout_ends_an_open_stream_at_once(ada, as_ada, django_capture_on_commit_callbacks):
    reader = open_stream(as_ada)
    reader.next("retry")

    with django_capture_on_commit_callbacks(execute=True):
        assert as_ada.post(reverse("logout")).status_code == 302

    ended(reader, "session has ended")
    notify(user_id=ada.pk, kind="like", message="after logout")
    assert reader.events == []


def test_api_logout_ends_an_open_stream_at_once(as_ada, django_capture_on_commit_callbacks):
    reader = open_stream(as_ada)
    reader.next("retry")

    with django_capture_on_commit_callbacks(execute=True):
        assert as_ada.post("/api/logout", content_type="application/json").status_code == 200

    ended(reader, "session has ended")


def test_logging_out_one_session_leaves_the_others_streams_open(ada, as_ada, django_capture_on_commit_callbacks):
    other = open_stream(logged_in(ada))
    reader = open_stream(as_ada)
    reader.next("retry")

    with django_capture_on_commit_callbacks(execute=True):
        as_ada.post("/api/logout", content_type="application/json")

    ended(reader, "session has ended")
    sent = notify(user_id=ada.pk, kind="like", message="still here")
    assert other.next_event()["id"] == sent
    other.close()


def test_logout_everywhere_ends_every_stream_of_the_person_at_once(ada, as_ada, django_capture_on_commit_callbacks):
    readers = [open_stream(logged_in(ada)), open_stream(Client(), **bearer(access_token(ada)))]
    for reader in readers:
        reader.next("retry")

    with django_capture_on_commit_callbacks(execute=True):
        assert as_ada.post("/api/logout-all", content_type="application/json").status_code == 200

    ended(readers[0], "session has ended")
    ended(readers[1], "token has been revoked")


def test_a_password_change_ends_the_persons_open_streams_at_once(ada, as_ada, django_capture_on_commit_callbacks):
    readers = [open_stream(logged_in(ada)), open_stream(Client(), **bearer(access_token(ada)))]
    for reader in readers:
        reader.next("retry")

    with django_capture_on_commit_callbacks(execute=True):
        response = as_ada.post(
            "/api/password", {"old": PASSWORD, "new": "an-Other-pass-43"}, content_type="application/json"
        )

    assert response.status_code == 200
    ended(readers[0], "session has ended")
    ended(readers[1], "token has been revoked")


def test_revoking_a_bearer_token_by_logout_ends_its_stream_at_once(ada, django_capture_on_commit_callbacks):
    token, other_login = access_token(ada), access_token(ada)
    reader = open_stream(Client(), **bearer(token))
    other = open_stream(Client(), **bearer(other_login))
    reader.next("retry")

    with django_capture_on_commit_callbacks(execute=True):
        assert Client().post("/api/logout", content_type="application/json", **bearer(token)).status_code == 200

    ended(reader, "token has been revoked")
    sent = notify(user_id=ada.pk, kind="like", message="another log-in's stream stays")
    assert other.next_event()["id"] == sent
    assert reader.events == []
    other.close()


def test_a_session_that_ends_without_a_message_ends_its_stream_at_the_next_check(as_ada, state_redis, clock):
    reader = open_stream(as_ada)
    reader.next("retry")

    # Gone from Redis with nobody publishing anything (expired, deleted by hand).
    state_redis.delete(account_keys.session(as_ada.session.session_key))
    clock.advance(sse.POLICY.auth_check)

    ended(reader, "session has ended")


def test_a_revocation_whose_message_was_lost_ends_the_stream_at_the_next_check(ada, state_redis, clock):
    token = access_token(ada)
    reader = open_stream(Client(), **bearer(token))
    reader.next("retry")

    # Denylisted as /api/logout does, but with no message to the stream.
    claims = tokens.token_decode(token, type=tokens.ACCESS)
    state_redis.set(account_keys.jwt_family_revoked(claims.family), "logout")
    clock.advance(sse.POLICY.auth_check)

    ended(reader, "token has been revoked")


# --- Bearer tokens -------------------------------------------------------------------------------------


def test_a_bearer_access_token_opens_a_stream(ada):
    reader = open_stream(Client(), **bearer(access_token(ada)))

    sent = notify(user_id=ada.pk, kind="like", message="to a token client")

    assert reader.next_event()["id"] == sent
    reader.close()


@pytest.mark.parametrize(
    ("token", "status", "error"),
    [
        ("revoked", 403, "Token revoked"),
        ("expired", 403, "Invalid token"),
        ("refresh", 403, "Invalid token"),
        ("garbage", 403, "Invalid token"),
        ("", 401, "Missing token"),
    ],
)
def test_a_bad_bearer_token_gets_the_apis_answer_and_no_stream(ada, as_ada, token, status, error):
    if token == "revoked":
        token = access_token(ada)
        Client().post("/api/logout", content_type="application/json", **bearer(token))
    elif token == "expired":
        token = tokens.token_pair_issue(user=ada, now=time.time() - 3600).access
    elif token == "refresh":
        token = tokens.token_pair_issue(user=ada).refresh

    # With a valid session cookie beside it: a Bearer request is judged by its token alone.
    response = as_ada.get(STREAM, **bearer(token))

    assert response.status_code == status
    assert response.json() == {"error": error}
    assert len(sse.streams) == 0


def test_a_bearer_stream_ends_when_its_access_token_expires(ada, clock, settings):
    reader = open_stream(Client(), **bearer(access_token(ada)))
    reader.next("retry")

    clock.advance(settings.JWT_ACCESS_LIFETIME)

    ended(reader, "access token has expired")


# --- Last-Event-ID at the edges (finding 9) --------------------------------------------------------------


def test_the_largest_last_event_id_replays_nothing_and_goes_live(ada, as_ada):
    notify(user_id=ada.pk, kind="like", message="before")

    reader = open_stream(as_ada, HTTP_LAST_EVENT_ID=MAX_ID)
    reader.next("retry")
    sent = notify(user_id=ada.pk, kind="like", message="live")

    assert reader.next_event()["id"] == sent
    assert [e["id"] for e in reader.events] == [sent]
    reader.close()


def test_a_last_event_id_in_the_future_replays_nothing_and_goes_live(ada, as_ada):
    notify(user_id=ada.pk, kind="like", message="before")
    a_day_ahead = f"{int(time.time() * 1000) + 86_400_000}-0"

    reader = open_stream(as_ada, data={"lastEventId": a_day_ahead})
    reader.next("retry")
    sent = notify(user_id=ada.pk, kind="like", message="live")

    assert reader.next_event()["id"] == sent
    assert [e["id"] for e in reader.events] == [sent]
    reader.close()
